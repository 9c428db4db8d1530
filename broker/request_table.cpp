// Record pool with a free list; generations make reused slots unrecognisable to old tokens.
#include "request_table.hpp"

#include <cstring>

namespace zbroker::broker {

RequestRecord& RequestTable::allocate() {
    if (free_slots_.empty()) {
        if ((size_ & (kChunkSize - 1)) == 0) {
            chunks_.push_back(std::make_unique<RequestRecord[]>(kChunkSize));
        }
        RequestRecord& record = at(size_);
        record.slot = size_++;
        return record;
    }
    RequestRecord& record = at(free_slots_.back());
    free_slots_.pop_back();
    return record;
}

void RequestTable::release(RequestRecord& record) {
    record.state = RequestState::free;
    ++record.generation;
    record.attempts = 0;
    record.client.clear();
    record.request_id.clear();
    record.body.clear();  // keeps its capacity for the next request in this slot
    record.service = nullptr;
    record.worker = nullptr;
    record.deadline = TimePoint::max();
    free_slots_.push_back(record.slot);
}

RequestRecord* RequestTable::find(Token token) noexcept {
    const auto slot = static_cast<std::uint32_t>(token);
    const auto generation = static_cast<std::uint32_t>(token >> 32);
    if (slot >= size_) return nullptr;
    RequestRecord& record = at(slot);
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
