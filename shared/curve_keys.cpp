// Key pair files and CURVE socket options over libzmq's zmq_curve_keypair/zmq_z85_*.
#include "shared/curve_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <spdlog/spdlog.h>

namespace zbroker {
namespace {

// The Z85 public key that belongs to a Z85 secret key, or empty if it is not one.
std::string public_of(const std::string& secret_key) {
    std::array<char, kCurveKeyZ85Size + 1> public_key{};
    if (zmq_curve_public(public_key.data(), secret_key.c_str()) != 0) return {};
    return public_key.data();
}

void require_key(const std::string& key, const char* what) {
    if (!is_z85_key(key)) {
        throw std::invalid_argument(std::string(what) + " is not a 40-character Z85 CURVE key (" +
                                    std::to_string(key.size()) +
                                    " characters); make one with `zbroker keygen`");
    }
}

}  // namespace

bool curve_available() noexcept {
    return zmq_has("curve") != 0;
}

bool is_z85_key(std::string_view key) noexcept {
    if (key.size() != kCurveKeyZ85Size) return false;
    std::array<char, kCurveKeyZ85Size + 1> text{};
    std::memcpy(text.data(), key.data(), key.size());
    std::array<std::uint8_t, kCurveKeyBytes> bytes{};
    return zmq_z85_decode(bytes.data(), text.data()) != nullptr;
}

std::string z85_from_binary(std::string_view bytes) {
    if (bytes.size() != kCurveKeyBytes) return {};
    std::array<char, kCurveKeyZ85Size + 1> text{};
    if (zmq_z85_encode(text.data(), reinterpret_cast<const std::uint8_t*>(bytes.data()),
                       bytes.size()) == nullptr)
        return {};
    return text.data();
}

CurveKeyPair generate_curve_keypair() {
    std::array<char, kCurveKeyZ85Size + 1> public_key{};
    std::array<char, kCurveKeyZ85Size + 1> secret_key{};
    if (zmq_curve_keypair(public_key.data(), secret_key.data()) != 0) {
        throw std::runtime_error(
            "cannot make a CURVE key pair: this libzmq was built without CURVE (zmq_has(\"curve\") "
            "is false); install a libzmq built with libsodium");
    }
    return {public_key.data(), secret_key.data()};
}

CurveKeyPair parse_curve_keypair(std::string_view text) {
    CurveKeyPair pair;
    // Z85 keys may contain '#' and '=': the first '=' splits a line.
    for_each_key_file_line(text, [&pair](std::string_view line) {
        const auto equals = line.find('=');
        if (equals == std::string_view::npos) {
            throw std::invalid_argument("expected `public = KEY` or `secret = KEY`");
        }
        const std::string_view name = trim_blanks(line.substr(0, equals));
        const std::string value(trim_blanks(line.substr(equals + 1)));
        if (!is_z85_key(value)) {
            throw std::invalid_argument("the " + std::string(name) +
                                        " key is not 40-character Z85");
        }
        if (name == "public") {
            pair.public_key = value;
        } else if (name == "secret") {
            pair.secret_key = value;
        } else {
            throw std::invalid_argument("unknown name '" + std::string(name) +
                                        "' (expected public or secret)");
        }
    });
    if (pair.secret_key.empty()) throw std::invalid_argument("no `secret = KEY` line");
    const std::string derived = public_of(pair.secret_key);
    if (pair.public_key.empty()) pair.public_key = derived;
    if (pair.public_key != derived) {
        throw std::invalid_argument(
            "the public key does not belong to the secret key; regenerate the pair");
    }
    return pair;
}

CurveKeyPair read_curve_keypair(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        throw std::runtime_error("cannot read key pair file " + path + ": " + std::strerror(errno) +
                                 "; make one with `zbroker keygen --out " + path + "`");
    }
    std::ostringstream text;
    text << in.rdbuf();
    struct stat status {};
    if (::stat(path.c_str(), &status) == 0 && (status.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        spdlog::warn("key pair file {} is readable by others; it holds a secret: chmod 600 {}",
                     path, path);
    }
    try {
        return parse_curve_keypair(text.str());
    } catch (const std::invalid_argument& e) {
        throw std::runtime_error("key pair file " + path + ": " + e.what());
    }
}

void write_curve_keypair(const std::string& path, const CurveKeyPair& pair) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        throw std::runtime_error(
            "cannot create key pair file " + path + ": " + std::strerror(errno) +
            (errno == EEXIST ? " (remove it first, or pick another --out)" : ""));
    }
    const std::string text =
        "# zbroker CURVE key pair: keep this file secret (mode 0600).\n"
        "# Give the public key to peers; the broker lists it in its authorized-keys file.\n"
        "public = " +
        pair.public_key + "\nsecret = " + pair.secret_key + "\n";
    std::size_t written = 0;
    while (written < text.size()) {
        const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const std::string why = std::strerror(errno);
            ::close(fd);
            ::unlink(path.c_str());
            throw std::runtime_error("cannot write key pair file " + path + ": " + why);
        }
        written += static_cast<std::size_t>(n);
    }
    if (::close(fd) != 0) {
        throw std::runtime_error("cannot write key pair file " + path + ": " +
                                 std::strerror(errno));
    }
}

CurveClientKeys load_curve_client_keys(const std::string& server_public,
                                       const std::string& secret_file) {
    if (!is_z85_key(server_public)) {
        throw std::runtime_error(
            "--curve-server-key is not a 40-character Z85 key; give the broker's public key "
            "(the `public =` line of the broker's key pair file)");
    }
    const CurveKeyPair own = read_curve_keypair(secret_file);
    return {server_public, own.public_key, own.secret_key};
}

void apply_curve_client(zmq::socket_ref socket, const CurveClientKeys& keys) {
    require_key(keys.server_public, "the broker's public key");
    require_key(keys.public_key, "our public key");
    require_key(keys.secret_key, "our secret key");
    socket.set(zmq::sockopt::curve_serverkey, keys.server_public);
    socket.set(zmq::sockopt::curve_publickey, keys.public_key);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

void apply_curve_server(zmq::socket_ref socket, const std::string& secret_key,
                        const std::string& zap_domain) {
    require_key(secret_key, "the broker's secret key");
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, secret_key);
    socket.set(zmq::sockopt::zap_domain, zap_domain);
}

std::string_view trim_blanks(std::string_view text) {
    const auto first = text.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) return {};
    const auto last = text.find_last_not_of(" \t\r");
    return text.substr(first, last - first + 1);
}

void for_each_key_file_line(std::string_view text,
                            const std::function<void(std::string_view line)>& visit) {
    std::size_t line_number = 0;
    while (!text.empty()) {
        ++line_number;
        const auto end = text.find('\n');
        const std::string_view line = trim_blanks(text.substr(0, end));
        text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
        if (line.empty() || line.front() == '#') continue;
        try {
            visit(line);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("line " + std::to_string(line_number) + ": " + e.what());
        }
    }
}

}  // namespace zbroker
