#!/usr/bin/env bash
# Whole-process speed and peak memory of `cowscope inspect` on a forked pair, side by side with
# the simplest single-threaded C program that reads the same evidence (both smaps, both
# pagemaps) and compares frames: benches/inspect_floor.c. One hyperfine run, same targets.
#
#   scripts/bench-inspect.sh [MiB per process, default 1024] [child writes every K-th page, default 10]
#
# Needs root (PFNs), cc, hyperfine and /usr/bin/time (apt-get install -y hyperfine time).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
every=${2:-10}
for tool in cc hyperfine /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-inspect: $tool is missing" >&2; exit 2; }
done
cargo build --release --quiet --bin cowscope --example hold_pair
work=$(mktemp -d)
holder=""
cleanup() {
  exec 9>&- 2>/dev/null || true
  if [[ -n $holder ]]; then
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -o "$work/inspect_floor" benches/inspect_floor.c
mkfifo "$work/hold"
target/release/examples/hold_pair "$mib" "$every" <"$work/hold" >"$work/pair" &
holder=$!
exec 9>"$work/hold"
for _ in $(seq 600); do [[ -s $work/pair ]] && break; sleep 0.1; done
read -r parent child range <"$work/pair"
echo "pair: parent $parent, child $child, $mib MiB at $range, the child wrote every ${every}th page"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
floor="$work/inspect_floor $parent $child"
ours="target/release/cowscope inspect --pid $parent --child $child"
"$work/inspect_floor" "$parent" "$child"
# hyperfine runs one command's runs after the other's, so a load change on a shared machine
# biases one side: run it twice, in both orders, and read both.
hyperfine -N --warmup 5 --runs 40 --export-markdown "$work/a.md" "$floor" "$ours" "$ours --freeze"
hyperfine -N --warmup 5 --runs 40 --export-markdown "$work/b.md" "$ours --freeze" "$ours" "$floor"
cat "$work/a.md" "$work/b.md"
for cmd in "$floor" "$ours" "$ours --freeze"; do
  # shellcheck disable=SC2086  # the command line is meant to split
  rss=$(/usr/bin/time -f '%M' $cmd 2>&1 >/dev/null | tail -1)
  echo "peak RSS ${rss} kB: $cmd"
done
