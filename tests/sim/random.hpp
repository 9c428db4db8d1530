// The simulator's one source of randomness: splitmix64, so a seed replays a run exactly on any
// platform (std:: distributions are implementation-defined; only this arithmetic is used).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zbroker::sim {

class Random {
  public:
    explicit Random(std::uint64_t seed) noexcept : state_(seed) {}

    std::uint64_t next() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // 0 to n - 1; 0 when n is 0.
    std::size_t pick(std::size_t n) noexcept { return n == 0 ? 0 : next() % n; }
    // lo to hi, both included.
    std::uint64_t between(std::uint64_t lo, std::uint64_t hi) noexcept {
        return lo + next() % (hi - lo + 1);
    }
    // True about once in n calls; never for n == 0.
    bool one_in(std::uint64_t n) noexcept { return n != 0 && next() % n == 0; }
    // True with probability per_mille / 1000.
    bool per_mille(std::uint32_t per_mille) noexcept { return next() % 1000 < per_mille; }
    // An independent stream: one per component, so changing how one draws leaves the others'
    // draws as they were.
    Random split() noexcept { return Random(next()); }

  private:
    std::uint64_t state_;
};

}  // namespace zbroker::sim
