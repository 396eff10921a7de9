#!/usr/bin/env python3
"""Idle cost of the node agent with N (default 500) running `sleep` jobs. Reports
 - CPU used by the daemon (and its spawner) + all supervisors + all job inits over a window,
   in % of one core (utime+stime deltas from /proc/PID/stat);
 - memory per job of supervisor + init: the sum of their PSS (/proc/PID/smaps_rollup: shared
   pages divided among the sharers) / N; also their summed private (unshared) memory / N, and
   the `supervisors` cgroup's RSS / N.
Run as root from the repo root after `cargo build --release -p jobcell`.
Usage: bench/idle.py [N] [WINDOW_SECONDS]"""
import json, os, shutil, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
WIN = float(sys.argv[2]) if len(sys.argv) > 2 else 30
J = os.environ.get("JOBCELL", os.path.join(os.getcwd(), "target/release/jobcell"))
HZ = os.sysconf("SC_CLK_TCK")

def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []

def ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    f = s[s.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])

def rollup(pid, key):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

d = tempfile.mkdtemp(prefix="jobcell-idle.", dir="/tmp")
s = tempfile.mkdtemp(prefix="jobcell-idle-scratch.", dir="/dev/shm")
os.chmod(d, 0o755); os.chmod(s, 0o755)
sock = f"{d}/api.sock"
log = open(f"{d}/daemon.log", "w")
daemon = subprocess.Popen([J, "daemon", "--state-dir", f"{d}/state", "--socket", sock,
                           "--scratch-base", s, "--cpus", "2", "--memory", "8G"], stderr=log)
def cli(*a):
    return subprocess.run([J, *a, "--socket", sock], capture_output=True, text=True, check=True).stdout
try:
    while not os.path.exists(sock):
        time.sleep(0.01)
    subprocess.run([J, "submit", "--socket", sock, "--count", str(N), "--cpus", "0.002",
                    "--memory", "8", "--grace", "0", "-q", "--", "/bin/sleep", "100000"],
                   check=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while True:
        sups = []
        for i in range(1, N + 1):
            try:
                c = json.load(open(f"{d}/state/jobs/{i}/claim-1"))
                sups.append(c["supervisor"]["pid"])
            except (OSError, ValueError, KeyError):
                pass
        inits = [c for p in sups for c in children(p)]
        jobs = [c for p in inits for c in children(p)]
        if len(jobs) >= N:
            break
        if time.time() > deadline:
            sys.exit(f"only {len(jobs)} of {N} jobs running after 300 s")
        time.sleep(1)
    time.sleep(3)
    ours = [daemon.pid] + children(daemon.pid) + sups + inits
    a = sum(ticks(p) for p in ours)
    t0 = time.time()
    time.sleep(WIN)
    b = sum(ticks(p) for p in ours)
    cpu = (b - a) / HZ / (time.time() - t0) * 100
    pss = sum(rollup(p, "Pss") for p in sups + inits)
    priv = sum(rollup(p, "Private_Clean") + rollup(p, "Private_Dirty") for p in sups + inits)
    mcg = [l.split(":", 2)[2].strip() for l in open(f"/proc/{daemon.pid}/cgroup")
           if "memory" in l.split(":")[1].split(",")][0]
    rss = 0
    try:
        for line in open(f"/sys/fs/cgroup/memory{mcg}/jobcell/supervisors/memory.stat"):
            if line.startswith("total_rss "):
                rss = int(line.split()[1])
    except OSError:
        pass
    print(f"{N} sleeping jobs: daemon + spawner + supervisors + inits used {cpu:.3f}% of one core over {WIN:.0f} s")
    print(f"per job, supervisor + init: PSS {pss / N / 1024:.3f} MiB, private {priv / N / 1024:.3f} MiB; "
          f"supervisors cgroup RSS / job {rss / N / 2**20:.3f} MiB; daemon PSS {rollup(daemon.pid, 'Pss') / 1024:.1f} MiB")
finally:
    try:
        cli("rm", "--all-mine")
    except subprocess.CalledProcessError:
        pass
    for _ in range(1200):
        try:
            if '"id"' not in cli("q", "--json"):
                break
        except subprocess.CalledProcessError:
            break
        time.sleep(0.1)
    daemon.terminate()
    daemon.wait()
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(s, ignore_errors=True)
