#!/bin/sh
# Chaos run of the node agent, local only, against a daemon of its own (temporary state dir):
#  1. 1000 short jobs submitted in 10 rounds of 100; after each round the daemon is killed
#     with SIGKILL at a random moment and started again. Every job appends its id (from its
#     scratch dir's name, job-<supervisor pid>-<id in hex>) to a log shared by all jobs.
#  2. The state dir on a 32 MiB tmpfs: a job, the disk filled, a submission (must be refused
#     in one line, the daemon staying up), the space freed, a submission (must run, same
#     daemon).
#  3. The connection flood of bench/api-flood.sh (3000 idle connections of a second uid for
#     10 s against a daemon with 1024 descriptors): the p50/p99 of `jobcell q` during it.
# Prints the acknowledged jobs that are lost (unknown to the daemon), run twice, stuck (not
# ended within the bound) or ended without running; all must be 0 (exit 1 otherwise).
# Root; runs in a private mount namespace of its own (unshare -m), so no mount is visible
# outside. Needs jq. Takes about a minute on 2 cores (bounded: 300 s for the jobs to end).
# Usage: bench/chaos.sh [PATH/TO/jobcell]   (default target/release/jobcell)
set -eu
export LC_ALL=C   # comm(1) compares in the collation sort(1) used
J=$(realpath "${1:-${JOBCELL:-target/release/jobcell}}")
[ -x "$J" ] || { echo "no jobcell at $J: cargo build --release -p jobcell" >&2; exit 2; }
command -v jq >/dev/null || { echo "chaos.sh needs jq" >&2; exit 2; }
if [ -z "${CHAOS_IN_NS:-}" ]; then
    CHAOS_IN_NS=1 exec unshare -m --propagation private "$0" "$J"
fi
W=$(mktemp -d /var/lib/jobcell-chaos.XXXXXX)
chmod 755 "$W"
mkdir -m 1777 "$W/ran"
# Jobs of nobody run as uids of their own: the shared log must be writable by all of them.
install -m 666 /dev/null "$W/ran/log"
mkdir -m 755 "$W/scratch" "$W/fullfs"
DPID=
start() { # state dir, socket
    "$J" daemon --state-dir "$1" --socket "$2" --scratch-base "$W/scratch" \
        --cpus 2 --memory 2G >>"$W/daemon.log" 2>&1 &
    DPID=$!
    i=0
    until "$J" status --socket "$2" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 500 ] || { echo "the daemon did not start:" >&2; tail -3 "$W/daemon.log" >&2; exit 1; }
        kill -0 "$DPID" 2>/dev/null || { echo "the daemon exited:" >&2; tail -3 "$W/daemon.log" >&2; exit 1; }
        sleep 0.02
    done
}
stop() {
    if [ -n "$DPID" ]; then
        kill "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
        DPID=
    fi
}
cleanup() {
    stop
    sleep 0.5 # supervisors end with their (short) jobs
    umount "$W/fullfs" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
sub() { # socket, count: prints the acknowledged ids
    "$J" submit --socket "$1" -q --cpus 0.02 --memory 16 --count "$2" -- \
        /bin/sh -c "echo \${JOBCELL_SCRATCH##*-} >> $W/ran/log"
}
t0=$(date +%s)

# 1. SIGKILL of the daemon during 1000 jobs.
S=$W/state
SOCK=$W/api.sock
start "$S" "$SOCK"
: >"$W/acked"
for round in 1 2 3 4 5 6 7 8 9 10; do
    sub "$SOCK" 100 >>"$W/acked"
    sleep "0.$(shuf -i 0-4 -n 1)$(shuf -i 0-9 -n 1)"
    kill -KILL "$DPID"
    wait "$DPID" 2>/dev/null || true
    DPID=
    start "$S" "$SOCK"
done
acked=$(wc -l <"$W/acked")
i=0
while :; do
    active=$("$J" q --socket "$SOCK" --json | jq length)
    [ "$active" -eq 0 ] && break
    i=$((i + 1))
    [ $i -lt 1500 ] || break
    sleep 0.2
done
"$J" history --socket "$SOCK" --json --limit 100000 >"$W/history.json"
jq -r '.[].id' "$W/history.json" | sort >"$W/known"
sort "$W/acked" >"$W/acked.sorted"
lost=$(comm -23 "$W/acked.sorted" "$W/known" | wc -l)
stuck=$active
# Ids the jobs logged, in decimal; a job that ran twice logs twice.
while read -r hex; do printf '%d\n' "0x$hex"; done <"$W/ran/log" | sort >"$W/ran.ids"
dup=$(uniq -d "$W/ran.ids" | wc -l)
completed=$(jq '[.[] | select(.state == "completed")] | length' "$W/history.json")
jq -r '.[] | select(.state == "completed") | .id' "$W/history.json" | sort >"$W/completed"
unrun=$(comm -23 "$W/completed" "$W/ran.ids" | wc -l)
failed=$(jq '[.[] | select(.state != "completed")] | length' "$W/history.json")
stop
t1=$(date +%s)
echo "kill -9 x10 during $acked jobs ($((t1 - t0)) s): lost $lost, duplicated $dup, stuck $stuck, completed without running $unrun; completed $completed, failed $failed"
if [ "$failed" -gt 0 ]; then
    jq -r '.[] | select(.state != "completed") | "  job \(.id): \(.reason)"' "$W/history.json" | sort | uniq -c | sort -rn | head -5
fi

# 2. The state dir's filesystem full.
F=$W/fullfs
mount -t tmpfs -o size=32m,mode=0755 jobcell-chaos "$F"
FSOCK=$W/full.sock
start "$F/state" "$FSOCK"
pid=$DPID
first=$(sub "$FSOCK" 1)
dd if=/dev/zero of="$F/filler" bs=64k 2>/dev/null || true
if refused=$(sub "$FSOCK" 1 2>&1); then
    echo "full disk: a submission was accepted ($refused)"
    full_ok=0
else
    full_ok=1
fi
kill -0 "$pid" 2>/dev/null || { echo "full disk: the daemon exited:"; tail -2 "$W/daemon.log"; exit 1; }
"$J" q --socket "$FSOCK" >/dev/null
rm "$F/filler"
again=$(sub "$FSOCK" 1)
i=0
until [ "$("$J" q --socket "$FSOCK" --json | jq length)" -eq 0 ] || [ $i -ge 500 ]; do
    i=$((i + 1))
    sleep 0.05
done
state=$("$J" history --socket "$FSOCK" --json | jq -r ".[] | select(.id == $again) | .state")
kill -0 "$pid" 2>/dev/null && [ "$DPID" = "$pid" ] || full_ok=0
[ "$state" = completed ] || full_ok=0
echo "full disk: job $first ran; filled, a submission was refused: '$refused'; freed, job $again $state; daemon pid $pid throughout"
stop
JOBCELL="$J" "$(dirname "$(realpath "$0")")/api-flood.sh" 3000 10 | grep -e '^q, ' -e 'refusals'
t2=$(date +%s)
echo "total $((t2 - t0)) s"
[ "$lost" -eq 0 ] && [ "$dup" -eq 0 ] && [ "$stuck" -eq 0 ] && [ "$unrun" -eq 0 ] && [ "$full_ok" -eq 1 ]
