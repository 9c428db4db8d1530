// RequestTable: pooled records named by tokens that go stale when a slot is reused.
#include <catch2/catch.hpp>

#include "broker/request_table.hpp"

using namespace zbroker::broker;

TEST_CASE("a token names its record until the record is released") {
    RequestTable table;
    RequestRecord& record = table.allocate();
    record.state = RequestState::queued;
    const Token token = record.token();
    REQUIRE(table.find(token) == &record);
    table.release(record);
    REQUIRE(table.find(token) == nullptr);
    REQUIRE(table.live() == 0);
}

TEST_CASE("a token goes through its wire bytes and back unchanged") {
    RequestTable table;
    table.allocate().state = RequestState::queued;
    RequestRecord& record = table.allocate();
    record.state = RequestState::dispatched;
    const auto bytes = RequestTable::token_bytes(record.token());
    REQUIRE(bytes.size() == kTokenSize);
    REQUIRE(table.find(std::string_view(bytes.data(), bytes.size())) == &record);
    REQUIRE(table.find(std::string_view(bytes.data(), bytes.size() - 1)) == nullptr);
}

TEST_CASE("a stale token never names a later request in its slot, even 2^32 reuses later") {
    RequestTable table;
    RequestRecord& record = table.allocate();
    record.state = RequestState::queued;
    const Token stale = record.token();
    table.release(record);
    // The slot is reused 2^32 times (at 200k req/s through one slot, about six hours): a
    // 32-bit generation would be back where the stale token says.
    RequestRecord& reused = table.allocate();
    REQUIRE(&reused == &record);
    reused.generation += std::uint64_t{1} << 32;
    reused.generation -= 1;
    reused.state = RequestState::queued;
    REQUIRE(reused.token() != stale);
    REQUIRE(table.find(stale) == nullptr);
}
