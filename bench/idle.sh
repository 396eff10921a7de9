#!/bin/sh
# Idle cost of the node agent: N (default 500) running `sleep` jobs. Reports
#  - CPU used by the daemon + all supervisors + all job inits over a window, in % of one core
#    (from /proc/PID/stat utime+stime deltas);
#  - memory per job of supervisor + init: the sum of their PSS (/proc/PID/smaps_rollup; shared
#    pages divided among the sharers) / N, and the `supervisors` cgroup's RSS / N.
# Run as root from the repo root after `cargo build --release -p jobcell`.
# Usage: bench/idle.sh [N] [WINDOW_SECONDS]
set -eu
N=${1:-500}
WIN=${2:-30}
J=${JOBCELL:-$(pwd)/target/release/jobcell}
[ -x "$J" ] || { echo "build first: cargo build --release -p jobcell (or set JOBCELL)" >&2; exit 2; }
D=$(mktemp -d /tmp/jobcell-idle.XXXXXX)
S=$(mktemp -d /dev/shm/jobcell-idle-scratch.XXXXXX)
chmod 755 "$D" "$S"
SOCK=$D/api.sock
DPID=
cleanup() {
    if [ -n "$DPID" ]; then
        "$J" rm --socket "$SOCK" --all-mine >/dev/null 2>&1 || true
        i=0
        while [ $i -lt 600 ] && "$J" q --socket "$SOCK" --json 2>/dev/null | grep -q '"id"'; do
            sleep 0.1; i=$((i + 1))
        done
        kill "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
    fi
    rm -rf "$D" "$S"
}
trap cleanup EXIT INT TERM
"$J" daemon --state-dir "$D/state" --socket "$SOCK" --scratch-base "$S" --cpus 2 --memory 8G 2>"$D/daemon.log" &
DPID=$!
while [ ! -S "$SOCK" ]; do sleep 0.01; done
"$J" submit --socket "$SOCK" --count "$N" --cpus 0.002 --memory 8 --grace 0 -q -- /bin/sleep 100000 >/dev/null
# Wait until every job's init has its job running (the init's child exists).
sups() { cat "$D"/state/jobs/*/claim-1 2>/dev/null | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }
while :; do
    n=0
    for s in $(sups); do
        init=$(cat /proc/$s/task/$s/children 2>/dev/null | awk '{print $1}')
        [ -n "$init" ] && [ -n "$(cat /proc/$init/task/$init/children 2>/dev/null)" ] && n=$((n + 1))
    done
    [ "$n" -ge "$N" ] && break
    sleep 1
done
sleep 3
PIDS="$DPID $(cat /proc/$DPID/task/*/children) "
for s in $(sups); do
    PIDS="$PIDS $s $(cat /proc/$s/task/$s/children)"
done
ticks() {
    t=0
    for p in $PIDS; do
        v=$(awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' /proc/$p/stat 2>/dev/null || echo 0)
        t=$((t + ${v:-0}))
    done
    echo $t
}
HZ=$(getconf CLK_TCK)
a=$(ticks); sleep "$WIN"; b=$(ticks)
cpu=$(echo "scale=3; ($b - $a) * 100 / $HZ / $WIN" | bc)
pss=0
for p in $PIDS; do
    [ "$p" = "$DPID" ] && continue
    v=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0)
    pss=$((pss + ${v:-0}))
done
dpss=$(awk '/^Pss:/ {print $2}' /proc/$DPID/smaps_rollup)
mcg=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/$DPID/cgroup)
sup_rss=$(awk '$1 == "total_rss" {print $2}' /sys/fs/cgroup/memory$mcg/jobcell/supervisors/memory.stat 2>/dev/null || echo 0)
echo "$N sleeping jobs: daemon + supervisors + inits used $cpu% of one core over ${WIN}s"
echo "per job, supervisor + init PSS: $(echo "scale=3; $pss / $N / 1024" | bc) MiB; supervisors cgroup RSS / job: $(echo "scale=3; ${sup_rss:-0} / $N / 1048576" | bc) MiB; daemon PSS: $(echo "scale=1; $dpss / 1024" | bc) MiB"
