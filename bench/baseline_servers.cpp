// Baseline servers, kept as plain as a ZeroMQ program gets: poll, move frames, send.
#include "baseline_servers.hpp"

#include <iostream>
#include <vector>

#include <zmq.hpp>

#include "shared/frames.hpp"

namespace zbroker::bench {
namespace {

// [.. "" ZBC01 service id headers body...] -> [.. "" ZBC01 service id "200" body...], in place:
// `at` is where the empty delimiter is.
void answer_in_place(Frames& frames, std::size_t at) {
    if (frames.size() < at + 5) return;
    frames[at + 4] = frame(protocol::status_text(protocol::Status::ok));  // headers -> status
}

// One I/O thread, as zbroker and zworker have.
zmq::socket_t make_socket(zmq::context_t& context, zmq::socket_type type) {
    zmq::socket_t socket(context, type);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, 100'000);
    socket.set(zmq::sockopt::rcvhwm, 100'000);
    return socket;
}

std::string bind_ephemeral(zmq::socket_t& socket) {
    socket.bind("tcp://127.0.0.1:*");
    return socket.get(zmq::sockopt::last_endpoint);
}

// Answers every message waiting on `socket`, then blocks for the next: the loop of both the
// direct server (delimiter at 1, after the client's id) and an echo worker (at 1, after the
// client's id the relay passes through).
void echo_forever(zmq::socket_t& socket) {
    Frames frames;
    while (true) {
        recv_frames(socket, frames);
        do {
            answer_in_place(frames, 1);
            send_frames(socket, frames, zmq::send_flags::dontwait);
        } while (recv_frames(socket, frames, zmq::recv_flags::dontwait));
    }
}

}  // namespace

void serve_direct_echo() {
    zmq::context_t context(1);
    zmq::socket_t socket = make_socket(context, zmq::socket_type::router);
    std::cerr << kListeningMarker << bind_ephemeral(socket) << std::endl;
    echo_forever(socket);
}

void serve_echo_worker(const std::string& backend) {
    zmq::context_t context(1);
    zmq::socket_t socket = make_socket(context, zmq::socket_type::dealer);
    socket.connect(backend);
    socket.send(zmq::str_buffer("hello"));
    echo_forever(socket);
}

void serve_relay(std::size_t workers) {
    zmq::context_t context(1);
    zmq::socket_t frontend = make_socket(context, zmq::socket_type::router);
    zmq::socket_t backend = make_socket(context, zmq::socket_type::router);
    const std::string frontend_endpoint = bind_ephemeral(frontend);
    // TCP like zbroker's workers, not inproc: the same cost per hop.
    const std::string backend_endpoint = bind_ephemeral(backend);
    std::cerr << kListeningMarker << frontend_endpoint << " backend " << backend_endpoint
              << std::endl;

    std::vector<zmq::message_t> known;  // worker routing ids, round robin
    std::size_t next = 0;
    Frames frames;
    while (known.size() < workers) {
        recv_frames(backend, frames);
        if (frames.size() == 2) known.push_back(std::move(frames[0]));  // hello
    }
    std::cerr << kRelayReadyMarker << " with " << known.size() << " echo workers" << std::endl;

    zmq::pollitem_t items[] = {{frontend.handle(), 0, ZMQ_POLLIN, 0},
                               {backend.handle(), 0, ZMQ_POLLIN, 0}};
    while (true) {
        zmq::poll(items, 2, std::chrono::milliseconds(-1));
        while (recv_frames(backend, frames, zmq::recv_flags::dontwait)) {
            frames.erase(frames.begin());  // drop the worker's id: [client "" ...] goes out
            send_frames(frontend, frames, zmq::send_flags::dontwait);
        }
        while (recv_frames(frontend, frames, zmq::recv_flags::dontwait)) {
            zmq::message_t to;
            to.copy(known[next++ % known.size()]);
            frames.insert(frames.begin(), std::move(to));
            send_frames(backend, frames, zmq::send_flags::dontwait);
        }
    }
}

}  // namespace zbroker::bench
