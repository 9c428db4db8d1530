// The order in which a service's waiting requests go to its workers, and who may queue more.
//
// One object per service, apart from sockets and workers, the way libzmq keeps lb_t and fq_t
// apart from its sockets: the broker core asks it for the next request when a worker has credit,
// and tells it when a request comes, comes back (its worker died) or leaves early (deadline).
// The next policy is one more class here.
//
// Requests are named by tokens (request_table.hpp). A request that leaves early leaves its token
// behind, stale: pop() skips it, and the policies bound how many stale tokens they keep.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/peer_table.hpp"
#include "broker/request_table.hpp"

namespace zbroker::broker {

enum class QueuePolicyKind : std::uint8_t {
    fifo,      // one queue, oldest first; priority and fairness keys are ignored
    fair,      // tenants share the workers by weight (deficit round robin), a tenant's subkeys
               // its turns (round robin)
    priority,  // higher priority first; fair sharing within each level
};
std::string_view policy_name(QueuePolicyKind kind) noexcept;

struct QueueSettings {
    QueuePolicyKind kind = QueuePolicyKind::priority;
    // With `priority`: while several levels wait, every Nth request goes to a level below the
    // highest waiting, each lower level in turn, highest first; so every waiting level gets at
    // least one request in N x (levels waiting - 1), and none starves. 0 means strict priority.
    std::uint32_t low_priority_every = 20;
    // Weights of fairness keys; a key not named here weighs 1.
    std::map<std::string, std::uint32_t, std::less<>> weights;
};

// How much of a service's queue one tenant holds, for stats and metrics.
struct KeyLoad {
    std::string key;
    std::size_t waiting = 0;
    std::uint32_t weight = 1;
};

class QueuePolicy {
  public:
    virtual ~QueuePolicy() = default;

    // Whether a new request of `tenant` may wait, given the service's --queue-limit (no more
    // than `limit` wait in all): otherwise it gets 429. FIFO admits while there is room.
    // The fair policies also refuse a tenant past its weighted share of the limit among the
    // tenants waiting, and when the queue is full they make room for a tenant under its share
    // by giving up the newest request of the tenant furthest over its share: `pushed_out`, out
    // of the queue, for the caller to answer 429. So a flooding tenant is refused before the
    // others, and a single tenant may still use the whole queue while it is alone. O(1),
    // however many tenants wait.
    struct Admission {
        bool admitted = false;
        RequestRecord* pushed_out = nullptr;
    };
    virtual Admission admit(std::string_view tenant, std::size_t limit, RequestTable& table) = 0;
    // A new request, behind the others of its key and level.
    virtual void push(const RequestRecord& record) = 0;
    // A request that was dispatched but never reached its worker (its queue was full): first
    // again, of its key and of the queue, as if it had never left.
    virtual void push_front(const RequestRecord& record) = 0;
    // The next live request to dispatch, now out of the queue; nullptr when none waits.
    virtual RequestRecord* pop(RequestTable& table) = 0;
    // `record`, still queued, leaves by another way (its deadline): its token goes stale.
    virtual void forget(const RequestRecord& record, RequestTable& table) = 0;
    // The `n` tenants with the most requests waiting, most first.
    virtual std::vector<KeyLoad> top_keys(std::size_t n) const = 0;
    // Tenants with requests waiting: what the policy keeps state for.
    virtual std::size_t keys() const noexcept = 0;

    // Live requests waiting.
    std::size_t waiting() const noexcept { return waiting_; }

  protected:
    std::size_t waiting_ = 0;
};

std::unique_ptr<QueuePolicy> make_queue_policy(const QueueSettings& settings);

// Whose share a request is queued in. The tenant is the fairness key the request named, else
// its client's CURVE key, else its connection. Under CURVE a client's named key does not name a
// tenant (no client may spend another's share by naming its key): its tenant is its own CURVE
// key, and the named key a `subkey` that divides that tenant's share among its own users.
struct FairnessKey {
    std::string_view tenant;
    std::string_view subkey;  // empty: none
};

inline FairnessKey fairness_key_of(const RequestRecord& record) noexcept {
    const std::string_view named = record.fairness_key();
    if (named.empty()) {
        return {record.client->key.empty() ? std::string_view(record.client->identity)
                                           : std::string_view(record.client->key),
                {}};
    }
    if (record.tenant_size == 0) return {named, {}};
    return {named.substr(0, record.tenant_size), named.substr(record.tenant_size + 1)};
}

}  // namespace zbroker::broker
