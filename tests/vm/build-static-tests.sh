#!/usr/bin/env bash
# Builds the test executables and bin targets of workspace packages as
# static binaries (they run in the VM's busybox initramfs, which has no libc)
# and prints them, one per line: "test PATH", "bin PATH" or "example PATH".
#
#   tests/vm/build-static-tests.sh [--manifest-path Cargo.toml] PACKAGE...
#
# Target dir: $JOBCELL_VM_TARGET_DIR, else ${CARGO_TARGET_DIR:-REPO/target}/vm-static,
# so the static build never invalidates the normal one. Bin targets keep the
# absolute paths that tests have baked in through CARGO_BIN_EXE_*; run-v2.sh
# copies them to the same paths inside the guest. Cargo's diagnostics go to
# stderr.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MANIFEST=$REPO_DIR/Cargo.toml
PKGS=()
while [ $# -gt 0 ]; do
    case $1 in
    --manifest-path) MANIFEST=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) fatal "unknown option '$1'" ;;
    *) PKGS+=("$1"); shift ;;
    esac
done
[ ${#PKGS[@]} -gt 0 ] || fatal "usage: build-static-tests.sh [--manifest-path FILE] PACKAGE..."
[ -f "$MANIFEST" ] || fatal "no manifest $MANIFEST"
command -v python3 >/dev/null || fatal "python3 is needed to read cargo's JSON output"

TARGET_DIR=$(static_target_dir)
TRIPLE=x86_64-unknown-linux-gnu
PARGS=()
for p in "${PKGS[@]}"; do PARGS+=(-p "$p"); done

json=$(mktemp)
trap 'rm -f "$json"' EXIT
# --target keeps RUSTFLAGS off build scripts and proc macros (which must stay
# dynamic); crt-static makes a static glibc executable of everything else.
if ! RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    CARGO_TARGET_DIR=$TARGET_DIR \
    cargo test --release --no-run --target "$TRIPLE" --manifest-path "$MANIFEST" \
    "${PARGS[@]}" --message-format=json-render-diagnostics >"$json"; then
    fatal "static build of ${PKGS[*]} failed (see cargo's output above)"
fi

python3 - "$json" <<'EOF'
import json, sys
seen = set()
out = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    exe = m["executable"]
    if exe in seen:
        continue
    seen.add(exe)
    kinds = m["target"]["kind"]
    if m["profile"]["test"]:
        kind = "test"
    elif "bin" in kinds:
        kind = "bin"
    elif "example" in kinds:
        kind = "example"  # cargo test builds examples too; not run
    else:
        continue
    out.append((kind, exe))
if not out:
    sys.exit("jobcell-vm: error: cargo built no executable")
for kind, exe in sorted(out):
    print(kind, exe)
EOF
