// Draws a run's shape from its seed.
#include "sim/knobs.hpp"

#include <algorithm>
#include <sstream>

namespace zbroker::sim {

namespace {

// A fault rate: off in a third of runs, so each run has its own mix.
std::uint32_t fault(Random& random, std::uint32_t max_per_mille) {
    if (random.one_in(3)) return 0;
    return static_cast<std::uint32_t>(random.between(1, max_per_mille));
}

}  // namespace

Knobs Knobs::draw(std::uint64_t seed) {
    Random random(seed);
    Knobs k;
    k.seed = seed;
    broker::BrokerConfig& c = k.config;
    const std::size_t policy = random.pick(3);
    c.queue.kind = policy == 0   ? broker::QueuePolicyKind::fifo
                   : policy == 1 ? broker::QueuePolicyKind::fair
                                 : broker::QueuePolicyKind::priority;
    c.queue.low_priority_every = static_cast<std::uint32_t>(random.between(2, 8));
    if (random.one_in(3)) c.queue.weights["k1"] = static_cast<std::uint32_t>(random.between(2, 3));
    const std::size_t limits[] = {8, 16, 64, 1000};
    c.queue_limit = limits[random.pick(4)];
    c.max_requests = random.one_in(4) ? random.between(20, 200) : 100'000;
    c.max_bytes = random.one_in(6) ? random.between(2'000, 50'000) : std::size_t{1} << 30;
    c.max_attempts = static_cast<int>(random.between(1, 3));
    c.heartbeat_interval = Millis{static_cast<Millis::rep>(random.between(20, 200))};
    c.heartbeat_liveness = static_cast<int>(random.between(2, 4));
    c.orphan_after = random.one_in(3) ? Millis{0} : k.expiry() * 2;
    c.drain_timeout = Millis{static_cast<Millis::rep>(random.between(50, 500))};
    c.max_credit = 500;
    k.curve = random.one_in(2);

    k.services = random.between(1, 3);
    k.workers = k.services + random.between(0, 4);
    k.clients = random.between(1, 5);
    k.hostiles = random.one_in(2) ? random.between(1, 2) : 0;
    k.combined = random.one_in(3);
    const std::uint32_t credits[] = {1, 2, 4, 32, 400};
    k.credit_max = credits[random.pick(5)];
    k.id_size = random.one_in(4) ? random.between(100, 252) : 0;
    k.hang_per_mille = fault(random, 100);
    k.duplicate_reply_per_mille = fault(random, 50);
    k.huge_reply_per_mille = random.one_in(8) ? 5 : 0;
    k.service_ms_max = static_cast<std::uint32_t>(random.between(0, 30));
    const std::size_t windows[] = {1, 4, 16, 64};
    k.window_max = windows[random.pick(4)];
    k.batch_max = random.between(1, 16);
    k.deadline_per_mille = static_cast<std::uint32_t>(random.between(0, 1000));
    k.priority_levels = random.one_in(2) ? 1 : static_cast<std::uint32_t>(random.between(2, 10));
    k.flooder = k.priority_levels > 2 && random.one_in(2);
    const std::size_t hwms[] = {2, 10, 1000};
    k.hwm = hwms[random.pick(3)];

    k.vanish = fault(random, 5);
    k.impostor = k.curve ? fault(random, 5) : 0;
    k.restart = random.one_in(4) ? 1 : 0;
    k.drain = random.one_in(4) ? 1 : 0;
    k.clock_jump = fault(random, 2);
    k.would_block = fault(random, 20);
    k.slow_reader = fault(random, 500);

    k.chaos_steps = 30'000;
    k.calm_steps = 30'000;
    k.quiet_steps_max = 200'000;
    return k;
}

bool Knobs::set(std::string_view assignment) {
    const auto equals = assignment.find('=');
    if (equals == std::string_view::npos) return false;
    const std::string_view name = assignment.substr(0, equals);
    const std::uint64_t value = std::stoull(std::string(assignment.substr(equals + 1)));
    const auto u32 = static_cast<std::uint32_t>(value);
    broker::BrokerConfig& c = config;
    if (name == "policy") {
        c.queue.kind = static_cast<broker::QueuePolicyKind>(value);
    } else if (name == "low_every") {
        c.queue.low_priority_every = u32;
    } else if (name == "queue_limit") {
        c.queue_limit = value;
    } else if (name == "max_attempts") {
        c.max_attempts = static_cast<int>(value);
    } else if (name == "default_deadline_ms") {
        c.default_deadline = Millis{static_cast<Millis::rep>(value)};
    } else if (name == "curve") {
        curve = value != 0;
    } else if (name == "workers") {
        workers = std::max<std::size_t>(value, services);
    } else if (name == "clients") {
        clients = value;
    } else if (name == "hostiles") {
        hostiles = value;
    } else if (name == "combined") {
        combined = value != 0;
    } else if (name == "credit_max") {
        credit_max = u32;
    } else if (name == "id_size") {
        id_size = value;
    } else if (name == "hang") {
        hang_per_mille = u32;
    } else if (name == "priority_levels") {
        priority_levels = u32;
    } else if (name == "flooder") {
        flooder = value != 0;
    } else if (name == "vanish") {
        vanish = u32;
    } else if (name == "impostor") {
        impostor = u32;
    } else if (name == "restart") {
        restart = u32;
    } else if (name == "drain") {
        drain = u32;
    } else if (name == "clock_jump") {
        clock_jump = u32;
    } else if (name == "would_block") {
        would_block = u32;
    } else if (name == "chaos_steps") {
        chaos_steps = value;
    } else if (name == "calm_steps") {
        calm_steps = value;
    } else {
        return false;
    }
    return true;
}

std::string Knobs::describe() const {
    std::ostringstream out;
    const broker::BrokerConfig& c = config;
    out << "seed=" << seed << " policy=" << broker::policy_name(c.queue.kind)
        << " low_every=" << c.queue.low_priority_every << " weights=" << c.queue.weights.size()
        << " queue_limit=" << c.queue_limit << " max_requests=" << c.max_requests
        << " max_bytes=" << c.max_bytes << " max_attempts=" << c.max_attempts
        << " heartbeat_ms=" << c.heartbeat_interval.count() << " liveness=" << c.heartbeat_liveness
        << " orphan_after_ms=" << c.orphan_after.count()
        << " drain_timeout_ms=" << c.drain_timeout.count()
        << " default_deadline_ms=" << c.default_deadline.count() << " curve=" << curve
        << " services=" << services << " workers=" << workers << " clients=" << clients
        << " hostiles=" << hostiles << " combined=" << combined << " credit_max=" << credit_max
        << " id_size=" << id_size << " hang=" << hang_per_mille
        << " duplicate_reply=" << duplicate_reply_per_mille
        << " huge_reply=" << huge_reply_per_mille << " service_ms_max=" << service_ms_max
        << " window_max=" << window_max << " batch_max=" << batch_max
        << " deadline=" << deadline_per_mille << " priority_levels=" << priority_levels
        << " flooder=" << flooder << " hwm=" << hwm << " vanish=" << vanish
        << " impostor=" << impostor << " restart=" << restart << " drain=" << drain
        << " clock_jump=" << clock_jump << " would_block=" << would_block
        << " slow_reader=" << slow_reader;
    return out.str();
}

namespace {

// Requests workers may hold at once: each peer at most two worker entries at a time (the one it
// left, until the broker notices, and its new one).
std::uint64_t held_at_most(const Knobs& knobs) {
    return 2 * knobs.workers * std::uint64_t{knobs.credit_max} + (knobs.combined ? 400 : 0);
}

}  // namespace

std::uint64_t Knobs::queue_bound() const {
    return config.queue_limit + held_at_most(*this);
}

std::uint64_t Knobs::level_bound() const {
    return 2 * std::uint64_t{config.queue.low_priority_every} * protocol::kMaxPriority + 100;
}

std::uint64_t Knobs::lane_bound() const {
    if (config.queue.kind == broker::QueuePolicyKind::fifo) return queue_bound() + 100;
    // One round of deficit round robin: every other lane of the level its weight. Lanes are
    // fairness keys: each client's own, "k1" and "k0" to "k49", each other peer's own.
    const std::uint64_t keys = clients + 51 + hostiles + 8;
    const std::uint64_t weight = config.queue.weights.empty() ? 1 : 3;
    // And the requests chosen before it that a worker with a full queue sent back: they go out
    // first, in the order they were chosen. A batch, and so this backlog, is one worker's credit.
    const std::uint64_t sent_back = std::max<std::uint64_t>(credit_max, combined ? 400 : 0);
    return std::min<std::uint64_t>(config.queue_limit, keys) * weight + sent_back + 100;
}

std::uint64_t Knobs::requeued_slack() const {
    return 4 * held_at_most(*this);
}

}  // namespace zbroker::sim
