// zworker: a Majordomo worker program offering the built-in services: flags, logging, signals.
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <zbroker/version.hpp>

#include "shared/config_file_flag.hpp"
#include "shared/curve_flags.hpp"
#include "shared/logging.hpp"
#include "worker/builtin_services.hpp"
#include "worker/worker.hpp"

namespace {

std::atomic<zbroker::Worker*> g_worker{nullptr};
std::atomic<int> g_signals{0};

// The first signal asks for a clean stop; a second one means "do not wait for running jobs".
extern "C" void on_stop_signal(int signal_number) {
    if (g_signals.fetch_add(1) > 0) std::_Exit(128 + signal_number);
    if (zbroker::Worker* worker = g_worker.load()) worker->stop();
}

void install_signal_handlers() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace zbroker;
    WorkerOptions options;
    std::vector<std::string> services;
    std::string log_level = "info";
    auto heartbeat_ms = options.heartbeat_interval.count();
    auto reconnect_ms = options.reconnect_delay.count();

    CLI::App app{
        "zworker: a zbroker worker offering built-in services (it speaks ZB/1, zbroker's native\n"
        "protocol). Each service gets its own connection to each broker, announced with a credit:\n"
        "how many requests it may hold at once. With several brokers a service's credit is split\n"
        "over them, so that together they never send more than it. Handlers run on --threads\n"
        "threads; heartbeats never wait for them, so a long job is not taken for a dead worker.\n"
        "On SIGTERM it tells the brokers at once to send nothing more, finishes its jobs, then\n"
        "disconnects.",
        "zworker"};
    app.set_version_flag("--version", std::string("zworker ") + kVersion);
    add_config_file_flag(app);
    app.add_option("-b,--broker", options.endpoints,
                   "Broker endpoint to connect to. Repeat it, or give a comma-separated list,\n"
                   "to serve several brokers: each gets its own connection per service, and a\n"
                   "fixed share of the credit (see --credit)")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("-s,--service", services,
                   "Service to offer (repeatable): " +
                       fmt::format("{}", fmt::join(builtin_service_names(), ", ")))
        ->required()
        ->check(CLI::IsMember(builtin_service_names()));
    app.add_option("-t,--threads", options.threads, "Handler threads, shared by all services")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    app.add_option("--credit", options.credit,
                   "Requests each service may hold at once. 0: adaptive, one per handler plus\n"
                   "about 1 ms of work (hundreds for microsecond jobs, about one per handler\n"
                   "for jobs of a millisecond or more), so that handlers never wait for the\n"
                   "broker and long jobs do not queue here while another worker is idle.\n"
                   "With N brokers, broker i (in --broker order, from 0) gets credit / N, plus\n"
                   "1 when i < credit % N, and at least 1: --credit 4 over 3 brokers is 2,1,1,\n"
                   "so a service holds at most max(credit, N) requests. The split is fixed: a\n"
                   "broker that is down keeps its share unused")
        ->check(CLI::Range(0, 10'000))
        ->capture_default_str();
    app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval, milliseconds")
        ->check(CLI::Range(10, 3'600'000))
        ->capture_default_str();
    app.add_option("--liveness", options.liveness,
                   "Heartbeat intervals of broker silence before reconnecting")
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    app.add_option("--reconnect-ms", reconnect_ms,
                   "Wait before reconnecting after the broker disconnected or went silent")
        ->check(CLI::Range(0, 3'600'000))
        ->capture_default_str();
    app.add_option("--recent-replies", options.recent_replies,
                   "Per service, keep the replies of this many of the latest requests that\n"
                   "carried an idempotency key (replies over 64 KiB are not kept): a request\n"
                   "sent again with the same key, through any broker, gets the kept reply\n"
                   "without running again. One that comes while the first still runs runs\n"
                   "again. 0: off")
        ->check(CLI::Range(0, 1'000'000))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "Log level")
        ->check(CLI::IsMember(log_level_names()))
        ->capture_default_str();
    CurveClientFlags curve;
    curve.add_to(app,
                 "our key pair file; the broker must list its public key with the worker role");
    app.footer(
        "Services, answering in kind: a body that is one msgpack value gets msgpack; any other\n"
        "body (text from a plain socket example) is raw bytes and gets raw bytes.\n"
        "  echo   the request body, unchanged\n"
        "  hello  \"Hello, Server!\" -> \"Hello, Client!\"; a name -> \"Hello, <name>!\"\n"
        "         raw: the bytes Hello, Server! -> the bytes Hello, Client!; Ada -> Hello, Ada!\n"
        "  sleep  {\"ms\": n} sleeps n ms (0..600000) -> {\"slept_ms\": n}\n"
        "         raw: decimal ms as text, 250 -> 250\n"
        "  stats  [numbers] -> {\"count\", \"mean\", \"min\", \"max\", \"stddev\"}\n"
        "         raw: numbers as text (1 2 3, 1,2,3 or [1, 2, 3]) -> that map as JSON text\n"
        "  fail   always fails\n"
        "Errors are the msgpack map {\"error\": ...}, raw request or not. One ASCII character\n"
        "alone is a msgpack integer: send \"5\\n\", not \"5\", for a raw 5.\n\n"
        "Example:\n  zbroker &\n  zworker --service echo --service stats --threads 4 &\n"
        "  zclient call stats '[1, 2, 3]'\n\n"
        "SIGINT/SIGTERM: no new work, running jobs finish and are replied, DISCONNECT, exit 0.\n"
        "A second signal exits at once.\n\n"
        "A broker may send no more jobs than the credit it was given: one beyond it is refused\n"
        "(not run, not answered; the broker answers its client at its deadline). A broker that\n"
        "sends more than 32 such jobs within 10 s is disconnected from, which hands it back\n"
        "every job this session held, and registered with again after --reconnect-ms.\n"
        "Unexpected messages are logged once per kind per broker every 10 s, with a count.");
    CLI11_PARSE(app, argc, argv);
    options.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
    options.reconnect_delay = std::chrono::milliseconds(reconnect_ms);
    init_logging("zworker", log_level);
    try {
        options.curve = curve.load();
    } catch (const std::exception& e) {
        spdlog::error("cannot turn CURVE on: {}", e.what());
        return EXIT_FAILURE;
    }

    try {
        Worker worker(options);
        for (const std::string& service : services)
            add_builtin_service(worker, service);
        g_worker.store(&worker);
        install_signal_handlers();
        const std::string credit =
            options.credit > 0 ? std::to_string(options.credit) : std::string("adaptive");
        spdlog::info(
            "zworker {} serving {} for {} broker(s) ({}) with {} thread(s), credit {} per service",
            kVersion, fmt::join(services, ", "), options.endpoints.size(),
            fmt::join(options.endpoints, ", "), options.threads, credit);
        worker.run();
        g_worker.store(nullptr);
        const WorkerStats stats = worker.stats();
        spdlog::info(
            "stopped: {} request(s) served, {} answered from recent replies, {} handler "
            "failure(s), {} reconnect(s), at most {} held at once, {} refused beyond credit, {} "
            "malformed message(s)",
            stats.served, stats.duplicates_skipped, stats.failed, stats.reconnects, stats.most_held,
            stats.refused_jobs, stats.malformed);
    } catch (const zmq::error_t& e) {
        spdlog::error(
            "cannot connect to the brokers at {}: {}. Check --broker (e.g. tcp://host:5555).",
            fmt::join(options.endpoints, ", "), e.what());
        return EXIT_FAILURE;
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
