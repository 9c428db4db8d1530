// zbench output: an aligned table for people, JSON and CSV for machines.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "bench/load_run.hpp"

namespace zbroker::bench {

struct Point {
    std::string target;  // "zbroker", or a baseline's name
    std::string mode;    // "sync" or "pipelined"
    std::size_t clients = 1;
    std::size_t workers = 0;  // 0 when measuring an existing broker
    std::size_t inflight = 1;
    std::size_t size = 32;
    LoadResult result;

    double megabytes_per_second() const {
        return result.requests_per_second() * static_cast<double>(size) / 1e6;
    }
};

void print_table_header(std::ostream& out);
void print_table_row(std::ostream& out, const Point& point);
// zbroker's throughput and p50 latency as ratios of a baseline measured in the same run.
void print_ratio(std::ostream& out, const Point& zbroker, const Point& baseline);
void write_json(const std::string& path, const std::vector<Point>& points);
void write_csv(const std::string& path, const std::vector<Point>& points);

}  // namespace zbroker::bench
