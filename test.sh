#!/usr/bin/env bash
# Install what jobcell's tests need on a fresh Debian machine, then run them all:
#   the workspace's unit and integration tests (real namespaces, cgroups, SQLite; as root), and
#   the cgroup suite inside a small pure cgroup-v2 VM (qemu, software emulation).
# Usage: sudo ./test.sh            (JOBCELL_SKIP_VM=1 skips the VM suite, loudly)
set -euo pipefail
cd "$(dirname "$0")"

log=$(mktemp /tmp/jobcell-test.XXXXXX.log)
trap 'rm -f "$log"' EXIT

if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: most tests need root (namespaces, mounts, cgroups): run it as root" >&2
  exit 1
fi

# Debian packages: busybox for test images; strace to count a watcher's requests; man-db to
# render the generated man pages; btrfs-progs for the scratch pool; qemu, a Debian kernel and cpio for the v2 VM;
# a single-node Slurm (with munge and the SPANK headers) for the Slurm tests; python3-venv for
# HTCondor's own submit parser, the differential tests' reference.
need=()
command -v busybox >/dev/null || need+=(busybox-static)
command -v podman >/dev/null || need+=(podman)
command -v cpio >/dev/null || need+=(cpio)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v setpriv >/dev/null || need+=(util-linux)
command -v strace >/dev/null || need+=(strace)
command -v tmux >/dev/null || need+=(tmux)
command -v man >/dev/null || need+=(man-db)
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
[[ -f /usr/include/slurm/spank.h ]] || need+=(libslurm-dev slurm-wlm-basic-plugins-dev)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  echo "test.sh: installing ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== HTCondor's submit parser (PyPI htcondor) for the differential tests"
tests/submit/setup-venv.sh

status=0
echo "== cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check 2>&1 | tee -a "$log" || { echo "FAILED: cargo fmt --check" | tee -a "$log"; status=1; }
cargo clippy --workspace --all-targets --locked -- -D warnings 2>&1 | tail -20 | tee -a "$log" ||
  { echo "FAILED: cargo clippy" | tee -a "$log"; status=1; }
echo "== dependency policy (deny.toml: licenses, bans, sources) and MSRV"
tests/deps/check.sh 2>&1 | tee -a "$log" || { echo "FAILED: cargo deny / MSRV" | tee -a "$log"; status=1; }

echo "== cargo test --workspace (host: $(uname -r), $(stat -fc %T /sys/fs/cgroup))"
JOBCELL_REQUIRE_HTCONDOR=1 cargo test --workspace --locked --no-fail-fast 2>&1 | tee -a "$log" || status=1

if [[ ${JOBCELL_SKIP_VM:-0} == 1 ]]; then
  echo "SKIPPED: the pure cgroup-v2 VM suite (JOBCELL_SKIP_VM=1)" | tee -a "$log"
else
  echo "== cgroup suite in a pure cgroup-v2 VM"
  tests/vm/run-cgroup-suite.sh 2>&1 | tee -a "$log" || status=1
  echo "== jobcell run in a pure cgroup-v2 VM"
  tests/vm/run-launcher-suite.sh 2>&1 | tee -a "$log" || status=1
  echo "== jobcelld in a pure cgroup-v2 VM"
  tests/vm/run-daemon-suite.sh 2>&1 | tee -a "$log" || status=1
fi

passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$((failed + $(grep -c '^FAILED: cargo' "$log" || true)))
((failed == 0)) || status=1
echo "test.sh: ${passed} passed, ${failed} failed"
exit $status
