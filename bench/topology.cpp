// Spawns zbroker and zworker processes and waits until mmi.services shows every worker.
#include "topology.hpp"

#include <chrono>
#include <map>
#include <stdexcept>
#include <thread>

#include "client/client.hpp"
#include "shared/codec.hpp"

namespace zbroker::bench {

namespace {

struct ServiceFigures {
    int workers = 0;
    MSGPACK_DEFINE_MAP(workers)
};

}  // namespace

int registered_workers(const std::string& endpoint, const std::string& service) {
    Client client(endpoint);
    CallOptions options;
    options.timeout = std::chrono::milliseconds(1000);
    options.retries = 0;
    const Response response = client.call(protocol::kMmiServices, "", options);
    if (!response.ok()) return -1;
    try {
        const msgpack::object_handle handle = unpack_object(response.body_view());
        const auto services = handle.get().as<std::map<std::string, msgpack::object>>();
        const auto it = services.find(service);
        return it == services.end() ? 0 : it->second.as<ServiceFigures>().workers;
    } catch (const std::exception&) {
        return -1;
    }
}

Topology::Topology(const TopologySpec& spec)
    : broker_(start_broker(spec.bin_dir, spec.broker_args)) {  // at info: it logs its endpoint
    for (std::size_t i = 0; i < spec.workers; ++i) {
        std::vector<std::string> argv{spec.bin_dir + "/zworker",
                                      "--broker",
                                      endpoint(),
                                      "--service",
                                      spec.service,
                                      "--log-level",
                                      "warn"};
        if (spec.credit > 0) {
            argv.insert(argv.end(), {"--credit", std::to_string(spec.credit)});
        }
        if (spec.threads > 0) {
            argv.insert(argv.end(), {"--threads", std::to_string(spec.threads)});
        }
        workers_.emplace_back(std::move(argv));
    }
    const auto deadline = std::chrono::steady_clock::now() + kStartPatience;
    while (registered_workers(endpoint(), spec.service) < static_cast<int>(spec.workers)) {
        if (std::chrono::steady_clock::now() > deadline) {
            throw std::runtime_error("workers did not register within " +
                                     std::to_string(kStartPatience.count()) +
                                     " s (they failed, or the machine is too slow); broker log:\n" +
                                     broker_.first.output());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

}  // namespace zbroker::bench
