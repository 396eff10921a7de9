#!/usr/bin/env bash
# `jobcell run` on a pure cgroup-v2 kernel: builds a static jobcell and runs
# tests/vm/launcher-checks.sh inside the VM (see run-v2.sh). Exit status as run-v2.sh's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}/vm-static
cd "$repo"
echo "run-launcher-suite: building a static jobcell"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked -q \
  --target x86_64-unknown-linux-gnu --target-dir "$target" -p jobcell --bin jobcell
bin=$target/x86_64-unknown-linux-gnu/release/jobcell
exec "$here/run-v2.sh" --timeout 600 --with "$bin" --with "$here/launcher-checks.sh" \
  -- sh "$here/launcher-checks.sh" "$bin"
