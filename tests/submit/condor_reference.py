#!/usr/bin/env python3
"""HTCondor's own view of a corpus of submit files, as JSON on stdout.

Usage: condor_reference.py CORPUS_DIR [CLUSTER_ID]

Runs HTCondor's submit parser (the `htcondor` wheel, `Submit(text).jobs()`, no schedd needed)
on every *.sub file in CORPUS_DIR, from inside CORPUS_DIR (so relative paths, `queue ... from
FILE` and `matching` globs resolve there), and prints:

  {"cwd": ..., "environ": {...}, "files": {"name.sub": {"ok": true, "jobs": [AD, ...]}
                                                   | {"ok": false, "error": "..."}}}

`environ` is this process's environment, which `getenv` and `$ENV()` see; the Rust side uses
the same for its own parse. Each AD holds the attributes the differential test compares; a
literal is a JSON value, any other ClassAd expression is {"expr": "<unparsed text>"} (with
"value", its value in the job's ad, for the requests).
`custom` holds the attributes that no plain submit file produces (the `+Attr`s).

The Python `Submit` object takes a single queue statement at the end of its text, so a file
with several is split the way condor_submit processes it: statement i sees every command
before it, and its procs are numbered on from the previous statement's.
"""
import json
import os
import sys
import warnings

warnings.simplefilter("ignore")
import classad  # noqa: E402
import htcondor  # noqa: E402

FIELDS = [
    "ProcId", "ClusterId", "Cmd", "Args", "Arguments", "Environment", "RequestCpus",
    "RequestMemory", "RequestDisk", "Iwd", "In", "Out", "Err", "UserLog", "JobPrio",
    "JobStatus", "TransferInput", "ShouldTransferFiles", "WhenToTransferOutput",
]
# Requests that may be expressions: their value in the job's ad is what jobcell queues.
EVALUATED = {"RequestCpus", "RequestMemory", "RequestDisk"}
# Attributes HTCondor derives from the commands jobcell implements (not custom attributes).
DERIVED = {
    "args", "arguments", "userlog", "transferinput", "holdreason", "holdreasoncode",
    "holdreasonsubcode", "environment", "streamin", "streamout", "streamerr",
}

# The job policy attributes, compared by their text (only those that differ from a plain job's).
POLICY = [
    "PeriodicHold", "PeriodicHoldReason", "PeriodicHoldSubCode", "PeriodicRelease",
    "PeriodicRemove", "OnExitHold", "OnExitHoldReason", "OnExitHoldSubCode", "OnExitRemove",
    "JobMaxRetries", "JobSuccessExitCode", "AllowedExecuteDuration", "JobMaxVacateTime",
    "LeaveJobInQueue",
]
DERIVED |= {k.lower() for k in POLICY}


def enc(ad, key):
    if key not in ad:
        return None
    v = ad[key]
    if isinstance(v, (classad.ExprTree, classad.Value)):
        out = {"expr": str(ad.lookup(key))}
        if key in EVALUATED:
            value = ad.eval(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out["value"] = value
        return out
    return v


def split_queues(text):
    """One text per queue statement: all non-queue lines so far, then that statement."""
    lines = text.splitlines()
    prefix, out, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        words = line.strip().split(None, 1)
        if words and words[0].lower() == "queue" and not (len(words) > 1 and words[1].startswith("=")):
            stmt = [line]
            if line.rstrip().endswith("("):
                while i < len(lines):
                    stmt.append(lines[i])
                    i += 1
                    if lines[i - 1].strip().startswith(")"):
                        break
            out.append("\n".join(prefix + stmt) + "\n")
        else:
            prefix.append(line)
    return out or [text]


def baseline_ad():
    return next(iter(htcondor.Submit("executable = /bin/true\nqueue\n").jobs(clusterid=1)))


def baseline_attrs():
    return {k.lower() for k in baseline_ad().keys()}


def policy(ad, plain):
    return {
        k: str(ad.lookup(k)) for k in POLICY
        if k in ad and (k not in plain or str(ad.lookup(k)) != str(plain.lookup(k)))
    }


def run(text, cluster, base):
    jobs = []
    for part in split_queues(text):
        sub = htcondor.Submit(part)
        for ad in sub.jobs(clusterid=cluster, procid=len(jobs)):
            rec = {k: enc(ad, k) for k in FIELDS if k in ad}
            rec["policy"] = policy(ad, PLAIN)
            rec["custom"] = {
                k: enc(ad, k) for k in ad.keys()
                if k.lower() not in base and k.lower() not in DERIVED
            }
            jobs.append(rec)
    return jobs


def main():
    corpus = os.path.abspath(sys.argv[1])
    cluster = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    os.chdir(corpus)
    base = baseline_attrs()
    global PLAIN
    PLAIN = baseline_ad()
    files = {}
    for name in sorted(os.listdir(".")):
        if not name.endswith(".sub"):
            continue
        with open(name) as f:
            text = f.read()
        try:
            files[name] = {"ok": True, "jobs": run(text, cluster, base)}
        except Exception as e:  # HTCondor refused the file
            files[name] = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()}
    json.dump({"cwd": os.getcwd(), "environ": dict(os.environ), "files": files}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
