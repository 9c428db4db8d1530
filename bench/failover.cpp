// The load runs on client threads; the calling thread stops and restarts the brokers (it must:
// children die with the thread that started them), and a thread per restart watches the broker
// come back through mmi.services.
#include "failover.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <stop_token>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/send_times.hpp"
#include "bench/topology.hpp"
#include "client/async_client.hpp"
#include "client/client.hpp"

namespace zbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

// How long requests still in flight when the load stops may take; past it they count as no
// reply. Twice the time a silent broker takes to be given up (ZMTP heartbeats, 7.5 s).
constexpr std::chrono::milliseconds kDrainPatience{15'000};
// How long a drained broker may take to exit: its --drain-timeout-ms (10 s), and some.
constexpr std::chrono::milliseconds kExitPatience{20'000};
// mmi.services polls of a restarted broker: every kPollInterval, each given kPollTimeout.
constexpr std::chrono::milliseconds kPollInterval{50};
constexpr std::chrono::milliseconds kPollTimeout{250};
// "Took its share": over at least this long, at least half of 1 / brokers of all answers. At
// 100,000 req/s, 10,000 answers: long enough not to be noise, short enough to say when.
constexpr std::chrono::milliseconds kShareWindow{100};

double ms_between(SteadyClock::time_point from, SteadyClock::time_point to) {
    return std::chrono::duration<double, std::milli>(to - from).count();
}

// One request answered 200: when it was sent and answered, from the start of the load.
struct Sample {
    std::int64_t sent_ns;
    std::int64_t answered_ns;
};

// What one client thread saw; read by others only through `answered`, and after the join.
struct ClientRecord {
    std::uint64_t sent = 0;
    std::map<protocol::Status, std::uint64_t> answers;
    std::uint64_t no_reply = 0;
    std::uint64_t resent = 0;
    std::vector<Sample> samples;
    alignas(64) std::atomic<std::uint64_t> answered{0};  // for the restart watches
};

// One connection given every broker, pipelining its window until `stop`, then waiting (at most
// kDrainPatience) for what it still has in flight.
void drive_client(const FailoverSpec& spec, const std::string& endpoints,
                  SteadyClock::time_point start, const std::atomic<bool>& stop,
                  ClientRecord& record) {
    AsyncClient client(endpoints, spec.inflight);
    SendTimes send_times(spec.inflight);
    const std::string body(spec.size, 'x');
    record.samples.reserve(1 << 20);
    std::uint64_t answered = 0;
    const auto take = [&](const Completion& done) {
        ++answered;
        const auto sent = send_times.take(done.id);
        ++record.answers[done.status];
        if (sent && done.status == protocol::Status::ok) {
            record.samples.push_back(
                {(sent->at - start).count(), (SteadyClock::now() - start).count()});
        }
    };
    while (!stop.load(std::memory_order_relaxed)) {
        while (client.in_flight() < client.window()) {
            const auto id = client.queue(spec.service, body);
            if (!id) break;
            send_times.put(*id, SteadyClock::now(), true);
            ++record.sent;
        }
        client.flush();
        // A short first wait, so that the stop is seen soon even when nothing comes.
        for (auto done = client.receive(std::chrono::milliseconds(20)); done;
             done = client.receive(std::chrono::milliseconds(0))) {
            take(*done);
        }
        record.answered.store(answered, std::memory_order_relaxed);
    }
    const auto give_up = SteadyClock::now() + kDrainPatience;
    while (client.in_flight() > 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(give_up - SteadyClock::now());
        if (left.count() <= 0) break;
        if (auto done = client.receive(left)) take(*done);
    }
    record.answered.store(answered, std::memory_order_relaxed);
    record.no_reply = client.in_flight();
    record.resent = client.resent();
}

// Watches a restarted broker through mmi.services until it has every worker and has taken its
// share of the load, or until stopped (the run ended).
class RestartWatch {
  public:
    RestartWatch(const FailoverSpec& spec, Restart& restart, SteadyClock::time_point restarted,
                 const std::vector<std::unique_ptr<ClientRecord>>& records)
        : spec_(spec),
          restart_(restart),
          restarted_(restarted),
          records_(records),
          thread_([this](std::stop_token stop) { run(stop); }) {}
    RestartWatch(const RestartWatch&) = delete;
    RestartWatch& operator=(const RestartWatch&) = delete;

  private:
    struct Poll {
        SteadyClock::time_point at;
        std::uint64_t served;
        std::uint64_t answered;  // by every broker, as the clients counted
    };

    std::uint64_t answered_by_all() const {
        std::uint64_t n = 0;
        for (const auto& record : records_)
            n += record->answered.load(std::memory_order_relaxed);
        return n;
    }

    void run(const std::stop_token& stop) {
        Client client(restart_.endpoint);
        std::vector<Poll> polls;
        const double fair_share = 1.0 / static_cast<double>(spec_.brokers);
        while (!stop.stop_requested() && !(restart_.all_workers_ms && restart_.share_ms)) {
            const auto figures = service_figures(client, spec_.service, kPollTimeout);
            const auto at = SteadyClock::now();
            const double ms = ms_between(restarted_, at);
            if (figures) {
                if (figures->workers > 0 && !restart_.first_worker_ms)
                    restart_.first_worker_ms = ms;
                if (figures->workers >= static_cast<int>(spec_.workers) && !restart_.all_workers_ms)
                    restart_.all_workers_ms = ms;
                if (figures->served > 0 && !restart_.first_served_ms) restart_.first_served_ms = ms;
                polls.push_back({at, figures->served, answered_by_all()});
                // The latest poll at least kShareWindow before this one.
                for (auto it = polls.rbegin(); it != polls.rend(); ++it) {
                    if (at - it->at < kShareWindow) continue;
                    const double served = static_cast<double>(figures->served - it->served);
                    const double all = static_cast<double>(polls.back().answered - it->answered);
                    if (!restart_.share_ms && all > 0 && served >= 0.5 * fair_share * all)
                        restart_.share_ms = ms;
                    break;
                }
            }
            std::this_thread::sleep_until(at + kPollInterval);
        }
    }

    const FailoverSpec& spec_;
    Restart& restart_;  // written by the thread only, read after it is joined
    SteadyClock::time_point restarted_;
    const std::vector<std::unique_ptr<ClientRecord>>& records_;
    std::jthread thread_;  // last: started once everything it uses exists
};

std::string signal_name(const FailoverSpec& spec) {
    return spec.drain ? "SIGTERM" : "SIGKILL";
}

void print_settings(std::ostream& out, const FailoverSpec& spec) {
    out << "failover: " << spec.brokers << " brokers, " << spec.workers
        << " zworker(s) attached to all, " << spec.clients << " client(s) x " << spec.inflight
        << " in flight, " << spec.size << " B, "
        << std::chrono::duration<double>(spec.duration).count() << " s; " << signal_name(spec)
        << " to the next broker every " << std::chrono::duration<double>(spec.kill_every).count()
        << " s, restarted " << spec.down_for.count() << " ms after it; default heartbeats\n"
        << std::flush;
}

// Whole milliseconds, or "-" when it did not happen before the run ended.
std::string ms_text(const std::optional<double>& ms) {
    if (!ms) return "-";
    std::ostringstream text;
    text << std::fixed << std::setprecision(0) << *ms;
    return text.str();
}

void print_latency_row(std::ostream& out, const char* label, std::uint64_t count,
                       const LatencySummary& s) {
    const auto ms = [](double us) { return us / 1000.0; };
    out << std::left << std::setw(20) << label << std::right << std::setw(10) << count << std::fixed
        << std::setprecision(2) << std::setw(10) << ms(s.p50_us) << std::setw(10) << ms(s.p99_us)
        << std::setw(10) << ms(s.p999_us) << std::setw(10) << ms(s.max_us) << '\n';
}

void print_report(std::ostream& out, const FailoverSpec& spec, const FailoverResult& r) {
    out << "\nrequests " << r.sent << " (" << std::fixed << std::setprecision(0)
        << static_cast<double>(r.ok()) / r.seconds << " req/s answered 200 over "
        << std::setprecision(1) << r.seconds << " s), resent by clients " << r.resent
        << "\nanswers:";
    for (const auto& [status, count] : r.answers)
        out << ' ' << protocol::status_text(status) << ": " << count;
    out << "; no reply: " << r.no_reply << '\n';
    out << std::left << std::setw(20) << "latency, ms" << std::right << std::setw(10) << "count"
        << std::setw(10) << "p50" << std::setw(10) << "p99" << std::setw(10) << "p99.9"
        << std::setw(10) << "max" << '\n';
    print_latency_row(out, "all requests", r.ok(), r.all);
    print_latency_row(out, "caught by a stop", r.caught_count, r.caught);

    out << "\nper stop: the requests it caught and the slowest of them; then, in ms after the\n"
           "restart, when the broker listened, mmi.services showed its workers, and it served\n"
           "(-: not before the load ended)\n"
        << std::right << std::setw(6) << "broker" << std::setw(11) << "stopped at" << std::setw(10)
        << "exited in" << std::setw(8) << "caught" << std::setw(11) << "slowest ms" << std::setw(11)
        << "listening" << std::setw(12) << "1st worker" << std::setw(13) << "all workers"
        << std::setw(12) << "1st served" << std::setw(11) << "its share" << '\n';
    for (const Restart& x : r.restarts) {
        out << std::setw(6) << x.broker << std::setw(9) << std::setprecision(2) << x.stopped_at_s
            << " s" << std::setw(7) << std::setprecision(0) << x.exited_after_ms << " ms"
            << std::setw(8) << x.caught << std::setw(11) << x.caught_max_ms << std::setw(11)
            << x.listening_ms << std::setw(12) << ms_text(x.first_worker_ms) << std::setw(13)
            << ms_text(x.all_workers_ms) << std::setw(12) << ms_text(x.first_served_ms)
            << std::setw(11) << ms_text(x.share_ms) << '\n';
    }

    // The targets, as stated for the default settings.
    const bool latency_met = r.caught.p999_us <= kCaughtP999Target.count() * 1000.0;
    out << "target: p99.9 of requests caught by a stop within " << kCaughtP999Target.count()
        << " ms: "
        << (r.caught_count == 0 ? "nothing to tell"
            : latency_met       ? "met"
                                : "MISSED")
        << " (" << std::setprecision(1) << r.caught.p999_us / 1000.0 << " ms)\n";
    std::optional<double> slowest;
    std::size_t missed = 0, untold = 0;
    for (const Restart& x : r.restarts) {
        const auto in_time = x.share_in_time();
        if (!in_time) ++untold;
        if (in_time == false) ++missed;
        if (x.share_ms) slowest = std::max(slowest.value_or(0), *x.share_ms);
    }
    const char* verdict = missed > 0                    ? "MISSED"
                          : untold == r.restarts.size() ? "nothing to tell"
                                                        : "met";
    out << "target: every restarted broker took its share within " << kShareTarget.count()
        << " ms: " << verdict << " (slowest " << ms_text(slowest) << " ms";
    if (missed > 0) out << "; " << missed << " of " << r.restarts.size() << " too slow";
    if (untold > 0) out << "; " << untold << " restarted too close to the end to tell";
    out << ")\n";

    if (r.failed() > 0) {
        out << "!!! " << r.failed() << " of " << r.sent
            << " request(s) were not answered 200 (see answers and no reply above):\n"
               "!!! requests were lost or failed across the "
            << (spec.drain ? "drains" : "kills") << ".\n";
    }
    out << std::flush;
}

nlohmann::json latency_json(const LatencySummary& s, std::uint64_t count) {
    return {{"count", count},     {"p50", s.p50_us}, {"p90", s.p90_us},  {"p99", s.p99_us},
            {"p99_9", s.p999_us}, {"max", s.max_us}, {"mean", s.mean_us}};
}

nlohmann::json optional_json(const std::optional<double>& value) {
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

std::optional<bool> Restart::share_in_time() const {
    const auto target = static_cast<double>(kShareTarget.count());
    if (share_ms) return *share_ms <= target;
    if (watched_ms >= target) return false;
    return std::nullopt;
}

std::uint64_t FailoverResult::ok() const {
    const auto it = answers.find(protocol::Status::ok);
    return it == answers.end() ? 0 : it->second;
}

std::uint64_t FailoverResult::failed() const {
    return sent - ok();  // each request sent is answered once, or left without a reply
}

FailoverResult run_failover(const FailoverSpec& spec, std::ostream& out) {
    print_settings(out, spec);
    TopologySpec topology_spec;
    topology_spec.bin_dir = spec.bin_dir;
    topology_spec.workers = spec.workers;
    topology_spec.service = spec.service;
    topology_spec.brokers = spec.brokers;
    Topology topology(topology_spec);
    const int signo = spec.drain ? SIGTERM : SIGKILL;

    FailoverResult result;
    // Each watch writes into its Restart: the vector must never move them.
    // Only stops whose restart comes before the end of the load.
    std::size_t stops = 0;
    while (static_cast<long>(stops + 1) * spec.kill_every + spec.down_for < spec.duration)
        ++stops;
    result.restarts.reserve(stops);
    std::vector<std::unique_ptr<ClientRecord>> records;
    for (std::size_t i = 0; i < spec.clients; ++i)
        records.push_back(std::make_unique<ClientRecord>());
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<RestartWatch>> watches;
    const auto start = SteadyClock::now();
    const auto seconds_since_start = [start](SteadyClock::time_point at) {
        return std::chrono::duration<double>(at - start).count();
    };
    std::vector<std::int64_t> stops_ns;  // the signals, from the start, in order
    {
        std::vector<std::jthread> clients;
        // However this block is left, the clients stop before they are joined.
        struct StopOnExit {
            std::atomic<bool>& stop;
            ~StopOnExit() { stop = true; }
        } stop_on_exit{stop};
        for (std::size_t i = 0; i < spec.clients; ++i) {
            clients.emplace_back(
                [&, i] { drive_client(spec, topology.endpoint(), start, stop, *records[i]); });
        }
        for (std::size_t k = 1; k <= stops; ++k) {
            std::this_thread::sleep_until(start + k * spec.kill_every);
            Restart& restart = result.restarts.emplace_back();
            restart.broker = (k - 1) % spec.brokers;
            restart.endpoint = topology.endpoints()[restart.broker];
            const auto signalled = SteadyClock::now();
            stops_ns.push_back((signalled - start).count());
            const auto status = topology.stop_broker(restart.broker, signo, kExitPatience);
            const auto exited = SteadyClock::now();
            if (!status) {
                throw std::runtime_error("broker " + restart.endpoint + " did not exit within " +
                                         std::to_string(kExitPatience.count()) + " ms of " +
                                         signal_name(spec) + "; its log:\n" +
                                         topology.broker_output(restart.broker));
            }
            restart.stopped_at_s = seconds_since_start(signalled);
            restart.exited_after_ms = ms_between(signalled, exited);
            out << std::fixed << std::setprecision(2) << std::setw(7) << restart.stopped_at_s
                << " s  " << signal_name(spec) << " broker " << restart.broker << " ("
                << restart.endpoint << "); exited after " << std::setprecision(0)
                << restart.exited_after_ms << " ms with status " << *status << '\n'
                << std::flush;
            std::this_thread::sleep_until(signalled + spec.down_for);
            const auto restarted = SteadyClock::now();
            topology.restart_broker(restart.broker);
            restart.restarted_at_s = seconds_since_start(restarted);
            restart.listening_ms = ms_between(restarted, SteadyClock::now());
            out << std::setprecision(2) << std::setw(7) << restart.restarted_at_s << " s  broker "
                << restart.broker << " restarted: listening after " << std::setprecision(0)
                << restart.listening_ms << " ms\n"
                << std::flush;
            watches.push_back(std::make_unique<RestartWatch>(spec, restart, restarted, records));
        }
        std::this_thread::sleep_until(start + spec.duration);
        stop = true;
        watches.clear();  // stops and joins them: the load is over
        const double end_s = seconds_since_start(SteadyClock::now());
        for (Restart& restart : result.restarts)
            restart.watched_ms = (end_s - restart.restarted_at_s) * 1000.0;
    }  // the clients have taken what was still in flight, or given it up
    // Answers during the last drain count too: a window's worth, against the whole run.
    result.seconds = std::chrono::duration<double>(spec.duration).count();

    LatencyRecorder all, caught;
    for (const auto& record : records) {
        result.sent += record->sent;
        result.no_reply += record->no_reply;
        result.resent += record->resent;
        for (const auto& [status, count] : record->answers)
            result.answers[status] += count;
        for (const Sample& s : record->samples) {
            const std::chrono::nanoseconds latency(s.answered_ns - s.sent_ns);
            all.add(latency);
            // Caught: some stop came after it was sent and no later than its answer.
            const auto next_stop = std::upper_bound(stops_ns.begin(), stops_ns.end(), s.sent_ns);
            if (next_stop != stops_ns.end() && *next_stop <= s.answered_ns) {
                caught.add(latency);
                Restart& restart =
                    result.restarts[static_cast<std::size_t>(next_stop - stops_ns.begin())];
                ++restart.caught;
                restart.caught_max_ms =
                    std::max(restart.caught_max_ms,
                             std::chrono::duration<double, std::milli>(latency).count());
            }
        }
    }
    result.caught_count = caught.count();
    result.all = all.summarize();
    result.caught = caught.summarize();
    print_report(out, spec, result);
    return result;
}

void write_failover_json(const std::string& path, const FailoverSpec& spec,
                         const FailoverResult& r) {
    nlohmann::json answers = nlohmann::json::object();
    for (const auto& [status, count] : r.answers)
        answers[std::string(protocol::status_text(status))] = count;
    nlohmann::json restarts = nlohmann::json::array();
    for (const Restart& x : r.restarts) {
        const auto in_time = x.share_in_time();
        restarts.push_back(
            {{"broker", x.broker},
             {"endpoint", x.endpoint},
             {"stopped_at_s", x.stopped_at_s},
             {"exited_after_ms", x.exited_after_ms},
             {"caught", x.caught},
             {"caught_max_ms", x.caught_max_ms},
             {"restarted_at_s", x.restarted_at_s},
             {"listening_ms", x.listening_ms},
             {"first_worker_ms", optional_json(x.first_worker_ms)},
             {"all_workers_ms", optional_json(x.all_workers_ms)},
             {"first_served_ms", optional_json(x.first_served_ms)},
             {"share_ms", optional_json(x.share_ms)},
             {"watched_ms", x.watched_ms},
             {"share_in_time", in_time ? nlohmann::json(*in_time) : nlohmann::json()}});
    }
    const nlohmann::json doc{
        {"settings",
         {{"brokers", spec.brokers},
          {"workers", spec.workers},
          {"clients", spec.clients},
          {"inflight", spec.inflight},
          {"size", spec.size},
          {"duration_s", std::chrono::duration<double>(spec.duration).count()},
          {"kill_every_s", std::chrono::duration<double>(spec.kill_every).count()},
          {"down_for_ms", spec.down_for.count()},
          {"signal", signal_name(spec)}}},
        {"sent", r.sent},
        {"answers", answers},
        {"no_reply", r.no_reply},
        {"failed", r.failed()},
        {"resent", r.resent},
        {"seconds", r.seconds},
        {"requests_per_second", static_cast<double>(r.ok()) / r.seconds},
        {"latency_us",
         {{"all", latency_json(r.all, r.ok())},
          {"caught", latency_json(r.caught, r.caught_count)}}},
        {"restarts", restarts},
    };
    std::ofstream file(path);
    if (!file) throw std::runtime_error("cannot write " + path + ": check the directory exists");
    file << doc.dump(2) << '\n';
}

}  // namespace zbroker::bench
