// ZAP 1.0 (RFC 27) over a REP socket: CURVE only, key looked up in the authorized-keys table.
#include "broker/zap_authenticator.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "shared/curve_keys.hpp"

namespace zbroker::broker {
namespace {

// RFC 27 request frames (REP has stripped the envelope).
constexpr std::size_t kVersion = 0;
constexpr std::size_t kRequestId = 1;
constexpr std::size_t kDomain = 2;
constexpr std::size_t kAddress = 3;
constexpr std::size_t kMechanism = 5;
constexpr std::size_t kCredentials = 6;
constexpr std::string_view kZapVersion = "1.0";

// Bounds how long a reload request or a stop waits to be noticed.
constexpr std::chrono::milliseconds kPollInterval{100};
// Bounds the memory a stream of made-up keys can take from the log-once set.
constexpr std::size_t kMaxRefusedLogged = 10'000;

// The next whitespace-separated word of `text`, consumed from it.
std::string_view next_word(std::string_view& text) {
    text = trim_blanks(text);
    const auto end = text.find_first_of(" \t");
    const std::string_view word = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end);
    return word;
}

void set_reply(Frames& reply, std::string_view request_id, std::string_view code,
               std::string_view text, std::string_view user_id) {
    reply.clear();
    reply.push_back(frame(kZapVersion));
    reply.push_back(frame(request_id));
    reply.push_back(frame(code));
    reply.push_back(frame(text));
    reply.push_back(frame(user_id));
    reply.push_back(empty_frame());  // no metadata
}

// Closes a file descriptor when it goes out of scope.
struct OpenFile {
    explicit OpenFile(int descriptor) : fd(descriptor) {}
    ~OpenFile() {
        if (fd >= 0) ::close(fd);
    }
    OpenFile(const OpenFile&) = delete;
    OpenFile& operator=(const OpenFile&) = delete;
    const int fd;
};

// Whoever may write the file may admit any key, as admin, from the next reload: as ssh does
// for its authorized_keys, refuse a file that anyone but its owner may write, or whose owner is
// neither root nor the broker's user. (The directories above it are not checked.)
void require_only_owner_writes(const std::string& path, const struct stat& status) {
    if (status.st_uid != 0 && status.st_uid != ::geteuid()) {
        throw std::runtime_error("authorized-keys file " + path + " belongs to uid " +
                                 std::to_string(status.st_uid) +
                                 ", neither root nor the broker's user, who could add keys to "
                                 "it: chown root " +
                                 path);
    }
    if ((status.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
        throw std::runtime_error("authorized-keys file " + path + " may be written by others " +
                                 "(mode " + mode +
                                 "), who could add a key of their own: chmod "
                                 "go-w " +
                                 path);
    }
}

}  // namespace

AuthorizedKeys parse_authorized_keys(std::string_view text) {
    AuthorizedKeys keys;
    // Z85 keys may contain '#': a comment starts a line, or follows the key after a space.
    for_each_key_file_line(text, [&keys](std::string_view line) {
        const std::string_view role_word = next_word(line);
        const std::string_view key = next_word(line);
        const std::string_view rest = trim_blanks(line);
        const auto role = parse_role(role_word);
        if (!role) {
            throw std::invalid_argument("unknown role '" + std::string(role_word) +
                                        "' (expected client, worker or admin, then the key)");
        }
        if (!is_z85_key(key)) {
            throw std::invalid_argument("'" + std::string(key) +
                                        "' is not a 40-character Z85 public key");
        }
        if (!rest.empty() && rest.front() != '#') {
            throw std::invalid_argument("unexpected '" + std::string(rest) +
                                        "' after the key (comments start with #)");
        }
        if (!keys.emplace(std::string(key), *role).second) {
            throw std::invalid_argument("key " + std::string(key) +
                                        " is listed twice; one key has one role");
        }
    });
    return keys;
}

AuthorizedKeys load_authorized_keys(const std::string& path) {
    const auto cannot_read = [&path] {
        return std::runtime_error("cannot read authorized-keys file " + path + ": " +
                                  std::strerror(errno));
    };
    // Checked and read through one descriptor, so the checks are about the text read.
    const OpenFile file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat status {};
    if (file.fd < 0 || ::fstat(file.fd, &status) != 0) throw cannot_read();
    require_only_owner_writes(path, status);
    std::string text;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(file.fd, buffer, sizeof buffer)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw cannot_read();
        text.append(buffer, static_cast<std::size_t>(n));
    }
    try {
        return parse_authorized_keys(text);
    } catch (const std::invalid_argument& e) {
        throw std::runtime_error("authorized-keys file " + path + ": " + e.what());
    }
}

ZapAuthenticator::ZapAuthenticator(zmq::context_t& context, std::string authorized_keys_path,
                                   const std::atomic<std::uint32_t>& reload_requests)
    : path_(std::move(authorized_keys_path)),
      reload_requests_(reload_requests),
      reloads_seen_(reload_requests.load()),
      keys_(load_authorized_keys(path_)),
      initial_key_count_(keys_.size()),
      socket_(context, zmq::socket_type::rep) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind(kZapEndpoint);
    thread_ = std::thread([this] { run(); });
}

ZapAuthenticator::~ZapAuthenticator() {
    stop_.store(true);
    thread_.join();
}

void ZapAuthenticator::run() {
    Frames request;
    Frames reply;
    while (!stop_.load()) {
        if (const auto requested = reload_requests_.load(); requested != reloads_seen_) {
            reloads_seen_ = requested;
            reload();
        }
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        try {
            zmq::poll(&item, 1, kPollInterval);
            if ((item.revents & ZMQ_POLLIN) == 0) continue;
            if (!recv_frames(socket_, request, zmq::recv_flags::dontwait)) continue;
            answer(request, reply);
            send_frames(socket_, reply);
        } catch (const zmq::error_t& e) {
            if (e.num() == EINTR) continue;  // SIGHUP may land on this thread
            if (e.num() == ETERM) return;
            spdlog::error("ZAP handler: {}; new CURVE connections will wait for it", e.what());
        }
    }
}

void ZapAuthenticator::reload() {
    try {
        AuthorizedKeys fresh = load_authorized_keys(path_);
        spdlog::info("reloaded {}: {} key(s) (was {}); applies to new connections", path_,
                     fresh.size(), keys_.size());
        keys_ = std::move(fresh);
        refused_logged_.clear();  // a key removed now should be logged when it is refused
    } catch (const std::exception& e) {
        spdlog::error("reload failed, keeping the {} key(s) loaded before: {}", keys_.size(),
                      e.what());
    }
}

void ZapAuthenticator::answer(Frames& request, Frames& reply) {
    const std::string_view request_id =
        request.size() > kRequestId ? view(request[kRequestId]) : std::string_view{};
    // A REP socket must answer every request, or it stalls: malformed ones get 500.
    if (request.size() < kCredentials || view(request[kVersion]) != kZapVersion) {
        spdlog::error("ZAP handler: malformed request {}", describe(request));
        return set_reply(reply, request_id, "500", "malformed ZAP request", "");
    }
    const std::string_view address = view(request[kAddress]);
    if (view(request[kDomain]) != kZapDomain) {
        return set_reply(reply, request_id, "400", "unknown domain", "");
    }
    if (view(request[kMechanism]) != "CURVE" || request.size() != kCredentials + 1) {
        spdlog::warn("refused a {} connection from {}: only CURVE is accepted",
                     printable(view(request[kMechanism])), address);
        return set_reply(reply, request_id, "400", "CURVE required", "");
    }
    const std::string key = z85_from_binary(view(request[kCredentials]));
    const auto it = keys_.find(key);
    if (it == keys_.end()) {
        if (refused_logged_.size() < kMaxRefusedLogged && refused_logged_.insert(key).second) {
            spdlog::warn(
                "refused CURVE key {} from {}: not in {} (add `client|worker|admin {}` and "
                "send SIGHUP to admit it)",
                key, address, path_, key);
        }
        return set_reply(reply, request_id, "400", "key not authorized", "");
    }
    spdlog::debug("admitted CURVE key {} from {} as {}", key, address, role_name(it->second));
    // The User-Id of the connection's messages: its role, and its key as its fairness key.
    set_reply(reply, request_id, "200", "OK", std::string(role_name(it->second)) + ' ' + key);
}

}  // namespace zbroker::broker
