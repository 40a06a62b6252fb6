#!/usr/bin/env bash
# Regenerate the README's worked examples of `cowscope trace --stacks` on real programs:
#   results/stacks-c.{txt,svg}            tests/trace_programs/cow_stacks.c, -O2 without frame
#                                          pointers: named writers in child and parent
#   results/stacks-python-list.{txt,svg}  CPython: a child iterating a list of 10^6 ints
#   results/stacks-python-gc.{txt,svg}    CPython: a child's gc.collect() over 300,000 lists
#   results/stacks-redis.{txt,svg}        Redis: BGSAVE under a SET load
# Needs root (PFNs, the write-fault tracepoint), Debian's python3 with python3-dbg (symbols by
# build-id), redis-server, redis-cli and redis-benchmark. Every process it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results
SCRIPT_NAME=$(basename "$0")
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
start_examples
py=/usr/bin/python3

echo "== C (no frame pointers)"
cc -O2 -fomit-frame-pointer -o "$work/cow_stacks" tests/trace_programs/cow_stacks.c
"$cs" trace --stacks -- "$work/cow_stacks" n=2048 a=250 b=150 p=200 2>"$out/stacks-c.txt" >/dev/null
"$cs" trace --stacks --format flamegraph --out "$out/stacks-c.svg" -- "$work/cow_stacks" \
  n=2048 a=250 b=150 p=200 >/dev/null

echo "== Python: list iteration"
cat >"$work/list.py" <<'PY'
import os
ints = list(range(10**9, 10**9 + 10**6))
pid = os.fork()
if pid == 0:
    s = 0
    for x in ints:
        s += x
    os._exit(0)
os.waitpid(pid, 0)
PY
"$cs" trace --stacks -- "$py" "$work/list.py" 2>"$out/stacks-python-list.txt"
"$cs" trace --stacks --format flamegraph --out "$out/stacks-python-list.svg" -- "$py" "$work/list.py"

echo "== Python: gc.collect() in the child"
cat >"$work/gc.py" <<'PY'
import gc, os
objs = [[i] for i in range(300000)]
pid = os.fork()
if pid == 0:
    gc.collect()
    os._exit(0)
os.waitpid(pid, 0)
PY
"$cs" trace --stacks -- "$py" "$work/gc.py" 2>"$out/stacks-python-gc.txt"
"$cs" trace --stacks --format flamegraph --out "$out/stacks-python-gc.svg" -- "$py" "$work/gc.py"

echo "== Redis: BGSAVE under SET load"
for fmt in table flamegraph; do
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [[ $fmt == table ]]; then dest=(--format table --out "$out/stacks-redis.txt")
  else dest=(--format flamegraph --out "$out/stacks-redis.svg"); fi
  "$cs" trace --stacks "${dest[@]}" -- redis-server --port "$port" --bind 127.0.0.1 \
    --dir "$work" --save '' --appendonly no --daemonize no --enable-debug-command local \
    --loglevel warning >/dev/null 2>&1 &
  tpid=$!
  pids+=("$tpid")
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$port" debug populate 100000 key 4096 >/dev/null
  redis-cli -p "$port" config set rdb-key-save-delay 20 >/dev/null
  redis-cli -p "$port" bgsave >/dev/null
  redis-benchmark -p "$port" -t set -n 20000 -r 100000 -d 4096 -q >/dev/null
  until redis-cli -p "$port" info persistence | grep -q 'rdb_bgsave_in_progress:0'; do
    sleep 0.2
  done
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait "$tpid" || true
done
echo "written: $out/stacks-*.txt $out/stacks-*.svg"
