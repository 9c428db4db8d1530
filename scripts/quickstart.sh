#!/usr/bin/env bash
# Builds optimized binaries, then runs the system on loopback: a broker, two worker processes,
# a few jobs from the client, and a short benchmark. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset release
cmake --build --preset release

bin=build/release/bin
port=${ZBROKER_PORT:-5555}
endpoint="tcp://127.0.0.1:${port}"
pids=()
cleanup() {  # workers first, then the broker: no one is told DISCONNECT while leaving
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

echo; echo "== broker on ${endpoint}"
"$bin/zbroker" --bind "$endpoint" --log-level warn &
pids+=($!)
sleep 0.3
if ! kill -0 "${pids[0]}" 2>/dev/null; then
  echo "zbroker did not start: is port ${port} taken? Try ZBROKER_PORT=5600 $0" >&2
  exit 1
fi

echo "== two workers: echo, hello, stats, sleep (credit adapts to how long their jobs take)"
for _ in 1 2; do
  "$bin/zworker" --broker "$endpoint" --service echo --service hello --service stats \
    --service sleep --threads 2 --log-level warn &
  pids+=($!)
done

run() { echo "\$ $*"; "$@"; }
for _ in $(seq 50); do
  "$bin/zclient" --broker "$endpoint" services hello >/dev/null 2>&1 && break
  sleep 0.1
done

echo; echo "== jobs from the client"
run "$bin/zclient" --broker "$endpoint" call hello "Hello, Server!"
run "$bin/zclient" --broker "$endpoint" call echo '{"x": [1, 2.5, "a"]}'
run "$bin/zclient" --broker "$endpoint" call stats '[3, 1, 4, 1, 5, 9, 2, 6]'
run "$bin/zclient" --broker "$endpoint" services

echo; echo "== a short benchmark against this broker"
run "$bin/zbench" --connect "$endpoint" --service echo --mode sync,pipelined --duration 2
