#!/usr/bin/env bash
# What `cowscope trace --pid` costs a live server (BENCHMARKS.md, "trace --pid"): Redis SET
# throughput (redis-benchmark) during a BGSAVE, untraced vs attached with the syscall
# tracepoints (the default) vs attached with --syscalls (a ptrace stop per syscall). One Redis,
# the modes interleaved round by round (the machine is shared), medians reported with the
# ratio to untraced. Every round: BGSAVE, the write load while the child saves, wait for the
# save to end, detach (SIGINT), check the server still answers.
#
# --alloc-loop: instead, the allocation loop (tests/trace_programs/alloc_loop.c: malloc, touch,
# free, every free a munmap) with a live (parent, child) pair, untraced vs attached with the
# tracepoints (releases tracked, the write-fault stream on) vs attached with --syscalls. The
# program waits until it is attached before it forks and loops ("attached"; untraced it starts
# at once) and times its own loop (ns per iteration). Modes interleaved round by round,
# medians with the ratio to untraced, for two shapes: 1 MiB blocks with 256 pages touched
# (faults dominate) and 256 KiB blocks with one page touched (the syscall dominates).
#
# usage: scripts/bench-trace-attach.sh [--runs N] [--keys N] [--requests N] [--no-syscalls]
#                                      [--alloc-loop [--iterations N]] [--no-history-too]
#
# --no-history-too: also a fourth mode, attached with the tracepoints and --no-fault-history
# (no write-fault stream: what the history of copies costs).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
keys=100000
requests=20000
iterations=3000
alloc=0
modes="untraced tracepoints syscalls"
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --alloc-loop) alloc=1; shift ;;
    --no-syscalls) modes=${modes/ syscalls/}; shift ;;
    --no-history-too) modes+=" nohistory"; shift ;;
    *) echo "bench-trace-attach.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

if ((alloc)); then
  command -v cc >/dev/null || { echo "bench-trace-attach.sh: needs cc" >&2; exit 2; }
  command -v jq >/dev/null || { echo "bench-trace-attach.sh: needs jq" >&2; exit 2; }
  cargo build --release --quiet --bin cowscope
  bin=${CARGO_TARGET_DIR:-$PWD/target}/release/cowscope
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cc -O2 -o "$work/alloc_loop" tests/trace_programs/alloc_loop.c
  # One round of one mode: prints the loop's ns per iteration.
  alloc_round() {
    local mode=$1 kib=$2 touch=$3 lpid tpid
    if [[ $mode == untraced ]]; then
      "$work/alloc_loop" "$iterations" "$kib" "$touch" fork 2>&1 >/dev/null |
        awk '/^ns_per_iteration/ {print $2}'
      return
    fi
    "$work/alloc_loop" "$iterations" "$kib" "$touch" fork attached 2>"$work/loop.err" >/dev/null &
    lpid=$!
    local extra=()
    [[ $mode == syscalls ]] && extra=(--syscalls)
    [[ $mode == nohistory ]] && extra=(--no-fault-history)
    "$bin" trace --pid "$lpid" "${extra[@]}" --out "$work/$mode.json" 2>/dev/null &
    tpid=$!
    wait "$lpid"
    wait "$tpid" || true
    awk '/^ns_per_iteration/ {print $2}' "$work/loop.err"
  }
  for shape in "1024 256" "256 1"; do
    read -r kib touch <<<"$shape"
    declare -A got=()
    m=$modes
    for n in $(seq "$runs"); do
      for mode in $m; do
        r=$(alloc_round "$mode" "$kib" "$touch")
        echo "round $n $mode ${kib}KiB/$touch: $r ns/iteration" >&2
        got[$mode]+="$r "
      done
      m="${m#* } ${m%% *}"
    done
    echo "== alloc/free loop attached: $iterations x malloc($kib KiB), touch $touch page(s), free (a munmap each), a live pair; ns per iteration, medians of $runs interleaved rounds"
    base=$(tr ' ' '\n' <<<"${got[untraced]}" | grep . | median)
    printf '%-12s %14s %8s\n' mode ns/iteration ratio
    for mode in untraced tracepoints nohistory syscalls; do
      [[ -n ${got[$mode]:-} ]] || continue
      v=$(tr ' ' '\n' <<<"${got[$mode]}" | grep . | median)
      printf '%-12s %14.0f %8s\n' "$mode" "$v" "$(awk -v a="$v" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')"
    done
    [[ -f $work/tracepoints.json ]] && jq -r '"  last tracepoints run: \(.release_tracking.releases) releases, \(.release_tracking.events.lost) release records lost, \(.fault_history.faults) fault records (\(.fault_history.lost) lost), \(.release_tracking.stops) stops"' "$work/tracepoints.json"
    unset got
  done
  exit 0
fi
for tool in redis-server redis-cli redis-benchmark jq; do
  command -v "$tool" >/dev/null || { echo "bench-trace-attach.sh: needs $tool" >&2; exit 2; }
done

cargo build --release --quiet --bin cowscope
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/cowscope
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
redis_pid=
cleanup() {
  if [[ -n $redis_pid ]]; then kill "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cli() { redis-cli -p "$port" "$@"; }
redis-server --port "$port" --dir "$work" --save "" --appendonly no --daemonize no \
  --enable-debug-command local >/dev/null &
redis_pid=$!
for _ in $(seq 200); do
  [[ $(cli PING 2>/dev/null) == PONG ]] && break
  sleep 0.05
done
cli DEBUG POPULATE "$keys" key 4096 >/dev/null
# About 20 µs per key: the save lasts longer than the write load.
cli CONFIG SET rdb-key-save-delay 20 >/dev/null

tracer_of() { awk '/^TracerPid:/ {print $2}' "/proc/$redis_pid/status"; }

# One round of one mode: prints SET requests per second.
round() {
  local mode=$1 n=$2 tpid='' rps
  case "$mode" in
    tracepoints) "$bin" trace --pid "$redis_pid" --out "$work/$mode-$n.json" 2>/dev/null & tpid=$! ;;
    syscalls) "$bin" trace --pid "$redis_pid" --syscalls --out "$work/$mode-$n.json" 2>/dev/null & tpid=$! ;;
    nohistory) "$bin" trace --pid "$redis_pid" --no-fault-history --out "$work/$mode-$n.json" 2>/dev/null & tpid=$! ;;
  esac
  if [[ -n $tpid ]]; then
    for _ in $(seq 500); do
      [[ $(tracer_of) == "$tpid" ]] && break
      sleep 0.01
    done
    sleep 0.3
  fi
  cli BGSAVE >/dev/null
  rps=$(redis-benchmark -p "$port" -t set -n "$requests" -r "$keys" -d 4096 --csv 2>/dev/null |
    awk -F, '/"SET"/ {gsub(/"/, "", $2); print $2}')
  for _ in $(seq 3000); do
    cli INFO persistence | grep -q 'rdb_bgsave_in_progress:0' && break
    sleep 0.05
  done
  if [[ -n $tpid ]]; then
    kill -INT "$tpid"
    wait "$tpid"
    if [[ $mode == tracepoints ]]; then
      jq -r '"  tracepoints: \(.release_tracking.releases) releases, \(.release_tracking.events.records) records, \(.release_tracking.events.lost) lost, \(.release_tracking.stops) stops"' \
        "$work/$mode-$n.json" >&2
    fi
  fi
  [[ $(cli PING) == PONG ]] || { echo "bench-trace-attach.sh: redis stopped answering" >&2; exit 1; }
  echo "$rps"
}

declare -A results
for n in $(seq "$runs"); do
  for mode in $modes; do
    r=$(round "$mode" "$n")
    echo "round $n $mode: $r SET/s" >&2
    results[$mode]+="$r "
  done
  # Rotate the order so no mode always runs first.
  modes="${modes#* } ${modes%% *}"
done

echo "== Redis SET/s during a BGSAVE ($keys keys x 4 KiB, $requests requests, medians of $runs rounds)"
base=$(tr ' ' '\n' <<<"${results[untraced]}" | grep . | median)
printf '%-12s %12s %8s\n' mode SET/s ratio
for mode in untraced tracepoints nohistory syscalls; do
  [[ -n ${results[$mode]:-} ]] || continue
  m=$(tr ' ' '\n' <<<"${results[$mode]}" | grep . | median)
  printf '%-12s %12.0f %8s\n' "$mode" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')"
done
