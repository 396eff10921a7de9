#!/usr/bin/env bash
# Boots a small pure cgroup-v2 VM (Debian kernel + busybox initramfs, qemu TCG)
# and runs executables from the host inside it. See tests/vm/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: tests/vm/run-v2.sh [OPTIONS] -- EXECUTABLE [ARGS...] [--- EXECUTABLE [ARGS...]]...

Boots a pure cgroup-v2 VM under qemu (TCG) and runs each EXECUTABLE with its
ARGS in turn, as root, in the root cgroup (or --scope). EXECUTABLE is a host
file (copied to the SAME absolute path inside the guest; static binaries, or
dynamic ones whose libraries are copied along) or, without a slash, a busybox
command of the guest. Exit status: 0 all passed, 1 a test failed, 3 the VM
timed out or gave no result, 2 usage/setup error.

options:
  --timeout SECS     kill the VM after SECS seconds (default 900)
  --mem MIB          guest memory (default 1024)
  --smp N            guest CPUs (default 2)
  --with FILE        also copy FILE into the guest at its absolute path
                     (helper binaries tests run via CARGO_BIN_EXE_*); repeatable
  --share-ro DIR     share host DIR read-only at the same path (9p); repeatable
  --cwd DIR          working directory of the tests (default /tmp)
  --mkdir DIR        create DIR in the guest (e.g. CARGO_TARGET_TMPDIR); repeatable
  --env NAME=VALUE   set in the tests' environment; repeatable
  --scope PATH       run tests in cgroup /sys/fs/cgroup/PATH instead of the
                     root cgroup (ancestors get the controllers enabled, like
                     a systemd session scope)
  --strict-cleanup   a test that leaves a cgroup behind fails (cgroups new
                     after the test, other than --scope's, are reported and
                     removed either way)
  --results DIR      copy console.log, N.stdout/N.stderr/N.rc, dmesg.txt to DIR
  --kernel-log       show kernel messages on the console (default: only in
                     dmesg.txt)
  --keep             keep the staging directory (printed) after the run
environment: JOBCELL_VM_CACHE (default /var/cache/jobcell-vm),
  JOBCELL_VM_KVER (kernel version, default: that of linux-image-amd64),
  JOBCELL_VM_NO_INSTALL=1 (never run apt-get)
EOF
}

TIMEOUT=900 MEM=1024 SMP=2 CWD=/tmp SCOPE='' RESULTS='' KLOG=0 KEEP=0 STRICT=0
WITH=() SHARES=() ENVS=() MKDIRS=()
while [ $# -gt 0 ]; do
    case $1 in
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    --mem) MEM=${2:?}; shift 2 ;;
    --smp) SMP=${2:?}; shift 2 ;;
    --with) WITH+=("${2:?}"); shift 2 ;;
    --share-ro) SHARES+=("${2:?}"); shift 2 ;;
    --cwd) CWD=${2:?}; shift 2 ;;
    --mkdir) MKDIRS+=("${2:?}"); shift 2 ;;
    --env) ENVS+=("${2:?}"); shift 2 ;;
    --scope) SCOPE=${2:?}; shift 2 ;;
    --results) RESULTS=${2:?}; shift 2 ;;
    --kernel-log) KLOG=1; shift ;;
    --keep) KEEP=1; shift ;;
    --strict-cleanup) STRICT=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; fatal "unknown option '$1' (tests go after --)" ;;
    esac
done
[ $# -gt 0 ] || { usage >&2; fatal "no EXECUTABLE given after --"; }
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || fatal "--timeout '$TIMEOUT' is not a positive number of seconds"
[[ $MEM =~ ^[1-9][0-9]*$ ]] && [ "$MEM" -ge 128 ] || fatal "--mem '$MEM' must be a number of MiB >= 128"
[[ $SMP =~ ^[1-9][0-9]*$ ]] || fatal "--smp '$SMP' is not a positive number"
[[ $SCOPE =~ ^[A-Za-z0-9_.@-]+(/[A-Za-z0-9_.@-]+)*$ || -z $SCOPE ]] ||
    fatal "--scope '$SCOPE' must be a relative cgroup path like user.slice/session.scope"
[[ $CWD == /* ]] || fatal "--cwd '$CWD' must be an absolute path"
for d in ${MKDIRS[@]+"${MKDIRS[@]}"}; do
    [[ $d == /* ]] || fatal "--mkdir '$d' must be an absolute path"
done
for e in ${ENVS[@]+"${ENVS[@]}"}; do
    [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || fatal "--env '$e' is not NAME=VALUE"
done
for d in ${SHARES[@]+"${SHARES[@]}"}; do
    [[ $d == /* && -d $d ]] || fatal "--share-ro '$d' is not an absolute path to a directory"
    [[ $d != *,* ]] || fatal "--share-ro '$d': qemu cannot share a path containing a comma"
done

# Split "EXE ARGS --- EXE ARGS ..." into one quoted guest command per test.
# The first word of each is its executable: a host file (made absolute) or,
# without a slash, a command of the guest's busybox.
TESTS=() EXES=()
cur=
for a in "$@" ---; do
    if [ "$a" = --- ]; then
        [ -n "$cur" ] || fatal "empty test next to a '---' separator"
        TESTS+=("$cur")
        cur=
        continue
    fi
    if [ -z "$cur" ]; then
        if [[ $a == */* ]]; then
            [[ $a == /* ]] || a=$PWD/$a
            [ -f "$a" ] && [ -x "$a" ] || fatal "test executable '$a' does not exist or is not executable"
        fi
        EXES+=("$a")
    fi
    cur+="${cur:+ }$(shquote "$a")"
done
for i in ${WITH[@]+"${!WITH[@]}"}; do
    f=${WITH[$i]}
    [[ $f == /* ]] || f=$PWD/$f
    [ -f "$f" ] || fatal "--with '$f' is not a file"
    WITH[$i]=$f
done

ensure_packages

# ---------------------------------------------------------------- kernel ----
CACHE=$(cache_dir)
if [ -n "${JOBCELL_VM_KVER:-}" ]; then
    KVER=$JOBCELL_VM_KVER
else
    KVER=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
        sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')
    [ -n "$KVER" ] && [ -f "/boot/vmlinuz-$KVER" ] ||
        KVER=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)
fi
[ -n "$KVER" ] && [ -f "/boot/vmlinuz-$KVER" ] || fatal "no /boot/vmlinuz-${KVER:-*} (is linux-image-amd64 installed?)"
[ -d "/lib/modules/$KVER" ] || fatal "no /lib/modules/$KVER for kernel $KVER"

exec 9>"$CACHE/.lock"
flock 9

# The guest boots the uncompressed ELF vmlinux through qemu's PVH entry:
# decompressing an XZ bzImage under TCG costs several seconds per boot.
VMLINUX=$CACHE/vmlinux-$KVER
if [ ! -s "$VMLINUX" ]; then
    log "extracting vmlinux from /boot/vmlinuz-$KVER"
    tmp=$VMLINUX.tmp.$$
    ok=0
    # Try every XZ / zstd magic in the bzImage until one decompresses to ELF.
    for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "/boot/vmlinuz-$KVER" | cut -d: -f1); do
        tail -c +$((off + 1)) "/boot/vmlinuz-$KVER" | xz -dc --single-stream >"$tmp" 2>/dev/null || true
        if [ "$(head -c4 "$tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then ok=1; break; fi
    done
    if [ $ok = 0 ]; then
        for off in $(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "/boot/vmlinuz-$KVER" | cut -d: -f1); do
            tail -c +$((off + 1)) "/boot/vmlinuz-$KVER" | zstd -dcq >"$tmp" 2>/dev/null || true
            if [ "$(head -c4 "$tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then ok=1; break; fi
        done
    fi
    [ $ok = 1 ] || { rm -f "$tmp"; fatal "could not extract an ELF vmlinux from /boot/vmlinuz-$KVER"; }
    mv -f "$tmp" "$VMLINUX"
fi

# ------------------------------------------------------------- initramfs ----
# Kernel modules for the 9p share and virtio-rng, with their dependencies,
# ordered so that each comes after what it needs (from modules.dep).
declare -A MODDEP=() MODPATH=() SEEN=()
while IFS= read -r line; do
    path=${line%%:*}
    name=${path##*/}
    name=${name%%.ko*}
    MODPATH[$name]=$path
    MODDEP[$name]=${line#*:}
done <"/lib/modules/$KVER/modules.dep"
ORDER=()
visit() {
    local m=$1 d dn
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    for d in ${MODDEP[$m]}; do
        dn=${d##*/}
        visit "${dn%%.ko*}"
    done
    ORDER+=("$m")
}
for m in virtio_pci 9pnet_virtio 9p virtio-rng; do
    if [ -n "${MODPATH[$m]:-}" ]; then
        visit "$m"
    elif ! grep -q "/${m}.ko" "/lib/modules/$KVER/modules.builtin"; then
        fatal "kernel $KVER has no module $m (needed for the 9p share)"
    fi
done

INIT_HASH=$( {
    echo "initramfs-v1 $KVER ${ORDER[*]}"
    cat "$VM_DIR/guest-init.sh" /bin/busybox
} | sha256sum | cut -c1-16)
INITRD=$CACHE/initramfs-$KVER-$INIT_HASH.cpio.gz
if [ ! -s "$INITRD" ]; then
    log "building initramfs $(basename "$INITRD")"
    root=$(mktemp -d "$CACHE/root.XXXXXX")
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,mnt/host,lib/modules/jobcellvm}
    cp /bin/busybox "$root/bin/busybox"
    install -m 0755 "$VM_DIR/guest-init.sh" "$root/init"
    for m in "${ORDER[@]}"; do
        src=/lib/modules/$KVER/${MODPATH[$m]}
        case $src in
        *.ko.xz) xz -dc "$src" >"$root/lib/modules/jobcellvm/$m.ko" ;;
        *.ko.zst) zstd -dcq "$src" >"$root/lib/modules/jobcellvm/$m.ko" ;;
        *.ko.gz) gzip -dc "$src" >"$root/lib/modules/jobcellvm/$m.ko" ;;
        *) cp "$src" "$root/lib/modules/jobcellvm/$m.ko" ;;
        esac
        echo "$m.ko" >>"$root/lib/modules/jobcellvm/load-order"
    done
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
    printf '127.0.0.1 localhost jobcell-vm\n::1 localhost\n' >"$root/etc/hosts"
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
    (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1) >"$INITRD.tmp.$$"
    mv -f "$INITRD.tmp.$$" "$INITRD"
    # Drop initramfs images of older versions of guest-init.sh.
    find "$CACHE" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -path "$INITRD" -delete
    # The tree holds only files this script just created (no mounts).
    rm -rf -- "$root"
fi
flock -u 9

# --------------------------------------------------------------- staging ----
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/jobcell-vm.XXXXXX")
cleanup() {
    if [ "$KEEP" = 1 ]; then
        log "staging directory kept: $STAGE"
    else
        rm -rf -- "$STAGE"
    fi
}
trap cleanup EXIT
mkdir -p "$STAGE/job" "$STAGE/files" "$STAGE/results"
JOB=$STAGE/job/job.sh

declare -A MIRRORED=()
NFILES=0
add_file() { # add_file HOSTPATH: copy into the guest at the same path
    local src=$1
    [ -z "${MIRRORED[$src]:-}" ] || return 0
    MIRRORED[$src]=1
    NFILES=$((NFILES + 1))
    ln -f "$(readlink -f "$src")" "$STAGE/files/$NFILES" 2>/dev/null ||
        cp -L --preserve=mode "$src" "$STAGE/files/$NFILES"
    echo "mirror files/$NFILES $(shquote "$src")" >>"$JOB"
    # A dynamic executable brings its shared libraries and loader along.
    if file -bL "$src" | grep -q 'dynamically linked'; then
        local lib
        for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*'); do
            [ -f "$lib" ] && add_file "$lib"
        done
    fi
}

{
    echo "# generated by tests/vm/run-v2.sh"
    for e in ${ENVS[@]+"${ENVS[@]}"}; do
        echo "export ${e%%=*}=$(shquote "${e#*=}")"
    done
} >"$JOB"
for f in ${EXES[@]+"${EXES[@]}"} ${WITH[@]+"${WITH[@]}"}; do
    if [[ $f == /* ]]; then add_file "$f"; fi
done
QEMU_SHARES=()
i=0
for d in ${SHARES[@]+"${SHARES[@]}"}; do
    i=$((i + 1))
    QEMU_SHARES+=(-virtfs "local,path=$d,mount_tag=ro$i,security_model=none,readonly=on,id=ro$i")
    cat >>"$JOB" <<EOF
mkdir -p $(shquote "$d") && mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144 ro$i $(shquote "$d") || die "cannot mount share ro$i at $(shquote "$d")"
EOF
done
for d in ${MKDIRS[@]+"${MKDIRS[@]}"}; do
    echo "mkdir -p $(shquote "$d") || die $(shquote "cannot create $d")" >>"$JOB"
done
echo "STRICT_CLEANUP=$STRICT" >>"$JOB"
[ -z "$SCOPE" ] || echo "scope $(shquote "$SCOPE")" >>"$JOB"
echo "CWD=$(shquote "$CWD"); mkdir -p \"\$CWD\" || die 'cannot create --cwd'" >>"$JOB"
n=0
for t in "${TESTS[@]}"; do
    n=$((n + 1))
    echo "runtest $n $t" >>"$JOB"
done

# ------------------------------------------------------------------- run ----
APPEND="console=ttyS0 quiet panic=-1 cgroup_no_v1=all"
[ "$KLOG" = 1 ] && APPEND+=" jobcellvm.klog=1"
log "kernel $KVER, ${#TESTS[@]} test(s), $NFILES file(s) copied in, timeout ${TIMEOUT}s"
T0=$(date +%s.%N)
set +e
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
    -M q35 -accel tcg -nographic -net none -no-reboot \
    -m "$MEM" -smp "$SMP" \
    -kernel "$VMLINUX" -initrd "$INITRD" -append "$APPEND" \
    -virtfs "local,path=$STAGE,mount_tag=jobcellvm,security_model=none,id=jobcellvm" \
    ${QEMU_SHARES[@]+"${QEMU_SHARES[@]}"} \
    -device virtio-rng-pci </dev/null 2>&1 |
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        case $line in
        "=== JOBCELL-VM: ready at"*) date +%s.%N >"$STAGE/t-ready" ;;
        "=== JOBCELL-VM: RESULT:"*) date +%s.%N >"$STAGE/t-result" ;;
        esac
        printf '%s\n' "$line"
        printf '%s\n' "$line" >>"$STAGE/console.log"
    done
rcs=("${PIPESTATUS[@]}")
set -e
T1=$(date +%s.%N)
QRC=${rcs[0]}

elapsed() { awk "BEGIN { printf \"%.1f\", $2 - $1 }"; }
[ -n "$RESULTS" ] && {
    mkdir -p "$RESULTS"
    cp -r "$STAGE/results/." "$STAGE/console.log" "$RESULTS/" 2>/dev/null || true
}

echo "------------------------------------------------------------ jobcell-vm summary"
[ -f "$STAGE/t-ready" ] && echo "boot to ready:   $(elapsed "$T0" "$(cat "$STAGE/t-ready")") s (host wall clock from qemu start)"
[ -f "$STAGE/t-result" ] && echo "boot to result:  $(elapsed "$T0" "$(cat "$STAGE/t-result")") s"
echo "qemu total:      $(elapsed "$T0" "$T1") s"
grep -E '^=== JOBCELL-VM: END ' "$STAGE/console.log" 2>/dev/null | sed 's/^=== JOBCELL-VM: //' || true
[ -n "$RESULTS" ] && echo "results in:      $RESULTS"
STATUS=0
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    echo "FAILED: the VM timed out after ${TIMEOUT}s"
    STATUS=3
elif [ ! -f "$STAGE/results/done" ]; then
    echo "FAILED: the VM gave no result (qemu exit $QRC; see the console output above)"
    STATUS=3
else
    n=0
    for t in "${TESTS[@]}"; do
        n=$((n + 1))
        rc=$(cat "$STAGE/results/$n.rc" 2>/dev/null || echo missing)
        if [ "$rc" != 0 ]; then
            echo "FAILED: test $n ($t) exit $rc"
            STATUS=1
        fi
    done
    [ $STATUS = 0 ] && echo "PASSED: all ${#TESTS[@]} test executable(s)"
fi
[ $STATUS = 0 ] || [ "$KEEP" = 1 ] || [ -n "$RESULTS" ] ||
    echo "(per-test stdout/stderr/exit files and dmesg: rerun with --results DIR or --keep)"
exit $STATUS
