// Peers by routing id, their outgoing messages in the order they got them, and one place that
// frees them.
#include "broker/peer_table.hpp"

#include <algorithm>
#include <utility>

#include "broker/worker_registry.hpp"

namespace zbroker::broker {

void Outgoing::seal(std::string_view identity) {
    if (writer.empty()) return;
    add_frame(frames, identity);
    writer.take(frames);
    end_message(std::exchange(answers, 0));
}

void Outgoing::clear() noexcept {
    if (!writer.empty()) writer.clear();  // seal() left it cleared, the common case
    answers = 0;
    jobs.clear();  // keeps its capacity for the next batch
    frames.clear();
    messages.clear();
}

Peer::Peer() = default;
Peer::~Peer() = default;

PeerTable::~PeerTable() = default;

Peer* PeerTable::find(std::string_view identity) noexcept {
    const auto it = by_identity_.find(identity);
    return it == by_identity_.end() ? nullptr : it->second.get();
}

Peer& PeerTable::add(std::string_view identity, std::string_view key) {
    auto peer = std::make_unique<Peer>();
    peer->identity = identity;
    peer->key = key;
    peer->active = sweeps_;
    Peer& added = *peer;
    by_identity_.emplace(added.identity, std::move(peer));
    return added;
}

void PeerTable::depart(Peer& peer) {
    peer.gone = true;
    const auto it = by_identity_.find(std::string_view(peer.identity));
    if (it == by_identity_.end() || it->second.get() != &peer) return;  // departed already
    departed_.push_back(std::move(it->second));
    by_identity_.erase(it);
}

Outgoing& PeerTable::to(Peer& peer) {
    peer.active = sweeps_;
    if (!peer.pending) {
        peer.pending = true;
        pending_.push_back(&peer);
    }
    return peer.out;
}

Peer* PeerTable::next_pending() noexcept {
    if (next_pending_ == pending_.size()) {
        pending_.clear();
        next_pending_ = 0;
        return nullptr;
    }
    Peer* peer = pending_[next_pending_++];
    peer->pending = false;
    return peer;
}

void PeerTable::sweep(bool idle) {
    std::erase_if(departed_, [](const std::unique_ptr<Peer>& peer) { return unreferenced(*peer); });
    if (!idle) return;
    std::erase_if(by_identity_, [this](const auto& entry) {
        const Peer& peer = *entry.second;
        return unreferenced(peer) && peer.active < sweeps_;
    });
    ++sweeps_;
}

}  // namespace zbroker::broker
