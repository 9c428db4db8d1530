#include "broker/queue_policy.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <deque>
#include <unordered_map>

#include <boost/intrusive/list.hpp>

#include "broker/string_hash.hpp"
#include "shared/protocol.hpp"

namespace zbroker::broker {
namespace {

// Pops tokens from the front of `tokens` until one names a live queued request.
RequestRecord* pop_live(std::deque<Token>& tokens, RequestTable& table) {
    while (!tokens.empty()) {
        RequestRecord* record = table.find(tokens.front());
        tokens.pop_front();
        if (record != nullptr && record->state == RequestState::queued) return record;
    }
    return nullptr;
}

// Drops stale tokens once they outnumber the live ones, so expiring requests cannot grow a
// queue without bound.
void compact_if_stale(std::deque<Token>& tokens, std::size_t live, RequestTable& table) {
    if (tokens.size() <= 2 * live + 64) return;
    std::erase_if(tokens, [&table](Token token) {
        const RequestRecord* record = table.find(token);
        return record == nullptr || record->state != RequestState::queued;
    });
}

class FifoQueue final : public QueuePolicy {
  public:
    Admission admit(std::string_view, std::size_t limit, RequestTable&) override {
        return {waiting_ < limit, nullptr};
    }
    void push(const RequestRecord& record) override {
        tokens_.push_back(record.token());
        ++waiting_;
    }
    void push_front(const RequestRecord& record) override {
        tokens_.push_front(record.token());
        ++waiting_;
    }
    RequestRecord* pop(RequestTable& table) override {
        RequestRecord* record = pop_live(tokens_, table);
        if (record != nullptr) --waiting_;
        return record;
    }
    void forget(const RequestRecord&, RequestTable& table) override {
        --waiting_;
        compact_if_stale(tokens_, waiting_, table);
    }
    std::vector<KeyLoad> top_keys(std::size_t) const override { return {}; }

  private:
    std::deque<Token> tokens_;
};

// Deficit round robin over fairness keys, one round per priority level (a single level for
// `fair`). Every request costs one, so a key's deficit is simply how many more it may send in
// its turn: `weight` per round. Choosing the next request is O(1) in the number of keys: the
// keys with requests waiting at a level form a ring, and a turn ends at its front.
class FairQueue final : public QueuePolicy {
  public:
    FairQueue(std::size_t levels, const QueueSettings& settings)
        : levels_(levels), low_every_(settings.low_priority_every), weights_(settings.weights) {}

    ~FairQueue() override {
        for (Level& level : levels_)
            level.ring.clear();
    }

    Admission admit(std::string_view key, std::size_t limit, RequestTable& table) override {
        // Nothing waits, so no key is over its share: the common case, and two hash lookups
        // fewer per request.
        if (waiting_ == 0) return {limit > 0, nullptr};
        const auto it = tenants_.find(key);
        const std::size_t waiting = it == tenants_.end() ? 0 : it->second->waiting;
        const std::uint32_t weight = it == tenants_.end() ? weight_of(key) : it->second->weight;
        const std::uint64_t active = active_weight_ + (waiting == 0 ? weight : 0);
        if (waiting >= share(weight, active, limit)) return {};
        if (waiting_ < limit) return {true, nullptr};
        // Full, and this key is under its share: some other key is over its own.
        RequestRecord* pushed_out = push_out(active, limit, table);
        return {pushed_out != nullptr, pushed_out};
    }

    void push(const RequestRecord& record) override {
        Lane& lane = lane_for(record);
        lane.tokens.push_back(record.token());
        counted_in(lane);
        if (!lane.hook.is_linked()) start_turns(lane, false);
    }

    void push_front(const RequestRecord& record) override {
        Lane& lane = lane_for(record);
        lane.tokens.push_front(record.token());
        counted_in(lane);
        if (!lane.hook.is_linked()) start_turns(lane, true);
    }

    RequestRecord* pop(RequestTable& table) override {
        while (waiting_ > 0) {
            Level& level = levels_[next_level()];
            Lane& lane = level.ring.front();
            RequestRecord* record = pop_live(lane.tokens, table);
            if (record == nullptr) {  // only stale tokens were left: not counted as waiting
                remove(lane);
                continue;
            }
            counted_out(lane);
            if (lane.waiting == 0) {
                remove(lane);
            } else if (--lane.deficit == 0) {
                level.ring.pop_front();  // its turn is over: to the back, with a new quantum
                lane.deficit = lane.tenant->weight;
                level.ring.push_back(lane);
            }
            return record;
        }
        return nullptr;
    }

    void forget(const RequestRecord& record, RequestTable& table) override {
        Lane& lane = lane_for(record);
        counted_out(lane);
        if (lane.waiting == 0) {
            remove(lane);  // its tokens were all stale
        } else {
            compact_if_stale(lane.tokens, lane.waiting, table);
        }
    }

    std::vector<KeyLoad> top_keys(std::size_t n) const override {
        std::vector<KeyLoad> loads;
        loads.reserve(tenants_.size());
        for (const auto& [name, tenant] : tenants_)
            loads.push_back({name, tenant->waiting, tenant->weight});
        const auto by_waiting = [](const KeyLoad& a, const KeyLoad& b) {
            return a.waiting != b.waiting ? a.waiting > b.waiting : a.key < b.key;
        };
        const std::size_t top = std::min(n, loads.size());
        std::partial_sort(loads.begin(), loads.begin() + static_cast<std::ptrdiff_t>(top),
                          loads.end(), by_waiting);
        loads.resize(top);
        return loads;
    }

  private:
    struct Tenant;
    // One key's requests at one level, oldest first, and its place in the level's ring.
    struct Lane {
        Tenant* tenant = nullptr;
        std::uint8_t level = 0;
        std::uint32_t deficit = 0;  // requests it may still send in its current turn
        std::size_t waiting = 0;    // live tokens in `tokens`
        std::deque<Token> tokens;
        boost::intrusive::list_member_hook<> hook;
    };
    // A fairness key: its weight, its requests waiting at all levels, its lanes. Forgotten as
    // soon as nothing of it waits, so idle keys cost nothing.
    struct Tenant {
        std::string name;
        std::uint32_t weight = 1;
        std::size_t waiting = 0;
        std::vector<std::unique_ptr<Lane>> lanes;  // by level, created on demand
    };
    using Ring = boost::intrusive::list<
        Lane,
        boost::intrusive::member_hook<Lane, boost::intrusive::list_member_hook<>, &Lane::hook>>;
    struct Level {
        Ring ring;  // lanes with requests waiting; the front one is having its turn
        std::size_t waiting = 0;
    };

    static std::uint64_t share(std::uint64_t weight, std::uint64_t active_weight,
                               std::size_t limit) {
        return std::max<std::uint64_t>(1, limit * weight / active_weight);
    }

    // Takes the newest request, at its lowest level, of the key furthest over its share.
    // A scan of the keys, but only when the queue is full and a key under its share knocks.
    RequestRecord* push_out(std::uint64_t active_weight, std::size_t limit, RequestTable& table) {
        Tenant* fattest = nullptr;
        std::uint64_t most_over = 0;
        for (const auto& [name, tenant] : tenants_) {
            const std::uint64_t fair = share(tenant->weight, active_weight, limit);
            if (tenant->waiting > fair && tenant->waiting - fair > most_over) {
                most_over = tenant->waiting - fair;
                fattest = tenant.get();
            }
        }
        if (fattest == nullptr) return nullptr;
        for (auto& lane : fattest->lanes) {
            if (!lane || lane->waiting == 0) continue;
            while (!lane->tokens.empty()) {
                RequestRecord* record = table.find(lane->tokens.back());
                lane->tokens.pop_back();
                if (record == nullptr || record->state != RequestState::queued) continue;
                Lane& from = *lane;
                counted_out(from);
                if (from.waiting == 0) remove(from);
                return record;
            }
        }
        return nullptr;
    }

    std::uint32_t weight_of(std::string_view key) const {
        const auto it = weights_.find(key);
        return it == weights_.end() ? 1 : std::max<std::uint32_t>(1, it->second);
    }

    std::size_t level_of(const RequestRecord& record) const noexcept {
        return std::min<std::size_t>(record.priority, levels_.size() - 1);
    }

    Lane& lane_for(const RequestRecord& record) {
        const std::string_view key = fairness_key_of(record);
        auto it = tenants_.find(key);
        if (it == tenants_.end()) {
            auto tenant = std::make_unique<Tenant>();
            tenant->name = key;
            tenant->weight = weight_of(key);
            tenant->lanes.resize(levels_.size());
            it = tenants_.emplace(tenant->name, std::move(tenant)).first;
        }
        Tenant& tenant = *it->second;
        const std::size_t level = level_of(record);
        if (!tenant.lanes[level]) {
            tenant.lanes[level] = std::make_unique<Lane>();
            tenant.lanes[level]->tenant = &tenant;
            tenant.lanes[level]->level = static_cast<std::uint8_t>(level);
        }
        return *tenant.lanes[level];
    }

    void start_turns(Lane& lane, bool first) {
        lane.deficit = lane.tenant->weight;
        Ring& ring = levels_[lane.level].ring;
        if (first) {
            ring.push_front(lane);
        } else {
            ring.push_back(lane);
        }
    }

    void counted_in(Lane& lane) {
        if (lane.tenant->waiting++ == 0) active_weight_ += lane.tenant->weight;
        ++lane.waiting;
        if (levels_[lane.level].waiting++ == 0) nonempty_ |= 1u << lane.level;
        ++waiting_;
    }

    void counted_out(Lane& lane) {
        if (--lane.tenant->waiting == 0) active_weight_ -= lane.tenant->weight;
        --lane.waiting;
        if (--levels_[lane.level].waiting == 0) nonempty_ &= ~(1u << lane.level);
        --waiting_;
    }

    // Drops a lane that has nothing live left, and its tenant once it has no lanes.
    void remove(Lane& lane) {
        Ring& ring = levels_[lane.level].ring;
        if (lane.hook.is_linked()) ring.erase(ring.iterator_to(lane));
        Tenant& tenant = *lane.tenant;
        tenant.lanes[lane.level].reset();
        if (tenant.waiting != 0) return;
        for (const auto& other : tenant.lanes) {
            if (other) return;
        }
        tenants_.erase(tenants_.find(std::string_view(tenant.name)));  // not by its own name
    }

    // The highest level with requests waiting; every Nth time several wait, the lowest.
    std::size_t next_level() noexcept {
        const std::uint32_t highest = std::bit_width(nonempty_) - 1;
        if (low_every_ == 0 || std::has_single_bit(nonempty_)) return highest;
        if (++contended_ % low_every_ != 0) return highest;
        return static_cast<std::size_t>(std::countr_zero(nonempty_));
    }

    std::vector<Level> levels_;
    std::uint32_t low_every_;
    std::map<std::string, std::uint32_t, std::less<>> weights_;
    std::unordered_map<std::string, std::unique_ptr<Tenant>, StringHash, std::equal_to<>> tenants_;
    std::uint64_t active_weight_ = 0;  // of the tenants with requests waiting
    std::uint32_t nonempty_ = 0;       // bit n: level n has requests waiting
    std::uint64_t contended_ = 0;      // pops while several levels waited
};

static_assert(protocol::kMaxPriority < 32, "levels are bits of one word");

}  // namespace

std::string_view policy_name(QueuePolicyKind kind) noexcept {
    switch (kind) {
        case QueuePolicyKind::fifo:
            return "fifo";
        case QueuePolicyKind::fair:
            return "fair";
        case QueuePolicyKind::priority:
            return "priority";
    }
    return "unknown";
}

std::unique_ptr<QueuePolicy> make_queue_policy(const QueueSettings& settings) {
    switch (settings.kind) {
        case QueuePolicyKind::fifo:
            return std::make_unique<FifoQueue>();
        case QueuePolicyKind::fair:
            return std::make_unique<FairQueue>(1, settings);
        case QueuePolicyKind::priority:
            return std::make_unique<FairQueue>(protocol::kMaxPriority + 1, settings);
    }
    return nullptr;
}

}  // namespace zbroker::broker
