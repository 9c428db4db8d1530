// zbench output: an aligned table for people, JSON and CSV for machines.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "bench/load_run.hpp"

namespace zbroker::bench {

// CPU time (user + system) per request answered over a whole run, warm-up included, of the
// processes zbench started (--cpu).
struct CpuPerRequest {
    double brokers_us = 0;  // all brokers together: what one request costs the broker it took
    double workers_us = 0;  // all workers together
    double client_us = 0;   // zbench itself: its clients, which share the machine
};

struct Point {
    std::string target;  // "zbroker", or a baseline's name (baselines.hpp)
    std::string client;  // "zbench" (load_run.hpp) or "minimal" (minimal_client.hpp)
    std::string mode;    // "sync" or "pipelined"
    std::size_t clients = 1;
    // Each broker's workers for the service: those zbench started, or with --connect what the
    // brokers report (mmi.services); unknown when they do not answer or disagree.
    std::optional<std::size_t> workers;
    std::size_t inflight = 1;
    std::size_t size = 32;
    std::size_t brokers = 1;  // the clients spread their requests over this many
    std::size_t round = 1;    // with --rounds: which measurement of this point it is
    LoadResult result;
    std::optional<CpuPerRequest> cpu;

    double megabytes_per_second() const {
        return result.requests_per_second() * static_cast<double>(size) / 1e6;
    }
};

// zbench's own client must do at least this fraction of the minimal client's req/s on the
// direct echo, or zbench, not the target, limits the run.
inline constexpr double kClientCheckMin = 0.9;

// The client check of one point: zbench's client ("direct") against the minimal one ("floor").
struct ClientCheck {
    Point direct;  // its result is not repeated in JSON: the point is among the points
    double ratio = 0;
    bool passed() const { return ratio >= kClientCheckMin; }
};

// The errors column: each kind of failure and its count, "no reply:4, 503:2, 504:1" (statuses
// in code order, "no reply" for requests unanswered within the reply timeout); "0" when none.
// Inline, so that tests/test_bench.cpp checks it without zbench's other sources.
inline std::string errors_text(const std::map<protocol::Status, std::uint64_t>& errors) {
    if (errors.empty()) return "0";
    std::string text;
    for (const auto& [status, count] : errors) {
        if (!text.empty()) text += ", ";
        text += status == protocol::Status::no_reply ? std::string("no reply")
                                                     : std::string(protocol::status_text(status));
        text += ":" + std::to_string(count);
    }
    return text;
}

void print_table_header(std::ostream& out);
void print_table_row(std::ostream& out, const Point& point);
// The CPU line under a row measured with --cpu.
void print_cpu(std::ostream& out, const Point& point);
// A target against a baseline measured in the same run (in the same round, with --rounds).
struct Ratio {
    double throughput = 0;
    double p50_latency = 0;
    std::optional<double> middle_cpu;  // broker over relay CPU per request, when both have --cpu
};
// Prints a target's throughput and p50 latency (and CPU, when known) as ratios of a baseline's.
Ratio print_ratio(std::ostream& out, const Point& target, const Point& baseline);
// Prints the median and range of a comparison measured in several rounds.
void print_ratio_summary(std::ostream& out, const std::string& target, const std::string& baseline,
                         const std::vector<Ratio>& rounds);
// Prints the client check, with a warning that cannot be missed when it fails.
ClientCheck print_client_check(std::ostream& out, const Point& direct, const Point& floor);
void write_json(const std::string& path, const std::vector<Point>& points,
                const std::vector<ClientCheck>& checks);
void write_csv(const std::string& path, const std::vector<Point>& points);

}  // namespace zbroker::bench
