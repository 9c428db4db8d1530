// spdlog configuration: one colored stderr logger named after the program.
#include "logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace zbroker {

const std::vector<std::string>& log_level_names() {
    static const std::vector<std::string> names{"trace", "debug",    "info", "warn",
                                                "error", "critical", "off"};
    return names;
}

void init_logging(std::string_view program, std::string_view level) {
    auto logger = spdlog::stderr_color_mt(std::string(program));
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n[%P] %^%l%$: %v");
    logger->set_level(spdlog::level::from_str(std::string(level)));
    spdlog::set_default_logger(std::move(logger));
}

}  // namespace zbroker
