// The peers the broker deals with, by routing id: each one's CURVE key, the worker it
// registered as, how many requests await answers to it, and what to send it at the next flush.
//
// A routing id names a connection only while that connection lasts: libzmq hands it to the next
// connection that asks for it. So a Peer is one connection. Once it is found gone (a send to it
// was unroutable, the loop saw its connection close, another key spoke under its routing id) it
// leaves the table's map at once, nothing is ever sent to it again, and a new connection with
// the same routing id is a new Peer. It is freed when nothing refers to it any more.
//
// Peers are freed in sweep() only, which the core calls where no caller holds one: handlers
// record what to send here, flush() sends it, and no handler frees what another holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/request_table.hpp"
#include "broker/string_hash.hpp"
#include "shared/wire.hpp"

namespace zbroker::broker {

struct Worker;

// What the broker has for one peer since the last flush. For a ZB/1 peer that is one message
// (the answers for one client, the jobs for one worker, travel together in one frame) until it
// reaches wire::kBatchBytes, then another. 7/MDP and ZBC01 messages cannot be merged, but they
// leave one peer's after another instead of interleaved in the order they were made: libzmq
// then writes each peer's run in one system call (interleaved, the broker made 2.5x the sendto
// calls of a relay draining one socket at a time; now 0.3-0.4x).
// Never waits for more input: a batch ends when the broker has read what was waiting, so
// batching costs no latency.
struct Outgoing {
    wire::Writer writer;      // the ZB/1 message being written
    std::size_t answers = 0;  // its ANSWER records: each a drop if it cannot be sent
    // JOB records and REQUEST messages, in order, of the finished messages then of `writer`:
    // undone if they cannot be sent.
    std::vector<Token> jobs;

    // Finished messages: their frames back to back, each message's starting with the routing
    // id; where each ends, with the jobs and answers it carries.
    struct Message {
        std::size_t end = 0;
        std::size_t jobs_end = 0;
        std::size_t answers = 0;
    };
    Frames frames;
    std::vector<Message> messages;

    bool empty() const noexcept { return writer.empty() && messages.empty(); }
    // Ends the message whose frames were pushed since the last one, with `answers` answers and
    // the jobs pushed since.
    void end_message(std::size_t message_answers) {
        messages.push_back({frames.size(), jobs.size(), message_answers});
    }
    // Finishes the ZB/1 message, if one is being written, as the next message to `identity`.
    void seal(std::string_view identity);
    void clear() noexcept;
};

struct Peer {
    std::string identity;            // routing id
    std::string key;                 // CURVE public key (Z85); empty without CURVE
    std::unique_ptr<Worker> worker;  // the worker it registered as, if it did
    bool was_worker = false;         // it registered as one on this connection, once or still
    // MMI listing bytes sent to it since listing_since (a one-second window): what it may ask.
    std::size_t listing_bytes = 0;
    TimePoint listing_since{};
    std::uint32_t awaited = 0;  // live requests whose answers go to it
    bool gone = false;          // found gone: nothing is sent to it any more
    bool pending = false;       // has something to send at the next flush
    std::uint64_t active = 0;   // the table's idle sweep count when it last sent or got anything
    Outgoing out;

    Peer();
    ~Peer();
    Peer(const Peer&) = delete;
    Peer& operator=(const Peer&) = delete;
};

class PeerTable {
  public:
    PeerTable() = default;
    PeerTable(const PeerTable&) = delete;
    PeerTable& operator=(const PeerTable&) = delete;
    ~PeerTable();

    // The peer of this routing id, nullptr when none is known.
    Peer* find(std::string_view identity) noexcept;
    // A new peer; the routing id must be free.
    Peer& add(std::string_view identity, std::string_view key);
    // The peer was heard from.
    void heard(Peer& peer) noexcept { peer.active = sweeps_; }
    // Found gone: out of the map, so the next connection with its routing id is a new peer. It
    // must have no worker any more; what it has pending is the caller's to undo.
    void depart(Peer& peer);

    // The peer's outgoing messages, to which the caller adds: it is flushed next.
    Outgoing& to(Peer& peer);
    // The next peer with something to send, in the order they got it, or nullptr.
    Peer* next_pending() noexcept;

    // Frees the departed peers nothing refers to. With `idle` also the peers with no worker
    // and no awaited answer that neither sent nor got anything since the last idle sweep:
    // peers come and go, and a broker must not keep something for every one that ever came.
    void sweep(bool idle);

    std::size_t size() const noexcept { return by_identity_.size(); }
    std::size_t departed() const noexcept { return departed_.size(); }

  private:
    static bool unreferenced(const Peer& peer) noexcept {
        return !peer.worker && peer.awaited == 0 && !peer.pending;
    }

    std::unordered_map<std::string, std::unique_ptr<Peer>, StringHash, std::equal_to<>>
        by_identity_;
    std::vector<std::unique_ptr<Peer>> departed_;  // gone, but still referred to
    std::vector<Peer*> pending_;
    std::size_t next_pending_ = 0;
    std::uint64_t sweeps_ = 1;  // idle sweeps so far, plus one
};

}  // namespace zbroker::broker
