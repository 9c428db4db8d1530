// Worker lookup by routing id, and expiry order kept by moving a worker to the back when heard.
#include "worker_registry.hpp"

namespace zbroker::broker {

WorkerRegistry::~WorkerRegistry() {
    by_expiry_.clear();
}

Worker* WorkerRegistry::find(std::string_view identity) noexcept {
    const auto it = by_identity_.find(identity);
    return it == by_identity_.end() ? nullptr : it->second.get();
}

Worker& WorkerRegistry::add(std::string_view identity, Service& service, std::uint32_t credit,
                            bool native, TimePoint expiry) {
    auto worker = std::make_unique<Worker>();
    worker->identity = identity;
    worker->service = &service;
    worker->credit = credit;
    worker->native = native;
    worker->expiry = expiry;
    Worker& added = *worker;
    by_identity_.emplace(added.identity, std::move(worker));
    by_expiry_.push_back(added);
    return added;
}

void WorkerRegistry::touch(Worker& worker, TimePoint expiry) noexcept {
    worker.expiry = expiry;
    by_expiry_.erase(by_expiry_.iterator_to(worker));
    by_expiry_.push_back(worker);
}

Worker* WorkerRegistry::first_to_expire() noexcept {
    return by_expiry_.empty() ? nullptr : &by_expiry_.front();
}

const Worker* WorkerRegistry::first_to_expire() const noexcept {
    return by_expiry_.empty() ? nullptr : &by_expiry_.front();
}

void WorkerRegistry::remove(Worker& worker) {
    by_expiry_.erase(by_expiry_.iterator_to(worker));
    by_identity_.erase(by_identity_.find(worker.identity));  // destroys the worker
}

}  // namespace zbroker::broker
