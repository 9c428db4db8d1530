// Checks every message the broker core sends against what the simulated world knows.
#include "sim/oracle.hpp"

#include <charconv>
#include <sstream>

#include "shared/wire.hpp"

namespace zbroker::sim {

using protocol::Status;

namespace {

// The number in "q<number>" at the start of `text`, or nullopt.
std::optional<std::uint64_t> number_in(std::string_view text) {
    if (!text.starts_with('q')) return std::nullopt;
    std::uint64_t number = 0;
    const auto [end, error] = std::from_chars(text.data() + 1, text.data() + text.size(), number);
    if (error != std::errc{} || end == text.data() + 1) return std::nullopt;
    return number;
}

std::string q(std::uint64_t number) {
    return "q" + std::to_string(number);
}

}  // namespace

Oracle::Oracle(const Knobs& knobs) : knobs_(knobs) {}

void Oracle::follow(std::uint64_t number, std::function<void(std::string)> note) {
    followed_ = number;
    note_ = std::move(note);
}

void Oracle::fail(Failure kind, std::string what) {
    if (failure_ != Failure::none) return;  // the first failure is the one to look at
    failure_ = kind;
    what_ = std::move(what);
}

std::uint64_t Oracle::new_request(Request request) {
    Facts facts;
    facts.request = std::move(request);
    requests_.push_back(std::move(facts));
    return requests_.size();
}

Oracle::Facts* Oracle::facts_of(const std::string& text) {
    const auto number = number_in(text);
    if (!number || *number == 0 || *number > requests_.size()) return nullptr;
    return &requests_[*number - 1];
}

void Oracle::read_by_core(std::uint64_t number, TimePoint now) {
    Facts& facts = requests_.at(number - 1);
    if (facts.read_at) return;
    facts.read_at = now;
    facts.epoch = epoch_;
    const Connection& asker = connections_.at(facts.request.client);
    // Its lane as the broker sees it, whether or not anybody still awaits its answer: the
    // broker dispatches it all the same.
    if (knobs_.config.queue.kind != broker::QueuePolicyKind::fifo) {
        facts.lane = !facts.request.fairness_key.empty() ? facts.request.fairness_key
                     : knobs_.curve                      ? asker.key
                                                         : asker.routing_id;
    }
    if (knobs_.config.queue.kind == broker::QueuePolicyKind::priority)
        facts.level = facts.request.priority;
    if (!asker.open) {
        facts.lost = true;  // read after its client left: nobody awaits the answer
        return;
    }
    // A plain 7/MDP client hears nothing of a failure, so only ZBC01 and ZB/1 requests are
    // owed an answer the oracle can see.
    if (number == followed_)
        note_(q(number) + " read by the broker, lane " + printable(facts.lane) + " level " +
              std::to_string(facts.level));
    if (facts.request.protocol == broker::ClientProtocol::mdp) return;
    awaited_.insert(number);
    mark_waiting(facts);
    facts.waiting_from = now;
    std::optional<Millis> deadline = facts.request.deadline;
    if (!deadline && knobs_.config.default_deadline > Millis{0})
        deadline = knobs_.config.default_deadline;
    if (deadline) due_.insert({now + *deadline, number});
}

void Oracle::connection_opened(std::uint64_t serial, std::string routing_id, std::string key,
                               broker::PeerRole role) {
    Connection& connection = connections_[serial];
    connection.routing_id = std::move(routing_id);
    connection.key = std::move(key);
    connection.role = role;
}

void Oracle::worker_ready(std::uint64_t serial, std::string service, bool healthy, bool faithful) {
    Connection& connection = connections_.at(serial);
    connection.worker = true;
    connection.healthy = healthy;
    connection.faithful = faithful;
    connection.service = std::move(service);
}

void Oracle::ready_read(std::uint64_t serial) {
    const Connection& connection = connections_.at(serial);
    worker_owners_[connection.routing_id] = connection.key;
}

void Oracle::worker_replied(std::uint64_t number, std::vector<std::string> body) {
    std::vector<std::vector<std::string>>& replies = requests_.at(number - 1).replies;
    for (const auto& reply : replies) {
        if (reply == body) return;
    }
    replies.push_back(std::move(body));
}

void Oracle::connection_closed(std::uint64_t serial, TimePoint now) {
    connections_.at(serial).open = false;
    for (auto it = awaited_.begin(); it != awaited_.end();) {
        Facts& facts = requests_[*it - 1];
        if (facts.request.client == serial) {
            facts.lost = true;
            it = awaited_.erase(it);
            continue;
        }
        if (facts.holder == serial) {
            // Back to a queue once the broker notices, at the latest when the worker expires.
            facts.holder.reset();
            facts.service_mark.reset();
            facts.requeued = true;
            facts.waiting_from = now + knobs_.expiry() + knobs_.config.heartbeat_interval;
        }
        ++it;
    }
}

void Oracle::broker_restarted(TimePoint) {
    ++epoch_;
    for (const std::uint64_t number : awaited_)
        requests_[number - 1].lost = true;
    awaited_.clear();
    due_.clear();
}

void Oracle::mark_waiting(Facts& facts) {
    Progress& progress = progress_[facts.request.service];
    facts.service_mark = progress.service;
    facts.level_mark = progress.level[facts.level];
}

void Oracle::calm_begins() {
    for (const std::uint64_t number : awaited_) {
        Facts& facts = requests_[number - 1];
        if (facts.service_mark) mark_waiting(facts);
    }
}

void Oracle::sent_by_core(const Message& m, SendResult result, std::optional<std::uint64_t> to,
                          TimePoint now) {
    ++checks_;
    if (m.size() < 2) return fail(Failure::safety, "the broker sent a message of one frame");
    if (is_native(m)) {
        NativeMessage native;
        if (!native.read(m)) {
            return fail(Failure::safety,
                        std::string("the broker sent a bad ZB/1 message: ") + native.error);
        }
        for (const wire::Record& record : native.records) {
            const std::vector<std::string> body = native.body(record);
            switch (record.command) {
                case wire::Command::answer:
                    on_answer(std::string(record.id), false, record.status, body, to, now);
                    break;
                case wire::Command::job:
                    on_job(body, to, result, now);
                    break;
                case wire::Command::heartbeat:
                case wire::Command::disconnect:
                case wire::Command::credit:
                    break;
                case wire::Command::request:
                case wire::Command::ready:
                case wire::Command::reply:
                    return fail(
                        Failure::safety,
                        "the broker sent a " + std::string(wire::command_name(record.command)));
            }
        }
        return;
    }
    if (m.size() < 4 || !m[1].empty())
        return fail(Failure::safety, "the broker sent a message with no protocol header");
    const std::string& header = m[2];
    if (header == protocol::kMdpClient) {
        const std::vector<std::string> body(m.begin() + 4, m.end());
        const std::string first = body.empty()                        ? ""
                                  : body[0] == "R" && body.size() > 1 ? body[1]
                                                                      : body[0].substr(1);
        return on_answer(first, true, Status::ok, body, to, now);
    }
    if (header == protocol::kZbcClient) {
        if (m.size() < 6) return fail(Failure::safety, "a ZBC01 answer without status");
        const auto status = protocol::parse_status(m[5]);
        if (!status) return fail(Failure::safety, "a ZBC01 answer with status " + m[5]);
        const std::vector<std::string> body(m.begin() + 6, m.end());
        return on_answer(m[4], false, *status, body, to, now);
    }
    if (header == protocol::kMdpWorker) {
        if (m[3].size() != 1) return fail(Failure::safety, "an MDPW01 command of several bytes");
        const auto command = static_cast<protocol::WorkerCommand>(m[3][0]);
        if (command == protocol::WorkerCommand::request) {
            if (m.size() < 6 || !m[5].empty())
                return fail(Failure::safety, "a REQUEST without token and delimiter");
            const std::vector<std::string> body(m.begin() + 6, m.end());
            return on_job(body, to, result, now);
        }
        if (command == protocol::WorkerCommand::heartbeat ||
            command == protocol::WorkerCommand::disconnect)
            return;
        return fail(Failure::safety, "the broker sent MDPW01 command " + std::to_string(m[3][0]));
    }
    fail(Failure::safety, "the broker sent protocol " + header);
}

void Oracle::on_answer(const std::string& tag, bool by_body, Status status,
                       const std::vector<std::string>& body, std::optional<std::uint64_t> to,
                       TimePoint now) {
    if (tag.starts_with("never")) {
        return fail(Failure::safety,
                    "answered " + tag + ", sent in a message the broker must not act on");
    }
    Facts* facts = facts_of(tag);
    if (facts == nullptr) return;  // a hostile peer's request, or MMI
    const std::uint64_t number = static_cast<std::uint64_t>(facts - requests_.data()) + 1;
    if (by_body && facts->request.protocol != broker::ClientProtocol::mdp) return;
    ++answers_;
    if (++facts->answers > 1) {
        return fail(Failure::safety, q(number) + " answered twice (now " +
                                         std::string(protocol::status_text(status)) + ")");
    }
    awaited_.erase(number);
    const Connection& asker = connections_[facts->request.client];
    if (to && knobs_.curve && connections_[*to].key != asker.key) {
        const Connection& reached = connections_[*to];
        return fail(Failure::safety, "the answer to " + q(number) +
                                         " reached another connection on routing id " +
                                         reached.routing_id + " (key " + reached.key +
                                         ", asked by key " + asker.key + ")");
    }
    if (status == Status::deadline_exceeded) {
        std::optional<Millis> deadline = facts->request.deadline;
        if (!deadline && knobs_.config.default_deadline > Millis{0})
            deadline = knobs_.config.default_deadline;
        if (!deadline || !facts->read_at || now < *facts->read_at + *deadline)
            return fail(Failure::safety, "504 for " + q(number) + " before its deadline");
    }
    if (status == Status::ok && !facts->unfaithful_holder) {
        for (const auto& reply : facts->replies) {
            if (body == reply) return;
        }
        std::string replied;
        for (const auto& reply : facts->replies)
            replied += " " + std::to_string(reply.size());
        return fail(Failure::safety,
                    "200 for " + q(number) + " carries " + std::to_string(body.size()) +
                        " frame(s), which no worker replied (replies of" + replied + " frames)");
    }
}

void Oracle::on_job(const std::vector<std::string>& body, std::optional<std::uint64_t> to,
                    SendResult result, TimePoint) {
    if (body.empty()) return;
    Facts* facts = facts_of(body.front());
    if (facts == nullptr) return;  // a hostile peer's request
    const std::uint64_t number = static_cast<std::uint64_t>(facts - requests_.data()) + 1;
    if (result != SendResult::sent || !to) return;  // never left: the broker takes it back
    const Connection& worker = connections_[*to];
    if (knobs_.curve && (worker.role != broker::PeerRole::worker ||
                         worker_owners_[worker.routing_id] != worker.key)) {
        return fail(Failure::safety, "the JOB for " + q(number) + " reached routing id " +
                                         printable(worker.routing_id) + " on a connection of key " +
                                         worker.key + ", not the key " +
                                         worker_owners_[worker.routing_id] +
                                         " whose READY made that worker");
    }
    if (body != facts->request.body)
        return fail(Failure::safety, "the JOB for " + q(number) + " carries another body");
    if (followed_ != 0 && followed_ <= requests_.size() &&
        facts->request.service == requests_[followed_ - 1].request.service)
        note_("JOB " + q(number) + " lane " + printable(facts->lane) + " level " +
              std::to_string(facts->level) + " to #" + std::to_string(*to));
    // Only what the queue policy chose counts as a turn taken from the others: a request back
    // from a worker that went away goes before them, and what it waits for is the next free
    // worker, not a turn.
    Progress& progress = progress_[facts->request.service];
    if (!facts->requeued) {
        ++progress.service;
        ++progress.level[facts->level];
    }
    progress.level_last[facts->level] = progress.service;
    progress.lane_last[{facts->level, facts->lane}] = progress.level[facts->level];
    ++total_dispatches_;
    facts->holder = *to;
    facts->service_mark.reset();
    if (!worker.faithful) facts->unfaithful_holder = true;
}

bool Oracle::has_healthy_worker(const std::string& service) const {
    for (const auto& [serial, connection] : connections_) {
        if (connection.open && connection.worker && connection.healthy &&
            connection.service == service)
            return true;
    }
    return false;
}

void Oracle::check(TimePoint now, const broker::BrokerCore& core, bool calm) {
    ++steps_;
    // Every request with a deadline is answered by it: the broker's timer fires at the first
    // tick at or after it.
    while (!due_.empty() && due_.begin()->first < now) {
        const std::uint64_t number = due_.begin()->second;
        due_.erase(due_.begin());
        const Facts& facts = requests_[number - 1];
        if (facts.answers == 0 && !facts.lost && facts.epoch == epoch_)
            return fail(Failure::liveness, q(number) + " not answered by its deadline");
    }
    if (core.live_requests() > knobs_.config.max_requests)
        return fail(Failure::safety, "the broker holds more requests than --max-requests");
    if (steps_ % 64 != 0) return;
    // No starvation: while a service has a healthy worker, every level of its queue gets a
    // dispatch, and every lane (fairness key) of a level a dispatch of that level, within what
    // the policy promises.
    for (const std::uint64_t number : awaited_) {
        Facts& facts = requests_[number - 1];
        if (facts.holder) continue;
        if (!facts.service_mark) {
            if (now >= facts.waiting_from) mark_waiting(facts);
            continue;
        }
        if (!calm || !has_healthy_worker(facts.request.service)) continue;
        Progress& progress = progress_[facts.request.service];
        const std::uint64_t level_since =
            progress.service - std::max(*facts.service_mark, progress.level_last[facts.level]);
        const std::uint64_t lane_since =
            progress.level[facts.level] -
            std::max(facts.level_mark, progress.lane_last[{facts.level, facts.lane}]);
        const std::uint64_t slack = facts.requeued ? knobs_.requeued_slack() : 0;
        const bool level_starved = level_since > knobs_.level_bound() + slack;
        if (level_starved || lane_since > knobs_.lane_bound() + slack) {
            std::ostringstream what;
            what << q(number) << " starved: ";
            if (level_starved) {
                what << level_since << " dispatches of '" << facts.request.service
                     << "' and none at its priority " << facts.level << " (bound "
                     << knobs_.level_bound() << ")";
            } else {
                what << lane_since << " dispatches of '" << facts.request.service
                     << "' at its priority " << facts.level << " and none of its fairness key "
                     << printable(facts.lane) << " (bound " << knobs_.lane_bound() << ")";
            }
            what << "; it was read " << (now - *facts.read_at).count() / 1'000'000 << " ms ago"
                 << (facts.requeued ? ", and a worker that held it went away" : "");
            return fail(Failure::liveness, what.str());
        }
    }
    // New requests stop at --queue-limit; requests back from a worker that went away come on
    // top (they are never dropped), and workers hold at most their credit.
    const std::size_t queue_bound = knobs_.queue_bound();
    for (std::size_t i = 0; i < knobs_.services; ++i) {
        const auto info = core.service_info("s" + std::to_string(i));
        if (info && info->waiting > queue_bound) {
            return fail(Failure::safety, "'s" + std::to_string(i) + "' has " +
                                             std::to_string(info->waiting) +
                                             " requests waiting, more than --queue-limit and the "
                                             "workers' credit allow");
        }
    }
}

bool Oracle::all_answered() const {
    return awaited_.empty();
}

void Oracle::check_all_answered(TimePoint) {
    if (awaited_.empty()) return;
    const std::uint64_t number = *awaited_.begin();
    std::ostringstream what;
    what << awaited_.size() << " request(s) never answered once the load stopped, the first "
         << q(number) << " for '" << requests_[number - 1].request.service << "'";
    fail(Failure::liveness, what.str());
}

}  // namespace zbroker::sim
