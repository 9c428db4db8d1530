// Serves `upper` with a zbroker::Worker and calls it with a zbroker::Client through the broker
// at argv[1]; prints the reply. Built only from installed headers and the CMake package.
#include <cctype>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include <zbroker/client/client.hpp>
#include <zbroker/version.hpp>
#include <zbroker/worker/payload.hpp>
#include <zbroker/worker/worker.hpp>

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    zbroker::WorkerOptions options;
    options.endpoints = {argv[1]};
    zbroker::Worker worker(options);
    worker.handle("upper", [](zbroker::Request& request) {
        auto text = request.as<std::string>();
        for (char& c : text)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return zbroker::Reply::of(text);
    });
    std::thread serving([&worker] { worker.run(); });

    zbroker::Client client(argv[1]);
    // The broker holds the request until the worker above has registered, up to its deadline:
    // a generous one, since a loaded test machine may take seconds to start that thread.
    const zbroker::Response response = client.call("upper", zbroker::pack(std::string("hi")),
                                                   {.timeout = std::chrono::seconds(30)});
    worker.stop();
    serving.join();
    if (!response.ok()) return 1;
    std::cout << "zbroker " << zbroker::kVersion << ": "
              << zbroker::unpack<std::string>(response.body_view()) << '\n';
}
