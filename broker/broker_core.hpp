// The broker's routing logic, with no sockets: messages and time in, frames to send out.
//
// Implements 7/MDP v0.1 and 8/MMI (rfc.zeromq.org specs 7 and 8), the ZBC01 client extension,
// worker credit, and ZB/1, our native protocol (shared/wire.hpp), for clients and workers alike.
// The poll loop around it is thin, so every policy here (dispatch by credit, requeue, retry cap,
// deadlines, queue cap, heartbeat expiry, drain) is unit-tested with a fake clock and a recording
// outbox.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/counters.hpp"
#include "broker/deadline_queue.hpp"
#include "broker/peer_table.hpp"
#include "broker/request_table.hpp"
#include "broker/service.hpp"
#include "broker/string_hash.hpp"
#include "broker/worker_registry.hpp"
#include "shared/clock.hpp"
#include "shared/frames.hpp"

namespace zbroker::broker {

struct BrokerConfig {
    Millis heartbeat_interval = protocol::kHeartbeatInterval;
    int heartbeat_liveness = protocol::kHeartbeatLiveness;
    int max_attempts = 3;                  // dispatches per request before 500
    std::size_t queue_limit = 100'000;     // waiting requests per service, then 429
    std::size_t max_requests = 1'000'000;  // requests held in all, then 429: bounds memory
    std::size_t max_msg_size = 16u << 20;  // request body bytes, then 413
    std::size_t max_bytes = 1u << 30;      // request body bytes held in all, then 429
    std::size_t max_services = 10'000;     // known service names; idle ones are forgotten
    std::uint32_t max_credit = 10'000;     // a larger READY credit is a protocol error
    Millis drain_timeout{10'000};
    // The deadline of a request that brings none (plain MDP, or ZBC01 without deadline_ms):
    // bounded by default, so a request for a service no worker ever serves is answered 503
    // rather than held for ever. Zero: such a request waits as long as it takes.
    Millis default_deadline = protocol::kDefaultDeadline;
    // How long a worker may hold a request past its deadline (answered 504, not replied to)
    // before the broker stops counting it against that worker's credit: its handler may be
    // hung while its I/O thread still heartbeats. Longer than heartbeat x liveness (7.5 s by
    // default), so a dead worker is removed by expiry first and only a live, stuck one is
    // caught here. Zero: never; the request holds its credit until the reply or the worker's
    // removal.
    Millis orphan_after{10'000};
    bool drain_without_curve = false;  // let anyone call mmi.drain when CURVE is off
    // mmi.services and mmi.stats answer from a snapshot remade no sooner than 20 us per service
    // and fairness key it covers, and at least this often: a small broker's answers are fresh,
    // a large one's at most this old, and a flood of them costs the routing thread a bounded
    // share (a snapshot of 10,000 services takes about 4 ms). Zero: always fresh.
    Millis snapshot_max_age{1000};
    // Bytes of mmi.services and mmi.stats answers one connection may be sent per second (its
    // first answer in a second always goes); past it, 429. A question of 30 bytes can have an
    // answer of 100 kB: this is what makes the asker pay for it.
    std::size_t listing_bytes_per_second = 1u << 20;
    QueueSettings queue;  // the order waiting requests go out, and per-key limits
};

// What a peer may do, as the ZAP authenticator decided from its CURVE key. `anyone` means CURVE
// is off: every peer may do everything, as in plain MDP. A `client` sends requests and may ask
// mmi.service(s); an `admin` also mmi.stats and mmi.drain, and may name any fairness key; a
// `worker` only speaks MDPW01 and ZB/1's worker records.
enum class PeerRole : std::uint8_t { anyone, client, worker, admin };

// The role's name, as the authorized-keys file and the ZAP user id spell it.
constexpr std::string_view role_name(PeerRole role) noexcept {
    switch (role) {
        case PeerRole::client:
            return "client";
        case PeerRole::worker:
            return "worker";
        case PeerRole::admin:
            return "admin";
        case PeerRole::anyone:
            break;
    }
    return "anyone";
}

// The role named `name` (client, worker or admin); nullopt for anything else.
constexpr std::optional<PeerRole> parse_role(std::string_view name) noexcept {
    for (const PeerRole role : {PeerRole::client, PeerRole::worker, PeerRole::admin}) {
        if (name == role_name(role)) return role;
    }
    return std::nullopt;
}

// Where the core's messages go: frames[0] is the peer's routing id. Send never blocks; it may
// move the frames' contents out.
class Outbox {
  public:
    virtual ~Outbox() = default;
    virtual SendResult send(FrameSpan frames) = 0;
};

// Per-service figures, for mmi.service(s), mmi.stats and metrics.
struct ServiceInfo {
    std::string name;
    std::size_t workers = 0;
    std::size_t waiting = 0;
    std::size_t in_flight = 0;  // at its workers and still answerable
    std::size_t orphaned = 0;   // answered 504, still held by a worker (and its credit)
    std::uint64_t served = 0;
    std::array<std::uint64_t, 8> failures{};  // by Counters::answer_index
    std::vector<KeyLoad> top_keys;            // fairness keys with most waiting, kTopKeys at most
    std::size_t keys = 0;                     // fairness keys (tenants) with requests waiting
};
// Per-key figures are bounded, for stats and metrics labels alike: a few keys that hold most
// of a queue are what an operator looks for.
inline constexpr std::size_t kTopKeys = 5;

// What the broker reports about itself, to mmi.stats, mmi.services and the Prometheus
// endpoint alike: a copy, so it can be encoded anywhere and handed to another thread.
struct BrokerSnapshot {
    double uptime_s = 0;
    std::size_t workers = 0;
    std::size_t requests_held = 0;
    std::size_t peers = 0;  // connections the broker keeps something for
    std::size_t keys = 0;   // fairness keys with requests waiting, over all services
    Counters counters;
    std::vector<ServiceInfo> services;  // in name order
};

class BrokerCore {
  public:
    BrokerCore(BrokerConfig config, Outbox& outbox, TimePoint now);
    BrokerCore(const BrokerCore&) = delete;
    BrokerCore& operator=(const BrokerCore&) = delete;
    ~BrokerCore();

    // One message from the ROUTER: frames[0] is the sender's routing id. Frames it keeps are
    // moved out; the caller may reuse the vector. `role` is what the sender may do; `peer_key`
    // its CURVE public key (Z85) when CURVE is on: the identity its worker entry and requests
    // belong to (a routing id proves nothing), and its requests' fairness key, so one client
    // with several connections is one tenant.
    void on_message(Frames& frames, TimePoint now, PeerRole role = PeerRole::anyone,
                    std::string_view peer_key = {});
    // The connection of that routing id closed (the loop saw it): whatever was meant for it is
    // sent nowhere, its worker's requests go back to their queue, and a later connection with
    // the same routing id is a new peer.
    void on_peer_gone(std::string_view identity);
    // Timers: heartbeats, dead workers, request deadlines, drain timeout.
    void on_timer(TimePoint now);
    // Sends what on_message, on_timer and on_peer_gone left, a peer at a time (for a ZB/1 peer,
    // its records in one message). The only place the core sends, and where what it found gone
    // is let go: call it after each read batch and each on_timer.
    void flush();
    // When on_timer next has something to do.
    TimePoint next_timer() const noexcept;

    // Stop taking new requests (503); keep serving what was accepted until drain_timeout.
    void begin_drain(TimePoint now);
    bool draining() const noexcept { return draining_; }
    // Draining and either nothing is left or the drain timeout passed.
    bool drain_complete(TimePoint now) const noexcept;
    // Answers whatever is left 503, tells every worker DISCONNECT.
    void finish_drain();

    const Counters& counters() const noexcept { return counters_; }
    const BrokerConfig& config() const noexcept { return config_; }
    std::size_t worker_count() const noexcept { return workers_.size(); }
    std::size_t live_requests() const noexcept { return table_.live(); }
    // Connections known by routing id, and those gone but still referred to.
    std::size_t peer_count() const noexcept { return peers_.size(); }
    std::size_t departed_peer_count() const noexcept { return peers_.departed(); }
    std::optional<ServiceInfo> service_info(std::string_view name) const;
    BrokerSnapshot snapshot(TimePoint now) const;

  private:
    // A client's request, whatever protocol it came in: views into `message`.
    struct ClientRequest {
        Frames& message;
        ClientProtocol protocol;
        Peer& client;
        std::string_view service;
        std::string_view request_id;  // ZBC01 and ZB/1
        std::optional<Millis> deadline;
        wire::Body body;
        std::uint8_t priority = 0;
        std::string_view fairness_key{};  // as named; empty: its default
        std::string_view idempotency_key{};
    };

    void on_mdp_client(Frames& in, ClientProtocol protocol, TimePoint now, PeerRole role);
    void on_native(Frames& in, TimePoint now, PeerRole role);
    void on_native_worker_record(Frames& in, const wire::Record& record, TimePoint now);
    void stray_disconnect(const Frames& in);
    // Checks, queues and dispatches one request, or answers it at once.
    void on_client_request(ClientRequest& request, TimePoint now, PeerRole role);
    void on_mdp_worker(Frames& in, TimePoint now);
    void register_worker(const Frames& in, std::string_view service_name, std::uint32_t credit,
                         bool native, TimePoint now);
    void on_reply(Worker& worker, std::string_view token, Frames& message, const wire::Body& body);
    void on_credit(Worker& worker, std::uint32_t credit);
    void answer_mmi(ClientRequest& request, TimePoint now, PeerRole role);
    // The answer to an mmi.services or mmi.stats request, from the published snapshot.
    std::string listing(ClientRequest& request, TimePoint now);
    const BrokerSnapshot& published(TimePoint now);

    void dispatch(Service& service);
    void send_request(Worker& worker, RequestRecord& record);
    void dispatched(Worker& worker, RequestRecord& record);
    // Puts a request that was dispatched but never sent back at the head of its queue, as if
    // it had not been dispatched: no attempt used.
    void undispatch(RequestRecord& record);
    // Back to its service's queue, to wait for a worker (again).
    void requeue_front(RequestRecord& record);
    // Undoes what `peer` had pending: its jobs never left the broker, its answers are dropped.
    void undo_pending(Peer& peer);
    void pause(Worker& worker);
    void resume(Worker& worker);
    // The peer's connection is gone, or another key took its routing id: nothing more goes to
    // it, its worker (if any) is removed, it leaves the table.
    void lose_peer(Peer& peer, std::string_view why);
    void remove_worker(Worker& worker, bool send_disconnect, std::string_view reason);
    // Takes a request off its worker's list: a credit slot of that worker is free again.
    void unhold(RequestRecord& record);
    // Returns a request's record to the table, and its client's reference.
    void release(RequestRecord& record);
    void expire_deadlines(TimePoint now);
    // A request answered 504 that its worker still holds --orphan-after-ms later: released,
    // so the worker's credit is free again; its reply, if it ever comes, is a late_reply.
    void release_orphan(RequestRecord& record, TimePoint now);
    void purge_dead_workers(TimePoint now);
    void send_heartbeats();
    void forget_idle_services();

    // Answers a client in its protocol, in its next batch. A plain MDP client has no status: a
    // non-200 answer to it is counted and dropped; so is any answer to a peer that is gone.
    void send_to_client(ClientProtocol protocol, Peer& client, std::string_view service,
                        std::string_view request_id, protocol::Status status, Frames& message,
                        const wire::Body& body);
    // Answers a request that has no record yet (refused at the door).
    // `why` is the answer's body (ZB/1 and ZBC01): protocol::kDrainingBody, or empty.
    void refuse(ClientRequest& request, protocol::Status status, std::string_view why = {});
    // Answers a held request with a failure and releases it unless a worker still holds it.
    void fail(RequestRecord& record, protocol::Status status, std::string_view why = {});
    // HEARTBEAT or DISCONNECT, in the worker's protocol.
    void send_command(Peer& peer, bool native, protocol::WorkerCommand command);
    // Sends what `peer` has; what cannot be sent is undone, and a peer found gone let go.
    void send_batch(Peer& peer);
    void malformed(Malformed kind, const Frames& in, std::string_view detail = {});
    // A would-be worker told DISCONNECT: counted, DISCONNECT sent, and said at warning level.
    void refuse_worker(Malformed kind, const Frames& in, std::string_view why, bool native,
                       TimePoint now);

    // The service of that name, made if new; nullptr, and why in `refusal`, when a new one may
    // not be made: past --max-services, or a name that is not printable UTF-8.
    Service* service_named(std::string_view name, Malformed& refusal);
    ServiceInfo info(const Service& service) const;
    Millis expiry_span() const noexcept {
        return config_.heartbeat_interval * config_.heartbeat_liveness;
    }

    BrokerConfig config_;
    Outbox& outbox_;
    TimePoint started_;
    Counters counters_;
    TimePoint next_refusal_warning_{};  // refusals are logged at most once per interval
    std::uint64_t refusals_not_logged_ = 0;
    // Declared in this order so they are destroyed in the reverse one: services (their lists
    // of workers) first, then the workers' expiry list, then the peers that own the workers
    // (whose lists of held requests reach into the table), the table last.
    RequestTable table_;
    PeerTable peers_;
    WorkerRegistry workers_;
    std::unordered_map<std::string, std::unique_ptr<Service>, StringHash, std::equal_to<>>
        services_;
    Service* last_service_ = nullptr;  // the last service_named() found, until any is forgotten
    DeadlineQueue deadlines_;
    TimePoint next_heartbeat_;
    bool draining_ = false;
    TimePoint drain_deadline_ = TimePoint::max();
    bool sweep_idle_peers_ = false;  // at the next flush (set once per heartbeat interval)
    Peer* peer_ = nullptr;           // the sender of the message in hand (on_message)
    TimePoint now_;  // of the latest event: JOB records carry the time left to the deadline
    Frames out_;     // reused for every outgoing message
    std::vector<wire::Record> records_;        // of the ZB/1 message being read
    Frames empty_;                             // an empty body
    std::optional<BrokerSnapshot> published_;  // what MMI listings answer from, see published()
    TimePoint published_at_;
};

}  // namespace zbroker::broker
