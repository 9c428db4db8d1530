// The Prometheus endpoint and the config file: the metric families built from a core's
// counters, then a real zbroker scraped over HTTP and configured from a file.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "broker/metrics.hpp"
#include "client/async_client.hpp"
#include "client/client.hpp"
#include "core_harness.hpp"
#include "process_helpers.hpp"
#include "shared/child_process.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using namespace std::chrono_literals;

namespace {

// Said when an event that should come did not come within kPatience.
std::string exposition(const broker::BrokerSnapshot& snapshot) {
    return prometheus::TextSerializer().Serialize(broker::to_metric_families(snapshot));
}

bool has_line(const std::string& text, const std::string& line) {
    return text.find("\n" + line + "\n") != std::string::npos;
}

// A TCP connection to the metrics port, closed when it goes out of scope.
struct HttpConnection {
    explicit HttpConnection(int port) : fd(::socket(AF_INET, SOCK_STREAM, 0)) {
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<std::uint16_t>(port));
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    }
    ~HttpConnection() { ::close(fd); }
    HttpConnection(const HttpConnection&) = delete;
    HttpConnection& operator=(const HttpConnection&) = delete;

    bool send(std::string_view bytes) const {
        return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
               static_cast<ssize_t>(bytes.size());
    }

    // Reads what comes until the server closes the connection or `timeout` passes; each time
    // nothing came for `drip_every`, sends `drip` (when not empty). True when it closed.
    bool closed_within(std::chrono::milliseconds timeout, std::string_view drip = {},
                       std::chrono::milliseconds drip_every = 1000ms) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd item{fd, POLLIN, 0};
            if (::poll(&item, 1, static_cast<int>(drip_every.count())) > 0) {
                char buffer[4096];
                const ssize_t n = ::read(fd, buffer, sizeof buffer);
                if (n <= 0) return true;  // closed, or reset
                received.append(buffer, static_cast<std::size_t>(n));
            } else if (!drip.empty() && !send(drip)) {
                return true;
            }
        }
        return false;
    }

    int fd;
    bool connected = false;
    std::string received;
};

// GET /metrics over plain HTTP/1.0; the whole response, or "" when nothing answers in time.
std::string http_get_metrics(int port, std::chrono::milliseconds timeout = 2000ms) {
    HttpConnection connection(port);
    if (!connection.connected ||
        !connection.send("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
        return "";
    return connection.closed_within(timeout) ? connection.received : "";
}

struct TempFile {
    explicit TempFile(const std::string& text) {
        char name[] = "/tmp/zbroker-test-conf-XXXXXX";
        const int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        ::close(fd);
        path = name;
        std::ofstream(path) << text;
    }
    ~TempFile() { std::remove(path.c_str()); }
    std::string path;
};

}  // namespace

TEST_CASE("metric families carry the core's counters, by status, kind, reason and service") {
    CoreHarness h;
    h.ready("w1", "echo");
    h.zbc_request("c1", "echo", "1", "a");
    const Message request = h.take_one();
    h.reply(request, "a");
    h.zbc_request("c1", "nobody", "2", "b", deadline_header(10));
    h.advance(20ms);
    h.receive({"c2", kEmpty, "BOGUS"});

    const std::string text = "\n" + exposition(h.core.snapshot(h.clock));
    CHECK(has_line(text, "zbroker_workers 1"));
    CHECK(has_line(text, "zbroker_peers 3"));  // w1, c1 and c2, all heard from just now
    CHECK(has_line(text, "zbroker_fairness_keys 0"));
    CHECK(has_line(text, "zbroker_requests_total 2"));
    CHECK(has_line(text, "zbroker_dispatches_total 1"));
    CHECK(has_line(text, "zbroker_answers_total{status=\"200\"} 1"));
    CHECK(has_line(text, "zbroker_answers_total{status=\"503\"} 1"));
    CHECK(has_line(text, "zbroker_answers_total{status=\"429\"} 0"));  // zeros are series too
    CHECK(has_line(text, "zbroker_malformed_total{kind=\"unknown_protocol\"} 1"));
    CHECK(has_line(text, "zbroker_drops_total{reason=\"late_reply\"} 0"));
    CHECK(has_line(text, "zbroker_service_workers{service=\"echo\"} 1"));
    CHECK(has_line(text, "zbroker_service_served_total{service=\"echo\"} 1"));
    CHECK(has_line(text, "zbroker_service_errors_total{service=\"nobody\",status=\"503\"} 1"));
    CHECK(text.find("zbroker_service_errors_total{service=\"echo\",status=\"200\"}") ==
          std::string::npos);  // a success is not an error
    CHECK(text.find("# TYPE zbroker_requests_total counter") != std::string::npos);
    CHECK(text.find("# TYPE zbroker_workers gauge") != std::string::npos);
}

TEST_CASE("orphaned requests have their own gauge, apart from in-flight ones, and releases count") {
    broker::BrokerConfig config;
    config.orphan_after = 1000ms;
    CoreHarness h(config);
    h.ready("w1", "slow", "2");
    h.zbc_request("c1", "slow", "1", "hangs", deadline_header(100));
    h.zbc_request("c1", "slow", "2", "runs");
    h.advance(100ms);  // "1" answered 504, still held by w1
    std::string text = "\n" + exposition(h.core.snapshot(h.clock));
    CHECK(has_line(text, "zbroker_service_in_flight{service=\"slow\"} 1"));
    CHECK(has_line(text, "zbroker_service_orphaned{service=\"slow\"} 1"));
    CHECK(has_line(text, "zbroker_orphans_released_total 0"));
    CHECK(text.find("# TYPE zbroker_service_orphaned gauge") != std::string::npos);

    h.advance(1000ms);
    text = "\n" + exposition(h.core.snapshot(h.clock));
    CHECK(has_line(text, "zbroker_service_in_flight{service=\"slow\"} 1"));
    CHECK(has_line(text, "zbroker_service_orphaned{service=\"slow\"} 0"));
    CHECK(has_line(text, "zbroker_orphans_released_total 1"));
}

TEST_CASE("zbroker --metrics serves the counters over HTTP, refreshed while it runs") {
    auto [broker, endpoint] = start_broker(bin_dir(), {"--metrics", "127.0.0.1:0"});
    const auto url = broker.wait_for("metrics on http://127.0.0.1:", kPatience);
    INFO(kTooSlow);
    REQUIRE(url.has_value());
    const int port = std::stoi(*url);

    // Not Client: it listens only a little past the deadline, and a loaded machine may deliver
    // the 503 later than that.
    AsyncClient client(endpoint, 1);
    REQUIRE(client.send("nobody", "x", 100ms));
    const auto done = client.receive(kPatience);
    REQUIRE(done);
    REQUIRE(done->status == protocol::Status::unavailable);
    const std::string line = "zbroker_answers_total{status=\"503\"} 1";
    std::string response;
    CHECK(eventually([&] {
        response = http_get_metrics(port);
        return response.find(line) != std::string::npos;
    }));
    CHECK(response.starts_with("HTTP/1.1 200"));
    INFO(response);
    CHECK(response.find("zbroker_requests_total 1") != std::string::npos);
}

TEST_CASE("silent or slow HTTP clients neither hold up a scrape nor stay connected") {
    auto [broker, endpoint] = start_broker(bin_dir(), {"--metrics", "127.0.0.1:0"});
    const auto url = broker.wait_for("metrics on http://127.0.0.1:", kPatience);
    INFO(kTooSlow);
    REQUIRE(url.has_value());
    const int port = std::stoi(*url);

    HttpConnection silent(port);   // connects and never says a word
    HttpConnection partial(port);  // starts a request and never ends it
    REQUIRE(silent.connected);
    REQUIRE(partial.connected);
    REQUIRE(partial.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
    // It was: one HTTP thread, held 30 s by each of them in turn. Ten seconds is far more than
    // a scrape takes on a loaded machine, and far less than Prometheus' default timeout.
    CHECK(http_get_metrics(port, 10s).starts_with("HTTP/1.1 200"));

    // Both are cut off after a few seconds, even the one that keeps sending a byte a second.
    CHECK(partial.closed_within(15s, "X"));
    CHECK(silent.closed_within(15s));
}

TEST_CASE("zbroker --metrics on a port in use fails at start with a clear message") {
    auto [first, endpoint] = start_broker(bin_dir(), {"--metrics", "127.0.0.1:0"});
    const auto url = first.wait_for("metrics on http://127.0.0.1:", kPatience);
    INFO(kTooSlow);
    REQUIRE(url.has_value());
    ChildProcess second({bin_dir() + "/zbroker", "--bind", "tcp://127.0.0.1:*", "--metrics",
                         "127.0.0.1:" + std::to_string(std::stoi(*url))});
    CHECK(second.wait(kPatience) == 1);
    CHECK(second.output().find("cannot serve metrics on 127.0.0.1:") != std::string::npos);
}

TEST_CASE("zbroker reads its flags from --config; command-line flags win") {
    TempFile config(
        "# a broker for tests\nqueue-limit = 7\nmax-attempts = 2\n"
        "bind = \"tcp://127.0.0.1:*\"\n");
    SECTION("the file's values are used") {
        ChildProcess broker({bin_dir() + "/zbroker", "--config", config.path});
        const auto line = broker.wait_for("listening on ", kPatience);
        INFO(kTooSlow);
        REQUIRE(line.has_value());
        CHECK(line->find("tcp://127.0.0.1:") == 0);
        CHECK(line->find("max attempts 2, queue limit 7") != std::string::npos);
    }
    SECTION("a flag overrides the file") {
        ChildProcess broker(
            {bin_dir() + "/zbroker", "--config", config.path, "--queue-limit", "9"});
        const auto line = broker.wait_for("listening on ", kPatience);
        INFO(kTooSlow);
        REQUIRE(line.has_value());
        CHECK(line->find("max attempts 2, queue limit 9") != std::string::npos);
    }
}

TEST_CASE("zbroker takes its queue policy and fairness weights from flags or --config") {
    TempFile config(
        "queue-policy = \"fair\"\nfairness-weight = [\"a=3\", \"b=2\"]\n"
        "bind = \"tcp://127.0.0.1:*\"\n");
    ChildProcess broker({bin_dir() + "/zbroker", "--config", config.path});
    const auto line = broker.wait_for("listening on ", kPatience);
    INFO(kTooSlow);
    REQUIRE(line.has_value());
    CHECK(line->find("queue policy fair, 2 fairness weight(s)") != std::string::npos);
}

TEST_CASE("zbroker refuses bad flag values, naming the flag, the value and what it wants") {
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
        {{"--queue-policy", "lifo"}, "not in {fifo,fair,priority}"},
        {{"--fairness-weight", "tenant"}, "expected KEY=WEIGHT"},
        {{"--fairness-weight", "tenant=0"}, "WEIGHT must be an integer from 1 to 1000"},
        {{"--fairness-weight", "tenant=x"}, "WEIGHT must be an integer from 1 to 1000"},
        {{"--fairness-weight", "tenant=5x"}, "--fairness-weight: 'tenant=5x': WEIGHT must be"},
        {{"--fairness-weight", "tenant=+5"}, "--fairness-weight: 'tenant=+5': WEIGHT must be"},
        {{"--fairness-weight", "tenant=3", "--fairness-weight", "tenant=4"},
         "fairness key 'tenant' is given twice"},
        // One listener, named in full: a list, or a port alone, would listen on more than
        // the log says.
        {{"--metrics", "127.0.0.1:0,0.0.0.0:0"}, "--metrics: '127.0.0.1:0,0.0.0.0:0': expected"},
        {{"--metrics", "9464"}, "--metrics: '9464': expected one HOST:PORT"},
        {{"--metrics", "127.0.0.1:9464s"}, "--metrics: '127.0.0.1:9464s': expected"},
        {{"--metrics", "127.0.0.1:70000"}, "--metrics: '127.0.0.1:70000': PORT must be"},
        {{"--metrics", "127.0.0.1: 80"}, "--metrics: '127.0.0.1: 80': expected"},
        // CLI11 alone reads numbers as strtoull(base 0) does: 0250 is 168, 0x10 is 16.
        {{"--heartbeat-ms", "0250"}, "--heartbeat-ms: '0250': expected a whole number"},
        {{"--queue-limit", "0x10"}, "--queue-limit: '0x10': expected a whole number"},
        {{"--queue-limit", "+7"}, "--queue-limit: '+7': expected a whole number"},
    };
    for (const auto& [flags, message] : cases) {
        CAPTURE(message);
        std::vector<std::string> argv{bin_dir() + "/zbroker", "--bind", "tcp://127.0.0.1:*"};
        argv.insert(argv.end(), flags.begin(), flags.end());
        ChildProcess broker(argv);
        const auto code = broker.wait(kPatience);
        INFO(kTooSlow);
        REQUIRE(code.has_value());
        CHECK(*code != 0);
        INFO(broker.output());
        CHECK(broker.output().find(message) != std::string::npos);
    }
}

TEST_CASE("zbroker refuses loose values in a config file, naming the option and the value") {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"fairness-weight = [\"a=5x\"]", "'a=5x': WEIGHT must be"},
        {"metrics = \"127.0.0.1:0,0.0.0.0:0\"", "'127.0.0.1:0,0.0.0.0:0': expected one HOST:PORT"},
        {"queue-limit = \"7x\"", "'7x': expected a whole number"},
        {"heartbeat-ms = 0250", "'0250': expected a whole number"},
    };
    for (const auto& [line, message] : cases) {
        CAPTURE(line);
        TempFile config("bind = \"tcp://127.0.0.1:*\"\n" + line + "\n");
        ChildProcess broker({bin_dir() + "/zbroker", "--config", config.path});
        const auto code = broker.wait(kPatience);
        INFO(kTooSlow);
        REQUIRE(code.has_value());
        CHECK(*code != 0);
        INFO(broker.output());
        CHECK(broker.output().find(message) != std::string::npos);
    }
}

TEST_CASE("zbroker refuses a config file with an unknown key, naming it") {
    TempFile config("queue_limit = 7\n");  // underscores: not a flag name
    ChildProcess broker({bin_dir() + "/zbroker", "--config", config.path});
    const auto code = broker.wait(kPatience);
    INFO(kTooSlow);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    CHECK(broker.output().find("queue_limit") != std::string::npos);
}

TEST_CASE("zworker reads its flags from --config too") {
    auto [broker, endpoint] = start_broker(bin_dir());
    TempFile config("broker = \"" + endpoint +
                    "\"\nservice = [\"echo\", \"hello\"]\nthreads = 1\n");
    ChildProcess worker({bin_dir() + "/zworker", "--config", config.path});
    // The broker holds the request until the worker has read its config and registered.
    Client client(endpoint);
    INFO(kTooSlow);
    CHECK(client.call("hello", "x", {.timeout = kPatience, .retries = 0}).status ==
          protocol::Status::ok);
    CHECK(worker.running());
}

// ---------------------------------------------------------------------------------------------
// Labels that peers choose: what reaches Prometheus stays valid, unique and bounded

namespace {

// True when `text` is UTF-8 that Prometheus accepts and a terminal shows as it is: no invalid
// sequence, and no control character but the newlines between lines.
bool is_clean_utf8(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        const auto byte = static_cast<unsigned char>(text[i]);
        std::size_t length = 0;
        char32_t point = 0;
        if (byte < 0x80) {
            length = 1, point = byte;
        } else if ((byte & 0xE0) == 0xC0) {
            length = 2, point = byte & 0x1F;
        } else if ((byte & 0xF0) == 0xE0) {
            length = 3, point = byte & 0x0F;
        } else if ((byte & 0xF8) == 0xF0) {
            length = 4, point = byte & 0x07;
        } else {
            return false;
        }
        if (i + length > text.size()) return false;
        for (std::size_t k = 1; k < length; ++k) {
            const auto next = static_cast<unsigned char>(text[i + k]);
            if ((next & 0xC0) != 0x80) return false;
            point = (point << 6) | (next & 0x3F);
        }
        constexpr char32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
        if (point < kSmallest[length] || point > 0x10FFFF) return false;  // overlong, too big
        if (point >= 0xD800 && point <= 0xDFFF) return false;             // a surrogate
        if ((point < 0x20 && point != '\n') || (point >= 0x7F && point <= 0x9F)) return false;
        i += length;
    }
    return true;
}

std::vector<std::string> lines_starting(const std::string& text, const std::string& prefix) {
    std::vector<std::string> found;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with(prefix)) found.push_back(line);
    }
    return found;
}

// The label set of a sample line: `name{...}` without its value.
std::string series_of(const std::string& line) {
    return line.substr(0, line.rfind('}') + 1);
}

broker::ServiceInfo service_named(std::string name, std::size_t waiting = 0) {
    broker::ServiceInfo service;
    service.name = std::move(name);
    service.waiting = waiting;
    return service;
}

}  // namespace

TEST_CASE("a service name of invalid UTF-8 and control characters reaches Prometheus escaped") {
    broker::BrokerSnapshot snapshot;
    // A name a hostile worker may choose: a stray byte, an overlong '/', a surrogate, and a
    // terminal escape that sets the window title and forges a line.
    snapshot.services.push_back(
        service_named("bad\xff\xc0\xaf\xed\xa0\x80-\x1b]0;owned\x07\n# forged\r\x85"
                      "end",
                      3));
    snapshot.services.push_back(service_named("caf\xc3\xa9 \xe2\x9c\x93", 1));  // valid: kept
    const std::string text = exposition(snapshot);
    INFO(text);
    CHECK(is_clean_utf8(text));
    CHECK(lines_starting(text, "# forged").empty());
    CHECK(text.find("zbroker_service_queued{service=\"caf\xc3\xa9 \xe2\x9c\x93\"} 1") !=
          std::string::npos);
    // Bytes that cannot be shown are spelt out, so two such names stay two series.
    CHECK(text.find("zbroker_service_queued{service=\"bad\\\\xff") != std::string::npos);
}

TEST_CASE("two fairness keys alike in their first 32 bytes are two series") {
    broker::BrokerSnapshot snapshot;
    broker::ServiceInfo service = service_named("echo", 7);
    const std::string common(32, 't');
    service.top_keys = {{common + "-tenant-a", 4, 1}, {common + "-tenant-b", 3, 1}};
    service.keys = 2;
    snapshot.services.push_back(service);
    const std::string text = exposition(snapshot);
    INFO(text);
    const auto lines = lines_starting(text, "zbroker_key_queued{");
    REQUIRE(lines.size() == 2);
    CHECK(series_of(lines[0]) != series_of(lines[1]));
}

TEST_CASE("many services give a bounded scrape: the busiest one by one, the rest summed") {
    broker::BrokerSnapshot snapshot;
    constexpr std::size_t kServices = 10'000;
    std::size_t waiting = 0;
    for (std::size_t i = 0; i < kServices; ++i) {
        // Long names, as a client planting services would choose them.
        broker::ServiceInfo service = service_named(std::to_string(i) + std::string(200, 'x'), 1);
        service.served = 1;
        service.top_keys = {{"k" + std::to_string(i), 1, 1}};
        service.keys = 1;
        waiting += service.waiting;
        snapshot.services.push_back(std::move(service));
    }
    snapshot.services[4242].waiting = 500;  // the one an operator must see
    waiting += 499;

    const std::string text = exposition(snapshot);
    const auto lines = lines_starting(text, "zbroker_");
    CHECK(lines.size() < 3'000);
    CHECK(text.size() < 1'000'000);
    CHECK(has_line("\n" + text,
                   "zbroker_service_queued{service=\"4242" + std::string(200, 'x') + "\"} 500"));
    // Every request waiting is still counted once: shown services plus the rest.
    double total = 0;
    for (const std::string& line : lines_starting(text, "zbroker_service_queued{"))
        total += std::stod(line.substr(line.rfind(' ') + 1));
    CHECK(total == static_cast<double>(waiting));
    CHECK(!lines_starting(text, "zbroker_service_queued{others=\"true\"}").empty());
}
