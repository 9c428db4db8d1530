// zbench: exact percentiles, and a tiny real run whose counts add up. Never asserts speed.
#include <catch2/catch.hpp>

#include <fstream>

#include <nlohmann/json.hpp>

#include "bench/latency_recorder.hpp"
#include "shared/child_process.hpp"

using namespace zbroker;
using namespace std::chrono_literals;

TEST_CASE("latency percentiles are exact nearest-rank values over all samples") {
    bench::LatencyRecorder recorder;
    for (int us = 1000; us >= 1; --us)
        recorder.add(std::chrono::microseconds(us));
    const auto s = recorder.summarize();
    REQUIRE(s.p50_us == 500);
    REQUIRE(s.p90_us == 900);
    REQUIRE(s.p99_us == 990);
    REQUIRE(s.p999_us == 999);
    REQUIRE(s.max_us == 1000);
    REQUIRE(s.mean_us == Approx(500.5));
}

TEST_CASE("merged recorders summarize as one") {
    bench::LatencyRecorder a, b;
    a.add(1us);
    b.add(3us);
    b.add(2us);
    a.merge(b);
    REQUIRE(a.count() == 3);
    REQUIRE(a.summarize().p50_us == 2);
}

TEST_CASE("an empty recorder summarizes to zeros") {
    bench::LatencyRecorder recorder;
    REQUIRE(recorder.summarize().max_us == 0);
}

TEST_CASE("a tiny zbench run answers every request and writes the documented JSON") {
    const char* dir = std::getenv("ZBROKER_BIN_DIR");
    const std::string bin = dir != nullptr ? dir : "build/debug/bin";
    const std::string json_path = "/tmp/zbench-test-" + std::to_string(::getpid()) + ".json";
    ChildProcess zbench({bin + "/zbench", "--mode", "sync,pipelined", "--inflight", "8",
                         "--clients", "1,2", "--workers", "2", "--requests", "200", "--json",
                         json_path});
    const auto exit_code = zbench.wait(120'000ms);
    INFO(zbench.output());
    REQUIRE(exit_code == 0);

    std::ifstream file(json_path);
    const auto doc = nlohmann::json::parse(file);
    std::remove(json_path.c_str());
    REQUIRE(doc.at("points").size() == 4);  // {sync, pipelined} x {1, 2 clients}
    for (const auto& point : doc.at("points")) {
        INFO(point.dump());
        REQUIRE(point.at("sent") == 200);
        REQUIRE(point.at("ok") == 200);
        REQUIRE(point.at("errors").empty());
        REQUIRE(point.at("requests_per_second").get<double>() > 0);
        for (const char* key : {"p50", "p90", "p99", "p99_9", "max", "mean"}) {
            REQUIRE(point.at("latency_us").at(key).get<double>() > 0);
        }
        REQUIRE(point.at("latency_us").at("p50") <= point.at("latency_us").at("max"));
        for (const char* key : {"target", "mode", "clients", "workers", "inflight", "size",
                                "seconds", "megabytes_per_second"}) {
            REQUIRE(point.contains(key));
        }
    }
}
