#!/usr/bin/env bash
# Runs the same request-reply load against zbroker (zbench) and NATS (nats_bench), point by
# point, and prints one table: req/s and p50/p99 latency of each, and zbroker's ratio to NATS.
# Everything started here listens on 127.0.0.1 only and is stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
self="bench/compare/run.sh"

usage() {
  cat <<EOF
Usage: $self [OPTIONS]

Runs zbench's request-reply load against zbroker, and the same load against NATS (a
nats-server on 127.0.0.1 with echo responders in a queue group), point by point, then
prints one table: req/s and p50/p99 latency of both, and zbroker's ratio to NATS.

Options:
  --duration S        seconds measured per point (default $duration)
  --warmup S          seconds of warm-up before each point (default $warmup)
  --mode LIST         sync and/or pipelined (default $modes)
  --size LIST         request body bytes, comma-separated (default $sizes; at most 1048576,
                      nats-server's default max_payload)
  --inflight LIST     requests in flight per client in pipelined mode (default $inflight)
  --clients LIST      client connections (default $clients)
  --workers N         zbroker echo workers, and NATS echo responders (default $workers)
  --credit N          requests each zworker may hold at once (default $credit, as in the
                      README's figures; 0: zworker's default, adaptive). NATS pushes
                      to its responders without such a bound
  --nats-config LIST  buffered and/or asap (default $nats_configs): how cnats sends. buffered
                      is the library's default, publishes batched by a flusher thread that
                      waits up to 1 ms; asap is natsOptions_SetSendAsap on the responders and
                      the pipelined client, a socket write per message
  --bin-dir DIR       where zbench, zbroker and zworker are (default \$ZBROKER_BIN_DIR, else
                      build/release/bin in this repository)
  --json FILE         also write every point of both systems to FILE, as JSON
  --install           install nats-server and libnats-dev with apt-get if missing
  -h, --help          this text

Needs nats-server and libnats-dev (Debian 12: apt-get install nats-server libnats-dev), a C
compiler and python3. nats_bench is built with cc into build/compare/, outside CMake.
Example:
  $self --duration 2 --size 32,1024 --inflight 16,256
EOF
}

duration=2
warmup=0.3
modes=sync,pipelined
sizes=32
inflight=16,256
clients=1
workers=2
credit=0
nats_configs=buffered,asap
bin_dir=${ZBROKER_BIN_DIR:-$repo/build/release/bin}
json_out=""
install=false

die() {
  echo "$self: $*" >&2
  exit 1
}
need_value() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }
check() {  # check FLAG VALUE REGEX WHAT
  [[ $2 =~ $3 ]] || die "$1 $2: expected $4"
}
list_of_numbers='^[0-9]+(,[0-9]+)*$'
seconds='^([0-9]+\.?[0-9]*|\.[0-9]+)$'

while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --install) install=true; shift; continue ;;
    --duration) need_value "$@"; duration=$2 ;;
    --warmup) need_value "$@"; warmup=$2 ;;
    --mode) need_value "$@"; modes=$2 ;;
    --size) need_value "$@"; sizes=$2 ;;
    --inflight) need_value "$@"; inflight=$2 ;;
    --clients) need_value "$@"; clients=$2 ;;
    --workers) need_value "$@"; workers=$2 ;;
    --credit) need_value "$@"; credit=$2 ;;
    --nats-config) need_value "$@"; nats_configs=$2 ;;
    --bin-dir) need_value "$@"; bin_dir=$2 ;;
    --json) need_value "$@"; json_out=$2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift 2
done

check --duration "$duration" "$seconds" "seconds"
check --warmup "$warmup" "$seconds" "seconds"
awk "BEGIN { exit !($duration >= 0.1) }" || die "--duration $duration: at least 0.1 s, as zbench"
check --mode "$modes" '^(sync|pipelined)(,(sync|pipelined))*$' "sync and/or pipelined"
check --size "$sizes" "$list_of_numbers" "comma-separated byte counts"
check --inflight "$inflight" "$list_of_numbers" "comma-separated counts"
check --clients "$clients" "$list_of_numbers" "comma-separated counts"
check --workers "$workers" '^[1-9][0-9]*$' "a count of at least 1"
check --credit "$credit" '^[0-9]+$' "a count"
check --nats-config "$nats_configs" '^(buffered|asap)(,(buffered|asap))*$' "buffered and/or asap"
IFS=, read -ra size_list <<<"$sizes"
for size in "${size_list[@]}"; do
  ((size <= 1048576)) || die "--size $size: NATS refuses messages over its max_payload, 1 MiB by default"
done

# ---- what this needs, installed only when asked ------------------------------------------------

has_libnats() { pkg-config --exists libnats 2>/dev/null || [ -f /usr/include/nats/nats.h ]; }
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
has_libnats || missing+=(libnats-dev)
command -v cc >/dev/null || missing+=(build-essential)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]} > 0)); then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
  if ! $install; then
    echo "$self compares zbroker with NATS and needs: ${missing[*]}"
    echo "Install with:  ${as_root[*]:+sudo }apt-get install -y ${missing[*]}"
    echo "or run:        $self --install"
    echo "Nothing was run."
    exit 0
  fi
  echo "Installing: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  # Through env, not an assignment before sudo: sudo drops the caller's environment.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for program in zbench zbroker zworker; do
  [ -x "$bin_dir/$program" ] || die "no $program in $bin_dir: build zbroker first" \
    "(cmake --preset release && cmake --build --preset release), or pass --bin-dir DIR"
done

# nats_bench is built here rather than in CMake, so that the main build and CI do not need
# libnats for a comparison few people run.
build_dir="$repo/build/compare"
nats_bench="$build_dir/nats_bench"
source_file="$repo/bench/compare/nats_bench.c"
if [ ! -x "$nats_bench" ] || [ "$source_file" -nt "$nats_bench" ]; then
  mkdir -p "$build_dir"
  nats_flags=(-lnats)
  if pkg-config --exists libnats 2>/dev/null; then
    read -ra nats_flags <<<"$(pkg-config --cflags --libs libnats)"
  fi
  echo "building $nats_bench" >&2
  cc -std=c11 -O2 -Wall -Wextra -o "$nats_bench.tmp" "$source_file" "${nats_flags[@]}" \
    -pthread -lm || die "cannot build nats_bench: see the compiler's message above"
  mv "$nats_bench.tmp" "$nats_bench"
fi

# ---- processes, and their cleanup ----------------------------------------------------------------

tmp=$(mktemp -d /tmp/zbroker-compare.XXXXXX)
pids=()   # nats-server, then the responders
child=""  # the zbench or nats_bench run in progress
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do  # responders first, the server last
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background, so that a signal's trap can stop it; stdout to $1.
run_child() {
  local out=$1
  shift
  "$@" >"$out" 2>"$out.err" &
  child=$!
  local status=0
  wait "$child" || status=$?
  child=""
  return "$status"
}

# -p -1: the server picks a free port and writes it to the ports file, so no port is guessed.
nats-server -a 127.0.0.1 -p -1 --ports_file_dir "$tmp" -l "$tmp/nats-server.log" &
server=$!
pids+=("$server")
ports_file="$tmp/nats-server_$server.ports"
for _ in $(seq 200); do
  [ -s "$ports_file" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.05
done
[ -s "$ports_file" ] || die "nats-server did not start; its log:
$(cat "$tmp/nats-server.log" 2>/dev/null)"
url=$(grep -o 'nats://127\.0\.0\.1:[0-9]*' "$ports_file" | head -n 1)
[ -n "$url" ] || die "no client URL in $ports_file: $(cat "$ports_file")"

# One queue group per configuration, each with its own subject, all started once: the idle
# group costs nothing while the other is measured.
IFS=, read -ra config_list <<<"$nats_configs"
responder_logs=()
for config in "${config_list[@]}"; do
  asap=()
  [ "$config" = asap ] && asap=(--send-asap)
  for ((i = 1; i <= workers; i++)); do
    log="$tmp/responder.$config.$i.log"
    "$nats_bench" respond --url "$url" --subject "echo.$config" --queue "echo.$config" \
      "${asap[@]}" >"$log" 2>&1 &
    pids+=("$!")
    responder_logs+=("$log")
  done
done
for log in "${responder_logs[@]}"; do
  for _ in $(seq 200); do
    grep -q '^ready$' "$log" && break
    sleep 0.05
  done
  grep -q '^ready$' "$log" || die "an echo responder did not start; its log:
$(cat "$log")"
done

# ---- the points, zbroker then NATS for each, so that drift in the machine's load hits both -----

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
IFS=, read -ra mode_list <<<"$modes"
IFS=, read -ra window_list <<<"$inflight"
IFS=, read -ra client_list <<<"$clients"
point_count=0
for mode in "${mode_list[@]}"; do
  windows=("${window_list[@]}")
  [ "$mode" = sync ] && windows=(1)
  point_count=$((point_count + ${#size_list[@]} * ${#windows[@]} * ${#client_list[@]}))
done
echo "zbroker vs NATS: $point_count point(s), $duration s each after $warmup s of warm-up," \
  "on each of zbroker and ${#config_list[@]} NATS configuration(s)" >&2

n=0
for mode in "${mode_list[@]}"; do
  windows=("${window_list[@]}")
  [ "$mode" = sync ] && windows=(1)
  for size in "${size_list[@]}"; do
    for window in "${windows[@]}"; do
      for client_count in "${client_list[@]}"; do
        n=$((n + 1))
        echo "  [$n/$point_count] $mode, $size B, $window in flight, $client_count client(s)" >&2
        zbench_args=(--mode "$mode" --size "$size" --inflight "$window" --clients "$client_count"
          --workers "$workers" --duration "$duration" --warmup "$warmup" --bin-dir "$bin_dir"
          --credit "$credit" --json "$tmp/zbroker.$n.json")
        status=0
        run_child "$tmp/zbench.$n.log" "$bin_dir/zbench" "${zbench_args[@]}" || status=$?
        # zbench exits 2 when requests went unanswered; it has written them in its JSON.
        if [ "$status" -ne 0 ] && { [ "$status" -ne 2 ] || [ ! -s "$tmp/zbroker.$n.json" ]; }; then
          die "zbench failed (exit $status):
$(cat "$tmp/zbench.$n.log" "$tmp/zbench.$n.log.err")"
        fi
        for config in "${config_list[@]}"; do
          asap=()
          [ "$config" = asap ] && asap=(--send-asap)
          run_child "$tmp/nats.$n.$config.json" "$nats_bench" load --url "$url" \
            --subject "echo.$config" --mode "$mode" --size "$size" --inflight "$window" \
            --clients "$client_count" --workers "$workers" --duration "$duration" \
            --warmup "$warmup" "${asap[@]}" ||
            die "nats_bench failed: $(cat "$tmp/nats.$n.$config.json.err")"
          cat "$tmp/nats.$n.$config.json" >>"$tmp/nats.jsonl"
        done
      done
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the table --------------------------------------------------------------------------------

echo "zbroker vs NATS request-reply on 127.0.0.1: $workers echo workers (credit $credit) /" \
  "responders, $duration s per point after $warmup s warm-up"
echo "$("$bin_dir/zbench" --version) ($bin_dir), $(nats-server --version)," \
  "$("$nats_bench" --version | sed 's/^nats_bench, //'); $(nproc) cores"
echo "load average (1, 5, 15 min): $load_before before, $load_after after"
echo
python3 - "$tmp" "$nats_configs" "$json_out" <<'EOF'
import glob
import json
import os
import sys

tmp, configs, json_out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]


def key(p):
    return (p["mode"], p["size"], p["inflight"], p["clients"])


order, zbroker, nats = [], {}, {}
paths = glob.glob(os.path.join(tmp, "zbroker.*.json"))
for path in sorted(paths, key=lambda p: int(p.split(".")[-2])):
    with open(path) as f:
        for p in json.load(f)["points"]:
            order.append(key(p))
            zbroker[key(p)] = p
with open(os.path.join(tmp, "nats.jsonl")) as f:
    for line in f:
        p = json.loads(line)
        p["nats_config"] = "asap" if p["send_asap"] else "buffered"
        nats[key(p), p["nats_config"]] = p


def size_text(n):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def label(k):
    mode, size, window, clients = k
    text = f"{mode} {size_text(size)}"
    if mode == "pipelined":
        text += f" x{window}"
    if clients > 1:
        text += f", {clients} clients"
    return text


def ratio(a, b):
    return f"{a / b:.2f}x" if b > 0 else "-"


head = f"{'point':<26}{'cnats':<10}"
group = "{:>9}{:>10}{:>9}"
print((f"{'':<36}" + "".join(f"   {title:^28}" for title in ("req/s", "p50 us", "p99 us"))).rstrip())
print(head + ("   " + group.format("zbroker", "NATS", "zb/NATS")) * 3)
errors = []
for k in order:
    z = zbroker[k]
    for config in configs:
        n = nats.get((k, config))
        if n is None:
            continue
        zl, nl = z["latency_us"], n["latency_us"]
        print(
            f"{label(k):<26}{config:<10}"
            + "   " + group.format(f"{z['requests_per_second']:,.0f}",
                                  f"{n['requests_per_second']:,.0f}",
                                  ratio(z["requests_per_second"], n["requests_per_second"]))
            + "   " + group.format(f"{zl['p50']:.0f}", f"{nl['p50']:.0f}", ratio(zl["p50"], nl["p50"]))
            + "   " + group.format(f"{zl['p99']:.0f}", f"{nl['p99']:.0f}", ratio(zl["p99"], nl["p99"]))
        )
        for name, p in (("zbroker", z), (f"NATS {config}", n)):
            if p["errors"]:
                errors.append(f"  {label(k)}: {name} {p['errors']} of {p['sent']} sent")
print()
print("zb/NATS: above 1 means zbroker does more req/s, or takes longer (latency).")
print("Latency is per request, from send to reply; in pipelined mode it includes the wait")
print("behind the rest of the window.")
if errors:
    print("Requests that failed (keyed by status: 000 no reply in 10 s, 503 nobody to serve):")
    print("\n".join(sorted(set(errors))))
if json_out:
    points = [zbroker[k] for k in order] + [nats[k, c] for k in order for c in configs
                                            if (k, c) in nats]
    with open(json_out, "w") as f:
        json.dump({"points": points}, f, indent=2)
        f.write("\n")
EOF
