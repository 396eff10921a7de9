#!/bin/sh
# Bulk actions on a big cluster through the CLI, each one request and one transaction: submit
# N held jobs as one cluster, then time `release C.`, `hold C.`, `qedit C. RequestMemory 2048`,
# `release C.` and `rm C.` (each must take < 1 s for N = 1000). Run as root from the repo root
# after
#   cargo build --release -p jobcell
# Usage: bench/bulk_actions.sh [N]
# The daemon has a private state dir under /tmp (SQLite on the real disk, so each action's
# commit pays its fsync) and 1 cpu for jobs: released jobs (1 cpu, sleep 600) start one at a
# time, the rest wait in the queue, as a real cluster on a full node does.
set -eu
N=${1:-1000}
. "$(dirname "$0")/lib.sh"
start_daemon "$J" daemon --cpus 1 --memory 8G
export JOBCELL_SOCKET="$SOCK"
now() { date +%s.%N; }
timed() {
    what=$1
    shift
    t0=$(now)
    "$J" "$@" >"$D/out" 2>"$D/err" || true
    t1=$(now)
    ms=$(echo "($t1 - $t0) * 1000" | bc)
    printf '%-34s %8.1f ms   %s\n' "$what" "$ms" "$(head -1 "$D/out" "$D/err" | grep -v '^==>' | grep . | head -1)"
}
timed "submit --count $N --hold" submit -q --hold --count "$N" --memory 64 -- /bin/sleep 600
C=$("$J" q --nobatch | awk 'NR==2 {split($2, a, "."); print a[1]}')
timed "release $C." release "$C."
timed "hold $C." hold "$C."
timed "qedit $C. RequestMemory 2048" qedit "$C." RequestMemory 2048
timed "release $C." release "$C."
timed "rm $C." rm "$C."
