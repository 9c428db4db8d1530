// Per configuration a fresh broker and workers, so that nothing of one policy's backlog is left
// for the next: B alone, then A's flood with B beside it, then A stopped and drained.
#include "noisy_neighbour.hpp"

#include <algorithm>
#include <atomic>
#include <iomanip>
#include <optional>
#include <stop_token>
#include <thread>

#include "bench/topology.hpp"
#include "client/async_client.hpp"
#include "client/client.hpp"
#include "shared/codec.hpp"

namespace zbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

const std::string kService = "sleep";

// Every request's deadline, A's and B's. Under fifo B waits behind all of A's window, about
// inflight x job / handler slots (1000 x 1 ms / 4 = 250 ms): so far under this that a 504
// here means requests were lost or starved, not that fifo is slow.
constexpr std::chrono::milliseconds kDeadline{30'000};

// How long A's requests still in flight when a phase ends may take to come back; past it
// they are abandoned and counted no_reply, so that a stuck broker cannot hold the run.
// Several times fifo's backlog of 250 ms.
constexpr std::chrono::milliseconds kDrainPatience{5'000};

double seconds_between(SteadyClock::time_point from, SteadyClock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

// Client B: one request at a time until `until`; the last call may end a little after it.
ClientFigures call_in_turn(Client& client, const std::string& body, SteadyClock::time_point until) {
    ClientFigures figures;
    LatencyRecorder latency;
    CallOptions options;
    options.timeout = kDeadline;
    options.retries = 0;
    while (SteadyClock::now() < until) {
        const auto sent = SteadyClock::now();
        const Response response = client.call(kService, body, options);
        if (response.ok()) {
            ++figures.ok;
            latency.add(SteadyClock::now() - sent);
        } else {
            ++figures.errors[response.status];
        }
    }
    figures.latency = latency.summarize();
    return figures;
}

// Client A, the noisy neighbour: on a thread of its own, keeps its whole window in flight,
// pipelined (queue what the window allows, one flush, then take replies) until stopped.
class Flood {
  public:
    Flood(const std::string& endpoint, std::size_t window, const std::string& body)
        : client_(endpoint, window),
          body_(body),
          thread_([this](std::stop_token stop) { run(stop); }) {}
    // An exception elsewhere ends the flood too: jthread asks it to stop, then joins.
    ~Flood() = default;
    Flood(const Flood&) = delete;
    Flood& operator=(const Flood&) = delete;

    // 200 answers so far; read while the flood runs, to count them over B's measured time.
    std::uint64_t ok() const { return ok_.load(std::memory_order_relaxed); }

    // Stops sending, waits for what is in flight (at most kDrainPatience), and returns the
    // flood's figures.
    ClientFigures stop() {
        thread_.request_stop();
        thread_.join();
        figures_.ok = ok();
        return figures_;
    }

  private:
    void run(const std::stop_token& stop) {
        while (!stop.stop_requested()) {
            while (client_.in_flight() < client_.window() &&
                   client_.queue(kService, body_, kDeadline)) {
            }
            client_.flush();
            // A short wait, so that a stop is seen soon even when no reply comes.
            for (auto done = client_.receive(std::chrono::milliseconds(50)); done;
                 done = client_.receive(std::chrono::milliseconds(0))) {
                count(*done);
            }
        }
        const auto give_up = SteadyClock::now() + kDrainPatience;
        while (client_.in_flight() > 0) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(give_up - SteadyClock::now());
            if (left.count() <= 0) break;
            if (auto done = client_.receive(left)) count(*done);
        }
        if (client_.in_flight() > 0)
            figures_.errors[protocol::Status::no_reply] += client_.in_flight();
    }

    void count(const Completion& done) {
        if (done.status == protocol::Status::ok) {
            ok_.fetch_add(1, std::memory_order_relaxed);
        } else {
            ++figures_.errors[done.status];  // read only after the thread is joined
        }
    }

    AsyncClient client_;  // made here, used only by the thread from its start on
    std::string body_;
    std::atomic<std::uint64_t> ok_{0};
    ClientFigures figures_;
    std::jthread thread_;  // last: started once everything it uses exists
};

NoisyRow measure(const NoisySpec& spec, const std::string& policy, int credit) {
    NoisyRow row;
    row.policy = policy;
    row.credit = credit > 0 ? std::to_string(credit) : "default";
    Topology topology(TopologySpec{
        spec.bin_dir, spec.workers, credit, kService, spec.threads, {"--queue-policy", policy}});
    const std::string body = pack(std::map<std::string, int>{{"ms", spec.sleep_ms}});
    Client b(topology.endpoint());

    // Warm-up: connections made, and zworker's adaptive credit settled on the job's length.
    call_in_turn(b, body, SteadyClock::now() + spec.warmup);
    row.b_alone = call_in_turn(b, body, SteadyClock::now() + spec.duration);

    Flood a(topology.endpoint(), spec.inflight, body);
    std::this_thread::sleep_for(spec.warmup);  // A's backlog built up in the broker's queue
    const std::uint64_t a_before = a.ok();
    const auto start = SteadyClock::now();
    row.b_with_a = call_in_turn(b, body, start + spec.duration);
    const auto end = SteadyClock::now();
    const std::uint64_t a_during = a.ok() - a_before;
    row.a = a.stop();

    const double seconds = seconds_between(start, end);
    row.a_requests_per_second = static_cast<double>(a_during) / seconds;
    row.total_requests_per_second = static_cast<double>(a_during + row.b_with_a.ok) / seconds;
    return row;
}

std::uint64_t error_sum(const ClientFigures& figures) {
    std::uint64_t n = 0;
    for (const auto& [status, count] : figures.errors)
        n += count;
    return n;
}

// "0", or who got which statuses: "B 504:2 A no_reply:5".
std::string errors_text(const NoisyRow& row) {
    std::string text;
    const auto add = [&text](const char* who, const ClientFigures& figures) {
        for (const auto& [status, count] : figures.errors) {
            text += text.empty() ? "" : " ";
            text += std::string(who) + " " + std::string(protocol::status_text(status)) + ":" +
                    std::to_string(count);
        }
    };
    add("B", row.b_alone);
    add("B", row.b_with_a);
    add("A", row.a);
    return text.empty() ? "0" : text;
}

void print_header(std::ostream& out, const NoisySpec& spec) {
    out << "noisy neighbour: " << spec.workers << " zworker(s) x " << spec.threads
        << " thread(s), sleep " << spec.sleep_ms << " ms; B one at a time, A " << spec.inflight
        << " in flight; " << std::chrono::duration<double>(spec.duration).count()
        << " s per phase; latency in ms\n";
    out << std::left << std::setw(10) << "policy" << std::setw(9) << "credit" << std::right
        << std::setw(12) << "B p50 alone" << std::setw(12) << "B p99 alone" << std::setw(12)
        << "B p50 w/ A" << std::setw(12) << "B p99 w/ A" << std::setw(9) << "ratio" << std::setw(10)
        << "A req/s" << std::setw(13) << "total req/s"
        << "  errors\n";
}

void print_row(std::ostream& out, const NoisyRow& row) {
    const auto ms = [](double us) { return us / 1000.0; };
    out << std::left << std::setw(10) << row.policy << std::setw(9) << row.credit << std::right
        << std::fixed << std::setprecision(2) << std::setw(12) << ms(row.b_alone.latency.p50_us)
        << std::setw(12) << ms(row.b_alone.latency.p99_us) << std::setw(12)
        << ms(row.b_with_a.latency.p50_us) << std::setw(12) << ms(row.b_with_a.latency.p99_us)
        << std::setw(8) << row.ratio() << 'x' << std::setprecision(0) << std::setw(10)
        << row.a_requests_per_second << std::setw(13) << row.total_requests_per_second << "  "
        << errors_text(row) << std::endl;  // flushed: each row takes seconds to measure
}

// Fair queueing must not cost throughput: the workers are as busy either way.
void print_throughput_ratios(std::ostream& out, const std::vector<NoisyRow>& rows) {
    std::vector<std::string> credits;
    for (const NoisyRow& row : rows) {
        if (std::find(credits.begin(), credits.end(), row.credit) == credits.end())
            credits.push_back(row.credit);
    }
    for (const std::string& credit : credits) {
        const auto find = [&](const char* policy) -> const NoisyRow* {
            for (const NoisyRow& row : rows) {
                if (row.credit == credit && row.policy == policy) return &row;
            }
            return nullptr;
        };
        const NoisyRow* fair = find("fair");
        const NoisyRow* fifo = find("fifo");
        if (!fair || !fifo || fifo->total_requests_per_second <= 0) continue;
        out << "credit " << credit << ": fair / fifo total throughput: " << std::fixed
            << std::setprecision(2)
            << fair->total_requests_per_second / fifo->total_requests_per_second << "x\n";
    }
}

}  // namespace

std::uint64_t NoisyRow::error_count() const {
    return error_sum(b_alone) + error_sum(b_with_a) + error_sum(a);
}

std::vector<NoisyRow> run_noisy(const NoisySpec& spec, std::ostream& out) {
    print_header(out, spec);
    std::vector<NoisyRow> rows;
    // Credit = threads: the broker holds every waiting request, so its queue order is all
    // that decides who goes next. The default (adaptive) credit lets each worker hold about a
    // millisecond of work more, which B may find queued ahead of it at the worker.
    for (const int credit : {spec.threads, 0}) {
        for (const std::string& policy : spec.policies) {
            rows.push_back(measure(spec, policy, credit));
            print_row(out, rows.back());
        }
    }
    print_throughput_ratios(out, rows);
    return rows;
}

}  // namespace zbroker::bench
