# Shared helpers for tests/vm/*.sh (sourced, not run).
# shellcheck shell=bash

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$VM_DIR/../.." && pwd)

log() { echo "jobcell-vm: $*" >&2; }
fatal() {
    echo "jobcell-vm: error: $*" >&2
    exit 2
}

# Single-quotes a string for a POSIX shell (busybox ash in the guest).
shquote() {
    local s=${1//\'/\'\\\'\'}
    printf "'%s'" "$s"
}

# Installs the Debian packages the VM needs, only if one is missing.
# JOBCELL_VM_NO_INSTALL=1 turns this into a check.
VM_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils file)
ensure_packages() {
    local missing=() p
    for p in "${VM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "${JOBCELL_VM_NO_INSTALL:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
        fatal "missing Debian packages: ${missing[*]} (install: apt-get install -y ${missing[*]})"
    fi
    log "installing ${missing[*]} (apt-get, once)"
    local out
    out=$(mktemp)
    # Other processes may hold the dpkg lock (unattended upgrades, parallel
    # jobs): wait for it instead of failing.
    if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
            install -y -qq --no-install-recommends "${missing[@]}"; } >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        fatal "apt-get install ${missing[*]} failed"
    fi
    rm -f "$out"
}

# The cache for the extracted kernel and the initramfs. Default
# /var/cache/jobcell-vm; falls back to ~/.cache when that is not writable.
cache_dir() {
    local d=${JOBCELL_VM_CACHE:-/var/cache/jobcell-vm}
    if ! mkdir -p "$d" 2>/dev/null || [ ! -w "$d" ]; then
        [ -n "${JOBCELL_VM_CACHE:-}" ] && fatal "cache dir $d is not writable"
        d=${XDG_CACHE_HOME:-$HOME/.cache}/jobcell-vm
        mkdir -p "$d" || fatal "cannot create cache dir $d"
    fi
    echo "$d"
}

# Where the static test builds go: never the normal target dir, so switching
# RUSTFLAGS does not invalidate the normal build.
static_target_dir() {
    echo "${JOBCELL_VM_TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO_DIR/target}/vm-static}"
}
