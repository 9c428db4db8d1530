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

void RequestTable::keep_body(RequestRecord& record, Frames& message, const wire::Body& body,
                             std::size_t bytes) {
    record.body_bytes = static_cast<std::uint32_t>(bytes);
    bytes_held_ += bytes;
    wire::move_body(message, body, record.body);
}

void RequestTable::release(RequestRecord& record) {
    bytes_held_ -= record.body_bytes;
    record.body_bytes = 0;
    record.state = RequestState::free;
    ++record.generation;
    record.attempts = 0;
    record.suspect = false;
    record.priority = 0;
    record.client = nullptr;
    record.keys.clear();
    record.fairness_key_size = 0;
    record.tenant_size = 0;
    record.request_id.clear();
    record.body.clear();  // keeps its capacity for the next request in this slot
    record.service = nullptr;
    record.worker = nullptr;
    record.deadline = TimePoint::max();
    free_slots_.push_back(record.slot);
}

RequestRecord* RequestTable::find(Token token) noexcept {
    if (token.slot >= size_) return nullptr;
    RequestRecord& record = at(token.slot);
    if (record.generation != token.generation || record.state == RequestState::free) {
        return nullptr;
    }
    return &record;
}

RequestRecord* RequestTable::find(std::string_view token_bytes) noexcept {
    if (token_bytes.size() != kTokenSize) return nullptr;
    Token token;
    std::memcpy(&token.slot, token_bytes.data(), sizeof token.slot);
    std::memcpy(&token.generation, token_bytes.data() + sizeof token.slot, sizeof token.generation);
    return find(token);
}

std::array<char, kTokenSize> RequestTable::token_bytes(Token token) noexcept {
    std::array<char, kTokenSize> bytes;
    std::memcpy(bytes.data(), &token.slot, sizeof token.slot);
    std::memcpy(bytes.data() + sizeof token.slot, &token.generation, sizeof token.generation);
    return bytes;
}

}  // namespace zbroker::broker
