#!/usr/bin/env bash
# Regenerate the README's worked examples of `cowscope inspect` on real programs:
#   results/inspect-python.{txt,svg}   CPython: a child iterating a list of 10^6 ints
#   results/inspect-redis.{txt,svg}    Redis 7: BGSAVE under a write load
#   results/inspect-redis-timeline.svg the same BGSAVE watched every 500 ms (numbers on stdout)
# Needs root (PFNs), python3, redis-server and redis-cli. Every process it starts is stopped by
# pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results
SCRIPT_NAME=$(basename "$0")
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
start_examples
py=/usr/bin/python3

echo "== Python"
mkfifo "$work/py-hold"
"$py" tests/fixtures/inspect/python_refcounts.py --mode iterate <"$work/py-hold" >"$work/py.json" &
pids+=($!)
exec 8>"$work/py-hold"
for _ in $(seq 300); do [[ -s $work/py.json ]] && break; sleep 0.1; done
ppid=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["parent"])' "$work/py.json")
"$cs" inspect --pid "$ppid" --freeze --format table | tee "$out/inspect-python.txt"
"$cs" inspect --pid "$ppid" --freeze --format svg --out "$out/inspect-python.svg"
exec 8>&-

echo "== Redis"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
  --daemonize no --enable-debug-command local --loglevel warning >/dev/null 2>&1 &
rpid=$!
pids+=("$rpid")
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$port" debug populate 200000 key 100 >/dev/null
redis-cli -p "$port" config set rdb-key-save-delay 100 >/dev/null
# The write load: SETs of random existing keys, streamed through redis-cli --pipe.
"$py" - "$work" <<'PY'
import random, sys
r = random.Random(1)
for batch in range(12):
    out = []
    for _ in range(2000):
        k = f"key:{r.randrange(200000)}"
        v = f"{r.getrandbits(64):0100d}"
        out.append(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n")
    open(f"{sys.argv[1]}/load{batch}.resp", "w").write("".join(out))
PY
redis-cli -p "$port" bgsave
"$cs" inspect --pid "$rpid" --interval 500ms --duration 10s --format svg \
  --out "$out/inspect-redis-timeline.svg" &
watcher=$!
# The same samples as numbers (a second watcher: reading disturbs nothing).
"$cs" inspect --pid "$rpid" --interval 500ms --duration 10s --format json --out "$work/watch.json" &
numbers=$!
sleep 1
for batch in $(seq 0 11); do
  redis-cli -p "$port" --pipe <"$work/load$batch.resp" >/dev/null
  sleep 0.5
done
wait "$watcher" "$numbers"
"$py" - "$work/watch.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ps = d["system"]["page_size"]
for s in d["samples"]:
    for p in s["pairs"]:
        print(f"t={s['t_ms'] / 1000:5.1f} s  diverged {p['totals']['diverged'] * ps / 2**20:5.1f} MiB")
PY
redis-cli -p "$port" info persistence | grep -E 'current_cow_size|rdb_bgsave_in_progress' | tr -d '\r'
"$cs" inspect --pid "$rpid" --freeze --format table | tee "$out/inspect-redis.txt"
"$cs" inspect --pid "$rpid" --freeze --format svg --out "$out/inspect-redis.svg"
