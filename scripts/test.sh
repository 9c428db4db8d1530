#!/usr/bin/env bash
# Builds zbroker under AddressSanitizer + UndefinedBehaviorSanitizer and runs the whole suite:
# unit, spec conformance, integration (real sockets, ephemeral loopback ports) and interop.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset asan
cmake --build --preset asan
ctest --preset asan
