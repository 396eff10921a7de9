#!/usr/bin/env bash
# Builds jobcell-cgroup's tests statically and runs them all, one thread at a
# time, in the pure cgroup-v2 VM, once per cgroup layout:
#   root   the tests live in the root cgroup (exempt from no-internal-process)
#   scope  the test process alone in a leaf whose ancestors have every
#          controller enabled, as under systemd-run --scope -p Delegate=yes
# Exit status: 0 when every test executable passed in every layout.
#
#   tests/vm/run-cgroup-suite.sh [--layouts root,scope] [RUN-V2 OPTIONS...] [-- HARNESS ARGS...]
#
# RUN-V2 OPTIONS go to run-v2.sh (e.g. --timeout 600 (default 300 per layout), --kernel-log,
# --strict-cleanup). HARNESS ARGS go to every test executable (e.g. a name
# filter). JOBCELL_VM_PACKAGE overrides the package (default jobcell-cgroup).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PKG=${JOBCELL_VM_PACKAGE:-jobcell-cgroup}
LAYOUTS=root,scope
SCOPE_PATH=system.slice/jobcell-test.scope
VMOPTS=()
while [ $# -gt 0 ]; do
    case $1 in
    --) shift; break ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --layouts) LAYOUTS=${2:?}; shift 2 ;;
    --scope) LAYOUTS=scope SCOPE_PATH=${2:?}; shift 2 ;;
    --results) fatal "--results: results go to $(static_target_dir)/vm-results/<layout>" ;;
    --kernel-log | --keep | --strict-cleanup) VMOPTS+=("$1"); shift ;;
    -*) VMOPTS+=("$1" "${2:?option $1 needs a value}"); shift 2 ;;
    *) fatal "unexpected argument '$1' (harness args go after --)" ;;
    esac
done
HARNESS=("$@")
for l in ${LAYOUTS//,/ }; do
    case $l in root | scope) ;; *) fatal "--layouts: unknown layout '$l' (root, scope)" ;; esac
done

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
# shared read-only at the same path; CARGO_TARGET_TMPDIR (baked in at compile
# time) exists.
meta=$(cargo metadata --no-deps --format-version 1 --manifest-path "$REPO_DIR/Cargo.toml") ||
    fatal "cargo metadata failed (see above)"
PKG_DIR=$(python3 -c 'import json,sys,os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == sys.argv[1]: print(os.path.dirname(p["manifest_path"]))' "$PKG" <<<"$meta")
[ -n "$PKG_DIR" ] || fatal "no package $PKG in the workspace"

ARGS=()
for t in "${TESTS[@]}"; do
    [ ${#ARGS[@]} -eq 0 ] || ARGS+=(---)
    # --show-output: SKIPPED lines of passing tests stay visible in the log.
    ARGS+=("$t" --test-threads=1 --show-output ${HARNESS[@]+"${HARNESS[@]}"})
done

status=0
SUMMARY=()
for layout in ${LAYOUTS//,/ }; do
    # Results of the last run, next to the static build; only our flat files.
    RESULTS_DIR=$(static_target_dir)/vm-results/$PKG-$layout
    mkdir -p "$RESULTS_DIR"
    find "$RESULTS_DIR" -maxdepth 1 -type f -delete
    LAYOUT_OPTS=()
    [ "$layout" = scope ] && LAYOUT_OPTS=(--scope "$SCOPE_PATH")
    echo "==================================== $PKG in the v2 VM, layout '$layout'"
    ta=$(date +%s.%N)
    set +e
    # 300 s per layout: the suite takes 20-50 s here; a hang costs at most 10 min in CI.
    "$VM_DIR/run-v2.sh" --timeout 300 --share-ro "$PKG_DIR" --cwd "$PKG_DIR" \
        --env "CARGO_MANIFEST_DIR=$PKG_DIR" --env "CARGO_PKG_NAME=$PKG" \
        --mkdir "$(static_target_dir)/tmp" \
        --results "$RESULTS_DIR" ${LAYOUT_OPTS[@]+"${LAYOUT_OPTS[@]}"} "${WITH[@]}" \
        ${VMOPTS[@]+"${VMOPTS[@]}"} -- "${ARGS[@]}"
    rc=$?
    set -e
    tb=$(date +%s.%N)
    [ $rc = 0 ] || status=$rc

    # Per test function: what libtest said, across all executables.
    echo "------------------------------------ $PKG in the v2 VM, layout '$layout': per test"
    grep -hE '^test .* \.\.\. (ok|FAILED|ignored)' "$RESULTS_DIR"/*.stdout 2>/dev/null |
        sed -E 's/^test (.*) \.\.\. (.*)$/\2 \1/' | sort | sed 's/^/  /' || true
    counts=$(grep -hE '^test .* \.\.\. (ok|FAILED|ignored)' "$RESULTS_DIR"/*.stdout 2>/dev/null |
        awk '{ n[$NF]++ } END { printf "%d ok, %d FAILED, %d ignored", n["ok"], n["FAILED"], n["ignored"] }')
    skips=$(cat "$RESULTS_DIR"/*.stdout "$RESULTS_DIR"/*.stderr 2>/dev/null | grep 'SKIPPED' | sort -u || true)
    if [ -n "$skips" ]; then
        echo "  SKIPPED in the VM (these did not really run on v2):"
        echo "$skips" | sed 's/^/    /'
    fi
    leaks=$(cat "$RESULTS_DIR"/*.leaked-cgroups 2>/dev/null | tr '\n' ' ' || true)
    SUMMARY+=("$(printf '%-6s exit %s: %s; %d SKIPPED line(s); VM %.1f s%s' "$layout" "$rc" "$counts" \
        "$(printf '%s' "$skips" | grep -c . || true)" "$(awk -v a="$ta" -v b="$tb" 'BEGIN { print b - a }')" \
        "${leaks:+; cgroups left: $leaks}")")
done
t2=$(date +%s.%N)

echo "==================================== $PKG in the pure cgroup-v2 VM: summary"
printf '  %s\n' "${SUMMARY[@]}"
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
    printf "  time: static build %.1f s, VM runs %.1f s, total %.1f s\n", b - a, c - b, c - a }'
echo "  results (N.stdout/N.stderr/N.rc per executable, console.log, dmesg.txt): $(static_target_dir)/vm-results/"
exit $status
