// Baseline servers, kept as plain as a ZeroMQ program gets: poll, move frames, send.
#include "baselines.hpp"

#include <chrono>

#include "shared/frames.hpp"

namespace zbroker::bench {
namespace {

constexpr std::chrono::milliseconds kPollSlice{100};  // how soon a stop is noticed

bool readable(zmq::socket_ref socket) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    return zmq::poll(&item, 1, kPollSlice) > 0;
}

// [.. "" ZBC01 service id headers body...] -> [.. "" ZBC01 service id "200" body...], in place:
// `at` is where the empty delimiter is.
void answer_in_place(Frames& frames, std::size_t at) {
    if (frames.size() < at + 5) return;
    frames[at + 4] = frame(protocol::status_text(protocol::Status::ok));  // headers -> status
}

void tune(zmq::socket_t& socket) {
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, 100'000);
    socket.set(zmq::sockopt::rcvhwm, 100'000);
}

}  // namespace

DirectEchoServer::DirectEchoServer() {
    zmq::socket_t socket(context_, zmq::socket_type::router);
    tune(socket);
    socket.bind("tcp://127.0.0.1:*");
    endpoint_ = socket.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this, socket = std::move(socket)]() mutable {
        Frames frames;
        while (!stop_) {
            if (!readable(socket)) continue;
            while (recv_frames(socket, frames, zmq::recv_flags::dontwait)) {
                answer_in_place(frames, 1);
                send_frames(socket, frames, zmq::send_flags::dontwait);
            }
        }
    });
}

DirectEchoServer::~DirectEchoServer() {
    stop_ = true;
    thread_.join();
}

FeaturelessRelay::FeaturelessRelay(std::size_t workers) {
    zmq::socket_t frontend(context_, zmq::socket_type::router);
    zmq::socket_t backend(context_, zmq::socket_type::router);
    tune(frontend);
    tune(backend);
    frontend.bind("tcp://127.0.0.1:*");
    backend.bind("tcp://127.0.0.1:*");  // TCP like zbroker's workers, not inproc: same cost
    endpoint_ = frontend.get(zmq::sockopt::last_endpoint);
    const std::string backend_endpoint = backend.get(zmq::sockopt::last_endpoint);

    // Echo workers: DEALERs that say hello once, then answer [client "" ZBC01 ...] in place.
    for (std::size_t i = 0; i < workers; ++i) {
        zmq::socket_t worker(context_, zmq::socket_type::dealer);
        tune(worker);
        worker.connect(backend_endpoint);
        worker.send(zmq::str_buffer("hello"));
        threads_.emplace_back([this, worker = std::move(worker)]() mutable {
            Frames frames;
            while (!stop_) {
                if (!readable(worker)) continue;
                while (recv_frames(worker, frames, zmq::recv_flags::dontwait)) {
                    answer_in_place(frames, 1);
                    send_frames(worker, frames, zmq::send_flags::dontwait);
                }
            }
        });
    }
    threads_.emplace_back(
        [this, workers, frontend = std::move(frontend), backend = std::move(backend)]() mutable {
            std::vector<zmq::message_t> known;  // worker routing ids, round robin
            std::size_t next = 0;
            Frames frames;
            zmq::pollitem_t items[] = {{frontend.handle(), 0, ZMQ_POLLIN, 0},
                                       {backend.handle(), 0, ZMQ_POLLIN, 0}};
            while (!stop_) {
                if (zmq::poll(items, 2, kPollSlice) == 0) continue;
                while (recv_frames(backend, frames, zmq::recv_flags::dontwait)) {
                    if (frames.size() == 2) {  // hello
                        known.push_back(std::move(frames[0]));
                        continue;
                    }
                    frames.erase(frames.begin());  // drop the worker's id: [client "" ...] goes out
                    send_frames(frontend, frames, zmq::send_flags::dontwait);
                }
                if (known.size() < workers) continue;
                while (recv_frames(frontend, frames, zmq::recv_flags::dontwait)) {
                    zmq::message_t to;
                    to.copy(known[next++ % known.size()]);
                    frames.insert(frames.begin(), std::move(to));
                    send_frames(backend, frames, zmq::send_flags::dontwait);
                }
            }
        });
}

FeaturelessRelay::~FeaturelessRelay() {
    stop_ = true;
    for (auto& t : threads_)
        t.join();
}

}  // namespace zbroker::bench
