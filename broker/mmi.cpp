// mmi.services and mmi.stats: the only broker answers in msgpack, so the only file here that
// includes it.
#include "mmi.hpp"

#include <msgpack.hpp>

#include "broker/broker_core.hpp"

namespace zbroker::broker {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;
using protocol::Status;

// {status: n} for the non-zero entries of an array indexed by Counters::answer_index.
void pack_by_status(Packer& packer, const std::array<std::uint64_t, 8>& counts) {
    std::uint32_t present = 0;
    for (Status s : kAnsweredStatuses)
        present += counts[Counters::answer_index(s)] > 0 ? 1 : 0;
    packer.pack_map(present);
    for (Status s : kAnsweredStatuses) {
        const std::uint64_t n = counts[Counters::answer_index(s)];
        if (n == 0) continue;
        packer.pack(protocol::status_text(s));
        packer.pack(n);
    }
}

template <typename Kind, std::size_t N>
void pack_by_kind(Packer& packer, const std::array<std::uint64_t, N>& counts) {
    packer.pack_map(static_cast<std::uint32_t>(N));
    for (std::size_t i = 0; i < N; ++i) {
        packer.pack(name(static_cast<Kind>(i)));
        packer.pack(counts[i]);
    }
}

void pack_services(Packer& packer, std::span<const ServiceInfo> services) {
    packer.pack_map(static_cast<std::uint32_t>(services.size()));
    for (const ServiceInfo& info : services) {
        packer.pack(info.name);
        packer.pack_map(7);
        packer.pack("workers");
        packer.pack(info.workers);
        packer.pack("queued");
        packer.pack(info.waiting);
        packer.pack("top_keys");  // fairness key (printable) -> requests waiting, kTopKeys at most
        packer.pack_map(static_cast<std::uint32_t>(info.top_keys.size()));
        for (const KeyLoad& load : info.top_keys) {
            packer.pack(printable(load.key));  // a connection's key is its binary routing id
            packer.pack(load.waiting);
        }
        packer.pack("in_flight");
        packer.pack(info.in_flight);
        packer.pack("orphaned");
        packer.pack(info.orphaned);
        packer.pack("served");
        packer.pack(info.served);
        packer.pack("errors");
        pack_by_status(packer, info.failures);
    }
}

std::string to_string(const msgpack::sbuffer& buffer) {
    return {buffer.data(), buffer.size()};
}

}  // namespace

std::string encode_service_list(std::span<const ServiceInfo> services) {
    msgpack::sbuffer buffer;
    Packer packer(buffer);
    pack_services(packer, services);
    return to_string(buffer);
}

std::string encode_stats(const BrokerSnapshot& snapshot, std::span<const ServiceInfo> services) {
    const Counters& c = snapshot.counters;
    msgpack::sbuffer buffer;
    Packer packer(buffer);
    packer.pack_map(11);
    packer.pack("uptime_s");
    packer.pack(snapshot.uptime_s);
    packer.pack("workers");
    packer.pack(snapshot.workers);
    packer.pack("requests_held");
    packer.pack(snapshot.requests_held);
    packer.pack("peers");
    packer.pack(snapshot.peers);
    packer.pack("keys");
    packer.pack(snapshot.keys);
    packer.pack("totals");
    packer.pack_map(8);
    packer.pack("requests");
    packer.pack(c.requests);
    packer.pack("dispatches");
    packer.pack(c.dispatches);
    packer.pack("requeued");
    packer.pack(c.requeued);
    packer.pack("pushed_out");
    packer.pack(c.pushed_out);
    packer.pack("workers_registered");
    packer.pack(c.workers_registered);
    packer.pack("workers_expired");
    packer.pack(c.workers_expired);
    packer.pack("workers_removed");
    packer.pack(c.workers_removed);
    packer.pack("orphans_released");
    packer.pack(c.orphans_released);
    packer.pack("answers");
    pack_by_status(packer, c.answers);
    packer.pack("malformed");
    pack_by_kind<Malformed>(packer, c.malformed);
    packer.pack("drops");
    pack_by_kind<Drop>(packer, c.drops);
    packer.pack("services_total");
    packer.pack(snapshot.services.size());
    packer.pack("services");
    pack_services(packer, services);
    return to_string(buffer);
}

}  // namespace zbroker::broker
