#!/bin/sh
# End-to-end throughput of the node agent: submit N trivial (/bin/true) jobs, time until the
# daemon has recorded every result. Run as root from the repo root after
#   cargo build --release -p jobcell
# Usage: bench/throughput.sh [N] [MODE]
#   N     jobs (default 2000)
#   MODE  batch: one `jobcell submit --count N` (HTCondor's `queue N`), the default
#         each:  N separate `jobcell submit` processes from 4 parallel shells
# The scratch base is a tmpfs (/dev/shm): on this machine's root ext4 (mounted with discard)
# each rmdir costs ~2.8 ms, which would dominate a /bin/true job. The state dir (SQLite,
# synchronous=FULL: one fsync per group commit) is on the real disk under /tmp, or under
# STATE_BASE (e.g. STATE_BASE=/dev/shm to compare with a tmpfs, where fsync costs nothing).
# Jobs ask for 0.02 cpus and 16 MiB so that many run at once on 2 cores (the default request,
# 1 cpu, would allow 2 at a time).
set -eu
N=${1:-2000}
MODE=${2:-batch}
. "$(dirname "$0")/lib.sh"
bench_cleanup_more() {
    if [ -n "${ACCT:-}" ]; then
        rmdir "$ACCT/jobcell/supervisors" "$ACCT/jobcell" "$ACCT" 2>/dev/null || true
    fi
}
# Account the whole pipeline (daemon, spawner, supervisors, jobs) in a cpuacct cgroup of its
# own (v1), so CPU per job is measured exactly however busy the machine is with other work.
ACCT=
own=$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' /proc/self/cgroup)
if [ -n "$own" ] && [ -d "/sys/fs/cgroup/cpuacct$own" ] && [ "$(id -u)" = 0 ]; then
    ACCT="/sys/fs/cgroup/cpuacct${own%/}/jobcell/bench.$$"
    mkdir -p "$ACCT"
fi
start_daemon sh -c '[ -z "$1" ] || echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$ACCT" \
    "$J" daemon --cpus 2 --memory 8G

now() { date +%s.%N; }
completed() { "$J" status --socket "$SOCK" --json | sed -n 's/.*"completed": *\([0-9]*\).*/\1/p'; }

t0=$(now)
case $MODE in
batch)
    "$J" submit --socket "$SOCK" --count "$N" --cpus ${JOB_CPUS:-0.02} --memory 16 -q -- /bin/true >/dev/null
    ;;
each)
    per=$((N / 4))
    pids=
    for c in 1 2 3 4; do
        ( k=0; while [ $k -lt $per ]; do
            "$J" submit --socket "$SOCK" --cpus ${JOB_CPUS:-0.02} --memory 16 -q -- /bin/true >/dev/null
            k=$((k + 1)); done ) &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p"; done
    N=$((per * 4))
    ;;
*) echo "MODE is batch or each" >&2; exit 2 ;;
esac
t1=$(now)
while :; do
    c=$(completed); c=${c:-0}
    [ "$c" -ge "$N" ] && break
    sleep 0.05
done
t2=$(now)
acct=
if [ -n "$ACCT" ]; then
    acct="; pipeline CPU $(echo "scale=2; $(cat "$ACCT/cpuacct.usage") / 1000000 / $N" | bc) ms/job (daemon+spawner+supervisors+jobs, cpuacct)"
fi
dcpu=$(awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' /proc/$DPID/stat)
failed=$("$J" status --socket "$SOCK" --json | sed -n 's/.*"failed": *\([0-9]*\).*/\1/p')
echo "$N jobs ($MODE): submitted in $(echo "$t1 - $t0" | bc) s, all recorded after $(echo "$t2 - $t0" | bc) s: $(echo "scale=1; $N / ($t2 - $t0)" | bc) jobs/s (failed: ${failed:-0}); daemon CPU $(echo "scale=2; $dcpu / $(getconf CLK_TCK)" | bc) s; load $(cut -d' ' -f1-3 /proc/loadavg)$acct"
