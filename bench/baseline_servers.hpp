// The baseline servers' loops, each run as its own process (zbench's hidden subcommands), so
// that a baseline has a process and a ZeroMQ I/O thread of its own, as zbroker and zworker do.
#pragma once

#include <cstddef>
#include <string>

namespace zbroker::bench {

// What a baseline server writes on stderr once its sockets are bound, followed by
// "ENDPOINT", or "FRONTEND backend BACKEND" for the relay.
inline constexpr const char* kListeningMarker = "listening on ";
// What the relay writes on stderr once every echo worker has said hello.
inline constexpr const char* kRelayReadyMarker = "relay ready";
// What the bare 7/MDP broker writes on stderr once every worker has said READY.
inline constexpr const char* kBareMdpReadyMarker = "bare 7/MDP broker ready";

// A ROUTER that answers every message itself: no hop at all. zbench's own client gets what
// zbroker would send it: for a ZB/1 message, an ANSWER (200, the same body) per REQUEST record,
// in one message; for a ZBC01 request, 200 and its body. Anything else (the minimal client's one
// body frame, with or without 7/MDP client frames before it) comes back as it came. Runs until
// the process is killed.
void serve_direct_echo();

// Frontend ROUTER for clients, backend ROUTER for `workers` echo workers, round robin between
// them, frames passed through untouched: the relay a user writes from the zguide's lbbroker.
void serve_relay(std::size_t workers);

// The least a Majordomo broker can do, on one ROUTER: once `workers` 7/MDP workers said READY,
// each 7/MDP client request (one body frame) goes round robin to one of them as a REQUEST whose
// client address is the client's routing id, and each REPLY goes back to the client that
// address names. No queue, no state per request, no retry, deadline or heartbeat: the cost of
// 7/MDP's frames and their translation alone, so that zbroker's own work shows beside it.
// Replies name the workers' service: a broker without state does not know the request's.
void serve_bare_mdp_broker(std::size_t workers);

// A DEALER to the relay's backend: says hello once, then sends every message back as it came.
void serve_echo_worker(const std::string& backend);

// A bare 7/MDP worker on a DEALER: READY for `service` with a credit frame, then every
// REQUEST back as a REPLY with the same body, and a HEARTBEAT for every HEARTBEAT. Exits when
// the broker sends DISCONNECT.
void serve_mdp_worker(const std::string& broker, const std::string& service, int credit);

}  // namespace zbroker::bench
