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

// A ROUTER that answers every ZBC01 request itself, 200 with the body: no hop at all.
// Runs until the process is killed.
void serve_direct_echo();

// Frontend ROUTER for clients, backend ROUTER for `workers` echo workers, round robin between
// them, frames passed through untouched: the two hops of a broker without any of its work.
void serve_relay(std::size_t workers);

// A DEALER to the relay's backend: says hello once, then answers every request in place.
void serve_echo_worker(const std::string& backend);

}  // namespace zbroker::bench
