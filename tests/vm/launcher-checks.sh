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

# ps writes to a file: in a pipeline, whether wc was forked yet when ps read /proc is a race.
out=$(run -- sh -c 'ps -o comm= >/tmp/ps.txt; sort /tmp/ps.txt | tr "\n" " "')
check "ps sees only the job (its init, sh, ps)" "$(echo $out)" "jobcell ps sh"

out=$(run -- cat /proc/self/cgroup)
check "the job's cgroup namespace is rooted at its cgroup" "$out" "0::/"

# A cgroup namespace of the job's own and a cgroup2 mount in it: refused by the job's seccomp
# filter (on v2 its root would be the job's own cgroup anyway).
out=$(run -- "$J" selftest-probe cgroup2-userns)
case "$out" in
  denied:* | "no host pids"*) ok "cgroup2 mount of the job's own: $out" ;;
  *) bad "cgroup2 mount of the job's own shows host processes: $out" ;;
esac

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

# Rootless with a delegated cgroup, as systemd's Delegate=yes gives one to a user: the directory
# and its cgroup.procs, cgroup.subtree_control, cgroup.threads chowned to the user, who runs in
# it. jobcell (as nobody) moves itself into <deleg>/jobcell/launcher, makes the job's cgroup
# next to it (clone3(CLONE_INTO_CGROUP) inside the user's subtree), applies the limits.
D=/sys/fs/cgroup/jc-deleg
rl=/tmp/jc-rootless
mkdir -p $D $rl
chown 65534:65534 $D $D/cgroup.procs $D/cgroup.subtree_control $D/cgroup.threads $rl
# The job's script lives outside /tmp (the job gets a private /tmp).
printf '%s\n' 'cat /proc/self/cgroup' 'x=$(head -c 100000000 /dev/zero | tr "\0" a)' 'echo survived' >/run/jc-hog.sh
chmod 755 /run/jc-hog.sh
out=$(sh -c 'echo $$ >"$1/cgroup.procs" || exit 99; shift; exec "$@"' sh $D \
  su -s /bin/sh nobody -c "exec $J run --scratch-base $rl --report - --memory 32M --pids 20 -- sh /run/jc-hog.sh" \
  2>/tmp/e5)
rc=$?
check "rootless, delegated: memory hog killed (128+9)" "$rc" "137"
check "rootless, delegated: the job sees its own cgroup as the namespace root" "$(echo "$out" | head -1)" "0::/"
grep -q '"rootless": true' /tmp/e5 && ok "rootless, delegated: report says rootless" || bad "rootless report: $(cat /tmp/e5)"
grep -q '"oom_killed": true' /tmp/e5 && ok "rootless, delegated: report says oom_killed" || bad "rootless oom_killed: $(cat /tmp/e5)"
grep -q '"cpu_source": "cgroup"\|"memory_peak"' /tmp/e5 && ok "rootless, delegated: usage from the cgroup" || bad "rootless usage: $(cat /tmp/e5)"
grep -q "limits are the enclosing scheduler's" /tmp/e5 && bad "rootless, delegated: the cgroup was not used: $(cat /tmp/e5)" || ok "rootless, delegated: no scheduler warning"
check "rootless, delegated: no job cgroup left" "$(find $D -name 'job-*' -type d | wc -l)" "0"
check "rootless, delegated: jobcell's cgroups below it are the user's" "$(stat -c %u $D/jobcell 2>&1)" "65534"
# The same with an explicit --cgroup-parent in the delegated subtree: the launcher lives in a
# sibling leaf, so the common ancestor of its cgroup and the job's is the user's directory.
mkdir $D/session
sh -c 'echo $$ >"$1/cgroup.procs" || exit 99; shift; exec "$@"' sh $D/session \
  su -s /bin/sh nobody -c "exec $J run --cgroup-parent /jc-deleg/jobs --scratch-base $rl --report - --memory 32M -- sh /run/jc-hog.sh" \
  >/dev/null 2>/tmp/e7
check "rootless, --cgroup-parent in the delegated subtree: hog killed (128+9)" "$?" "137"
grep -q '"oom_killed": true' /tmp/e7 && ok "rootless, --cgroup-parent: report says oom_killed" || bad "rootless --cgroup-parent: $(cat /tmp/e7)"
check "rootless, --cgroup-parent: jobcell made the parent as the user" "$(stat -c %u $D/jobs 2>&1)" "65534"
check "rootless, --cgroup-parent: no job cgroup left" "$(find $D/jobs -name 'job-*' -type d | wc -l)" "0"
rmdir $D/jobs $D/session $D/jobcell/launcher $D/jobcell $D 2>/dev/null
rm -f /run/jc-hog.sh
check "rootless, delegated: the delegated tree removed" "$(ls -d $D 2>/dev/null)" ""

# Rootless without delegation (the root cgroup's children are root's): one line says limits are
# the scheduler's; the job still runs.
su -s /bin/sh nobody -c "exec $J run --scratch-base $rl --memory 32M -- true" 2>/tmp/e6
check "rootless, not delegated: job runs" "$?" "0"
check "rootless, not delegated: one line on stderr" "$(grep -c -e "jobcell: --memory 32.0 MiB not enforced: .*limits are the enclosing scheduler's" /tmp/e6)/$(wc -l </tmp/e6)" "1/1"
check "rootless: no scratch left" "$(ls $rl | wc -l)" "0"
rmdir $rl

left=$(find /sys/fs/cgroup -path '*jobcell*' -name 'job-*' -type d | wc -l)
check "no job cgroup left" "$left" "0"
check "no scratch left" "$(ls $base 2>/dev/null | wc -l)" "0"

echo "launcher-checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
