#!/usr/bin/env python3
"""The MSRV check of tests/deps/check.sh: reads `cargo metadata` on stdin; every workspace
crate must inherit the workspace's rust-version, and no dependency may declare a newer one."""

import json
import sys


def ver(v):
    return tuple(int(x) for x in v.split("."))


m = json.load(sys.stdin)
members = set(m["workspace_members"])
ours = [p for p in m["packages"] if p["id"] in members]
msrvs = {p.get("rust_version") for p in ours}
bad = []
if len(msrvs) != 1 or None in msrvs:
    listed = ", ".join(f"{p['name']}={p.get('rust_version')}" for p in ours)
    bad.append(f"every workspace crate must inherit rust-version: {listed}")
else:
    (msrv,) = msrvs
    deps = [p for p in m["packages"] if p["id"] not in members]
    for p in deps:
        rv = p.get("rust_version")
        if rv and ver(rv) > ver(msrv):
            bad.append(f"{p['name']} {p['version']} needs Rust {rv}, above the MSRV {msrv}")
    print(f"deps: MSRV {msrv}: {len(deps)} dependencies declare none newer" if not bad else "", end="")
    print()
for b in bad:
    print(f"deps: {b}")
sys.exit(1 if bad else 0)
