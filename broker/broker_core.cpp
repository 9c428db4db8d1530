// Routing: clients' requests queue per service and go to the worker that came free first,
// which keeps them until its credit is spent; replies go back by token; timers drive heartbeats,
// expiry, deadlines and drain.
//
// Handlers (a message, a timer, a peer gone) change state and record what to send in each
// peer's Outgoing; flush() sends it, and is where a send that finds its peer gone takes effect.
// So no handler sends or frees inline, and nothing is freed under a caller that holds it.
#include "broker_core.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>

#include <spdlog/spdlog.h>

#include "broker/mmi.hpp"
#include "shared/request_headers.hpp"
#include "shared/utf8.hpp"

namespace zbroker::broker {

using protocol::Status;
using protocol::WorkerCommand;

namespace {

// How often a refused worker may be logged at warning level.
constexpr Millis kRefusalWarningInterval{10'000};
// How often one worker's released orphans may be logged at warning level.
constexpr Millis kOrphanWarningInterval{10'000};

// Frame positions, counting the routing id the ROUTER puts first.
constexpr std::size_t kIdentity = 0;
constexpr std::size_t kDelimiter = 1;  // 7/MDP and ZBC01
constexpr std::size_t kEnvelope = 1;   // ZB/1: its envelope comes right after the routing id
constexpr std::size_t kHeader = 2;
constexpr std::size_t kService = 3;    // client messages
constexpr std::size_t kRequestId = 4;  // ZBC01
constexpr std::size_t kHeaders = 5;    // ZBC01
constexpr std::size_t kCommand = 3;    // worker messages
constexpr std::size_t kReadyService = 4;
constexpr std::size_t kReadyCredit = 5;
constexpr std::size_t kReplyToken = 4;
constexpr std::size_t kReplyDelimiter = 5;
constexpr std::size_t kReplyBody = 6;

// What a failure answer carries: no body frames at all.
constexpr wire::Body kNoBody{{}, 0, 0, true};

// The body of a failure answer: `why` in one frame, or no frame at all.
wire::Body reason_body(std::string_view why) {
    return why.empty() ? kNoBody : wire::Body{why};
}

// Why a worker's reply reached its client as 413: a ZB/1 record counts its frames in 16 bits.
constexpr std::string_view kReplyTooManyFrames = "the reply has more frames than ZB/1 carries";

std::string_view header_of(ClientProtocol protocol) noexcept {
    return protocol == ClientProtocol::mdp ? protocol::kMdpClient : protocol::kZbcClient;
}

std::optional<std::uint32_t> parse_credit(std::string_view text) noexcept {
    std::uint32_t credit = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), credit);
    if (error != std::errc{} || end != text.data() + text.size() || credit == 0)
        return std::nullopt;
    return credit;
}

}  // namespace

BrokerCore::BrokerCore(BrokerConfig config, Outbox& outbox, TimePoint now)
    : config_(config),
      outbox_(outbox),
      started_(now),
      next_heartbeat_(now + config.heartbeat_interval),
      now_(now) {
    // A record counts its body in 32 bits; zbroker's --max-msg-size stops at 2 GiB anyway.
    config_.max_msg_size = std::min<std::size_t>(config_.max_msg_size, UINT32_MAX);
}

BrokerCore::~BrokerCore() {
    last_service_ = nullptr;
    services_.clear();  // their lists of workers, before the peers that own the workers go
}

// ---------------------------------------------------------------------------------------------
// Input

void BrokerCore::on_message(Frames& in, TimePoint now, PeerRole role, std::string_view peer_key) {
    now_ = now;
    if (in.empty()) return malformed(Malformed::too_short, in);
    const std::string_view identity = view(in[kIdentity]);
    Peer* peer = peers_.find(identity);
    if (peer != nullptr && peer->key != peer_key) {
        // libzmq gives a routing id to one connection at a time: the one that had it left, and
        // another took it. Its entries are dropped now, never served to the newcomer; this
        // message is not acted on (the newcomer's next one finds its own peer).
        malformed(Malformed::other_key, in, "a routing id spoken by another CURVE key");
        return lose_peer(*peer, "another CURVE key spoke under its routing id");
    }
    if (peer == nullptr) peer = &peers_.add(identity, peer_key);
    peers_.heard(*peer);
    peer_ = peer;
    if (in.size() < kEnvelope + 1) return malformed(Malformed::too_short, in);
    if (wire::is_envelope(in[kEnvelope])) return on_native(in, now, role);
    if (in.size() < kHeader + 1) return malformed(Malformed::too_short, in);
    if (in[kDelimiter].size() != 0) return malformed(Malformed::no_delimiter, in);
    const std::string_view header = view(in[kHeader]);
    if (header == protocol::kMdpWorker) {
        if (role == PeerRole::anyone || role == PeerRole::worker) return on_mdp_worker(in, now);
        // A role is fixed per connection, so such a peer never registered: nothing to remove.
        return refuse_worker(Malformed::not_authorized, in,
                             "a client or admin key may not act as a worker", false, now);
    }
    const bool client_header = header == protocol::kMdpClient || header == protocol::kZbcClient;
    if (client_header && role == PeerRole::worker) {
        // Dropped, not answered: a worker key has no business asking, and silence tells a
        // stolen worker key nothing (the counter and the log tell the operator).
        return malformed(Malformed::not_authorized, in, "a worker key may not send requests");
    }
    if (header == protocol::kMdpClient) return on_mdp_client(in, ClientProtocol::mdp, now, role);
    if (header == protocol::kZbcClient) return on_mdp_client(in, ClientProtocol::zbc, now, role);
    malformed(Malformed::unknown_protocol, in);
}

void BrokerCore::on_peer_gone(std::string_view identity) {
    if (Peer* peer = peers_.find(identity)) lose_peer(*peer, "its connection closed");
}

void BrokerCore::on_mdp_client(Frames& in, ClientProtocol protocol, TimePoint now, PeerRole role) {
    const bool zbc = protocol == ClientProtocol::zbc;
    // Without a request id a ZBC01 client could not match an answer: drop, don't answer.
    if (in.size() < (zbc ? kRequestId + 1 : kService + 1))
        return malformed(Malformed::too_short, in);
    const std::size_t first = zbc ? kHeaders + 1 : kService + 1;
    RequestHeaders headers;  // from ZBC01 headers; outlive `request`
    ClientRequest request{in,
                          protocol,
                          *peer_,
                          view(in[kService]),
                          zbc ? view(in[kRequestId]) : std::string_view{},
                          std::nullopt,
                          {{}, first, in.size() > first ? in.size() - first : 0, true}};
    if (zbc) {
        if (request.request_id.size() > protocol::kMaxRequestIdSize) {
            malformed(Malformed::bad_request_id, in, "request id longer than 255 bytes");
            return refuse(request, Status::bad_request);
        }
        if (in.size() < kHeaders + 1) {
            malformed(Malformed::too_short, in, "no headers frame");
            return refuse(request, Status::bad_request);
        }
        std::string error;
        auto parsed = parse_request_headers(view(in[kHeaders]), &error);
        if (!parsed) {
            malformed(Malformed::bad_headers, in, error);
            return refuse(request, Status::bad_request);
        }
        request.deadline = parsed->deadline;
        request.priority = parsed->priority.value_or(0);
        headers = std::move(*parsed);
        request.fairness_key = headers.fairness_key;
        request.idempotency_key = headers.idempotency_key;
    }
    on_client_request(request, now, role);
}

void BrokerCore::on_native(Frames& in, TimePoint now, PeerRole role) {
    const char* error = nullptr;
    if (!wire::parse(in, kEnvelope, records_, error)) {
        // Nothing of it is acted on: a message is taken whole or not at all.
        return malformed(Malformed::bad_envelope, in, error);
    }
    for (const wire::Record& record : records_) {
        if (record.command != wire::Command::request) {
            if (role == PeerRole::anyone || role == PeerRole::worker) {
                on_native_worker_record(in, record, now);
            } else {
                refuse_worker(Malformed::not_authorized, in,
                              "a client or admin key may not act as a worker", true, now);
            }
            continue;
        }
        if (role == PeerRole::worker) {
            malformed(Malformed::not_authorized, in, "a worker key may not send requests");
            continue;
        }
        ClientRequest request{in,        ClientProtocol::native, *peer_,     record.service,
                              record.id, std::nullopt,           record.body};
        if (record.problem != nullptr) {
            malformed(Malformed::bad_headers, in, record.problem);
            refuse(request, Status::bad_request);
            continue;
        }
        if (record.deadline_ms) request.deadline = Millis{*record.deadline_ms};
        request.fairness_key = record.fairness_key;
        request.idempotency_key = record.idempotency_key;
        if (record.priority) {
            if (*record.priority > protocol::kMaxPriority) {
                malformed(Malformed::bad_headers, in, "priority above 9");
                refuse(request, Status::bad_request);
                continue;
            }
            request.priority = *record.priority;
        }
        on_client_request(request, now, role);
    }
}

void BrokerCore::on_client_request(ClientRequest& request, TimePoint now, PeerRole role) {
    Frames& in = request.message;
    if (request.service.empty()) {
        malformed(Malformed::empty_service, in);
        return refuse(request, Status::bad_request);
    }
    if (request.service.size() > protocol::kMaxServiceNameSize) {
        malformed(Malformed::long_service, in);
        return refuse(request, Status::bad_request);
    }
    ++counters_.requests;
    if (protocol::is_mmi(request.service)) return answer_mmi(request, now, role);
    if (draining_) return refuse(request, Status::unavailable, protocol::kDrainingBody);

    const std::size_t body_size = wire::body_size(in, request.body);
    // ZB/1 counts body frames in 16 bits: a body of more frames could not reach a ZB/1 worker.
    const bool too_many_frames =
        request.body.in_frames && request.body.count > wire::kMaxBodyFrames;
    if (body_size > config_.max_msg_size || too_many_frames)
        return refuse(request, Status::too_large);

    Malformed refusal{};
    Service* known = service_named(request.service, refusal);
    if (known == nullptr) {
        malformed(refusal, in);
        return refuse(request, refusal == Malformed::service_limit ? Status::queue_full
                                                                   : Status::bad_request);
    }
    Service& service = *known;
    if (table_.live() >= config_.max_requests ||
        table_.bytes_held() + body_size > config_.max_bytes) {
        return refuse(request, Status::queue_full);
    }
    // Under CURVE a named key only divides its client's own share: the tenant is the client's
    // key and the named key a subkey within it, so no client can spend another's share by
    // naming its key. An admin names any tenant (a front end that queues on behalf of its
    // users, say).
    Peer& client = request.client;
    std::string scoped;
    std::string_view named = request.fairness_key;
    std::uint8_t tenant_size = 0;
    if (!named.empty() && !client.key.empty() && role != PeerRole::admin) {
        scoped.reserve(client.key.size() + 1 + named.size());
        scoped.append(client.key).append(1, ':').append(named);
        named = scoped;
        tenant_size = static_cast<std::uint8_t>(client.key.size());  // 40: Z85 of 32 bytes
    }
    const std::string_view tenant = tenant_size > 0      ? std::string_view(client.key)
                                    : !named.empty()     ? named
                                    : client.key.empty() ? std::string_view(client.identity)
                                                         : std::string_view(client.key);
    const QueuePolicy::Admission admission =
        service.queue->admit(tenant, config_.queue_limit, table_);
    if (!admission.admitted) return refuse(request, Status::queue_full);
    if (admission.pushed_out != nullptr) {
        ++counters_.pushed_out;
        fail(*admission.pushed_out, Status::queue_full);  // out of the queue already
    }

    RequestRecord& record = table_.allocate();
    record.state = RequestState::queued;
    record.protocol = request.protocol;
    record.client = &client;
    ++client.awaited;
    record.request_id.assign(request.request_id);
    record.set_keys(named, request.idempotency_key, tenant_size);
    record.priority = request.priority;
    table_.keep_body(record, in, request.body, body_size);
    record.service = &service;
    std::optional<Millis> deadline = request.deadline;
    if (!deadline && config_.default_deadline > Millis{0}) deadline = config_.default_deadline;
    if (deadline) {
        record.deadline = now + *deadline;
        deadlines_.add(record.deadline, record.token());
        // Answered requests' entries wait for their deadline: swept as they pile up, not only
        // when a timer runs (a minute's default deadline at a million requests a second).
        deadlines_.compact_if_stale(table_);
    }
    if (service.waiting() == 0 && !service.idle.empty()) {
        // Nothing waits before it, whatever the policy: straight to a worker, not through the
        // queue (under fair, a key's state would be made and forgotten for each request).
        send_request(service.idle.front(), record);
        return;
    }
    service.queue->push(record);
    dispatch(service);
}

void BrokerCore::on_mdp_worker(Frames& in, TimePoint now) {
    Peer& peer = *peer_;
    Worker* worker = peer.worker.get();
    if (worker != nullptr)
        workers_.touch(*worker, now + expiry_span());  // any command is a sign of life

    if (in.size() < kCommand + 1 || in[kCommand].size() != 1) {
        malformed(Malformed::bad_command, in);
        if (worker != nullptr) remove_worker(*worker, true, "sent a malformed command");
        return;
    }
    const auto command =
        static_cast<WorkerCommand>(*static_cast<const std::uint8_t*>(in[kCommand].data()));
    if (command == WorkerCommand::ready) {
        if (worker != nullptr) {
            malformed(Malformed::duplicate_ready, in);
            return remove_worker(*worker, true, "sent READY twice");
        }
        if (in.size() < kReadyService + 1)
            return refuse_worker(Malformed::bad_ready, in, "READY names no service", false, now);
        std::uint32_t credit = 1;
        if (in.size() > kReadyCredit) {
            const auto parsed = parse_credit(view(in[kReadyCredit]));
            if (!parsed || *parsed > config_.max_credit) {
                return refuse_worker(Malformed::bad_ready, in,
                                     "its credit is not an integer from 1 to --max-credit", false,
                                     now);
            }
            credit = *parsed;
        }
        return register_worker(in, view(in[kReadyService]), credit, false, now);
    }
    if (worker == nullptr) {
        // 7/MDP lets a worker say DISCONNECT at any time, registered or not: nothing to do.
        if (command == WorkerCommand::disconnect) return;
        // Most likely a worker of a broker that restarted: DISCONNECT makes it register again.
        malformed(Malformed::not_ready, in);
        send_command(peer, false, WorkerCommand::disconnect);
        return;
    }
    switch (command) {
        case WorkerCommand::reply:
            if (in.size() < kReplyDelimiter + 1 || in[kReplyDelimiter].size() != 0) {
                malformed(Malformed::bad_reply, in);
                return remove_worker(*worker, true, "sent a malformed REPLY");
            }
            return on_reply(*worker, view(in[kReplyToken]), in,
                            {{}, kReplyBody, in.size() - kReplyBody, true});
        case WorkerCommand::heartbeat:
            return resume(*worker);
        case WorkerCommand::disconnect:
            return remove_worker(*worker, false, "sent DISCONNECT");
        case WorkerCommand::ready:
        case WorkerCommand::request:
            break;
    }
    malformed(Malformed::bad_command, in);
    remove_worker(*worker, true, "sent a command a worker may not send");
}

void BrokerCore::stray_disconnect(const Frames& in) {
    // A worker the broker removed may still say goodbye; a peer that never was one has no
    // reason to, and one ZB/1 message can hold thousands of DISCONNECTs: each is counted.
    // (7/MDP allows it, and one message is one DISCONNECT: there it is ignored.)
    if (!peer_->was_worker) malformed(Malformed::not_ready, in, "DISCONNECT before any READY");
}

void BrokerCore::on_native_worker_record(Frames& in, const wire::Record& record, TimePoint now) {
    Peer& peer = *peer_;
    // Whatever protocol it registered in, this peer is that worker: a READY is its second.
    Worker* worker = peer.worker.get();
    if (worker != nullptr) workers_.touch(*worker, now + expiry_span());
    if (record.command == wire::Command::ready) {
        if (worker != nullptr) {
            malformed(Malformed::duplicate_ready, in);
            return remove_worker(*worker, true, "sent READY twice");
        }
        if (record.credit == 0 || record.credit > config_.max_credit) {
            return refuse_worker(Malformed::bad_ready, in,
                                 "its credit is not an integer from 1 to --max-credit", true, now);
        }
        return register_worker(in, record.service, record.credit, true, now);
    }
    if (worker == nullptr) {
        if (record.command == wire::Command::disconnect) return stray_disconnect(in);
        malformed(Malformed::not_ready, in);
        send_command(peer, true, WorkerCommand::disconnect);
        return;
    }
    switch (record.command) {
        case wire::Command::reply:
            return on_reply(*worker, record.token, in, record.body);
        case wire::Command::heartbeat:
            return resume(*worker);
        case wire::Command::credit:
            if (record.credit > config_.max_credit) {
                malformed(Malformed::bad_command, in, "CREDIT above --max-credit");
                return remove_worker(*worker, true, "sent CREDIT above --max-credit");
            }
            return on_credit(*worker, record.credit);
        case wire::Command::disconnect:
            return remove_worker(*worker, false, "sent DISCONNECT");
        case wire::Command::request:
        case wire::Command::answer:
        case wire::Command::job:
        case wire::Command::ready:
            break;
    }
    malformed(Malformed::bad_command, in, "ANSWER and JOB only go from the broker");
    remove_worker(*worker, true, "sent a command a worker may not send");
}

void BrokerCore::register_worker(const Frames& in, std::string_view service_name,
                                 std::uint32_t credit, bool native, TimePoint now) {
    if (service_name.empty())
        return refuse_worker(Malformed::bad_ready, in, "READY names no service", native, now);
    if (protocol::is_mmi(service_name)) {
        return refuse_worker(Malformed::mmi_registration, in, "mmi.* services belong to the broker",
                             native, now);
    }
    if (service_name.size() > protocol::kMaxServiceNameSize) {
        return refuse_worker(Malformed::long_service, in, "its service name is over 255 bytes",
                             native, now);
    }
    Malformed refusal{};
    Service* known = service_named(service_name, refusal);
    if (known == nullptr) {
        return refuse_worker(refusal, in,
                             refusal == Malformed::service_limit
                                 ? "a new service past --max-services"
                                 : "its service name is not printable UTF-8",
                             native, now);
    }
    Service& service = *known;
    Peer& peer = *peer_;
    peer.worker = std::make_unique<Worker>();
    peer.was_worker = true;
    Worker& worker = *peer.worker;
    worker.peer = &peer;
    worker.service = &service;
    worker.credit = credit;
    worker.native = native;
    workers_.add(worker, now + expiry_span());
    service.join(worker);
    ++counters_.workers_registered;
    spdlog::info("worker {} ready for '{}' with credit {}{}", printable(peer.identity),
                 service.name, credit, native ? " (ZB/1)" : "");
    service.offer(worker);
    dispatch(service);
}

void BrokerCore::on_reply(Worker& worker, std::string_view token, Frames& message,
                          const wire::Body& body) {
    RequestRecord* record = table_.find(token);
    if ((record == nullptr || record->worker != &worker) && worker.orphans_released > 0) {
        // Most likely the reply to a request released as an orphan: its client had a 504.
        --worker.orphans_released;
        ++counters_[Drop::late_reply];
        return;
    }
    if (record == nullptr || record->worker != &worker) {
        ++counters_[Drop::unknown_token];
        spdlog::debug("dropped REPLY from worker {}: token {} is not one it holds",
                      printable(worker.peer->identity), printable(token));
        return;
    }
    Service& service = *worker.service;
    unhold(*record);
    if (record->state == RequestState::answered) {
        ++counters_[Drop::late_reply];  // the client already has its 504
    } else if (record->protocol == ClientProtocol::native && body.in_frames &&
               body.count > wire::kMaxBodyFrames) {
        // A ZB/1 record counts its frames in 16 bits: say so, never hand over a cut body.
        ++service.failures[Counters::answer_index(Status::too_large)];
        send_to_client(record->protocol, *record->client, service.name, record->request_id,
                       Status::too_large, empty_, reason_body(kReplyTooManyFrames));
    } else {
        send_to_client(record->protocol, *record->client, service.name, record->request_id,
                       Status::ok, message, body);
        ++service.served;
    }
    release(*record);
    if (worker.held.empty()) {
        worker.isolating = false;  // it held only the suspect
        worker.reserved = false;   // emptied for a suspect: dispatch() gives it one first
    }
    worker.paused = false;  // it reads: it may be sent more
    service.offer(worker);
    dispatch(service);
}

void BrokerCore::on_credit(Worker& worker, std::uint32_t credit) {
    worker.credit = credit;
    // The echo tells the worker that no JOB sent under its old credit is still on the way.
    peers_.to(*worker.peer).writer.credit(credit);
    if (credit == 0) {
        // A worker that is stopping: it finishes what it holds, then says DISCONNECT.
        spdlog::info("worker {} for '{}' takes no more requests; it holds {}",
                     printable(worker.peer->identity), worker.service->name, worker.held.size());
        worker.service->withdraw(worker);
        return;
    }
    if (!worker.can_take_more()) {
        worker.service->withdraw(worker);  // lowered to what it holds, or below
        return;
    }
    worker.service->offer(worker);
    dispatch(*worker.service);
}

void BrokerCore::answer_mmi(ClientRequest& request, TimePoint now, PeerRole role) {
    const std::string_view service = request.service;
    const bool admin_only = service == protocol::kMmiStats || service == protocol::kMmiDrain;
    std::string answer;
    // Without CURVE nobody is known: reading counters is harmless, but one 3-frame message
    // must not be able to shut the broker down unless the operator said so.
    const bool drain_refused =
        service == protocol::kMmiDrain && role == PeerRole::anyone && !config_.drain_without_curve;
    if ((admin_only && role != PeerRole::anyone && role != PeerRole::admin) || drain_refused) {
        malformed(Malformed::not_authorized, request.message,
                  "mmi.stats and mmi.drain need the admin role");
        answer = protocol::kMmiForbidden;  // an MMI answer, as 404 and 501 are
    } else if (service == protocol::kMmiService) {
        const bool has_body = request.body.in_frames ? request.body.count > 0 : true;
        const auto found = has_body
                               ? service_info(wire::first_body_bytes(request.message, request.body))
                               : std::nullopt;
        answer = found && found->workers > 0 ? protocol::kMmiFound : protocol::kMmiNotFound;
    } else if (service == protocol::kMmiServices || service == protocol::kMmiStats) {
        answer = listing(request, now);
        if (answer.empty()) {
            return refuse(request, Status::queue_full);  // past this connection's share
        }
    } else if (service == protocol::kMmiDrain) {
        begin_drain(now);
        answer = protocol::kMmiFound;
    } else {
        answer = protocol::kMmiNotImplemented;
    }
    Frames body;
    body.push_back(frame(answer));
    send_to_client(request.protocol, request.client, service, request.request_id, Status::ok, body,
                   {{}, 0, 1, true});
}

std::string BrokerCore::listing(ClientRequest& request, TimePoint now) {
    const BrokerSnapshot& snapshot = published(now);
    // The page after the service the body names, if it names one.
    std::string_view after;
    if (!request.body.in_frames || request.body.count > 0)
        after = wire::first_body_bytes(request.message, request.body);
    const auto by_name = [](const ServiceInfo& info, std::string_view name) {
        return std::string_view(info.name) <= name;
    };
    const auto first = after.empty() ? snapshot.services.begin()
                                     : std::lower_bound(snapshot.services.begin(),
                                                        snapshot.services.end(), after, by_name);
    const auto count = std::min<std::size_t>(
        protocol::kMmiPageServices, static_cast<std::size_t>(snapshot.services.end() - first));
    const std::span<const ServiceInfo> page(first, count);
    std::string answer = request.service == protocol::kMmiStats ? encode_stats(snapshot, page)
                                                                : encode_service_list(page);
    // The asker pays for the answer: so many bytes a second per connection.
    Peer& peer = request.client;
    if (now - peer.listing_since >= std::chrono::seconds(1)) {
        peer.listing_since = now;
        peer.listing_bytes = 0;
    } else if (peer.listing_bytes + answer.size() > config_.listing_bytes_per_second) {
        return {};
    }
    peer.listing_bytes += answer.size();
    return answer;
}

const BrokerSnapshot& BrokerCore::published(TimePoint now) {
    constexpr std::chrono::microseconds kPerItem{20};
    const auto age_allowed =
        published_ ? std::min<Clock::duration>(
                         config_.snapshot_max_age,
                         kPerItem * static_cast<std::int64_t>(published_->services.size() +
                                                              published_->keys))
                   : Clock::duration::zero();
    if (!published_ || now - published_at_ >= age_allowed || now < published_at_) {
        published_ = snapshot(now);
        published_at_ = now;
    }
    return *published_;
}

// ---------------------------------------------------------------------------------------------
// Dispatch and worker lifecycle

void BrokerCore::dispatch(Service& service) {
    while (!service.idle.empty()) {
        // Requests back from a worker that went away go first: they have waited longest. Each
        // goes to a worker that holds nothing else; while none does, one is let empty for it,
        // and the others go on with the queue.
        if (RequestRecord* suspect = service.next_suspect(table_)) {
            if (Worker* empty = service.idle_and_empty()) {
                service.pop_suspect();
                send_request(*empty, *suspect);
                continue;
            }
            service.reserve_for_suspect();
            if (service.idle.empty()) break;
        }
        if (service.queue->waiting() == 0) break;
        RequestRecord* record = service.queue->pop(table_);
        if (record == nullptr) break;
        send_request(service.idle.front(), *record);
    }
}

void BrokerCore::pause(Worker& worker) {
    worker.paused = true;
    worker.service->withdraw(worker);
    spdlog::warn(
        "worker {} for '{}': its queue is full (--hwm), holding {} request(s); sending it "
        "nothing more until it is heard from",
        printable(worker.peer->identity), worker.service->name, worker.held.size());
}

void BrokerCore::resume(Worker& worker) {
    if (!worker.paused) return;
    worker.paused = false;
    worker.service->offer(worker);
    dispatch(*worker.service);
}

void BrokerCore::send_request(Worker& worker, RequestRecord& record) {
    // Sent at the next flush; send_batch() undoes it if that fails.
    Outgoing& out = peers_.to(*worker.peer);
    const auto token = RequestTable::token_bytes(record.token());
    if (worker.native) {
        std::optional<std::uint32_t> deadline_ms;
        if (record.deadline != TimePoint::max()) {
            const auto left = std::chrono::ceil<Millis>(record.deadline - now_).count();
            deadline_ms = static_cast<std::uint32_t>(std::clamp<Millis::rep>(left, 0, UINT32_MAX));
        }
        out.writer.job({token.data(), token.size()}, deadline_ms, record.idempotency_key(),
                       {record.body, 0, record.body.size(), true});
        out.jobs.push_back(record.token());
        dispatched(worker, record);
        if (out.writer.size() >= wire::kBatchBytes) out.seal(worker.peer->identity);
        return;
    }
    out.seal(worker.peer->identity);  // messages leave in the order they were made
    Frames& frames = out.frames;
    add_frame(frames, worker.peer->identity);
    add_empty_frame(frames);
    add_constant_frame(frames, protocol::kMdpWorker);
    add_frame(frames, WorkerCommand::request);
    add_frame(frames, {token.data(), token.size()});
    add_empty_frame(frames);
    for (zmq::message_t& part : record.body) {
        frames.emplace_back().copy(part);  // reference-counted: the original stays for a retry
    }
    out.jobs.push_back(record.token());
    out.end_message(0);
    dispatched(worker, record);
}

void BrokerCore::dispatched(Worker& worker, RequestRecord& record) {
    record.state = RequestState::dispatched;
    record.worker = &worker;
    ++record.attempts;
    worker.held.push_back(record);
    ++worker.service->dispatched;
    ++counters_.dispatches;
    if (record.suspect) worker.isolating = true;
    worker.service->dispatched_to(worker);
}

void BrokerCore::undispatch(RequestRecord& record) {
    Worker& worker = *record.worker;
    unhold(record);
    --counters_.dispatches;
    --record.attempts;
    if (worker.held.empty()) worker.isolating = false;
    if (record.state == RequestState::answered) {
        release(record);  // its client has had its 504: nothing left to do
        return;
    }
    requeue_front(record);
}

void BrokerCore::requeue_front(RequestRecord& record) {
    record.state = RequestState::queued;
    if (record.suspect) {
        record.service->push_suspect_front(record);
    } else {
        record.service->queue->push_front(record);
    }
}

void BrokerCore::unhold(RequestRecord& record) {
    Worker& worker = *record.worker;
    worker.held.erase(worker.held.iterator_to(record));
    --worker.service->dispatched;
    if (record.state == RequestState::answered) --worker.service->orphaned;
    record.worker = nullptr;
}

void BrokerCore::release(RequestRecord& record) {
    --record.client->awaited;
    table_.release(record);
}

void BrokerCore::undo_pending(Peer& peer) {
    Outgoing& out = peer.out;
    std::size_t answers = out.answers;
    for (const Outgoing::Message& message : out.messages)
        answers += message.answers;
    // A peer that is a client too loses the answers in the same batch: count them.
    counters_[Drop::client_unreachable] += answers;
    std::vector<Token> jobs = std::move(out.jobs);
    out.clear();
    // Back to front, each to the queue's head: the queue then starts in dispatch order.
    Worker* worker = peer.worker.get();
    for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
        RequestRecord* record = table_.find(*it);
        if (record != nullptr && worker != nullptr && record->worker == worker) undispatch(*record);
    }
}

void BrokerCore::lose_peer(Peer& peer, std::string_view why) {
    if (peer.gone) return;
    undo_pending(peer);
    peers_.depart(peer);
    if (peer.worker) remove_worker(*peer.worker, false, why);
    spdlog::debug("peer {} gone: {}", printable(peer.identity), why);
}

void BrokerCore::remove_worker(Worker& worker, bool send_disconnect, std::string_view reason) {
    Peer& peer = *worker.peer;
    Service& service = *worker.service;
    undo_pending(peer);  // never sent: they cost no attempt and suspect nobody
    if (send_disconnect) send_command(peer, worker.native, WorkerCommand::disconnect);
    std::size_t requeued = 0;
    std::size_t failed = 0;
    // Back to front, each to the head of the suspects: they then leave in dispatch order.
    while (!worker.held.empty()) {
        RequestRecord& record = worker.held.back();
        unhold(record);
        if (record.state == RequestState::answered) {
            release(record);
        } else if (record.attempts >= config_.max_attempts) {
            ++failed;
            fail(record, Status::retries_exhausted);
        } else {
            record.suspect = true;
            requeue_front(record);
            ++requeued;
        }
    }
    counters_.requeued += requeued;
    ++counters_.workers_removed;
    service.leave(worker);
    workers_.remove(worker);
    // A worker that says goodbye holding nothing is routine; anything else is worth a warning.
    const bool routine = !send_disconnect && requeued == 0 && failed == 0;
    spdlog::log(
        routine ? spdlog::level::info : spdlog::level::warn,
        "worker {} for '{}' removed: {}; {} request(s) re-queued, {} failed after {} attempts",
        printable(peer.identity), service.name, reason, requeued, failed, config_.max_attempts);
    peer.worker.reset();  // the peer stays, for what else it sends or awaits
    dispatch(service);
}

// ---------------------------------------------------------------------------------------------
// Timers

void BrokerCore::on_timer(TimePoint now) {
    now_ = now;
    expire_deadlines(now);
    purge_dead_workers(now);
    if (now >= next_heartbeat_) {
        send_heartbeats();
        forget_idle_services();
        sweep_idle_peers_ = true;
        next_heartbeat_ = now + config_.heartbeat_interval;
    }
}

TimePoint BrokerCore::next_timer() const noexcept {
    TimePoint next = std::min(next_heartbeat_, deadlines_.next());
    if (const Worker* first = workers_.first_to_expire()) {
        next = std::min(next, first->expiry);
    }
    if (draining_) next = std::min(next, drain_deadline_);
    return next;
}

void BrokerCore::expire_deadlines(TimePoint now) {
    while (const auto token = deadlines_.pop_due(now)) {
        RequestRecord* record = table_.find(*token);
        if (record == nullptr) continue;  // answered already
        if (record->state == RequestState::queued) {
            Service& service = *record->service;
            // Nobody could have served it: 503 says "no worker", 504 says "too slow".
            const Status status =
                service.workers() > 0 ? Status::deadline_exceeded : Status::unavailable;
            service.forget(*record, table_);
            fail(*record, status);
        } else if (record->state == RequestState::dispatched) {
            fail(*record, Status::deadline_exceeded);  // the worker's late reply will be dropped
            // Still held: an orphan, released if its worker has not replied by this timer.
            if (config_.orphan_after > Millis{0})
                deadlines_.add(record->deadline + config_.orphan_after, record->token());
        } else if (record->state == RequestState::answered && record->worker != nullptr &&
                   config_.orphan_after > Millis{0} &&
                   now >= record->deadline + config_.orphan_after) {
            release_orphan(*record, now);
        }
    }
    deadlines_.compact_if_stale(table_);
}

void BrokerCore::release_orphan(RequestRecord& record, TimePoint now) {
    Worker& worker = *record.worker;
    Service& service = *worker.service;
    unhold(record);
    release(record);
    ++worker.orphans_released;
    ++counters_.orphans_released;
    if (worker.held.empty()) {
        worker.isolating = false;  // it held only the suspect
        worker.reserved = false;
    }
    if (now >= worker.next_orphan_warning) {
        spdlog::warn(
            "worker {} for '{}' still holds a request {} ms past its deadline: its handler may "
            "be hung; no longer counted against its credit ({} other such request(s) released "
            "since the last such line)",
            printable(worker.peer->identity), service.name, config_.orphan_after.count(),
            worker.orphans_not_logged);
        worker.orphans_not_logged = 0;
        worker.next_orphan_warning = now + kOrphanWarningInterval;
    } else {
        ++worker.orphans_not_logged;
    }
    service.offer(worker);
    dispatch(service);
}

void BrokerCore::purge_dead_workers(TimePoint now) {
    while (Worker* worker = workers_.first_to_expire()) {
        if (worker->expiry > now) break;
        ++counters_.workers_expired;
        remove_worker(*worker, true, "missed its heartbeats");
    }
}

void BrokerCore::send_heartbeats() {
    // Sent at the next flush, which also finds the workers whose connection is gone
    // (ROUTER_MANDATORY): their requests go back to the queue then, not liveness intervals
    // later. A full queue (would-block) means a busy worker, which its own heartbeats keep
    // alive.
    workers_.for_each([this](Worker& worker) {
        send_command(*worker.peer, worker.native, WorkerCommand::heartbeat);
    });
}

void BrokerCore::forget_idle_services() {
    // A name with no workers and no queue costs memory for nothing; clients can make many.
    last_service_ = nullptr;
    std::erase_if(services_, [](const auto& entry) {
        const Service& service = *entry.second;
        return service.workers() == 0 && service.waiting() == 0;
    });
}

// ---------------------------------------------------------------------------------------------
// Drain

void BrokerCore::begin_drain(TimePoint now) {
    if (draining_) return;
    draining_ = true;
    drain_deadline_ = now + config_.drain_timeout;
    // What waits for a service with no worker would only wait out the drain: answered now, as
    // a draining broker's 503, so a client with other brokers sends it to one of them.
    std::size_t unserved = 0;
    for (const auto& [name, service] : services_) {
        if (service->workers() > 0) continue;
        while (RequestRecord* record = service->next_suspect(table_)) {
            service->pop_suspect();
            fail(*record, Status::unavailable, protocol::kDrainingBody);
            ++unserved;
        }
        while (RequestRecord* record = service->queue->pop(table_)) {
            fail(*record, Status::unavailable, protocol::kDrainingBody);
            ++unserved;
        }
    }
    spdlog::info(
        "draining: refusing new requests, finishing {} held ones (at most {} ms); {} waiting for "
        "a service with no worker answered 503",
        table_.live(), config_.drain_timeout.count(), unserved);
}

bool BrokerCore::drain_complete(TimePoint now) const noexcept {
    return draining_ && (table_.live() == 0 || now >= drain_deadline_);
}

void BrokerCore::finish_drain() {
    const std::size_t left = table_.live();
    table_.for_each_live([this](RequestRecord& record) {
        if (record.worker != nullptr) unhold(record);
        if (record.state == RequestState::queued) record.service->forget(record, table_);
        if (record.state == RequestState::answered) {
            release(record);
        } else {
            // A client with other brokers sends it to one of them: at least once, as after a
            // worker's death.
            fail(record, Status::unavailable, protocol::kDrainingBody);
        }
    });
    workers_.for_each([this](Worker& worker) {
        send_command(*worker.peer, worker.native, WorkerCommand::disconnect);
    });
    flush();
    spdlog::info(
        "drained: {} request(s) unfinished at the timeout were answered 503; {} worker(s) told "
        "DISCONNECT",
        left, workers_.size());
}

// ---------------------------------------------------------------------------------------------
// Output

void BrokerCore::send_to_client(ClientProtocol protocol, Peer& client, std::string_view service,
                                std::string_view request_id, Status status, Frames& message,
                                const wire::Body& body) {
    ++counters_.answered(status);
    if (client.gone) {
        // Its connection closed, or another took its routing id: the answer goes nowhere.
        ++counters_[Drop::client_unreachable];
        return;
    }
    if (protocol == ClientProtocol::native) {
        Outgoing& out = peers_.to(client);
        if (body.in_frames) {
            out.writer.answer(request_id, status, {message, body.first, body.count});
        } else {
            out.writer.answer(request_id, status, body.bytes);
        }
        ++out.answers;
        if (out.writer.size() >= wire::kBatchBytes) out.seal(client.identity);
        return;
    }
    if (protocol == ClientProtocol::mdp && status != Status::ok) {
        ++counters_[Drop::mdp_unanswerable];
        spdlog::debug("MDP request for '{}' ended {} ({}); MDP cannot tell the client", service,
                      protocol::status_text(status), protocol::status_reason(status));
        return;
    }
    Outgoing& out = peers_.to(client);
    out.seal(client.identity);  // messages leave in the order they were made
    Frames& frames = out.frames;
    add_frame(frames, client.identity);
    add_empty_frame(frames);
    add_constant_frame(frames, header_of(protocol));
    add_frame(frames, service);
    if (protocol == ClientProtocol::zbc) {
        add_frame(frames, request_id);
        add_frame(frames, protocol::status_text(status));
    }
    wire::move_body(message, body, frames);
    out.end_message(1);
}

void BrokerCore::refuse(ClientRequest& request, Status status, std::string_view why) {
    send_to_client(request.protocol, request.client, request.service, request.request_id, status,
                   empty_, reason_body(why));
}

void BrokerCore::fail(RequestRecord& record, Status status, std::string_view why) {
    ++record.service->failures[Counters::answer_index(status)];
    send_to_client(record.protocol, *record.client, record.service->name, record.request_id, status,
                   empty_, reason_body(why));
    if (record.worker != nullptr) {
        // An orphan: released when the worker replies or dies, or at --orphan-after-ms.
        record.state = RequestState::answered;
        ++record.service->orphaned;
    } else {
        release(record);
    }
}

void BrokerCore::send_command(Peer& peer, bool native, WorkerCommand command) {
    if (peer.gone) return;
    Outgoing& out = peers_.to(peer);
    if (native) {
        out.writer.command(command == WorkerCommand::heartbeat ? wire::Command::heartbeat
                                                               : wire::Command::disconnect);
        return;
    }
    out.seal(peer.identity);
    add_frame(out.frames, peer.identity);
    add_empty_frame(out.frames);
    add_constant_frame(out.frames, protocol::kMdpWorker);
    add_frame(out.frames, command);
    out.end_message(0);
}

void BrokerCore::flush() {
    while (Peer* peer = peers_.next_pending()) {
        if (!peer->out.empty()) send_batch(*peer);
    }
    // The one place peers are freed: no handler is running, nothing holds one.
    peers_.sweep(std::exchange(sweep_idle_peers_, false));
}

void BrokerCore::send_batch(Peer& peer) {
    Outgoing& out = peer.out;
    if (peer.gone) return undo_pending(peer);
    out.seal(peer.identity);
    SendResult result = SendResult::sent;
    std::size_t begin = 0;
    std::size_t jobs_begin = 0;
    std::size_t answers_lost = 0;
    std::vector<Token> jobs_unsent;  // allocates only when a send fails
    for (const Outgoing::Message& message : out.messages) {
        // Once a peer is found gone, the rest of its messages are not even tried.
        const SendResult sent =
            result == SendResult::unroutable
                ? SendResult::unroutable
                : outbox_.send(FrameSpan(out.frames).subspan(begin, message.end - begin));
        if (sent != SendResult::sent) {
            if (result != SendResult::unroutable) result = sent;  // the worst one
            answers_lost += message.answers;
            jobs_unsent.insert(jobs_unsent.end(),
                               out.jobs.begin() + static_cast<std::ptrdiff_t>(jobs_begin),
                               out.jobs.begin() + static_cast<std::ptrdiff_t>(message.jobs_end));
        }
        begin = message.end;
        jobs_begin = message.jobs_end;
    }
    out.clear();
    if (result == SendResult::sent) return;
    counters_[result == SendResult::unroutable ? Drop::client_unreachable
                                               : Drop::client_backpressure] += answers_lost;
    // The jobs never left: back to the queue's head as they were.
    Worker* worker = peer.worker.get();
    for (auto it = jobs_unsent.rbegin(); it != jobs_unsent.rend(); ++it) {
        RequestRecord* record = table_.find(*it);
        if (record != nullptr && worker != nullptr && record->worker == worker) undispatch(*record);
    }
    if (result == SendResult::unroutable) {
        // ROUTER_MANDATORY found no connection: the peer is gone (DISCONNECT could not be sent
        // either). Safe here: no handler is running, and the peer itself is freed only by the
        // sweep at the end of flush().
        return lose_peer(peer, "unreachable (its connection closed)");
    }
    // Would-block: alive, reading slowly. A lost heartbeat alone is no reason to pause: an MDP
    // worker is not paused for one either.
    if (worker != nullptr && !jobs_unsent.empty() && !worker->paused) {
        pause(*worker);
        dispatch(*worker->service);
    }
}

void BrokerCore::malformed(Malformed kind, const Frames& in, std::string_view detail) {
    ++counters_[kind];
    // describe() builds a string: only pay for it when it will be logged. A flood of hostile
    // messages must cost a counter increment, not a formatting pass each.
    if (!spdlog::should_log(spdlog::level::debug)) return;
    spdlog::debug("malformed message ({}{}{}): {}", name(kind), detail.empty() ? "" : ": ", detail,
                  describe(in));
}

void BrokerCore::refuse_worker(Malformed kind, const Frames& in, std::string_view why, bool native,
                               TimePoint now) {
    malformed(kind, in, why);
    Peer& peer = *peer_;
    send_command(peer, native, WorkerCommand::disconnect);
    // Otherwise only the worker would say anything (that it was told DISCONNECT, every time it
    // retries). At most one line per interval, so a hostile peer cannot flood the log.
    if (now < next_refusal_warning_) {
        ++refusals_not_logged_;
        return;
    }
    spdlog::warn("refused worker {} ({}): {}; {} other refusal(s) since the last such line",
                 printable(peer.identity), name(kind), why, refusals_not_logged_);
    refusals_not_logged_ = 0;
    next_refusal_warning_ = now + kRefusalWarningInterval;
}

// ---------------------------------------------------------------------------------------------
// Services

Service* BrokerCore::service_named(std::string_view name, Malformed& refusal) {
    // Requests in a row mostly name the same service (a broker often serves one or a few), and
    // a comparison costs far less than hashing the name.
    if (last_service_ != nullptr && last_service_->name == name) return last_service_;
    auto it = services_.find(name);
    if (it == services_.end()) {
        if (services_.size() >= config_.max_services) {
            refusal = Malformed::service_limit;
            return nullptr;
        }
        // Names reach logs, terminals and metrics: a known service's is printable, so only a
        // new one is checked, and requests for a known one cost nothing more.
        if (!printable_utf8(name)) {
            refusal = Malformed::unprintable_service;
            return nullptr;
        }
        it = services_
                 .emplace(std::string(name),
                          std::make_unique<Service>(std::string(name), config_.queue))
                 .first;
    }
    last_service_ = it->second.get();
    return last_service_;
}

ServiceInfo BrokerCore::info(const Service& service) const {
    return {service.name,         service.workers(),
            service.waiting(),    service.dispatched - service.orphaned,
            service.orphaned,     service.served,
            service.failures,     service.queue->top_keys(kTopKeys),
            service.queue->keys()};
}

BrokerSnapshot BrokerCore::snapshot(TimePoint now) const {
    BrokerSnapshot snapshot{std::chrono::duration<double>(now - started_).count(),
                            workers_.size(),
                            table_.live(),
                            peers_.size() + peers_.departed(),
                            0,
                            counters_,
                            {}};
    snapshot.services.reserve(services_.size());
    for (const auto& [name, service] : services_) {
        snapshot.services.push_back(info(*service));
        snapshot.keys += snapshot.services.back().keys;
    }
    std::sort(snapshot.services.begin(), snapshot.services.end(),
              [](const ServiceInfo& a, const ServiceInfo& b) { return a.name < b.name; });
    return snapshot;
}

std::optional<ServiceInfo> BrokerCore::service_info(std::string_view name) const {
    const auto it = services_.find(name);
    if (it == services_.end()) return std::nullopt;
    return info(*it->second);
}

}  // namespace zbroker::broker
