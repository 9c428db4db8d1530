// libFuzzer target: bytes become a run of messages from clients and workers, in 7/MDP, ZBC01
// and ZB/1, clock ticks and a drain, fed to BrokerCore with no sockets, flushed after each as
// the poll loop does. It must never crash, leak or trip a sanitizer; every message it sends
// must be routable (routing id, then an empty delimiter or a ZB/1 envelope that parses and holds
// only records a broker sends); and once drained it must hold no request: everything was
// answered or counted.
//
// Frames are assembled from protocol tokens (headers, commands, services, the tokens workers
// were really given) as well as raw bytes, and ZB/1 messages from records written with
// wire::Writer (sometimes corrupted) as well as raw envelopes, so the fuzzer reaches the deep
// states quickly.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "broker/broker_core.hpp"
#include "shared/wire.hpp"

namespace {

using namespace zbroker;
using namespace zbroker::broker;

// Reads the input front to back; past its end every read gives zeros.
class InputReader {
  public:
    InputReader(const std::uint8_t* data, std::size_t size) : data_(data), left_(size) {}
    bool empty() const noexcept { return left_ == 0; }
    std::uint8_t byte() noexcept {
        if (left_ == 0) return 0;
        --left_;
        return *data_++;
    }
    std::string bytes(std::size_t count) {
        count = std::min(count, left_);
        std::string out(reinterpret_cast<const char*>(data_), count);
        data_ += count;
        left_ -= count;
        return out;
    }

  private:
    const std::uint8_t* data_;
    std::size_t left_;
};

// Checks what the core sends and keeps the tokens it hands to workers, in MDP and ZB/1.
class CheckingOutbox : public Outbox {
  public:
    SendResult send(FrameSpan frames) override {
        if (frames.size() < 2 || frames[0].size() == 0) std::abort();
        const SendResult result = fate_of(view(frames[0]));
        if (wire::is_envelope(frames[1])) {
            check_native(frames, result);
            return result;
        }
        if (frames.size() < 3 || frames[1].size() != 0) std::abort();
        if (result == SendResult::sent && frames.size() >= 5 &&
            view(frames[2]) == protocol::kMdpWorker && view(frames[3]).size() == 1 &&
            view(frames[3])[0] == static_cast<char>(protocol::WorkerCommand::request)) {
            keep_token(view(frames[4]));
        }
        return result;
    }
    // What a send to each peer does; the input sets it, so back-pressure (would-block) and
    // vanished peers (unroutable) are explored as well as delivery.
    SendResult fate_of(std::string_view peer) const {
        const auto it = fate.find(peer);
        return it == fate.end() ? SendResult::sent : it->second;
    }
    std::vector<std::string> tokens;
    std::map<std::string, SendResult, std::less<>> fate;

  private:
    void keep_token(std::string_view token) {
        tokens.emplace_back(token);
        if (tokens.size() > 64) tokens.erase(tokens.begin());
    }
    // A ZB/1 message from the broker parses, and holds only what a broker may send.
    void check_native(FrameSpan frames, SendResult result) {
        const char* error = nullptr;
        if (!wire::parse(frames, 1, records_, error)) std::abort();
        for (const wire::Record& record : records_) {
            switch (record.command) {
                case wire::Command::job:
                    if (record.token.size() != kTokenSize) std::abort();
                    if (result == SendResult::sent) keep_token(record.token);
                    break;
                case wire::Command::answer:
                case wire::Command::heartbeat:
                case wire::Command::disconnect:
                case wire::Command::credit:
                    break;
                case wire::Command::request:
                case wire::Command::ready:
                case wire::Command::reply:
                    std::abort();
            }
        }
    }
    std::vector<wire::Record> records_;
};

const std::string kPeers[] = {"client-a", "client-b", "worker-a",
                              "worker-b", "worker-c", std::string(5, '\0')};
const PeerRole kRoles[] = {PeerRole::anyone, PeerRole::client, PeerRole::worker, PeerRole::admin};
const std::string kTokens[] = {"", "MDPC01", "ZBC01", "MDPW01", "\x01", "\x02", "\x03", "\x04",
                               "\x05", "echo", "sleep", "mmi.service", "mmi.services", "mmi.stats",
                               "mmi.drain", "mmi.other", "\x80",
                               "\x81\xab"
                               "deadline_ms\x05",
                               "\x81\xab"
                               "deadline_ms\xcd\x01\x00",
                               // ZBC01 headers with the other options, good and bad: a priority
                               // (10 is refused), a fairness key, an idempotency key (empty is
                               // refused), and all at once.
                               "\x81\xa8priority\x05", "\x81\xa8priority\x0a",
                               "\x81\xac"
                               "fairness_key\xa8tenant-a",
                               "\x81\xac"
                               "fairness_key\xa0",
                               "\x81\xaf"
                               "idempotency_key\xa1k",
                               "\x81\xaf"
                               "idempotency_key\xa0",
                               "\x83\xab"
                               "deadline_ms\x32\xa8priority\x09\xac"
                               "fairness_key\xa8tenant-b",
                               "3", "99999999999", "id-1"};
constexpr std::size_t kTokenCount = sizeof kTokens / sizeof kTokens[0];

std::string next_frame(InputReader& in, const CheckingOutbox& outbox) {
    const std::uint8_t choice = in.byte();
    if (choice < 128) return kTokens[choice % kTokenCount];
    if (choice < 192 && !outbox.tokens.empty())
        return outbox.tokens[in.byte() % outbox.tokens.size()];
    return in.bytes(in.byte() % 40);
}

// ---------------------------------------------------------------------------------------------
// ZB/1

const std::string kServices[] = {
    "echo",      "sleep", "mmi.service", "mmi.services",       "mmi.stats", "mmi.drain",
    "mmi.other", "",      "e",           std::string(255, 's')};  // the longest name
const std::string kIds[] = {"", "id-1", "id-2", "id-3"};
const protocol::Status kStatuses[] = {protocol::Status::ok, protocol::Status::unavailable,
                                      protocol::Status::no_reply, protocol::Status{201}};

std::string short_field(InputReader& in, const std::string (&choices)[4]) {
    const std::uint8_t choice = in.byte();
    if (choice < 224) return choices[choice % 4];
    return in.bytes(in.byte() % 12);
}

std::string next_token(InputReader& in, const CheckingOutbox& outbox) {
    const std::uint8_t choice = in.byte();
    if (choice < 192 && !outbox.tokens.empty())
        return outbox.tokens[in.byte() % outbox.tokens.size()];
    return in.bytes(choice < 224 ? kTokenSize : in.byte() % 16);
}

std::optional<std::uint32_t> next_deadline(InputReader& in) {
    const std::uint8_t choice = in.byte();
    if ((choice & 1) == 0) return std::nullopt;
    return static_cast<std::uint32_t>(choice >> 1) * 8;  // 0 to 1016 ms
}

// REQUEST options: a deadline, a priority (10 is refused), the keys, each present or not.
const std::string kKeys[] = {"tenant-a", "tenant-b", "k", std::string(255, 'k')};

wire::RequestOptions next_options(InputReader& in) {
    wire::RequestOptions options(next_deadline(in));
    const std::uint8_t choice = in.byte();
    if ((choice & 1) != 0) options.priority = static_cast<std::uint8_t>(in.byte() % 11);
    if ((choice & 2) != 0) options.fairness_key = kKeys[in.byte() % std::size(kKeys)];
    if ((choice & 4) != 0) options.idempotency_key = kKeys[in.byte() % std::size(kKeys)];
    return options;
}

// Writes a body: inline bytes, one frame past the inline limit, or several small frames.
template <typename Write>
void with_body(InputReader& in, Write&& write) {
    const std::uint8_t choice = in.byte();
    if (choice < 200) return write(in.bytes(choice % 24));
    if (choice < 224) return write(std::string(wire::kInlineBodyLimit + 1, 'L'));
    Frames parts;
    for (int i = 0; i < 2 + choice % 3; ++i)
        parts.push_back(frame(in.bytes(in.byte() % 8)));
    write(wire::Writer::FramesBody{parts, 0, parts.size(), (choice & 1) != 0});
}

void write_record(InputReader& in, const CheckingOutbox& outbox, wire::Writer& writer) {
    switch (in.byte() % 10) {
        case 0:
        case 1: {
            const std::string id = short_field(in, kIds);
            const std::string& service = kServices[in.byte() % std::size(kServices)];
            const wire::RequestOptions options = next_options(in);
            with_body(in, [&](auto body) { writer.request(id, service, options, body); });
            break;
        }
        case 2: {
            const std::string& service = kServices[in.byte() % std::size(kServices)];
            writer.ready(service, in.byte() % 6);  // 0 and 5 (past max_credit) are refused
            break;
        }
        case 3:
        case 4: {
            const std::string token = next_token(in, outbox);
            with_body(in, [&](auto body) { writer.reply(token, body); });
            break;
        }
        case 5:
            writer.command(wire::Command::heartbeat);
            break;
        case 6:
            writer.command(wire::Command::disconnect);
            break;
        case 7:
            writer.credit(in.byte() % 6);
            break;
        case 8: {  // only the broker sends JOB
            const std::string token = next_token(in, outbox);
            const auto deadline = next_deadline(in);
            Frames body;
            body.push_back(frame(in.bytes(in.byte() % 8)));
            writer.job(token, deadline, kKeys[in.byte() % std::size(kKeys)], {body, 0, 1});
            break;
        }
        default: {  // only the broker sends ANSWER; 0 and 201 are not statuses
            const std::string id = short_field(in, kIds);
            writer.answer(id, kStatuses[in.byte() % std::size(kStatuses)], in.bytes(in.byte() % 8));
            break;
        }
    }
}

// A ZB/1 message: records written from the input, sometimes corrupted, or a raw envelope.
void native_message(InputReader& in, const CheckingOutbox& outbox, std::uint8_t op,
                    Frames& frames) {
    const std::uint8_t form = in.byte();
    if (form < 24) {  // the signature, then raw bytes, then 0 to 2 raw frames
        frames.push_back(frame(std::string(wire::kSignature) + in.bytes(in.byte() % 48)));
        for (int i = 0; i < form % 3; ++i)
            frames.push_back(frame(in.bytes(in.byte() % 8)));
        return;
    }
    wire::Writer writer;
    const int records = 1 + op % 4;
    for (int i = 0; i < records; ++i)
        write_record(in, outbox, writer);
    writer.take(frames);
    if (form < 32) {  // corrupted: cut short, a byte more, or a frame no record claims
        std::string envelope(view(frames[1]));
        switch (form % 3) {
            case 0:
                envelope.resize(envelope.size() -
                                std::min<std::size_t>(envelope.size(), 1 + in.byte() % 4));
                break;
            case 1:
                envelope += static_cast<char>(in.byte());
                break;
            default:
                frames.push_back(frame(in.bytes(in.byte() % 8)));
                break;
        }
        frames[1] = frame(envelope);
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    spdlog::set_level(spdlog::level::off);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    InputReader in(data, size);
    BrokerConfig config;
    config.heartbeat_interval = Millis(100);
    config.max_attempts = 2;
    config.queue_limit = 8;
    config.max_requests = 16;
    config.max_msg_size = 64;
    config.max_credit = 4;
    config.drain_timeout = Millis(500);
    TimePoint now{std::chrono::hours(1)};
    CheckingOutbox outbox;
    BrokerCore core(config, outbox, now);

    while (!in.empty()) {
        const std::uint8_t op = in.byte();
        if (op < 24) {  // time passes
            now += Millis(op * 20);
            core.on_timer(now);
        } else if (op == 24) {
            if (!core.draining()) core.begin_drain(now);
        } else if (op == 25) {  // a peer's queue fills, it vanishes, or it reads again
            const std::string& peer = kPeers[in.byte() % std::size(kPeers)];
            outbox.fate[peer] = static_cast<SendResult>(in.byte() % 3);
        } else if (op < 192) {  // a message: routing id, then 1 to 8 frames
            Frames frames;
            frames.push_back(frame(kPeers[in.byte() % std::size(kPeers)]));
            const PeerRole role = kRoles[in.byte() % std::size(kRoles)];
            const int count = 1 + op % 8;
            for (int i = 0; i < count; ++i)
                frames.push_back(frame(next_frame(in, outbox)));
            core.on_message(frames, now, role);
        } else {  // a ZB/1 message of 1 to 4 records
            Frames frames;
            frames.push_back(frame(kPeers[in.byte() % std::size(kPeers)]));
            const PeerRole role = kRoles[in.byte() % std::size(kRoles)];
            native_message(in, outbox, op, frames);
            core.on_message(frames, now, role);
        }
        core.flush();  // as the poll loop does after each read batch and timer
    }
    if (!core.draining()) core.begin_drain(now);
    while (!core.drain_complete(now)) {
        now += Millis(100);
        core.on_timer(now);
        core.flush();
    }
    core.finish_drain();
    if (core.live_requests() != 0) std::abort();  // something held and never answered
    return 0;
}
