// ZB/1 codec (shared/wire.hpp): every record kind survives Writer -> frames -> parse, bodies go
// inline or in frames as the limit says, and no malformed input is accepted or crashes the reader.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "shared/wire.hpp"
#include "wire_bytes.hpp"

using namespace zbroker;
using namespace zbroker::wire;
using protocol::Status;
using testing::u32;

namespace {

// The frames the Writer produced, after a routing id as a ROUTER would put first.
Frames take(Writer& writer, bool with_identity = false) {
    Frames frames;
    if (with_identity) frames.push_back(frame("peer"));
    writer.take(frames);
    return frames;
}

std::vector<Record> parse_ok(const Frames& frames, std::size_t at = 0) {
    std::vector<Record> records;
    const char* error = nullptr;
    const bool ok = parse(frames, at, records, error);
    INFO((error != nullptr ? error : ""));
    REQUIRE(ok);
    return records;
}

// Parses and expects a rejection with a reason.
void reject(const Frames& frames, std::size_t at = 0) {
    std::vector<Record> records;
    const char* error = nullptr;
    REQUIRE_FALSE(parse(frames, at, records, error));
    REQUIRE(error != nullptr);
    REQUIRE(std::string(error).size() > 0);
}

// An envelope frame from raw bytes after the signature.
zmq::message_t envelope(const std::string& after_signature) {
    return frame(std::string(kSignature) + after_signature);
}

Frames frames_of(std::initializer_list<std::string> parts) {
    Frames frames;
    for (const std::string& part : parts)
        frames.push_back(frame(part));
    return frames;
}

std::string body_text(const Frames& message, const Body& body) {
    std::string text;
    if (!body.in_frames) return std::string(body.bytes);
    for (std::size_t i = body.first; i < body.first + body.count; ++i)
        text += view(message[i]);
    return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_CASE("every record kind goes through Writer, frames and parse unchanged") {
    Writer writer;
    Frames source = frames_of({"job-body"});

    SECTION("REQUEST without a deadline") {
        writer.request("id-1", "echo", std::nullopt, "hello");
        const Frames frames = take(writer);
        REQUIRE(frames.size() == 1);
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 1);
        const Record& r = records[0];
        REQUIRE(r.command == Command::request);
        REQUIRE(r.id == "id-1");
        REQUIRE(r.service == "echo");
        REQUIRE_FALSE(r.deadline_ms);
        REQUIRE_FALSE(r.body.in_frames);
        REQUIRE(r.body.bytes == "hello");
    }
    SECTION("REQUEST with a deadline") {
        writer.request("i", "svc", 0xDEADBEEFu, "");
        const Frames frames = take(writer);
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 1);
        REQUIRE(records[0].deadline_ms == std::optional<std::uint32_t>(0xDEADBEEFu));
        REQUIRE(records[0].body.bytes.empty());
        REQUIRE(records[0].id == "i");
    }
    SECTION("REQUEST with a deadline of 0") {
        writer.request("i", "svc", 0u, "x");
        const Frames frames = take(writer);
        REQUIRE(parse_ok(frames)[0].deadline_ms == std::optional<std::uint32_t>(0u));
    }
    SECTION("ANSWER, for every status the broker gives") {
        for (const Status status :
             {Status::ok, Status::bad_request, Status::too_large, Status::queue_full,
              Status::retries_exhausted, Status::unavailable, Status::deadline_exceeded}) {
            writer.answer("id-9", status, "result");
            const Frames frames = take(writer);
            const auto records = parse_ok(frames);
            REQUIRE(records.size() == 1);
            REQUIRE(records[0].command == Command::answer);
            REQUIRE(records[0].id == "id-9");
            REQUIRE(records[0].status == status);
            REQUIRE(records[0].body.bytes == "result");
        }
    }
    SECTION("ANSWER with a FramesBody and no body") {
        writer.answer("a", Status::ok, Writer::FramesBody{source, 0, 1});
        writer.answer("b", Status::unavailable);
        const Frames frames = take(writer);
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 2);
        REQUIRE(records[0].body.bytes == "job-body");
        REQUIRE(records[1].status == Status::unavailable);
        REQUIRE(body_size(frames, records[1].body) == 0);
    }
    SECTION("READY") {
        writer.ready("echo", 7);
        const Frames frames = take(writer);
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 1);
        REQUIRE(records[0].command == Command::ready);
        REQUIRE(records[0].service == "echo");
        REQUIRE(records[0].credit == 7);
    }
    SECTION("JOB with and without a deadline") {
        writer.job("tok-0123456", 250u, {}, Writer::FramesBody{source, 0, 1, true});
        writer.job("tok-2", std::nullopt, {}, Writer::FramesBody{source, 0, 1, true});
        const Frames frames = take(writer);
        REQUIRE(frames.size() == 1);  // small bodies travel inline
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 2);
        REQUIRE(records[0].command == Command::job);
        REQUIRE(records[0].token == "tok-0123456");
        REQUIRE(records[0].deadline_ms == std::optional<std::uint32_t>(250u));
        REQUIRE(records[0].body.bytes == "job-body");
        REQUIRE(records[1].token == "tok-2");
        REQUIRE_FALSE(records[1].deadline_ms);
        REQUIRE(view(source[0]) == "job-body");  // inline copies: the source is untouched
    }
    SECTION("REPLY, from bytes and from frames") {
        writer.reply("t1", "bytes");
        writer.reply("t2", Writer::FramesBody{source, 0, 1});
        const Frames frames = take(writer);
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 2);
        REQUIRE(records[0].command == Command::reply);
        REQUIRE(records[0].token == "t1");
        REQUIRE(records[0].body.bytes == "bytes");
        REQUIRE(records[1].token == "t2");
        REQUIRE(records[1].body.bytes == "job-body");
    }
    SECTION("HEARTBEAT, DISCONNECT and CREDIT") {
        writer.command(Command::heartbeat);
        writer.command(Command::disconnect);
        writer.credit(0);
        writer.credit(0xFFFFFFFFu);
        const Frames frames = take(writer);
        const auto records = parse_ok(frames);
        REQUIRE(records.size() == 4);
        REQUIRE(records[0].command == Command::heartbeat);
        REQUIRE(records[1].command == Command::disconnect);
        REQUIRE(records[2].command == Command::credit);
        REQUIRE(records[2].credit == 0);
        REQUIRE(records[3].credit == 0xFFFFFFFFu);
    }
}

TEST_CASE("command names are what the docs and logs say") {
    REQUIRE(command_name(Command::request) == "REQUEST");
    REQUIRE(command_name(Command::answer) == "ANSWER");
    REQUIRE(command_name(Command::ready) == "READY");
    REQUIRE(command_name(Command::job) == "JOB");
    REQUIRE(command_name(Command::reply) == "REPLY");
    REQUIRE(command_name(Command::heartbeat) == "HEARTBEAT");
    REQUIRE(command_name(Command::disconnect) == "DISCONNECT");
    REQUIRE(command_name(Command::credit) == "CREDIT");
    REQUIRE(command_name(static_cast<Command>(0x7F)) == "unknown");
}

TEST_CASE("several records of every kind share one envelope, in order") {
    Writer writer;
    REQUIRE(writer.empty());
    writer.request("r1", "a", std::nullopt, "one");
    writer.request("r2", "b", 10u, std::string(kInlineBodyLimit + 1, 'B'));
    writer.answer("r3", Status::queue_full);
    writer.ready("svc", 3);
    writer.command(Command::heartbeat);
    writer.reply("tok", "two");
    writer.credit(2);
    writer.command(Command::disconnect);
    REQUIRE(writer.records() == 8);
    REQUIRE_FALSE(writer.empty());
    const std::size_t size = writer.size();
    REQUIRE(size > kSignature.size());

    const Frames frames = take(writer, true);
    REQUIRE(writer.empty());  // take() starts afresh
    REQUIRE(writer.size() == kSignature.size());
    REQUIRE(frames.size() == 3);                           // identity, envelope, the large body
    REQUIRE(frames[1].size() + frames[2].size() == size);  // size() counts bodies in frames
    const auto records = parse_ok(frames, 1);
    REQUIRE(records.size() == 8);
    const std::vector<Command> expected{Command::request, Command::request,   Command::answer,
                                        Command::ready,   Command::heartbeat, Command::reply,
                                        Command::credit,  Command::disconnect};
    for (std::size_t i = 0; i < expected.size(); ++i)
        REQUIRE(records[i].command == expected[i]);
    REQUIRE(records[0].body.bytes == "one");
    REQUIRE(records[1].body.in_frames);
    REQUIRE(records[1].body.first == 2);
    REQUIRE(records[1].body.count == 1);
    REQUIRE(body_text(frames, records[1].body) == std::string(kInlineBodyLimit + 1, 'B'));
    REQUIRE(records[2].status == Status::queue_full);
    REQUIRE(records[3].credit == 3);
    REQUIRE(records[5].body.bytes == "two");
    REQUIRE(records[6].credit == 2);
}

TEST_CASE("a writer can be cleared and reused") {
    Writer writer;
    Frames big = frames_of({std::string(kInlineBodyLimit + 10, 'x')});
    writer.reply("t", Writer::FramesBody{big, 0, 1, true});
    writer.clear();
    REQUIRE(writer.empty());
    writer.command(Command::heartbeat);
    const Frames frames = take(writer);
    REQUIRE(frames.size() == 1);  // the cleared record's body frame went with it
    const auto records = parse_ok(frames);
    REQUIRE(records.size() == 1);
    REQUIRE(records[0].command == Command::heartbeat);
}

// ---------------------------------------------------------------------------------------------
// Bodies

TEST_CASE("a body up to kInlineBodyLimit travels inline, a larger one as a frame") {
    Writer writer;
    const std::string at_limit(kInlineBodyLimit, 'i');
    const std::string over_limit(kInlineBodyLimit + 1, 'o');
    writer.request("1", "s", std::nullopt, at_limit);
    writer.request("2", "s", std::nullopt, over_limit);
    const Frames frames = take(writer);
    REQUIRE(frames.size() == 2);
    REQUIRE(view(frames[1]) == over_limit);
    const auto records = parse_ok(frames);
    REQUIRE_FALSE(records[0].body.in_frames);
    REQUIRE(records[0].body.bytes == at_limit);
    REQUIRE(records[1].body.in_frames);
    REQUIRE(body_size(frames, records[1].body) == over_limit.size());
    REQUIRE(first_body_bytes(frames, records[1].body) == over_limit);
}

TEST_CASE("a FramesBody of one large frame goes as a frame, moved or shared") {
    const std::string big(kInlineBodyLimit + 1, 'L');
    const bool share = GENERATE(false, true);
    CAPTURE(share);
    Frames source = frames_of({"keep", big});
    Writer writer;
    writer.job("t", std::nullopt, {}, Writer::FramesBody{source, 1, 1, share});
    const Frames frames = take(writer);
    REQUIRE(frames.size() == 2);
    REQUIRE(view(frames[1]) == big);
    REQUIRE(view(source[0]) == "keep");
    REQUIRE(source[1].size() == (share ? big.size() : 0));
    if (share) REQUIRE(view(source[1]) == big);
    const auto records = parse_ok(frames);
    REQUIRE(records[0].body.in_frames);
    REQUIRE(records[0].body.count == 1);
}

TEST_CASE("a body of several frames keeps its frames: share keeps the source, else moves them") {
    const bool share = GENERATE(false, true);
    CAPTURE(share);
    Frames source = frames_of({"head", "part-1", "part-2", "part-3"});
    Writer writer;
    writer.reply("tok", Writer::FramesBody{source, 1, 3, share});
    writer.answer("id", Status::ok, Writer::FramesBody{source, 0, 0});  // an empty body
    Frames frames = take(writer, true);
    REQUIRE(frames.size() == 5);  // identity, envelope, three body frames
    const auto records = parse_ok(frames, 1);
    REQUIRE(records.size() == 2);
    const Body& body = records[0].body;
    REQUIRE(body.in_frames);
    REQUIRE(body.first == 2);
    REQUIRE(body.count == 3);
    REQUIRE(body_size(frames, body) == 18);
    REQUIRE(first_body_bytes(frames, body) == "part-1");
    REQUIRE(body_text(frames, body) == "part-1part-2part-3");
    REQUIRE_FALSE(records[1].body.in_frames);
    REQUIRE(records[1].body.bytes.empty());

    REQUIRE(view(source[0]) == "head");
    for (std::size_t i = 1; i < 4; ++i) {
        if (share) {
            REQUIRE(view(source[i]) == "part-" + std::to_string(i));
        } else {
            REQUIRE(source[i].size() == 0);  // moved out
        }
    }

    // move_body hands the frames on, in order.
    Frames out;
    move_body(frames, body, out);
    REQUIRE(out.size() == 3);
    REQUIRE(view(out[0]) == "part-1");
    REQUIRE(view(out[2]) == "part-3");
    REQUIRE(frames[2].size() == 0);
}

TEST_CASE("move_body turns an inline body into one frame; an empty one into an empty frame") {
    Writer writer;
    writer.reply("a", "inline");
    writer.reply("b", "");
    Frames frames = take(writer);
    const auto records = parse_ok(frames);
    Frames out;
    move_body(frames, records[0].body, out);
    move_body(frames, records[1].body, out);
    REQUIRE(out.size() == 2);
    REQUIRE(view(out[0]) == "inline");
    REQUIRE(out[1].size() == 0);
    REQUIRE(body_size(frames, records[0].body) == 6);
    REQUIRE(first_body_bytes(frames, records[1].body).empty());
    // A body of no frames at all.
    const Body none{{}, 0, 0, true};
    REQUIRE(body_size(frames, none) == 0);
    REQUIRE(first_body_bytes(frames, none).empty());
}

TEST_CASE("the layout is the documented one, byte for byte") {
    Writer writer;
    writer.request("ab", "s", 0x01020304u, "xyz");
    writer.credit(5);
    const Frames frames = take(writer);
    // REQUEST flags(has deadline) deadline id service body(inline), then CREDIT 5.
    const std::string expected = std::string("ZB\x01", 3) + "\x11\x01" + u32(0x01020304u) + "\x02" +
                                 "ab" + "\x01" + "s" + std::string(1, '\0') + u32(3) + "xyz" +
                                 "\x26" + u32(5);
    REQUIRE(view(frames[0]) == expected);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: rejected with a reason, never a crash

TEST_CASE("is_envelope knows a ZB/1 envelope from 7/MDP frames") {
    REQUIRE_FALSE(is_envelope(empty_frame()));
    REQUIRE_FALSE(is_envelope(frame("MDPC01")));
    REQUIRE_FALSE(is_envelope(frame("MDPW01")));
    REQUIRE_FALSE(is_envelope(frame("ZB")));
    REQUIRE_FALSE(is_envelope(frame(std::string("ZB\x02", 3))));
    REQUIRE(is_envelope(frame(kSignature)));
    REQUIRE(is_envelope(envelope("\x24")));
}

TEST_CASE("an envelope with no record is rejected") {
    Frames frames;
    frames.push_back(frame(kSignature));
    reject(frames);
}

TEST_CASE("no envelope at the position asked, or a wrong version, is rejected") {
    reject(Frames{});
    reject(frames_of({"id"}), 1);                       // past the end
    reject(frames_of({"id", ""}), 1);                   // an MDP delimiter
    reject(frames_of({"id", "MDPC01"}), 1);             // MDP
    reject(frames_of({std::string("ZB\x02\x24", 4)}));  // version 2
    reject(frames_of({std::string("ZB\x00\x24", 4)}));  // version 0
    reject(frames_of({std::string("zb\x01\x24", 4)}));
    // The same heartbeat with the right version parses.
    REQUIRE(parse_ok(frames_of({std::string("ZB\x01\x24", 4)})).size() == 1);
}

TEST_CASE("an envelope cut short at any byte is rejected") {
    const std::string big(kInlineBodyLimit + 1, 'b');
    Frames source = frames_of({"p1", "p2"});
    // Each a whole envelope of one record; any shorter prefix of it must fail.
    std::vector<Frames> messages;
    const auto add = [&](auto&& write) {
        Writer writer;
        write(writer);
        messages.push_back(take(writer));
    };
    add([](Writer& w) { w.request("id-1", "echo", std::nullopt, "body"); });
    add([](Writer& w) { w.request("id-2", "echo", 1234u, "body"); });
    add([&](Writer& w) { w.request("id-3", "echo", 5u, big); });
    add([](Writer& w) { w.answer("id", Status::ok, "body"); });
    add([](Writer& w) { w.answer("id", Status::deadline_exceeded); });
    add([](Writer& w) { w.ready("echo", 4); });
    add([&](Writer& w) { w.job("token", 99u, {}, Writer::FramesBody{source, 0, 2, true}); });
    add([&](Writer& w) {
        w.job("token", std::nullopt, {}, Writer::FramesBody{source, 0, 1, true});
    });
    add([](Writer& w) { w.reply("token", "result"); });
    add([](Writer& w) { w.credit(3); });

    for (Frames& message : messages) {
        const std::string whole(view(message[0]));
        CAPTURE(whole.size());
        REQUIRE(parse_ok(message).size() == 1);
        for (std::size_t cut = 0; cut < whole.size(); ++cut) {
            CAPTURE(cut);
            Frames truncated;
            truncated.push_back(frame(std::string_view(whole).substr(0, cut)));
            for (std::size_t i = 1; i < message.size(); ++i)
                truncated.emplace_back().copy(message[i]);
            reject(truncated);
        }
    }
}

TEST_CASE("a batch cut short parses only where a record ends, and then as fewer records") {
    Writer writer;
    writer.request("r1", "a", 7u, "one");
    writer.reply("tok", "two");
    writer.credit(1);
    writer.answer("r2", Status::ok, "three");
    const Frames message = take(writer);
    const std::string whole(view(message[0]));
    std::size_t boundaries = 0;
    for (std::size_t cut = 0; cut < whole.size(); ++cut) {
        CAPTURE(cut);
        Frames truncated;
        truncated.push_back(frame(std::string_view(whole).substr(0, cut)));
        std::vector<Record> records;
        const char* error = nullptr;
        if (parse(truncated, 0, records, error)) {
            ++boundaries;
            REQUIRE(records.size() < 4);
            REQUIRE(records.size() == boundaries);
        } else {
            REQUIRE(error != nullptr);
        }
    }
    REQUIRE(boundaries == 3);  // after the first, second and third record
}

TEST_CASE("an unknown command is rejected, alone or after valid records") {
    for (const int command : {0x00, 0x10, 0x13, 0x20, 0x27, 0xFF}) {
        CAPTURE(command);
        reject(frames_of({std::string(kSignature) + static_cast<char>(command)}));
        Writer writer;
        writer.command(Command::heartbeat);
        Frames frames = take(writer);
        const std::string bytes = std::string(view(frames[0])) + static_cast<char>(command);
        reject(frames_of({bytes}));
    }
}

TEST_CASE("unknown flag bits in REQUEST and JOB are rejected") {
    // REQUEST knows deadline, priority and fairness key; JOB the deadline only.
    for (const int flags : {0x08, 0x09, 0x80, 0xFF}) {
        CAPTURE(flags);
        const std::string f(1, static_cast<char>(flags));
        // REQUEST flags [deadline] id service body
        reject(frames_of({std::string(kSignature) + "\x11" + f + u32(5) + "\x01i\x01s" +
                          std::string("\x00", 1) + u32(0)}));
    }
    for (const int flags : {0x02, 0x04, 0x03, 0x80, 0xFF}) {
        CAPTURE(flags);
        const std::string f(1, static_cast<char>(flags));
        // JOB token flags [deadline] body
        reject(frames_of({std::string(kSignature) + "\x22\x01t" + f + u32(5) +
                          std::string("\x00", 1) + u32(0)}));
    }
    // The same with flags 1 parse.
    REQUIRE(parse_ok(frames_of({std::string(kSignature) + "\x11\x01" + u32(5) + "\x01i\x01s" +
                                std::string("\x00", 1) + u32(0)}))[0]
                .deadline_ms == std::optional<std::uint32_t>(5u));
    REQUIRE(parse_ok(frames_of({std::string(kSignature) + "\x22\x01t\x01" + u32(5) +
                                std::string("\x00", 1) + u32(0)}))[0]
                .token == "t");
}

TEST_CASE("REQUEST options: deadline, priority and fairness key, each optional, in that order") {
    RequestOptions all(7u);
    all.priority = 9;
    all.fairness_key = "tenant";
    Writer writer;
    writer.request("i", "s", all, "b");
    writer.request("j", "s", std::nullopt, "c");
    RequestOptions key_only;
    key_only.fairness_key = "k";
    writer.request("k", "s", key_only, "d");
    Frames frames = take(writer);
    const std::string bytes(view(frames[0]));
    // flags 0x07, deadline 7, priority 9, key "tenant", then id
    REQUIRE(bytes.substr(kSignature.size(), 16) ==
            std::string("\x11\x07", 2) + u32(7) + "\x09\x06tenant" + "\x01i");
    const auto records = parse_ok(frames);
    REQUIRE(records.size() == 3);
    REQUIRE(records[0].deadline_ms == std::optional<std::uint32_t>(7u));
    REQUIRE(records[0].priority == std::optional<std::uint8_t>(9));
    REQUIRE(records[0].fairness_key == "tenant");
    REQUIRE(records[0].body.bytes == "b");
    REQUIRE_FALSE(records[1].priority);
    REQUIRE(records[1].fairness_key.empty());
    REQUIRE_FALSE(records[2].deadline_ms);
    REQUIRE(records[2].fairness_key == "k");
    REQUIRE(records[2].id == "k");
}

TEST_CASE("an idempotency key follows the fairness key in a REQUEST, the deadline in a JOB") {
    RequestOptions keyed(7u);
    keyed.fairness_key = "t";
    keyed.idempotency_key = "order-1";
    Writer writer;
    writer.request("i", "s", keyed, "b");
    Frames source = frames_of({"body"});
    writer.job("tok", 250u, "order-1", Writer::FramesBody{source, 0, 1, true});
    writer.job("tok", std::nullopt, "", Writer::FramesBody{source, 0, 1, true});
    Frames frames = take(writer);
    const std::string bytes(view(frames[0]));
    // REQUEST flags 0x0D: deadline 7, fairness key "t", idempotency key "order-1", then id
    REQUIRE(bytes.substr(kSignature.size(), 18) ==
            std::string("\x11\x0D", 2) + u32(7) + "\x01t" + "\x07order-1" + "\x01i");
    const auto records = parse_ok(frames);
    REQUIRE(records.size() == 3);
    REQUIRE(records[0].fairness_key == "t");
    REQUIRE(records[0].idempotency_key == "order-1");
    REQUIRE(records[1].deadline_ms == std::optional<std::uint32_t>(250u));
    REQUIRE(records[1].idempotency_key == "order-1");
    REQUIRE(records[2].idempotency_key.empty());
    // Empty is never sent: absent is how a record says none. A REQUEST says so (a problem, so
    // that the broker answers 400); a JOB, which only the broker writes, is malformed.
    REQUIRE(parse_ok(frames_of({std::string(kSignature) + "\x11\x08" + std::string("\x00", 1) +
                                "\x01i\x01s" + std::string("\x00", 1) + u32(0)}))[0]
                .problem != nullptr);
    reject(frames_of({std::string(kSignature) + "\x22\x01t\x08" + std::string("\x00", 1) +
                      std::string("\x00", 1) + u32(0)}));
}

TEST_CASE("an empty fairness key is a REQUEST's problem: absent is how it says none") {
    // The id can be read, so the broker answers 400, and the rest of the message stands.
    const std::string empty_key = std::string("\x11\x04") + std::string("\x00", 1) + "\x01i\x01s" +
                                  std::string("\x00", 1) + u32(0);
    const Frames frames = frames_of({std::string(kSignature) + empty_key + empty_key});
    const auto records = parse_ok(frames);
    REQUIRE(records.size() == 2);
    REQUIRE(records[0].id == "i");
    REQUIRE(records[0].problem != nullptr);
}

TEST_CASE("a record the format cannot carry is never written cut short") {
    Writer writer;
    REQUIRE_THROWS_AS(writer.request(std::string(256, 'i'), "s", std::nullopt, "x"),
                      std::length_error);
    Frames many(wire::kMaxBodyFrames + 1);
    REQUIRE_THROWS_AS(writer.reply("t", Writer::FramesBody{many, 0, many.size()}),
                      std::length_error);
    writer.clear();
    writer.request(std::string(255, 'i'), std::string(255, 's'), std::nullopt, "x");
    const Frames frames = take(writer);
    REQUIRE(parse_ok(frames)[0].id.size() == 255);
}

TEST_CASE("an unknown body form is rejected") {
    for (const int form : {0x02, 0x7F, 0xFF}) {
        CAPTURE(form);
        reject(frames_of({std::string(kSignature) + "\x23\x01t" +
                          std::string(1, static_cast<char>(form)) + u32(0)}));
    }
}

TEST_CASE("a body in more frames than the message has is rejected") {
    // REPLY token=t body: in frames, count 3; only two frames follow.
    const std::string bytes = std::string(kSignature) + "\x23\x01t\x01\x03" + std::string(1, '\0');
    reject(frames_of({bytes, "a", "b"}));
    reject(frames_of({bytes}));
    // Count 0xFFFF with nothing after it.
    reject(frames_of({std::string(kSignature) + "\x23\x01t\x01\xFF\xFF"}));
    // Two records claiming two frames each, three present.
    const std::string two = std::string(kSignature) + "\x23\x01t\x01\x02" + std::string(1, '\0') +
                            "\x23\x01u\x01\x02" + std::string(1, '\0');
    reject(frames_of({two, "a", "b", "c"}));
    REQUIRE(parse_ok(frames_of({two, "a", "b", "c", "d"})).size() == 2);
    REQUIRE(parse_ok(frames_of({bytes, "a", "b", "c"}))[0].body.count == 3);
}

TEST_CASE("frames that no record claims are rejected") {
    Writer writer;
    writer.reply("t", "inline");
    Frames frames = take(writer);
    frames.push_back(frame("stray"));
    reject(frames);
    // Also after a record that does claim one frame.
    writer.reply("t", std::string(kInlineBodyLimit + 1, 'x'));
    frames = take(writer, true);
    REQUIRE(parse_ok(frames, 1).size() == 1);
    frames.push_back(empty_frame());
    reject(frames, 1);
}

TEST_CASE("an ANSWER with a status the protocol does not know is rejected") {
    for (const std::uint16_t status :
         std::initializer_list<std::uint16_t>{0, 1, 201, 404, 502, 0xFFFF}) {
        CAPTURE(status);
        Writer writer;
        writer.answer("id", static_cast<Status>(status), "x");
        reject(take(writer));
    }
}

TEST_CASE("an inline body longer than the envelope is rejected") {
    reject(frames_of(
        {std::string(kSignature) + "\x23\x01t" + std::string(1, '\0') + u32(0xFFFFFFFFu) + "abc"}));
    reject(
        frames_of({std::string(kSignature) + "\x23\x01t" + std::string(1, '\0') + u32(4) + "abc"}));
    // A short string longer than what is left.
    reject(frames_of({std::string(kSignature) + "\x21" + u32(1) + "\xFF" + "echo"}));
}

TEST_CASE("a rejected parse leaves nothing that looks usable, and a later parse starts afresh") {
    std::vector<Record> records;
    const char* error = nullptr;
    Writer writer;
    writer.ready("svc", 1);
    writer.credit(1);
    REQUIRE(parse(take(writer), 0, records, error));
    REQUIRE(records.size() == 2);
    writer.command(Command::heartbeat);
    REQUIRE(parse(take(writer), 0, records, error));
    REQUIRE(records.size() == 1);  // cleared first
    REQUIRE(records[0].command == Command::heartbeat);
}

TEST_CASE("a message holds at most kMaxRecords records; more is malformed as a whole") {
    // It was: every record parsed, even a 1-byte HEARTBEAT, into a ~150-byte entry, so a 1 MB
    // envelope of them cost 150 MB, and the reader kept that room afterwards.
    const std::string heartbeat(1, static_cast<char>(Command::heartbeat));
    std::string records;
    for (std::size_t i = 0; i < kMaxRecords; ++i)
        records += heartbeat;
    Frames frames;
    frames.push_back(envelope(records));
    REQUIRE(parse_ok(frames).size() == kMaxRecords);
    frames[0] = envelope(records + heartbeat);
    reject(frames);
}

TEST_CASE("a reader gives back the room a burst of records grew, at the next message") {
    std::vector<Record> records;
    const char* error = nullptr;
    Frames burst;
    burst.push_back(envelope(std::string(kKeptRecords * 4, static_cast<char>(Command::heartbeat))));
    REQUIRE(parse(burst, 0, records, error));
    REQUIRE(records.capacity() >= kKeptRecords * 4);
    Writer writer;
    writer.command(Command::heartbeat);
    REQUIRE(parse(take(writer), 0, records, error));
    REQUIRE(records.size() == 1);
    REQUIRE(records.capacity() <= kKeptRecords);
}

TEST_CASE("random bytes after the signature never crash the reader") {
    // A deterministic sweep: every envelope of up to two bytes after the signature, and
    // pseudo-random longer ones, each with 0 to 2 frames after it.
    std::uint32_t state = 12345;
    const auto next = [&state] {
        state = state * 1103515245u + 12345u;
        return static_cast<char>(state >> 16);
    };
    std::vector<Record> records;
    const char* error = nullptr;
    std::size_t accepted = 0;
    for (int a = 0; a < 256; ++a) {
        for (int b = -1; b < 256; ++b) {
            std::string bytes(kSignature);
            bytes += static_cast<char>(a);
            if (b >= 0) bytes += static_cast<char>(b);
            if (parse(frames_of({bytes}), 0, records, error)) ++accepted;
        }
    }
    for (int i = 0; i < 20000; ++i) {
        std::string bytes(kSignature);
        const int length = static_cast<unsigned char>(next()) % 40;
        for (int j = 0; j < length; ++j)
            bytes += next();
        Frames frames = frames_of({bytes});
        for (int j = static_cast<unsigned char>(next()) % 3; j > 0; --j)
            frames.push_back(frame("f"));
        if (parse(frames, 0, records, error)) {
            ++accepted;
            for (const Record& record : records)
                REQUIRE(body_size(frames, record.body) <= 40 + 2);
        }
    }
    REQUIRE(accepted > 0);  // heartbeats, disconnects and the like do parse
}
