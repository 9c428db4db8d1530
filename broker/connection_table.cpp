// Descriptor to routing id and back, each binding replacing whatever it contradicts.
#include "broker/connection_table.hpp"

#include <utility>

namespace zbroker::broker {

ConnectionTable::Slot& ConnectionTable::slot(int fd) {
    const auto index = static_cast<std::size_t>(fd);
    if (index >= by_fd_.size()) by_fd_.resize(index + 1);
    return by_fd_[index];
}

void ConnectionTable::unbind(Slot& slot) {
    if (slot.identity.empty()) return;
    fd_of_.erase(fd_of_.find(std::string_view(slot.identity)));
    slot.identity.clear();
}

ConnectionTable::Binding ConnectionTable::bind(int fd, std::string_view identity) {
    Binding binding;
    if (fd < 0 || identity.empty()) return binding;
    Slot& on_fd = slot(fd);
    if (on_fd.closed) {
        binding.from_closed = true;
        return binding;
    }
    if (on_fd.identity == identity) return binding;
    if (!on_fd.identity.empty()) {
        // Its close was never reported (it cannot be: closes come first); be safe all the same.
        binding.gone.push_back(on_fd.identity);
        unbind(on_fd);
    }
    const auto elsewhere = fd_of_.find(identity);
    if (elsewhere != fd_of_.end()) {
        // The routing id moved to a new connection: the one that had it closed.
        binding.gone.emplace_back(identity);
        unbind(by_fd_[static_cast<std::size_t>(elsewhere->second)]);
    }
    on_fd.identity.assign(identity);
    fd_of_.emplace(on_fd.identity, fd);
    return binding;
}

void ConnectionTable::accepted(int fd) {
    if (fd < 0) return;
    Slot& on_fd = slot(fd);
    unbind(on_fd);
    on_fd.closed = false;
}

std::optional<std::string> ConnectionTable::closed(int fd) {
    if (fd < 0) return std::nullopt;
    Slot& on_fd = slot(fd);
    on_fd.closed = true;
    if (on_fd.identity.empty()) return std::nullopt;
    std::optional<std::string> identity = on_fd.identity;
    unbind(on_fd);
    return identity;
}

}  // namespace zbroker::broker
