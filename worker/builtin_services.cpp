// Built-in handlers: small, msgpack in and out, useful for demos, tests and benchmarks.
#include "worker/builtin_services.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <thread>

#include "worker/payload.hpp"

namespace zbroker {

namespace {

constexpr std::int64_t kMaxSleepMs = 600'000;

// Returns the body frames unchanged: the cheapest round trip, for latency measurements.
Reply serve_echo(Request& request) {
    return Reply::frames(std::move(request.frames));
}

// The zguide's greeting, in msgpack: "Hello, Server!" gets "Hello, Client!".
Reply serve_hello(Request& request) {
    std::string name;
    if (!request.body().empty()) {
        try {
            const msgpack::object_handle handle = unpack_object(request.body());
            if (handle.get().type == msgpack::type::STR) name = handle.get().as<std::string>();
        } catch (const CodecError&) {
            // Not msgpack at all: greet a stranger rather than fail a greeting.
        }
    }
    if (name.empty()) return Reply::of(std::string("Hello, stranger!"));
    if (name == "Hello, Server!") return Reply::of(std::string("Hello, Client!"));
    return Reply::of("Hello, " + name + "!");
}

// {"ms": n} sleeps n milliseconds: a stand-in for real work of a known length.
Reply serve_sleep(Request& request) {
    const msgpack::object_handle handle = unpack_object(request.body());
    const msgpack::object& body = handle.get();
    if (body.type != msgpack::type::MAP)
        throw std::invalid_argument(std::string("sleep expects a msgpack map {\"ms\": n}, got a ") +
                                    type_name(body.type));
    const auto ms = [&body]() -> std::int64_t {
        for (const msgpack::object_kv& entry : body.via.map) {
            if (entry.key.type != msgpack::type::STR || entry.key.as<std::string>() != "ms")
                continue;
            if (entry.val.type != msgpack::type::POSITIVE_INTEGER &&
                entry.val.type != msgpack::type::NEGATIVE_INTEGER)
                throw std::invalid_argument(
                    std::string("sleep: \"ms\" must be an integer, got a ") +
                    type_name(entry.val.type));
            if (entry.val.type == msgpack::type::NEGATIVE_INTEGER) return -1;
            return entry.val.via.u64 > static_cast<std::uint64_t>(kMaxSleepMs)
                       ? kMaxSleepMs + 1
                       : static_cast<std::int64_t>(entry.val.via.u64);
        }
        throw std::invalid_argument("sleep expects a msgpack map {\"ms\": n}; \"ms\" is missing");
    }();
    if (ms < 0 || ms > kMaxSleepMs)
        throw std::invalid_argument("sleep: \"ms\" must be in 0.." + std::to_string(kMaxSleepMs));
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return Reply::of(std::map<std::string, std::int64_t>{{"slept_ms", ms}});
}

struct Summary {
    std::uint64_t count = 0;
    double mean = 0;
    double min = 0;
    double max = 0;
    double stddev = 0;  // of the population: the numbers are all there is
    MSGPACK_DEFINE_MAP(count, mean, min, max, stddev)
};

// An array of numbers gets its count, mean, min, max and standard deviation.
Reply serve_stats(Request& request) {
    const msgpack::object_handle handle = unpack_object(request.body());
    const msgpack::object& body = handle.get();
    if (body.type != msgpack::type::ARRAY)
        throw std::invalid_argument(
            std::string("stats expects a msgpack array of numbers, got a ") + type_name(body.type));
    if (body.via.array.size == 0) return Reply::error("stats needs at least one number");
    std::vector<double> numbers;
    numbers.reserve(body.via.array.size);
    for (std::uint32_t i = 0; i < body.via.array.size; ++i) {
        const msgpack::object& item = body.via.array.ptr[i];
        switch (item.type) {
            case msgpack::type::POSITIVE_INTEGER:
            case msgpack::type::NEGATIVE_INTEGER:
            case msgpack::type::FLOAT32:
            case msgpack::type::FLOAT64:
                numbers.push_back(item.as<double>());
                break;
            default:
                throw std::invalid_argument("stats: item " + std::to_string(i) + " is a " +
                                            type_name(item.type) + ", not a number");
        }
    }
    Summary summary;
    summary.count = numbers.size();
    const auto [min, max] = std::minmax_element(numbers.begin(), numbers.end());
    summary.min = *min;
    summary.max = *max;
    double sum = 0;
    for (double x : numbers)
        sum += x;
    summary.mean = sum / static_cast<double>(numbers.size());
    double squares = 0;
    for (double x : numbers)
        squares += (x - summary.mean) * (x - summary.mean);
    summary.stddev = std::sqrt(squares / static_cast<double>(numbers.size()));
    return Reply::of(summary);
}

// Always throws: shows what a client sees when a handler fails.
Reply serve_fail(Request&) {
    throw std::runtime_error("fail: this service always fails (for testing)");
}

using HandlerFunction = Reply (*)(Request&);

const std::map<std::string, HandlerFunction, std::less<>>& builtin_handlers() {
    static const std::map<std::string, HandlerFunction, std::less<>> handlers{
        {"echo", serve_echo},
        {"hello", serve_hello},
        {"sleep", serve_sleep},
        {"stats", serve_stats},
        {"fail", serve_fail}};
    return handlers;
}

}  // namespace

const std::vector<std::string>& builtin_service_names() {
    static const std::vector<std::string> names{"echo", "hello", "sleep", "stats", "fail"};
    return names;
}

void add_builtin_service(Worker& worker, std::string_view name) {
    const auto& handlers = builtin_handlers();
    const auto found = handlers.find(name);
    if (found == handlers.end()) {
        std::string known;
        for (const std::string& each : builtin_service_names()) {
            known += known.empty() ? "" : ", ";
            known += each;
        }
        throw std::invalid_argument("unknown built-in service '" + std::string(name) +
                                    "'; known services: " + known);
    }
    // sleep blocks and fail is for tests: they run on the pool. The others take microseconds,
    // so they run on the socket thread and skip two thread hand-offs per request.
    const bool quick = name == "echo" || name == "hello" || name == "stats";
    worker.handle(std::string(name), found->second, quick ? Execution::io_thread : Execution::pool);
}

}  // namespace zbroker
