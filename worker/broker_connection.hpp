// One ZB/1 worker session for one service at one broker: its DEALER, heartbeats and liveness,
// the state of its TCP link, and the replies of one loop round gathered into one message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "shared/clock.hpp"
#include "shared/connection_monitor.hpp"
#include "shared/curve_keys.hpp"
#include "shared/frames.hpp"
#include "shared/wire.hpp"
#include "worker/credit_in_force.hpp"

namespace zbroker::detail {

struct ConnectionTiming {
    Millis heartbeat_interval;
    int liveness;
    Millis reconnect_delay;
};

// The socket is replaced on every reconnect, and each socket gets a new id, so that a result
// computed for an old socket is recognised and never sent on its successor.
class BrokerConnection {
  public:
    // A broker that sends more JOBs beyond credit than this within one window is broken or
    // hostile: the session is ended (and started again), which also hands the broker back every
    // job it holds, to run elsewhere.
    static constexpr std::size_t kRefusalsTolerated = 32;
    static constexpr Millis kRefusalWindow{10'000};

    // `credit` is this session's share of the service's credit.
    BrokerConnection(std::string service, std::string endpoint, std::uint32_t credit,
                     ConnectionTiming timing);

    // Opens a new DEALER to the broker (CURVE when `curve` is set), watched by a
    // ConnectionMonitor, and sends READY with our credit: queued until the TCP link is up, so a
    // broker that is not back yet gets it once it is (libzmq retries the connect at its
    // reconnect interval). Replaces the current socket, if any, without a word to the broker.
    void connect(zmq::context_t& context, std::uint64_t id, TimePoint now,
                 const std::optional<CurveClientKeys>& curve = std::nullopt);
    // Closes at once (linger 0: whatever is queued belongs to a dead session) and schedules
    // the next connect after the reconnect delay.
    void drop(TimePoint now);
    // Sends what is pending and DISCONNECT, and closes, lingering up to `linger` so they get out.
    void disconnect(Millis linger);
    // Ends the session on our side, as disconnect() does, and schedules the next connect after
    // the reconnect delay.
    void quit(Millis linger, TimePoint now);

    bool connected() const noexcept { return socket_.has_value(); }
    std::uint64_t id() const noexcept { return id_; }
    const std::string& service() const noexcept { return service_; }
    const std::string& endpoint() const noexcept { return endpoint_; }
    zmq::socket_t& socket() { return *socket_; }

    // Readable when the TCP link to the broker came up or went down; only while connected().
    zmq::socket_ref link_events() noexcept { return monitor_->socket(); }
    // Reads the waiting link events; true when a link that was up (handshake done) went down:
    // the broker closed it, died or restarted, and this session is over. A link that never
    // came up is left to libzmq, which retries the connect by itself.
    bool link_lost();
    // Whether the link is known to be up: link_lost() has read its `up` and no `down` since.
    bool link_up() const noexcept { return connected() && link_up_; }

    // Any message at all, even a malformed one, shows that the broker is alive.
    void heard_from_broker(TimePoint now) noexcept;
    bool broker_expired(TimePoint now) const noexcept { return connected() && now >= expires_at_; }
    bool reconnect_due(TimePoint now) const noexcept {
        return !connected() && now >= reconnect_at_;
    }
    void send_heartbeat_if_due(TimePoint now);
    // The earliest moment a timer of this connection needs attention.
    TimePoint next_timer() const noexcept;

    // Asks the broker for a new credit with the next flush(), and in every later READY; nothing
    // is sent when it is the credit already asked for.
    void change_credit(std::uint32_t credit);

    // Tells the broker at once to send nothing more (CREDIT 0). The broker echoes it; from then
    // on no JOB can still be on its way.
    void stop_taking_work();
    void on_credit_echo(std::uint32_t credit) noexcept {
        credit_in_force_.echoed();
        if (credit == 0) stop_acknowledged_ = true;
    }
    bool stop_acknowledged() const noexcept { return stop_acknowledged_; }

    // A JOB came: true when it is within the credit in force (see CreditInForce), and then it is
    // held until finished_jobs(); false when the broker had no right to send it.
    bool take_job() noexcept {
        if (held_jobs_ >= credit_in_force_.most()) return false;
        ++held_jobs_;
        return true;
    }
    // Replied (or given up) jobs of this session: the broker may send as many new ones.
    void finished_jobs(std::size_t count = 1) noexcept {
        held_jobs_ -= std::min(count, held_jobs_);
    }
    std::size_t held_jobs() const noexcept { return held_jobs_; }
    std::uint32_t credit_in_force() const noexcept { return credit_in_force_.most(); }
    // A JOB take_job() refused; true when that makes more than kRefusalsTolerated in the
    // current window, and the session should quit().
    bool refused_job(TimePoint now) noexcept;

    // Adds a REPLY to the message sent by the next flush(): the replies that come in one loop
    // round travel as one message, or several past wire::kBatchBytes. `body` is moved from.
    void reply(std::string_view token, Frames& body);
    // Sends the pending replies; false when the socket would block (its queue to the broker is
    // full) and they were dropped, with how many in `dropped`.
    bool flush(std::size_t& dropped);

  private:
    bool send_now();
    // The monitor first: it must never outlive the socket it watches.
    void close_socket() noexcept;

    std::string service_;
    std::string endpoint_;
    std::uint32_t credit_;
    ConnectionTiming timing_;
    std::optional<zmq::socket_t> socket_;
    // Watches socket_; declared after it so that it is destroyed first. A pointer, because a
    // ConnectionMonitor cannot move and a BrokerConnection must (it lives in a vector).
    std::unique_ptr<ConnectionMonitor> monitor_;
    bool link_up_ = false;  // the monitor said up, and not down since
    std::uint64_t id_ = 0;
    TimePoint heartbeat_at_{};
    TimePoint expires_at_{};
    TimePoint reconnect_at_{};
    bool stop_acknowledged_ = false;
    CreditInForce credit_in_force_;
    std::size_t held_jobs_ = 0;  // of this session: taken and not finished
    TimePoint refusal_window_start_{};
    std::size_t refusals_in_window_ = 0;
    std::size_t dropped_early_ = 0;  // replies of a batch sent before flush() that would-blocked
    wire::Writer pending_;           // replies of this round
    Frames outgoing_;                // reused for every send
};

}  // namespace zbroker::detail
