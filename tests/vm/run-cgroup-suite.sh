#!/usr/bin/env bash
# Builds jobcell-cgroup's tests statically and runs them all, one thread at a
# time, in the pure cgroup-v2 VM. Exit status: that of run-v2.sh (0 = every
# test executable passed).
#
#   tests/vm/run-cgroup-suite.sh [RUN-V2 OPTIONS...] [-- TEST-HARNESS ARGS...]
#
# RUN-V2 OPTIONS go to run-v2.sh (e.g. --timeout 600, --scope
# user.slice/session-1.scope, --results DIR, --kernel-log). TEST-HARNESS ARGS
# go to every test executable (e.g. a name filter, --nocapture).
# JOBCELL_VM_PACKAGE overrides the package (default jobcell-cgroup).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PKG=${JOBCELL_VM_PACKAGE:-jobcell-cgroup}
VMOPTS=()
while [ $# -gt 0 ]; do
    case $1 in
    --) shift; break ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --kernel-log | --keep | --strict-cleanup) VMOPTS+=("$1"); shift ;;
    -*) VMOPTS+=("$1" "${2:?option $1 needs a value}"); shift 2 ;;
    *) fatal "unexpected argument '$1' (harness args go after --)" ;;
    esac
done
HARNESS=("$@")

ensure_packages
t0=$(date +%s.%N)
log "building static test executables of $PKG"
list=$("$VM_DIR/build-static-tests.sh" "$PKG")
t1=$(date +%s.%N)
TESTS=() WITH=()
while read -r kind path; do
    case $kind in
    test) TESTS+=("$path") ;;
    bin) WITH+=(--with "$path") ;;
    esac
done <<<"$list"
[ ${#TESTS[@]} -gt 0 ] || fatal "package $PKG has no test executables"

# Like cargo test: cwd and CARGO_MANIFEST_DIR are the package's directory,
# shared read-only at the same path.
PKG_DIR=$(cargo metadata --no-deps --format-version 1 --manifest-path "$REPO_DIR/Cargo.toml" |
    python3 -c 'import json,sys,os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == sys.argv[1]: print(os.path.dirname(p["manifest_path"]))' "$PKG")
[ -n "$PKG_DIR" ] || fatal "no package $PKG in the workspace"

ARGS=()
for t in "${TESTS[@]}"; do
    [ ${#ARGS[@]} -eq 0 ] || ARGS+=(---)
    # --show-output: SKIPPED lines of passing tests stay visible in the log.
    ARGS+=("$t" --test-threads=1 --show-output ${HARNESS[@]+"${HARNESS[@]}"})
done

# Results of the last run, next to the static build; only our flat files.
RESULTS_DIR=$(static_target_dir)/vm-results/$PKG
mkdir -p "$RESULTS_DIR"
find "$RESULTS_DIR" -maxdepth 1 -type f -delete
set +e
"$VM_DIR/run-v2.sh" --timeout 600 --share-ro "$PKG_DIR" --cwd "$PKG_DIR" \
    --env "CARGO_MANIFEST_DIR=$PKG_DIR" --env "CARGO_PKG_NAME=$PKG" \
    --results "$RESULTS_DIR" "${WITH[@]}" ${VMOPTS[@]+"${VMOPTS[@]}"} -- "${ARGS[@]}"
rc=$?
set -e
t2=$(date +%s.%N)

# Per test function: what libtest said, across all executables.
echo "------------------------------------------------------------ $PKG in the v2 VM"
grep -hE '^test .* \.\.\. (ok|FAILED|ignored)' "$RESULTS_DIR"/*.stdout 2>/dev/null |
    sed -E 's/^test (.*) \.\.\. (.*)$/\2 \1/' | sort | awk '
        { n[$1]++; print "  " $0 }
        END { printf "tests: %d ok, %d FAILED, %d ignored\n", n["ok"], n["FAILED"], n["ignored"] }'
skipped=$(cat "$RESULTS_DIR"/*.stdout "$RESULTS_DIR"/*.stderr 2>/dev/null | grep -c 'SKIPPED' || true)
if [ "$skipped" -gt 0 ]; then
    echo "SKIPPED lines in the VM (the test did not really run there):"
    cat "$RESULTS_DIR"/*.stdout "$RESULTS_DIR"/*.stderr 2>/dev/null | grep 'SKIPPED' | sort | uniq -c | sed 's/^/  /'
fi
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
    printf "time: static build %.1f s, VM run %.1f s, total %.1f s\n", b - a, c - b, c - a }'
echo "results (stdout/stderr/exit per executable, console.log, dmesg.txt): $RESULTS_DIR"
exit $rc
