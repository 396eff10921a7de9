#!/usr/bin/env python3
"""Launch latency of several commands measured interleaved, so that the machine's drift
(another build, the disk's background work) lands on every command alike.

    bench/interleave.py [--rounds N] [--warmup N] [--gap-ms MS] NAME=COMMAND NAME=COMMAND...

Each round runs every command once, in a fresh random order, `--gap-ms` apart; each launch is
a posix_spawn of the command's argv (no shell) timed from the spawn to the end of its waitpid.
Prints each command's median, p10 and p90 in ms, and every command's median as a ratio of the
first command's. A command that exits non-zero stops the run with its name and status.

Example (as root, release build):

    bench/interleave.py --rounds 300 \\
        bwrap='bwrap --unshare-pid --bind / / --tmpfs /tmp --dev /dev --proc /proc /bin/true' \\
        jobcell='target/release/jobcell run -- /bin/true'
"""

import argparse
import os
import random
import shlex
import statistics
import sys
import time


def spawn_and_wait(argv):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status = os.waitpid(pid, 0)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / 1e6, os.waitstatus_to_exitcode(status)


def resolve(argv):
    if "/" in argv[0]:
        return [os.path.abspath(argv[0])] + argv[1:]
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        p = os.path.join(d, argv[0])
        if os.access(p, os.X_OK):
            return [p] + argv[1:]
    sys.exit(f"interleave.py: {argv[0]}: not found in PATH")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--gap-ms", type=float, default=2.0)
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    a = ap.parse_args()
    cmds = []
    for c in a.commands:
        name, sep, line = c.partition("=")
        if not sep or not name or not line.strip():
            sys.exit(f"interleave.py: '{c}': expected NAME=COMMAND")
        cmds.append((name, resolve(shlex.split(line))))
    times = {name: [] for name, _ in cmds}
    for r in range(a.warmup + a.rounds):
        order = cmds[:]
        random.shuffle(order)
        for name, argv in order:
            ms, code = spawn_and_wait(argv)
            if code != 0:
                sys.exit(f"interleave.py: {name} exited with {code}")
            if r >= a.warmup:
                times[name].append(ms)
            time.sleep(a.gap_ms / 1000)
    base = statistics.median(times[cmds[0][0]])
    print(f"{'command':<20} {'median ms':>10} {'p10':>8} {'p90':>8} {'ratio':>7}")
    for name, _ in cmds:
        t = sorted(times[name])
        med = statistics.median(t)
        p10 = t[len(t) // 10]
        p90 = t[(len(t) * 9) // 10]
        print(f"{name:<20} {med:>10.3f} {p10:>8.3f} {p90:>8.3f} {med / base:>7.2f}")
    print(f"({a.rounds} rounds, order shuffled each round, {a.gap_ms} ms apart)")


if __name__ == "__main__":
    main()
