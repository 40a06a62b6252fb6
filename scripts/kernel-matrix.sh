#!/usr/bin/env bash
# Boot other kernels under qemu with a statically linked cowscope as /init, and collect the same
# JSON documents scripts/collect.sh collects on the host, into <out>/<guest kernel release>/.
#
# Kernels come from Debian's packages (linux-image-*-cloud-amd64), fetched with `apt-get download`
# into a cache directory and unpacked with `dpkg -x`: nothing is installed into /boot. The guest
# (src/cmd/guest/) mounts /proc, /sys and /tmp, runs each collection in a child process, prints each
# document between ==COWSCOPE-BEGIN <file>== / ==COWSCOPE-END <file>== lines on the serial console,
# prints ==COWSCOPE-DONE== and powers off. qemu exits 0 even after a kernel panic, so a boot only
# counts when the DONE marker is seen; `timeout` bounds every boot.
#
# The guests also run `inspect` and `trace` against small static programs in /bin of the
# initramfs (scripts/matrix/cow_hold.c, tests/trace_programs/cow_exact.c), and
# scripts/check-live.sh checks inspect.json, trace.json and trace-stacks.json against their
# known writes.
#
# Exit: 0 every kernel produced a valid fork-report.json, the DONE marker and live documents
# matching the known writes; 1 some kernel did not; 3 nothing failed but a live figure could not
# be proven on some kernel (e.g. no perf events for --stacks: the document says why); 2 bad
# usage or a missing tool that could not be installed.
set -euo pipefail

SCRIPT_NAME=kernel-matrix
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

usage() {
  cat <<EOF
usage: scripts/kernel-matrix.sh [--kernel SPEC]... [--out DIR] [--timeout SECS] [options]

  --kernel SPEC   a kernel to boot (repeatable; default: 6.1 and 6.12). SPEC is
                    a series such as 6.1 or 6.12: the newest linux-image-<series>*-cloud-amd64,
                    a Debian package name (linux-image-...), or
                    a path to a vmlinuz-<release> file.
  --out DIR       results root; files go to DIR/<release>/ (default: $ROOT/results)
  --timeout SECS  bound on each boot, in seconds (default: 300); each collection inside the
                  guest gets a third of it
  --cache DIR     where .deb files, unpacked kernels, the initramfs and serial logs go
                  (default: $ROOT/.cache/kernels)
  --bin PATH      use this statically linked cowscope instead of building one
                  (also: COWSCOPE_STATIC_BIN=PATH)
  --memory MB     guest memory (default: 1024; with 512 THP came up 'never')
  --from-log FILE --release R
                  do not boot: extract the documents from an existing serial log
EOF
}

KERNELS=()
OUT=$ROOT/results
TIMEOUT=300
CACHE=$ROOT/.cache/kernels
BIN=${COWSCOPE_STATIC_BIN:-}
MEMORY=1024
FROM_LOG=""
FROM_RELEASE=""
while (($#)); do
  case $1 in
    -k | --kernel) [[ $# -ge 2 ]] || die "--kernel needs a SPEC"; KERNELS+=("$2"); shift 2 ;;
    -o | --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    -t | --timeout) [[ $# -ge 2 ]] || die "--timeout needs seconds"; TIMEOUT=$2; shift 2 ;;
    --cache) [[ $# -ge 2 ]] || die "--cache needs a directory"; CACHE=$2; shift 2 ;;
    --bin) [[ $# -ge 2 ]] || die "--bin needs a path"; BIN=$2; shift 2 ;;
    --memory) [[ $# -ge 2 ]] || die "--memory needs megabytes"; MEMORY=$2; shift 2 ;;
    --from-log) [[ $# -ge 2 ]] || die "--from-log needs a file"; FROM_LOG=$2; shift 2 ;;
    --release) [[ $# -ge 2 ]] || die "--release needs a name"; FROM_RELEASE=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive whole number of seconds, got '$TIMEOUT'"
[[ $MEMORY =~ ^[1-9][0-9]*$ ]] || die "--memory must be a positive whole number of megabytes, got '$MEMORY'"
((${#KERNELS[@]})) || KERNELS=(6.1 6.12)

ensure_cmd jq jq
mkdir -p "$OUT" || die "cannot create the output directory '$OUT'"

# clean_log LOG: the serial log without CRs and terminal escape codes (firmware prints some
# before the first line).
clean_log() {
  tr -d '\r' <"$1" | sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1b[()][A-Za-z0-9]//g; s/\x1b[=>cDEHM78]//g'
}

# extract LOG RELEASE: write each complete, valid document from LOG into OUT/<release>/ atomically
# (staged in a temp dir under OUT, then renamed). The release the guest reports in system.json
# wins over RELEASE (taken from the vmlinuz name) if they differ. Returns 0 when the DONE marker
# was seen and fork-report.json is valid.
extract() {
  local log=$1 release=$2 stage clean f file guest_release dest ok=0 n=0
  stage=$(mktemp -d "$OUT/.kernel-matrix.XXXXXX")
  clean="$stage/serial.log"
  clean_log "$log" >"$clean"
  # Complete documents only: a document is kept when its END marker follows.
  awk -v dir="$stage" '
    /^==COWSCOPE-BEGIN [A-Za-z0-9._-]+==$/ {
      name = substr($0, 18, length($0) - 19); out = dir "/" name ".part"; printf "" > out; inside = 1; next
    }
    inside && $0 == "==COWSCOPE-END " name "==" { close(out); print name; inside = 0; next }
    inside { print > out }
  ' "$clean" >"$stage/complete"
  # The guest's status line for each collection, and what its collections said on stderr.
  while IFS= read -r line; do
    case $line in
      ==COWSCOPE-RESULT\ fork-report.json\ exit=1\ *)
        line=${line#==COWSCOPE-RESULT }
        progress "  guest: ${line%==} (a verdict failed; the report is kept)"
        ;;
      ==COWSCOPE-RESULT\ *)
        line=${line#==COWSCOPE-RESULT }
        progress "  guest: ${line%==}"
        ;;
      *) progress "  guest stderr: ${line#cowscope-guest: }" ;;
    esac
  done < <(grep -E '^(==COWSCOPE-RESULT |cowscope-guest: \[)' "$clean" || true)
  guest_release=""
  if [[ -e $stage/system.json.part ]] && json_valid "$stage/system.json.part"; then
    guest_release=$(jq -r '.uname.release // empty' "$stage/system.json.part")
  fi
  if [[ -n $guest_release && $guest_release != "$release" ]]; then
    progress "  the guest reports release '$guest_release' (expected '$release'); using the guest's"
    release=$guest_release
  fi
  [[ $release =~ ^[A-Za-z0-9._+~-]+$ ]] || die "refusing to write results for an odd release name '$release'"
  dest=$OUT/$release
  while IFS= read -r file; do
    f="$stage/$file.part"
    if json_valid "$f"; then
      mkdir -p "$dest"
      chmod 0644 "$f"
      mv -f "$f" "$dest/$file"
      n=$((n + 1))
    else
      progress "  $file: between its markers but not valid JSON; not written"
    fi
  done <"$stage/complete"
  progress "  wrote $n document(s) to $dest"
  if ! grep -qx '==COWSCOPE-DONE==' "$clean"; then
    progress "  no ==COWSCOPE-DONE== marker: the guest did not finish (last lines below)"
    tail -n 15 "$clean" | sed 's/^/    | /' >&2
    ok=1
  fi
  if [[ ! -e $dest/fork-report.json ]] || ! grep -qx 'fork-report.json' "$stage/complete"; then
    progress "  no valid fork-report.json from this boot"
    ok=1
  fi
  rm -rf "$stage"
  EXTRACTED_RELEASE=$release
  return "$ok"
}

if [[ -n $FROM_LOG ]]; then
  [[ -r $FROM_LOG ]] || die "cannot read the log '$FROM_LOG'"
  [[ -n $FROM_RELEASE ]] || die "--from-log needs --release NAME (used when the log has no system.json)"
  progress "extracting $FROM_LOG"
  if extract "$FROM_LOG" "$FROM_RELEASE"; then exit 0; else exit 1; fi
fi

ensure_cmd qemu-system-x86_64 qemu-system-x86
ensure_cmd cpio cpio
ensure_cmd gzip gzip
ensure_cmd timeout coreutils
mkdir -p "$CACHE" "$CACHE/logs" || die "cannot create the cache directory '$CACHE'"

apt_lists_ready() {
  [[ -n $(apt-cache search --names-only '^linux-image-cloud-amd64$' 2>/dev/null) ]]
}

# newest_package SERIES: the newest linux-image-<SERIES>.*-cloud-amd64 package name (signed).
newest_package() {
  local series=$1 re
  re="^linux-image-${series//./\\.}[.][0-9][^ ]*-cloud-amd64\$"
  if ! apt_lists_ready && ((APT_UPDATED == 0)); then
    progress "apt has no package lists: running apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  apt-cache search --names-only "$re" | awk '{ print $1 }' | sort -V | tail -n 1
}

# kernel_image SPEC: print the path of a vmlinuz for SPEC, fetching and unpacking as needed.
kernel_image() {
  local spec=$1 pkg deb dir img
  if [[ -f $spec ]]; then
    printf '%s\n' "$spec"
    return 0
  fi
  if [[ $spec =~ ^[0-9]+\.[0-9]+$ ]]; then
    pkg=$(newest_package "$spec")
    [[ -n $pkg ]] || die "no linux-image-$spec*-cloud-amd64 package is known to apt"
    progress "newest $spec cloud kernel: $pkg"
  elif [[ $spec == linux-image-* ]]; then
    pkg=$spec
  else
    die "kernel SPEC '$spec' is neither a series (6.1), a package (linux-image-...) nor a file"
  fi
  dir=$CACHE/$pkg
  img=$(compgen -G "$dir/boot/vmlinuz-*" | head -n 1 || true)
  if [[ -z $img ]]; then
    deb=$(compgen -G "$CACHE/${pkg}_*.deb" | head -n 1 || true)
    if [[ -z $deb ]]; then
      progress "downloading $pkg (apt-get download)"
      (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
        die "apt-get download $pkg failed"
      deb=$(compgen -G "$CACHE/${pkg}_*.deb" | head -n 1 || true)
      [[ -n $deb ]] || die "apt-get download $pkg left no .deb in $CACHE"
    fi
    progress "unpacking $(basename "$deb") (dpkg -x, nothing is installed)"
    rm -rf "$dir.tmp"
    dpkg -x "$deb" "$dir.tmp"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    img=$(compgen -G "$dir/boot/vmlinuz-*" | head -n 1 || true)
    [[ -n $img ]] || die "$deb holds no boot/vmlinuz-*"
  fi
  printf '%s\n' "$img"
}

# Resolve every kernel first, so a typo fails before the long steps.
IMAGES=()
for spec in "${KERNELS[@]}"; do IMAGES+=("$(kernel_image "$spec")"); done

if [[ -z $BIN ]]; then
  progress "building a statically linked cowscope (target/static; takes a while the first time)"
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet \
    --target x86_64-unknown-linux-gnu --target-dir "$ROOT/target/static")
  BIN=$ROOT/target/static/x86_64-unknown-linux-gnu/release/cowscope
fi
[[ -x $BIN ]] || die "cowscope binary '$BIN' is not an executable file"
if ldd "$BIN" 2>/dev/null | grep -q '=>'; then
  die "'$BIN' is dynamically linked; the guest has no libraries (build with +crt-static)"
fi

# The live subjects of inspect.json and trace.json (src/cmd/guest/mod.rs live_collections),
# statically linked: the initramfs has no libraries.
ensure_cmd cc build-essential
SUBJECTS=$CACHE/subjects
mkdir -p "$SUBJECTS"
progress "building the live subjects (cow_hold, cow_exact; cc -static)"
cc -static -O2 -o "$SUBJECTS/cow_hold" "$ROOT/scripts/matrix/cow_hold.c" ||
  die "cc -static failed for scripts/matrix/cow_hold.c (is libc6-dev installed?)"
cc -static -O2 -pthread -o "$SUBJECTS/cow_exact" "$ROOT/tests/trace_programs/cow_exact.c" ||
  die "cc -static failed for tests/trace_programs/cow_exact.c"

progress "packing the initramfs (cowscope as /init, the subjects in /bin)"
INITRD=$CACHE/initramfs.cpio.gz
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,tmp}
install -m 0755 "$BIN" "$stage/init"
install -m 0755 "$SUBJECTS/cow_hold" "$SUBJECTS/cow_exact" "$stage/bin/"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$INITRD.tmp"
mv -f "$INITRD.tmp" "$INITRD"
progress "initramfs: $(du -h "$INITRD" | cut -f1)"

# KVM when it works here, else TCG. /dev/kvm alone proves nothing: on a nested VM without
# vmx/svm in its CPU flags it exists, yet qemu then aborts setting MSRs (-cpu host) or hangs in
# the firmware (default CPU). So: the flags, then a qemu probe that creates the vCPU; and a KVM
# boot that fails is retried once with TCG.
ACCEL_TCG=(-accel tcg)
ACCEL=("${ACCEL_TCG[@]}")
ACCEL_NAME=tcg
if [[ -r /dev/kvm && -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo &&
  echo quit | timeout 20 qemu-system-x86_64 -accel kvm -cpu host -machine pc -nodefaults \
    -display none -monitor stdio -S >/dev/null 2>&1; then
  ACCEL=(-accel kvm -cpu host)
  ACCEL_NAME=kvm
fi
progress "accelerator: $ACCEL_NAME"

# boot IMAGE LOG ACCEL...: one boot under timeout; prints how it ended.
boot() {
  local img=$1 log=$2 rc=0 start=$SECONDS
  shift 2
  timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 "$@" -m "$MEMORY" -nographic \
    -no-reboot -kernel "$img" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet COWSCOPE_GUEST_TIMEOUT=$GUEST_TIMEOUT -- guest-init" \
    </dev/null >"$log" 2>&1 || rc=$?
  BOOT_SECS=$((SECONDS - start))
  if ((rc == 124 || rc == 137)); then
    progress "  qemu stopped by timeout after ${BOOT_SECS}s"
  else
    progress "  qemu exited $rc after ${BOOT_SECS}s"
  fi
}

GUEST_TIMEOUT=$((TIMEOUT / 3))
((GUEST_TIMEOUT >= 10)) || GUEST_TIMEOUT=10
FAILED=()
UNPROVEN=()
SUMMARY=()
for img in "${IMAGES[@]}"; do
  release=$(basename "$img")
  release=${release#vmlinuz-}
  log=$CACHE/logs/$release.serial.log
  progress "booting $release ($ACCEL_NAME, -m $MEMORY, timeout ${TIMEOUT}s); serial log: $log"
  boot "$img" "$log" "${ACCEL[@]}"
  if [[ $ACCEL_NAME == kvm ]] && ! grep -q '^==COWSCOPE-DONE==' <(clean_log "$log"); then
    progress "  the KVM boot did not finish: retrying $release with TCG"
    boot "$img" "$log" "${ACCEL_TCG[@]}"
  fi
  secs=$BOOT_SECS
  EXTRACTED_RELEASE=$release
  if extract "$log" "$release"; then
    live=0
    "$ROOT/scripts/check-live.sh" "$OUT/$EXTRACTED_RELEASE" || live=$?
    case $live in
      0) SUMMARY+=("$EXTRACTED_RELEASE: ok in ${secs}s (live documents match the known writes)") ;;
      3) SUMMARY+=("$EXTRACTED_RELEASE: ok in ${secs}s; some live figure UNPROVEN here (see above)")
         UNPROVEN+=("$EXTRACTED_RELEASE") ;;
      *) FAILED+=("$EXTRACTED_RELEASE")
         SUMMARY+=("$EXTRACTED_RELEASE: live documents FAILED their check after ${secs}s (log: $log)") ;;
    esac
  else
    FAILED+=("$EXTRACTED_RELEASE")
    SUMMARY+=("$EXTRACTED_RELEASE: FAILED after ${secs}s (log: $log)")
  fi
done

for line in "${SUMMARY[@]}"; do progress "$line"; done
if ((${#FAILED[@]})); then
  progress "failed: ${FAILED[*]}"
  exit 1
fi
if ((${#UNPROVEN[@]})); then
  progress "done, but not everything could be proven on: ${UNPROVEN[*]}; results in $OUT"
  exit 3
fi
progress "done: results in $OUT"
