// Conformance to 7/MDP v0.1 and 8/MMI, frame for frame, and to the ZBC01 extension.
#include <catch2/catch.hpp>

#include <map>

#include "core_harness.hpp"
#include "shared/codec.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using broker::Malformed;

TEST_CASE("MDP: a client request reaches the worker as REQUEST with an opaque token") {
    CoreHarness h;
    h.ready("W", "echo");
    h.receive({"CLIENT", kEmpty, "MDPC01", "echo", "part1", "part2"});
    const Message request = h.take_one();
    REQUIRE(request.size() == 8);
    REQUIRE(request[0] == "W");
    REQUIRE(request[1] == "");
    REQUIRE(request[2] == "MDPW01");
    REQUIRE(request[3] == kRequest);
    REQUIRE(request[4] != "CLIENT");  // the client's routing id never reaches a worker
    REQUIRE(request[4].size() == broker::kTokenSize);
    REQUIRE(request[5] == "");
    REQUIRE(request[6] == "part1");
    REQUIRE(request[7] == "part2");
}

TEST_CASE("MDP: a worker REPLY reaches the client as MDPC01 with every body frame") {
    CoreHarness h;
    h.ready("W", "echo");
    h.mdp_request("CLIENT", "echo", "x");
    const Message request = h.take_one();
    h.receive({"W", kEmpty, "MDPW01", kReply, request[4], kEmpty, "a", "b"});
    REQUIRE(h.take_one() == Message{"CLIENT", "", "MDPC01", "echo", "a", "b"});
}

TEST_CASE("MDP: a worker that sends HEARTBEAT or REPLY before READY is told DISCONNECT") {
    CoreHarness h;
    h.receive({"STRANGER", kEmpty, "MDPW01", kHeartbeat});
    REQUIRE(h.take_one() == Message{"STRANGER", "", "MDPW01", kDisconnect});
    REQUIRE(h.core.counters()[Malformed::not_ready] == 1);
}

TEST_CASE("MDP: DISCONNECT before READY is allowed and ignored, never answered") {
    CoreHarness h;
    h.receive({"STRANGER", kEmpty, "MDPW01", kDisconnect});
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters().malformed_total() == 0);
}

TEST_CASE("MDP: READY twice is a protocol error that disconnects the worker") {
    CoreHarness h;
    h.ready("W", "echo");
    h.ready("W", "echo");
    REQUIRE(h.take_one() == Message{"W", "", "MDPW01", kDisconnect});
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters()[Malformed::duplicate_ready] == 1);
}

TEST_CASE("MDP: a worker may not send REQUEST") {
    CoreHarness h;
    h.ready("W", "echo");
    h.receive({"W", kEmpty, "MDPW01", kRequest, "x", kEmpty, "y"});
    REQUIRE(h.take_one() == Message{"W", "", "MDPW01", kDisconnect});
    REQUIRE(h.core.worker_count() == 0);
}

TEST_CASE("MDP: DISCONNECT from a worker removes it without a reply") {
    CoreHarness h;
    h.ready("W", "echo");
    h.receive({"W", kEmpty, "MDPW01", kDisconnect});
    REQUIRE(h.take().empty());
    REQUIRE(h.core.worker_count() == 0);
}

TEST_CASE("MMI: mmi.service answers 200 for a service with workers, else 404") {
    CoreHarness h;
    h.ready("W", "echo");
    h.receive({"C", kEmpty, "MDPC01", "mmi.service", "echo"});
    REQUIRE(h.take_one() == Message{"C", "", "MDPC01", "mmi.service", "200"});
    h.receive({"C", kEmpty, "MDPC01", "mmi.service", "nope"});
    REQUIRE(h.take_one() == Message{"C", "", "MDPC01", "mmi.service", "404"});
    h.receive({"C", kEmpty, "MDPC01", "mmi.service"});
    REQUIRE(h.take_one() == Message{"C", "", "MDPC01", "mmi.service", "404"});
    REQUIRE_FALSE(h.core.service_info("nope"));  // asking does not create a service
}

TEST_CASE("MMI: a service whose queue is waiting for workers is not available") {
    CoreHarness h;
    h.mdp_request("C", "later", "x");
    h.receive({"C", kEmpty, "MDPC01", "mmi.service", "later"});
    REQUIRE(h.take_one().back() == "404");
}

TEST_CASE("MMI: any other mmi.* service answers 501") {
    CoreHarness h;
    h.receive({"C", kEmpty, "MDPC01", "mmi.whatever", "x"});
    REQUIRE(h.take_one() == Message{"C", "", "MDPC01", "mmi.whatever", "501"});
}

TEST_CASE("MMI: a worker may not register an mmi.* service") {
    CoreHarness h;
    h.ready("W", "mmi.service");
    REQUIRE(h.take_one() == Message{"W", "", "MDPW01", kDisconnect});
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters()[Malformed::mmi_registration] == 1);
}

TEST_CASE("MMI: mmi.services lists services as a msgpack map") {
    CoreHarness h;
    h.ready("W", "echo");
    h.mdp_request("C", "echo", "x");
    h.mdp_request("C", "echo", "y");
    h.reply(h.take().at(0), "r");
    h.take();
    h.receive({"C", kEmpty, "ZBC01", "mmi.services", "id", "\x80"});
    const Message answer = h.take_one();
    REQUIRE(answer[5] == "200");
    const msgpack::object_handle handle = unpack_object(answer[6]);
    const auto services = handle.get().as<std::map<std::string, msgpack::object>>();
    REQUIRE(services.size() == 1);
    const auto echo = services.at("echo").as<std::map<std::string, msgpack::object>>();
    REQUIRE(echo.at("workers").as<int>() == 1);
    REQUIRE(echo.at("in_flight").as<int>() == 1);  // "y" went to W when "x" was answered
    REQUIRE(echo.at("queued").as<int>() == 0);
    REQUIRE(echo.at("served").as<int>() == 1);
}

TEST_CASE("MMI: mmi.stats reports totals, answers by status, malformed and drops by kind") {
    CoreHarness h;
    h.ready("W", "echo");
    h.zbc_request("C", "echo", "1", "x");
    h.reply(h.take_one(), "r");
    h.take();
    h.receive({"C", kEmpty, "XXX"});  // malformed: unknown protocol
    h.receive({"C", kEmpty, "ZBC01", "mmi.stats", "s", ""});
    const Message answer = h.take_one();
    REQUIRE(answer[5] == "200");
    const msgpack::object_handle handle = unpack_object(answer[6]);
    const auto stats = handle.get().as<std::map<std::string, msgpack::object>>();
    for (const char* key : {"uptime_s", "workers", "requests_held", "totals", "answers",
                            "malformed", "drops", "services"}) {
        REQUIRE(stats.count(key) == 1);
    }
    REQUIRE(stats.at("workers").as<int>() == 1);
    const auto answers = stats.at("answers").as<std::map<std::string, int>>();
    REQUIRE(answers.at("200") == 1);
    const auto malformed = stats.at("malformed").as<std::map<std::string, int>>();
    REQUIRE(malformed.at("unknown_protocol") == 1);
    REQUIRE(malformed.size() == static_cast<std::size_t>(broker::Malformed::kCount));
    const auto totals = stats.at("totals").as<std::map<std::string, int>>();
    REQUIRE(totals.at("dispatches") == 1);
}

TEST_CASE("MMI: without CURVE, mmi.drain is refused unless the broker allows it") {
    CoreHarness refusing;
    refusing.receive({"C", kEmpty, "MDPC01", "mmi.drain"});
    REQUIRE(refusing.take_one() == Message{"C", "", "MDPC01", "mmi.drain", "403"});
    REQUIRE_FALSE(refusing.core.draining());
}

TEST_CASE("MMI: mmi.drain starts a drain and answers 200") {
    broker::BrokerConfig config;
    config.drain_without_curve = true;
    CoreHarness h(config);
    h.receive({"C", kEmpty, "MDPC01", "mmi.drain"});
    REQUIRE(h.take_one() == Message{"C", "", "MDPC01", "mmi.drain", "200"});
    REQUIRE(h.core.draining());
}

TEST_CASE("ZBC01: the reply carries the request id and a status, and MMI works through it") {
    CoreHarness h;
    h.ready("W", "echo");
    h.receive({"C", kEmpty, "ZBC01", "mmi.service", "rid", "", "echo"});
    REQUIRE(h.take_one() == Message{"C", "", "ZBC01", "mmi.service", "rid", "200", "200"});
}

TEST_CASE("ZBC01: malformed requests that can be answered get 400") {
    CoreHarness h;
    SECTION("request id over 255 bytes") {
        h.receive({"C", kEmpty, "ZBC01", "echo", std::string(256, 'i'), "\x80", "x"});
        REQUIRE(h.core.counters()[Malformed::bad_request_id] == 1);
    }
    SECTION("no headers frame") {
        h.receive({"C", kEmpty, "ZBC01", "echo", "id"});
        REQUIRE(h.core.counters()[Malformed::too_short] == 1);
    }
    SECTION("headers not a map") {
        h.receive({"C", kEmpty, "ZBC01", "echo", "id", "\x91\x01", "x"});
        REQUIRE(h.core.counters()[Malformed::bad_headers] == 1);
    }
    SECTION("deadline not an integer") {
        h.receive({"C", kEmpty, "ZBC01", "echo", "id",
                   "\x81\xab"
                   "deadline_ms\xa1x",
                   "x"});
        REQUIRE(h.core.counters()[Malformed::bad_headers] == 1);
    }
    SECTION("empty service name") {
        h.receive({"C", kEmpty, "ZBC01", "", "id", "\x80", "x"});
        REQUIRE(h.core.counters()[Malformed::empty_service] == 1);
    }
    const Message answer = h.take_one();
    REQUIRE(answer[0] == "C");
    REQUIRE(answer[2] == "ZBC01");
    REQUIRE(answer[5] == "400");
}

TEST_CASE("malformed messages are counted by kind and never answered or fatal") {
    struct Case {
        Message message;
        Malformed kind;
    };
    const std::vector<Case> cases{
        {{"P"}, Malformed::too_short},
        {{"P", kEmpty}, Malformed::too_short},
        {{"P", "x", "MDPC01", "echo"}, Malformed::no_delimiter},
        {{"P", "MDPC01", "echo", "body"}, Malformed::no_delimiter},
        {{"P", kEmpty, "MDPC02", "echo"}, Malformed::unknown_protocol},
        {{"P", kEmpty, ""}, Malformed::unknown_protocol},
        {{"P", kEmpty, "MDPC01"}, Malformed::too_short},
        {{"P", kEmpty, "ZBC01", "echo"}, Malformed::too_short},
        {{"P", kEmpty, "MDPW01"}, Malformed::bad_command},
        {{"P", kEmpty, "MDPW01", ""}, Malformed::bad_command},
        {{"P", kEmpty, "MDPW01", "\x01\x01"}, Malformed::bad_command},
        {{"P", kEmpty, "MDPW01", kReady}, Malformed::bad_ready},
        {{"P", kEmpty, "MDPW01", kReady, ""}, Malformed::bad_ready},
        {{"P", kEmpty, "MDPW01", kReady, "echo", "0"}, Malformed::bad_ready},
        {{"P", kEmpty, "MDPW01", kReady, "echo", "-1"}, Malformed::bad_ready},
        {{"P", kEmpty, "MDPW01", kReady, "echo", "12x"}, Malformed::bad_ready},
        {{"P", kEmpty, "MDPW01", kReady, "echo", "99999999999"}, Malformed::bad_ready},
        {{"P", kEmpty, "MDPW01", kReply, "tok"}, Malformed::not_ready},
        {{"P", kEmpty, "MDPW01", std::string(1, '\x06')}, Malformed::not_ready},
    };
    for (const Case& c : cases) {
        CAPTURE(c.message);
        CoreHarness h;
        h.receive(c.message);
        REQUIRE(h.core.counters()[c.kind] == 1);
        for (const Message& sent : h.take()) {
            REQUIRE(sent.at(3) == kDisconnect);  // at most a DISCONNECT to a would-be worker
        }
        REQUIRE(h.core.live_requests() == 0);
    }
}

TEST_CASE("a registered worker that breaks the protocol is disconnected and its work re-queued") {
    const std::vector<Message> breaches{
        {"W", kEmpty, "MDPW01", kReply},                      // no token
        {"W", kEmpty, "MDPW01", kReply, "tok", "not-empty"},  // no delimiter
        {"W", kEmpty, "MDPW01", std::string(1, '\x09')},      // unknown command
        {"W", kEmpty, "MDPW01", "\x03\x03"},                  // command of two bytes
    };
    for (const Message& breach : breaches) {
        CAPTURE(breach);
        CoreHarness h;
        h.ready("W", "echo");
        h.mdp_request("C", "echo", "x");
        h.take();
        h.receive(breach);
        REQUIRE(h.take_one() == Message{"W", "", "MDPW01", kDisconnect});
        REQUIRE(h.core.worker_count() == 0);
        REQUIRE(h.core.service_info("echo")->waiting == 1);
    }
}
