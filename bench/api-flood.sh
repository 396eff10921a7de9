#!/bin/sh
# The API under a connection flood: a second user holds (and reopens, as the daemon closes
# them) N idle connections to the daemon's Unix socket for SECS seconds, while `jobcell q`
# runs again and again as root and as a third user; prints the latency of `jobcell q` before
# and during the flood (p50, p99, max) and how many of the flooder's connects were refused.
# Loopback Unix socket only; bounded in count (N) and time (SECS). Run as root from the repo
# root after
#   cargo build --release -p jobcell
# Usage: bench/api-flood.sh [N] [SECS]
#   N      the flooder's connections (default 3000)
#   SECS   how long the flood lasts (default 10)
# NOFILE (default 1024, a distribution's usual limit) is the daemon's descriptor limit, soft
# and hard: a flood of N > NOFILE is what used to stop the API for everyone.
# FLOOD_UID (4242) and OTHER_UID (4243) are numeric uids that need no account.
set -eu
N=${1:-3000}
SECS=${2:-10}
NOFILE=${NOFILE:-1024}
FLOOD_UID=${FLOOD_UID:-4242}
OTHER_UID=${OTHER_UID:-4243}
[ "$(id -u)" = 0 ] || { echo "run as root (the flood comes from another uid)" >&2; exit 2; }
[ "$N" -le 20000 ] && [ "$SECS" -le 120 ] || { echo "at most 20000 connections for 120 s" >&2; exit 2; }
command -v setpriv >/dev/null && command -v python3 >/dev/null || { echo "needs setpriv and python3" >&2; exit 2; }
. "$(dirname "$0")/lib.sh"
start_daemon sh -c 'ulimit -n "$1"; shift; exec "$@"' sh "$NOFILE" "$J" daemon

python3 - "$J" "$SOCK" "$N" "$SECS" "$FLOOD_UID" "$OTHER_UID" <<'EOF'
import os, resource, selectors, signal, socket, subprocess, sys, time

j, sock, n, secs, flood_uid, other_uid = sys.argv[1:]
n, secs, flood_uid, other_uid = int(n), float(secs), int(flood_uid), int(other_uid)

def q_latencies(seconds, uid=None):
    """`jobcell q` again and again for `seconds`; each run's wall time in ms."""
    def become():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        r = subprocess.run([j, "q", "--socket", sock, "--timeout", "20"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           preexec_fn=become if uid is not None else None)
        ms = (time.monotonic() - t) * 1000
        out.append(ms if r.returncode == 0 else float("inf"))
    return out

def summary(name, v):
    v = sorted(v)
    failed = sum(1 for x in v if x == float("inf"))
    ok = [x for x in v if x != float("inf")] or [float("nan")]
    p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]
    print(f"{name:<28} runs {len(v):>4}  failed {failed:>3}  p50 {p(0.50):7.1f} ms  "
          f"p99 {p(0.99):7.1f} ms  max {ok[-1]:7.1f} ms")

def flood(ready_w):
    """The second user: hold n connections, reopen those the daemon closes, until killed."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, n + 64))
    os.setgroups([]); os.setgid(flood_uid); os.setuid(flood_uid)
    sel = selectors.DefaultSelector()
    stats = {"connects": 0, "closed_by_daemon": 0}
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(sock)
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            s.close()
            return False
        stats["connects"] += 1
        sel.register(s, selectors.EVENT_READ)
        return True
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    open_ = 0
    while open_ < n and not stop[0]:
        if connect():
            open_ += 1
        else:
            time.sleep(0.001)
    os.write(ready_w, b"x"); os.close(ready_w)
    while not stop[0]:
        # An idle connection becomes readable only when the daemon answers (a refusal) or
        # closes it: either way, replace it.
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            sel.unregister(s)
            s.close()
            stats["closed_by_daemon"] += 1
            connect()
    print(f"flooder (uid {flood_uid}): {stats['connects']} connects, "
          f"{stats['closed_by_daemon']} closed by the daemon", flush=True)
    os._exit(0)

summary("q, root, no flood", q_latencies(min(secs, 3)))
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    flood(w)
os.close(w)
os.read(r, 1)
summary(f"q, root, {n} conns flood", q_latencies(secs / 2))
summary(f"q, uid {other_uid}, {n} conns flood", q_latencies(secs / 2, other_uid))
os.kill(pid, signal.SIGTERM)
os.waitpid(pid, 0)
EOF
echo "daemon log lines about refusals: $(grep -c -e refus -e 'accept:' "$D/daemon.log" || true)"
