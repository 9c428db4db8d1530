// Fault injection on real broker/worker processes: kills, hangs, restarts, drain, floods, fuzz.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "client/async_client.hpp"
#include "client/client.hpp"
#include "fault_helpers.hpp"
#include "shared/child_process.hpp"
#include "shared/codec.hpp"
#include "shared/request_headers.hpp"
#include "shared/wire.hpp"

using namespace zbroker;
using namespace zbroker::faults;
using namespace std::chrono_literals;
using protocol::Status;
using Clock = std::chrono::steady_clock;

namespace {

std::string sleep_body(int ms, std::size_t pad = 0) {
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_map(pad > 0 ? 2 : 1);
    packer.pack("ms");
    packer.pack(ms);
    if (pad > 0) {  // sleep ignores other keys: a way to make each request weigh something
        packer.pack("pad");
        packer.pack(std::string(pad, 'x'));
    }
    return {buffer.data(), buffer.size()};
}

long long ms_since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

std::uint32_t test_seed() {
    // Fixed unless asked otherwise, so a failure can be replayed with the seed it printed.
    return static_cast<std::uint32_t>(env_count("ZBROKER_FAULT_SEED", 20240601));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Worker kills under load

TEST_CASE(
    "every pipelined request ends exactly once as 200 or an explicit 500 while workers are "
    "SIGKILLed") {
    // 100k pipelined echo requests take about 2 s under ASan+UBSan on 2 shared cores; the env
    // variable trims or raises it.
    const long total = env_count("ZBROKER_FAULT_REQUESTS", 100'000);
    constexpr long kWindow = 500;
    constexpr int kWorkers = 4;
    constexpr int kKills = 12;
    const std::uint32_t seed = test_seed();
    std::mt19937 rng(seed);

    // Two attempts, so that a request unlucky enough to meet two kills shows the 500 path.
    auto [broker, endpoint] = start_test_broker({"--max-attempts", "2"});
    const std::vector<std::string> worker_args{"--threads", "2", "--credit", "16"};
    std::vector<ChildProcess> workers;
    for (int i = 0; i < kWorkers; ++i)
        workers.push_back(start_zworker(endpoint, "echo", worker_args));
    Client admin(endpoint);
    REQUIRE(eventually([&] { return worker_count(admin, "echo") == kWorkers; }));

    // Kills at random points of the stream, not of the clock: however fast the build, at least
    // kKills happen with requests in flight. The sender waits a little past each point until
    // its kill is done.
    std::vector<long> kill_at(kKills);
    std::uniform_int_distribution<long> where(total / 20, total - total / 20);
    for (long& at : kill_at)
        at = where(rng);
    std::sort(kill_at.begin(), kill_at.end());
    std::atomic<long> sent{0};
    std::atomic<long> allowed{kill_at.front() + 2 * kWindow};
    std::atomic<int> kills{0};
    std::atomic<bool> finished{false};
    std::thread killer([&, seed] {
        std::mt19937 pick(seed + 1);
        for (int k = 0; k < kKills; ++k) {
            while (sent.load() < kill_at[k] && !finished.load())
                std::this_thread::sleep_for(1ms);
            if (finished.load()) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(pick() % 5));
            ChildProcess& victim = workers[pick() % kWorkers];
            victim.signal(SIGKILL);
            victim.wait(testing::kPatience);
            victim = start_zworker(endpoint, "echo", worker_args);
            ++kills;
            allowed = k + 1 < kKills ? kill_at[k + 1] + 2 * kWindow : total;
        }
        // The workers this thread started die with it (PR_SET_PDEATHSIG): stay until the end.
        while (!finished.load())
            std::this_thread::sleep_for(10ms);
    });

    zmq::context_t context(1);
    RawZbcClient client(context, endpoint);
    std::vector<std::uint8_t> answers(static_cast<std::size_t>(total), 0);
    long next = 0, completed = 0, ok = 0, exhausted = 0, other = 0, wrong_body = 0, twice = 0,
         unknown_id = 0;
    std::map<int, long> other_statuses;
    const auto start = Clock::now();
    auto last_reply = Clock::now();
    auto account = [&](const RawZbcClient::Reply& reply) {
        const long id = std::strtol(reply.id.c_str(), nullptr, 10);
        if (id < 0 || id >= next || reply.id != std::to_string(id)) return void(++unknown_id);
        if (answers[static_cast<std::size_t>(id)]++ > 0) return void(++twice);
        ++completed;
        if (reply.status == Status::ok) {
            ++ok;
            if (reply.body != "body-" + reply.id) ++wrong_body;
        } else if (reply.status == Status::retries_exhausted) {
            ++exhausted;
        } else {
            ++other;
            ++other_statuses[static_cast<int>(reply.status)];
        }
    };
    while (completed < total) {
        while (next < total && next - completed < kWindow && next < allowed.load()) {
            const std::string id = std::to_string(next);
            client.send("echo", id, "body-" + id);
            sent = ++next;
        }
        if (auto reply = client.receive(20ms)) {
            account(*reply);
            last_reply = Clock::now();
        } else if (Clock::now() - last_reply > testing::kPatience) {
            break;  // what is still in flight now is unanswered: the test fails below
        }
    }
    const auto elapsed_ms = ms_since(start);
    // A second answer would come late, if at all: listen a while longer for one. An absence
    // cannot be awaited as an event; this window only adds chances to catch a duplicate, and
    // a slow machine makes the test miss one, never fail wrongly.
    while (auto reply = client.receive(500ms))
        account(*reply);
    finished = true;
    killer.join();

    const long unanswered = total - completed;
    if (unanswered > 0) {  // what the broker says it holds, and what it logged, for the report
        const auto f = figures(admin, "echo");
        const std::string log = broker.output();
        WARN("no reply for " << testing::kPatience.count() << " s (a lost request, or a machine "
                             << "too slow) with " << (next - completed) << " in flight; broker: "
                             << (f ? std::to_string(f->workers) + " workers, " +
                                         std::to_string(f->queued) + " queued, " +
                                         std::to_string(f->in_flight) + " in flight"
                                   : std::string("no answer to mmi.services"))
                             << "\nbroker log tail:\n"
                             << log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
        for (auto& w : workers) {
            const std::string out = w.output();
            WARN("worker " << w.pid() << (w.running() ? " running" : " exited") << ", log tail:\n"
                           << out.substr(out.size() > 1500 ? out.size() - 1500 : 0));
        }
    }
    // Kills that hit a worker holding requests re-queue them: the path under test was taken.
    const auto stats = broker_stats(admin);
    const long requeued = stats && stats->totals.contains("requeued")
                              ? static_cast<long>(stats->totals.at("requeued"))
                              : -1;
    std::ostringstream tally;
    tally << "worker kills: " << total << " requests in " << elapsed_ms << " ms, window " << kWindow
          << ", seed " << seed << ": " << ok << " x 200, " << exhausted << " x 500, " << other
          << " other, " << unanswered << " unanswered, " << twice << " answered twice, "
          << wrong_body << " wrong bodies, " << kills.load() << " workers SIGKILLed, " << requeued
          << " requests re-queued, "
          << (stats ? std::to_string(stats->total("workers_expired")) : std::string("?"))
          << " workers expired for missed heartbeats (killed ones not found gone before, and any "
             "live one taken for dead)";
    WARN(tally.str());
    for (const auto& [status, count] : other_statuses)
        WARN("unexpected status " << status << " x " << count);
    CHECK(broker.running());
    REQUIRE(kills.load() >= 10);
    REQUIRE(unanswered == 0);
    REQUIRE(twice == 0);
    REQUIRE(unknown_id == 0);
    REQUIRE(other == 0);
    REQUIRE(wrong_body == 0);
    REQUIRE(ok + exhausted == total);
    if (requeued >= 0) {
        REQUIRE(requeued > 0);
    } else {
        WARN("mmi.stats not available: cannot show that kills re-queued requests");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Worker hangs

TEST_CASE(
    "a worker that stops heartbeating is dropped within liveness x interval and its request "
    "is answered by another") {
    auto [broker, endpoint] = start_test_broker();
    ChildProcess hung = start_zworker(endpoint, "sleep");
    Client admin(endpoint);
    REQUIRE(eventually([&] { return worker_count(admin, "sleep") == 1; }));

    // The only worker takes the request, and is stopped as soon as the broker says it holds it:
    // long before a 2 s job could end, however slow the machine. The rescuer starts only then,
    // so that nothing depends on which of two workers the broker would have chosen.
    AsyncClient client(endpoint, 1);
    REQUIRE(client.send("sleep", sleep_body(2000)));
    REQUIRE(eventually([&] {
        const auto f = figures(admin, "sleep");
        return f && f->in_flight == 1;
    }));
    {
        // A live worker expired before the stop would make the measurement below meaningless.
        INFO("a live worker missed its heartbeats before the test stopped it: "
             << kHeartbeatMs << " ms heartbeats are too short for this machine; broker log:\n"
             << broker.output());
        REQUIRE(broker.output().find("missed its heartbeats") == std::string::npos);
    }

    // Stopped, not dead: its socket stays open, so only the missing heartbeats can tell.
    hung.signal(SIGSTOP);
    const auto stopped_at = Clock::now();
    ChildProcess rescuer = start_zworker(endpoint, "sleep");
    const auto dropped =
        broker.wait_for("missed its heartbeats; 1 request(s) re-queued", testing::kPatience);
    const auto detected_ms = ms_since(stopped_at);
    const auto done = client.receive(testing::kPatience);
    const auto answered_ms = ms_since(stopped_at);
    hung.signal(SIGCONT);
    hung.signal(SIGKILL);

    // Expiry is liveness x interval after the last heartbeat, which came at most an interval
    // before the stop; on a loaded machine the broker's timer and our reading of its log add
    // to that, so the nominal figure is reported, not required. What is required tells the
    // configured heartbeat from the default one: a broker that ignored --heartbeat-ms would
    // wait liveness x 2500 ms, five times longer, and one without expiry would wait forever.
    constexpr long long kNominalMs = kLiveness * kHeartbeatMs;
    constexpr long long kBoundMs = 5 * kNominalMs;
    static_assert(kBoundMs < kLiveness * protocol::kHeartbeatInterval.count());
    WARN("worker hang: detected " << detected_ms << " ms after SIGSTOP (liveness " << kLiveness
                                  << " x " << kHeartbeatMs << " ms = " << kNominalMs
                                  << " ms nominal, " << kBoundMs
                                  << " ms required); re-queued request answered after "
                                  << answered_ms << " ms");
    {
        INFO("broker log:\n" << broker.output());
        REQUIRE(dropped);  // else not within kPatience: never, or a machine far too slow
    }
    REQUIRE(detected_ms <= kBoundMs);
    REQUIRE(done);
    REQUIRE(done->status == Status::ok);
    REQUIRE(unpack<std::map<std::string, int>>(view(done->body.at(0))).at("slept_ms") == 2000);
}

// ---------------------------------------------------------------------------------------------
// 3. Broker restart under load

TEST_CASE(
    "clients with retries get the right answer or no reply, never a wrong one, while the "
    "broker is SIGKILLed and restarted") {
    auto [broker, endpoint] = start_test_broker();
    constexpr int kWorkers = 3;
    constexpr int kClients = 4;
    constexpr int kRestarts = 3;
    std::vector<ChildProcess> workers;
    for (int i = 0; i < kWorkers; ++i)
        workers.push_back(start_zworker(endpoint, "echo", {"--reconnect-ms", "100"}));
    {
        Client admin(endpoint);
        REQUIRE(eventually([&] { return worker_count(admin, "echo") == kWorkers; }));
    }

    struct Tally {
        long ok = 0, no_reply = 0, unavailable = 0, too_late = 0, wrong = 0, ok_after_restarts = 0;
        std::map<int, long> statuses;
    };
    std::vector<Tally> tallies(kClients);
    std::atomic<bool> stop{false};
    std::atomic<int> restarts{0};
    // Right answers to calls begun after r restarts, i.e. served by the (r+1)th broker, and
    // how many clients had one after the last restart: what the main thread waits on.
    std::array<std::atomic<long>, kRestarts + 1> ok_by_broker{};
    std::atomic<int> clients_back{0};
    std::vector<std::thread> clients;
    const OnScopeExit join_clients([&] {
        stop = true;
        for (auto& t : clients)
            t.join();
    });
    for (int c = 0; c < kClients; ++c) {
        clients.emplace_back([&, c] {
            Client client(endpoint);
            Tally& tally = tallies[c];
            for (long n = 0; !stop.load(); ++n) {
                const int restarts_before = restarts.load();
                const std::string body = "client-" + std::to_string(c) + "-" + std::to_string(n);
                const Response r =
                    client.call("echo", body, {.timeout = 500ms, .retries = 5, .backoff = 50ms});
                ++tally.statuses[static_cast<int>(r.status)];
                if (r.status == Status::ok) {
                    if (r.body_view() != body) {
                        ++tally.wrong;
                    } else {
                        ++tally.ok;
                        ++ok_by_broker[static_cast<std::size_t>(restarts_before)];
                        if (restarts_before == kRestarts && tally.ok_after_restarts++ == 0)
                            ++clients_back;
                    }
                } else if (r.status == Status::no_reply) {
                    ++tally.no_reply;
                } else if (r.status == Status::unavailable) {
                    // An explicit "no worker yet": asked while the workers were re-registering.
                    ++tally.unavailable;
                } else if (r.status == Status::deadline_exceeded) {
                    // An explicit "too late": the call's 500 ms went by, e.g. queued while the
                    // workers were re-registering, or on a slow machine.
                    ++tally.too_late;
                } else {
                    ++tally.wrong;
                }
            }
        });
    }

    std::vector<long long> reregistered_ms;
    for (int r = 0; r < kRestarts; ++r) {
        // Killed under load: only once this broker has answered every client at least once
        // on average, however long that takes.
        {
            INFO("broker " << r + 1 << " answered no calls within " << testing::kPatience.count()
                           << " s (the machine may be too slow)");
            REQUIRE(eventually(
                [&] { return ok_by_broker[static_cast<std::size_t>(r)].load() >= kClients; }));
        }
        broker.signal(SIGKILL);
        REQUIRE(broker.wait(testing::kPatience));
        std::this_thread::sleep_for(200ms);  // pacing: the clients meet a dead endpoint first
        broker = restart_broker(endpoint);
        const auto restarted_at = Clock::now();
        {
            INFO("the restarted broker did not listen within " << 2 * testing::kPatience.count()
                                                               << " s; its output:\n"
                                                               << broker.output());
            REQUIRE(broker.wait_for("listening on ", 2 * testing::kPatience));
        }
        ++restarts;
        Client admin(endpoint);
        // Nobody tells the workers: they notice the silence or the new broker's DISCONNECT.
        INFO("the workers did not all re-register within " << testing::kPatience.count()
                                                           << " s (the machine may be too slow)");
        REQUIRE(eventually([&] { return worker_count(admin, "echo") == kWorkers; }));
        reregistered_ms.push_back(ms_since(restarted_at));
    }
    // Every client recovers: each gets a right answer from the last broker.
    const bool all_back = eventually([&] { return clients_back.load() == kClients; });
    stop = true;
    for (auto& t : clients)
        t.join();
    clients.clear();

    Tally total;
    for (const Tally& t : tallies) {
        total.ok += t.ok;
        total.no_reply += t.no_reply;
        total.unavailable += t.unavailable;
        total.too_late += t.too_late;
        total.wrong += t.wrong;
        total.ok_after_restarts += t.ok_after_restarts;
        for (const auto& [status, count] : t.statuses)
            total.statuses[status] += count;
    }
    std::ostringstream times;
    for (const auto ms : reregistered_ms)
        times << ms << " ";
    WARN("broker restarts: " << kRestarts << " SIGKILL+restart, " << kClients << " clients: "
                             << total.ok << " x 200 (right body), " << total.no_reply
                             << " no reply, " << total.unavailable << " x 503 (no worker yet), "
                             << total.too_late << " x 504 (deadline), " << total.wrong << " wrong; "
                             << total.ok_after_restarts
                             << " x 200 after the last restart; workers back after (ms) "
                             << times.str());
    for (const auto& [status, count] : total.statuses)
        INFO("status " << status << " x " << count);
    REQUIRE(total.wrong == 0);
    INFO("not every client got a right answer from the last broker within "
         << testing::kPatience.count() << " s (the machine may be too slow)");
    REQUIRE(all_back);
}

// ---------------------------------------------------------------------------------------------
// 4. SIGTERM drain under load

TEST_CASE(
    "SIGTERM under load lets every held request finish, DISCONNECTs every worker and exits "
    "0") {
    // The drain timeout is not under test: far beyond what the held work takes on any machine,
    // so that every held request is seen to finish rather than be cut off at 503.
    const std::string drain_timeout_ms = std::to_string(4 * testing::kPatience.count() * 1000);
    auto [broker, endpoint] = start_test_broker({"--drain-timeout-ms", drain_timeout_ms});
    constexpr int kWorkers = 4;
    // 10 rounds of 400 ms over 4 workers x 2 threads: about 4 s of work, so that requests are
    // still queued when the test has seen them all arrive, even on a slow machine.
    constexpr int kRequests = 80;
    constexpr int kJobMs = 400;
    std::vector<ChildProcess> workers;
    for (int i = 0; i < kWorkers; ++i)
        workers.push_back(start_zworker(endpoint, "sleep", {"--threads", "2", "--credit", "2"}));
    Client admin(endpoint);
    REQUIRE(eventually([&] { return worker_count(admin, "sleep") == kWorkers; }));

    AsyncClient client(endpoint, kRequests);
    for (int i = 0; i < kRequests; ++i)
        REQUIRE(client.send("sleep", sleep_body(kJobMs)));
    // Every request must be the broker's before SIGTERM, or it would rightly get 503. Replies
    // counted before asking plus what the broker holds covers each request at most once.
    std::map<Status, int> outcomes;
    int received = 0;
    std::optional<ServiceFigures> held;
    REQUIRE(eventually([&] {
        while (auto done = client.receive(0ms)) {
            ++outcomes[done->status];
            ++received;
        }
        held = figures(admin, "sleep");
        return held && received + held->queued + held->in_flight == kRequests;
    }));
    {
        INFO("the work was not all held at once: " << received << " done, " << held->queued
                                                   << " queued, " << held->in_flight
                                                   << " at workers (the machine may be too slow)");
        REQUIRE(held->in_flight == kWorkers * 2);
        REQUIRE(held->queued > 0);
    }

    const auto signalled = Clock::now();
    broker.signal(SIGTERM);
    REQUIRE(broker.wait_for("draining", testing::kPatience));
    {
        // New work is refused while the old finishes.
        AsyncClient late(endpoint, 1);
        REQUIRE(late.send("sleep", sleep_body(1)));
        const auto refused = late.receive(testing::kPatience);
        REQUIRE(refused);
        REQUIRE(refused->status == Status::unavailable);
    }
    while (client.in_flight() > 0) {
        const auto done = client.receive(testing::kPatience);
        INFO(client.in_flight() << " request(s) unanswered for " << testing::kPatience.count()
                                << " s after SIGTERM (lost, or a machine far too slow)");
        REQUIRE(done);
        ++outcomes[done->status];
    }
    const auto exit_code = broker.wait(testing::kPatience);
    const auto drained_ms = ms_since(signalled);
    const std::string log = broker.output();
    const auto told = summary_number(log, "worker(s) told DISCONNECT");
    int workers_heard = 0;
    REQUIRE(eventually([&] {
        workers_heard = 0;
        for (auto& w : workers)
            workers_heard += w.output().find("broker sent DISCONNECT") != std::string::npos;
        return workers_heard == kWorkers;
    }));
    WARN("drain: " << kRequests << " requests, " << (held->queued + held->in_flight)
                   << " held at SIGTERM (" << held->in_flight << " at workers); "
                   << outcomes[Status::ok] << " x 200; exit " << exit_code.value_or(-1) << " after "
                   << drained_ms << " ms; broker told " << told.value_or(0)
                   << " worker(s) DISCONNECT, " << workers_heard << " logged it");
    REQUIRE(outcomes[Status::ok] == kRequests);
    REQUIRE(exit_code == 0);
    REQUIRE(told == static_cast<std::uint64_t>(kWorkers));
}

// ---------------------------------------------------------------------------------------------
// 5. Slow and vanished clients

TEST_CASE(
    "a client that never reads, and clients that vanish, do not slow another client's calls") {
    auto [broker, endpoint] = start_test_broker({"--hwm", "100", "--drain-timeout-ms", "2000"});
    std::vector<ChildProcess> workers;
    workers.push_back(start_zworker(endpoint, "echo", {"--threads", "2"}));
    workers.push_back(start_zworker(endpoint, "echo", {"--threads", "2"}));
    workers.push_back(start_zworker(endpoint, "hello"));
    Client admin(endpoint);
    REQUIRE(eventually(
        [&] { return worker_count(admin, "echo") == 2 && worker_count(admin, "hello") == 1; }));

    zmq::context_t context(1);
    std::atomic<bool> stop{false};
    std::atomic<long> slow_sent{0}, vanished_sent{0}, vanished_sockets{0};
    std::thread hostile;
    const OnScopeExit join_hostile([&] {
        stop = true;
        if (hostile.joinable()) hostile.join();
    });
    hostile = std::thread([&] {
        // 16 KiB replies: the slow reader's TCP buffers and its 1-message queue fill quickly.
        const std::string body(16 * 1024, 's');
        auto request = [&body](long n) {
            Frames frames;
            frames.push_back(empty_frame());
            frames.push_back(frame(protocol::kZbcClient));
            frames.push_back(frame("echo"));
            frames.push_back(frame(std::to_string(n)));
            frames.push_back(frame("\x80"));
            frames.push_back(frame(body));
            return frames;
        };
        zmq::socket_t slow(context, zmq::socket_type::dealer);
        slow.set(zmq::sockopt::rcvhwm, 1);
        slow.set(zmq::sockopt::linger, 0);
        slow.connect(endpoint);
        for (long round = 0; !stop.load(); ++round) {
            for (int i = 0; i < 20; ++i) {
                Frames frames = request(round * 20 + i);
                if (send_frames(slow, frames, zmq::send_flags::dontwait) != SendResult::sent) break;
                ++slow_sent;
            }
            // A client that asks and leaves: its answers have nobody to go to.
            zmq::socket_t gone(context, zmq::socket_type::dealer);
            gone.set(zmq::sockopt::linger, 1000);  // the requests still reach the broker
            gone.connect(endpoint);
            for (int i = 0; i < 10; ++i) {
                Frames frames = request(i);
                if (send_frames(gone, frames, zmq::send_flags::dontwait) != SendResult::sent) break;
                ++vanished_sent;
            }
            gone.close();
            ++vanished_sockets;
            std::this_thread::sleep_for(20ms);
        }
    });

    // The calls below must meet a broker that is already dropping replies for the slow
    // reader or the vanished clients, so wait until it says it is.
    auto drops = [&] {
        const auto stats = broker_stats(admin);
        if (!stats) return std::uint64_t{0};
        std::uint64_t total = 0;
        for (const char* kind : {"client_backpressure", "client_unreachable"})
            total += stats->drops.contains(kind) ? stats->drops.at(kind) : 0;
        return total;
    };
    if (broker_stats(admin)) {
        INFO("the broker dropped nothing for " << testing::kPatience.count()
                                               << " s (the machine may be too slow)");
        REQUIRE(eventually([&] { return drops() > 0; }));
    } else {
        WARN("mmi.stats not available: the calls may start before the broker drops anything");
    }

    // The well-behaved client: its own service, so only a stalled broker could slow it. A
    // broker blocked on the slow reader would never answer again; one slowed by the hostile
    // clients would answer late. The timeout tells the first from a healthy broker on any
    // machine; the worst call is reported to show the second, which a loaded sanitizer build
    // cannot be held to.
    constexpr auto kCallTimeout = 5000ms;
    constexpr long kCalls = 50;
    long calls = 0, good = 0;
    long long worst_ms = 0;
    const auto start = Clock::now();
    // At least 4 s and kCalls calls of hostility, stopping at the first wrong answer.
    while (good == calls && (calls < kCalls || Clock::now() - start < 4s)) {
        const std::string name = "n" + std::to_string(calls);
        const auto asked = Clock::now();
        const Response r = admin.call("hello", pack(name), {.timeout = kCallTimeout, .retries = 0});
        worst_ms = std::max(worst_ms, ms_since(asked));
        ++calls;
        if (r.ok() && unpack<std::string>(r.body_view()) == "Hello, " + name + "!") ++good;
        std::this_thread::sleep_for(10ms);
    }
    const long long calls_ms = ms_since(start);
    const bool answered_mmi = mmi_service_ok(admin, "echo", kCallTimeout);
    stop = true;
    hostile.join();

    CHECK(broker.running());
    broker.signal(SIGTERM);
    const auto exit_code = broker.wait(testing::kPatience);
    const std::string log = broker.output();
    // The exit summary's drop lines: "  dropped client_backpressure: 12".
    auto after = [&log](const std::string& label) -> std::uint64_t {
        const auto at = log.rfind(label);
        return at == std::string::npos ? 0 : std::stoull(log.substr(at + label.size()));
    };
    const auto dropped_slow = after("dropped client_backpressure: ");
    const auto dropped_gone = after("dropped client_unreachable: ");
    WARN("slow/vanished clients: slow reader sent "
         << slow_sent.load() << ", " << vanished_sockets.load() << " vanished clients sent "
         << vanished_sent.load() << "; good client " << good << "/" << calls
         << " calls answered right in " << calls_ms << " ms, worst " << worst_ms << " ms (timeout "
         << kCallTimeout.count() << " ms); broker dropped " << dropped_slow << " for backpressure, "
         << dropped_gone << " to vanished clients");
    REQUIRE(good == calls);
    REQUIRE(calls >= kCalls);
    REQUIRE(answered_mmi);
    REQUIRE(exit_code == 0);
    // The scenario really happened: the broker met a full queue or a vanished peer.
    REQUIRE(dropped_slow + dropped_gone > 0);
}

// ---------------------------------------------------------------------------------------------
// 6. Flood

TEST_CASE(
    "a flood ten times what workers can serve gets 429 past the queue limit while the broker "
    "stays responsive and its memory bounded") {
    constexpr int kQueueLimit = 100;
    const SmallAsanQuarantine quarantine;  // else ASan alone adds 256 MiB of freed memory
    auto [broker, endpoint] = start_test_broker({"--queue-limit", std::to_string(kQueueLimit)});
    std::vector<ChildProcess> workers;
    workers.push_back(start_zworker(endpoint, "sleep"));
    workers.push_back(start_zworker(endpoint, "sleep"));
    Client admin(endpoint);
    REQUIRE(eventually([&] { return worker_count(admin, "sleep") == 2; }));
    const long rss_before = rss_kib(broker.pid());

    // Probes ask the broker itself while the flood goes on. A broker that reads the whole flood
    // before anything else would answer them only when the flood ends, and the flood below does
    // not end before probes are answered: such a broker fails by patience. Each probe's
    // timeout only tells a wedged broker from a slow machine; the worst is reported.
    constexpr auto kProbeTimeout = 5000ms;
    constexpr long kProbes = 10;
    std::atomic<bool> flooding{true};
    std::atomic<long> probes{0};  // answered while the flood was on
    long probe_failures = 0, max_queued = 0;
    long long worst_probe_ms = 0;
    std::thread prober;
    const OnScopeExit join_prober([&] {
        flooding = false;
        if (prober.joinable()) prober.join();
    });
    prober = std::thread([&] {
        Client probe(endpoint);
        while (flooding.load()) {
            const auto asked = Clock::now();
            const bool answered = mmi_service_ok(probe, "sleep", kProbeTimeout);
            worst_probe_ms = std::max(worst_probe_ms, ms_since(asked));
            if (!answered) ++probe_failures;
            if (const auto f = figures(probe, "sleep")) {
                max_queued = std::max<long>(max_queued, f->queued);
            } else {
                ++probe_failures;
            }
            if (answered && flooding.load()) ++probes;
            std::this_thread::sleep_for(50ms);  // pacing: the probes are not the load
        }
    });

    // 20 ms jobs on two single-threaded workers: about 100 a second can be served. The flood
    // lasts at least 3 s, and until it is ten times all that can still end in 200 (what did,
    // and what is in flight) and the probes have been answered: counts, not the clock, say
    // when it has been a flood, however fast or slow the machine.
    const std::string body = sleep_body(20, 1024);
    AsyncClient flood(endpoint, 2000);
    std::map<Status, long> outcomes;
    long sent = 0;
    const auto start = Clock::now();
    auto flooded = [&] {
        const long could_be_ok = outcomes[Status::ok] + static_cast<long>(flood.in_flight());
        return Clock::now() - start >= 3s && sent >= 10 * could_be_ok && probes.load() >= kProbes;
    };
    while (!flooded() && Clock::now() - start < 3s + 2 * testing::kPatience) {
        while (flood.send("sleep", body))
            ++sent;
        while (auto done = flood.receive(sent == 0 ? 100ms : 1ms))
            ++outcomes[done->status];
    }
    const long long flood_ms = ms_since(start);
    const long probes_during_flood = probes.load();
    flooding = false;
    prober.join();
    while (flood.in_flight() > 0) {
        const auto done = flood.receive(testing::kPatience);
        if (!done) break;
        ++outcomes[done->status];
    }
    const long rss_after = rss_kib(broker.pid());

    const long ok = outcomes[Status::ok];
    const long full = outcomes[Status::queue_full];
    WARN("flood: " << sent << " requests in " << flood_ms << " ms: " << ok << " x 200, " << full
                   << " x 429, " << (sent - ok - full) << " other, "
                   << static_cast<long>(flood.in_flight()) << " unanswered; queue peaked at "
                   << max_queued << " (limit " << kQueueLimit << "); mmi probes "
                   << probes_during_flood << " answered during the flood, failed " << probe_failures
                   << ", worst " << worst_probe_ms << " ms (timeout " << kProbeTimeout.count()
                   << " ms); broker RSS " << rss_before / 1024 << " -> " << rss_after / 1024
                   << " MiB");
    INFO("the flood ran for " << flood_ms << " ms: what it did not reach in "
                              << 2 * testing::kPatience.count()
                              << " s beyond its 3 s, the machine may be too slow for");
    REQUIRE(flood.in_flight() == 0);
    REQUIRE(ok + full == sent);
    REQUIRE(sent >= 10 * ok);  // ten times what was served, at least
    REQUIRE(ok >= kQueueLimit);
    REQUIRE(full > 0);
    REQUIRE(max_queued <= kQueueLimit);
    REQUIRE(probes_during_flood >= kProbes);
    REQUIRE(probe_failures == 0);
    REQUIRE(broker.running());
    REQUIRE(rss_after - rss_before < 200 * 1024);
}

// ---------------------------------------------------------------------------------------------
// 7. Hostile input

namespace {

// Builds malformed and random messages, as a DEALER would send them (the ROUTER adds the
// routing id). Each says whether the broker must count it as malformed whatever its state.
class HostileMessages {
  public:
    explicit HostileMessages(std::uint32_t seed) : rng_(seed) {
        pool_.resize(1 << 16);
        for (char& c : pool_)
            c = static_cast<char>(rng_());
    }

    // The client side: envelopes of MDPC01 and ZBC01 broken every way, and random frames.
    bool client(Frames& out) {
        out.clear();
        switch (rng_() % 16) {
            case 0: {  // random frames
                const int count = 1 + static_cast<int>(rng_() % 8);
                for (int i = 0; i < count; ++i)
                    out.push_back(frame(random_bytes(rng_() % 40)));
                if (out[0].size() != 0) return true;  // no delimiter
                if (out.size() < 2) return true;      // too short
                const std::string_view header = view(out[1]);
                return header != protocol::kMdpClient && header != protocol::kZbcClient &&
                       header != protocol::kMdpWorker;
            }
            case 1:
                out.push_back(empty_frame());
                return true;  // too short
            case 2: {
                static constexpr std::string_view kHeaders[] = {
                    "MDPC0", "MDPC02", "ZBC1", "mdpc01", "", "ZBC01 ", "MDPW1", "ZBC010"};
                out.push_back(empty_frame());
                out.push_back(frame(kHeaders[rng_() % std::size(kHeaders)]));
                out.push_back(frame("echo"));
                return true;  // unknown protocol
            }
            case 3:
                out.push_back(frame(random_bytes(1 + rng_() % 8)));
                out.push_back(frame(protocol::kZbcClient));
                out.push_back(frame("echo"));
                return true;  // no delimiter
            case 4:
                zbc(out, "echo");
                out.resize(2 + rng_() % 3);  // "" ZBC01 [service [id]]: too short
                return true;
            case 5:
                zbc(out, "echo");
                out[3] = frame(random_bytes(256 + rng_() % 200));
                return true;  // request id too long
            case 6: {
                static const std::string kBadHeaders[] = {
                    "\x81",      // map cut short
                    "\x91\x01",  // array, not map
                    "\xc1",      // a byte msgpack never uses
                    "\x81\xab"
                    "deadline_ms\xa1x",  // deadline as a string
                    "\x81\xab"
                    "deadline_ms\xff",  // negative deadline
                    std::string("\x81\xa1k\xda\x13\x88") + std::string(5000, 'x'),  // > 4 KiB
                };
                zbc(out, "echo");
                out[4] = frame(kBadHeaders[rng_() % std::size(kBadHeaders)]);
                return true;
            }
            case 7:
                zbc(out, "");
                return true;  // empty service
            case 8:
                out.push_back(empty_frame());
                out.push_back(frame(protocol::kMdpClient));
                if (rng_() % 2 == 0) out.push_back(empty_frame());  // empty service, else short
                return true;
            case 9:  // MMI the broker does not have, with many frames
                zbc(out, "mmi." + random_name());
                for (int i = 0; i < 20; ++i)
                    out.push_back(frame(random_bytes(rng_() % 8)));
                return false;
            case 10:  // mmi.service without a name, or with a random one, over MDP
                out.push_back(empty_frame());
                out.push_back(frame(protocol::kMdpClient));
                out.push_back(frame(protocol::kMmiService));
                if (rng_() % 2 == 0) out.push_back(frame(random_bytes(rng_() % 16)));
                return false;
            case 11:  // a real request nobody serves, gone at its 1..20 ms deadline
                zbc(out, "nobody." + std::to_string(rng_() % 32));
                out[4] = frame(std::string("\x81\xab"
                                           "deadline_ms") +
                               static_cast<char>(1 + rng_() % 20));
                return false;
            case 12: {  // random bytes in every frame of a ZBC01 envelope
                zbc(out, random_bytes(1 + rng_() % 12));
                out[3] = frame(random_bytes(rng_() % 12));
                out[4] = frame(random_bytes(rng_() % 12));
                out[5] = frame(random_bytes(rng_() % 64));
                return headers_malformed(out[4]);
            }
            default: {  // random frames after a valid-looking start
                out.push_back(empty_frame());
                out.push_back(frame(rng_() % 2 ? protocol::kZbcClient : protocol::kMdpClient));
                const int count = static_cast<int>(rng_() % 6);
                for (int i = 0; i < count; ++i)
                    out.push_back(frame(random_bytes(rng_() % 24)));
                if (view(out[1]) == protocol::kZbcClient) {
                    if (out.size() < 5) return true;  // no request id or no headers
                    return headers_malformed(out[4]) || out[2].size() == 0;
                }
                if (out.size() < 3 || out[2].size() == 0) return true;  // short or no service
                // A plain MDP request to a random service without deadline would stay queued:
                // make it an MMI question instead.
                out[2] = frame("mmi." + std::string(view(out[2])));
                return false;
            }
        }
    }

    // The worker side: MDPW01 commands truncated, unknown, out of order, with bogus tokens.
    bool worker(Frames& out) {
        out.clear();
        out.push_back(empty_frame());
        out.push_back(frame(protocol::kMdpWorker));
        using protocol::WorkerCommand;
        switch (rng_() % 14) {
            case 0:
                return true;  // no command
            case 1:
                out.push_back(frame(random_bytes(rng_() % 2 == 0 ? 0 : 2 + rng_() % 4)));
                return true;  // command not one byte
            case 2: {
                const char byte = static_cast<char>(rng_() % 2 == 0 ? 0 : 6 + rng_() % 250);
                out.push_back(frame(std::string_view(&byte, 1)));
                return true;  // unknown command: not_ready, or bad_command when registered
            }
            case 3:
                out.push_back(frame(WorkerCommand::request));  // a broker's command
                out.push_back(frame(random_bytes(8)));
                out.push_back(empty_frame());
                return true;
            case 4:
                out.push_back(frame(WorkerCommand::ready));
                if (rng_() % 2 == 0) out.push_back(empty_frame());
                return true;  // READY without a service (or a duplicate READY)
            case 5:
                out.push_back(frame(WorkerCommand::ready));
                out.push_back(frame("mmi." + random_name()));
                return true;  // mmi registration (or a duplicate READY)
            case 6: {
                static constexpr std::string_view kBadCredit[] = {"abc", "0",      "-1", "1x",
                                                                  "",    "999999", " 1", "1e3"};
                out.push_back(frame(WorkerCommand::ready));
                out.push_back(frame("fz." + std::to_string(rng_() % 8)));
                out.push_back(frame(kBadCredit[rng_() % std::size(kBadCredit)]));
                return true;  // bad credit (or a duplicate READY)
            }
            case 7:  // a valid READY: registers, or breaks the rules when already registered
                out.push_back(frame(WorkerCommand::ready));
                out.push_back(frame("fz." + std::to_string(rng_() % 8)));
                if (rng_() % 2 == 0) out.push_back(frame(std::to_string(1 + rng_() % 5)));
                return false;
            case 8:
                out.push_back(frame(WorkerCommand::heartbeat));
                if (rng_() % 4 == 0) out.push_back(frame(random_bytes(rng_() % 16)));
                return false;
            case 9:
            case 10:  // REPLY with a bogus token: dropped, or not_ready when not registered
                out.push_back(frame(WorkerCommand::reply));
                out.push_back(frame(random_bytes(rng_() % 2 == 0 ? 8 : rng_() % 20)));
                out.push_back(empty_frame());
                out.push_back(frame(random_bytes(rng_() % 32)));
                return false;
            case 11:  // REPLY cut short, or with a non-empty delimiter
                out.push_back(frame(WorkerCommand::reply));
                if (rng_() % 2 == 0) {
                    out.push_back(frame(random_bytes(8)));
                    if (rng_() % 2 == 0) out.push_back(frame(random_bytes(1 + rng_() % 4)));
                }
                return true;
            case 12:
                out.push_back(frame(WorkerCommand::disconnect));
                return false;
            default: {  // random frames after the header
                const int count = static_cast<int>(rng_() % 6);
                for (int i = 0; i < count; ++i)
                    out.push_back(frame(random_bytes(rng_() % 16)));
                if (out.size() < 3 || out[2].size() != 1) return true;
                const auto command = static_cast<std::uint8_t>(view(out[2])[0]);
                if (command == 0 || command > 5) return true;
                if (command == 1) out[2] = frame(WorkerCommand::heartbeat);  // no stray workers
                return command == 2;
            }
        }
    }

  private:
    // Whether the broker will refuse these headers; when it will not, they become a short
    // deadline, so that a random request to a random service does not wait there forever.
    bool headers_malformed(zmq::message_t& headers) {
        if (!parse_request_headers(view(headers), nullptr)) return true;
        headers = frame(std::string("\x81\xab"
                                    "deadline_ms") +
                        static_cast<char>(1 + rng_() % 20));
        return false;
    }
    void zbc(Frames& out, std::string_view service) {
        out.push_back(empty_frame());
        out.push_back(frame(protocol::kZbcClient));
        out.push_back(frame(service));
        out.push_back(frame(random_bytes(1 + rng_() % 8)));
        out.push_back(frame("\x80"));
        out.push_back(frame(random_bytes(rng_() % 32)));
    }
    std::string_view random_bytes(std::size_t size) {
        const std::size_t at = rng_() % (pool_.size() - size);
        return std::string_view(pool_).substr(at, size);
    }
    std::string random_name() { return std::to_string(rng_() % 1000); }

    std::mt19937 rng_;
    std::string pool_;
};

// A socket that sends without ever blocking on its high-water mark, and keeps reading what
// comes back so that the broker's answers do not pile up.
class HostilePeer {
  public:
    HostilePeer(zmq::context_t& context, const std::string& endpoint)
        : socket_(context, zmq::socket_type::dealer) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.set(zmq::sockopt::sndhwm, 1000);
        socket_.set(zmq::sockopt::rcvhwm, 1000);
        socket_.connect(endpoint);
    }
    // False when the broker took nothing for kPatience: it is stuck (or the machine far too
    // slow).
    bool send(Frames& frames) {
        if ((++sends_ & 0xff) == 0) drain();
        const auto give_up = Clock::now() + testing::kPatience;
        while (true) {
            if (send_frames(socket_, frames, zmq::send_flags::dontwait) == SendResult::sent)
                return true;
            drain();
            if (Clock::now() > give_up) return false;
            zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLOUT, 0};
            zmq::poll(&item, 1, 10ms);
        }
    }
    void drain() {
        while (recv_frames(socket_, in_, zmq::recv_flags::dontwait)) {
            if (in_.size() >= 5 && view(in_[1]) == protocol::kZbcClient &&
                view(in_[3]) == kMarker) {
                marker_answered_ = true;
            }
        }
    }
    // A question after everything else: when it is answered, all sent before it was read.
    bool send_marker() {
        Frames frames;
        frames.push_back(empty_frame());
        frames.push_back(frame(protocol::kZbcClient));
        frames.push_back(frame(protocol::kMmiService));
        frames.push_back(frame(kMarker));
        frames.push_back(frame("\x80"));
        frames.push_back(frame("echo"));
        return send(frames);
    }
    bool marker_answered() const { return marker_answered_; }
    zmq::socket_t& socket() { return socket_; }

  private:
    static constexpr std::string_view kMarker = "marker";
    zmq::socket_t socket_;
    Frames in_;
    bool marker_answered_ = false;
    std::uint64_t sends_ = 0;
};

}  // namespace

TEST_CASE(
    "a broker fed a million malformed and random messages neither crashes nor hangs nor "
    "grows") {
    // A million take about 7 s under ASan+UBSan on 2 shared cores; the env variable trims or
    // raises it.
    const long total = env_count("ZBROKER_FUZZ_MESSAGES", 1'000'000);
    const std::uint32_t seed = test_seed();
    const SmallAsanQuarantine quarantine;  // else ASan alone adds 256 MiB of freed memory
    auto [broker, endpoint] = start_test_broker();
    ChildProcess echo_worker = start_zworker(endpoint, "echo");
    Client admin(endpoint);
    REQUIRE(eventually([&] { return worker_count(admin, "echo") == 1; }));
    const auto stats_before = broker_stats(admin);
    const long rss_before = rss_kib(broker.pid());

    // Meanwhile a real client keeps checking that the broker answers, itself and by a worker.
    std::atomic<bool> fuzzing{true};
    long checks = 0, check_failures = 0;
    long long worst_check_ms = 0;
    std::string first_failure;
    std::thread checker;
    const OnScopeExit join_checker([&] {
        fuzzing = false;
        if (checker.joinable()) checker.join();
    });
    checker = std::thread([&] {
        Client probe(endpoint);
        for (long n = 0; fuzzing.load(); ++n) {
            const auto asked = Clock::now();
            // Answered at all, not fast: the fuzzer, broker, worker and this thread share two
            // loaded cores, and one check took 1.1 s without other load; a hung broker never
            // answers. The worst is reported.
            const bool mmi = mmi_service_ok(probe, "echo", kAnswerPatience);
            const auto mmi_ms = ms_since(asked);
            const std::string body = "probe-" + std::to_string(n);
            const Response r = probe.call("echo", body, {.timeout = kAnswerPatience, .retries = 0});
            worst_check_ms = std::max(worst_check_ms, ms_since(asked));
            ++checks;
            if (!mmi || !r.ok() || r.body_view() != body) {
                if (check_failures++ == 0) {
                    std::ostringstream what;
                    what << "check " << n << ": mmi.service " << (mmi ? "found" : "failed")
                         << " after " << mmi_ms << " ms, echo " << protocol::status_text(r.status)
                         << " (" << protocol::status_reason(r.status) << ")"
                         << (r.ok() && r.body_view() != body ? " with a wrong body" : "")
                         << " after " << ms_since(asked) << " ms in all";
                    first_failure = what.str();
                }
            }
            std::this_thread::sleep_for(100ms);  // pacing: the checks are not the load
        }
    });

    zmq::context_t context(1);
    constexpr int kPeersPerSide = 4;
    std::vector<std::unique_ptr<HostilePeer>> clients, workers;
    for (int i = 0; i < kPeersPerSide; ++i) {
        clients.push_back(std::make_unique<HostilePeer>(context, endpoint));
        workers.push_back(std::make_unique<HostilePeer>(context, endpoint));
    }
    HostileMessages messages(seed);
    Frames frames;
    long sent = 0, clearly_malformed = 0;
    bool stuck = false;
    const auto start = Clock::now();
    for (; sent < total && !stuck; ++sent) {
        const bool worker_side = sent % 2 == 1;
        const bool malformed = worker_side ? messages.worker(frames) : messages.client(frames);
        auto& peers = worker_side ? workers : clients;
        stuck = !peers[static_cast<std::size_t>(sent / 2) % kPeersPerSide]->send(frames);
        clearly_malformed += malformed ? 1 : 0;
    }
    // Each socket's messages are read in order: its marker answered means all of them were.
    for (auto* side : {&clients, &workers}) {
        for (auto& peer : *side)
            REQUIRE(peer->send_marker());
    }
    const bool all_read = eventually([&] {
        bool all = true;
        for (auto* side : {&clients, &workers}) {
            for (auto& peer : *side) {
                peer->drain();
                all = all && peer->marker_answered();
            }
        }
        return all;
    });
    const long long fuzz_ms = ms_since(start);
    fuzzing = false;
    checker.join();

    const bool alive = broker.running();
    const bool mmi_after = mmi_service_ok(admin, "echo", kAnswerPatience);
    const Response echo_after =
        admin.call("echo", "still there", {.timeout = kAnswerPatience, .retries = 0});
    const long rss_after = rss_kib(broker.pid());
    const auto stats_after = broker_stats(admin);
    WARN("hostile input: " << sent << " messages (seed " << seed << ") in " << fuzz_ms << " ms, "
                           << clearly_malformed << " clearly malformed; broker "
                           << (alive ? "alive" : "DEAD") << ", live checks " << checks
                           << " (failed " << check_failures << ", worst " << worst_check_ms
                           << " ms); RSS " << rss_before / 1024 << " -> " << rss_after / 1024
                           << " MiB");
    INFO("a broker that takes no message, or leaves some unread, for " << testing::kPatience.count()
                                                                       << " s is stuck, or the "
                                                                          "machine far too slow");
    REQUIRE_FALSE(stuck);
    REQUIRE(alive);
    REQUIRE(all_read);
    REQUIRE(mmi_after);
    REQUIRE(echo_after.ok());
    REQUIRE(echo_after.body_view() == "still there");
    REQUIRE(checks > 0);
    {
        const std::string log = broker.output();
        INFO("first failed check: " << first_failure << "\nbroker log tail:\n"
                                    << log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
        REQUIRE(check_failures == 0);
    }
    REQUIRE(rss_after - rss_before < 200 * 1024);

    if (stats_before && stats_after) {
        const auto counted = stats_after->malformed_total() - stats_before->malformed_total();
        // A live worker taken for dead (a starved process) shows here, and explains a failed
        // live check.
        WARN("mmi.stats: malformed grew by "
             << counted << " (at least " << clearly_malformed << " expected); workers expired: "
             << stats_after->total("workers_expired") - stats_before->total("workers_expired"));
        REQUIRE(counted >= static_cast<std::uint64_t>(clearly_malformed));
    } else {
        WARN("mmi.stats not available: malformed counters checked from the exit summary only");
    }
    // Its own exit summary says the same, and a clean exit shows it was never wedged.
    broker.signal(SIGTERM);
    REQUIRE(broker.wait(testing::kPatience) == 0);
    const auto logged = summary_number(broker.output(), "malformed message(s)");
    WARN("exit summary: " << logged.value_or(0) << " malformed message(s) counted");
    REQUIRE(logged);
    REQUIRE(*logged >= static_cast<std::uint64_t>(clearly_malformed));
}

// ---------------------------------------------------------------------------------------------
// Hardening II: what one peer could do to the broker

TEST_CASE(
    "a peer that is worker and client, gone holding 400 of its own jobs, leaves the broker "
    "serving") {
    // The reproduction of a remote crash: the broker died with SIGSEGV (ASan: heap-use-after-
    // free in remove_worker under remove_worker) once this peer closed its socket.
    auto [broker, endpoint] = start_test_broker({"--max-attempts", "1"});
    zmq::context_t context(1);
    {
        zmq::socket_t both(context, zmq::socket_type::dealer);
        both.set(zmq::sockopt::linger, 0);
        both.set(zmq::sockopt::rcvhwm, 0);
        both.connect(endpoint);
        Frames out;
        wire::Writer writer;
        writer.ready("s", 400);
        writer.take(out);
        send_frames(both, out);
        const std::string long_id(248, 'i');
        for (int batch = 0; batch < 4; ++batch) {
            for (int i = 0; i < 100; ++i)
                writer.request(long_id + std::to_string(1000 + batch * 100 + i), "s", std::nullopt,
                               "x");
            out.clear();
            writer.take(out);
            send_frames(both, out);
        }
        // Take the 400 JOBs without replying.
        std::size_t jobs = 0;
        Frames in;
        std::vector<wire::Record> records;
        REQUIRE(eventually([&] {
            while (recv_frames(both, in, zmq::recv_flags::dontwait)) {
                const char* error = nullptr;
                if (!wire::parse(in, 0, records, error)) continue;
                for (const wire::Record& record : records)
                    jobs += record.command == wire::Command::job ? 1 : 0;
            }
            return jobs == 400;
        }));
    }  // closed without a word
    Client admin(endpoint);
    REQUIRE(eventually([&] {
        const auto stats = broker_stats(admin);
        return stats && stats->workers == 0;
    }));
    REQUIRE(broker.running());
    const auto stats = broker_stats(admin);
    REQUIRE(stats);
    REQUIRE(stats->drops.at("client_unreachable") == 400);  // its 500s had nowhere to go
    REQUIRE(broker.running());
}

TEST_CASE("3000 clients that come and go leave the broker's peers where they started") {
    // It was: the broker kept about 1 kB for every client that ever connected.
    auto [broker, endpoint] = start_test_broker();
    ChildProcess worker = start_zworker(endpoint, "echo", {"--credit", "50"});
    Client admin(endpoint);
    REQUIRE(eventually([&] { return worker_count(admin, "echo") == 1; }));
    const auto before = broker_stats(admin);
    REQUIRE(before);
    REQUIRE(before->peers >= 2);  // the worker's connection and the admin's, at least
    zmq::context_t context(1);
    const std::string body = pack(std::string("x"));
    for (int c = 0; c < 3000; ++c) {
        AsyncClient client(context, endpoint, 50);
        for (int i = 0; i < 50; ++i)
            REQUIRE(client.queue("echo", body, 10s));
        for (int i = 0; i < 50; ++i) {
            const auto done = client.receive(kAnswerPatience);
            REQUIRE(done);
            REQUIRE(done->status == Status::ok);
        }
    }
    // Within a few heartbeat intervals everything of them is let go: what `before` had (the
    // worker, the admin's connection) and nothing more.
    REQUIRE(eventually([&] {
        const auto after = broker_stats(admin);
        return after && after->peers <= before->peers + 1 && after->keys == 0;
    }));
}
