#include "broker/queue_policy.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <deque>
#include <list>
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
    std::size_t keys() const noexcept override { return 0; }

  private:
    std::deque<Token> tokens_;
};

// Deficit round robin over tenants, one round per priority level (a single level for `fair`),
// and round robin over each tenant's subkeys within its turn. Every request costs one, so a
// tenant's deficit is simply how many more it may send in its turn: `weight` per round.
// Choosing the next request is O(1) in the number of tenants: the tenants with requests waiting
// at a level form a ring, and a turn ends at its front; so is making room in a full queue: the
// tenants are kept in buckets by how much each has waiting for its weight.
class FairQueue final : public QueuePolicy {
  public:
    FairQueue(std::size_t levels, const QueueSettings& settings)
        : levels_(levels), low_every_(settings.low_priority_every), weights_(settings.weights) {}

    ~FairQueue() override {
        for (Level& level : levels_)
            level.ring.clear();
        for (auto& [name, tenant] : tenants_) {
            for (auto& lane : tenant->lanes) {
                if (lane) lane->subs.clear();
            }
        }
        for (Bucket& bucket : buckets_)
            bucket.tenants.clear();
    }

    Admission admit(std::string_view key, std::size_t limit, RequestTable& table) override {
        // Nothing waits, so no tenant is over its share: the common case, and two hash lookups
        // fewer per request.
        if (waiting_ == 0) return {limit > 0, nullptr};
        const auto it = tenants_.find(key);
        const std::size_t waiting = it == tenants_.end() ? 0 : it->second->waiting;
        const std::uint32_t weight = it == tenants_.end() ? weight_of(key) : it->second->weight;
        const std::uint64_t active = active_weight_ + (waiting == 0 ? weight : 0);
        if (waiting >= share(weight, active, limit)) return {};
        if (waiting_ < limit) return {true, nullptr};
        // Full, and this tenant is under its share: some other tenant is over its own.
        RequestRecord* pushed_out = push_out(active, limit, table);
        return {pushed_out != nullptr, pushed_out};
    }

    void push(const RequestRecord& record) override {
        SubLane& sub = sub_lane_for(record);
        sub.tokens.push_back(record.token());
        counted_in(sub);
        if (!sub.hook.is_linked()) sub.lane->subs.push_back(sub);
        if (!sub.lane->hook.is_linked()) start_turns(*sub.lane);
    }

    void push_front(const RequestRecord& record) override {
        SubLane& sub = sub_lane_for(record);
        sub.tokens.push_front(record.token());
        counted_in(sub);
        Lane& lane = *sub.lane;
        if (sub.hook.is_linked()) lane.subs.erase(lane.subs.iterator_to(sub));
        lane.subs.push_front(sub);
        // It never reached its worker (its queue was full): it goes out next, before whatever
        // its tenant's turn or its level's would give, as if it had never left. Else a slow
        // worker that takes the first few of each batch would take the same tenants' and the
        // same levels' requests every time, and never those that come after them.
        redo_.push_back(record.token());
        // Its turn was charged when it first went. A tenant it had left with nothing waiting
        // lines up at the back like any newcomer: at the front, with a fresh turn, it would
        // pass every other tenant each time a slow worker sent its last request back.
        if (!lane.hook.is_linked()) start_turns(lane);
    }

    RequestRecord* pop(RequestTable& table) override {
        if (RequestRecord* again = pop_redo(table)) return again;
        while (waiting_ > 0) {
            Level& level = levels_[next_level()];
            Lane& lane = level.ring.front();
            SubLane& sub = lane.subs.front();
            RequestRecord* record = pop_live(sub.tokens, table);
            if (record == nullptr) {  // only stale tokens were left: not counted as waiting
                remove(sub);
                continue;
            }
            counted_out(sub);
            const bool lane_empties = lane.waiting == 0;
            if (sub.waiting == 0) {
                remove(sub);  // and the lane and its tenant, if nothing else of them waits
            } else if (lane.subs.size() > 1) {
                lane.subs.pop_front();  // the tenant's next subkey goes next
                lane.subs.push_back(sub);
            }
            if (!lane_empties && --lane.deficit == 0) {
                level.ring.pop_front();  // its turn is over: to the back, with a new quantum
                lane.deficit = lane.tenant->weight;
                level.ring.push_back(lane);
            }
            return record;
        }
        return nullptr;
    }

    void forget(const RequestRecord& record, RequestTable& table) override {
        if (redo_.size() > 2 * waiting_ + 64) {
            std::erase_if(redo_, [&table](Token token) {
                const RequestRecord* live = table.find(token);
                return live == nullptr || live->state != RequestState::queued;
            });
        }
        SubLane& sub = sub_lane_for(record);
        counted_out(sub);
        if (sub.waiting == 0) {
            remove(sub);  // its tokens were all stale
        } else {
            compact_if_stale(sub.tokens, sub.waiting, table);
        }
    }

    std::size_t keys() const noexcept override { return tenants_.size(); }

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
    struct Lane;
    struct Bucket;
    using Buckets = std::list<Bucket>;
    using Hook = boost::intrusive::list_member_hook<>;
    // One subkey's requests at one level, oldest first, and its place in its lane's ring.
    struct SubLane {
        Lane* lane = nullptr;
        std::string subkey;
        std::size_t waiting = 0;  // live tokens in `tokens`
        std::deque<Token> tokens;
        Hook hook;
    };
    using SubRing =
        boost::intrusive::list<SubLane,
                               boost::intrusive::member_hook<SubLane, Hook, &SubLane::hook>>;
    // One tenant's requests at one level: its subkeys' lanes, taking turns, and its place in the
    // level's ring.
    struct Lane {
        Tenant* tenant = nullptr;
        std::uint8_t level = 0;
        std::uint32_t deficit = 0;  // requests it may still send in its current turn
        std::size_t waiting = 0;    // live tokens in its subkeys' lanes
        SubRing subs;               // those with requests waiting; the front one goes next
        // Its subkeys' lanes, by subkey: one, "", unless the tenant names subkeys.
        std::map<std::string, std::unique_ptr<SubLane>, std::less<>> by_subkey;
        Hook hook;
    };
    // A tenant: its weight, its requests waiting at all levels, its lanes. Forgotten as soon as
    // nothing of it waits, so idle tenants cost nothing.
    struct Tenant {
        std::string name;
        std::uint32_t weight = 1;
        std::size_t waiting = 0;
        std::vector<std::unique_ptr<Lane>> lanes;  // by level, created on demand
        Buckets::iterator bucket;                  // while `filed`
        bool filed = false;
        Hook bucket_hook;
    };
    using Ring =
        boost::intrusive::list<Lane, boost::intrusive::member_hook<Lane, Hook, &Lane::hook>>;
    struct Level {
        Ring ring;  // lanes with requests waiting; the front one is having its turn
        std::size_t waiting = 0;
    };
    // The tenants whose waiting / weight (rounded down) is `fill`. buckets_ keeps them in order
    // of fill, so the last holds the tenants furthest over their share. A tenant's waiting
    // moves by one at a time, so it only ever moves to a neighbouring bucket.
    struct Bucket {
        std::size_t fill = 0;
        boost::intrusive::list<Tenant,
                               boost::intrusive::member_hook<Tenant, Hook, &Tenant::bucket_hook>>
            tenants;
    };

    static std::uint64_t share(std::uint64_t weight, std::uint64_t active_weight,
                               std::size_t limit) {
        return std::max<std::uint64_t>(1, limit * weight / active_weight);
    }

    // Takes the newest request, at its lowest level, of the tenant furthest over its share.
    RequestRecord* push_out(std::uint64_t active_weight, std::size_t limit, RequestTable& table) {
        if (buckets_.empty()) return nullptr;
        Tenant& fattest = buckets_.back().tenants.front();
        if (fattest.waiting <= share(fattest.weight, active_weight, limit)) return nullptr;
        for (auto& lane : fattest.lanes) {
            if (!lane || lane->waiting == 0) continue;
            SubLane& sub = lane->subs.back();
            while (!sub.tokens.empty()) {
                RequestRecord* record = table.find(sub.tokens.back());
                sub.tokens.pop_back();
                if (record == nullptr || record->state != RequestState::queued) continue;
                counted_out(sub);
                if (sub.waiting == 0) remove(sub);
                return record;
            }
        }
        return nullptr;
    }

    // The latest request pushed back, if it still waits at the front of its subkey's lane:
    // undone requests come back in the order they first went.
    RequestRecord* pop_redo(RequestTable& table) {
        while (!redo_.empty()) {
            const Token token = redo_.back();
            redo_.pop_back();
            RequestRecord* record = table.find(token);
            if (record == nullptr || record->state != RequestState::queued) continue;
            SubLane& sub = sub_lane_for(*record);
            if (sub.tokens.empty() || sub.tokens.front() != token) continue;  // gone another way
            sub.tokens.pop_front();
            counted_out(sub);
            if (sub.waiting == 0) remove(sub);
            return record;
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

    SubLane& sub_lane_for(const RequestRecord& record) {
        const FairnessKey key = fairness_key_of(record);
        auto it = tenants_.find(key.tenant);
        if (it == tenants_.end()) {
            auto tenant = std::make_unique<Tenant>();
            tenant->name = key.tenant;
            tenant->weight = weight_of(key.tenant);
            tenant->lanes.resize(levels_.size());
            it = tenants_.emplace(tenant->name, std::move(tenant)).first;
        }
        Tenant& tenant = *it->second;
        const std::size_t level = level_of(record);
        std::unique_ptr<Lane>& lane = tenant.lanes[level];
        if (!lane) {
            lane = std::make_unique<Lane>();
            lane->tenant = &tenant;
            lane->level = static_cast<std::uint8_t>(level);
        }
        auto sub = lane->by_subkey.find(key.subkey);
        if (sub == lane->by_subkey.end()) {
            auto made = std::make_unique<SubLane>();
            made->lane = lane.get();
            made->subkey = key.subkey;
            sub = lane->by_subkey.emplace(made->subkey, std::move(made)).first;
        }
        return *sub->second;
    }

    void start_turns(Lane& lane) {
        lane.deficit = lane.tenant->weight;
        levels_[lane.level].ring.push_back(lane);
    }

    void counted_in(SubLane& sub) {
        Lane& lane = *sub.lane;
        Tenant& tenant = *lane.tenant;
        if (tenant.waiting++ == 0) active_weight_ += tenant.weight;
        refile(tenant);
        ++sub.waiting;
        ++lane.waiting;
        if (levels_[lane.level].waiting++ == 0) nonempty_ |= 1u << lane.level;
        ++waiting_;
    }

    void counted_out(SubLane& sub) {
        Lane& lane = *sub.lane;
        Tenant& tenant = *lane.tenant;
        if (--tenant.waiting == 0) active_weight_ -= tenant.weight;
        refile(tenant);
        --sub.waiting;
        --lane.waiting;
        if (--levels_[lane.level].waiting == 0) nonempty_ &= ~(1u << lane.level);
        --waiting_;
    }

    // Moves a tenant whose waiting changed by one to the bucket of its new fill, if that is
    // another: the neighbouring one, a new one beside it, or the same one relabelled when the
    // tenant had it to itself. Out of the buckets when nothing of it waits. O(1).
    void refile(Tenant& tenant) {
        if (tenant.waiting == 0) {
            if (tenant.filed) leave_bucket(tenant);
            return;
        }
        const std::size_t fill = tenant.waiting / tenant.weight;
        if (!tenant.filed) {
            // A new tenant has fill 0 or 1: its place is among the first two buckets.
            auto at = buckets_.begin();
            while (at != buckets_.end() && at->fill < fill)
                ++at;
            if (at == buckets_.end() || at->fill != fill) {
                at = buckets_.emplace(at);
                at->fill = fill;
            }
            file(tenant, at);
            return;
        }
        const Buckets::iterator here = tenant.bucket;
        if (here->fill == fill) return;
        const bool up = fill > here->fill;
        const Buckets::iterator neighbour = up                         ? std::next(here)
                                            : here == buckets_.begin() ? buckets_.end()
                                                                       : std::prev(here);
        if (neighbour != buckets_.end() && neighbour->fill == fill) {
            leave_bucket(tenant);
            file(tenant, neighbour);
            return;
        }
        if (here->tenants.size() == 1) {
            here->fill = fill;  // still in order: the neighbour's fill is further on
            return;
        }
        const Buckets::iterator made = buckets_.emplace(up ? std::next(here) : here);
        made->fill = fill;
        leave_bucket(tenant);  // `here` keeps its other tenants
        file(tenant, made);
    }

    void file(Tenant& tenant, Buckets::iterator bucket) {
        bucket->tenants.push_back(tenant);
        tenant.bucket = bucket;
        tenant.filed = true;
    }

    void leave_bucket(Tenant& tenant) {
        const Buckets::iterator bucket = tenant.bucket;
        bucket->tenants.erase(bucket->tenants.iterator_to(tenant));
        tenant.filed = false;
        if (bucket->tenants.empty()) buckets_.erase(bucket);
    }

    // Drops a subkey's lane that has nothing live left, then its lane and its tenant once
    // they have nothing left either.
    void remove(SubLane& sub) {
        Lane& lane = *sub.lane;
        if (sub.hook.is_linked()) lane.subs.erase(lane.subs.iterator_to(sub));
        lane.by_subkey.erase(lane.by_subkey.find(std::string_view(sub.subkey)));  // frees it
        if (lane.waiting != 0 || !lane.by_subkey.empty()) return;
        Ring& ring = levels_[lane.level].ring;
        if (lane.hook.is_linked()) ring.erase(ring.iterator_to(lane));
        Tenant& tenant = *lane.tenant;
        tenant.lanes[lane.level].reset();
        if (tenant.waiting != 0) return;
        for (const auto& other : tenant.lanes) {
            if (other) return;
        }
        if (tenant.filed) leave_bucket(tenant);
        tenants_.erase(tenants_.find(std::string_view(tenant.name)));  // not by its own name
    }

    // The highest level with requests waiting; every Nth time several wait, a lower one: each
    // level below the highest in turn, from the highest down, so none is starved.
    std::size_t next_level() noexcept {
        const std::uint32_t highest = std::bit_width(nonempty_) - 1;
        if (low_every_ == 0 || std::has_single_bit(nonempty_)) return highest;
        if (++contended_ % low_every_ != 0) return highest;
        const std::uint32_t lower = nonempty_ & ~(1u << highest);
        // The waiting levels below the one served last on such a turn; after the lowest, again
        // from the top.
        std::uint32_t next = lower & ((1u << aging_cursor_) - 1);
        if (next == 0) next = lower;
        aging_cursor_ = std::bit_width(next) - 1;
        return aging_cursor_;
    }

    std::vector<Level> levels_;
    std::uint32_t low_every_;
    std::map<std::string, std::uint32_t, std::less<>> weights_;
    std::unordered_map<std::string, std::unique_ptr<Tenant>, StringHash, std::equal_to<>> tenants_;
    Buckets buckets_;                  // of the tenants with requests waiting, by fill
    std::uint64_t active_weight_ = 0;  // of the tenants with requests waiting
    std::uint32_t nonempty_ = 0;       // bit n: level n has requests waiting
    std::uint64_t contended_ = 0;      // pops while several levels waited
    std::uint32_t aging_cursor_ = 31;  // the level a lower-level turn went to last
    std::vector<Token> redo_;          // pushed back (push_front), the next to go last
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
