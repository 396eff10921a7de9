#!/usr/bin/env bash
# Launch latency of `jobcell run -- /bin/true`, side by side in one hyperfine run, against
# bubblewrap and unshare, and with the variants that matter: scratch on the root filesystem or a
# tmpfs, and --image (a busybox image registered into a throwaway store).
#   bench/launch.sh [PATH/TO/jobcell]      (root; RUNS=200 by default; JSON kept in $OUT)
set -euo pipefail
jc=$(realpath "${1:-target/release/jobcell}")
runs=${RUNS:-200}
out=${OUT:-$(mktemp -d /tmp/jobcell-launch.XXXXXX)}
need=()
for p in hyperfine:hyperfine bwrap:bubblewrap busybox:busybox-static; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
work=$(mktemp -d /var/lib/jobcell-bench.XXXXXX)
chmod 755 "$work"   # jobs (nobody) pass through it to their scratch dirs
shm=$(mktemp -d /dev/shm/jobcell-bench.XXXXXX)
trap 'rm -rf "$work" "$shm"' EXIT
mkdir -p "$work/tree/bin" "$work/tree/etc"
cp "$(command -v busybox)" "$work/tree/bin/busybox"
ln -s busybox "$work/tree/bin/true"
"$jc" image add bench "$work/tree" --public --state-dir "$work/state" >/dev/null
run="$jc run --state-dir $work/state"
hyperfine -N --warmup 10 --runs "$runs" --export-json "$out/launch.json" \
  -n unshare 'unshare --pid --mount --fork --mount-proc /bin/true' \
  -n bwrap 'bwrap --unshare-pid --bind / / --tmpfs /tmp --dev /dev --proc /proc /bin/true' \
  -n jobcell "$run --scratch-base $work/scratch -- /bin/true" \
  -n jobcell-tmpfs "$run --scratch-base $shm -- /bin/true" \
  -n jobcell-tmpfs-image "$run --scratch-base $shm --image bench -- /bin/true" >/dev/null
python3 - "$out/launch.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1e3 for x in json.load(open(sys.argv[1]))["results"]}
print("medians (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
print(f"jobcell (scratch on the root fs) / bwrap: {r['jobcell'] / r['bwrap']:.2f}")
print(f"jobcell (scratch on tmpfs) / bwrap:       {r['jobcell-tmpfs'] / r['bwrap']:.2f}")
print(f"--image adds: {r['jobcell-tmpfs-image'] - r['jobcell-tmpfs']:+.2f} ms")
PY
echo "JSON: $out/launch.json"
