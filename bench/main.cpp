// zbench: request-reply throughput and latency of zbroker, on a topology it starts or an existing
// one.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <zbroker/version.hpp>

#include "bench/baseline_servers.hpp"
#include "bench/baselines.hpp"
#include "bench/failover.hpp"
#include "bench/load_run.hpp"
#include "bench/minimal_client.hpp"
#include "bench/noisy_neighbour.hpp"
#include "bench/plot.hpp"
#include "bench/process_cpu.hpp"
#include "bench/progress_bar.hpp"
#include "bench/report.hpp"
#include "bench/topology.hpp"
#include "shared/logging.hpp"

namespace {

std::string own_path(const char* argv0) {
    std::error_code error;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
    return (error ? std::filesystem::absolute(argv0) : self).string();
}

std::string label_of(const zbroker::bench::Point& p) {
    // Short enough for 80 columns with the figures; the table row that follows has the rest.
    std::string label = p.target + " " + p.mode + ", " + std::to_string(p.inflight) + " in flight";
    if (p.clients > 1) label += ", " + std::to_string(p.clients) + " clients";
    if (p.brokers > 1) label += ", " + std::to_string(p.brokers) + " brokers";
    return label;
}

std::vector<std::string> split_endpoints(const std::string& list) {
    std::vector<std::string> endpoints;
    std::size_t start = 0;
    while (true) {
        const std::size_t comma = list.find(',', start);
        endpoints.push_back(list.substr(start, comma - start));
        if (comma == std::string::npos) return endpoints;
        start = comma + 1;
    }
}

// The workers each broker of `connect` has for `service` (mmi.services): what the workers
// column shows for brokers zbench did not start. Unknown when one does not answer, or when
// they report different counts (said on stderr).
std::optional<std::size_t> connected_workers(const std::string& connect,
                                             const std::string& service) {
    std::vector<int> counts;
    for (const std::string& endpoint : split_endpoints(connect))
        counts.push_back(zbroker::bench::registered_workers(endpoint, service));
    if (std::find(counts.begin(), counts.end(), -1) != counts.end()) {
        std::cerr << "zbench: a broker of " << connect
                  << " did not answer mmi.services: the workers column shows ?\n";
        return std::nullopt;
    }
    if (std::adjacent_find(counts.begin(), counts.end(), std::not_equal_to<>()) != counts.end()) {
        std::cerr << "zbench: the brokers of " << connect << " have different numbers of workers"
                  << " for '" << service << "': the workers column shows ?\n";
        return std::nullopt;
    }
    return static_cast<std::size_t>(counts.front());
}

// The bare 7/MDP echo workers' credit when --credit is 0. zworker's default credit adapts to
// its job times, to hundreds for an echo and at most this; a bare loop measures nothing, so it
// announces the ceiling, which never holds back the load as credit 1 would.
constexpr int kMdpDefaultCredit = 1000;

// Where a point is measured and with which client: zbench's own (load_run.hpp), or the minimal
// one (minimal_client.hpp) with these frames before its one body frame.
struct Target {
    std::string name;
    std::string endpoint;
    std::optional<zbroker::bench::Prefix> minimal;
};

// Measures one point, with a progress bar on a terminal; with `cpu_of`, the CPU per request
// of its broker (or relay) and workers, and of zbench itself, too.
zbroker::bench::Point measure(zbroker::bench::Point point, const zbroker::bench::LoadSpec& spec,
                              const Target& target,
                              const std::optional<zbroker::bench::CpuSubjects>& cpu_of) {
    using namespace zbroker::bench;
    point.target = target.name;
    point.client = target.minimal ? "minimal" : "zbench";
    const std::vector<pid_t> brokers = cpu_of ? cpu_of->middle : std::vector<pid_t>{};
    const std::vector<pid_t> workers = cpu_of ? cpu_of->workers : std::vector<pid_t>{};
    const std::vector<pid_t> self{::getpid()};
    const double brokers_before = cpu_seconds(brokers);
    const double workers_before = cpu_seconds(workers);
    const double self_before = cpu_seconds(self);
    ProgressBar bar(label_of(point));
    const auto progress = [&bar](const LoadProgress& p) { bar.show(p); };
    point.result = target.minimal ? run_minimal_load(spec, *target.minimal, progress)
                                  : run_load(spec, progress);
    if (cpu_of && point.result.answered_all > 0) {
        const double per_request = 1e6 / static_cast<double>(point.result.answered_all);
        point.cpu = CpuPerRequest{(cpu_seconds(brokers) - brokers_before) * per_request,
                                  (cpu_seconds(workers) - workers_before) * per_request,
                                  (cpu_seconds(self) - self_before) * per_request};
    }
    return point;
}

// gnuplot is optional: without it the run's results stand, and the plot is skipped with a word
// on how to get it.
void draw_plot(const std::string& png_path, const std::vector<zbroker::bench::Point>& points) {
    const auto gnuplot = zbroker::bench::find_gnuplot();
    if (!gnuplot) {
        std::cerr << "zbench: --plot " << png_path
                  << " skipped: gnuplot is not installed (on Debian or Ubuntu: apt-get install "
                     "gnuplot-nox); the results above are complete\n";
        return;
    }
    zbroker::bench::plot(*gnuplot, png_path, points);
    std::cerr << "zbench: plot written to " << png_path << '\n';
}

}  // namespace

int main(int argc, char** argv) {
    using namespace zbroker::bench;
    std::string connect;
    std::string service = "echo";
    std::vector<std::string> modes{"sync", "pipelined"};
    std::vector<std::size_t> clients{1};
    std::vector<std::size_t> workers{2};
    std::vector<std::size_t> brokers{1};
    std::vector<std::size_t> inflight{16, 256};
    std::vector<std::size_t> sizes{32};
    std::uint64_t requests = 0;
    double duration_s = 2.0;
    double warmup_s = 0.3;
    int credit = 0;
    std::string json_path;
    std::string csv_path;
    const std::string self = own_path(argv[0]);
    std::string bin_dir = std::filesystem::path(self).parent_path().string();
    bool baseline = false;
    bool mdp = false;
    std::string plot_path;

    CLI::App app{
        "zbench: throughput and latency of zbroker request-reply.\n"
        "Starts its own brokers and echo workers on loopback (or measures --connect ENDPOINTS)\n"
        "and sweeps every combination of the list options given.",
        "zbench"};
    app.set_version_flag("--version", std::string("zbench ") + zbroker::kVersion);
    auto* connect_option = app.add_option(
        "--connect", connect,
        "Measure these running brokers (comma-separated; the clients spread their requests\n"
        "over them) instead of starting them");
    app.add_option("--service", service, "Service to call; its workers must echo")
        ->capture_default_str();
    app.add_option("--mode", modes, "sync (one request at a time per client) and/or pipelined")
        ->delimiter(',')
        ->check(CLI::IsMember({"sync", "pipelined"}))
        ->capture_default_str();
    app.add_option("--clients", clients, "Client connections, comma-separated list")
        ->delimiter(',')
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    app.add_option("--workers", workers, "Worker processes to start, list (ignored with --connect)")
        ->delimiter(',')
        ->check(CLI::Range(1, 500))
        ->capture_default_str();
    app.add_option("--brokers", brokers,
                   "Brokers to start, list: every worker attaches to all of them, and every\n"
                   "client spreads its requests over them (with --connect: the endpoints listed)")
        ->delimiter(',')
        ->check(CLI::Range(1, 16))
        ->excludes(connect_option)
        ->capture_default_str();
    app.add_option("--inflight", inflight, "Requests in flight per client in pipelined mode, list")
        ->delimiter(',')
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    app.add_option("--size", sizes, "Request body bytes, list")
        ->delimiter(',')
        ->check(CLI::Range(std::size_t{0}, std::size_t{64} << 20))
        ->capture_default_str();
    auto* count =
        app.add_option("--requests", requests, "Requests per point (instead of --duration)")
            ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
    app.add_option("--duration", duration_s, "Seconds per point")
        ->check(CLI::Range(0.1, 3600.0))
        ->excludes(count)
        ->capture_default_str();
    app.add_option("--warmup", warmup_s, "Seconds of warm-up before each timed point")
        ->check(CLI::Range(0.0, 60.0))
        ->capture_default_str();
    app.add_option("--credit", credit,
                   "Credit of each started worker (0: zworker's default; the bare 7/MDP echo\n"
                   "workers of --mdp then announce 1000)")
        ->check(CLI::Range(0, 10000));
    app.add_option("--json", json_path, "Write all points as JSON to this file");
    app.add_option("--csv", csv_path, "Write all points as CSV to this file");
    app.add_flag("--baseline", baseline,
                 "Also run each point against a direct echo server (no broker), with a minimal\n"
                 "client (floor) and with zbench's (direct: given one direct echo server per\n"
                 "broker; below 0.9x the floor zbench is the bottleneck: a loud warning, exit\n"
                 "status 3), and against a plain ROUTER-to-ROUTER relay with the minimal client\n"
                 "(relay); print zbroker / relay");
    app.add_flag("--mdp", mdp,
                 "Also measure 7/MDP: the minimal client with 7/MDP frames through a zbroker of\n"
                 "its own to bare 7/MDP echo workers (mdp), through the relay to echo workers\n"
                 "(relay-mdp), and through a bare 7/MDP broker that only translates, keeping no\n"
                 "state, to the same workers as mdp (mdp-bare); print mdp-bare / relay-mdp (what\n"
                 "7/MDP costs), mdp / relay-mdp and mdp / mdp-bare (what zbroker adds)")
        ->excludes("--connect");
    app.add_option("--plot", plot_path,
                   "Draw req/s and p50/p99 latency against --inflight into this PNG (needs\n"
                   "gnuplot: apt-get install gnuplot-nox)")
        ->check(
            [](const std::string& path) -> std::string {  // before the run, not after it
                const auto dir = std::filesystem::absolute(path).parent_path();
                return std::filesystem::is_directory(dir)
                           ? ""
                           : "directory " + dir.string() + " does not exist: create it first";
            },
            "PNG");
    std::size_t rounds = 1;
    app.add_option("--rounds", rounds,
                   "Measure every point this many times, the targets in alternating order\n"
                   "(forward, then backward), and print the median and range of each ratio: on a\n"
                   "shared machine one run's ratio swings by 0.2 or more")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    bool cpu = false;
    app.add_flag("--cpu", cpu,
                 "Also report the CPU time (user+sys, /proc) per request of the brokers (or the\n"
                 "relay) and the workers zbench started, and of zbench itself (its clients),\n"
                 "over each zbroker, relay and 7/MDP point, warm-up included")
        ->excludes(connect_option);
    app.add_option("--bin-dir", bin_dir,
                   "Where zbroker and zworker are (default: the directory of this zbench)");
    std::string log_level = "warn";
    app.add_option("--log-level", log_level,
                   "Level of zbench's clients' log on stderr (a broker lost, requests resent)")
        ->check(CLI::IsMember(zbroker::log_level_names()))
        ->capture_default_str();

    // The baselines' processes: zbench runs them as itself, so that they need no other binary.
    // Hidden (empty group): they are started by --baseline, not by people.
    std::size_t relay_workers = 1;
    std::string relay_backend;
    auto* direct_command = app.add_subcommand("serve-direct", "Direct echo server")->group("");
    auto* relay_command = app.add_subcommand("serve-relay", "Featureless relay")->group("");
    relay_command->add_option("--workers", relay_workers)->required()->check(CLI::Range(1, 500));
    std::size_t bare_mdp_workers = 1;
    auto* bare_mdp_command =
        app.add_subcommand("serve-bare-mdp-broker", "Bare 7/MDP broker")->group("");
    bare_mdp_command->add_option("--workers", bare_mdp_workers)
        ->required()
        ->check(CLI::Range(1, 500));
    auto* worker_command = app.add_subcommand("echo-worker", "The relay's echo worker")->group("");
    worker_command->add_option("--connect", relay_backend)->required();
    std::string mdp_broker;
    std::string mdp_service;
    int mdp_credit = 1;
    auto* mdp_command = app.add_subcommand("mdp-worker", "A bare 7/MDP echo worker")->group("");
    mdp_command->add_option("--connect", mdp_broker)->required();
    mdp_command->add_option("--service", mdp_service)->required();
    mdp_command->add_option("--credit", mdp_credit)->required()->check(CLI::Range(1, 10000));

    // A measurement of its own, not a point of the sweep: its options are its own.
    NoisySpec noisy;
    double noisy_duration_s = 3.0;
    double noisy_warmup_s = 0.3;
    auto* noisy_command = app.add_subcommand(
        "noisy",
        "Noisy neighbour: client B's latency, one sleep request at a time, alone\n"
        "and then while client A keeps --inflight of the same requests in flight, for each\n"
        "queue policy (fifo, fair, priority) at worker credit = threads and at zworker's\n"
        "default credit. Prints B's p50/p99 both ways, their p99 ratio, A's and total req/s,\n"
        "and fair / fifo total throughput. A fresh broker and 2 sleep workers per row.");
    noisy_command
        ->add_option("--duration", noisy_duration_s, "Seconds of each phase (B alone, B with A)")
        ->check(CLI::Range(0.1, 3600.0))
        ->capture_default_str();
    noisy_command->add_option("--warmup", noisy_warmup_s, "Seconds before each phase is timed")
        ->check(CLI::Range(0.0, 60.0))
        ->capture_default_str();
    noisy_command->add_option("--inflight", noisy.inflight, "Client A's requests in flight")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    noisy_command->add_option("--policy", noisy.policies, "Queue policies, comma-separated list")
        ->delimiter(',')
        ->check(CLI::IsMember({"fifo", "fair", "priority"}))
        ->capture_default_str();
    noisy_command->add_option("--sleep-ms", noisy.sleep_ms, "Length of every request's job")
        ->check(CLI::Range(0, 1000))
        ->capture_default_str();
    noisy_command->footer(
        "Every request carries a 30 s deadline; any answer but 200 is counted in errors, and\n"
        "requests of A still unanswered 5 s after its phase are abandoned as no_reply.\n"
        "Exit status 2 when there were errors.");

    // Failover: its own topology and load, and its own options.
    FailoverSpec failover;
    double failover_duration_s = 20.0;
    double failover_kill_every_s = 4.0;
    int failover_down_for_ms = 1000;
    std::string failover_json;
    auto* failover_command = app.add_subcommand(
        "failover",
        "Several brokers, no single point of failure: starts --brokers brokers and\n"
        "--workers zworker echo processes attached to all of them; --clients connections, each\n"
        "given every broker, keep --inflight requests in flight. Every --kill-every seconds the\n"
        "next broker (round robin) gets SIGKILL (SIGTERM, a drain, with --drain) and is started\n"
        "again on its endpoint --down-for ms later. Reports every answer by status, the requests\n"
        "the clients resent, latency over all requests and over those a stop caught in flight\n"
        "(sent before it, answered after it), and per restart how soon the broker had its\n"
        "workers back (mmi.services, polled every 50 ms) and took its share of the load.");
    failover_command->add_option("--brokers", failover.brokers, "Brokers")
        ->check(CLI::Range(1, 16))
        ->capture_default_str();
    failover_command->add_option("--workers", failover.workers, "zworker processes")
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    failover_command->add_option("--clients", failover.clients, "Client connections")
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    failover_command->add_option("--inflight", failover.inflight, "Requests in flight per client")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    failover_command->add_option("--size", failover.size, "Request body bytes")
        ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20))
        ->capture_default_str();
    failover_command->add_option("--duration", failover_duration_s, "Seconds of load")
        ->check(CLI::Range(0.5, 3600.0))
        ->capture_default_str();
    failover_command
        ->add_option("--kill-every", failover_kill_every_s,
                     "Seconds between stops; the first comes this long after the load starts")
        ->check(CLI::Range(0.1, 3600.0))
        ->capture_default_str();
    failover_command
        ->add_option("--down-for", failover_down_for_ms,
                     "Milliseconds from a broker's stop to its restart (at least until it exited)")
        ->check(CLI::Range(0, 600'000))
        ->capture_default_str();
    failover_command->add_flag("--drain", failover.drain,
                               "SIGTERM instead of SIGKILL: the broker drains (refuses new "
                               "requests with 503 draining, answers what it holds) and exits");
    failover_command->add_option("--json", failover_json, "Write the report as JSON to this file");
    failover_command->footer(
        "Brokers, workers and clients keep their default heartbeats (2500 ms). Requests carry\n"
        "no deadline: one still unanswered 15 s after the load stopped counts as no reply.\n"
        "Exit status 2 when any request was not answered 200.");

    app.footer(
        "MB/s counts request payload bytes once. Latency is per request, from send to reply,\n"
        "exact percentiles over every sample. workers: each broker's workers for --service\n"
        "(with --connect, as the brokers report them; ? when unknown). errors: the requests\n"
        "that failed, by kind: no reply (none within 10 s), or the status (503, 504, ...).\n"
        "Exit status: 2 when requests went unanswered, 3 when the client check of --baseline\n"
        "failed (zbench was the bottleneck). Example:\n"
        "  zbench --mode pipelined --inflight 1,16,256,1024 --size 32,1024 --duration 2");
    CLI11_PARSE(app, argc, argv);
    zbroker::init_logging("zbench", log_level);
    try {
        if (*direct_command) serve_direct_echo();
        if (*relay_command) serve_relay(relay_workers);
        if (*bare_mdp_command) serve_bare_mdp_broker(bare_mdp_workers);
        if (*worker_command) serve_echo_worker(relay_backend);
        if (*mdp_command) serve_mdp_worker(mdp_broker, mdp_service, mdp_credit);
    } catch (const std::exception& e) {
        std::cerr << "zbench: " << e.what() << '\n';
        return EXIT_FAILURE;
    }

    if (*noisy_command) {
        noisy.bin_dir = bin_dir;
        noisy.duration = std::chrono::milliseconds(static_cast<long>(noisy_duration_s * 1000));
        noisy.warmup = std::chrono::milliseconds(static_cast<long>(noisy_warmup_s * 1000));
        try {
            const auto rows = run_noisy(noisy, std::cout);
            const bool clean = std::all_of(rows.begin(), rows.end(),
                                           [](const NoisyRow& r) { return r.error_count() == 0; });
            return clean ? EXIT_SUCCESS : 2;
        } catch (const std::exception& e) {
            std::cerr << "zbench: " << e.what() << '\n';
            return EXIT_FAILURE;
        }
    }

    if (*failover_command) {
        failover.bin_dir = bin_dir;
        failover.duration =
            std::chrono::milliseconds(static_cast<long>(failover_duration_s * 1000));
        failover.kill_every =
            std::chrono::milliseconds(static_cast<long>(failover_kill_every_s * 1000));
        failover.down_for = std::chrono::milliseconds(failover_down_for_ms);
        try {
            const FailoverResult result = run_failover(failover, std::cout);
            if (!failover_json.empty()) write_failover_json(failover_json, failover, result);
            return result.failed() == 0 ? EXIT_SUCCESS : 2;
        } catch (const std::exception& e) {
            std::cerr << "zbench: " << e.what() << '\n';
            return EXIT_FAILURE;
        }
    }

    std::vector<Point> points;
    std::vector<ClientCheck> checks;
    // (brokers, workers) per topology: every combination asked for, or the one given.
    std::vector<std::pair<std::size_t, std::size_t>> topologies;
    if (connect.empty()) {
        for (const std::size_t broker_count : brokers) {
            for (const std::size_t worker_count : workers)
                topologies.emplace_back(broker_count, worker_count);
        }
    } else {
        topologies.emplace_back(split_endpoints(connect).size(), 0);
    }
    try {
        print_table_header(std::cout);
        for (const auto& [broker_count, worker_count] : topologies) {
            std::optional<Topology> topology;
            if (connect.empty()) {
                TopologySpec topology_spec;
                topology_spec.bin_dir = bin_dir;
                topology_spec.workers = worker_count;
                topology_spec.credit = credit;
                topology_spec.service = service;
                topology_spec.brokers = broker_count;
                topology.emplace(topology_spec);
            }
            const std::string endpoint = connect.empty() ? topology->endpoint() : connect;
            const std::optional<std::size_t> workers_per_broker =
                connect.empty() ? std::optional(worker_count) : connected_workers(connect, service);
            // One direct echo server per broker: zbench's client is checked on as many links
            // as it drives zbroker over, since with several it does more per request.
            std::vector<DirectEchoServer> direct;
            std::string direct_endpoints;
            std::optional<FeaturelessRelay> relay;
            std::optional<BareMdpBroker> bare_mdp;
            std::optional<MdpEchoTopology> mdp_topology;
            for (std::size_t i = 0; baseline && i < broker_count; ++i) {
                direct.emplace_back(self);
                direct_endpoints += (i == 0 ? "" : ",") + direct.back().endpoint();
            }
            if (baseline || mdp) relay.emplace(self, std::max<std::size_t>(worker_count, 1));
            if (mdp) {
                const int worker_credit = credit > 0 ? credit : kMdpDefaultCredit;
                bare_mdp.emplace(self, std::max<std::size_t>(worker_count, 1), worker_credit,
                                 service);
                mdp_topology.emplace(self, bin_dir, worker_count, worker_credit, service);
            }

            // Measured in this order (backwards in every other round); comparisons follow.
            std::vector<Target> targets;
            if (baseline) {
                targets.push_back({"floor", direct.front().endpoint(), Prefix{}});
                targets.push_back({"direct", direct_endpoints, std::nullopt});
                targets.push_back({"relay", relay->endpoint(), Prefix{}});
            }
            targets.push_back({"zbroker", endpoint, std::nullopt});
            if (mdp) {
                targets.push_back({"relay-mdp", relay->endpoint(), mdp_client_prefix(service)});
                targets.push_back({"mdp-bare", bare_mdp->endpoint(), mdp_client_prefix(service)});
                targets.push_back({"mdp", mdp_topology->endpoint(), mdp_client_prefix(service)});
            }
            // What each round compares: target / baseline, measured in the same round.
            std::vector<std::pair<std::string, std::string>> comparisons;
            if (baseline) comparisons.emplace_back("zbroker", "relay");
            if (mdp) {
                comparisons.emplace_back("mdp-bare", "relay-mdp");  // 7/MDP's own cost
                comparisons.emplace_back("mdp", "relay-mdp");
                comparisons.emplace_back("mdp", "mdp-bare");  // zbroker's work beyond it
            }
            // Whose CPU a target's point reports: everything in the middle zbench started.
            const auto cpu_of = [&](const std::string& name) -> std::optional<CpuSubjects> {
                if (name == "zbroker" && topology) return topology->cpu_subjects();
                if (name.starts_with("relay")) return relay->cpu_subjects();
                if (name == "mdp-bare") return bare_mdp->cpu_subjects();
                if (name == "mdp") return mdp_topology->cpu_subjects();
                return std::nullopt;
            };
            for (const auto& mode : modes) {
                const auto windows = mode == "sync" ? std::vector<std::size_t>{1} : inflight;
                for (const std::size_t size : sizes) {
                    for (const std::size_t window : windows) {
                        for (const std::size_t client_count : clients) {
                            LoadSpec spec;
                            spec.service = service;
                            spec.clients = client_count;
                            spec.inflight = window;
                            spec.size = size;
                            spec.requests = requests;
                            spec.duration =
                                std::chrono::milliseconds(static_cast<long>(duration_s * 1000));
                            spec.warmup =
                                std::chrono::milliseconds(static_cast<long>(warmup_s * 1000));
                            // The ratios of each comparison, one per round.
                            std::vector<std::vector<Ratio>> ratios(comparisons.size());
                            for (std::size_t round = 1; round <= rounds; ++round) {
                                // Every other round backwards: a target measured first or last
                                // in each round would meet the machine in another state.
                                std::vector<Target> order = targets;
                                if (round % 2 == 0) std::reverse(order.begin(), order.end());
                                std::map<std::string, Point> measured;
                                for (const Target& target : order) {
                                    spec.endpoint = target.endpoint;
                                    Point point;
                                    point.mode = mode;
                                    point.clients = client_count;
                                    point.workers = workers_per_broker;
                                    point.inflight = window;
                                    point.size = size;
                                    point.brokers = broker_count;
                                    point.round = round;
                                    point = measure(point, spec, target,
                                                    cpu ? cpu_of(target.name) : std::nullopt);
                                    print_table_row(std::cout, point);
                                    print_cpu(std::cout, point);
                                    points.push_back(point);
                                    measured[target.name] = point;
                                }
                                if (baseline) {
                                    checks.push_back(print_client_check(
                                        std::cout, measured.at("direct"), measured.at("floor")));
                                }
                                for (std::size_t i = 0; i < comparisons.size(); ++i) {
                                    const auto& [target, against] = comparisons[i];
                                    ratios[i].push_back(print_ratio(std::cout, measured.at(target),
                                                                    measured.at(against)));
                                }
                            }
                            if (rounds > 1) {
                                for (std::size_t i = 0; i < comparisons.size(); ++i) {
                                    print_ratio_summary(std::cout, comparisons[i].first,
                                                        comparisons[i].second, ratios[i]);
                                }
                            }
                        }
                    }
                }
            }
        }
        if (!json_path.empty()) write_json(json_path, points, checks);
        if (!csv_path.empty()) write_csv(csv_path, points);
        if (!plot_path.empty()) draw_plot(plot_path, points);
    } catch (const std::exception& e) {
        std::cerr << "zbench: " << e.what() << '\n';
        return EXIT_FAILURE;
    }
    int status = EXIT_SUCCESS;
    const auto failed = std::count_if(checks.begin(), checks.end(),
                                      [](const ClientCheck& c) { return !c.passed(); });
    if (failed > 0) {
        std::cerr << "zbench: CLIENT CHECK FAILED at " << failed << " of " << checks.size()
                  << " point(s): zbench's own client did less than " << kClientCheckMin
                  << "x the minimal client's req/s on the direct echo, so zbench, not the "
                     "target, limited those points. Their figures must not be reported.\n";
        status = 3;
    }
    for (const Point& p : points) {
        if (p.result.answered() != p.result.sent) {
            std::cerr << "zbench: " << (p.result.sent - p.result.answered())
                      << " request(s) got no answer at some point: see the errors column\n";
            return 2;
        }
    }
    return status;
}
