// Protocol constants, status codes and ZBC01 request headers.
#include <catch2/catch.hpp>

#include "shared/frames.hpp"
#include "shared/protocol.hpp"
#include "shared/request_headers.hpp"

using namespace zbroker;
using protocol::Status;

TEST_CASE("every status code round-trips through its three ASCII digits") {
    for (Status s : {Status::ok, Status::bad_request, Status::too_large, Status::queue_full,
                     Status::retries_exhausted, Status::unavailable, Status::deadline_exceeded}) {
        REQUIRE(protocol::parse_status(protocol::status_text(s)) == s);
    }
    REQUIRE_FALSE(protocol::parse_status("201"));
    REQUIRE_FALSE(protocol::parse_status(""));
}

TEST_CASE("request headers carry a relative deadline and ignore unknown keys") {
    RequestHeaders headers;
    headers.deadline = std::chrono::milliseconds(1500);
    const std::string bytes = encode_request_headers(headers);
    std::string error;
    auto parsed = parse_request_headers(bytes, &error);
    REQUIRE(parsed);
    REQUIRE(parsed->deadline == std::chrono::milliseconds(1500));

    // {"trace": [1, {"deadline_ms": "x"}], "deadline_ms": 7}: nested keys do not count.
    const std::string nested =
        "\x82\xa5trace\x92\x01\x81\xab"
        "deadline_ms\xa1x\xab"
        "deadline_ms\x07";
    parsed = parse_request_headers(nested, &error);
    REQUIRE(parsed);
    REQUIRE(parsed->deadline == std::chrono::milliseconds(7));
}

TEST_CASE("empty headers frame and empty map mean no options") {
    std::string error;
    REQUIRE(parse_request_headers("", &error)->deadline == std::nullopt);
    REQUIRE(parse_request_headers("\x80", &error)->deadline == std::nullopt);
}

TEST_CASE("malformed headers are refused with a reason") {
    std::string error;
    SECTION("not a map") {
        REQUIRE_FALSE(parse_request_headers("\x93\x01\x02\x03", &error));
    }
    SECTION("truncated map") {
        REQUIRE_FALSE(
            parse_request_headers("\x81\xab"
                                  "deadline",
                                  &error));
    }
    SECTION("trailing bytes") {
        REQUIRE_FALSE(parse_request_headers("\x80\x80", &error));
    }
    SECTION("negative deadline") {
        REQUIRE_FALSE(
            parse_request_headers("\x81\xab"
                                  "deadline_ms\xff",
                                  &error));
        REQUIRE_THAT(error, Catch::Contains("deadline_ms"));
    }
    SECTION("string deadline") {
        REQUIRE_FALSE(
            parse_request_headers("\x81\xab"
                                  "deadline_ms\xa1"
                                  "5",
                                  &error));
    }
    SECTION("deadline in an array") {  // {"deadline_ms": [5]}
        REQUIRE_FALSE(
            parse_request_headers("\x81\xab"
                                  "deadline_ms\x91\x05",
                                  &error));
        REQUIRE_THAT(error, Catch::Contains("deadline_ms"));
    }
    SECTION("deadline in a map") {  // {"deadline_ms": {"a": 1}}
        REQUIRE_FALSE(
            parse_request_headers("\x81\xab"
                                  "deadline_ms\x81\xa1"
                                  "a\x01",
                                  &error));
        REQUIRE_THAT(error, Catch::Contains("deadline_ms"));
    }
    SECTION("garbage byte") {
        REQUIRE_FALSE(parse_request_headers("\xc1", &error));
    }
    SECTION("oversized") {
        REQUIRE_FALSE(parse_request_headers(std::string(5000, '\x80'), &error));
    }
    REQUIRE_FALSE(error.empty());
}

TEST_CASE("describe renders text frames as text and binary frames as hex") {
    Frames frames;
    frames.push_back(frame("MDPC01"));
    frames.push_back(frame(protocol::WorkerCommand::reply));
    REQUIRE(describe(frames) == "[\"MDPC01\" 0x03]");
}

TEST_CASE("request headers carry priority and fairness_key, and refuse bad ones") {
    RequestHeaders headers;
    headers.priority = 9;
    headers.fairness_key = "tenant-a";
    std::string error;
    const auto parsed = parse_request_headers(encode_request_headers(headers), &error);
    REQUIRE(parsed);
    REQUIRE(parsed->priority == std::optional<std::uint8_t>(9));
    REQUIRE(parsed->fairness_key == "tenant-a");
    REQUIRE_FALSE(parsed->deadline);

    // {"priority": 10}, {"priority": "1"}, {"fairness_key": ""}, {"fairness_key": 5}
    for (const std::string& bad :
         {std::string("\x81\xa8priority\x0a"), std::string("\x81\xa8priority\xa1") + "1",
          std::string("\x81\xac") + "fairness_key\xa0",
          std::string("\x81\xac") + "fairness_key\x05"}) {
        CAPTURE(bad);
        REQUIRE_FALSE(parse_request_headers(bad, &error));
    }
    REQUIRE_THAT(error, Catch::Contains("fairness_key"));
}

TEST_CASE("request headers carry idempotency_key, and refuse an empty or long one") {
    RequestHeaders headers;
    headers.idempotency_key = "order-1";
    std::string error;
    const auto parsed = parse_request_headers(encode_request_headers(headers), &error);
    REQUIRE(parsed);
    REQUIRE(parsed->idempotency_key == "order-1");
    REQUIRE(parsed->fairness_key.empty());
    headers.idempotency_key = std::string(256, 'k');
    REQUIRE_FALSE(parse_request_headers(encode_request_headers(headers), &error));
    REQUIRE_THAT(error, Catch::Contains("idempotency_key"));
    REQUIRE_FALSE(parse_request_headers(std::string("\x81\xaf") + "idempotency_key\xa0", &error));
}
