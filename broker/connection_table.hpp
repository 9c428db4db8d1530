// Which routing id each of the ROUTER's connections carries, by file descriptor. libzmq's
// monitor reports a connection's arrival and close by descriptor only; the broker must map a
// close to the peer that left before another connection can take its routing id (with CURVE,
// the routing id is no proof of who is behind it, the key is).
//
// What libzmq guarantees and this relies on: it reports a close before it drops the closed
// connection's pipe, a routing id passes to a new connection only once that pipe is gone, and
// that pipe is gone only once the broker has read every message in it; a descriptor is reused
// only after its close, and a new connection is reported accepted before it can send. So when a
// message comes on a connection not known to carry its routing id, or on one known closed, the
// loop first reads the monitor's pending events, then binds: by then every close that matters
// is known.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/string_hash.hpp"

namespace zbroker::broker {

class ConnectionTable {
  public:
    // Whether a message from `identity` on `fd` needs the monitor's events read first (then
    // bind()): the connection is not known to carry it, or was reported closed. Otherwise
    // (the common case) one comparison.
    bool needs_events(int fd, std::string_view identity) const noexcept {
        if (fd < 0 || static_cast<std::size_t>(fd) >= by_fd_.size()) return true;
        const Slot& slot = by_fd_[static_cast<std::size_t>(fd)];
        return slot.closed || slot.identity != identity || identity.empty();
    }
    struct Binding {
        std::vector<std::string> gone;  // routing ids whose connections must have closed
        // The message was sent by a connection that has since closed (it stayed in libzmq's
        // queue): it may be acted on, but its peer is gone once it has been.
        bool from_closed = false;
    };
    // From now on `fd` carries `identity`; call it after reading the monitor's events.
    Binding bind(int fd, std::string_view identity);
    // A new connection on `fd`.
    void accepted(int fd);
    // Connection `fd` closed: the routing id it carried, if it ever sent a message.
    std::optional<std::string> closed(int fd);

    std::size_t size() const noexcept { return fd_of_.size(); }

  private:
    struct Slot {
        std::string identity;  // empty: none known
        bool closed = false;
    };
    Slot& slot(int fd);
    void unbind(Slot& slot);

    std::vector<Slot> by_fd_;
    std::unordered_map<std::string, int, StringHash, std::equal_to<>> fd_of_;
};

}  // namespace zbroker::broker
