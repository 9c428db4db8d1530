// Baseline servers, kept as plain as a ZeroMQ program gets: poll, move frames, send.
#include "baseline_servers.hpp"

#include <cstdlib>
#include <iostream>
#include <vector>

#include <zmq.hpp>

#include "shared/frames.hpp"
#include "shared/wire.hpp"

namespace zbroker::bench {
namespace {

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

// [client "" ZBC01 service id headers body...]: a request from zbench's own client.
bool is_zbc_request(const Frames& frames) {
    return frames.size() >= 6 && frames[1].size() == 0 && view(frames[2]) == protocol::kZbcClient;
}

// The direct echo's answer to a ZB/1 message [client envelope body-frames...] from zbench's own
// client: an ANSWER (200, the same body) for every REQUEST record, all in one message, as
// zbroker answers a batch. Records of other commands are ignored; a malformed message is
// dropped.
class NativeEcho {
  public:
    void answer(Frames& frames) {
        const char* error = nullptr;
        if (!wire::parse(frames, 1, records_, error)) {
            frames.clear();
            return;
        }
        for (const wire::Record& record : records_) {
            if (record.command != wire::Command::request) continue;
            if (record.body.in_frames) {
                writer_.answer(record.id, protocol::Status::ok,
                               {frames, record.body.first, record.body.count});
            } else {
                writer_.answer(record.id, protocol::Status::ok, record.body.bytes);
            }
        }
        out_.clear();
        if (!writer_.empty()) {
            out_.push_back(std::move(frames[0]));  // the client's routing id
            writer_.take(out_);
        }
        frames.swap(out_);
    }

  private:
    std::vector<wire::Record> records_;
    wire::Writer writer_;
    Frames out_;
};

// Calls `answer` on every message waiting on `socket`, then blocks for the next; `answer`
// leaves in the frames what goes back, nothing for no answer.
template <typename Answer>
void serve_forever(zmq::socket_t& socket, Answer answer) {
    Frames frames;
    while (true) {
        recv_frames(socket, frames);
        do {
            answer(frames);
            if (!frames.empty()) send_frames(socket, frames, zmq::send_flags::dontwait);
        } while (recv_frames(socket, frames, zmq::recv_flags::dontwait));
    }
}

}  // namespace

void serve_direct_echo() {
    zmq::context_t context(1);
    zmq::socket_t socket = make_socket(context, zmq::socket_type::router);
    std::cerr << kListeningMarker << bind_ephemeral(socket) << std::endl;
    NativeEcho native;
    serve_forever(socket, [&native](Frames& frames) {
        if (frames.size() >= 2 && wire::is_envelope(frames[1])) return native.answer(frames);
        // The headers frame becomes the status: [client "" ZBC01 service id "200" body...].
        if (is_zbc_request(frames)) frames[5] = frame(protocol::status_text(protocol::Status::ok));
    });
}

void serve_echo_worker(const std::string& backend) {
    zmq::context_t context(1);
    zmq::socket_t socket = make_socket(context, zmq::socket_type::dealer);
    socket.connect(backend);
    socket.send(zmq::str_buffer("hello"));
    serve_forever(socket, [](Frames&) {});
}

void serve_mdp_worker(const std::string& broker, const std::string& service, int credit) {
    zmq::context_t context(1);
    zmq::socket_t socket = make_socket(context, zmq::socket_type::dealer);
    socket.connect(broker);
    Frames ready;
    ready.push_back(empty_frame());
    ready.push_back(frame(protocol::kMdpWorker));
    ready.push_back(frame(protocol::WorkerCommand::ready));
    ready.push_back(frame(service));
    ready.push_back(frame(std::to_string(credit)));
    send_frames(socket, ready);
    std::cerr << "ready for " << service << " with credit " << credit << std::endl;
    serve_forever(socket, [](Frames& frames) {
        // ["" MDPW01 command ...]
        using protocol::WorkerCommand;
        const auto command = frames.size() >= 3 && frames[2].size() == 1
                                 ? static_cast<WorkerCommand>(*frames[2].data<char>())
                                 : WorkerCommand{};
        if (command == WorkerCommand::request && frames.size() >= 5) {
            frames[2] = frame(WorkerCommand::reply);  // ["" MDPW01 REPLY token "" body...]
        } else if (command == WorkerCommand::heartbeat) {
            // The HEARTBEAT goes back as it came.
        } else if (command == WorkerCommand::disconnect) {
            std::cerr << "the broker sent DISCONNECT" << std::endl;
            std::exit(1);
        } else {
            frames.clear();
        }
    });
}

void serve_bare_mdp_broker(std::size_t workers) {
    using protocol::WorkerCommand;
    zmq::context_t context(1);
    zmq::socket_t socket = make_socket(context, zmq::socket_type::router);
    std::cerr << kListeningMarker << bind_ephemeral(socket) << std::endl;
    const auto is_worker_command = [](const Frames& frames, WorkerCommand command) {
        // [worker "" MDPW01 command ...]
        return frames.size() >= 4 && view(frames[2]) == protocol::kMdpWorker &&
               frames[3].size() == 1 &&
               static_cast<WorkerCommand>(*frames[3].data<char>()) == command;
    };

    std::vector<zmq::message_t> known;  // worker routing ids, round robin
    std::string service;
    Frames frames;
    while (known.size() < workers) {
        recv_frames(socket, frames);
        if (frames.size() >= 5 && is_worker_command(frames, WorkerCommand::ready)) {
            service = view(frames[4]);
            known.push_back(std::move(frames[0]));
        }
    }
    std::cerr << kBareMdpReadyMarker << " with " << known.size() << " workers" << std::endl;

    std::size_t next = 0;
    Frames out;
    serve_forever(socket, [&](Frames& in) {
        out.clear();
        if (in.size() == 5 && view(in[2]) == protocol::kMdpClient) {
            // [client "" MDPC01 service body] -> [worker "" MDPW01 REQUEST client "" body]
            out.emplace_back().copy(known[next++ % known.size()]);
            out.push_back(std::move(in[1]));
            add_constant_frame(out, protocol::kMdpWorker);
            add_frame(out, WorkerCommand::request);
            out.push_back(std::move(in[0]));
            add_empty_frame(out);
            out.push_back(std::move(in[4]));
        } else if (in.size() == 7 && is_worker_command(in, WorkerCommand::reply)) {
            // [worker "" MDPW01 REPLY client "" body] -> [client "" MDPC01 service body]
            out.push_back(std::move(in[4]));
            out.push_back(std::move(in[1]));
            add_constant_frame(out, protocol::kMdpClient);
            add_frame(out, service);
            out.push_back(std::move(in[6]));
        }  // anything else, a HEARTBEAT or a DISCONNECT, is dropped
        in.swap(out);
    });
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
            frames.erase(frames.begin());  // drop the worker's id: [client ...] goes out
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
