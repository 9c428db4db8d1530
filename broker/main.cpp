// zbroker: the Majordomo broker program: flags, logging, signals, then BrokerLoop.
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <zbroker/version.hpp>

#include "broker/broker_loop.hpp"
#include "broker/metrics.hpp"
#include "broker/zap_authenticator.hpp"
#include "shared/config_file_flag.hpp"
#include "shared/curve_keys.hpp"
#include "shared/logging.hpp"

namespace {

std::atomic<bool> g_stop{false};
// Bumped by SIGHUP; the ZAP handler's thread notices the change and reloads the keys there.
std::atomic<std::uint32_t> g_reload_requests{0};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "used from a signal handler");

extern "C" void request_stop(int) {
    g_stop.store(true);
}

extern "C" void request_reload(int) {
    g_reload_requests.fetch_add(1);
}

void install_signal_handlers() {
    struct sigaction action {};
    action.sa_handler = request_stop;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    // Always caught, CURVE or not: a stray reload must never kill a broker (SIGHUP's default).
    action.sa_handler = request_reload;
    sigaction(SIGHUP, &action, nullptr);
}

// `zbroker keygen --out FILE`: a new key pair in FILE (mode 0600), the public key on stdout.
int run_keygen(const std::string& out) {
    try {
        const zbroker::CurveKeyPair pair = zbroker::generate_curve_keypair();
        zbroker::write_curve_keypair(out, pair);
        std::cout << pair.public_key << '\n';
        return EXIT_SUCCESS;
    } catch (const std::exception& e) {
        std::cerr << "zbroker keygen: " << e.what() << '\n';
        return EXIT_FAILURE;
    }
}

// A scrape sees counters at most this old; Prometheus scrapes every 15 s by default.
constexpr zbroker::Millis kMetricsPeriod{1000};

// CLI11 reads numbers with strtoull(base 0): "0250" would be 168 (octal), "0x10" 16, "+7" and
// " 7" 7. Every number flag takes decimal digits only, so a value means what it says.
const CLI::Validator kDecimal(
    [](std::string& text) -> std::string {
        const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
            return c >= '0' && c <= '9';
        });
        if (digits && (text.size() == 1 || text.front() != '0')) return {};
        return "'" + text + "': expected a whole number in decimal digits, without leading zeros";
    },
    "");

// A fairness weight: a whole number from 1 to 1000 and nothing else ("5x" is not 5).
std::optional<std::uint32_t> parse_weight(std::string_view text) {
    std::uint32_t weight = 0;
    const char* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(text.data(), end, weight);
    if (error != std::errc{} || stop != end || weight < 1 || weight > 1000) return std::nullopt;
    return weight;
}

// Whoever reads the broker's secret key can pose as the broker to every peer: as ssh does for a
// private key, refuse a key pair file that anyone but its owner may read or write.
void require_private_key_file(const std::string& path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0 || (status.st_mode & (S_IRWXG | S_IRWXO)) == 0) return;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
    throw std::runtime_error("key pair file " + path + " may be read by others (mode " + mode +
                             "), and it holds the broker's secret key: chmod 600 " + path);
}

std::string host_of(const std::string& address) {
    const auto colon = address.rfind(':');
    return colon == std::string::npos ? address : address.substr(0, colon);
}

void log_summary(const zbroker::broker::BrokerCore& core) {
    using namespace zbroker::broker;
    const Counters& c = core.counters();
    spdlog::info(
        "served {} request(s): {} dispatch(es), {} re-queued, {} malformed message(s), {} dropped",
        c.requests, c.dispatches, c.requeued, c.malformed_total(), c.drops_total());
    for (std::size_t i = 0; i < c.malformed.size(); ++i) {
        if (c.malformed[i] > 0)
            spdlog::info("  malformed {}: {}", name(static_cast<Malformed>(i)), c.malformed[i]);
    }
    for (std::size_t i = 0; i < c.drops.size(); ++i) {
        if (c.drops[i] > 0)
            spdlog::info("  dropped {}: {}", name(static_cast<Drop>(i)), c.drops[i]);
    }
}

}  // namespace

int main(int argc, char** argv) {
    using namespace zbroker;
    broker::BrokerConfig config;
    broker::SocketOptions socket_options;
    std::string bind{protocol::kDefaultBrokerBind};
    std::string log_level = "info";
    auto heartbeat_ms = config.heartbeat_interval.count();
    auto drain_ms = config.drain_timeout.count();
    auto default_deadline_ms = config.default_deadline.count();
    auto orphan_after_ms = config.orphan_after.count();
    std::string curve_secret_file;
    std::string authorized_keys_file;
    std::string metrics_address;

    CLI::App app{
        "zbroker: a Majordomo (7/MDP + 8/MMI) request-reply broker.\n"
        "Clients (MDPC01, ZBC01 or ZB/1) and workers (MDPW01 or ZB/1) connect to one ROUTER\n"
        "socket; requests queue per service, shared fairly between clients and by priority\n"
        "(--queue-policy); each goes to a worker that has credit (requests it may hold at once).",
        "zbroker"};
    app.set_version_flag("--version", std::string("zbroker ") + kVersion);
    add_config_file_flag(app);
    app.add_option("-b,--bind", bind, "Endpoint to bind for clients and workers")
        ->capture_default_str();
    app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval to workers, milliseconds")
        ->check(kDecimal)
        ->check(CLI::Range(10, 3'600'000))
        ->capture_default_str();
    app.add_option("--liveness", config.heartbeat_liveness,
                   "Heartbeats a worker may miss before it is dead")
        ->check(kDecimal)
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    app.add_option("--max-attempts", config.max_attempts,
                   "Dispatches per request; past this a worker death answers 500")
        ->check(kDecimal)
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    app.add_option("--queue-limit", config.queue_limit, "Waiting requests per service before 429")
        ->check(kDecimal)
        ->check(CLI::Range(1, 100'000'000))
        ->capture_default_str();
    app.add_option("--max-requests", config.max_requests,
                   "Requests held in all (queued or at workers) before 429: bounds memory")
        ->check(kDecimal)
        ->check(CLI::Range(1, 100'000'000))
        ->capture_default_str();
    app.add_option("--max-msg-size", config.max_msg_size,
                   "Largest request body in bytes; larger gets 413")
        ->check(kDecimal)
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 31))
        ->capture_default_str();
    app.add_option("--max-bytes", config.max_bytes,
                   "Request body bytes held in all (queued or at workers) before 429")
        ->check(kDecimal)
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 40))
        ->capture_default_str();
    app.add_option("--max-services", config.max_services,
                   "Service names known at once; a new one past this is refused (429; a "
                   "worker's READY: DISCONNECT). Idle services are forgotten")
        ->check(kDecimal)
        ->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}))
        ->capture_default_str();
    app.add_option("--max-credit", config.max_credit,
                   "Largest credit a worker may announce in READY")
        ->check(kDecimal)
        ->check(CLI::Range(1u, 1'000'000u))
        ->capture_default_str();
    app.add_option("--drain-timeout-ms", drain_ms,
                   "On SIGINT/SIGTERM, how long to finish held requests before answering 503")
        ->check(kDecimal)
        ->check(CLI::Range(0, 3'600'000))
        ->capture_default_str();
    app.add_option("--default-deadline-ms", default_deadline_ms,
                   "Deadline of requests that bring none (plain MDP, ZBC01 without deadline_ms): "
                   "503/504 or, for MDP, a counted drop. Bounded, so a request for a service no "
                   "worker serves does not wait for ever; raise it for longer jobs of plain MDP "
                   "clients, 0 for no deadline")
        ->check(kDecimal)
        ->check(CLI::Range(0, 86'400'000))
        ->capture_default_str();
    app.add_option("--orphan-after-ms", orphan_after_ms,
                   "How long a worker may hold a request past its deadline (answered 504) before "
                   "it no longer counts against the worker's credit (its handler may be hung); "
                   "0: never. Keep it above --heartbeat-ms x --liveness")
        ->check(kDecimal)
        ->check(CLI::Range(0, 86'400'000))
        ->capture_default_str();
    const std::map<std::string, broker::QueuePolicyKind> policies{
        {"fifo", broker::QueuePolicyKind::fifo},
        {"fair", broker::QueuePolicyKind::fair},
        {"priority", broker::QueuePolicyKind::priority}};
    std::string policy{broker::policy_name(config.queue.kind)};
    app.add_option("--queue-policy", policy,
                   "Order of a service's waiting requests. fifo: oldest first. fair: clients "
                   "(fairness keys: the connection, or the request's fairness_key) take turns by "
                   "weight, and a key past its share of --queue-limit gets 429 first. priority: "
                   "higher priority (0-9) first, fair within each level")
        ->check(CLI::IsMember({"fifo", "fair", "priority"}))
        ->capture_default_str();
    app.add_option("--low-priority-every", config.queue.low_priority_every,
                   "With --queue-policy priority, while several levels wait, every Nth request "
                   "goes to a lower level waiting, each in turn, so none is starved; 0: strict "
                   "priority")
        ->check(kDecimal)
        ->check(CLI::Range(0u, 1'000'000u))
        ->capture_default_str();
    std::vector<std::string> weights;
    app.add_option("--fairness-weight", weights,
                   "KEY=WEIGHT: the fairness key KEY gets WEIGHT turns to another key's 1 "
                   "(fair and priority policies); repeat for more keys")
        ->check([](const std::string& text) -> std::string {
            const auto eq = text.rfind('=');
            if (eq == std::string::npos || eq == 0)
                return "'" + text + "': expected KEY=WEIGHT, e.g. tenant-a=3";
            if (!parse_weight(std::string_view(text).substr(eq + 1)))
                return "'" + text + "': WEIGHT must be an integer from 1 to 1000";
            return {};
        });
    app.add_flag("--drain-without-curve", config.drain_without_curve,
                 "Let any peer call mmi.drain when CURVE is off (with CURVE: admin keys only)");
    app.add_option("--hwm", socket_options.hwm, "Messages queued per peer (ZMQ_SNDHWM/RCVHWM)")
        ->check(kDecimal)
        ->check(CLI::Range(1, 10'000'000))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "Log level")
        ->check(CLI::IsMember(log_level_names()))
        ->capture_default_str();
    app.add_option("--metrics", metrics_address,
                   "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464); "
                   "one address, 0.0.0.0:PORT for every interface")
        ->check([](const std::string& text) { return broker::metrics_address_problem(text); });
    auto* secret_option =
        app.add_option("--curve-secret", curve_secret_file,
                       "Turns CURVE on: the broker's key pair file (from `zbroker keygen`)")
            ->check(CLI::ExistingFile);
    auto* keys_option =
        app.add_option("--authorized-keys", authorized_keys_file,
                       "With --curve-secret: lines `ROLE PUBLIC-KEY` (client, worker, admin) of "
                       "the peers admitted; SIGHUP reloads it")
            ->check(CLI::ExistingFile);
    secret_option->needs(keys_option);
    keys_option->needs(secret_option);
    std::string keygen_out;
    CLI::App* keygen = app.add_subcommand(
        "keygen", "Write a new CURVE key pair file (mode 0600) and print its public key");
    keygen->add_option("-o,--out", keygen_out, "File to create (never overwritten)")->required();
    app.require_subcommand(0, 1);
    app.footer(
        "Example:\n  zbroker --bind tcp://*:5555 &\n  zworker --service echo &\n"
        "  zclient call echo '\"hi\"'\n\nSIGINT/SIGTERM drains: no new work, held requests "
        "finish,\n"
        "workers get DISCONNECT, exit 0.\n\n"
        "CURVE (see README, Security):\n  zbroker keygen --out broker.key\n"
        "  zbroker --curve-secret broker.key --authorized-keys authorized_keys\n"
        "SIGHUP reloads the authorized keys for new connections.");
    CLI11_PARSE(app, argc, argv);
    if (keygen->parsed()) return run_keygen(keygen_out);
    config.heartbeat_interval = Millis(heartbeat_ms);
    config.drain_timeout = Millis(drain_ms);
    config.default_deadline = Millis(default_deadline_ms);
    config.orphan_after = Millis(orphan_after_ms);
    config.queue.kind = policies.at(policy);
    for (const std::string& entry : weights) {
        const auto eq = entry.rfind('=');
        const std::string key = entry.substr(0, eq);
        const std::uint32_t weight = *parse_weight(std::string_view(entry).substr(eq + 1));
        if (!config.queue.weights.emplace(key, weight).second) {
            return app.exit(CLI::ValidationError(
                "--fairness-weight",
                "fairness key '" + key + "' is given twice; give each key one weight"));
        }
    }
    init_logging("zbroker", log_level);

    zmq::context_t context{1};
    // Before the loop, so it outlives it and serves ZAP before the ROUTER accepts anyone.
    std::optional<broker::ZapAuthenticator> authenticator;
    if (!curve_secret_file.empty()) {
        try {
            if (!curve_available()) {
                throw std::runtime_error(
                    "this libzmq has no CURVE support (zmq_has(\"curve\") is false); install one "
                    "built with libsodium, or run without --curve-secret");
            }
            require_private_key_file(curve_secret_file);
            const CurveKeyPair pair = read_curve_keypair(curve_secret_file);
            socket_options.curve_secret_key = pair.secret_key;
            authenticator.emplace(context, authorized_keys_file, g_reload_requests);
            spdlog::info("CURVE on: public key {}, {} authorized key(s) from {}", pair.public_key,
                         authenticator->initial_key_count(), authorized_keys_file);
        } catch (const std::exception& e) {
            spdlog::error("cannot turn CURVE on: {}", e.what());
            return EXIT_FAILURE;
        }
    }
    std::optional<broker::BrokerLoop> loop;
    try {
        loop.emplace(context, config, bind, socket_options);
    } catch (const zmq::error_t& e) {
        const char* advice = e.num() == EADDRINUSE
                                 ? "Is another broker running there? Pick another with --bind."
                                 : "Check the address: tcp://HOST:PORT with HOST an interface "
                                   "address, a name of this host, or *.";
        spdlog::error("cannot bind {}: {}. {}", bind, e.what(), advice);
        return EXIT_FAILURE;
    }
    std::optional<broker::MetricsEndpoint> metrics;
    if (!metrics_address.empty()) {
        try {
            metrics.emplace(metrics_address);
        } catch (const std::exception& e) {
            spdlog::error("{}. Is the port in use? Pick another with --metrics HOST:PORT.",
                          e.what());
            return EXIT_FAILURE;
        }
        loop->observe_every(kMetricsPeriod, [&metrics](const auto& core, auto now) {
            metrics->publish(core.snapshot(now));
        });
        spdlog::info("metrics on http://{}:{}/metrics", host_of(metrics_address), metrics->port());
    }
    install_signal_handlers();
    spdlog::info(
        "zbroker {} listening on {} (heartbeat {} ms x {}, max attempts {}, queue limit {}, "
        "queue policy {}, {} fairness weight(s))",
        kVersion, loop->endpoint(), heartbeat_ms, config.heartbeat_liveness, config.max_attempts,
        config.queue_limit, policy, config.queue.weights.size());
    loop->run(g_stop);
    log_summary(loop->core());
    spdlog::info("stopped");
    return EXIT_SUCCESS;
}
