#!/bin/sh
# A large submit-file cluster end to end: submit N held jobs from one file (client + daemon),
# the request's size, the daemon's RSS after, `jobcell q` on them (its default limit), and the
# scheduler with N jobs waiting that cannot start: the CPU per event of short jobs that do.
# Run as root from the repo root after
#   cargo build --release -p jobcell --bins
# Usage: bench/cluster.sh [N]     (default 100000; JOBCELL=path/to/jobcell for another build;
#        SCHED_ONLY=1 for part 4 alone, e.g. to compare with a build whose clusters are smaller)
set -eu
N=${1:-100000}
. "$(dirname "$0")/lib.sh"
start_daemon "$J" daemon --cpus 2 --memory 8G
now() { date +%s.%N; }
dcpu() { awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print (f[12] + f[13]) / '"$(getconf CLK_TCK)"' }' /proc/$DPID/stat; }
mkdir "$D/work"
cd "$D/work"
printf 'executable = /bin/echo\narguments = $(Process) in $(Cluster)\noutput = out.$(Process)\nerror = err.$(Process)\nrequest_memory = 16M\nrequest_cpus = 1\nhold = true\nqueue %s\n' "$N" > held.sub

if [ -z "${SCHED_ONLY:-}" ]; then
# 1. Submit N held jobs from one file: wall time of `jobcell submit`, daemon CPU for it.
c0=$(dcpu); t0=$(now)
"$J" submit --socket "$SOCK" held.sub >/dev/null
t1=$(now); c1=$(dcpu)
echo "submit $N jobs (held): $(echo "$t1 - $t0" | bc) s wall; daemon CPU $(echo "$c1 - $c0" | bc) s"
echo "daemon RSS after: $(awk '/VmRSS/ {print $2 / 1024 " MiB"}' /proc/$DPID/status)"

# 2. The request's size: the same file again under strace (the socket writes of the client).
cl=$(strace -f -qq -e trace=write,writev,sendto,sendmsg -e signal=none -o "$D/trace" \
    "$J" submit --socket "$SOCK" held.sub | sed -n 's/.* to cluster \([0-9]*\) .*/\1/p')
bytes=$(awk -F'= ' '/^[0-9]+ +(write|writev|sendto|sendmsg)\((3|4|5|6|7)/ {s += $NF} END {print s}' "$D/trace")
echo "bytes the client wrote to the socket (both requests of a submit): $bytes"
"$J" rm --socket "$SOCK" "$cl." >/dev/null

# 3. `jobcell q` (default limit) with N held jobs in the queue.
t0=$(now)
"$J" q --socket "$SOCK" >/dev/null
t1=$(now)
echo "q with $N jobs queued: $(echo "$t1 - $t0" | bc) s; $("$J" q --socket "$SOCK" | tail -1)"
"$J" rm --socket "$SOCK" --all-mine >/dev/null
fi

# 4. Scheduler: a sleeper takes 1.9 of the 2 cpus, N released 1-cpu jobs wait behind it, and
# 200 short 0.05-cpu jobs of the same owner start and finish one at a time beside them: each
# submit and each exit is a scheduler pass over a queue of N jobs that cannot start.
"$J" submit --socket "$SOCK" -q --cpus 1.9 --memory 16 -- /bin/sleep 600 >/dev/null
"$J" submit --socket "$SOCK" -q --cpus 1 --memory 16 --count "$N" -- /bin/true >/dev/null
c0=$(dcpu); t0=$(now)
k=0
while [ $k -lt 200 ]; do
    id=$("$J" submit --socket "$SOCK" -q --cpus 0.05 --memory 16 -- /bin/true)
    "$J" wait --socket "$SOCK" "$id" >/dev/null
    k=$((k + 1))
done
t1=$(now); c1=$(dcpu)
echo "200 short jobs beside $N waiting ones: $(echo "scale=2; ($t1 - $t0) * 1000 / 200" | bc) ms each, daemon CPU $(echo "scale=2; ($c1 - $c0) * 1000 / 200" | bc) ms per job (submit + start + exit)"
