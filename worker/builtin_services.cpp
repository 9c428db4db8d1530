// Built-in handlers: small, useful for demos, tests and benchmarks. Each answers in kind: msgpack
// in, msgpack out; raw bytes in (what a plain socket example sends), raw bytes out.
#include "worker/builtin_services.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "shared/frames.hpp"
#include "worker/payload.hpp"

namespace zbroker {

namespace {

constexpr std::int64_t kMaxSleepMs = 600'000;

// A body that is exactly one complete msgpack value is msgpack. Anything else is raw bytes: text
// typed into a socket example ("Hello, Server!" is the msgpack integer 72 and 13 bytes more), a
// value with bytes after it, a truncated one, or no body at all. A body of one ASCII character
// is a complete msgpack value (a positive fixint), so it counts as msgpack.
std::optional<msgpack::object_handle> msgpack_body(std::string_view body) {
    try {
        return unpack_object(body);
    } catch (const CodecError&) {
        return std::nullopt;
    }
}

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trimmed(std::string_view text) {
    while (!text.empty() && is_space(text.front()))
        text.remove_prefix(1);
    while (!text.empty() && is_space(text.back()))
        text.remove_suffix(1);
    return text;
}

// The shortest text that reads back as the same double ("2.5", "1", "1.118033988749895").
std::string shortest(double value) {
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
    return {buffer, result.ptr};
}

// Returns the body frames unchanged: the cheapest round trip, for latency measurements.
Reply serve_echo(Request& request) {
    return Reply::frames(std::move(request.frames));
}

// The seed's greeting: "Hello, Server!" gets "Hello, Client!", a name gets "Hello, <name>!".
// Raw bytes in, raw bytes out, byte for byte; a msgpack string in, a msgpack string out. No body,
// or msgpack that is not a string, gets the msgpack string "Hello, stranger!".
Reply serve_hello(Request& request) {
    const std::string_view body = request.body();
    const auto greeting = [](std::string_view name) {
        return name == "Hello, Server!" ? std::string("Hello, Client!")
                                        : "Hello, " + std::string(name) + "!";
    };
    if (body.empty()) return Reply::of(std::string("Hello, stranger!"));
    const std::optional<msgpack::object_handle> handle = msgpack_body(body);
    if (!handle) return Reply::raw(greeting(body));
    const msgpack::object& value = handle->get();
    if (value.type != msgpack::type::STR || value.via.str.size == 0)
        return Reply::of(std::string("Hello, stranger!"));
    return Reply::of(greeting(std::string_view(value.via.str.ptr, value.via.str.size)));
}

void sleep_checked(std::int64_t ms) {
    if (ms < 0 || ms > kMaxSleepMs)
        throw std::invalid_argument("sleep: \"ms\" must be in 0.." + std::to_string(kMaxSleepMs));
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// Raw: the decimal milliseconds as text ("250", spaces and a newline around it are fine); the
// answer is the same number as text.
Reply sleep_raw(std::string_view body) {
    const std::string_view text = trimmed(body);
    std::int64_t ms = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), ms);
    if (error == std::errc::result_out_of_range) {
        ms = text.front() == '-' ? -1 : kMaxSleepMs + 1;
    } else if (error != std::errc() || end != text.data() + text.size()) {
        throw std::invalid_argument(
            "sleep expects a msgpack map {\"ms\": n} or decimal milliseconds as text, got " +
            printable(body));
    }
    sleep_checked(ms);
    return Reply::raw(std::to_string(ms));
}

// {"ms": n} sleeps n milliseconds: a stand-in for real work of a known length.
Reply serve_sleep(Request& request) {
    const std::optional<msgpack::object_handle> handle = msgpack_body(request.body());
    if (!handle) return sleep_raw(request.body());
    const msgpack::object& body = handle->get();
    if (body.type != msgpack::type::MAP)
        throw std::invalid_argument(std::string("sleep expects a msgpack map {\"ms\": n}, got a ") +
                                    type_name(body.type));
    const auto ms = [&body]() -> std::int64_t {
        for (const msgpack::object_kv& entry : body.via.map) {
            if (entry.key.type != msgpack::type::STR || entry.key.as<std::string>() != "ms")
                continue;
            if (entry.val.type != msgpack::type::POSITIVE_INTEGER &&
                entry.val.type != msgpack::type::NEGATIVE_INTEGER)
                throw std::invalid_argument(
                    std::string("sleep: \"ms\" must be an integer, got a ") +
                    type_name(entry.val.type));
            if (entry.val.type == msgpack::type::NEGATIVE_INTEGER) return -1;
            return entry.val.via.u64 > static_cast<std::uint64_t>(kMaxSleepMs)
                       ? kMaxSleepMs + 1
                       : static_cast<std::int64_t>(entry.val.via.u64);
        }
        throw std::invalid_argument("sleep expects a msgpack map {\"ms\": n}; \"ms\" is missing");
    }();
    sleep_checked(ms);
    return Reply::of(std::map<std::string, std::int64_t>{{"slept_ms", ms}});
}

struct Summary {
    std::uint64_t count = 0;
    double mean = 0;
    double min = 0;
    double max = 0;
    double stddev = 0;  // of the population: the numbers are all there is
    MSGPACK_DEFINE_MAP(count, mean, min, max, stddev)
};

// Raw: numbers as text, separated by spaces, commas or newlines, optionally in brackets ("1 2 3",
// "1,2,3", "[1, 2.5, 3e2]"): what one types into a socket example.
std::vector<double> raw_numbers(std::string_view body) {
    std::string_view text = trimmed(body);
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
        text = text.substr(1, text.size() - 2);
    std::vector<double> numbers;
    while (true) {
        while (!text.empty() && (is_space(text.front()) || text.front() == ','))
            text.remove_prefix(1);
        if (text.empty()) return numbers;
        std::size_t length = 0;
        while (length < text.size() && !is_space(text[length]) && text[length] != ',')
            ++length;
        const std::string_view item = text.substr(0, length);
        double value = 0;
        const auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), value);
        if (error != std::errc() || end != item.data() + item.size() || !std::isfinite(value)) {
            throw std::invalid_argument("stats: item " + std::to_string(numbers.size()) + " (" +
                                        printable(item) + ") is not a finite number");
        }
        numbers.push_back(value);
        text.remove_prefix(length);
    }
}

// Numbers from a msgpack array; items of other types are refused by position.
std::vector<double> msgpack_numbers(const msgpack::object& body) {
    if (body.type != msgpack::type::ARRAY)
        throw std::invalid_argument(
            std::string("stats expects a msgpack array of numbers, got a ") + type_name(body.type));
    std::vector<double> numbers;
    numbers.reserve(body.via.array.size);
    for (std::uint32_t i = 0; i < body.via.array.size; ++i) {
        const msgpack::object& item = body.via.array.ptr[i];
        switch (item.type) {
            case msgpack::type::POSITIVE_INTEGER:
            case msgpack::type::NEGATIVE_INTEGER:
            case msgpack::type::FLOAT32:
            case msgpack::type::FLOAT64:
                numbers.push_back(item.as<double>());
                break;
            default:
                throw std::invalid_argument("stats: item " + std::to_string(i) + " is a " +
                                            type_name(item.type) + ", not a number");
        }
    }
    return numbers;
}

// Numbers get their count, mean, min, max and standard deviation: a msgpack array gets a msgpack
// map; raw text numbers get the same map as one line of JSON text.
Reply serve_stats(Request& request) {
    const std::optional<msgpack::object_handle> handle = msgpack_body(request.body());
    const std::vector<double> numbers =
        handle ? msgpack_numbers(handle->get()) : raw_numbers(request.body());
    if (numbers.empty()) return Reply::error("stats needs at least one number");
    Summary summary;
    summary.count = numbers.size();
    const auto [min, max] = std::minmax_element(numbers.begin(), numbers.end());
    summary.min = *min;
    summary.max = *max;
    double sum = 0;
    for (double x : numbers)
        sum += x;
    summary.mean = sum / static_cast<double>(numbers.size());
    double squares = 0;
    for (double x : numbers)
        squares += (x - summary.mean) * (x - summary.mean);
    summary.stddev = std::sqrt(squares / static_cast<double>(numbers.size()));
    if (handle) return Reply::of(summary);
    return Reply::raw("{\"count\":" + std::to_string(summary.count) +
                      ",\"mean\":" + shortest(summary.mean) + ",\"min\":" + shortest(summary.min) +
                      ",\"max\":" + shortest(summary.max) +
                      ",\"stddev\":" + shortest(summary.stddev) + "}");
}

// Always throws: shows what a client sees when a handler fails. A handler's error is always the
// msgpack map {"error": ...}, raw request or not: the one form every client recognises.
Reply serve_fail(Request&) {
    throw std::runtime_error("fail: this service always fails (for testing)");
}

using HandlerFunction = Reply (*)(Request&);

const std::map<std::string, HandlerFunction, std::less<>>& builtin_handlers() {
    static const std::map<std::string, HandlerFunction, std::less<>> handlers{
        {"echo", serve_echo},
        {"hello", serve_hello},
        {"sleep", serve_sleep},
        {"stats", serve_stats},
        {"fail", serve_fail}};
    return handlers;
}

}  // namespace

const std::vector<std::string>& builtin_service_names() {
    static const std::vector<std::string> names{"echo", "hello", "sleep", "stats", "fail"};
    return names;
}

void add_builtin_service(Worker& worker, std::string_view name) {
    const auto& handlers = builtin_handlers();
    const auto found = handlers.find(name);
    if (found == handlers.end()) {
        std::string known;
        for (const std::string& each : builtin_service_names()) {
            known += known.empty() ? "" : ", ";
            known += each;
        }
        throw std::invalid_argument("unknown built-in service '" + std::string(name) +
                                    "'; known services: " + known);
    }
    // sleep blocks and fail is for tests: they run on the pool. The others take microseconds,
    // so they run on the socket thread and skip two thread hand-offs per request.
    const bool quick = name == "echo" || name == "hello" || name == "stats";
    worker.handle(std::string(name), found->second, quick ? Execution::io_thread : Execution::pool);
}

}  // namespace zbroker
