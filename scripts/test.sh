#!/usr/bin/env bash
# Runs the whole suite: unit, spec conformance, integration (real processes, ephemeral loopback
# ports) and interop, under ASan+UBSan; the threaded worker and client libraries also under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# ThreadSanitizer for the libraries that run threads: the worker (I/O thread + handler pool)
# and the clients. libzmq itself is not instrumented; tests/tsan.supp says so.
cmake --preset tsan
cmake --build --preset tsan --target test_worker test_client
ctest --preset tsan -L "^test_(worker|client)$"

# Everything else, and those again, under AddressSanitizer + UndefinedBehaviorSanitizer.
cmake --preset asan
cmake --build --preset asan
ctest --preset asan
