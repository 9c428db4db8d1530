#!/usr/bin/env bash
# Runs the whole suite: unit, spec conformance, integration (real processes, ephemeral loopback
# ports), interop, Python and packaging, under ASan+UBSan; the threaded worker and client
# libraries also under TSan; then the broker core under libFuzzer for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

scripts/install-deps.sh

# ccache keys on paths unless told where the tree starts: with these, a fresh clone in another
# folder (as CI makes) reuses what an earlier build of the same sources compiled.
export CCACHE_BASEDIR="$repo" CCACHE_NOHASHDIR=1

# ThreadSanitizer for the libraries that run threads: the worker (I/O thread + handler pool)
# and the clients. libzmq itself is not instrumented; tests/tsan.supp says so.
cmake --preset tsan
cmake --build --preset tsan --target test_worker test_client
ctest --preset tsan -L "^test_(worker|client)$"

# Everything else, and those again, under AddressSanitizer + UndefinedBehaviorSanitizer.
cmake --preset asan
cmake --build --preset asan
ctest --preset asan

# Coverage-guided fuzzing of the broker core (clang + libFuzzer), bounded in time. New inputs go
# to a temporary directory: the committed corpus (replayed above as fuzz_corpus) stays as it is.
cmake --preset fuzz
cmake --build --preset fuzz
fuzz_work=$(mktemp -d)
trap 'rm -rf "$fuzz_work"' EXIT
mkdir "$fuzz_work/new"
fuzz_seconds=${ZBROKER_FUZZ_SECONDS:-60}
echo "Fuzzing the broker core for $fuzz_seconds s"
if ! (cd "$fuzz_work" && "$repo/build/fuzz/bin/fuzz_broker_core" -max_total_time="$fuzz_seconds" \
        -print_final_stats=1 new "$repo/fuzz/corpus/broker_core" >fuzz.log 2>&1); then
    tail -n 80 "$fuzz_work/fuzz.log"
    cp "$fuzz_work"/crash-* "$fuzz_work"/leak-* "$fuzz_work"/timeout-* . 2>/dev/null || true
    echo "fuzz_broker_core found a fault; its input is in ./crash-* (or leak-*, timeout-*)."
    echo "Replay it with: build/fuzz/bin/fuzz_broker_core FILE"
    exit 1
fi
grep -E "^stat::(number_of_executed_units|new_units_added|peak_rss_mb)" "$fuzz_work/fuzz.log"
