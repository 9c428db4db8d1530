// Logging setup shared by the four programs: spdlog to stderr with a level from the command line.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace zbroker {

// The accepted --log-level values, for CLI validation and help text.
const std::vector<std::string>& log_level_names();

// Installs the default logger for `program` at `level` (one of log_level_names()).
void init_logging(std::string_view program, std::string_view level);

}  // namespace zbroker
