#!/usr/bin/env bash
# Checks the VM harness itself: the self-test crate passes in the VM, and
# run-v2.sh's verdicts are right for a failing test, a hung VM, a leaked
# cgroup, and the --scope layout. Exit 0 when every check holds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages
fails=0
# expect NAME STATUS RUN-V2-ARGS...: run-v2.sh must exit with STATUS.
expect() {
    local name=$1 want=$2 out rc
    shift 2
    out=$(mktemp)
    set +e
    "$VM_DIR/run-v2.sh" "$@" >"$out" 2>&1
    rc=$?
    set -e
    if [ "$rc" = "$want" ]; then
        echo "ok   $name (exit $rc; $(grep -m1 'boot to result' "$out" | tr -s ' ' || echo 'no result'))"
    else
        echo "FAIL $name: run-v2.sh exited $rc, expected $want; its output:"
        sed 's/^/    | /' "$out"
        fails=$((fails + 1))
    fi
    rm -f "$out"
}

list=$("$VM_DIR/build-static-tests.sh" --manifest-path "$VM_DIR/selftest/Cargo.toml" jobcell-vm-selftest)
WITH=() RUN=()
while read -r kind path; do
    case $kind in
    bin) WITH+=(--with "$path") ;;
    test)
        [ ${#RUN[@]} -eq 0 ] || RUN+=(---)
        RUN+=("$path" --test-threads=1 --nocapture)
        ;;
    esac
done <<<"$list"

expect "self-test crate: cgroup, memory.max, helper at its baked-in path, memory.peak, OOM kill, NSS" \
    0 --strict-cleanup --env JOBCELL_VM_SELFTEST_REQUIRE_V2=1 "${WITH[@]}" -- "${RUN[@]}"
expect "a failing executable fails the run" 1 -- true --- false
expect "a hung VM is killed and fails the run" 3 --timeout 8 -- sleep 600
expect "--strict-cleanup fails a test that leaks a cgroup" 1 --strict-cleanup -- mkdir /sys/fs/cgroup/leak
expect "--scope puts only the test process in the leaf" 0 --scope a/b -- \
    sh -c 'test "$(cat /proc/self/cgroup)" = 0::/a/b && ! grep -qx "$PPID" /sys/fs/cgroup/a/b/cgroup.procs &&
           test -z "$(cat /sys/fs/cgroup/a/b/cgroup.subtree_control)" &&
           grep -qw memory /sys/fs/cgroup/a/cgroup.subtree_control'
expect "pure v2: no v1 hierarchy can be mounted, root has the controllers" 0 -- \
    sh -c 'test -z "$(awk "\$3 == \"cgroup\"" /proc/mounts)" && test "$(cat /proc/self/cgroup)" = 0::/ &&
           grep -qw memory /sys/fs/cgroup/cgroup.subtree_control && mkdir -p /tmp/v1 &&
           ! mount -t cgroup -o memory none /tmp/v1 2>/dev/null'
expect "arguments with quotes and spaces arrive intact; --env, --cwd" 0 --env "X=a 'b' \$c" --cwd /srv/jobcell-cwd -- \
    sh -c 'test "$1" = "it'"'"'s  two" && test "$X" = "a '"'"'b'"'"' \$c" && test "$(pwd)" = /srv/jobcell-cwd' sh "it's  two"

if [ $fails = 0 ]; then
    echo "harness self-test: all checks passed"
else
    echo "harness self-test: $fails check(s) FAILED"
    exit 1
fi
