#!/usr/bin/env bash
# What `cowscope trace` costs, against named baselines (BENCHMARKS.md, "trace"). The machine
# this was written on is shared with other builds, so every comparison is made inside one run
# or between runs interleaved round by round, never between two blocks of runs minutes apart.
#
# 1. The parent's pause at each fork, per GiB of its resident memory, against one pagemap read
#    of the same memory by a separate simple reader (tests/trace_programs/pagemap_read.c on
#    examples/hold_memory of the same size, timed by the reader itself, no process start-up),
#    run interleaved with the traced forks, round by round. Goal: <= 2x that floor. Also
#    `parent_read_us` (the pagemap reads inside the pause, timed by cowscope) for the in-pause
#    ratio.
# 3. (--memory) cowscope's own peak RSS while it takes the baseline of a 1 GiB parent:
#    `/usr/bin/time -v cowscope trace --pid` (attached, so the traced program is not
#    cowscope's child and its RSS is not in the figure).
# 2. The slowdown of a program that allocates and frees blocks in a loop (every free a munmap):
#    untraced vs traced with the seccomp filter vs --syscalls, with and without a live
#    (parent, child) pair. The program times its own loop (ns per iteration); configurations
#    run interleaved, medians reported. Two shapes: 1 MiB blocks with every page touched
#    (page faults dominate, as in real programs) and 256 KiB blocks with one page touched (the
#    syscall and its stops dominate: the worst case).
#
# usage: scripts/bench-trace.sh [--runs N] [--sizes "256 1024 2048"] [--iterations N]
#                               [--pause-only] [--memory]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
sizes="256 1024 2048"
iterations=5000
pause_only=0
memory=0
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --pause-only) pause_only=1; shift ;;
    --memory) memory=1; shift ;;
    *) echo "bench-trace.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in jq cc; do
  command -v "$tool" >/dev/null || { echo "bench-trace.sh: needs $tool" >&2; exit 2; }
done

cargo build --release --quiet --bin cowscope --example hold_memory
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/cow_exact" tests/trace_programs/cow_exact.c
cc -O2 -o "$work/alloc_loop" tests/trace_programs/alloc_loop.c
cc -O2 -o "$work/pagemap_read" tests/trace_programs/pagemap_read.c
bin=target/release/cowscope

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "== pause at fork vs one pagemap read (medians of $runs interleaved rounds)"
printf '%6s %8s %10s %10s %8s %10s %8s %12s %8s %12s\n' \
  MiB pages pause_us floor_us pause_x read_us in_x child_hold_us hold_x pause_ms_GiB
for mib in $sizes; do
  pages=$((mib * 256))
  # The floor's target: the same amount of dense 4 KiB anonymous memory, held meanwhile.
  rm -f "$work/hold.out"
  target/release/examples/hold_memory "$mib" </dev/null >"$work/hold.out" &
  hpid=$!
  until [[ -s $work/hold.out ]]; do sleep 0.05; done
  read -r _ range <"$work/hold.out"
  pauses=() reads=() holds=() floors=()
  for _ in $(seq "$runs"); do
    "$bin" trace --out "$work/t.json" -- "$work/cow_exact" "n=$pages" >/dev/null
    pauses+=("$(jq '.forks[0].pause_us' "$work/t.json")")
    reads+=("$(jq '.forks[0].parent_read_us' "$work/t.json")")
    holds+=("$(jq '.forks[0].child_hold_us' "$work/t.json")")
    # Three reads per round (median): one read right after a traced run of the same size
    # varies with what the kernel is still freeing; the pause is one event per fork.
    floors+=("$(for _ in 1 2 3; do "$work/pagemap_read" "$hpid" "$range"; done | awk '{print $2}' | median)")
  done
  kill "$hpid"
  wait "$hpid" 2>/dev/null || true
  pause=$(printf '%s\n' "${pauses[@]}" | median)
  read=$(printf '%s\n' "${reads[@]}" | median)
  hold=$(printf '%s\n' "${holds[@]}" | median)
  floor=$(printf '%s\n' "${floors[@]}" | median)
  printf '%6s %8s %10s %10s %8s %10s %8s %12s %8s %12s\n' "$mib" "$pages" "$pause" "$floor" \
    "$(ratio "$pause" "$floor")" "$read" "$(ratio "$pause" "$read")" "$hold" \
    "$(ratio "$hold" "$floor")" "$(awk -v p="$pause" -v m="$mib" 'BEGIN {printf "%.1f", p / 1000 * 1024 / m}')"
done

if ((memory)); then
  echo
  echo "== cowscope's own peak RSS, trace --pid of a 1 GiB parent (time -v, medians of $runs)"
  rss=()
  for _ in $(seq "$runs"); do
    rm -f "$work/fifo" "$work/c.out"
    mkfifo "$work/fifo"
    "$work/cow_exact" n=262144 wait=1 <"$work/fifo" >"$work/c.out" &
    cpid=$!
    exec 3>"$work/fifo"
    until [[ -s $work/c.out ]]; do sleep 0.05; done
    /usr/bin/time -v "$bin" trace --pid "$cpid" --out "$work/m.json" 2>"$work/time.txt" &
    tpid=$!
    until grep -q "TracerPid:[[:space:]]*[1-9]" "/proc/$cpid/status" 2>/dev/null; do sleep 0.05; done
    echo g >&3
    exec 3>&-
    wait "$tpid" || true
    wait "$cpid" 2>/dev/null || true
    rss+=("$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")")
  done
  echo "max RSS kB: $(printf '%s\n' "${rss[@]}" | median) (runs: ${rss[*]}); baseline pages: $(jq '.forks[0].baseline.pages' "$work/m.json")"
fi
((pause_only)) && exit 0

# One configuration: prints the program's ns per iteration.
loop_once() {
  local how=$1 shift_args
  shift
  shift_args=("$@")
  case "$how" in
    untraced) "$work/alloc_loop" "${shift_args[@]}" 2>&1 >/dev/null ;;
    seccomp) "$bin" trace --out "$work/l.json" -- "$work/alloc_loop" "${shift_args[@]}" 2>&1 >/dev/null ;;
    syscalls) "$bin" trace --syscalls --out "$work/l.json" -- "$work/alloc_loop" "${shift_args[@]}" 2>&1 >/dev/null ;;
  esac | awk '/^ns_per_iteration/ {print $2}'
}

for shape in "1024 256" "256 1"; do
  read -r kib touch <<<"$shape"
  echo
  echo "== alloc/free loop: $iterations x malloc($kib KiB), touch $touch page(s), free (a munmap each); ns per iteration, medians of $runs interleaved rounds"
  printf '%-10s %12s %12s %8s %12s %12s %8s\n' how no_pair vs_untraced x pair_live vs_untraced x
  declare -A got=()
  for _ in $(seq "$runs"); do
    for how in untraced seccomp syscalls; do
      got[$how,0]+="$(loop_once "$how" "$iterations" "$kib" "$touch") "
      got[$how,1]+="$(loop_once "$how" "$iterations" "$kib" "$touch" fork) "
    done
  done
  base0=$(tr ' ' '\n' <<<"${got[untraced,0]}" | grep . | median)
  base1=$(tr ' ' '\n' <<<"${got[untraced,1]}" | grep . | median)
  for how in untraced seccomp syscalls; do
    m0=$(tr ' ' '\n' <<<"${got[$how,0]}" | grep . | median)
    m1=$(tr ' ' '\n' <<<"${got[$how,1]}" | grep . | median)
    printf '%-10s %12s %12s %8s %12s %12s %8s\n' "$how" "$m0" "$((${m0%.*} - ${base0%.*}))" \
      "$(ratio "$m0" "$base0")" "$m1" "$((${m1%.*} - ${base1%.*}))" "$(ratio "$m1" "$base1")"
  done
  unset got
done
jq -r '"last --syscalls run: \(.release_tracking.stops) stops, \(.release_tracking.releases) releases recorded"' "$work/l.json"
