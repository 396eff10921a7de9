#!/bin/sh
# Runs inside the pure cgroup-v2 VM (busybox sh): `jobcell run` end to end on cgroup v2 —
# clone3(CLONE_INTO_CGROUP), limits, OOM noticed from memory.events, cgroup namespace, cleanup.
# Usage (guest): launcher-checks.sh /path/to/static/jobcell
J=$1
base=/tmp/jc-scratch
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL: $1"; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: expected [$3], got [$2]"; fi; }
run() { "$J" run --scratch-base "$base" "$@"; }

echo "cgroup: $(stat -fc %T /sys/fs/cgroup) controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
ls -ld / /tmp /bin /bin/sh; umask

out=$(run -- sh -c 'ps -o pid= | wc -l')
check "ps sees only the job (init, sh, ps, wc)" "$(echo $out)" "4"

out=$(run -- cat /proc/self/cgroup)
check "the job's cgroup namespace is rooted at its cgroup" "$out" "0::/"

run --report /tmp/r1.json --cpus 2 --pids 64 --memory 64M -- sh -c 'cat /sys/fs/cgroup/../cgroup.procs >/dev/null 2>&1; exit 3'
check "exit code" "$?" "3"
grep -q '"cpu_source": "cgroup"' /tmp/r1.json && ok "usage from the cgroup" || bad "usage from the cgroup: $(cat /tmp/r1.json)"

# Limits as written by the v2 backend, read from inside (the job's cgroup is the ns root).
out=$(run --cpus 2 --pids 64 --memory 64M -- sh -c 'ls /proc/self/' 2>&1 >/dev/null; echo $?)
check "job with limits runs" "$out" "0"

run --report /tmp/r2.json --memory 32M -- sh -c 'x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived' >/dev/null 2>/tmp/e2
rc=$?
check "memory hog past a hard limit is killed (128+9)" "$rc" "137"
grep -q '"oom_killed": true' /tmp/r2.json && ok "report says oom_killed" || bad "report says oom_killed: $(cat /tmp/r2.json)"
grep -q "OOM killer" /tmp/e2 && ok "OOM line on stderr" || bad "OOM line on stderr: $(cat /tmp/e2)"

run --memory 32M --memory-policy soft -- sh -c 'x=$(head -c 50000000 /dev/zero | tr "\0" a); echo survived' >/tmp/o3 2>&1
check "soft limit: the same kind of hog completes" "$(cat /tmp/o3)" "survived"

run --pids 16 -- sh -c 'i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; echo spawned' >/dev/null 2>&1
ok "fork bomb past --pids ends (did not hang)"

left=$(find /sys/fs/cgroup -path '*jobcell*' -name 'job-*' -type d | wc -l)
check "no job cgroup left" "$left" "0"
check "no scratch left" "$(ls $base 2>/dev/null | wc -l)" "0"

echo "launcher-checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
