// The simulated world: connections, peers, the network between them and the broker core, the
// clock, the faults, and the step loop that drives them from one seed.
#include "sim/simulation.hpp"

#include <algorithm>
#include <sstream>

#include <spdlog/spdlog.h>

#include "shared/request_headers.hpp"
#include "shared/wire.hpp"

namespace zbroker::sim {

using broker::ClientProtocol;
using broker::PeerRole;
using protocol::Status;
using protocol::WorkerCommand;

namespace {

std::uint64_t g_current_step = 0;  // read by a signal handler after a crash

constexpr std::size_t kTraceLines = 100;
// A 7/MDP reply of more frames than a ZB/1 record can count.
constexpr std::size_t kHugeReplyFrames = wire::kMaxBodyFrames + 5;

const std::string kEmpty;

std::string command_byte(WorkerCommand command) {
    return std::string(1, static_cast<char>(command));
}

// A ZB/1 message from `routing_id`: what `writer` holds, as the ROUTER delivers it.
Message native_message(const std::string& routing_id, wire::Writer& writer) {
    Frames frames;
    frames.push_back(frame(routing_id));
    writer.take(frames);
    return to_message(frames);
}

std::uint64_t mix(std::uint64_t hash, std::string_view bytes) {
    for (const char c : bytes)
        hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;  // FNV-1a
    return (hash ^ 0xFF) * 0x100000001B3ull;
}

}  // namespace

class Peer;

// One peer's connection to the broker: its routing id and CURVE identity, and the messages on
// the way each direction. ZeroMQ keeps order on a connection; different connections interleave.
struct Connection {
    std::uint64_t serial = 0;
    std::string routing_id;
    std::string key;
    PeerRole role = PeerRole::anyone;
    Peer* peer = nullptr;
    bool open = true;
    bool heard = false;             // the broker read a message of it
    std::deque<Message> to_broker;  // sent by the peer, not yet read by the broker
    std::deque<Message> inbox;      // sent by the broker, not yet read by the peer
};

struct World {
    explicit World(const Knobs& knobs);

    // The broker's side of the network: a ROUTER with ROUTER_MANDATORY.
    class Outbox : public broker::Outbox {
      public:
        explicit Outbox(World& world) : world_(world) {}
        SendResult send(FrameSpan frames) override;

      private:
        World& world_;
    };

    void trace(std::string line);
    Connection& connect(Peer& peer, const std::string& routing_id);
    void close(Connection& connection, const char* why);
    std::string fresh_routing_id(char kind);
    void start_broker();
    void restart_broker(const char* why);

    // One step: a read batch, a peer acting or reading, a tick, or a fault.
    void step();
    void read_batch();
    // With CURVE, the loop watches its connections (broker/connection_table.hpp): the core
    // hears of a close before it reads or sends anything after it.
    void tell_closes();
    void free_route(Connection& connection);
    // Tells the oracle which requests a message from a client carries, as the core reads it.
    void note_requests(const Message& message, std::uint64_t serial);
    void tick(Millis by);
    void inject_fault();
    void begin_calm();

    Knobs knobs;
    Random workload;
    Random network;
    Random chaos;
    TimePoint now;
    Oracle oracle;
    Outbox outbox{*this};
    std::unique_ptr<broker::BrokerCore> core;
    std::vector<std::unique_ptr<Connection>> connections;
    std::map<std::string, Connection*> routes;  // open connections by routing id
    std::vector<std::unique_ptr<Peer>> peers;
    std::vector<std::string> departed;  // routing ids of closed connections
    std::vector<std::string> closes;    // of connections the core heard from, not yet told
    std::uint64_t steps = 0;
    std::uint64_t faults = 0;
    std::uint64_t fingerprint = 0xCBF29CE484222325ull;
    std::uint64_t next_serial = 1;
    std::uint64_t next_routing_id = 1;
    bool draining = false;
    bool calm = false;
    bool quiet = false;
    std::deque<std::string> lines;
    std::size_t trace_lines = kTraceLines;
};

// ---------------------------------------------------------------------------------------------
// Peers

class Peer {
  public:
    Peer(World& world, std::string name, PeerRole role, char kind)
        : world_(world), name_(std::move(name)), role_(role), kind_(kind) {
        if (world.knobs.curve) key_ = "K-" + name_;
        slow_reader_ = world.workload.per_mille(world.knobs.slow_reader);
    }
    virtual ~Peer() = default;

    const std::string& name() const noexcept { return name_; }
    PeerRole role() const noexcept { return world_.knobs.curve ? role_ : PeerRole::anyone; }
    const std::string& key() const noexcept { return key_; }
    Connection* connection() const noexcept { return connection_; }
    bool slow_reader() const noexcept { return slow_reader_; }
    bool online() const noexcept { return connection_ != nullptr; }
    // Healthy workers and well-behaved clients stay for the calm phase; the rest leave then.
    virtual bool stays_when_calm() const { return true; }

    // Connects when it is time to; then acts.
    void wake() {
        if (connection_ == nullptr) {
            if (retired_ || world_.now < offline_until_) return;
            std::string id = routing_id_;
            if (id.empty() || world_.routes.count(id) != 0 || world_.workload.one_in(3))
                id = world_.fresh_routing_id(kind_);
            routing_id_ = id;
            connection_ = &world_.connect(*this, id);
            on_connected();
            return;
        }
        act();
    }
    // Its connection closed (it vanished, or was told to go): back after `after`, maybe.
    void lost(Millis after, bool retire) {
        connection_ = nullptr;
        offline_until_ = world_.now + after;
        retired_ = retired_ || retire;
        on_lost();
    }
    void retire() { retired_ = true; }

    virtual void read(const Message& message) = 0;

  protected:
    virtual void on_connected() = 0;
    virtual void act() = 0;
    virtual void on_lost() {}

    void send(Message message) {
        if (connection_ != nullptr) connection_->to_broker.push_back(std::move(message));
    }
    // Leaves the broker on its own: a new connection later.
    void reconnect(const char* why) {
        if (connection_ != nullptr) world_.close(*connection_, why);
    }

    World& world_;
    Random& random() { return world_.workload; }
    std::string routing_id_;

  private:
    std::string name_;
    PeerRole role_;
    char kind_;
    std::string key_;
    bool slow_reader_ = false;
    Connection* connection_ = nullptr;
    TimePoint offline_until_{};
    bool retired_ = false;
};

// A worker for one service, 7/MDP or ZB/1. Healthy ones answer every job after its service time;
// unhealthy ones may hang on a job, reply twice, or (7/MDP) reply with more frames than ZB/1
// carries.
class Worker : public Peer {
  public:
    Worker(World& world, std::size_t index, bool healthy)
        : Peer(world, "w" + std::to_string(index), PeerRole::worker, 'w'), healthy_(healthy) {
        native_ = random().one_in(2);
        service_ = "s" + std::to_string(index % world.knobs.services);
        credit_ = static_cast<std::uint32_t>(random().between(1, world.knobs.credit_max));
        huge_ = !native_ && !healthy && world.knobs.huge_reply_per_mille > 0;
    }
    bool stays_when_calm() const override { return healthy_; }

    void read(const Message& m) override {
        if (is_native(m)) {
            NativeMessage native;
            if (!native.read(m)) return;
            for (const wire::Record& record : native.records) {
                if (record.command == wire::Command::job) {
                    std::vector<std::string> body = native.body(record);
                    take_job(std::string(record.token), std::move(body));
                } else if (record.command == wire::Command::disconnect) {
                    return reconnect("told DISCONNECT");
                }
            }
            return;
        }
        if (m.size() < 4 || m[2] != protocol::kMdpWorker) return;
        if (m[3] == command_byte(WorkerCommand::request) && m.size() >= 6) {
            take_job(m[4], std::vector<std::string>(m.begin() + 6, m.end()));
        } else if (m[3] == command_byte(WorkerCommand::disconnect)) {
            reconnect("told DISCONNECT");
        }
    }

  protected:
    void on_connected() override {
        const Connection& connection = *this->connection();
        if (native_) {
            wire::Writer writer;
            writer.ready(service_, credit_);
            send(native_message(connection.routing_id, writer));
        } else {
            Message ready{connection.routing_id, kEmpty, std::string(protocol::kMdpWorker),
                          command_byte(WorkerCommand::ready), service_};
            if (credit_ != 1 || random().one_in(2)) ready.push_back(std::to_string(credit_));
            send(std::move(ready));
        }
        world_.oracle.worker_ready(connection.serial, service_, healthy_, true);
        next_heartbeat_ = world_.now + world_.knobs.config.heartbeat_interval;
    }

    void on_lost() override { jobs_.clear(); }

    void act() override {
        const std::string& id = connection()->routing_id;
        wire::Writer writer;
        for (auto it = jobs_.begin(); it != jobs_.end();) {
            if (it->hang || it->due > world_.now) {
                ++it;
                continue;
            }
            reply(writer, id, *it);
            if (!healthy_ && random().per_mille(world_.knobs.duplicate_reply_per_mille))
                reply(writer, id, *it);
            it = jobs_.erase(it);
        }
        if (world_.now >= next_heartbeat_) {
            next_heartbeat_ = world_.now + world_.knobs.config.heartbeat_interval;
            if (native_) {
                writer.command(wire::Command::heartbeat);
            } else {
                send({id, kEmpty, std::string(protocol::kMdpWorker),
                      command_byte(WorkerCommand::heartbeat)});
            }
        }
        if (native_ && random().one_in(2000)) {
            credit_ = static_cast<std::uint32_t>(random().between(1, world_.knobs.credit_max));
            writer.credit(credit_);
        }
        if (!writer.empty()) send(native_message(id, writer));
    }

  private:
    struct Job {
        std::string token;
        std::vector<std::string> body;
        TimePoint due;
        bool hang = false;
    };

    void take_job(std::string token, std::vector<std::string> body) {
        const Millis service_time{
            static_cast<Millis::rep>(random().between(0, world_.knobs.service_ms_max))};
        const bool hang = !healthy_ && random().per_mille(world_.knobs.hang_per_mille);
        jobs_.push_back({std::move(token), std::move(body), world_.now + service_time, hang});
    }

    void reply(wire::Writer& writer, const std::string& id, const Job& job) {
        std::vector<std::string> body;
        if (job.body.size() == 1) {
            body.push_back("R" + job.body.front());
        } else {
            body.push_back("R");
            body.insert(body.end(), job.body.begin(), job.body.end());
        }
        if (huge_ && random().per_mille(world_.knobs.huge_reply_per_mille))
            body.resize(kHugeReplyFrames);
        if (!job.body.empty() && job.body.front().starts_with('q')) {
            const std::uint64_t number = std::stoull(job.body.front().substr(1));
            world_.oracle.worker_replied(number, body);
        }
        if (native_) {
            Frames frames;
            for (const std::string& part : body)
                frames.push_back(frame(part));
            writer.reply(job.token, wire::Writer::FramesBody{frames, 0, frames.size()});
            return;
        }
        Message m{id,
                  kEmpty,
                  std::string(protocol::kMdpWorker),
                  command_byte(WorkerCommand::reply),
                  job.token,
                  kEmpty};
        m.insert(m.end(), body.begin(), body.end());
        send(std::move(m));
    }

    bool healthy_;
    bool native_ = false;
    bool huge_ = false;
    std::string service_;
    std::uint32_t credit_ = 1;
    std::vector<Job> jobs_;
    TimePoint next_heartbeat_{};
};

// A client of 7/MDP, ZBC01 or ZB/1, sync (window 1) or pipelined, with its own mix of
// deadlines, priorities and fairness keys.
class Client : public Peer {
  public:
    Client(World& world, std::size_t index)
        : Peer(world, "c" + std::to_string(index), PeerRole::client, 'c') {
        const std::size_t protocol = random().pick(4);
        protocol_ = protocol == 0   ? ClientProtocol::mdp
                    : protocol == 1 ? ClientProtocol::zbc
                                    : ClientProtocol::native;
        window_ = random().between(1, world.knobs.window_max);
        if (index == 0 && world.knobs.flooder) {
            top_priority_ = true;
            window_ = 256;
        }
    }

    void read(const Message& m) override {
        if (is_native(m)) {
            NativeMessage native;
            if (!native.read(m)) return;
            for (const wire::Record& record : native.records)
                in_flight_.erase(std::string(record.id));
            return;
        }
        if (m.size() >= 5 && m[2] == protocol::kZbcClient) in_flight_.erase(m[4]);
        if (m.size() >= 5 && m[2] == protocol::kMdpClient) {
            const std::string& first = m[4] == "R" && m.size() > 5 ? m[5] : m[4].substr(1);
            in_flight_.erase(first.substr(0, first.find(':')));
        }
    }

  protected:
    void on_connected() override {}
    void on_lost() override { in_flight_.clear(); }

    void act() override {
        for (auto it = in_flight_.begin(); it != in_flight_.end();) {
            it = it->second <= world_.now ? in_flight_.erase(it) : std::next(it);
        }
        if (world_.quiet || in_flight_.size() >= window_ || !random().one_in(2)) return;
        const std::size_t room = window_ - in_flight_.size();
        const std::size_t count =
            std::min<std::size_t>(room, random().between(1, world_.knobs.batch_max));
        wire::Writer writer;
        for (std::size_t i = 0; i < count; ++i)
            send_request(writer);
        if (!writer.empty()) send(native_message(connection()->routing_id, writer));
    }

  private:
    void send_request(wire::Writer& writer) {
        const Knobs& knobs = world_.knobs;
        Oracle::Request request;
        request.client = connection()->serial;
        request.service = "s" + std::to_string(random().pick(knobs.services));
        request.protocol = protocol_;
        if (random().per_mille(knobs.deadline_per_mille))
            request.deadline = Millis{static_cast<Millis::rep>(random().between(0, 500))};
        if (top_priority_) {
            request.priority = protocol::kMaxPriority;
        } else if (knobs.priority_levels > 1) {
            const std::uint32_t level =
                static_cast<std::uint32_t>(random().pick(knobs.priority_levels));
            request.priority = static_cast<std::uint8_t>(level * protocol::kMaxPriority /
                                                         (knobs.priority_levels - 1));
        }
        const std::size_t filler =
            random().one_in(20) ? random().between(4000, 9000) : random().pick(40);
        const bool several = random().one_in(10);
        std::string fairness_key;
        const std::size_t which_key = random().pick(4);
        if (which_key == 1) fairness_key = "k1";
        if (which_key == 2) fairness_key = "k" + std::to_string(random().pick(50));
        // Its number, which its id (7/MDP: its body) carries for the oracle.
        const std::uint64_t number = world_.oracle.requests() + 1;
        const std::string tag = "q" + std::to_string(number);
        std::string id = tag;
        if (knobs.id_size > tag.size() + 1)
            id += "_" + std::string(knobs.id_size - tag.size() - 1, 'i');
        if (several) {
            request.body = {tag + ":", "part", std::string(filler, 'x')};
        } else {
            request.body = {tag + ":" + std::string(filler, 'x')};
        }
        const std::vector<std::string> body = request.body;
        request.fairness_key = fairness_key;
        world_.oracle.new_request(std::move(request));
        const Oracle::Request& sent = world_.oracle.request(number);
        const Millis give_up = sent.deadline ? *sent.deadline + Millis{1000} : Millis{20'000};
        in_flight_[protocol_ == ClientProtocol::mdp ? tag : id] = world_.now + give_up;
        const std::string& routing_id = connection()->routing_id;
        if (protocol_ == ClientProtocol::native) {
            wire::RequestOptions options;
            if (sent.deadline)
                options.deadline_ms = static_cast<std::uint32_t>(sent.deadline->count());
            if (sent.priority != 0 || random().one_in(4)) options.priority = sent.priority;
            options.fairness_key = fairness_key;
            Frames frames;
            for (const std::string& part : body)
                frames.push_back(frame(part));
            if (frames.size() == 1) {
                writer.request(id, sent.service, options, body.front());
            } else {
                writer.request(id, sent.service, options,
                               wire::Writer::FramesBody{frames, 0, frames.size()});
            }
            if (writer.size() >= wire::kBatchBytes) send(native_message(routing_id, writer));
            return;
        }
        Message m{routing_id, kEmpty,
                  std::string(protocol_ == ClientProtocol::mdp ? protocol::kMdpClient
                                                               : protocol::kZbcClient),
                  sent.service};
        if (protocol_ == ClientProtocol::zbc) {
            RequestHeaders headers;
            headers.deadline = sent.deadline;
            if (sent.priority != 0) headers.priority = sent.priority;
            headers.fairness_key = fairness_key;
            m.push_back(id);
            m.push_back(encode_request_headers(headers));
        }
        m.insert(m.end(), body.begin(), body.end());
        send(std::move(m));
    }

    ClientProtocol protocol_;
    std::size_t window_ = 1;
    bool top_priority_ = false;
    std::map<std::string, TimePoint> in_flight_;  // by id (7/MDP: by tag), until it gives up
};

// One connection that is a ZB/1 worker and a client at once, with long ids and much credit, that
// sends requests to its own service, never replies, and may vanish holding them all.
class Combined : public Peer {
  public:
    explicit Combined(World& world) : Peer(world, "both", PeerRole::anyone, 'b') {}
    bool stays_when_calm() const override { return false; }
    void read(const Message&) override {}

  protected:
    void on_connected() override {
        wire::Writer writer;
        writer.ready("s0", credit_);
        send(native_message(connection()->routing_id, writer));
        world_.oracle.worker_ready(connection()->serial, "s0", false, false);
        next_heartbeat_ = world_.now + world_.knobs.config.heartbeat_interval;
    }
    void act() override {
        wire::Writer writer;
        if (world_.now >= next_heartbeat_) {
            next_heartbeat_ = world_.now + world_.knobs.config.heartbeat_interval;
            writer.command(wire::Command::heartbeat);
        }
        if (!world_.quiet && random().one_in(2)) {
            const std::size_t count = random().between(1, 64);
            for (std::size_t i = 0; i < count; ++i) {
                std::string id = "x" + std::to_string(next_id_++);
                id.resize(250, 'i');  // answers to it fill a batch fast
                std::optional<std::uint32_t> deadline;
                if (random().one_in(2))
                    deadline = static_cast<std::uint32_t>(random().between(1, 300));
                writer.request(id, "s0", deadline, "both");
            }
        }
        if (!writer.empty()) send(native_message(connection()->routing_id, writer));
    }

  private:
    std::uint32_t credit_ = 400;
    std::uint64_t next_id_ = 0;
    TimePoint next_heartbeat_{};
};

// Sends what no well-behaved peer sends: garbage, commands out of order, forged tokens, replies
// from clients, requests from workers, READY for services it then never serves.
class Hostile : public Peer {
  public:
    // Under CURVE every other one has a worker's key: what it asks must never be answered.
    Hostile(World& world, std::size_t index)
        : Peer(world, "h" + std::to_string(index),
               index % 2 == 0 ? PeerRole::client : PeerRole::worker, 'h') {}
    bool stays_when_calm() const override { return false; }
    void read(const Message&) override {}

  protected:
    void on_connected() override {}
    void act() override {
        if (!random().one_in(4)) return;
        const std::string& id = connection()->routing_id;
        const std::string mdpw(protocol::kMdpWorker);
        switch (random().pick(9)) {
            case 0:
                send({id, kEmpty, mdpw, command_byte(WorkerCommand::reply), forged_token(), kEmpty,
                      "forged"});
                break;
            case 1:
                send({id, kEmpty, mdpw, command_byte(WorkerCommand::heartbeat)});
                break;
            case 2: {
                Message m{id};
                for (std::size_t i = random().pick(6); i > 0; --i)
                    m.push_back(
                        std::string(random().pick(12), static_cast<char>(random().pick(256))));
                send(std::move(m));
                break;
            }
            case 3: {
                std::string raw(wire::kSignature);
                for (std::size_t i = random().pick(30); i > 0; --i)
                    raw += static_cast<char>(random().pick(256));
                send({id, raw});
                break;
            }
            case 4: {
                wire::Writer writer;
                writer.reply(forged_token(), "forged");
                send(native_message(id, writer));
                break;
            }
            case 5:
                send({id, kEmpty, std::string(protocol::kMdpClient), "mmi.service", "s0"});
                break;
            case 6: {
                wire::Writer writer;
                writer.request("x" + std::to_string(random().pick(1000)),
                               random().one_in(2) ? "s0" : "", std::nullopt, "h");
                send(native_message(id, writer));
                break;
            }
            case 7: {
                // A request in a message the broker must not act on (a worker key's, or a
                // malformed envelope): never answered, whatever else the message holds.
                wire::Writer writer;
                writer.request("never" + std::to_string(random().pick(1000)), "s0", std::nullopt,
                               "n");
                Message m = native_message(id, writer);
                switch (role() == PeerRole::worker ? 3 : random().pick(3)) {
                    case 0:
                        m[1] += static_cast<char>(0x7F);  // then an unknown command
                        break;
                    case 1:
                        m.push_back("stray");  // a frame no record claims
                        break;
                    case 2:
                        m[1].pop_back();  // cut short
                        break;
                    default:
                        break;  // a worker key may not ask
                }
                send(std::move(m));
                break;
            }
            default:
                send({id, kEmpty, mdpw, command_byte(WorkerCommand::ready), "mmi.x"});
                break;
        }
    }

  private:
    // Slot and generation are guessable: the broker must check who holds a token, not only
    // that it names a live request.
    std::string forged_token() {
        std::string token(broker::kTokenSize, '\0');
        token[0] = static_cast<char>(random().pick(8));
        token[4] = static_cast<char>(random().pick(3));
        return token;
    }
};

// Takes the routing id of a peer that just left (with CURVE: its own client key) and listens:
// whatever the broker meant for the one that left must not reach it.
class Impostor : public Peer {
  public:
    Impostor(World& world, std::size_t index, std::string routing_id)
        : Peer(world, "i" + std::to_string(index), PeerRole::client, 'i') {
        routing_id_ = std::move(routing_id);
    }
    bool stays_when_calm() const override { return false; }
    void read(const Message&) override {}

  protected:
    void on_connected() override {}
    void act() override {}
};

// ---------------------------------------------------------------------------------------------
// The world

World::World(const Knobs& k)
    : knobs(k),
      workload(Random(k.seed).split()),
      network(Random(k.seed ^ 0x6E6574776F726Bull).split()),
      chaos(Random(k.seed ^ 0x6661756C7473ull).split()),
      now(TimePoint{} + std::chrono::hours(1)),
      oracle(knobs) {
    start_broker();
    for (std::size_t i = 0; i < knobs.workers; ++i)
        peers.push_back(std::make_unique<Worker>(*this, i, i < knobs.services));
    for (std::size_t i = 0; i < knobs.clients; ++i)
        peers.push_back(std::make_unique<Client>(*this, i));
    for (std::size_t i = 0; i < knobs.hostiles; ++i)
        peers.push_back(std::make_unique<Hostile>(*this, i));
    if (knobs.combined && !knobs.curve) peers.push_back(std::make_unique<Combined>(*this));
}

SendResult World::Outbox::send(FrameSpan frames) {
    World& w = world_;
    Message message = to_message(frames);
    const auto route = w.routes.find(message.front());
    SendResult result = SendResult::sent;
    Connection* to = nullptr;
    if (route == w.routes.end()) {
        result = SendResult::unroutable;
    } else if (!route->second->open || route->second->inbox.size() >= w.knobs.hwm ||
               (!w.calm && w.network.per_mille(w.knobs.would_block))) {
        result = SendResult::would_block;
    } else {
        to = route->second;
    }
    w.fingerprint = mix(w.fingerprint, std::to_string(static_cast<int>(result)));
    for (const std::string& part : message)
        w.fingerprint = mix(w.fingerprint, part);
    w.oracle.sent_by_core(message, result, to ? std::optional(to->serial) : std::nullopt, w.now);
    if (to != nullptr) to->inbox.push_back(std::move(message));
    return result;
}

void World::trace(std::string line) {
    std::ostringstream out;
    out << "step " << steps
        << " t=" << (now - (TimePoint{} + std::chrono::hours(1))).count() / 1'000'000
        << "ms: " << line;
    lines.push_back(out.str());
    if (lines.size() > trace_lines) lines.pop_front();
}

std::string World::fresh_routing_id(char kind) {
    const std::uint64_t n = next_routing_id++;
    if (workload.one_in(3)) {
        // libzmq's own: a zero byte and a counter, easy to guess.
        std::string id(5, '\0');
        for (int i = 0; i < 4; ++i)
            id[static_cast<std::size_t>(1 + i)] = static_cast<char>(n >> (8 * (3 - i)));
        return id;
    }
    std::string id = std::string(1, kind) + std::to_string(n);
    if (knobs.id_size > 0 && workload.one_in(2)) id.resize(knobs.id_size, '-');
    return id;
}

Connection& World::connect(Peer& peer, const std::string& routing_id) {
    auto connection = std::make_unique<Connection>();
    connection->serial = next_serial++;
    connection->routing_id = routing_id;
    connection->key = peer.key();
    connection->role = peer.role();
    connection->peer = &peer;
    routes[routing_id] = connection.get();
    oracle.connection_opened(connection->serial, routing_id, connection->key, connection->role);
    trace(peer.name() + " connects as " + printable(routing_id) + " (#" +
          std::to_string(connection->serial) + ")");
    connections.push_back(std::move(connection));
    return *connections.back();
}

void World::close(Connection& connection, const char* why) {
    if (!connection.open) return;
    connection.open = false;
    connection.inbox.clear();
    // What it sent before it closed has reached the broker's socket: still read, as libzmq
    // does, and its routing id stays taken until it all has been (sends to it would block).
    if (connection.to_broker.empty()) free_route(connection);
    departed.push_back(connection.routing_id);
    if (knobs.curve && connection.heard) closes.push_back(connection.routing_id);
    if (departed.size() > 16) departed.erase(departed.begin());
    oracle.connection_closed(connection.serial, now);
    trace(connection.peer->name() + " #" + std::to_string(connection.serial) + " closes: " + why);
    const bool retire = calm && !connection.peer->stays_when_calm();
    connection.peer->lost(Millis{static_cast<Millis::rep>(workload.between(0, 300))}, retire);
}

void World::start_broker() {
    core = std::make_unique<broker::BrokerCore>(knobs.config, outbox, now);
    draining = false;
}

void World::restart_broker(const char* why) {
    trace(std::string("broker restarts: ") + why);
    core.reset();
    oracle.broker_restarted(now);
    for (auto& connection : connections) {
        if (connection->open) close(*connection, "its broker restarted");
    }
    for (auto& connection : connections)
        connection->to_broker.clear();
    closes.clear();
    start_broker();
}

void World::free_route(Connection& connection) {
    const auto route = routes.find(connection.routing_id);
    if (route != routes.end() && route->second == &connection) routes.erase(route);
}

void World::tell_closes() {
    for (const std::string& identity : closes)
        core->on_peer_gone(identity);
    closes.clear();
}

void World::read_batch() {
    tell_closes();
    std::vector<Connection*> ready;
    for (auto& connection : connections) {
        if (!connection->to_broker.empty()) ready.push_back(connection.get());
    }
    if (ready.empty()) return;
    const std::size_t batch = network.between(1, 16);
    for (std::size_t i = 0; i < batch && !ready.empty(); ++i) {
        const std::size_t index = network.pick(ready.size());
        Connection& connection = *ready[index];
        Message message = std::move(connection.to_broker.front());
        connection.to_broker.pop_front();
        if (connection.to_broker.empty())
            ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(index));
        // The requests in it are read now: their deadlines count from here.
        note_requests(message, connection.serial);
        connection.heard = true;
        Frames frames = to_frames(message);
        core->on_message(frames, now, connection.role, connection.key);
        if (!connection.open) {
            // Sent before its connection closed: the loop acts on it, then, knowing the
            // connection closed, tells the core its peer is gone.
            if (knobs.curve) core->on_peer_gone(connection.routing_id);
            if (connection.to_broker.empty()) free_route(connection);
        }
    }
    core->flush();
}

void World::note_requests(const Message& m, std::uint64_t serial) {
    const auto read = [this](std::string_view tag) {
        if (!tag.starts_with('q')) return;
        const std::uint64_t number = std::stoull(std::string(tag.substr(1)));
        if (number >= 1 && number <= oracle.requests()) oracle.read_by_core(number, now);
    };
    if (is_native(m)) {
        NativeMessage native;
        if (!native.read(m)) return;
        for (const wire::Record& record : native.records) {
            if (record.command == wire::Command::request) read(record.id);
            if (record.command == wire::Command::ready) oracle.ready_read(serial);
        }
        return;
    }
    if (m.size() >= 4 && m[2] == protocol::kMdpWorker && m[3] == command_byte(WorkerCommand::ready))
        return oracle.ready_read(serial);
    if (m.size() >= 5 && m[2] == protocol::kZbcClient) return read(m[4]);
    if (m.size() >= 5 && m[2] == protocol::kMdpClient) read(m[4]);
}

void World::tick(Millis by) {
    now += by;
    tell_closes();
    if (now >= core->next_timer()) {
        core->on_timer(now);
        core->flush();
    }
    if (draining && core->drain_complete(now)) {
        core->finish_drain();
        restart_broker("drained");
    }
}

void World::inject_fault() {
    Random& r = chaos;
    if (r.per_mille(knobs.vanish)) {
        std::vector<Peer*> online;
        for (auto& peer : peers) {
            if (peer->online()) online.push_back(peer.get());
        }
        if (!online.empty()) {
            ++faults;
            Peer& peer = *online[r.pick(online.size())];
            close(*peer.connection(), "vanishes");
        }
    }
    if (r.per_mille(knobs.impostor) && !departed.empty()) {
        const std::string id = departed[r.pick(departed.size())];
        if (routes.count(id) == 0) {
            ++faults;
            peers.push_back(std::make_unique<Impostor>(*this, peers.size(), id));
            trace("an impostor takes routing id " + printable(id));
            peers.back()->wake();
        }
    }
    if (r.per_mille(knobs.clock_jump)) {
        ++faults;
        const Millis jump{static_cast<Millis::rep>(r.between(1, 3 * knobs.expiry().count()))};
        trace("the clock jumps " + std::to_string(jump.count()) + " ms");
        tick(jump);
    }
    if (knobs.restart > 0 && r.one_in(20'000)) {
        ++faults;
        restart_broker("killed");
    }
    if (knobs.drain > 0 && !draining && r.one_in(20'000)) {
        ++faults;
        trace("the broker begins to drain");
        draining = true;
        core->begin_drain(now);
    }
}

void World::begin_calm() {
    calm = true;
    trace("calm: faults off, unhealthy and hostile peers leave");
    for (auto& peer : peers) {
        if (peer->stays_when_calm()) continue;
        peer->retire();
        if (peer->online()) close(*peer->connection(), "leaves for the calm phase");
    }
    oracle.calm_begins();
}

void World::step() {
    ++steps;
    g_current_step = steps;
    if (!calm && steps > knobs.chaos_steps) begin_calm();
    if (!quiet && steps > knobs.chaos_steps + knobs.calm_steps) {
        quiet = true;
        trace("quiet: no new requests");
    }
    const std::size_t roll = network.pick(100);
    if (roll < 25) {
        read_batch();
    } else if (roll < 60) {
        Peer& peer = *peers[workload.pick(peers.size())];
        peer.wake();
    } else if (roll < 90) {
        std::vector<Connection*> unread;
        for (auto& connection : connections) {
            if (connection->open && !connection->inbox.empty() &&
                (!connection->peer->slow_reader() || network.one_in(8)))
                unread.push_back(connection.get());
        }
        if (!unread.empty()) {
            Connection& connection = *unread[network.pick(unread.size())];
            Message message = std::move(connection.inbox.front());
            connection.inbox.pop_front();
            connection.peer->read(message);
        }
    } else {
        tick(Millis{1});
    }
    if (!calm) inject_fault();
}

// ---------------------------------------------------------------------------------------------

Simulation::Simulation(const Knobs& knobs) : world_(std::make_unique<World>(knobs)) {}
Simulation::~Simulation() = default;

void Simulation::follow(std::uint64_t number) {
    World& w = *world_;
    w.trace_lines = 400;
    w.oracle.follow(number, [&w](std::string line) { w.trace(std::move(line)); });
}

Failure Simulation::run() {
    World& w = *world_;
    const std::uint64_t busy = w.knobs.chaos_steps + w.knobs.calm_steps;
    while (w.oracle.failure() == Failure::none) {
        w.step();
        w.oracle.check(w.now, *w.core, w.calm);
        if (w.steps > busy && w.oracle.all_answered()) break;
        if (w.steps > busy + w.knobs.quiet_steps_max) {
            w.oracle.check_all_answered(w.now);
            break;
        }
    }
    if (w.oracle.failure() != Failure::none) {
        // The broker's own view, to read beside the oracle's.
        for (std::size_t i = 0; i < w.knobs.services; ++i) {
            const std::string name = "s" + std::to_string(i);
            const auto info = w.core->service_info(name);
            if (!info) continue;
            std::string keys;
            for (const auto& load : info->top_keys)
                keys += " " + printable(load.key) + ":" + std::to_string(load.waiting);
            w.trace("the broker: '" + name + "' has " + std::to_string(info->workers) +
                    " worker(s), " + std::to_string(info->waiting) + " waiting, " +
                    std::to_string(info->in_flight) + " in flight; " + std::to_string(info->keys) +
                    " keys, the top ones" + keys);
        }
        return w.oracle.failure();
    }
    // Last, a drain: nothing is left held.
    w.core->begin_drain(w.now);
    while (!w.core->drain_complete(w.now))
        w.tick(Millis{1});
    w.core->finish_drain();
    if (w.core->live_requests() != 0) return Failure::safety;
    return Failure::none;
}

const Oracle& Simulation::oracle() const noexcept {
    return world_->oracle;
}
std::uint64_t Simulation::steps() const noexcept {
    return world_->steps;
}
std::uint64_t Simulation::faults() const noexcept {
    return world_->faults;
}
std::uint64_t Simulation::fingerprint() const noexcept {
    return world_->fingerprint;
}
std::string Simulation::trace() const {
    std::string text;
    for (const std::string& line : world_->lines)
        text += line + "\n";
    return text;
}
std::uint64_t Simulation::current_step() noexcept {
    return g_current_step;
}

}  // namespace zbroker::sim
