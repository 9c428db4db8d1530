// Shared pieces of the fault-injection tests: child processes, a raw ZBC01 client, /proc, env.
#pragma once

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "client/client.hpp"
#include "process_helpers.hpp"
#include "shared/child_process.hpp"
#include "shared/codec.hpp"
#include "shared/frames.hpp"
#include "shared/protocol.hpp"

namespace zbroker::faults {

using testing::bin_dir;
using testing::eventually;

using namespace std::chrono_literals;

// Broker and workers must agree on them, or each takes the other for dead. The interval is
// short, so that deaths are noticed quickly and the tests stay short. The liveness is not: a
// live process that a loaded machine leaves without CPU for a while must not be taken for
// dead. With 3 x 100 ms, a live check of the hostile-input test failed once under ASan on two
// busy cores as a worker taken for dead would make it fail: not a timeout, and the slowest
// check took 1.2 s, about the worker's 1 s delay before it reconnects.
inline constexpr int kHeartbeatMs = 100;
inline constexpr int kLiveness = 10;

// A count from the environment, so CI under ASan and a fast local build can pick their own.
inline long env_count(const char* name, long fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    return end != nullptr && *end == '\0' && value > 0 ? value : fallback;
}

// The heartbeat flags, the same for broker and workers, followed by `extra`.
inline std::vector<std::string> heartbeat_args(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--heartbeat-ms", std::to_string(kHeartbeatMs), "--liveness",
                                  std::to_string(kLiveness)};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

inline std::pair<ChildProcess, std::string> start_test_broker(std::vector<std::string> extra = {}) {
    return start_broker(bin_dir(), heartbeat_args(std::move(extra)));
}

// The same endpoint again, as after a crash: workers and clients only know this address.
inline ChildProcess restart_broker(const std::string& endpoint,
                                   std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{bin_dir() + "/zbroker", "--bind", endpoint};
    for (auto& arg : heartbeat_args(std::move(extra)))
        argv.push_back(std::move(arg));
    return ChildProcess(std::move(argv));
}

inline ChildProcess start_zworker(const std::string& endpoint, const std::string& service,
                                  std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{bin_dir() + "/zworker", "--broker", endpoint, "--service",
                                  service};
    for (auto& arg : heartbeat_args(std::move(extra)))
        argv.push_back(std::move(arg));
    return ChildProcess(std::move(argv));
}

struct ServiceFigures {
    int workers = 0;
    int queued = 0;
    int in_flight = 0;
    MSGPACK_DEFINE_MAP(workers, queued, in_flight)
};

// How long a call may take when all that matters is that it is answered at all: a wedged or
// blocked broker never answers, while a sanitizer build on two loaded cores has taken over a
// second for one round trip. Not a measure of speed; tests that care report their worst.
inline constexpr std::chrono::milliseconds kAnswerPatience = 10s;

// From mmi.services; nullopt when the broker did not answer in time. Meant for polling with
// eventually(), which asks again: the timeout only has to outlast a slow round trip.
inline std::optional<ServiceFigures> figures(Client& client, const std::string& service) {
    const Response r = client.call(protocol::kMmiServices, "", {.timeout = 5000ms, .retries = 0});
    if (!r.ok()) return std::nullopt;
    // The handle owns the zone the nested objects live in: keep it while reading them.
    const msgpack::object_handle handle = unpack_object(r.body_view());
    const auto all = handle.get().as<std::map<std::string, msgpack::object>>();
    const auto it = all.find(service);
    return it == all.end() ? ServiceFigures{} : it->second.as<ServiceFigures>();
}

inline int worker_count(Client& client, const std::string& service) {
    const auto f = figures(client, service);
    return f ? f->workers : -1;
}

// mmi.service asks the broker itself: answered from its loop, so it measures responsiveness.
inline bool mmi_service_ok(Client& client, const std::string& service,
                           std::chrono::milliseconds timeout) {
    const Response r =
        client.call(protocol::kMmiService, service, {.timeout = timeout, .retries = 0});
    return r.ok() && r.body_view() == protocol::kMmiFound;
}

// Resident set of a process in KiB, from /proc/<pid>/status; 0 when unreadable.
inline long rss_kib(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.starts_with("VmRSS:")) return std::strtol(line.c_str() + 6, nullptr, 10);
    }
    return 0;
}

// The broker's own totals: mmi.stats when the broker has it, else nullopt.
struct BrokerStats {
    std::map<std::string, std::uint64_t> malformed;
    std::map<std::string, std::uint64_t> drops;
    std::map<std::string, std::uint64_t> totals;  // requests, dispatches, requeued, ...
    std::uint64_t workers = 0;
    std::uint64_t peers = 0;  // connections the broker keeps something for
    std::uint64_t keys = 0;   // fairness keys with requests waiting
    std::uint64_t total(const std::string& name) const {
        const auto it = totals.find(name);
        return it == totals.end() ? 0 : it->second;
    }
    std::uint64_t malformed_total() const {
        std::uint64_t total = 0;
        for (const auto& [kind, count] : malformed)
            total += count;
        return total;
    }
};

// A slow answer must not pass for a missing mmi.stats: callers then skip what it would prove.
inline std::optional<BrokerStats> broker_stats(Client& client) {
    const Response r = client.call("mmi.stats", "", {.timeout = kAnswerPatience, .retries = 1});
    if (!r.ok() || r.body_view() == protocol::kMmiNotImplemented) return std::nullopt;
    try {
        const msgpack::object_handle handle = unpack_object(r.body_view());
        const auto all = handle.get().as<std::map<std::string, msgpack::object>>();
        BrokerStats stats;
        if (auto it = all.find("malformed"); it != all.end())
            stats.malformed = it->second.as<std::map<std::string, std::uint64_t>>();
        if (auto it = all.find("drops"); it != all.end())
            stats.drops = it->second.as<std::map<std::string, std::uint64_t>>();
        if (auto it = all.find("totals"); it != all.end())
            stats.totals = it->second.as<std::map<std::string, std::uint64_t>>();
        if (auto it = all.find("workers"); it != all.end())
            stats.workers = it->second.as<std::uint64_t>();
        if (auto it = all.find("peers"); it != all.end())
            stats.peers = it->second.as<std::uint64_t>();
        if (auto it = all.find("keys"); it != all.end())
            stats.keys = it->second.as<std::uint64_t>();
        return stats;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// Runs `done` when the scope ends, also when a REQUIRE throws: a test uses it to stop and join
// its threads, so that a failure is reported instead of std::terminate on a joinable thread.
class OnScopeExit {
  public:
    explicit OnScopeExit(std::function<void()> done) : done_(std::move(done)) {}
    ~OnScopeExit() { done_(); }
    OnScopeExit(const OnScopeExit&) = delete;
    OnScopeExit& operator=(const OnScopeExit&) = delete;

  private:
    std::function<void()> done_;
};

// ASan keeps freed memory in a quarantine of 256 MiB by default, so a broker that frees as
// much as it allocates still grows its RSS by that much. Children started while this lives
// get a small quarantine, so their RSS shows what the broker itself holds. Set before any
// thread of the test reads the environment; harmless without ASan.
class SmallAsanQuarantine {
  public:
    SmallAsanQuarantine() {
        const char* old = std::getenv("ASAN_OPTIONS");
        if (old != nullptr) old_ = old;
        const std::string options =
            (old_ && !old_->empty() ? *old_ + ":" : std::string()) + "quarantine_size_mb=16";
        setenv("ASAN_OPTIONS", options.c_str(), 1);
    }
    ~SmallAsanQuarantine() {
        if (old_) {
            setenv("ASAN_OPTIONS", old_->c_str(), 1);
        } else {
            unsetenv("ASAN_OPTIONS");
        }
    }
    SmallAsanQuarantine(const SmallAsanQuarantine&) = delete;
    SmallAsanQuarantine& operator=(const SmallAsanQuarantine&) = delete;

  private:
    std::optional<std::string> old_;
};

// The number a broker's exit summary logs after `label`, e.g. "malformed message(s)" in
// "served 3 request(s): ..., 7 malformed message(s), ...": what it counted, when mmi.stats
// is not there to ask.
inline std::optional<std::uint64_t> summary_number(const std::string& log,
                                                   const std::string& label) {
    const auto at = log.rfind(" " + label);
    if (at == std::string::npos) return std::nullopt;
    auto start = at;
    while (start > 0 && std::isdigit(static_cast<unsigned char>(log[start - 1])))
        --start;
    if (start == at) return std::nullopt;
    return std::stoull(log.substr(start, at - start));
}

// A ZBC01 client on a bare DEALER that shows every reply it gets, duplicates included:
// AsyncClient and Client hide a second answer for one id, which is what we must catch.
class RawZbcClient {
  public:
    struct Reply {
        std::string id;
        protocol::Status status = protocol::Status::no_reply;
        std::string body;
    };

    RawZbcClient(zmq::context_t& context, const std::string& endpoint)
        : socket_(context, zmq::socket_type::dealer) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.set(zmq::sockopt::sndhwm, 0);
        socket_.set(zmq::sockopt::rcvhwm, 0);
        socket_.connect(endpoint);
    }

    // Blocks only while libzmq has no room, which with HWM 0 it always has.
    void send(std::string_view service, std::string_view id, std::string_view body,
              std::string_view headers = "\x80") {
        Frames frames;
        frames.push_back(empty_frame());
        frames.push_back(frame(protocol::kZbcClient));
        frames.push_back(frame(service));
        frames.push_back(frame(id));
        frames.push_back(frame(headers));
        frames.push_back(frame(body));
        send_frames(socket_, frames);
    }

    // The next well-formed reply, or nullopt after `timeout`.
    std::optional<Reply> receive(std::chrono::milliseconds timeout) {
        const auto give_up = std::chrono::steady_clock::now() + timeout;
        while (true) {
            if (recv_frames(socket_, in_, zmq::recv_flags::dontwait)) {
                if (in_.size() < 5 || in_[0].size() != 0 || view(in_[1]) != protocol::kZbcClient)
                    continue;
                const auto status = protocol::parse_status(view(in_[4]));
                Reply reply{std::string(view(in_[3])), status.value_or(protocol::Status::no_reply),
                            in_.size() > 5 ? std::string(view(in_[5])) : std::string()};
                return reply;
            }
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(
                give_up - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, left);
        }
    }

  private:
    zmq::socket_t socket_;
    Frames in_;
};

}  // namespace zbroker::faults
