// Formats benchmark points; JSON through nlohmann_json, CSV and the table by hand.
#include "report.hpp"

#include <algorithm>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace zbroker::bench {
namespace {

std::string workers_text(const Point& p) {
    return p.workers ? std::to_string(*p.workers) : "?";
}

nlohmann::json workers_json(const Point& p) {
    return p.workers ? nlohmann::json(*p.workers) : nlohmann::json();  // null: unknown
}

std::ofstream open_for_writing(const std::string& path) {
    std::ofstream file(path);
    if (!file) throw std::runtime_error("cannot write " + path + ": check the directory exists");
    return file;
}

double ratio(double a, double b) {
    return b > 0 ? a / b : 0.0;
}

}  // namespace

void print_table_header(std::ostream& out) {
    out << std::left << std::setw(11) << "target" << std::setw(10) << "mode" << std::right
        << std::setw(8) << "brokers" << std::setw(8) << "clients" << std::setw(8) << "workers"
        << std::setw(9) << "inflight" << std::setw(7) << "size" << std::setw(10) << "requests"
        << std::setw(11) << "req/s" << std::setw(9) << "MB/s" << std::setw(9) << "p50 us"
        << std::setw(9) << "p90 us" << std::setw(9) << "p99 us" << std::setw(10) << "p99.9 us"
        << std::setw(9) << "max us"
        << "  errors\n";
}

void print_table_row(std::ostream& out, const Point& p) {
    const auto& r = p.result;
    out << std::left << std::setw(11) << p.target << std::setw(10) << p.mode << std::right
        << std::setw(8) << p.brokers << std::setw(8) << p.clients << std::setw(8) << workers_text(p)
        << std::setw(9) << p.inflight << std::setw(7) << p.size << std::setw(10) << r.sent
        << std::setw(11) << std::fixed << std::setprecision(0) << r.requests_per_second()
        << std::setw(9) << std::setprecision(2) << p.megabytes_per_second() << std::setprecision(0)
        << std::setw(9) << r.latency.p50_us << std::setw(9) << r.latency.p90_us << std::setw(9)
        << r.latency.p99_us << std::setw(10) << r.latency.p999_us << std::setw(9)
        << r.latency.max_us << "  " << errors_text(r.errors) << '\n'
        << std::flush;
}

void print_cpu(std::ostream& out, const Point& p) {
    if (!p.cpu) return;
    out << "  CPU per request (user+sys, warm-up included): " << std::fixed << std::setprecision(2)
        << p.cpu->brokers_us << " us in the "
        << (p.target.starts_with("relay") ? "relay"
            : p.brokers > 1               ? "brokers"
                                          : "broker")
        << ", " << p.cpu->workers_us << " us in the workers, " << p.cpu->client_us
        << " us in zbench's client\n"
        << std::flush;
}

Ratio print_ratio(std::ostream& out, const Point& target, const Point& baseline) {
    Ratio r{ratio(target.result.requests_per_second(), baseline.result.requests_per_second()),
            ratio(target.result.latency.p50_us, baseline.result.latency.p50_us), std::nullopt};
    if (target.cpu && baseline.cpu)
        r.middle_cpu = ratio(target.cpu->brokers_us, baseline.cpu->brokers_us);
    out << "  " << target.target << " / " << baseline.target << ": throughput " << std::fixed
        << std::setprecision(2) << r.throughput << "x, p50 latency " << r.p50_latency << "x";
    if (r.middle_cpu) out << ", CPU per request in the middle " << *r.middle_cpu << "x";
    out << '\n' << std::flush;
    return r;
}

void print_ratio_summary(std::ostream& out, const std::string& target, const std::string& baseline,
                         const std::vector<Ratio>& rounds) {
    // Median and range of one figure over the rounds (upper median for an even count).
    const auto summary = [&rounds](auto figure) {
        std::vector<double> values;
        for (const Ratio& r : rounds) {
            if (const std::optional<double> value = figure(r)) values.push_back(*value);
        }
        std::sort(values.begin(), values.end());
        std::ostringstream text;
        text << std::fixed << std::setprecision(2) << values[values.size() / 2] << "x ("
             << values.front() << "-" << values.back() << ")";
        return text.str();
    };
    out << "  " << target << " / " << baseline << " over " << rounds.size()
        << " rounds in alternating order, median (range): throughput "
        << summary([](const Ratio& r) { return std::optional{r.throughput}; }) << ", p50 latency "
        << summary([](const Ratio& r) { return std::optional{r.p50_latency}; });
    if (rounds.front().middle_cpu) {
        out << ", CPU per request in the middle "
            << summary([](const Ratio& r) { return r.middle_cpu; });
    }
    out << '\n' << std::flush;
}

ClientCheck print_client_check(std::ostream& out, const Point& direct, const Point& floor) {
    const ClientCheck check{
        direct, ratio(direct.result.requests_per_second(), floor.result.requests_per_second())};
    out << "  client check, " << direct.target << " / " << floor.target << ": throughput "
        << std::fixed << std::setprecision(2) << check.ratio << "x (at least " << kClientCheckMin
        << "x needed), p50 latency "
        << ratio(direct.result.latency.p50_us, floor.result.latency.p50_us) << "x\n";
    if (!check.passed()) {
        out << "  !!! CLIENT CHECK FAILED: zbench's client does " << check.ratio
            << "x the minimal client's req/s on the\n"
               "  !!! direct echo. ZBENCH IS THE BOTTLENECK at this point: its figures measure\n"
               "  !!! zbench, not the target. Do not report them.\n";
    }
    out << std::flush;
    return check;
}

void write_json(const std::string& path, const std::vector<Point>& points,
                const std::vector<ClientCheck>& checks) {
    nlohmann::json doc;
    doc["points"] = nlohmann::json::array();
    for (const Point& p : points) {
        const auto& r = p.result;
        nlohmann::json errors = nlohmann::json::object();
        for (const auto& [status, count] : r.errors)
            errors[std::string(protocol::status_text(status))] = count;
        doc["points"].push_back({
            {"target", p.target},
            {"client", p.client},
            {"mode", p.mode},
            {"brokers", p.brokers},
            {"clients", p.clients},
            {"workers", workers_json(p)},
            {"inflight", p.inflight},
            {"size", p.size},
            {"round", p.round},
            {"sent", r.sent},
            {"ok", r.ok},
            {"errors", errors},
            {"seconds", r.seconds},
            {"requests_per_second", r.requests_per_second()},
            {"megabytes_per_second", p.megabytes_per_second()},
            {"latency_us",
             {{"p50", r.latency.p50_us},
              {"p90", r.latency.p90_us},
              {"p99", r.latency.p99_us},
              {"p99_9", r.latency.p999_us},
              {"max", r.latency.max_us},
              {"mean", r.latency.mean_us}}},
        });
        if (p.cpu) {
            doc["points"].back()["cpu_us_per_request"] = {{"brokers", p.cpu->brokers_us},
                                                          {"workers", p.cpu->workers_us},
                                                          {"client", p.cpu->client_us}};
        }
    }
    // One per point with --baseline (none without): zbench's client ("direct") over the
    // minimal one ("floor") on the direct echo.
    doc["client_checks"] = nlohmann::json::array();
    for (const ClientCheck& c : checks) {
        const Point& p = c.direct;
        doc["client_checks"].push_back({{"mode", p.mode},
                                        {"brokers", p.brokers},
                                        {"clients", p.clients},
                                        {"workers", workers_json(p)},
                                        {"inflight", p.inflight},
                                        {"size", p.size},
                                        {"ratio", c.ratio},
                                        {"minimum", kClientCheckMin},
                                        {"passed", c.passed()}});
    }
    open_for_writing(path) << doc.dump(2) << '\n';
}

void write_csv(const std::string& path, const std::vector<Point>& points) {
    std::ofstream file = open_for_writing(path);
    file << "target,mode,brokers,clients,workers,inflight,size,sent,ok,errors,seconds,"
            "req_per_s,mb_per_s,p50_us,p90_us,p99_us,p999_us,max_us\n";
    for (const Point& p : points) {
        const auto& r = p.result;
        file << p.target << ',' << p.mode << ',' << p.brokers << ',' << p.clients << ','
             << (p.workers ? std::to_string(*p.workers) : "")  // empty: unknown
             << ',' << p.inflight << ',' << p.size << ',' << r.sent << ',' << r.ok << ','
             << (r.sent - r.ok) << ',' << r.seconds << ',' << r.requests_per_second() << ','
             << p.megabytes_per_second() << ',' << r.latency.p50_us << ',' << r.latency.p90_us
             << ',' << r.latency.p99_us << ',' << r.latency.p999_us << ',' << r.latency.max_us
             << '\n';
    }
}

}  // namespace zbroker::bench
