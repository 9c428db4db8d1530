// Security: the core's role checks, the key file formats, and CURVE + ZAP end to end on real
// zbroker and zworker processes over loopback.
#include <catch2/catch.hpp>

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "broker/zap_authenticator.hpp"
#include "client/async_client.hpp"
#include "client/client.hpp"
#include "core_harness.hpp"
#include "process_helpers.hpp"
#include "shared/child_process.hpp"
#include "shared/codec.hpp"
#include "shared/connection_monitor.hpp"
#include "shared/curve_keys.hpp"
#include "worker/worker.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using namespace std::chrono_literals;
using broker::Malformed;
using broker::PeerRole;
using protocol::Status;

namespace {

// ZBC01 answer frames: C "" ZBC01 service request-id status body.
constexpr std::size_t kAnswerStatus = 5;
constexpr std::size_t kAnswerBody = 6;

bool is_msgpack_map(const std::string& bytes) {
    if (bytes.empty()) return false;
    const auto first = static_cast<unsigned char>(bytes.front());
    return (first & 0xF0) == 0x80 || first == 0xDE || first == 0xDF;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The core: what each role may do

TEST_CASE("a peer with a client or admin key cannot register as a worker") {
    for (const PeerRole role : {PeerRole::client, PeerRole::admin}) {
        INFO("role " << broker::role_name(role));
        CoreHarness h;
        h.receive({"W", kEmpty, "MDPW01", kReady, "echo"}, role);
        REQUIRE(h.take_one() == Message{"W", kEmpty, "MDPW01", kDisconnect});
        REQUIRE(h.core.worker_count() == 0);
        REQUIRE(h.core.counters().workers_registered == 0);
        REQUIRE(h.core.counters()[Malformed::not_authorized] == 1);
        // And so a request for the service finds no worker.
        h.zbc_request("C", "echo", "1", "x", deadline_header(100));
        h.advance(100ms);
        REQUIRE(h.take_one().at(kAnswerStatus) == "503");
    }
}

TEST_CASE("a peer with a worker key registers and serves clients with client keys") {
    CoreHarness h;
    h.receive({"W", kEmpty, "MDPW01", kReady, "echo"}, PeerRole::worker);
    REQUIRE(h.core.worker_count() == 1);
    h.receive({"C", kEmpty, "ZBC01", "echo", "1", "\x80", "hi"}, PeerRole::client);
    const Message request = h.take_one();
    REQUIRE(request.at(3) == kRequest);
    h.receive({"W", kEmpty, "MDPW01", kReply, request.at(4), kEmpty, "hi"}, PeerRole::worker);
    const Message answer = h.take_one();
    REQUIRE(answer.at(0) == "C");
    REQUIRE(answer.at(kAnswerStatus) == "200");
    REQUIRE(answer.at(kAnswerBody) == "hi");
    REQUIRE(h.core.counters()[Malformed::not_authorized] == 0);
}

TEST_CASE("requests from a peer with a worker key are dropped unanswered and counted") {
    CoreHarness h;
    h.receive({"W", kEmpty, "MDPW01", kReady, "echo"}, PeerRole::worker);
    h.receive({"X", kEmpty, "ZBC01", "echo", "1", "\x80", "hi"}, PeerRole::worker);
    h.receive({"X", kEmpty, "MDPC01", "echo", "hi"}, PeerRole::worker);
    h.receive({"X", kEmpty, "ZBC01", "mmi.service", "2", "\x80", "echo"}, PeerRole::worker);
    REQUIRE(h.take().empty());  // nothing dispatched, nothing answered
    REQUIRE(h.core.counters().requests == 0);
    REQUIRE(h.core.counters()[Malformed::not_authorized] == 3);
}

TEST_CASE("mmi.stats and mmi.drain answer 403 to a client key and work for an admin key") {
    CoreHarness h;
    for (const char* service : {"mmi.stats", "mmi.drain"}) {
        h.receive({"C", kEmpty, "ZBC01", service, "1", "\x80"}, PeerRole::client);
        const Message answer = h.take_one();
        REQUIRE(answer.at(kAnswerStatus) == "200");
        REQUIRE(answer.at(kAnswerBody) == "403");
        h.receive({"M", kEmpty, "MDPC01", service}, PeerRole::client);  // plain MDP alike
        REQUIRE(h.take_one().at(4) == "403");
    }
    REQUIRE_FALSE(h.core.draining());
    REQUIRE(h.core.counters()[Malformed::not_authorized] == 4);

    h.receive({"A", kEmpty, "ZBC01", "mmi.stats", "2", "\x80"}, PeerRole::admin);
    REQUIRE(is_msgpack_map(h.take_one().at(kAnswerBody)));
    h.receive({"A", kEmpty, "ZBC01", "mmi.drain", "3", "\x80"}, PeerRole::admin);
    REQUIRE(h.take_one().at(kAnswerBody) == "200");
    REQUIRE(h.core.draining());
}

TEST_CASE("with CURVE off every peer may ask mmi.stats, as before") {
    CoreHarness h;
    h.receive({"C", kEmpty, "ZBC01", "mmi.stats", "1", "\x80"});
    REQUIRE(is_msgpack_map(h.take_one().at(kAnswerBody)));
}

TEST_CASE("a client key may still ask mmi.service and mmi.services") {
    CoreHarness h;
    h.receive({"C", kEmpty, "ZBC01", "mmi.service", "1", "\x80", "echo"}, PeerRole::client);
    REQUIRE(h.take_one().at(kAnswerBody) == "404");
    h.receive({"C", kEmpty, "ZBC01", "mmi.services", "2", "\x80"}, PeerRole::client);
    REQUIRE(is_msgpack_map(h.take_one().at(kAnswerBody)));
}

// ---------------------------------------------------------------------------------------------
// File formats

namespace {

// A private directory removed with everything in it when the test ends.
struct TempDir {
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "zbroker-sec-XXXXXX");
        if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::string file(const std::string& name) const { return (path / name).string(); }
    std::filesystem::path path;
};

void write_text(const std::string& path, const std::string& text) {
    // Written aside and renamed, so a reload never reads a half-written file.
    const std::string temporary = path + ".new";
    std::ofstream(temporary) << text;
    // Whatever the umask: the broker refuses a keys file that others may write.
    std::filesystem::permissions(
        temporary, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                       std::filesystem::perms::group_read | std::filesystem::perms::others_read);
    std::filesystem::rename(temporary, path);
}

}  // namespace

TEST_CASE("a key pair file is written private, read back, and never overwritten") {
    REQUIRE(curve_available());
    TempDir dir;
    const CurveKeyPair pair = generate_curve_keypair();
    REQUIRE(is_z85_key(pair.public_key));
    REQUIRE(is_z85_key(pair.secret_key));
    const std::string path = dir.file("a.key");
    write_curve_keypair(path, pair);

    struct stat status {};
    REQUIRE(::stat(path.c_str(), &status) == 0);
    REQUIRE((status.st_mode & 0777) == 0600);
    const CurveKeyPair read = read_curve_keypair(path);
    REQUIRE(read.public_key == pair.public_key);
    REQUIRE(read.secret_key == pair.secret_key);
    REQUIRE_THROWS_WITH(write_curve_keypair(path, generate_curve_keypair()),
                        Catch::Contains("File exists"));
    REQUIRE(read_curve_keypair(path).secret_key == pair.secret_key);
}

TEST_CASE("a key pair file whose public key is not the secret key's is refused") {
    const CurveKeyPair one = generate_curve_keypair();
    const CurveKeyPair other = generate_curve_keypair();
    REQUIRE_THROWS_WITH(
        parse_curve_keypair("public = " + other.public_key + "\nsecret = " + one.secret_key),
        Catch::Contains("does not belong"));
    REQUIRE_THROWS_WITH(parse_curve_keypair("# c\n\npublic = short\n"), Catch::Contains("line 3"));
    REQUIRE_THROWS_WITH(parse_curve_keypair("public = " + one.public_key),
                        Catch::Contains("no `secret = KEY`"));
    // The public line may be left out: it is derived from the secret.
    REQUIRE(parse_curve_keypair("secret = " + one.secret_key).public_key == one.public_key);
}

TEST_CASE("the authorized-keys file maps each key to one role and names a bad line") {
    const std::string a = generate_curve_keypair().public_key;
    const std::string b = generate_curve_keypair().public_key;
    const std::string c = generate_curve_keypair().public_key;
    const auto keys = broker::parse_authorized_keys(
        "# comment\n\nclient " + a + "  # front end\n  worker\t" + b + "\nadmin " + c + "\n");
    REQUIRE(keys.size() == 3);
    REQUIRE(keys.at(a) == PeerRole::client);
    REQUIRE(keys.at(b) == PeerRole::worker);
    REQUIRE(keys.at(c) == PeerRole::admin);

    REQUIRE_THROWS_WITH(broker::parse_authorized_keys("client " + a + "\n\nroot " + b),
                        Catch::Contains("line 3") && Catch::Contains("unknown role 'root'"));
    REQUIRE_THROWS_WITH(broker::parse_authorized_keys("client notakey"),
                        Catch::Contains("line 1") && Catch::Contains("Z85"));
    REQUIRE_THROWS_WITH(broker::parse_authorized_keys("client " + a + "\nadmin " + a),
                        Catch::Contains("line 2") && Catch::Contains("listed twice"));
    REQUIRE_THROWS_WITH(broker::parse_authorized_keys("client " + a + " extra"),
                        Catch::Contains("line 1") && Catch::Contains("after the key"));
}

// ---------------------------------------------------------------------------------------------
// End to end: zbroker with --curve-secret and --authorized-keys

namespace {

using testing::bin_dir;
using testing::eventually;

std::size_t occurrences(const std::string& text, const std::string& marker) {
    std::size_t count = 0;
    for (auto at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1))
        ++count;
    return count;
}

// For what should be refused: a short attempt, no retries, so that "gets nothing through"
// shows up as no_reply quickly. Only ever expected to fail: a slow machine can only make a
// refusal look like one, never an admitted peer look refused.
const CallOptions kQuick{.timeout = 400ms, .retries = 0};
// For what should get through: as long as any event may take on a loaded machine.
const CallOptions kPatient{.timeout = kPatience, .retries = 0};
// One attempt of a question asked again until the answer changes (in_time).
const CallOptions kPoll{.timeout = 2000ms, .retries = 0};

// Said when an event that should come did not come within kPatience.
// Nothing here is about liveness: heartbeats slow enough that a process stalled by a loaded
// machine (sanitizers, 2 cores) is never taken for dead.
const std::string kHeartbeatMs = "1000";

// A broker with CURVE on, key pairs for every role, and the files they live in.
struct SecureBroker {
    SecureBroker() {
        const CurveKeyPair broker_pair = generate_curve_keypair();
        server_public = broker_pair.public_key;
        write_curve_keypair(dir.file("broker.key"), broker_pair);
        write_curve_keypair(dir.file("worker.key"), worker);
        write_curve_keypair(dir.file("client.key"), client);
        authorize({{"client", client}, {"worker", worker}, {"admin", admin}});
        auto [process, bound] = start_broker(
            bin_dir(), {"--heartbeat-ms", kHeartbeatMs, "--curve-secret", dir.file("broker.key"),
                        "--authorized-keys", dir.file("authorized_keys"), "--log-level", "debug"});
        broker.emplace(std::move(process));
        endpoint = bound;
    }

    void authorize(const std::vector<std::pair<std::string, CurveKeyPair>>& entries) {
        std::string text = "# written by test_security\n";
        for (const auto& [role, pair] : entries)
            text += role + " " + pair.public_key + "  # a " + role + "\n";
        write_text(dir.file("authorized_keys"), text);
    }

    CurveClientKeys keys_of(const CurveKeyPair& pair) const {
        return {server_public, pair.public_key, pair.secret_key};
    }
    Client client_with(const CurveKeyPair& pair) const { return Client(endpoint, keys_of(pair)); }

    // Status of an mmi.service call from a fresh connection with `pair`: ok when it got through.
    Status reach(const CurveKeyPair& pair, const CallOptions& options) const {
        return client_with(pair).call(protocol::kMmiService, "echo", options).status;
    }
    bool gets_through(const CurveKeyPair& pair) const {
        return reach(pair, kPatient) == Status::ok;
    }
    bool shut_out(const CurveKeyPair& pair) const {
        return reach(pair, kQuick) == Status::no_reply;
    }

    ChildProcess start_zworker(const std::string& key_file, const std::string& service) const {
        return ChildProcess({bin_dir() + "/zworker", "--broker", endpoint, "--service", service,
                             "--heartbeat-ms", kHeartbeatMs, "--curve-server-key", server_public,
                             "--curve-secret", key_file});
    }

    std::string mmi_service(const std::string& service,
                            const CallOptions& options = kPatient) const {
        Client admin_client = client_with(admin);
        const Response r = admin_client.call(protocol::kMmiService, service, options);
        return r.ok() ? std::string(r.body_view()) : "no reply";
    }

    // 0 when the broker did not answer: for in_time, which asks again.
    std::uint64_t malformed_count(const std::string& kind) const {
        Client admin_client = client_with(admin);
        const Response r = admin_client.call(protocol::kMmiStats, "", kPoll);
        if (!r.ok()) return 0;
        const msgpack::object_handle handle = unpack_object(r.body_view());
        const auto stats = handle.get().as<std::map<std::string, msgpack::object>>();
        const auto malformed = stats.at("malformed").as<std::map<std::string, std::uint64_t>>();
        return malformed.at(kind);
    }

    TempDir dir;
    CurveKeyPair worker = generate_curve_keypair();
    CurveKeyPair client = generate_curve_keypair();
    CurveKeyPair admin = generate_curve_keypair();
    std::string server_public;
    std::optional<ChildProcess> broker;
    std::string endpoint;
};

}  // namespace

TEST_CASE("an encrypted round trip works for a worker key and a client key") {
    SecureBroker secure;
    ChildProcess worker = secure.start_zworker(secure.dir.file("worker.key"), "echo");
    REQUIRE(in_time([&] { return secure.mmi_service("echo", kPoll) == "200"; }));

    Client client = secure.client_with(secure.client);
    const std::string body = pack(std::string("secret payload"));
    const Response response = client.call("echo", body, kPatient);
    REQUIRE(response.ok());
    REQUIRE(response.body_view() == body);
}

TEST_CASE("a client without keys, or with an unknown key, gets nothing through") {
    SecureBroker secure;
    const CurveKeyPair stranger = generate_curve_keypair();

    Client plain(secure.endpoint);
    REQUIRE(plain.call(protocol::kMmiService, "echo", kQuick).status == Status::no_reply);
    REQUIRE(secure.shut_out(stranger));
    // Knowing the broker's key is not enough; a wrong broker key does not get through either.
    CurveClientKeys wrong_server = secure.keys_of(secure.client);
    wrong_server.server_public = generate_curve_keypair().public_key;
    REQUIRE(
        Client(secure.endpoint, wrong_server).call(protocol::kMmiService, "echo", kQuick).status ==
        Status::no_reply);

    REQUIRE(secure.gets_through(secure.client));
    // The refusal is logged with the key, once however often the stranger reconnects. An
    // attempt that a slow machine cut short before its handshake reached the key check logs
    // nothing, so the stranger tries until one did.
    const std::string refused = "refused CURVE key " + stranger.public_key;
    bool let_in = false;
    REQUIRE(in_time([&] {
        let_in = let_in || !secure.shut_out(stranger);
        return let_in || secure.broker->output().find(refused) != std::string::npos;
    }));
    REQUIRE_FALSE(let_in);
    REQUIRE(secure.shut_out(stranger));
    // Keys are checked one at a time, in the order handshakes reach the check: once the admin,
    // who came after the stranger's last attempt, is admitted, that attempt has been refused,
    // and logged if it were to be.
    REQUIRE(secure.gets_through(secure.admin));
    REQUIRE(secure.broker->wait_for("admitted CURVE key " + secure.admin.public_key, kPatience));
    REQUIRE(occurrences(secure.broker->output(), refused) == 1);
}

TEST_CASE("a client key cannot register as a worker") {
    SecureBroker secure;
    ChildProcess impostor = secure.start_zworker(secure.dir.file("client.key"), "echo");
    REQUIRE(in_time([&] { return secure.malformed_count("not_authorized") >= 1; }));
    REQUIRE(secure.mmi_service("echo") == "404");
    // Not Client: it listens only a little past the deadline, and a loaded machine may deliver
    // the 503 later than that.
    AsyncClient client(secure.endpoint, 1, secure.keys_of(secure.client));
    REQUIRE(client.send("echo", "x", 300ms));
    const auto done = client.receive(kPatience);
    INFO(kTooSlow);
    REQUIRE(done);
    REQUIRE(done->status == Status::unavailable);

    // The same program with a worker key does register: the refusal was the role's doing.
    ChildProcess worker = secure.start_zworker(secure.dir.file("worker.key"), "echo");
    REQUIRE(in_time([&] { return secure.mmi_service("echo", kPoll) == "200"; }));
}

TEST_CASE("only an admin key may call mmi.stats and mmi.drain") {
    SecureBroker secure;
    Client client = secure.client_with(secure.client);
    Response stats = client.call(protocol::kMmiStats, "", kPatient);
    REQUIRE(stats.ok());
    REQUIRE(stats.body_view() == protocol::kMmiForbidden);
    Response drain = client.call(protocol::kMmiDrain, "", kPatient);
    REQUIRE(drain.ok());
    REQUIRE(drain.body_view() == protocol::kMmiForbidden);
    // Still serving: a refused drain drained nothing.
    REQUIRE(secure.broker->running());
    REQUIRE(secure.gets_through(secure.client));

    Client admin = secure.client_with(secure.admin);
    stats = admin.call(protocol::kMmiStats, "", kPatient);
    REQUIRE(stats.ok());
    REQUIRE(is_msgpack_map(std::string(stats.body_view())));
    drain = admin.call(protocol::kMmiDrain, "", kPatient);
    REQUIRE(drain.ok());
    REQUIRE(drain.body_view() == protocol::kMmiFound);
    REQUIRE(secure.broker->wait(kPatience) == 0);  // nothing held: the drain ends at once
}

TEST_CASE("SIGHUP reloads the authorized keys for new connections") {
    SecureBroker secure;
    const CurveKeyPair newcomer = generate_curve_keypair();
    REQUIRE(secure.shut_out(newcomer));
    REQUIRE(secure.gets_through(secure.client));

    // The client key leaves, the newcomer joins.
    secure.authorize({{"client", newcomer}, {"worker", secure.worker}, {"admin", secure.admin}});
    secure.broker->signal(SIGHUP);
    REQUIRE(secure.broker->wait_for("reloaded ", kPatience));
    REQUIRE(secure.gets_through(newcomer));
    REQUIRE(secure.shut_out(secure.client));

    // A broken file keeps the table loaded before, and says which line is wrong.
    write_text(secure.dir.file("authorized_keys"),
               "client " + newcomer.public_key + "\nsuperuser " + secure.client.public_key + "\n");
    secure.broker->signal(SIGHUP);
    REQUIRE(secure.broker->wait_for("reload failed", kPatience));
    REQUIRE(secure.broker->output().find("line 2: unknown role 'superuser'") != std::string::npos);
    REQUIRE(secure.gets_through(newcomer));
    REQUIRE(secure.shut_out(secure.client));
    REQUIRE(secure.broker->running());
}

namespace {

// Waits for a broker expected to refuse to start: its exit code, or nullopt if it kept running.
std::optional<int> refused_at_start(ChildProcess& broker) {
    const auto code = broker.wait(kPatience);
    INFO(kTooSlow);
    INFO(broker.output());
    return code;
}

// zbroker with CURVE on, from the key files in `dir` (broker.key, authorized_keys).
ChildProcess start_curve_broker(const TempDir& dir) {
    return ChildProcess({bin_dir() + "/zbroker", "--bind", "tcp://127.0.0.1:*", "--curve-secret",
                         dir.file("broker.key"), "--authorized-keys", dir.file("authorized_keys")});
}

// A key pair file (private) and an authorized-keys file (readable by all).
void write_curve_files(const TempDir& dir) {
    write_curve_keypair(dir.file("broker.key"), generate_curve_keypair());
    write_text(dir.file("authorized_keys"), "client " + generate_curve_keypair().public_key + "\n");
}

}  // namespace

TEST_CASE("an authorized-keys file others may write is refused at start, saying chmod go-w") {
    TempDir dir;
    write_curve_files(dir);
    const std::string keys = dir.file("authorized_keys");
    for (const mode_t mode : {0666, 0646, 0664}) {
        CAPTURE(mode);
        REQUIRE(::chmod(keys.c_str(), mode) == 0);
        ChildProcess broker = start_curve_broker(dir);
        CHECK(refused_at_start(broker) == 1);
        CHECK(broker.output().find("chmod go-w " + keys) != std::string::npos);
    }
    REQUIRE(::chmod(keys.c_str(), 0644) == 0);  // readable by all is fine: public keys
    ChildProcess broker = start_curve_broker(dir);
    CHECK(broker.wait_for("CURVE on", kPatience));
}

TEST_CASE("a key pair file others may read is refused at start, saying chmod 600") {
    TempDir dir;
    write_curve_files(dir);
    const std::string secret = dir.file("broker.key");
    for (const mode_t mode : {0644, 0604, 0640}) {
        CAPTURE(mode);
        REQUIRE(::chmod(secret.c_str(), mode) == 0);
        ChildProcess broker = start_curve_broker(dir);
        CHECK(refused_at_start(broker) == 1);
        CHECK(broker.output().find("chmod 600 " + secret) != std::string::npos);
    }
}

TEST_CASE("a reload refuses an authorized-keys file others may write, and keeps the keys it had") {
    SecureBroker secure;
    const CurveKeyPair newcomer = generate_curve_keypair();
    const std::string keys = secure.dir.file("authorized_keys");
    // What any local user could do to a world-writable file: add an admin key of their own.
    secure.authorize({{"client", secure.client}, {"admin", newcomer}});
    REQUIRE(::chmod(keys.c_str(), 0666) == 0);
    secure.broker->signal(SIGHUP);
    REQUIRE(secure.broker->wait_for("reload failed", kPatience));
    CHECK(secure.broker->output().find("chmod go-w " + keys) != std::string::npos);
    CHECK(secure.shut_out(newcomer));
    CHECK(secure.gets_through(secure.client));
    CHECK(secure.broker->running());
}

TEST_CASE("a client key that takes a departed worker's routing id gets none of its jobs") {
    // It was: the worker entry lived on until heartbeat expiry, and every JOB for it went to
    // whoever now held its routing id: here, another tenant's client key.
    SecureBroker secure;
    zmq::context_t context(1);
    const std::string taken = "worker-routing-id";
    {
        zmq::socket_t worker(context, zmq::socket_type::dealer);
        worker.set(zmq::sockopt::linger, 0);
        worker.set(zmq::sockopt::routing_id, taken);
        apply_curve_client(worker, secure.keys_of(secure.worker));
        worker.connect(secure.endpoint);
        Frames ready;
        ready.push_back(empty_frame());
        ready.push_back(frame(protocol::kMdpWorker));
        ready.push_back(frame(protocol::WorkerCommand::ready));
        ready.push_back(frame("echo"));
        send_frames(worker, ready);
        REQUIRE(in_time([&] { return secure.mmi_service("echo", kPoll) == "200"; }));
    }  // the worker leaves without a word
    zmq::socket_t impostor(context, zmq::socket_type::dealer);
    impostor.set(zmq::sockopt::linger, 0);
    impostor.set(zmq::sockopt::routing_id, taken);
    apply_curve_client(impostor, secure.keys_of(secure.client));
    ConnectionMonitor handshake(context, impostor);
    impostor.connect(secure.endpoint);
    // Its handshake done, the impostor holds the routing id (libzmq gives it to one connection
    // at a time: the worker's is gone) and says nothing.
    zmq::pollitem_t item{handshake.socket().handle(), 0, ZMQ_POLLIN, 0};
    std::optional<ConnectionMonitor::Event> event;
    REQUIRE(in_time([&] {
        zmq::poll(&item, 1, 10ms);
        while (const auto next = handshake.next())
            event = event == ConnectionMonitor::Event::up ? event : next;
        return event == ConnectionMonitor::Event::up;
    }));
    // Another tenant's request, with a deadline: no worker serves "echo" now.
    AsyncClient victim(secure.endpoint, 1, secure.keys_of(secure.admin));
    REQUIRE(victim.send("echo", "another tenant's secret", 500ms));
    const auto done = victim.receive(kPatience);
    INFO(kTooSlow);
    REQUIRE(done);
    REQUIRE(done->status == Status::unavailable);  // no worker, rather than a leak
    Frames got;
    REQUIRE_FALSE(recv_frames(impostor, got, zmq::recv_flags::dontwait));
}
