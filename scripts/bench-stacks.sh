#!/usr/bin/env bash
# What `cowscope trace --stacks` costs a traced program, against the named baseline (issue 15:
# `perf record -e page-faults -c 1 --call-graph dwarf` of the same program), and what it costs
# in memory (BENCHMARKS.md, "trace --stacks").
#
# 1. Wall time of tests/trace_programs/cow_stacks.c (built -O2 -fomit-frame-pointer: DWARF
#    unwinding) populating N pages, then forking; the child copies A+B pages, the parent P,
#    and the child first-touches T pages of new memory. Configurations run interleaved round by
#    round (the machine is shared: never two blocks of runs minutes apart): untraced, under
#    `cowscope trace --stacks`, under `cowscope trace` (no stacks), and under perf record.
#    Medians and ratios against perf record.
# 2. cowscope's own peak RSS (/usr/bin/time) with the same copies and 0 vs T first touches:
#    memory follows the pages copied, not the faults seen.
#
# usage: scripts/bench-stacks.sh [--runs N] [--pages N] [--copies N] [--touches N]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
pages=65536
copies=20000
touches=100000
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --pages) pages=$2; shift 2 ;;
    --copies) copies=$2; shift 2 ;;
    --touches) touches=$2; shift 2 ;;
    *) echo "bench-stacks.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in cc perf /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-stacks.sh: needs $tool" >&2; exit 2; }
done
progress() { if [[ -t 2 ]]; then printf '\r%s' "$*" >&2; fi; }

cargo build --release --quiet --bin cowscope
cow=target/release/cowscope
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -fomit-frame-pointer -o "$work/cow_stacks" tests/trace_programs/cow_stacks.c
half=$((copies / 2))
args=("n=$pages" "a=$half" "b=$half" "p=$half" "t=$touches")

# Milliseconds of one command's wall time.
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: >"$work/plain"; : >"$work/stacks"; : >"$work/trace"; : >"$work/perf"
for ((i = 1; i <= runs; i++)); do
  progress "round $i/$runs"
  ms "$work/cow_stacks" "${args[@]}" >>"$work/plain"
  ms "$cow" trace --stacks --out "$work/t.json" -- "$work/cow_stacks" "${args[@]}" >>"$work/stacks"
  ms "$cow" trace --out "$work/t0.json" -- "$work/cow_stacks" "${args[@]}" >>"$work/trace"
  ms perf record -q -e page-faults -c 1 --call-graph dwarf -o "$work/perf.data" -- \
    "$work/cow_stacks" "${args[@]}" >>"$work/perf"
done
progress ""
p=$(median <"$work/plain"); s=$(median <"$work/stacks"); t=$(median <"$work/trace")
r=$(median <"$work/perf")
echo "workload: n=$pages pages populated, $((3 * half)) copied after the fork, $touches first touches; $runs interleaved rounds, medians"
printf '%-34s %8s ms\n' "untraced" "$p" "cowscope trace" "$t" "cowscope trace --stacks" "$s" \
  "perf record -e page-faults -c1 -g dwarf" "$r"
awk -v s="$s" -v r="$r" -v p="$p" 'BEGIN {
  printf "trace --stacks / perf record: %.2fx   trace --stacks / untraced: %.2fx\n", s / r, s / p }'
jq -r '"stack samples \(.stacks.samples), outside \(.stacks.outside), stacks \(.stacks.distinct_stacks), lost \([.forks[].stack_samples.lost] | add)"' "$work/t.json" 2>/dev/null || true

echo
echo "cowscope's own peak RSS (VmHWM; same copies; first touches 0 vs $touches):"
# Not /usr/bin/time: its figure includes the traced program (a waited-for descendant).
for t in 0 "$touches"; do
  "$cow" trace --stacks --out "$work/m.json" -- "$work/cow_stacks" \
    "n=$pages" "a=$half" "b=$half" "p=$half" "t=$t" >/dev/null 2>&1 &
  cpid=$!
  hwm=0
  while kill -0 "$cpid" 2>/dev/null; do
    v=$(awk '/^VmHWM/ {print $2}' "/proc/$cpid/status" 2>/dev/null || true)
    [[ -n $v ]] && hwm=$v
    sleep 0.02
  done
  wait "$cpid" || true
  samples=$(jq '.stacks.samples' "$work/m.json" 2>/dev/null || echo "?")
  printf '  first touches %-8s fault samples %-8s peak RSS %s KiB\n' "$t" "$samples" "$hwm"
done
