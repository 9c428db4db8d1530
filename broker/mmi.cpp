// mmi.services: the only broker answer that is msgpack, so the only file here that includes it.
#include "mmi.hpp"

#include <msgpack.hpp>

#include "broker/broker_core.hpp"

namespace zbroker::broker {

std::string encode_service_list(const BrokerCore& core) {
    std::size_t count = 0;
    core.for_each_service([&count](const ServiceInfo&) { ++count; });
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_map(static_cast<std::uint32_t>(count));
    core.for_each_service([&packer](const ServiceInfo& info) {
        packer.pack(info.name);
        packer.pack_map(3);
        packer.pack("workers");
        packer.pack(info.workers);
        packer.pack("queued");
        packer.pack(info.waiting);
        packer.pack("in_flight");
        packer.pack(info.dispatched);
    });
    return {buffer.data(), buffer.size()};
}

}  // namespace zbroker::broker
