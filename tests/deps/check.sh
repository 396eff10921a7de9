#!/usr/bin/env bash
# The dependency policy, for test.sh:
#  - licenses, sources and bans as deny.toml says (cargo-deny; installed under target/tools
#    from crates.io the first time);
#  - the MSRV: every crate of the workspace inherits the workspace's rust-version, and no
#    dependency (normal, build or dev) declares a newer one. (Uses of std newer than the MSRV
#    in jobcell's own code are clippy's `incompatible_msrv`, an error under test.sh's clippy.)
# Prints one line per finding; exits 1 if there is any.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

deny_version=0.20.2
deny=$(command -v cargo-deny || true)
if [[ -z $deny ]]; then
  tools=$repo/target/tools
  if [[ ! -x $tools/bin/cargo-deny ]]; then
    echo "deps: installing cargo-deny $deny_version into $tools"
    cargo install --locked --quiet --root "$tools" "cargo-deny@$deny_version"
  fi
  deny=$tools/bin/cargo-deny
fi

status=0
echo "deps: cargo deny check licenses bans sources"
"$deny" deny --locked check --hide-inclusion-graph licenses bans sources || status=1

echo "deps: MSRV"
cargo metadata --format-version 1 --locked | python3 tests/deps/msrv.py || status=1
exit $status
