// Record pool with a free list; generations make reused slots unrecognisable to old tokens.
#include "request_table.hpp"

#include <cstring>

namespace zbroker::broker {

RequestRecord& RequestTable::allocate() {
    if (free_slots_.empty()) {
        RequestRecord& record = records_.emplace_back();
        record.slot = static_cast<std::uint32_t>(records_.size() - 1);
        return record;
    }
    RequestRecord& record = records_[free_slots_.back()];
    free_slots_.pop_back();
    return record;
}

void RequestTable::release(RequestRecord& record) {
    record.state = RequestState::free;
    ++record.generation;
    record.attempts = 0;
    record.client.rebuild();
    record.request_id.rebuild();
    record.body.clear();  // keeps its capacity for the next request in this slot
    record.service = nullptr;
    record.worker = nullptr;
    record.deadline = TimePoint::max();
    free_slots_.push_back(record.slot);
}

RequestRecord* RequestTable::find(Token token) noexcept {
    const auto slot = static_cast<std::uint32_t>(token);
    const auto generation = static_cast<std::uint32_t>(token >> 32);
    if (slot >= records_.size()) return nullptr;
    RequestRecord& record = records_[slot];
    if (record.generation != generation || record.state == RequestState::free) return nullptr;
    return &record;
}

RequestRecord* RequestTable::find(std::string_view token_bytes) noexcept {
    if (token_bytes.size() != kTokenSize) return nullptr;
    Token token = 0;
    std::memcpy(&token, token_bytes.data(), kTokenSize);
    return find(token);
}

zmq::message_t RequestTable::token_frame(Token token) {
    return {&token, kTokenSize};
}

}  // namespace zbroker::broker
