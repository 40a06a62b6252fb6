# shellcheck shell=bash
# Helpers shared by scripts/collect.sh and scripts/kernel-matrix.sh (sourced, not run).

# The files a collection produces, in order. src/cmd/guest/mod.rs uses the same names.
# shellcheck disable=SC2034  # used by the scripts that source this file
COWSCOPE_BASELINES=(09a 09b 09b-overflow)

# One progress line on stderr, with a timestamp, prefixed by the script's name.
progress() {
  printf '[%s %s] %s\n' "${SCRIPT_NAME:-cowscope}" "$(date +%H:%M:%S)" "$*" >&2
}

# A usage or environment error: one sentence, exit 2.
die() {
  printf '%s: %s\n' "${SCRIPT_NAME:-cowscope}" "$*" >&2
  exit 2
}

APT_UPDATED=0
# ensure_cmd COMMAND PACKAGE: install PACKAGE with apt when COMMAND is missing, and say so.
ensure_cmd() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "'$cmd' is missing; install the Debian package '$pkg' (needs root)"
  fi
  command -v apt-get >/dev/null 2>&1 || die "'$cmd' is missing and apt-get is not available to install '$pkg'"
  progress "'$cmd' is missing: installing the Debian package '$pkg' with apt-get"
  if ((APT_UPDATED == 0)); then
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || die "installing '$pkg' did not provide '$cmd'"
}

# json_valid FILE: true when FILE holds exactly one JSON value.
json_valid() {
  jq -e . "$1" >/dev/null 2>&1
}

# envelope_ok FILE: true when FILE is JSON with the cowscope envelope (schema_version, tool, system).
envelope_ok() {
  jq -e 'type == "object" and has("schema_version") and has("tool") and has("system")' "$1" >/dev/null 2>&1
}

# selected FILE: the bracketed word of a sysfs choice file ("always [madvise] never" -> madvise).
selected() {
  [[ -r $1 ]] || return 0
  sed -n 's/.*\[\([^]]*\)\].*/\1/p' "$1"
}

# For the scripts that regenerate worked examples: build the release binary into `cs`, make a
# temporary `work` directory, and stop (by pid) every process appended to `pids` on exit.
start_examples() {
  cargo build --release --quiet --bin cowscope
  # shellcheck disable=SC2034  # used by the scripts that source this file
  cs=target/release/cowscope
  work=$(mktemp -d)
  pids=()
  trap stop_examples EXIT
}

stop_examples() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
