// The hash of the broker's maps keyed by std::string: a lookup by std::string_view (a routing
// id or a name still in its frame) hashes the view and builds no string (C++20 heterogeneous
// lookup, with std::equal_to<>).
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace zbroker::broker {

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};

}  // namespace zbroker::broker
