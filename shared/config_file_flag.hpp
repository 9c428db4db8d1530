// `--config FILE` for the long-running programs (zbroker, zworker): every flag may come from a
// file of `long-flag-name = value` lines (CLI11's TOML subset), so systemd units can point at
// /etc/zbroker/*.conf. Header-only, so that only programs that parse flags see CLI11.
#pragma once

#include <CLI/CLI.hpp>

namespace zbroker {

inline void add_config_file_flag(CLI::App& app) {
    app.set_config("--config", "",
                   "Read flags from this file: `long-flag-name = value` lines (TOML); flags "
                   "given on the command line win");
    app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key must not pass
}

}  // namespace zbroker
