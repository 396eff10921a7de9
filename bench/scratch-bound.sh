#!/usr/bin/env bash
# What bounding a job's scratch costs per launch of `jobcell run -- /bin/true`, side by side in
# one hyperfine run: no bound ([scratch] disk = "none"), the node's default bound (a subvolume
# of the scratch pool with a qgroup limit), an explicit --disk (a loop-mounted ext4 made per
# job), and bubblewrap. The pool is made in a throwaway state dir and unmounted at the end.
#   bench/scratch-bound.sh [PATH/TO/jobcell]      (root; RUNS=200 by default; JSON kept in $OUT)
set -euo pipefail
jc=$(realpath "${1:-target/release/jobcell}")
runs=${RUNS:-200}
out=${OUT:-$(mktemp -d /tmp/jobcell-bound.XXXXXX)}
need=()
for p in hyperfine:hyperfine bwrap:bubblewrap mkfs.btrfs:btrfs-progs; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
work=$(mktemp -d /var/lib/jobcell-bench.XXXXXX)
chmod 755 "$work"   # jobs (nobody) pass through it to their scratch dirs
cleanup() {
  if mountpoint -q "$work/pool"; then umount "$work/pool"; fi
  rm -rf "$work"
}
trap cleanup EXIT
conf() { # NAME SCRATCH_BASE DISK
  printf '[paths]\nstate_dir = "%s"\nscratch_base = "%s"\n[scratch]\ndisk = "%s"\npool_size = "4G"\n' \
    "$work/state" "$2" "$3" >"$work/$1.toml"
}
conf none "$work/scratch" none
conf bound "$work/pool" 1G
"$jc" run --config "$work/bound.toml" -- /bin/true   # makes and mounts the pool once
hyperfine -N --warmup 10 --runs "$runs" --export-json "$out/bound.json" \
  -n bwrap 'bwrap --unshare-pid --bind / / --tmpfs /tmp --dev /dev --proc /proc /bin/true' \
  -n unbounded "$jc run --config $work/none.toml -- /bin/true" \
  -n bound "$jc run --config $work/bound.toml -- /bin/true" \
  -n disk "$jc run --config $work/none.toml --disk 64M -- /bin/true" >/dev/null
python3 - "$out/bound.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1e3 for x in json.load(open(sys.argv[1]))["results"]}
print("medians (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
print(f"bound - unbounded: {r['bound'] - r['unbounded']:+.2f} ms; bound / bwrap: {r['bound'] / r['bwrap']:.2f}")
print(f"--disk - unbounded: {r['disk'] - r['unbounded']:+.2f} ms")
PY
echo "JSON: $out/bound.json"
