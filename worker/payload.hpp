// Typed payloads for handlers: Request::as<T>() and Reply::of<T>() over the msgpack codec.
// Include it where a handler reads or writes msgpack; worker.hpp alone stays msgpack-free.
#pragma once

// Relative: installed under include/zbroker/, these headers find each other by path alone.
#include "../shared/codec.hpp"
#include "worker.hpp"

namespace zbroker {

template <class T>
T Request::as() const {
    return unpack<T>(body());
}

template <class T>
Reply Reply::of(const T& value) {
    return Reply::raw(pack(value));
}

}  // namespace zbroker
