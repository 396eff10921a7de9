#!/usr/bin/env bash
# Create (or reuse) a Python venv holding HTCondor's own submit parser, the reference for the
# differential test crates/jobcell-spec/tests/submit_differential.rs.
#   tests/submit/setup-venv.sh            -> <repo>/target/htcondor-venv
#   JOBCELL_HTCONDOR_VENV=/path tests/submit/setup-venv.sh
# Idempotent: a venv that already imports the pinned version is left alone. Needs PyPI access
# the first time (one ~60 MB manylinux wheel, CPython 3.11 on x86_64 has one).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${JOBCELL_HTCONDOR_VENV:-$repo/target/htcondor-venv}
version=23.10.29
py=${PYTHON:-python3}

check() {
  [[ -x $venv/bin/python ]] &&
    "$venv/bin/python" -c "import htcondor, sys; sys.exit(htcondor.version().split()[1] != '$version')" \
      >/dev/null 2>&1
}

if check; then
  echo "setup-venv: htcondor $version already in $venv"
  exit 0
fi
if ! "$py" -c 'import ensurepip' >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  # Debian splits venv support out of python3.
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "htcondor==$version"
check || { echo "setup-venv: htcondor $version did not import from $venv" >&2; exit 1; }
echo "setup-venv: installed htcondor $version in $venv"
