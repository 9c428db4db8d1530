// The broker's ZAP handler (RFC 27, ZAP 1.0): admits CURVE peers whose key the authorized-keys
// file lists, and names their role (client, worker or admin) as the ZAP user id.
//
// The authorized-keys file is text, one key per line, `#` starting a comment line or a
// comment after the key:
//
//     # ROLE   PUBLIC-KEY (Z85, 40 characters)            comment
//     client   rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7   # the web front end
//     worker   Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID
//     admin    JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6   # ops laptop
//
// A key appears once: one key, one role.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <zmq.hpp>

#include "broker/broker_core.hpp"
#include "shared/frames.hpp"

namespace zbroker::broker {

// Where libzmq sends ZAP requests: one handler per context, bound to this name (RFC 27).
inline constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
// The domain our ROUTER announces; the handler serves only this one.
inline constexpr std::string_view kZapDomain = "zbroker";

// Public key (Z85) to role.
using AuthorizedKeys = std::unordered_map<std::string, PeerRole>;

// Parses an authorized-keys file's text. Throws std::invalid_argument("line 3: ...").
AuthorizedKeys parse_authorized_keys(std::string_view text);
// Reads and parses `path`. Throws std::runtime_error("path: line 3: ..."), and refuses a file
// that others may write (std::runtime_error saying the chmod or chown that fixes it).
AuthorizedKeys load_authorized_keys(const std::string& path);

// Serves ZAP on its own thread, not from the broker's poll loop: libzmq holds each CURVE
// handshake until the answer comes, so answers must not wait behind a batch of 1024 messages,
// and a reload reads a file, which must never stall routing. The table is touched by that
// thread only, so it needs no lock.
//
// Fail-closed: construct this before the CURVE ROUTER binds, so no connection is ever admitted
// without a ZAP answer; and the loop drops any message without a role.
class ZapAuthenticator {
  public:
    // Loads `authorized_keys_path` (throws std::runtime_error if it is unreadable or wrong),
    // binds kZapEndpoint in `context` (throws zmq::error_t if another handler holds it), and
    // starts serving. Each change of `reload_requests` (bumped by a SIGHUP handler) reloads.
    ZapAuthenticator(zmq::context_t& context, std::string authorized_keys_path,
                     const std::atomic<std::uint32_t>& reload_requests);
    ~ZapAuthenticator();
    ZapAuthenticator(const ZapAuthenticator&) = delete;
    ZapAuthenticator& operator=(const ZapAuthenticator&) = delete;

    std::size_t initial_key_count() const noexcept { return initial_key_count_; }

  private:
    void run();
    void reload();
    // Fills `reply` with the ZAP reply to `request`.
    void answer(Frames& request, Frames& reply);

    std::string path_;
    const std::atomic<std::uint32_t>& reload_requests_;
    std::uint32_t reloads_seen_;
    AuthorizedKeys keys_;
    std::size_t initial_key_count_;
    // Unknown keys already logged: each is logged once, not once per reconnect attempt.
    std::unordered_set<std::string> refused_logged_;
    zmq::socket_t socket_;
    std::atomic<bool> stop_{false};
    std::thread thread_;  // last: starts once everything above is ready
};

}  // namespace zbroker::broker
