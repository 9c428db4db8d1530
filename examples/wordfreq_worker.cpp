// A worker for the `wordfreq` service: the N most frequent words of a text.
// Request: msgpack [text, n]. Reply: msgpack [[word, count], ...], most frequent first.
// Usage: wordfreq_worker [ENDPOINT] (default tcp://localhost:5555); SIGTERM stops it cleanly.
#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zbroker/worker/payload.hpp>
#include <zbroker/worker/worker.hpp>

using WordCounts = std::vector<std::pair<std::string, std::uint64_t>>;

WordCounts most_frequent(const std::string& text, std::size_t n) {
    std::unordered_map<std::string, std::uint64_t> counts;
    std::string word;
    for (const char c : text + ' ') {
        if (std::isalnum(static_cast<unsigned char>(c))) {
            word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        } else if (!word.empty()) {
            ++counts[std::exchange(word, {})];
        }
    }
    WordCounts sorted(counts.begin(), counts.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    sorted.resize(std::min(n, sorted.size()));
    return sorted;
}

zbroker::Worker* g_worker = nullptr;

int main(int argc, char** argv) {
    zbroker::WorkerOptions options;
    options.endpoints = {argc > 1 ? argv[1] : "tcp://localhost:5555"};
    options.threads = 2;
    zbroker::Worker worker(options);
    worker.handle("wordfreq", [](zbroker::Request& request) {
        const auto [text, n] = request.as<std::pair<std::string, std::size_t>>();
        return zbroker::Reply::of(most_frequent(text, n));
    });
    g_worker = &worker;
    std::signal(SIGTERM, [](int) { g_worker->stop(); });  // stop() is async-signal-safe
    std::signal(SIGINT, [](int) { g_worker->stop(); });
    worker.run();
}
