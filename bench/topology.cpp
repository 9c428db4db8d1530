// Spawns zbroker and zworker processes and waits until every broker's mmi.services shows every
// worker.
#include "topology.hpp"

#include <chrono>
#include <map>
#include <stdexcept>
#include <thread>

#include "shared/codec.hpp"

namespace zbroker::bench {

namespace {

struct ServiceEntry {
    int workers = 0;
    std::uint64_t served = 0;
    MSGPACK_DEFINE_MAP(workers, served)
};

// A broker on `bind`: at info level, since it logs its endpoint there.
ChildProcess spawn_broker(const std::string& bin_dir, const std::string& bind,
                          const std::vector<std::string>& extra_args) {
    std::vector<std::string> argv{bin_dir + "/zbroker", "--bind", bind};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    return ChildProcess(std::move(argv));
}

}  // namespace

std::optional<ServiceFigures> service_figures(Client& client, const std::string& service,
                                              std::chrono::milliseconds timeout) {
    CallOptions options;
    options.timeout = timeout;
    options.retries = 0;
    const Response response = client.call(protocol::kMmiServices, "", options);
    if (!response.ok()) return std::nullopt;
    try {
        const msgpack::object_handle handle = unpack_object(response.body_view());
        const auto services = handle.get().as<std::map<std::string, msgpack::object>>();
        const auto it = services.find(service);
        if (it == services.end()) return ServiceFigures{};
        const auto entry = it->second.as<ServiceEntry>();
        return ServiceFigures{entry.workers, entry.served};
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

int registered_workers(const std::string& endpoint, const std::string& service) {
    Client client(endpoint);
    const auto figures = service_figures(client, service, std::chrono::milliseconds(1000));
    return figures ? figures->workers : -1;
}

Topology::Topology(const TopologySpec& spec)
    : bin_dir_(spec.bin_dir), broker_args_(spec.broker_args) {
    if (spec.brokers == 0) throw std::invalid_argument("a topology needs at least one broker");
    for (std::size_t i = 0; i < spec.brokers; ++i) {
        auto [broker, endpoint] = start_broker(spec.bin_dir, spec.broker_args);
        brokers_.push_back(std::move(broker));
        endpoint_list_ += (i == 0 ? "" : ",") + endpoint;
        endpoints_.push_back(std::move(endpoint));
    }
    for (std::size_t i = 0; i < spec.workers; ++i) {
        std::vector<std::string> argv{spec.bin_dir + "/zworker"};
        for (const std::string& endpoint : endpoints_)
            argv.insert(argv.end(), {"--broker", endpoint});
        argv.insert(argv.end(), {"--service", spec.service, "--log-level", "warn"});
        if (spec.credit > 0) {
            argv.insert(argv.end(), {"--credit", std::to_string(spec.credit)});
        }
        if (spec.threads > 0) {
            argv.insert(argv.end(), {"--threads", std::to_string(spec.threads)});
        }
        workers_.emplace_back(std::move(argv));
    }
    const auto deadline = std::chrono::steady_clock::now() + kStartPatience;
    for (std::size_t i = 0; i < endpoints_.size(); ++i) {
        while (registered_workers(endpoints_[i], spec.service) < static_cast<int>(spec.workers)) {
            if (std::chrono::steady_clock::now() > deadline) {
                std::string workers_log;
                if (!workers_.empty())
                    workers_log = "\nfirst worker's log:\n" + workers_[0].output();
                throw std::runtime_error(
                    "workers did not register with broker " + endpoints_[i] + " within " +
                    std::to_string(kStartPatience.count()) +
                    " s (they failed, or the machine is too slow); broker log:\n" +
                    brokers_[i].output() + workers_log);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
}

CpuSubjects Topology::cpu_subjects() const {
    return {pids_of(brokers_), pids_of(workers_)};
}

std::optional<int> Topology::stop_broker(std::size_t index, int signo,
                                         std::chrono::milliseconds patience) {
    brokers_[index].signal(signo);
    return brokers_[index].wait(patience);
}

void Topology::restart_broker(std::size_t index) {
    const auto deadline = std::chrono::steady_clock::now() + kStartPatience;
    while (true) {
        ChildProcess broker = spawn_broker(bin_dir_, endpoints_[index], broker_args_);
        if (broker.wait_for("listening on ", kStartPatience)) {
            brokers_[index] = std::move(broker);
            return;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            throw std::runtime_error("zbroker could not listen on " + endpoints_[index] +
                                     " again within " + std::to_string(kStartPatience.count()) +
                                     " s; its last output:\n" + broker.output());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the port may be taken
    }
}

}  // namespace zbroker::bench
