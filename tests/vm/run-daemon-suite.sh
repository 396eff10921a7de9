#!/usr/bin/env bash
# jobcelld on a pure cgroup-v2 kernel: builds static jobcell and jobcelld and runs
# tests/vm/daemon-checks.sh inside the VM (see run-v2.sh). ARGS go to run-v2.sh (e.g.
# --results DIR). Exit status as run-v2.sh's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}/vm-static
cd "$repo"
echo "run-daemon-suite: building static jobcell, jobcelld and cgtest-helper"
# (cgtest-helper sets the xattr systemd marks a delegated unit with: busybox has no setfattr.)
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked -q \
  --target x86_64-unknown-linux-gnu --target-dir "$target" -p jobcell --bin jobcell --bin jobcelld \
  -p jobcell-cgroup --bin cgtest-helper
bin=$target/x86_64-unknown-linux-gnu/release
exec "$here/run-v2.sh" --timeout 600 --strict-cleanup --with "$bin/jobcell" --with "$bin/jobcelld" \
  --with "$bin/cgtest-helper" --with "$here/daemon-checks.sh" "$@" -- \
  sh "$here/daemon-checks.sh" "$bin/jobcell" "$bin/jobcelld" "$bin/cgtest-helper"
