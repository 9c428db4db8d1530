// Expiry order, kept by moving a worker to the back when it is heard from.
#include "worker_registry.hpp"

namespace zbroker::broker {

WorkerRegistry::~WorkerRegistry() {
    by_expiry_.clear();
}

void WorkerRegistry::add(Worker& worker, TimePoint expiry) {
    worker.expiry = expiry;
    by_expiry_.push_back(worker);
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

void WorkerRegistry::remove(Worker& worker) noexcept {
    by_expiry_.erase(by_expiry_.iterator_to(worker));
}

}  // namespace zbroker::broker
