#!/usr/bin/env bash
# Collect cowscope's results on the running kernel into <out>/<uname -r>/:
#   fork-report.json, baseline-09a.json, baseline-09b.json, baseline-09b-overflow.json,
#   experiments.json (when this build has experiments), inspect.json, trace.json,
#   trace-stacks.json and trace-attach.json (live programs with known writes, checked by
#   scripts/check-live.sh),
#   system.json.
# Every file is written atomically (cowscope writes a temp file and renames it; system.json is
# written the same way here), so an interrupted run never leaves a half-written result.
#
# Exit: 0 every collection wrote a valid document (a fork-report whose verdict failed still
# counts: the report is written and the failure is shown in the progress output); 1 a collection
# failed (error exit, crash or invalid JSON); 2 bad usage or a missing tool that could not be
# installed.
set -euo pipefail

SCRIPT_NAME=collect
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

usage() {
  cat <<EOF
usage: scripts/collect.sh [--out DIR] [--bin PATH] [--allow-sysfs]

  --out DIR      results root; files go to DIR/\$(uname -r)/ (default: $ROOT/results)
  --bin PATH     use this cowscope binary instead of building one with 'cargo build --release'
                 (also: COWSCOPE_BIN=PATH)
  --allow-sysfs  let 'fork-report' and 'experiment --all' change (and restore) THP, hugetlb
                 and swap settings (root)
EOF
}

OUT=$ROOT/results
BIN=${COWSCOPE_BIN:-}
ALLOW_SYSFS=0
while (($#)); do
  case $1 in
    -o | --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    --bin) [[ $# -ge 2 ]] || die "--bin needs a path"; BIN=$2; shift 2 ;;
    --allow-sysfs) ALLOW_SYSFS=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

ensure_cmd jq jq

if [[ -z $BIN ]]; then
  progress "building cowscope (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet)
  BIN=$ROOT/target/release/cowscope
fi
[[ -x $BIN ]] || die "cowscope binary '$BIN' is not an executable file"

RELEASE=$(uname -r)
DEST=$OUT/$RELEASE
mkdir -p "$DEST" || die "cannot create the output directory '$DEST'"
progress "collecting on kernel $RELEASE into $DEST with $BIN"

FAILED=()
WRITTEN=()
# run_one FILE ARGS...: run cowscope ARGS --out DEST/FILE (or with DEST/FILE in place of an
# argument `{out}`), report its exit, check the JSON.
run_one() {
  local file=$1
  shift
  local start rc=0 secs args=() a has_out=0
  for a in "$@"; do
    if [[ $a == "{out}" ]]; then args+=("$DEST/$file"); has_out=1; else args+=("$a"); fi
  done
  ((has_out)) || args+=(--out "$DEST/$file")
  start=$(date +%s.%N)
  # A traced program's own stdout goes to stderr with the progress lines.
  "$BIN" "${args[@]}" >&2 || rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  case $rc in
    0) progress "$file: ok (${secs} s)" ;;
    1) progress "$file: written, but a verdict FAILED (exit 1, ${secs} s); see the file" ;;
    3) progress "$file: written, but something could not be proven here (exit 3: privilege or kernel feature missing, ${secs} s); see the file" ;;
    *)
      progress "$file: cowscope $* failed (exit $rc, ${secs} s); no new file written"
      FAILED+=("$file")
      return 0
      ;;
  esac
  if envelope_ok "$DEST/$file"; then
    WRITTEN+=("$DEST/$file")
  else
    progress "$file: not valid JSON with schema_version/tool/system"
    FAILED+=("$file")
  fi
}

progress "fork-report"
if ((ALLOW_SYSFS)); then
  run_one fork-report.json fork-report --allow-sysfs
else
  run_one fork-report.json fork-report
fi
for case in "${COWSCOPE_BASELINES[@]}"; do
  progress "baseline $case"
  run_one "baseline-$case.json" baseline "$case"
done
if [[ -n $("$BIN" experiment --list 2>/dev/null || true) ]]; then
  progress "experiment --all"
  if ((ALLOW_SYSFS)); then
    run_one experiments.json experiment --all --allow-sysfs
  else
    run_one experiments.json experiment --all
  fi
else
  progress "experiments: this build lists none; skipped"
fi

# The live programs: inspect of a held family with known writes, trace of a program with known
# copies and releases, and the same trace with --stacks; the same programs and arguments as the
# kernel-matrix guests (src/cmd/guest/mod.rs live_collections), checked below by
# scripts/check-live.sh.
SUBJECTS=$(mktemp -d)
HOLD_PID=""
cleanup() {
  if [[ -n $HOLD_PID ]]; then kill -KILL -- "-$HOLD_PID" 2>/dev/null || true; fi
  rm -rf "$SUBJECTS"
}
trap cleanup EXIT
if ! command -v cc >/dev/null 2>&1; then
  progress "live programs: no C compiler (install build-essential); inspect.json and trace*.json not collected"
  FAILED+=(inspect.json trace.json trace-stacks.json)
else
  # Statically linked, as in the guests: the whole-process figures (libc's own pages) then
  # compare across kernels too.
  cc -static -O2 -o "$SUBJECTS/cow_hold" "$ROOT/scripts/matrix/cow_hold.c"
  cc -static -O2 -pthread -o "$SUBJECTS/cow_exact" "$ROOT/tests/trace_programs/cow_exact.c"
  progress "inspect (a held family: scripts/matrix/cow_hold.c)"
  setsid "$SUBJECTS/cow_hold" >"$SUBJECTS/hold.out" &
  HOLD_PID=$!
  for _ in $(seq 200); do
    grep -q '^ready ' "$SUBJECTS/hold.out" && break
    sleep 0.05
  done
  run_one inspect.json inspect --pid "$HOLD_PID" --range 0x300000001000-0x300000052000
  kill -KILL -- "-$HOLD_PID" 2>/dev/null || true
  wait "$HOLD_PID" 2>/dev/null || true
  HOLD_PID=""
  exact=("$SUBJECTS/cow_exact" n=64 a=3 b=5 c=7 d=4 e=2 f=6 z=8 at=0x200000000000)
  progress "trace (known copies and releases: tests/trace_programs/cow_exact.c)"
  run_one trace.json trace --out "{out}" -- "${exact[@]}"
  progress "trace --stacks"
  run_one trace-stacks.json trace --stacks --out "{out}" -- "${exact[@]}"
  progress "trace --pid (attached; the program sleeps 4 s before its fork)"
  setsid "${exact[@]}" delay=4000 >"$SUBJECTS/attach.out" &
  HOLD_PID=$!
  for _ in $(seq 200); do
    grep -q '^arena ' "$SUBJECTS/attach.out" && break
    sleep 0.05
  done
  run_one trace-attach.json trace --pid "$HOLD_PID" --out "{out}"
  wait "$HOLD_PID" 2>/dev/null || true
  HOLD_PID=""
fi

# system.json: the envelope (taken from a document this run just wrote, so `system` is exactly
# what cowscope detected) plus the facts below. src/cmd/guest/facts.rs writes the same keys.
progress "system.json"
if ((${#WRITTEN[@]} == 0)); then
  progress "system.json: no document with an envelope to take 'system' from; not written"
  FAILED+=(system.json)
else
  THP=/sys/kernel/mm/transparent_hugepage
  sizes='[]'
  shopt -s nullglob
  for d in $(printf '%s\n' "$THP"/hugepages-*kB | sort -V); do
    # Sizes without an 'enabled' switch (e.g. shmem-only ones) are not anonymous THP sizes.
    [[ -r $d/enabled ]] || continue
    kb=${d##*/hugepages-}
    kb=${kb%kB}
    sizes=$(jq -c --argjson kb "$kb" --arg v "$(selected "$d/enabled")" \
      '. + [{size_kb: $kb, enabled: $v}]' <<<"$sizes")
  done
  shopt -u nullglob
  pmd_kb=null
  if [[ -r $THP/hpage_pmd_size ]]; then pmd_kb=$(($(cat "$THP/hpage_pmd_size") / 1024)); fi
  # Soft-dirty: from the kernel config when it can be read; otherwise unknown (null). The guest
  # probes it directly (clear_refs 4, write, pagemap bit 55).
  soft_dirty=null
  config=""
  if [[ -r /boot/config-$RELEASE ]]; then
    config=$(cat "/boot/config-$RELEASE")
  elif [[ -r /proc/config.gz ]] && command -v zcat >/dev/null 2>&1; then
    config=$(zcat /proc/config.gz)
  fi
  if [[ -n $config ]]; then
    if grep -q '^CONFIG_MEM_SOFT_DIRTY=y' <<<"$config"; then soft_dirty=true; else soft_dirty=false; fi
  fi
  cpu_model=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
  cpu_count=$(grep -c '^processor' /proc/cpuinfo || true)
  mem_total=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  cap_eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
  ksm=false
  [[ -e /sys/kernel/mm/ksm/run ]] && ksm=true
  tmp=$(mktemp "$DEST/.system.json.XXXXXX")
  jq --arg sysname "$(uname -s)" --arg release "$RELEASE" --arg version "$(uname -v)" \
    --arg machine "$(uname -m)" \
    --arg thp_enabled "$(selected "$THP/enabled")" --arg thp_defrag "$(selected "$THP/defrag")" \
    --arg thp_shmem "$(selected "$THP/shmem_enabled")" --argjson pmd_kb "$pmd_kb" \
    --argjson sizes "$sizes" --arg cpu_model "$cpu_model" --argjson cpu_count "${cpu_count:-0}" \
    --argjson mem_total "${mem_total:-null}" --argjson uid "$(id -ru)" --argjson euid "$(id -u)" \
    --arg cap_eff "$cap_eff" --argjson soft_dirty "$soft_dirty" --argjson ksm "$ksm" \
    'def orNull: if . == "" then null else . end;
     {schema_version, tool, system,
      collected_by: "collect.sh",
      uname: {sysname: $sysname, release: $release, version: $version, machine: $machine},
      thp: {enabled: ($thp_enabled | orNull), defrag: ($thp_defrag | orNull),
            shmem_enabled: ($thp_shmem | orNull), hpage_pmd_size_kb: $pmd_kb, sizes: $sizes},
      cpu: {model: ($cpu_model | orNull), count: $cpu_count},
      memory: {mem_total_kb: $mem_total},
      privileges: {uid: $uid, euid: $euid, cap_eff: ($cap_eff | orNull)},
      soft_dirty: $soft_dirty,
      ksm: $ksm}' "${WRITTEN[0]}" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$DEST/system.json"
  progress "system.json: ok"
fi

live=0
"$ROOT/scripts/check-live.sh" "$DEST" || live=$?
case $live in
  0) ;;
  3) progress "live documents: some figure could not be proven here (see above)" ;;
  *) FAILED+=("live documents (scripts/check-live.sh)") ;;
esac

if ((${#FAILED[@]})); then
  progress "done with failures: ${FAILED[*]}"
  exit 1
fi
progress "done: $DEST"
