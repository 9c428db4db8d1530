// The non-template parts of Request and Reply: raw bytes, frames, and the error map.
#include "worker/payload.hpp"

#include <map>
#include <string>

namespace zbroker {

std::string_view Request::body() const noexcept {
    return frames.empty() ? std::string_view{} : view(frames.front());
}

Reply Reply::raw(std::string_view bytes) {
    Reply reply;
    reply.body.push_back(frame(bytes));
    return reply;
}

Reply Reply::frames(Frames&& parts) {
    Reply reply;
    reply.body = std::move(parts);
    return reply;
}

Reply Reply::error(std::string_view message) {
    return Reply::of(std::map<std::string, std::string>{{"error", std::string(message)}});
}

}  // namespace zbroker
