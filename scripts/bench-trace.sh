#!/usr/bin/env bash
# What `cowscope trace` costs, measured against named baselines (BENCHMARKS.md, "trace"):
#
# 1. The parent's pause at each fork, per GiB of its resident memory, against one pagemap
#    read of the same memory (examples/pagemap_floor on examples/hold_memory): the goal is at
#    most 2x. The pause and the child's hold come from cowscope's own report (pause_us,
#    child_hold_us), median of --runs traced forks per size.
# 2. The slowdown of a program that allocates and frees 1 MiB blocks in a loop (every free is
#    a munmap), untraced vs traced with the seccomp filter vs --syscalls, with and without a
#    live (parent, child) pair (hyperfine, side by side in one run).
#
# usage: scripts/bench-trace.sh [--runs N] [--sizes "256 1024 2048"] [--iterations N]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
sizes="256 1024 2048"
iterations=5000
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    *) echo "bench-trace.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in hyperfine jq cc; do
  command -v "$tool" >/dev/null || { echo "bench-trace.sh: needs $tool" >&2; exit 2; }
done

cargo build --release --quiet --bin cowscope --example pagemap_floor --example hold_memory
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/cow_exact" tests/trace_programs/cow_exact.c
cc -O2 -o "$work/alloc_loop" tests/trace_programs/alloc_loop.c
bin=target/release/cowscope

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "== pause at fork vs one pagemap read (median of $runs)"
printf '%8s %10s %14s %16s %18s %8s %8s\n' MiB pages pause_us child_hold_us pagemap_read_us pause_x hold_x
for mib in $sizes; do
  pages=$((mib * 256))
  pauses=() holds=()
  for _ in $(seq "$runs"); do
    "$bin" trace --out "$work/t.json" -- "$work/cow_exact" "n=$pages" >/dev/null
    pauses+=("$(jq '.forks[0].pause_us' "$work/t.json")")
    holds+=("$(jq '.forks[0].child_hold_us' "$work/t.json")")
  done
  pause=$(printf '%s\n' "${pauses[@]}" | median)
  hold=$(printf '%s\n' "${holds[@]}" | median)
  # One pagemap read of the same populated memory, by the minimal reader.
  # hold_memory prints "PID START-END" and holds the memory until killed.
  rm -f "$work/hold.out"
  target/release/examples/hold_memory "$mib" </dev/null >"$work/hold.out" &
  hpid=$!
  until [[ -s $work/hold.out ]]; do sleep 0.05; done
  read -r _ range <"$work/hold.out"
  hyperfine -N -w 3 -r "$((runs * 3))" --export-json "$work/h.json" \
    "target/release/examples/pagemap_floor $hpid $range" >/dev/null 2>&1
  kill "$hpid"
  wait "$hpid" 2>/dev/null || true
  read_us=$(jq '.results[0].median * 1e6 | floor' "$work/h.json")
  printf '%8s %10s %14s %16s %18s %8.2f %8.2f\n' "$mib" "$pages" "$pause" "$hold" "$read_us" \
    "$(echo "$pause / $read_us" | bc -l)" "$(echo "$hold / $read_us" | bc -l)"
done

echo
echo "== alloc/free loop: $iterations x malloc(1 MiB) + touch + free (munmap each)"
hyperfine -N -w 2 -r "$runs" \
  -n untraced "$work/alloc_loop $iterations 1024" \
  -n "trace (seccomp)" "$bin trace --out $work/a.json -- $work/alloc_loop $iterations 1024" \
  -n "trace --syscalls" "$bin trace --syscalls --out $work/b.json -- $work/alloc_loop $iterations 1024" \
  -n "untraced, pair live" "$work/alloc_loop $iterations 1024 fork" \
  -n "trace (seccomp), pair live" "$bin trace --out $work/c.json -- $work/alloc_loop $iterations 1024 fork" \
  -n "trace --syscalls, pair live" "$bin trace --syscalls --out $work/d.json -- $work/alloc_loop $iterations 1024 fork"
for f in a b c d; do
  jq -r --arg f "$f" '"\($f): \(.release_tracking.method) stops \(.release_tracking.stops), releases recorded \(.release_tracking.releases)"' "$work/$f.json"
done
