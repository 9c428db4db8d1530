// The services zworker offers out of the box: echo, hello, sleep, stats, fail.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "worker/worker.hpp"

namespace zbroker {

// The names add_builtin_service() accepts, in the order --help lists them.
const std::vector<std::string>& builtin_service_names();

// Registers the built-in service `name` on `worker`; throws std::invalid_argument naming the
// known services when `name` is not one of them.
void add_builtin_service(Worker& worker, std::string_view name);

}  // namespace zbroker
