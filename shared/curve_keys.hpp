// CURVE keys (Z85) for every program: generate, read and write key pair files, apply to sockets.
//
// A key pair file is text, one `name = value` per line, `#` starting a comment:
//
//     # zbroker CURVE key pair: keep this file secret (mode 0600)
//     public = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
//     secret = JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6
//
// Both keys are 40-character Z85 (32 bytes); reading checks that `public` belongs to `secret`.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include <zmq.hpp>

namespace zbroker {

// A peer's own key pair, Z85.
struct CurveKeyPair {
    std::string public_key;
    std::string secret_key;
};

// What a client or worker needs to talk CURVE to the broker, all Z85: the broker's public key
// and its own pair (whose public key the broker's authorized-keys file must list).
struct CurveClientKeys {
    std::string server_public;
    std::string public_key;
    std::string secret_key;
};

inline constexpr std::size_t kCurveKeyBytes = 32;
inline constexpr std::size_t kCurveKeyZ85Size = 40;

// Whether this libzmq was built with CURVE (libsodium or tweetnacl).
bool curve_available() noexcept;

// A 40-character string that decodes as Z85.
bool is_z85_key(std::string_view key) noexcept;

// 32 raw bytes (as a ZAP request carries a public key) as Z85; empty if not 32 bytes.
std::string z85_from_binary(std::string_view bytes);

// A fresh key pair. Throws std::runtime_error when CURVE is unavailable.
CurveKeyPair generate_curve_keypair();

// Parses a key pair file's text. Throws std::invalid_argument naming the line at fault.
CurveKeyPair parse_curve_keypair(std::string_view text);

// Reads and parses `path`. Throws std::runtime_error ("path: line 2: ...") a person can act on.
// Warns when the file is readable by group or others: it holds a secret.
CurveKeyPair read_curve_keypair(const std::string& path);

// Writes `pair` to a new file `path` with mode 0600. Refuses to replace an existing file, so a
// key in use is never lost by a slip; throws std::runtime_error.
void write_curve_keypair(const std::string& path, const CurveKeyPair& pair);

// Reads `secret_file` and combines it with `server_public`; checks every key.
// Throws std::runtime_error saying which flag or file is wrong.
CurveClientKeys load_curve_client_keys(const std::string& server_public,
                                       const std::string& secret_file);

// Makes `socket` a CURVE client of the server whose public key `keys` names. Call before
// connect(). Throws std::invalid_argument when a key is not Z85.
void apply_curve_client(zmq::socket_ref socket, const CurveClientKeys& keys);

// Makes `socket` a CURVE server with `secret_key` (Z85); ZAP (domain `zap_domain`) decides who
// may connect. Call before bind(). Throws std::invalid_argument when the key is not Z85.
void apply_curve_server(zmq::socket_ref socket, const std::string& secret_key,
                        const std::string& zap_domain);

// The CURVE text files (key pairs, authorized keys) share one shape: `visit` gets each line
// trimmed, blank lines and lines starting with '#' skipped; an std::invalid_argument it throws
// comes back prefixed with "line N: ".
void for_each_key_file_line(std::string_view text,
                            const std::function<void(std::string_view line)>& visit);
// `text` without leading and trailing spaces, tabs and carriage returns.
std::string_view trim_blanks(std::string_view text);

}  // namespace zbroker
