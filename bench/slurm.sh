#!/usr/bin/env bash
# Added launch latency of jobcell under Slurm, against a plain `srun /bin/true`:
#   1. srun /bin/true                                   (no plugin)
#   2. srun jobcell run -- /bin/true                    (rootless jobcell inside the task)
#   3. srun /bin/true                                   (jobcell_spank.so in plugstack.conf)
#   4. srun --jobcell-image=bench /bin/true             (plugin, task in an image)
# each as whole jobs and as steps in one allocation; then the task side alone (jobcell in SPANK
# task mode and jobcell run, exec'd directly as the user), which Slurm's own noise does not blur.
# A single-node Slurm (munged, slurmctld, slurmd) is started on loopback ports under a temporary
# directory and stopped by pid at the end. Needs root, slurm-wlm, munge, hyperfine, and a static
# busybox for the image.
#
# Usage: sudo bench/slurm.sh            (builds release binaries with cargo first)
#   JOBCELL_BIN=... SPANK_SO=...        use prebuilt ones instead
#   RUNS=50                             hyperfine runs per case
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "bench/slurm.sh: run as root" >&2; exit 1; }
for b in slurmctld slurmd munged mungekey srun hyperfine setpriv; do
  command -v "$b" >/dev/null || { echo "bench/slurm.sh: $b missing (apt-get install slurm-wlm munge hyperfine)" >&2; exit 1; }
done
RUNS=${RUNS:-50}
USER_NAME=jobcell-slurm
id -u "$USER_NAME" >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$USER_NAME"
uid=$(id -u "$USER_NAME") gid=$(id -g "$USER_NAME")

if [[ -z ${JOBCELL_BIN:-} || -z ${SPANK_SO:-} ]]; then
  cargo build --release -q -p jobcell -p jobcell-spank
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  JOBCELL_BIN=${JOBCELL_BIN:-$target/release/jobcell}
  SPANK_SO=${SPANK_SO:-$target/release/libjobcell_spank.so}
fi

D=$(mktemp -d /var/lib/jobcell-slurmbench-XXXXXX)
chmod 755 "$D"
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  [[ -f $D/munge/run/munged.pid ]] && kill "$(cat "$D/munge/run/munged.pid")" 2>/dev/null
  sleep 0.3
  rm -rf "$D"
}
trap cleanup EXIT

mkdir -p "$D"/{bin,etc,state,spool,log,run,scratch,work,uscratch} "$D"/munge/{etc,log,lib,run}
chown "$uid:$gid" "$D/work" "$D/uscratch"
install -m 755 "$JOBCELL_BIN" "$D/bin/jobcell"
install -m 755 "$SPANK_SO" "$D/bin/jobcell_spank.so"

# The image: a static busybox and an os-release.
R=$D/rootfs
mkdir -p "$R"/{bin,etc}
cp "$(command -v busybox)" "$R/bin/busybox"
for a in sh true cat; do ln -s busybox "$R/bin/$a"; done
echo 'ID=bench' >"$R/etc/os-release"
"$D/bin/jobcell" image add bench "$R" --public --state-dir "$D/store" >/dev/null

mungekey --create --keyfile="$D/munge/etc/munge.key"
chown -R munge:munge "$D/munge"
chmod 700 "$D"/munge/{etc,log,lib}
chmod 755 "$D/munge/run"
runuser -u munge -- munged --key-file="$D/munge/etc/munge.key" \
  --socket="$D/munge/run/munge.socket.2" --pid-file="$D/munge/run/munged.pid" \
  --log-file="$D/munge/log/munged.log" --seed-file="$D/munge/lib/munge.seed"

port=$((18000 + ($$ % 1000) * 2))
cat >"$D/etc/slurm.conf" <<EOF
ClusterName=jobcellbench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/run/munge.socket.2
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
PlugStackConfig=$D/etc/plugstack.conf
# The same completion path in every phase (the plugin adds a job epilog; without any epilog
# slurmd takes a fast path after which the next job here often waited ~3 s to be scheduled).
Epilog=/bin/true
NodeName=localhost CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES State=UP MaxTime=INFINITE OverSubscribe=FORCE:8
EOF
: >"$D/etc/plugstack.conf"
chmod -R a+rX "$D/etc"
export SLURM_CONF=$D/etc/slurm.conf

slurmctld -D -i -f "$SLURM_CONF" >"$D/log/ctld.out" 2>&1 &
pids+=($!)
start_slurmd() {
  slurmd -D -f "$SLURM_CONF" >"$D/log/slurmd.out" 2>&1 &
  slurmd_pid=$!
  pids+=("$slurmd_pid")
  for _ in $(seq 150); do
    [[ $(sinfo -h -n localhost -o %T 2>/dev/null) == idle ]] && return 0
    sleep 0.2
  done
  echo "bench/slurm.sh: the node did not become idle; logs in $D/log" >&2
  exit 1
}
start_slurmd

hf() {
  (cd "$D/work" && hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$D/$1.json" \
    "setpriv --reuid=$uid --regid=$gid --init-groups -- env SLURM_CONF=$SLURM_CONF $2" >/dev/null)
  python3 - "$D/$1.json" "$3" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = sorted(r["times"])
print(f"{sys.argv[2]:<50} median {r['median']*1000:6.1f} ms  min {t[0]*1000:6.1f}  p90 {t[int(len(t)*0.9)]*1000:6.1f}  max {t[-1]*1000:7.1f} ms")
PY
}

# Step launches inside one allocation: the per-task cost alone, without job allocation,
# completion and epilog.
alloc() {
  (cd "$D/work" && setpriv --reuid="$uid" --regid="$gid" --init-groups -- env SLURM_CONF="$SLURM_CONF" \
    salloc --no-shell -N1 -c1 --mem=100 2>&1 | sed -n 's/.*Granted job allocation \([0-9]*\).*/\1/p')
}

echo "== $(uname -r), $(nproc) cpus, slurm $(srun --version | awk '{print $2}'), $RUNS runs each, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "-- whole jobs (allocation + one step + completion)"
hf plain "srun /bin/true" "srun /bin/true"
hf run "srun $D/bin/jobcell run --scratch-base $D/uscratch -- /bin/true" "srun jobcell run -- /bin/true"
job=$(alloc)
echo "-- steps in one allocation (srun --jobid=$job --overlap)"
hf splain "srun --jobid=$job --overlap /bin/true" "srun /bin/true"
hf srun "srun --jobid=$job --overlap $D/bin/jobcell run --scratch-base $D/uscratch -- /bin/true" "srun jobcell run -- /bin/true"
scancel "$job"

kill "$slurmd_pid"
while kill -0 "$slurmd_pid" 2>/dev/null; do sleep 0.1; done
echo "required $D/bin/jobcell_spank.so jobcell=$D/bin/jobcell scratch=$D/scratch state_dir=$D/store" >"$D/etc/plugstack.conf"
start_slurmd
echo "-- whole jobs, jobcell_spank.so in plugstack.conf"
hf plugin "srun /bin/true" "srun /bin/true"
hf image "srun --jobcell-image=bench /bin/true" "srun --jobcell-image=bench /bin/true"
job=$(alloc)
echo "-- steps in one allocation, jobcell_spank.so in plugstack.conf"
hf splugin "srun --jobid=$job --overlap /bin/true" "srun /bin/true"
hf simage "srun --jobid=$job --overlap --jobcell-image=bench /bin/true" "srun --jobcell-image=bench /bin/true"
scancel "$job"

# The task side alone, without Slurm's noise: what the plugin adds to each task is one exec of
# jobcell in SPANK task mode (rootless namespaces, mounts, the per-job dir's private subdirs).
mkdir -p "$D/scratch/slurm-0"
chown "$uid:$gid" "$D/scratch/slurm-0"
chmod 700 "$D/scratch/slurm-0"
echo "-- the task side alone (no Slurm), as the user"
spank_env="env JOBCELL_SPANK_ARGV0=/bin/true JOBCELL_SPANK_SCRATCH=$D/scratch/slurm-0 JOBCELL_SPANK_PRIVATE=/tmp,/var/tmp JOBCELL_SPANK_STATE_DIR=$D/store"
hf tplain "/bin/true" "/bin/true"
hf tspank "$spank_env $D/bin/jobcell" "jobcell in SPANK task mode, /bin/true"
hf timage "$spank_env JOBCELL_SPANK_IMAGE=bench $D/bin/jobcell" "jobcell in SPANK task mode, image, /bin/true"
hf trun "$D/bin/jobcell run --scratch-base $D/uscratch -- /bin/true" "jobcell run -- /bin/true (rootless)"
