// The minimal client: what a user writes with cppzmq in a page, and the yardstick for zbench's
// own client. A DEALER per connection keeps `inflight` requests in flight, each one body frame
// (after fixed prefix frames, if any), and sends a new one per reply. No ids, no headers, no
// protocol: the body's first 8 bytes carry its send time, so a reply finds its latency in
// whatever order replies come.
//
// It drives every baseline that a user's own program would face: the direct echo (the floor),
// the plain relay, and, with a 7/MDP client prefix, the relay and zbroker over 7/MDP. zbench's
// client (load_run.hpp) must reach 0.9x its req/s on the direct echo, or zbench, not the
// target, is what a run measures.
#pragma once

#include <string>
#include <vector>

#include "bench/load_run.hpp"

namespace zbroker::bench {

// Frames sent before the body and expected before it in the reply: none for the plain echo and
// relay, "" MDPC01 service for 7/MDP (a broker's MDP reply has the same three frames).
using Prefix = std::vector<std::string>;
Prefix mdp_client_prefix(const std::string& service);

// Bodies carry an 8-byte send time: with --size below 8 the minimal client sends 8 bytes.
inline constexpr std::size_t kMinimalBodySize = 8;

// The same run as run_load() (warm-up, then `duration` or `requests`; clients spread over at
// most as many threads as cores), driven by minimal clients. A reply that is not the prefix
// and one body frame of at least 8 bytes counts as a 400 error.
LoadResult run_minimal_load(const LoadSpec& spec, const Prefix& prefix,
                            const ProgressCallback& on_progress = {});

}  // namespace zbroker::bench
