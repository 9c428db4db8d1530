// The CURVE client flags zclient and zworker share: --curve-server-key and --curve-secret.
// Header-only, so that only the two programs that parse flags see CLI11.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "shared/curve_keys.hpp"

namespace zbroker {

struct CurveClientFlags {
    std::string server_key;
    std::string secret_file;

    // Adds both flags to `app`; each needs the other. `secret_help` says whose pair it is.
    void add_to(CLI::App& app, const std::string& secret_help) {
        auto* server = app.add_option(
            "--curve-server-key", server_key,
            "Talk CURVE: the broker's public key (Z85, the `public =` line of its key file)");
        auto* secret =
            app.add_option("--curve-secret", secret_file, "With --curve-server-key: " + secret_help)
                ->check(CLI::ExistingFile);
        server->needs(secret);
        secret->needs(server);
    }

    // The keys when the flags were given, else nullopt. Throws with a message to show.
    std::optional<CurveClientKeys> load() const {
        if (secret_file.empty()) return std::nullopt;
        return load_curve_client_keys(server_key, secret_file);
    }
};

}  // namespace zbroker
