# Shared by the bench scripts that drive a daemon: sourced (`. "$(dirname "$0")/lib.sh"`)
# after `set -eu`.
#   J      the jobcell binary: $JOBCELL, or the release build
#   D      a private dir for the state, the socket and the logs (under $STATE_BASE, default /tmp)
#   S      the scratch base, on a tmpfs (/dev/shm): on a root ext4 mounted with discard each
#          rmdir costs ~3 ms, which would dominate short jobs
#   SOCK   the daemon's socket; DPID its pid once start_daemon has run
# On exit the daemon's jobs are removed, the daemon is stopped and D and S are deleted; a
# script with more to undo defines bench_cleanup_more, which runs before the dirs go.

J=${JOBCELL:-$(pwd)/target/release/jobcell}
[ -x "$J" ] || { echo "build first: cargo build --release -p jobcell --bins (or set JOBCELL)" >&2; exit 2; }
D=$(mktemp -d "${STATE_BASE:-/tmp}/jobcell-bench.XXXXXX")
S=$(mktemp -d /dev/shm/jobcell-bench-scratch.XXXXXX)
chmod 755 "$D" "$S"
SOCK=$D/api.sock
DPID=

bench_cleanup() {
    if [ -n "$DPID" ]; then
        "$J" rm --socket "$SOCK" --all-mine >/dev/null 2>&1 || true
        sleep 0.5
        kill "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
        # Supervisors exit with their jobs; give stragglers a moment before removing the dirs.
        sleep 0.5
    fi
    if command -v bench_cleanup_more >/dev/null; then
        bench_cleanup_more
    fi
    rm -rf "$D" "$S"
}
trap bench_cleanup EXIT INT TERM

# start_daemon CMD...: runs CMD (a `jobcell daemon` command line, possibly behind a wrapper
# that execs it) on D's state dir, SOCK and S, in the background; returns once the socket is
# there, or prints the daemon's log and fails.
start_daemon() {
    "$@" --state-dir "$D/state" --socket "$SOCK" --scratch-base "$S" 2>"$D/daemon.log" &
    DPID=$!
    i=0
    while [ ! -S "$SOCK" ]; do
        i=$((i + 1))
        [ $i -lt 500 ] || { cat "$D/daemon.log" >&2; exit 1; }
        sleep 0.01
    done
}
