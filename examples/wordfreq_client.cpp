// Asks the `wordfreq` service for the most frequent words of standard input.
// Usage: wordfreq_client [ENDPOINT] [N] < text   (defaults: tcp://localhost:5555, 10)
#include <cstdint>
#include <iostream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <zbroker/client/client.hpp>
#include <zbroker/shared/codec.hpp>

int main(int argc, char** argv) {
    const std::string endpoint = argc > 1 ? argv[1] : "tcp://localhost:5555";
    const std::size_t n = argc > 2 ? std::stoul(argv[2]) : 10;
    const std::string text{std::istreambuf_iterator<char>(std::cin), {}};

    zbroker::Client client(endpoint);
    const zbroker::Response response =
        client.call("wordfreq", zbroker::pack(std::make_pair(text, n)));
    if (!response.ok()) {
        std::cerr << "wordfreq failed: "
                  << (response.status == zbroker::protocol::Status::no_reply
                          ? std::string("no reply; is the broker running at ") + endpoint + "?"
                          : std::string(zbroker::protocol::status_text(response.status)))
                  << '\n';
        return 1;
    }
    using WordCounts = std::vector<std::pair<std::string, std::uint64_t>>;
    for (const auto& [word, count] : zbroker::unpack<WordCounts>(response.body_view()))
        std::cout << count << ' ' << word << '\n';
}
