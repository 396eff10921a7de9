#!/bin/sh
# Benchmark: `jobcell image add` of a ~200 MB tarball vs GNU tar extracting the same
# file into a directory on the same filesystem, side by side.
#
#   bench/image-import.sh [JOBCELL_BINARY] [WORK_DIR]
#
# Needs hyperfine (apt-get install hyperfine). Run as root for a like-for-like comparison
# (both then restore ownership). jobcell also hashes every byte (content digest) and ends with
# syncfs() so the image is durable before its row is committed; GNU tar does neither, so a
# "tar + sync -f" run is shown as well. On a busy machine hyperfine's per-command blocks see
# different load, so a second, interleaved measurement (tar, jobcell, tar, jobcell, ...)
# reports the median ratio too.
set -eu
JOBCELL=${1:-target/release/jobcell}
WORK=${2:-$(mktemp -d /var/tmp/jobcell-bench.XXXXXX)}
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-7}
command -v hyperfine >/dev/null || { echo "hyperfine missing: apt-get install hyperfine" >&2; exit 1; }
[ -x "$JOBCELL" ] || { echo "no jobcell binary at $JOBCELL (cargo build --release -p jobcell)" >&2; exit 1; }
JOBCELL=$(realpath "$JOBCELL")
mkdir -p "$WORK"
TARBALL=$WORK/usr.tar
if [ ! -s "$TARBALL" ]; then
    # A realistic OS-tree mix (headers, python, binaries, libraries) cut at ~200 MB.
    (cd / && find usr/include usr/lib/python3* usr/bin usr/sbin usr/lib/x86_64-linux-gnu \
        -printf '%s\t%p\n' 2>/dev/null) |
        awk -F '\t' '{ s += $1; print $2; if (s > 200 * 1024 * 1024) exit }' > "$WORK/list"
    tar -C / --no-recursion -cf "$TARBALL" -T "$WORK/list"
fi
SIZE=$(stat -c %s "$TARBALL")
ENTRIES=$(tar -tf "$TARBALL" | wc -l)
echo "tarball: $TARBALL, $((SIZE / 1048576)) MiB, $ENTRIES entries; fs: $(df --output=fstype "$WORK" | tail -1); $(nproc) cpus; load: $(cut -d' ' -f1-3 /proc/loadavg)"

STATE=$WORK/state
X=$WORK/x
hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/result.json" \
    --prepare "rm -rf $X && mkdir $X && sync" \
    -n "gnu-tar" "tar -xf $TARBALL -C $X" \
    --prepare "rm -rf $X && mkdir $X && sync" \
    -n "gnu-tar+sync" "tar -xf $TARBALL -C $X && sync -f $X" \
    --prepare "$JOBCELL image rm bench --force --state-dir $STATE >/dev/null 2>&1 || true; sync" \
    -n "jobcell" "$JOBCELL image add bench $TARBALL --state-dir $STATE"

# Interleaved rounds: each pair sees the same background load.
: > "$WORK/rounds"
i=0
while [ $i -lt "$ROUNDS" ]; do
    rm -rf "$X"; mkdir "$X"; "$JOBCELL" image rm bench --force --state-dir "$STATE" >/dev/null 2>&1 || true; sync
    a=$(date +%s.%N); tar -xf "$TARBALL" -C "$X"; b=$(date +%s.%N)
    sync
    c=$(date +%s.%N); "$JOBCELL" image add bench "$TARBALL" --state-dir "$STATE" >/dev/null 2>&1; d=$(date +%s.%N)
    echo "$a $b $c $d" >> "$WORK/rounds"
    i=$((i + 1))
done

python3 - "$WORK/result.json" "$WORK/rounds" "$SIZE" <<'PY'
import json, statistics as st, sys
res = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
size = int(sys.argv[3]) / 1048576
med = lambda n: st.median(res[n]["times"])
print(f"hyperfine medians: gnu-tar {med('gnu-tar'):.3f}s, gnu-tar+sync {med('gnu-tar+sync'):.3f}s, jobcell {med('jobcell'):.3f}s")
print(f"  speed ratio jobcell vs gnu-tar      = {med('gnu-tar') / med('jobcell'):.2f}x  (>= 0.8 required)")
print(f"  speed ratio jobcell vs gnu-tar+sync = {med('gnu-tar+sync') / med('jobcell'):.2f}x")
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
ratios = [(b - a) / (d - c) for a, b, c, d in rows]
tars = [b - a for a, b, c, d in rows]
jcs = [d - c for a, b, c, d in rows]
print(f"interleaved ({len(rows)} rounds): gnu-tar median {st.median(tars):.3f}s ({size / st.median(tars):.0f} MiB/s), "
      f"jobcell median {st.median(jcs):.3f}s ({size / st.median(jcs):.0f} MiB/s)")
print(f"  per-round ratios: {' '.join(f'{r:.2f}' for r in ratios)}")
print(f"  median speed ratio jobcell vs gnu-tar = {st.median(ratios):.2f}x  (>= 0.8 required)")
PY
"$JOBCELL" image rm bench --force --state-dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$X"
echo "(work dir $WORK kept for re-runs; remove it when done)"
