// zbench_core: request+reply cycles through BrokerCore alone, no sockets: what routing costs.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "broker/broker_core.hpp"

namespace {

using namespace zbroker;

// Keeps the last REQUEST's token so the "worker" can answer it; discards everything else.
class TokenOutbox : public broker::Outbox {
  public:
    SendResult send(FrameSpan frames) override {
        if (frames.size() > 4 && frames[3].size() == 1 &&
            *static_cast<const char*>(frames[3].data()) ==
                static_cast<char>(protocol::WorkerCommand::request)) {
            token.assign(static_cast<const char*>(frames[4].data()), frames[4].size());
        }
        return SendResult::sent;
    }
    std::string token;
};

Frames message(std::initializer_list<std::string_view> parts) {
    Frames frames;
    for (auto part : parts)
        frames.push_back(frame(part));
    return frames;
}

}  // namespace

int main(int argc, char** argv) {
    const long cycles = argc > 1 ? std::atol(argv[1]) : 2'000'000;
    const std::string body(argc > 2 ? static_cast<std::size_t>(std::atol(argv[2])) : 32, 'x');
    TokenOutbox outbox;
    auto clock = Clock::now();
    broker::BrokerCore core({}, outbox, clock);
    const std::string command_ready(1, static_cast<char>(protocol::WorkerCommand::ready));
    const std::string command_reply(1, static_cast<char>(protocol::WorkerCommand::reply));
    Frames in = message({"W", "", protocol::kMdpWorker, command_ready, "echo"});
    core.on_message(in, clock);

    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; ++i) {
        in = message({"C", "", protocol::kZbcClient, "echo", "12345678", "", body});
        core.on_message(in, clock);
        core.flush();  // the broker loop's end of a read batch: the REQUEST goes out
        in = message({"W", "", protocol::kMdpWorker, command_reply, outbox.token, "", body});
        core.on_message(in, clock);
        core.flush();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%ld request+reply cycles of %zu B in %.3f s: %.0f cycles/s, %.0f ns per cycle\n",
                cycles, body.size(), seconds, static_cast<double>(cycles) / seconds,
                seconds * 1e9 / static_cast<double>(cycles));
    return core.live_requests() == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
