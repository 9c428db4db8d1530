// zclient: call a service or list services from a shell; JSON in and out, msgpack on the wire.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <zbroker/version.hpp>

#include "client/client.hpp"
#include "shared/curve_flags.hpp"
#include "shared/logging.hpp"
#include "shared/utf8.hpp"

namespace {

using nlohmann::json;
using zbroker::protocol::Status;

// Documented in the --help footer; scripts branch on these.
enum ExitCode : int {
    kOk = 0,
    kUsage = 1,
    kNoReply = 2,
    kUnavailable = 3,
    kDeadline = 4,
    kQueueFull = 5,
    kRetriesExhausted = 6,
    kBadRequest = 7,
    kHandlerError = 8,
    kForbidden = 9,
};

constexpr const char* kExitCodesHelp =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  usage or input error (e.g. the JSON does not parse), or a reply too deeply nested\n"
    "     to print as JSON (use --raw)\n"
    "  2  no reply: the broker is unreachable or too slow (check --broker, raise --timeout)\n"
    "  3  service unavailable (503): no worker for it, or the broker is draining\n"
    "  4  deadline exceeded (504): the worker did not answer within --timeout\n"
    "  5  queue full (429): too many requests waiting for the service\n"
    "  6  retries exhausted (500): the workers given the request kept dying\n"
    "  7  bad request (400) or request too large (413); also a service name over 255 bytes,\n"
    "     refused before anything is sent\n"
    "  8  the worker's handler reported an error ({\"error\": ...} reply)\n"
    "  9  forbidden (403): mmi.stats and mmi.drain need an admin key (with CURVE), and\n"
    "     mmi.drain needs zbroker --drain-without-curve (without CURVE)\n\n"
    "Examples:\n"
    "  zclient call hello 'Hello, Server!'          # not JSON: sent as a msgpack string\n"
    "  zclient call --raw hello 'Hello, Server!'    # the bytes themselves; prints Hello, Client!\n"
    "  zclient call stats '[1, 2, 3]'\n"
    "  echo '{\"ms\": 100}' | zclient call sleep\n"
    "  zclient --timeout 500 --retries 0 services echo stats\n"
    "  zclient keygen --out client.key   # then list its public key at the broker\n"
    "  zclient --curve-server-key 'BROKER-PUBLIC-KEY' --curve-secret client.key call echo 1";

struct Settings {
    std::vector<std::string> brokers{std::string(zbroker::protocol::kDefaultBrokerConnect)};
    long long timeout_ms = 2500;
    int retries = 2;
    std::optional<zbroker::CurveClientKeys> curve;
    std::optional<unsigned> priority;
    std::string fairness_key;
    std::string idempotency_key;

    // The brokers, comma-separated, for messages.
    std::string broker() const {
        std::string text;
        for (const std::string& endpoint : brokers)
            text += (text.empty() ? "" : ",") + endpoint;
        return text;
    }

    zbroker::CallOptions call_options() const {
        zbroker::CallOptions options{.timeout = std::chrono::milliseconds(timeout_ms),
                                     .retries = retries};
        if (priority) options.priority = static_cast<std::uint8_t>(*priority);
        options.fairness_key = fairness_key;
        options.idempotency_key = idempotency_key;
        return options;
    }
};

int fail(int code, const std::string& message) {
    std::cerr << "zclient: " << message << '\n';
    return code;
}

// The exit code and the one line of advice for an answer that is not 200.
int report_status(Status status, const Settings& settings, const std::string& service,
                  std::size_t request_size) {
    const std::string quoted = "'" + service + "'";
    const std::string timeout = std::to_string(settings.timeout_ms) + " ms";
    switch (status) {
        case Status::ok:
            return kOk;
        case Status::no_reply:
            return fail(kNoReply, "no reply from " + settings.broker() + " after " +
                                      std::to_string(settings.retries + 1) + " attempt(s) of " +
                                      timeout +
                                      ": check that zbroker is running and reachable there "
                                      "(--broker), or raise --timeout if the service is slow");
        case Status::unavailable:
            return fail(kUnavailable,
                        "service " + quoted + " is unavailable (503): no worker took it within " +
                            timeout + ", or the broker is draining; start one (zworker --service " +
                            service + ") and see `zclient services`");
        case Status::deadline_exceeded:
            return fail(kDeadline, "deadline exceeded (504): service " + quoted +
                                       " did not answer within " + timeout +
                                       "; raise --timeout or check the worker");
        case Status::queue_full:
            return fail(kQueueFull, "queue full (429): too many requests are waiting for " +
                                        quoted + "; retry later or start more workers");
        case Status::retries_exhausted:
            return fail(kRetriesExhausted,
                        "retries exhausted (500): every worker given this request died on it; "
                        "check the worker logs, the request may crash the handler");
        case Status::bad_request:
            return fail(kBadRequest,
                        "bad request (400): the broker refused the request as malformed; "
                        "the broker's log says why");
        case Status::too_large:
            return fail(kBadRequest, "request too large (413): " + std::to_string(request_size) +
                                         " bytes is over the broker's --max-msg-size; send less");
    }
    return fail(kBadRequest,
                "unexpected status " + std::string(zbroker::protocol::status_text(status)));
}

// The broker answers 403 (an MMI body, like 404) to an admin-only mmi.* without the admin role.
bool forbidden(const std::string& service, const zbroker::Response& response) {
    return zbroker::protocol::is_mmi(service) &&
           response.body_view() == zbroker::protocol::kMmiForbidden;
}

int report_forbidden(const std::string& service) {
    return fail(kForbidden,
                service +
                    " is forbidden (403). With CURVE on, it needs an admin key: ask for "
                    "yours to be listed as `admin KEY` in the broker's authorized-keys "
                    "file. Without CURVE, mmi.drain needs zbroker --drain-without-curve.");
}

// `zclient keygen --out FILE`: a new key pair in FILE (mode 0600), the public key on stdout.
int run_keygen(const std::string& out) {
    try {
        const zbroker::CurveKeyPair pair = zbroker::generate_curve_keypair();
        zbroker::write_curve_keypair(out, pair);
        std::cout << pair.public_key << '\n';
        return kOk;
    } catch (const std::exception& e) {
        return fail(kUsage, std::string("keygen: ") + e.what());
    }
}

std::string read_stdin() {
    if (isatty(STDIN_FILENO) != 0) std::cerr << "zclient: reading the request from stdin...\n";
    return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
}

// nlohmann's messages start with "[json.exception.parse_error.101] ": noise to a user.
std::string without_exception_id(const std::string& what) {
    const auto end = what.find("] ");
    return end == std::string::npos ? what : what.substr(end + 2);
}

// nlohmann's id for a number too large for a double, such as 1e400 (out_of_range.406).
constexpr int kNumberOutOfRange = 406;

// Arrays and objects nested deeper than this are refused, in requests and in replies: JSON
// and msgpack nested 100,000 deep would overflow zclient's stack in the code that converts or
// prints them, which recurses once per level.
constexpr std::size_t kMaxNesting = 512;

// Builds a JSON value from nlohmann's SAX events, as json::parse and json::from_msgpack do,
// but stops at the first level past kMaxNesting, and keeps the parser's error instead of
// throwing it.
class BoundedJsonBuilder final : public json::json_sax_t {
  public:
    explicit BoundedJsonBuilder(json& root) : root_(root) {}

    bool too_deep() const { return too_deep_; }
    // The parser's error (its id: 101 syntax, 406 number out of range...) when it failed.
    const std::optional<std::pair<int, std::string>>& error() const { return error_; }

    bool null() override { return add(nullptr); }
    bool boolean(bool value) override { return add(value); }
    bool number_integer(number_integer_t value) override { return add(value); }
    bool number_unsigned(number_unsigned_t value) override { return add(value); }
    bool number_float(number_float_t value, const string_t&) override { return add(value); }
    bool string(string_t& value) override { return add(std::move(value)); }
    bool binary(binary_t& value) override { return add(std::move(value)); }
    bool start_object(std::size_t) override { return open(json::object()); }
    bool key(string_t& name) override {
        key_ = std::move(name);
        return true;
    }
    bool end_object() override { return close(); }
    bool start_array(std::size_t) override { return open(json::array()); }
    bool end_array() override { return close(); }
    bool parse_error(std::size_t, const std::string&, const json::exception& e) override {
        error_.emplace(e.id, e.what());
        return false;
    }

  private:
    // Puts `value` where the parser is: the root, the next element of the open array, or the
    // open object's member under the last key. Only the innermost open value grows, so the
    // pointers to the open values stay valid.
    json* place(json value) {
        if (open_.empty()) {
            root_ = std::move(value);
            return &root_;
        }
        json& parent = *open_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(value));
            return &parent.back();
        }
        json& member = parent[key_];
        member = std::move(value);
        return &member;
    }
    bool add(json value) {
        place(std::move(value));
        return true;
    }
    bool open(json container) {
        if (open_.size() >= kMaxNesting) {
            too_deep_ = true;
            return false;
        }
        open_.push_back(place(std::move(container)));
        return true;
    }
    bool close() {
        open_.pop_back();
        return true;
    }

    json& root_;
    std::vector<json*> open_;  // the arrays and objects not closed yet, outermost first
    std::string key_;
    bool too_deep_ = false;
    std::optional<std::pair<int, std::string>> error_;
};

// What decoding a msgpack body gave: a value, or nothing (not msgpack, or a map with
// non-string keys: shown as text), or too deep to convert.
struct Decoded {
    std::optional<json> value;
    bool too_deep = false;
};

Decoded decode_msgpack(std::string_view bytes) {
    json value;
    BoundedJsonBuilder builder(value);
    try {
        if (json::sax_parse(bytes.begin(), bytes.end(), &builder, json::input_format_t::msgpack))
            return {std::move(value), false};
    } catch (const json::exception&) {
    }
    return {std::nullopt, builder.too_deep()};
}

std::string to_text(const json& value, int indent = -1) {
    // Msgpack strings need not be UTF-8; a reply must print, not throw. What does not decode
    // becomes U+FFFD: JSON must be UTF-8 for every tool that reads it (jq, Python), and the
    // names a user has any use for are UTF-8; a name a peer made otherwise is flagged, not
    // kept, and cannot abort the output.
    return value.dump(indent, ' ', false, json::error_handler_t::replace);
}

// `text` as it may go to a terminal. What a peer chose (service names, statuses, a handler's
// error, a reply that is not msgpack) shows as it is, except what a terminal would act on and
// bytes that are not UTF-8, which show as \xHH (\n, \t, \r): so a name cannot forge a row,
// clear the screen or set the window title. `lines`: newlines and tabs pass, for a reply.
std::string terminal_safe(std::string_view text, bool lines = false) {
    std::string safe;
    safe.reserve(text.size());
    while (!text.empty()) {
        const zbroker::Utf8Char c = zbroker::first_utf8_char(text);
        const std::string_view bytes = text.substr(0, std::max<std::size_t>(c.size, 1));
        text.remove_prefix(bytes.size());
        const bool layout = lines && (c.point == '\n' || c.point == '\t');
        if (c.size != 0 && (!zbroker::acts_on_terminal(c.point) || layout)) {
            safe += bytes;
            continue;
        }
        for (const char byte : bytes) {
            if (byte == '\n') {
                safe += "\\n";
            } else if (byte == '\t') {
                safe += "\\t";
            } else if (byte == '\r') {
                safe += "\\r";
            } else {
                safe += fmt::format("\\x{:02X}", static_cast<unsigned char>(byte));
            }
        }
    }
    return safe;
}

// Input that starts like JSON text (an object, an array or a string) but does not parse is a
// typo to report; anything else that does not parse is meant as a string, as people type it.
bool looks_like_json(std::string_view input) {
    const auto first = input.find_first_not_of(" \t\r\n");
    return first != std::string_view::npos &&
           (input[first] == '{' || input[first] == '[' || input[first] == '"');
}

// The msgpack map {"error": ...} a worker sends when its handler failed, raw request or not.
std::optional<std::string> handler_error(const std::optional<json>& value) {
    if (!value || !value->is_object() || !value->contains("error")) return std::nullopt;
    const json& error = value->at("error");
    return terminal_safe(error.is_string() ? error.get<std::string>() : to_text(error));
}

int report_handler_error(const std::string& service, const std::string& error) {
    return fail(kHandlerError, "service '" + service + "' failed: " + error +
                                   " (reported by the worker's handler; see the worker's log)");
}

// A reply that decode_msgpack() found too deep: zclient converts and prints a bounded depth
// only, since that code recurses once per level (200,000 levels overflowed its stack).
int report_too_deep(std::string_view service, std::size_t size) {
    return fail(kUsage, "the reply of '" + std::string(service) + "' (" + std::to_string(size) +
                            " bytes) is msgpack nested deeper than " + std::to_string(kMaxNesting) +
                            " levels, too deep to print as JSON; zclient call --raw " +
                            std::string(service) + " gets its bytes");
}

int run_call(const Settings& settings, const std::string& service,
             const std::optional<std::string>& argument, bool raw, bool verbose) {
    // ZB/1 carries a service name in at most 255 bytes, and the broker refuses a longer one
    // (400): refused here, before anything is sent, rather than cut short on the wire.
    if (service.size() > zbroker::protocol::kMaxServiceNameSize) {
        return fail(kBadRequest, "service name of " + std::to_string(service.size()) + " bytes ('" +
                                     service.substr(0, 40) + "...'): a service name has at most " +
                                     std::to_string(zbroker::protocol::kMaxServiceNameSize) +
                                     " bytes; check the name");
    }
    const bool from_stdin = !argument || *argument == "-";
    const std::string input = from_stdin ? read_stdin() : *argument;
    std::string body = input;
    if (!raw) {
        json value;
        BoundedJsonBuilder builder(value);
        bool parsed = false;
        try {
            parsed = json::sax_parse(input, &builder);
        } catch (const json::exception& e) {
            return fail(kUsage, "the request cannot be read as JSON (" +
                                    without_exception_id(e.what()) +
                                    "); send the bytes as they are with --raw");
        }
        if (builder.too_deep()) {
            return fail(kUsage, "the request nests arrays and objects deeper than " +
                                    std::to_string(kMaxNesting) +
                                    " levels, which zclient does not convert; flatten it, or "
                                    "send bytes as they are with --raw");
        }
        const auto& error = builder.error();
        if (!parsed && error && error->first == kNumberOutOfRange) {
            return fail(kUsage, "the request has a number out of range (" +
                                    without_exception_id(error->second) +
                                    "): a JSON number must fit a double (at most about 1.8e308) "
                                    "or a 64-bit integer; send it as a string, e.g. '\"1e400\"', "
                                    "or send bytes as they are with --raw");
        }
        if (!parsed) {
            if (looks_like_json(input)) {
                return fail(kUsage, "the request is not valid JSON (" +
                                        without_exception_id(error ? error->second : "") +
                                        "); quote it for the shell, e.g. zclient call stats "
                                        "'[1, 2, 3]', or send bytes as they are with --raw");
            }
            // `zclient call hello Hello, Server!`-style input. From stdin, drop the newline that
            // echo and here-strings add.
            std::string text = input;
            if (from_stdin && !text.empty() && text.back() == '\n') text.pop_back();
            if (from_stdin && !text.empty() && text.back() == '\r') text.pop_back();
            if (verbose) {
                std::cerr << "zclient: note: the request is not JSON, so it is sent as a msgpack "
                             "string: "
                          << to_text(json(text)) << " (use --raw to send the bytes as they are)\n";
            }
            value = std::move(text);
        }
        const std::vector<std::uint8_t> packed = json::to_msgpack(value);
        body.assign(packed.begin(), packed.end());
    } else if (verbose) {
        std::cerr << "zclient: note: sending the " << body.size()
                  << " input byte(s) as they are (--raw)\n";
    }

    zbroker::Client client(settings.brokers, settings.curve);
    const zbroker::Response response = client.call(service, body, settings.call_options());
    if (!response.ok()) return report_status(response.status, settings, service, body.size());
    if (forbidden(service, response)) return report_forbidden(service);

    if (raw) {
        // The reply's bytes exactly, frame after frame, with nothing added: what the service sent.
        // A handler's failure is still a msgpack {"error": ...} map, reported as without --raw.
        if (response.body.size() == 1) {
            if (const auto error = handler_error(decode_msgpack(response.body_view()).value))
                return report_handler_error(service, *error);
        }
        for (const zmq::message_t& part : response.body)
            std::cout << zbroker::view(part);
        std::cout.flush();
        return kOk;
    }
    for (const zmq::message_t& part : response.body) {
        const std::string_view bytes = zbroker::view(part);
        const Decoded decoded = decode_msgpack(bytes);
        if (decoded.too_deep) return report_too_deep(service, bytes.size());
        if (!decoded.value) {
            std::cout << terminal_safe(bytes, true) << '\n';
            continue;
        }
        if (const auto error = handler_error(decoded.value))
            return report_handler_error(service, *error);
        std::cout << to_text(*decoded.value) << '\n';
    }
    return kOk;
}

std::string figure(const json& figures, const char* key) {
    const auto it = figures.find(key);
    return it != figures.end() && it->is_number() ? to_text(*it) : "?";
}

// "504:3 503:1" from {"504": 3, "503": 1}; "0" when empty.
std::string by_status(const json& counts) {
    std::string text;
    for (const auto& [key, value] : counts.items()) {
        if (!text.empty()) text += ' ';
        text += terminal_safe(key) + ":" + to_text(value);
    }
    return text.empty() ? "0" : text;
}

// One row per service of an mmi.services (or mmi.stats "services") map.
void print_service_table(const json& services) {
    std::size_t width = 7;
    for (const auto& [name, figures] : services.items())
        width = std::max(width, terminal_safe(name).size());
    std::printf("%-*s  %7s  %7s  %9s  %8s  %9s  %s\n", static_cast<int>(width), "SERVICE",
                "WORKERS", "QUEUED", "IN FLIGHT", "ORPHANED", "SERVED", "ERRORS");
    for (const auto& [name, figures] : services.items()) {
        const auto errors = figures.find("errors");
        std::printf("%-*s  %7s  %7s  %9s  %8s  %9s  %s\n", static_cast<int>(width),
                    terminal_safe(name).c_str(), figure(figures, "workers").c_str(),
                    figure(figures, "queued").c_str(), figure(figures, "in_flight").c_str(),
                    figure(figures, "orphaned").c_str(), figure(figures, "served").c_str(),
                    errors != figures.end() ? by_status(*errors).c_str() : "?");
    }
}

// The broker's counters from mmi.stats, as a summary and a service table (or raw JSON).
int run_stats(const Settings& settings, bool as_json) {
    zbroker::Client client(settings.brokers, settings.curve);
    const zbroker::Response response =
        client.call(zbroker::protocol::kMmiStats, "", settings.call_options());
    if (!response.ok()) {
        return report_status(response.status, settings, std::string(zbroker::protocol::kMmiStats),
                             0);
    }
    if (forbidden(std::string(zbroker::protocol::kMmiStats), response))
        return report_forbidden(std::string(zbroker::protocol::kMmiStats));
    const Decoded decoded = decode_msgpack(response.body_view());
    if (decoded.too_deep)
        return report_too_deep(zbroker::protocol::kMmiStats, response.body_view().size());
    const std::optional<json>& stats = decoded.value;
    if (!stats || !stats->is_object()) {
        return fail(kNoReply, "the answer to mmi.stats from " + settings.broker() +
                                  " is not a msgpack map (" +
                                  zbroker::printable(response.body_view()) +
                                  "); is that a zbroker, and are you allowed to ask?");
    }
    if (as_json) {
        std::cout << to_text(*stats, 2) << '\n';
        return kOk;
    }
    const json empty = json::object();
    auto section = [&](const char* key) -> const json& {
        const auto it = stats->find(key);
        return it != stats->end() && it->is_object() ? *it : empty;
    };
    auto non_zero = [](const json& counts) {
        std::string text;
        for (const auto& [key, value] : counts.items()) {
            if (!value.is_number() || value.get<double>() == 0) continue;
            if (!text.empty()) text += ", ";
            text += terminal_safe(key) + " " + to_text(value);
        }
        return text.empty() ? std::string("none") : text;
    };
    std::cout << "uptime     " << figure(*stats, "uptime_s") << " s, " << figure(*stats, "workers")
              << " worker(s), " << figure(*stats, "requests_held") << " request(s) held\n"
              << "totals     " << non_zero(section("totals")) << '\n'
              << "answers    " << by_status(section("answers")) << '\n'
              << "malformed  " << non_zero(section("malformed")) << '\n'
              << "dropped    " << non_zero(section("drops")) << "\n\n";
    print_service_table(section("services"));
    return kOk;
}

// With names: mmi.service for each. Without: the mmi.services table.
int run_services(const Settings& settings, const std::vector<std::string>& names) {
    zbroker::Client client(settings.brokers, settings.curve);
    if (!names.empty()) {
        std::size_t width = 0;
        for (const std::string& name : names)
            width = std::max(width, terminal_safe(name).size());
        for (const std::string& name : names) {
            const zbroker::Response response =
                client.call(zbroker::protocol::kMmiService, name, settings.call_options());
            if (!response.ok()) {
                return report_status(response.status, settings,
                                     std::string(zbroker::protocol::kMmiService), name.size());
            }
            const std::string_view answer = response.body_view();
            std::string verdict;
            if (answer == zbroker::protocol::kMmiFound) {
                verdict = "available";
            } else if (answer == zbroker::protocol::kMmiNotFound) {
                verdict = "unknown (no workers)";
            } else {
                verdict = "unexpected answer " + zbroker::printable(answer);
            }
            const std::string shown = terminal_safe(name);
            std::cout << shown << std::string(width - std::min(width, shown.size()) + 2, ' ')
                      << verdict << '\n';
        }
        return kOk;
    }

    const zbroker::Response response =
        client.call(zbroker::protocol::kMmiServices, "", settings.call_options());
    if (!response.ok()) {
        return report_status(response.status, settings,
                             std::string(zbroker::protocol::kMmiServices), 0);
    }
    const Decoded decoded = decode_msgpack(response.body_view());
    if (decoded.too_deep)
        return report_too_deep(zbroker::protocol::kMmiServices, response.body_view().size());
    const std::optional<json>& services = decoded.value;
    if (!services || !services->is_object()) {
        return fail(kNoReply, "the answer to mmi.services from " + settings.broker() +
                                  " is not a msgpack map; is that a zbroker (mmi.services is "
                                  "its extension)? Ask per name: zclient services NAME");
    }
    print_service_table(*services);
    if (services->empty()) std::printf("(no services: no worker has registered yet)\n");
    return kOk;
}

}  // namespace

int main(int argc, char** argv) {
    Settings settings;
    std::string log_level = "warn";

    CLI::App app{
        "zclient: call a zbroker service, or ask which services have workers.\n"
        "Requests are JSON on the command line, sent as msgpack in ZB/1 (zbroker's native\n"
        "protocol); msgpack replies print as JSON.\n"
        "Text that is not JSON is sent as a msgpack string; --raw sends and prints bytes.\n"
        "An attempt without a reply within --timeout is sent again, --retries more times.",
        "zclient"};
    app.set_version_flag("--version", std::string("zclient ") + zbroker::kVersion);
    app.add_option("-b,--broker", settings.brokers,
                   "Broker endpoint to connect to. Several (comma-separated or repeated): each\n"
                   "call goes to one that is up, and moves at once to another if that broker\n"
                   "drops or drains; `services` and `stats` ask every one")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("-t,--timeout", settings.timeout_ms,
                   "Milliseconds to wait for each attempt; also the deadline the broker enforces")
        ->check(CLI::Range(1LL, 3'600'000LL))
        ->capture_default_str();
    app.add_option("-r,--retries", settings.retries,
                   "Extra attempts after an attempt got no reply (never after a broker error)")
        ->check(CLI::Range(0, 100))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "Log level")
        ->check(CLI::IsMember(zbroker::log_level_names()))
        ->capture_default_str();
    zbroker::CurveClientFlags curve;
    curve.add_to(app, "our key pair file (from `zclient keygen`)");
    app.require_subcommand(1);
    app.footer(kExitCodesHelp);

    std::string service;
    std::string json_argument;
    bool raw = false;
    bool verbose = false;
    CLI::App* call = app.add_subcommand("call", "Send one request to SERVICE and print the reply");
    call->add_option("service", service, "Service name")->required();
    CLI::Option* json_option = call->add_option(
        "json", json_argument,
        "Request as JSON, sent as msgpack; text that is not JSON (Hello, Server!) is sent as a "
        "msgpack string. Read from stdin when omitted or \"-\"");
    call->add_flag("--raw", raw,
                   "Send the input bytes as they are; print the reply's bytes as they are, with "
                   "no newline added (zworker's services answer raw bytes in raw bytes)");
    call->add_flag("-v,--verbose", verbose, "Notes on stderr: how the request was sent");
    call->add_option("-p,--priority", settings.priority,
                     "0 (the default, lowest) to 9: higher goes first in the broker's queue "
                     "for the service (zbroker --queue-policy priority, its default)")
        ->check(CLI::Range(0u, unsigned{zbroker::protocol::kMaxPriority}));
    call->add_option("--fairness-key", settings.fairness_key,
                     "The tenant this request shares the service with others as, instead of "
                     "this connection (1 to 255 bytes)")
        ->check([](const std::string& key) -> std::string {
            if (key.empty() || key.size() > zbroker::protocol::kMaxFairnessKeySize)
                return "a fairness key has 1 to 255 bytes";
            return {};
        });
    call->add_option("--idempotency-key", settings.idempotency_key,
                     "Names this request across its attempts and brokers (1 to 255 bytes): a "
                     "worker that has just run it answers from its recent replies instead of "
                     "running it again")
        ->check([](const std::string& key) -> std::string {
            if (key.empty() || key.size() > zbroker::protocol::kMaxIdempotencyKeySize)
                return "an idempotency key has 1 to 255 bytes";
            return {};
        });

    std::vector<std::string> names;
    CLI::App* services = app.add_subcommand(
        "services", "With names: whether each has workers. Without: every service's figures");
    services->add_option("names", names, "Service names to ask about");

    bool stats_json = false;
    CLI::App* stats = app.add_subcommand(
        "stats", "The broker's counters (mmi.stats): answers by status, malformed input, drops");
    stats->add_flag("--json", stats_json, "Print them as JSON instead of tables");

    std::string keygen_out;
    CLI::App* keygen = app.add_subcommand(
        "keygen", "Write a new CURVE key pair file (mode 0600) and print its public key");
    keygen->add_option("-o,--out", keygen_out, "File to create (never overwritten)")->required();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? kOk : kUsage;
    }
    zbroker::init_logging("zclient", log_level);
    if (keygen->parsed()) return run_keygen(keygen_out);
    try {
        settings.curve = curve.load();
    } catch (const std::exception& e) {
        return fail(kUsage, e.what());
    }

    try {
        if (call->parsed()) {
            std::optional<std::string> argument;
            if (json_option->count() > 0) argument = json_argument;
            return run_call(settings, service, argument, raw, verbose);
        }
        // Brokers do not share state: ask each one, under a line naming it.
        int worst = kOk;
        for (const std::string& endpoint : settings.brokers) {
            Settings one = settings;
            one.brokers = {endpoint};
            if (settings.brokers.size() > 1) std::cout << "== " << endpoint << '\n';
            const int code =
                stats->parsed() ? run_stats(one, stats_json) : run_services(one, names);
            if (worst == kOk) worst = code;
            if (settings.brokers.size() > 1) std::cout << '\n';
        }
        return worst;
    } catch (const zmq::error_t& e) {
        return fail(kUsage, "cannot use broker endpoint '" + settings.broker() + "': " + e.what() +
                                "; give one like tcp://localhost:5555 (--broker)");
    } catch (const std::invalid_argument& e) {
        // The client library's check of what it was given (the broker list, a request's
        // options): a mistake in the command line.
        return fail(kUsage, std::string(e.what()) + "; see zclient --help");
    }
}
