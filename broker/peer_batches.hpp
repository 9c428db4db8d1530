// What the broker has to send each peer while it works through one read batch, sent when the
// batch is done. For a native (ZB/1) peer that is one message: the replies for one client, the
// jobs for one worker, travel together in one frame. 7/MDP and ZBC01 messages cannot be merged,
// but they leave one peer's after another instead of interleaved in the order they were made:
// libzmq then writes each peer's run in one system call (interleaved, the broker made 2.5x the
// sendto calls of a relay draining one socket at a time; now 0.3-0.4x).
// Never waits for more input: a batch ends when the broker has read what was waiting, so
// batching costs no latency.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/request_table.hpp"
#include "broker/string_hash.hpp"
#include "shared/wire.hpp"

namespace zbroker::broker {

class PeerBatches {
  public:
    struct Batch {
        std::string identity;
        wire::Writer writer;
        std::vector<Token> jobs;  // its JOB records, in order: undone if it cannot be sent
        std::size_t answers = 0;  // its ANSWER records: each a drop if it cannot be sent

        // 7/MDP and ZBC01 messages, sent after the ZB/1 one: their frames back to back, each
        // message's starting with the routing id, and where each ends with the job it carries.
        struct Queued {
            std::size_t end;
            std::optional<Token> job;  // a REQUEST to a worker: undone if it cannot be sent
        };
        Frames frames;
        std::vector<Queued> queued;

        bool pending = false;

        bool empty() const noexcept { return writer.empty() && queued.empty(); }
        // Ends the message whose frames were pushed since the last one.
        void end_message(std::optional<Token> job) { queued.push_back({frames.size(), job}); }
        void clear_queued() noexcept {
            frames.clear();
            queued.clear();
        }
    };

    // The batch for `identity`, opened if it was not pending.
    Batch& to(std::string_view identity) {
        auto it = by_identity_.find(identity);
        if (it == by_identity_.end()) {
            it = by_identity_.emplace(std::string(identity), std::make_unique<Batch>()).first;
            it->second->identity = it->first;
        }
        Batch& batch = *it->second;
        if (!batch.pending) {
            batch.pending = true;
            pending_.push_back(&batch);
        }
        return batch;
    }

    // The pending batch for `identity`, or nullptr.
    Batch* pending(std::string_view identity) noexcept {
        const auto it = by_identity_.find(identity);
        return it != by_identity_.end() && it->second->pending ? it->second.get() : nullptr;
    }

    // Calls `send(batch)` for every pending batch in the order they were opened, including
    // batches opened by `send` itself. `send` must empty the batch.
    template <typename Send>
    void flush(Send&& send) {
        for (std::size_t i = 0; i < pending_.size(); ++i) {
            Batch& batch = *pending_[i];
            batch.pending = false;
            if (!batch.empty()) send(batch);
        }
        pending_.clear();
        // Peers come and go: keep the buffers of recent ones, not of every peer ever seen.
        if (by_identity_.size() > kMaxKept) by_identity_.clear();
    }

  private:
    static constexpr std::size_t kMaxKept = 4096;

    std::unordered_map<std::string, std::unique_ptr<Batch>, StringHash, std::equal_to<>>
        by_identity_;
    std::vector<Batch*> pending_;
};

}  // namespace zbroker::broker
