#!/bin/busybox sh
# shellcheck shell=dash
# /init of the jobcell v2 test VM (PID 1 inside the guest).
#
# Boots a busybox userland on a pure cgroup-v2 kernel, mounts the host share
# (9p tag "jobcellvm") at /mnt/host, sources the job the host wrote there
# (job/job.sh: which files to mirror at which absolute paths, which tests to
# run), runs every test, writes results back to the share and powers off.
# Every line the host parses starts with "=== JOBCELL-VM".

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt/host /root /var/tmp \
    /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 RUST_BACKTRACE=1
umask 022

say() { echo "=== JOBCELL-VM: $*"; }
die() {
    echo "=== JOBCELL-VM FATAL: $*"
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 1000
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts
# The initramfs root is unpacked 0700 (its staging dir was mktemp -d): give it the usual
# 0755 so unprivileged processes (jobs run as nobody) can reach /bin, /etc, /tmp.
chmod 0755 /
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
hostname jobcell-vm
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null

# Kernel messages (OOM kills are expected in the cgroup suite) go to the saved
# dmesg, not the console, unless the host asked for them.
if ! grep -q 'jobcellvm.klog=1' /proc/cmdline; then
    echo 1 >/proc/sys/kernel/printk
fi

# Pure cgroup v2 at the usual place.
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup ||
    die "cannot mount cgroup2 at /sys/fs/cgroup"
for c in cpu cpuset memory pids io; do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control ||
        die "cannot enable controller $c in /sys/fs/cgroup/cgroup.subtree_control"
done

# Modules for the 9p share, in dependency order (computed on the host).
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/jobcellvm/$m" || die "insmod $m failed"
done </lib/modules/jobcellvm/load-order

# The 9p device may take a moment to appear after virtio_pci binds.
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none \
    jobcellvm /mnt/host 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 50 ] || die "cannot mount the 9p share 'jobcellvm' at /mnt/host"
    sleep 0.1
done
[ -r /mnt/host/job/job.sh ] || die "no /mnt/host/job/job.sh on the share"
R=/mnt/host/results
mkdir -p $R

echo # the firmware's last line has no newline
say "uname -r: $(uname -r)"
say "cgroup mount: $(grep ' /sys/fs/cgroup ' /proc/mounts)"
say "cat /sys/fs/cgroup/cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
say "cat /sys/fs/cgroup/cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
say "cpus: $(nproc)  memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"

# mirror SRC DEST: copy a file from the share into the guest's RAM root at
# DEST, the absolute path it has on the host, so that CARGO_BIN_EXE_* paths
# baked into test binaries (and current_exe()-relative lookups) hold here too.
mirror() {
    mkdir -p "$(dirname "$2")" || die "mkdir for $2"
    # rm first: the path may be a busybox applet symlink.
    rm -f "$2"
    cp -p "/mnt/host/$1" "$2" || die "cannot copy $1 to $2"
}

# scope PATH: run tests in cgroup /sys/fs/cgroup/PATH (a leaf whose ancestors
# have the controllers enabled), like a login session under systemd. Without
# it, tests run in the root cgroup, which is exempt from the
# no-internal-process rule.
SCOPE=
scope() {
    SCOPE=$1
    d=/sys/fs/cgroup
    rest=$1
    while [ -n "$rest" ]; do
        part=${rest%%/*}
        [ "$part" = "$rest" ] && rest= || rest=${rest#*/}
        mkdir -p "$d/$part" || die "cannot create cgroup $d/$part"
        if [ -n "$rest" ]; then
            for c in $(cat "$d/$part/cgroup.controllers"); do
                echo "+$c" >"$d/$part/cgroup.subtree_control" ||
                    die "cannot enable $c in $d/$part"
            done
        fi
        d=$d/$part
    done
    say "tests run in cgroup /$SCOPE"
}

# Lists cgroups other than the scope and its ancestors, to catch leaks.
list_cgroups() {
    find /sys/fs/cgroup -mindepth 1 -type d | sed 's|^/sys/fs/cgroup||' |
        while read -r cg; do
            case "/$SCOPE/" in "$cg/"*) continue ;; esac
            echo "$cg"
        done
}

N_RUN=0
N_FAIL=0
STRICT_CLEANUP=0
# runtest N EXE [ARGS...]: run one test executable, its stdout and stderr
# streamed to the console and saved to results/N.stdout, N.stderr; exit code
# to results/N.rc.
runtest() {
    n=$1
    shift
    N_RUN=$((N_RUN + 1))
    t0=$(uptime_s)
    list_cgroups >/tmp/.cg-before
    say "BEGIN $n: $*"
    (
        (
            cd "${CWD:-/tmp}" || { echo "cannot enter $CWD" >&2; echo 125 >$R/$n.rc; exit; }
            if [ -n "$SCOPE" ]; then
                # Only the test process itself enters the scope (it execs),
                # as under systemd-run --scope -p Delegate=yes.
                sh -c 'echo 0 >"$0" || exit 125; exec "$@"' \
                    "/sys/fs/cgroup/$SCOPE/cgroup.procs" "$@" </dev/null
            else
                "$@" </dev/null
            fi
            echo $? >$R/$n.rc
        ) 2>&1 1>&3 3>&- | tee $R/$n.stderr 1>&2
    ) 3>&1 | tee $R/$n.stdout
    rc=$(cat $R/$n.rc 2>/dev/null)
    [ -n "$rc" ] || rc=255
    t1=$(uptime_s)
    secs=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
    list_cgroups >/tmp/.cg-after
    left=$(awk 'FILENAME == ARGV[1] { seen[$0]; next } !($0 in seen)' /tmp/.cg-before /tmp/.cg-after)
    if [ -n "$left" ]; then
        echo "$left" >$R/$n.leaked-cgroups
        say "WARNING $n: cgroups left behind by the test: $(echo $left)"
        # Remove them (deepest first) so the next test starts clean.
        echo "$left" | sort -r | while read -r cg; do
            [ -f "/sys/fs/cgroup$cg/cgroup.kill" ] && echo 1 >"/sys/fs/cgroup$cg/cgroup.kill"
            rmdir "/sys/fs/cgroup$cg" 2>/dev/null
        done
        if [ "$STRICT_CLEANUP" = 1 ] && [ "$rc" = 0 ]; then
            say "$n: counts as failed (strict cleanup)"
            rc=leaked-cgroups
        fi
    fi
    if [ "$rc" = 0 ]; then
        say "END $n: PASS (exit 0, ${secs} s): $1"
    else
        N_FAIL=$((N_FAIL + 1))
        echo "$rc" >$R/$n.rc
        say "END $n: FAIL (exit $rc, ${secs} s): $1"
    fi
}

say "ready at uptime $(uptime_s) s"
. /mnt/host/job/job.sh
say "RESULT: $N_RUN executable(s) run: $((N_RUN - N_FAIL)) ok, $N_FAIL not ok (uptime $(uptime_s) s)"
dmesg >$R/dmesg.txt 2>&1
echo "$N_RUN $N_FAIL" >$R/done
sync
umount /mnt/host 2>/dev/null
poweroff -f
echo o >/proc/sysrq-trigger
sleep 1000
