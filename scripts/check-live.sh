#!/usr/bin/env bash
# Check the live-program documents of results directories (inspect.json, trace.json,
# trace-stacks.json, trace-attach.json, written by scripts/kernel-matrix.sh in the guests and scripts/collect.sh on
# the host) against the known writes of the programs they observed. Every expected figure below
# is derived from the programs' own constants (scripts/matrix/cow_hold.c,
# tests/trace_programs/cow_exact.c and its arguments in src/cmd/guest/mod.rs), never from a
# document.
#
# usage: scripts/check-live.sh DIR...   (each DIR a results/<release>/ directory)
#
# Exit: 0 every figure matches; 1 a figure differs from the known writes, or a document is
# missing or invalid; 3 nothing differs but something could not be proven here (PFNs hidden, or
# perf events missing for trace --stacks: the document says why), never a pass; 2 bad usage.
set -euo pipefail

SCRIPT_NAME=check-live
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

(($#)) || die "give one or more results directories (results/<release>/)"
ensure_cmd jq jq

# cow_hold: a 64-page arena written before the fork; child i writes W[i] pages; the parent then
# writes 4 pages no child wrote; a 16-page zero region whose page 0 is written and pages 1..15
# only read.
HOLD_W=(8 4 2)
HOLD_PARENT=4
HOLD_ARENA=64
HOLD_ZERO=16
# cow_exact n=64 a=3 b=5 c=7 d=4 e=2 f=6 z=8 at=0x200000000000: the arena starts one page above.
EXACT_ROW=0x200000001000
declare -A EXACT=(
  [copied_by_child]=3 [copied_by_parent]=5 [released_by_child]=$((7 + 2))
  [released_by_parent]=$((4 + 6)) [zero]=8 [shared]=$((64 - 3 - 5 - 7 - 4 - 2 - 6 - 8))
)

FAILED=0
UNPROVEN=0
fail() { progress "FAIL $*"; FAILED=1; }
unproven() { progress "UNPROVEN $*"; UNPROVEN=1; }
ok() { progress "ok $*"; }

check_inspect() {
  local f=$1/inspect.json want got
  if [[ ! -f $f ]] || ! json_valid "$f"; then fail "$f: missing or not JSON"; return; fi
  if [[ $(jq -r '.pfn_visible' "$f") != true ]]; then
    unproven "$f: PFNs hidden, the exact classes cannot be proven"
    return
  fi
  # Per pair, sorted by diverged: diverged = W + parent's writes; shared = the rest of the arena
  # plus the zero region's written page; zero = 15; nothing else.
  want=$(for w in "${HOLD_W[@]}"; do
    printf '%s\n' "$((HOLD_ARENA - w - HOLD_PARENT + 1)) $((w + HOLD_PARENT)) 0 0 $((HOLD_ZERO - 1)) 0"
  done | sort -n -k2 | paste -sd ';')
  got=$(jq -r '[.pairs[].totals | [.shared, .diverged, .only_parent, .only_child, .zero, .unproven]
               | map(tostring) | join(" ")] | sort_by(split(" ")[1] | tonumber) | join(";")' "$f")
  if [[ $got == "$want" ]]; then ok "$f: pairs $got"; else fail "$f: pairs '$got', expected '$want'"; fi
  # Pool: of the parent's 65 frames, 4 mapped by no child, sum(W) by two, the rest by all three;
  # kpagecount adds the parent's own mapping.
  local two=0 w
  for w in "${HOLD_W[@]}"; do two=$((two + w)); done
  local frames=$((HOLD_ARENA + 1))
  want="$frames {\"0\":$HOLD_PARENT,\"1\":0,\"2\":$two,\"3\":$((frames - HOLD_PARENT - two))}"
  got=$(jq -r '.pools[0] | "\(.parent_pages) \(.sharing_histogram | tojson)"' "$f")
  if [[ $got == "$want" ]]; then ok "$f: pool $got"; else fail "$f: pool '$got', expected '$want'"; fi
  want="{\"1\":$HOLD_PARENT,\"3\":$two,\"4\":$((frames - HOLD_PARENT - two))}"
  got=$(jq -c '.pools[0].kpagecount_histogram' "$f")
  if [[ $got == "$want" ]]; then ok "$f: kpagecount $got"; else fail "$f: kpagecount '$got', expected '$want'"; fi
}

# check_trace FILE [attached]: the arena row of the one fork, every class (and the program's
# exit status 0, unless attached).
check_trace() {
  local f=$1 row k got bad=0
  if [[ ! -f $f ]] || ! json_valid "$f"; then fail "$f: missing or not JSON"; return; fi
  if [[ $(jq -r '.attribution.pfn_visible' "$f") != true ]]; then
    unproven "$f: PFNs hidden, who copied cannot be proven"
    return
  fi
  if [[ ${2:-} != attached ]]; then
    [[ $(jq -r '.exit.code' "$f") == 0 ]] || fail "$f: the program did not exit 0: $(jq -c .exit "$f")"
  fi
  [[ $(jq -r '[.forks[] | select(.kind == "fork")] | length' "$f") == 1 ]] ||
    fail "$f: expected exactly one fork"
  row=$(jq -c --arg s "$EXACT_ROW" '[.forks[0].final.vmas[] | select(.start == $s)][0]' "$f")
  [[ $row != null ]] || { fail "$f: no row at $EXACT_ROW"; return; }
  for k in shared zero copied_by_child copied_by_parent copied_at_fork copied_then_released_by_child \
    copied_then_released_by_parent released_by_child released_by_parent released_by_both moved \
    diverged only_parent only_child absent unproven; do
    got=$(jq -r --arg k "$k" '.[$k]' <<<"$row")
    if [[ $got != "${EXACT[$k]:-0}" ]]; then
      fail "$f: $k $got, expected ${EXACT[$k]:-0}"
      bad=1
    fi
  done
  ((bad)) || ok "$f: arena row $(jq -c 'with_entries(select(.value | type == "number" and . > 0))' <<<"$row")"
}

# check_stacks FILE: the same row, and either recorded stacks or recorded=false with the
# reason (unproven, never a pass). cow_exact writes its arena pages with memset() called from
# run(): the stacks of exactly those copies must say so, a (memset, run) stack per side with
# that side's arena copies (the other copies of the whole process, e.g. its stack page touched
# in fork(), have other stacks).
check_stacks() {
  local f=$1
  check_trace "$f"
  if [[ ! -f $f ]] || ! json_valid "$f"; then return 0; fi
  if [[ $(jq -r '.stacks.recorded' "$f") != true ]]; then
    unproven "$f: stacks skipped: $(jq -r '.stacks.reason // "no reason given"' "$f")"
    return
  fi
  local got want
  got=$(jq -r '[.forks[0].stacks[]? | select((.frames[0].function // "" | test("memset"))
                                             and .frames[1].function == "run")
               | "\(.who):\(.class):\(.pages)"] | sort | join(" ")' "$f")
  want="child:copied_by_child:${EXACT[copied_by_child]} parent:copied_by_parent:${EXACT[copied_by_parent]}"
  if [[ $got == "$want" ]]; then
    ok "$f: memset<-run stacks $got"
  else
    fail "$f: memset<-run stacks '$got', expected '$want'"
  fi
}

# check_attach FILE: the same row, attached with --pid: releases come from the syscall
# tracepoints; without them (method none, a note says why) the releases cannot be proven.
check_attach() {
  local f=$1 method
  if [[ ! -f $f ]] || ! json_valid "$f"; then fail "$f: missing or not JSON"; return; fi
  method=$(jq -r '.release_tracking.method' "$f")
  if [[ $method != tracepoints ]]; then
    unproven "$f: releases not tracked (method $method): $(jq -c '.notes' "$f")"
    return
  fi
  check_trace "$f" attached
}

for dir in "$@"; do
  [[ -d $dir ]] || die "'$dir' is not a directory"
  check_inspect "$dir"
  check_trace "$dir/trace.json"
  check_stacks "$dir/trace-stacks.json"
  check_attach "$dir/trace-attach.json"
done
((FAILED)) && exit 1
((UNPROVEN)) && exit 3
exit 0
