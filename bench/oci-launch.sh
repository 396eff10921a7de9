#!/usr/bin/env bash
# Launch latency of a job in a container image of several layers (whiteouts, an opaque dir)
# against the same files registered as a plain tree, measured interleaved in one run.
#   bench/oci-launch.sh [PATH/TO/jobcell]   (root; ROUNDS=1000 by default)
# Also prints what the second of two images sharing a base layer adds to the store.
set -euo pipefail
here=$(dirname "$(realpath "$0")")
jc=$(realpath "${1:-target/release/jobcell}")
rounds=${ROUNDS:-1000}
command -v busybox >/dev/null || { echo "busybox missing: apt-get install busybox-static" >&2; exit 1; }
work=$(mktemp -d /var/lib/jobcell-bench.XXXXXX)
chmod 755 "$work"   # jobs (nobody) pass through it to their scratch dirs
shm=$(mktemp -d /dev/shm/jobcell-bench.XXXXXX)
trap 'rm -rf "$work" "$shm"' EXIT

# Four layers: busybox; /etc and /opt files; a whiteout of /opt/old and /opt/repl made opaque;
# more files. The plain tree holds the files the layers leave.
python3 - "$(command -v busybox)" "$work" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
bb, work = sys.argv[1], sys.argv[2]
def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            i = tarfile.TarInfo(name)
            if kind == "dir":
                i.type, i.mode = tarfile.DIRTYPE, 0o755
                t.addfile(i)
            elif kind == "sym":
                i.type, i.linkname = tarfile.SYMTYPE, data
                t.addfile(i)
            else:
                i.size, i.mode = len(data), 0o755 if name.startswith("bin/") else 0o644
                t.addfile(i, io.BytesIO(data))
    return buf.getvalue()
applets = ["true", "sh", "echo", "cat", "ls"]
base = [("bin/", "dir", None), ("bin/busybox", "file", open(bb, "rb").read())]
base += [(f"bin/{a}", "sym", "busybox") for a in applets]
etc = [("etc/", "dir", None), ("opt/", "dir", None), ("opt/repl/", "dir", None)]
etc += [(f"etc/f{i}", "file", b"x" * i) for i in range(200)]
etc += [("opt/old", "file", b"old"), ("opt/repl/gone", "file", b"gone")]
wh = [("opt/.wh.old", "file", b""), ("opt/repl/", "dir", None),
      ("opt/repl/.wh..wh..opq", "file", b""), ("opt/repl/new", "file", b"new")]
more = [("usr/", "dir", None), ("usr/share/", "dir", None)]
more += [(f"usr/share/d{i}", "file", os.urandom(512)) for i in range(300)]
layers = [tar(l) for l in (base, etc, wh, more)]
def layout(dirname, layers):
    blobs = os.path.join(work, dirname, "blobs/sha256")
    os.makedirs(blobs)
    def put(b):
        d = hashlib.sha256(b).hexdigest()
        open(os.path.join(blobs, d), "wb").write(b)
        return {"digest": "sha256:" + d, "size": len(b)}
    gzl = [gzip.compress(l, mtime=0) for l in layers]
    diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    mt = "application/vnd.oci.image."
    man = json.dumps({"schemaVersion": 2, "mediaType": mt + "manifest.v1+json",
                      "config": dict(put(cfg), mediaType=mt + "config.v1+json"),
                      "layers": [dict(put(g), mediaType=mt + "layer.v1.tar+gzip") for g in gzl]}).encode()
    idx = {"schemaVersion": 2, "manifests": [dict(put(man), mediaType=mt + "manifest.v1+json")]}
    open(os.path.join(work, dirname, "index.json"), "w").write(json.dumps(idx))
    open(os.path.join(work, dirname, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
layout("oci", layers)
# A second image on the same two base layers, with one layer of its own.
own = [("srv/", "dir", None)] + [(f"srv/s{i}", "file", os.urandom(1024)) for i in range(100)]
layout("oci2", layers[:2] + [tar(own)])
# The same files, flat.
tree = os.path.join(work, "tree")
for name, kind, data in base + etc + more + [("opt/repl/", "dir", None), ("opt/repl/new", "file", b"new")]:
    p = os.path.join(tree, name)
    if name in ("opt/old", "opt/repl/gone"):
        continue
    if kind == "dir":
        os.makedirs(p, exist_ok=True)
    elif kind == "sym":
        os.symlink(data, p)
    else:
        open(p, "wb").write(data)
        os.chmod(p, 0o755 if name.startswith("bin/") else 0o644)
PY
st="--state-dir $work/state"
"$jc" image add tree "$work/tree" --public $st >/dev/null
"$jc" image add oci "$work/oci" --public $st >/dev/null
"$jc" image ls $st
# Bytes on disk (a file hardlinked into several trees counts once) before and after an image
# that shares its first two layers with `oci`.
before=$(du -sb "$work/state/images" | cut -f1)
"$jc" image add oci2 "$work/oci2" --public $st >/dev/null
after=$(du -sb "$work/state/images" | cut -f1)
echo "store: $before bytes, then $after with oci2: +$((after - before)) bytes"
"$jc" image ls $st
run="$jc run $st --scratch-base $shm"
"$here/interleave.py" --rounds "$rounds" \
  tree="$run --image tree -- /bin/true" \
  oci="$run --image oci -- /bin/true"
