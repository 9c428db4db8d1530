// Answers of our 8/MMI extension mmi.services, encoded once here.
#pragma once

#include <string>

namespace zbroker::broker {

class BrokerCore;

// msgpack map {service: {"workers": n, "queued": n, "in_flight": n}} of every known service.
std::string encode_service_list(const BrokerCore& core);

}  // namespace zbroker::broker
