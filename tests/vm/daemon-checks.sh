#!/bin/sh
# Runs inside the pure cgroup-v2 VM (busybox sh): jobcelld's cgroup readers on cgroup v2 — the
# usage series (PSI, io.stat), `jobcell top`, a periodic_hold on MemoryUsage, the cgroups
# a TERM'd daemon leaves (only running jobs' and their supervisors'), and a restart with jobs
# running as a service with systemd's DelegateSubgroup=.
# Usage (guest): daemon-checks.sh /path/to/static/jobcell /path/to/static/jobcelld \
#   /path/to/static/cgtest-helper
J=$1
JD=$2
H=$3
st=/var/lib/jc-daemon-vm
export JOBCELL_SOCKET=$st/sock
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL: $1"; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: expected [$3], got [$2]"; fi; }
# Poll `cmd` (a shell string) every 0.5 s for up to $1 s; its status.
until_ok() {
  n=$(($1 * 2)); shift
  while [ $n -gt 0 ]; do
    sh -c "$1" >/dev/null 2>&1 && return 0
    n=$((n - 1)); sleep 0.5
  done
  return 1
}
# Directories under jobcell's cgroup tree holding no process and no child cgroup.
empty_cgroups() {
  find /sys/fs/cgroup -path '*jobcell*' -type d | while read -r d; do
    # (cgroupfs files have size 0: read them.)
    [ -n "$(cat "$d/cgroup.procs")" ] && continue
    [ -n "$(find "$d" -mindepth 1 -type d | head -1)" ] && continue
    echo "$d"
  done
}
# Start jobcelld, in cgroup $1 if given (as systemd starts a service in its own cgroup).
start_daemon() {
  sh -c '[ -z "$1" ] || echo $$ >"/sys/fs/cgroup/$1/cgroup.procs" || exit 99; shift; exec "$@"' sh "${1:-}" \
  "$JD" --state-dir $st/state --socket $st/sock --scratch-base $st/scratch --config $st/config.toml \
    --cpus 2 --memory 600M >>$st/daemon.log 2>&1 &
  daemon=$!
  until_ok 60 "[ -S $st/sock ] && $J q >/dev/null" || bad "daemon not ready: $(cat $st/daemon.log)"
}
stop_daemon() {
  kill -TERM $daemon
  wait $daemon
  check "daemon exits 0 on TERM" "$?" "0"
}

mkdir -p $st
printf '[usage]\nsample_interval = "0.2s"\n[policy]\nperiodic_expr_interval = "1s"\n' >$st/config.toml
# Jobs see the node's /run: scripts and stop files live there (each job has a private /tmp).
# The memory is a tmpfs file in the job's own /dev/shm, charged to the job's memory cgroup.
cat >/run/jc-grow.sh <<'JOB'
i=0
while [ $i -lt 5 ]; do
  head -c 16777216 /dev/zero >/dev/shm/m$i
  end=$(($(date +%s) + 1))
  while [ "$(date +%s)" -lt $end ]; do :; done
  i=$((i + 1))
done
n=0
while [ ! -e "/run/jc-stop-$1" ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n + 1)); done
JOB
chmod 644 /run/jc-grow.sh
rm -f /run/jc-stop-*
start_daemon

a=$($J submit -q --cpus 1 --memory 256M -- sh /run/jc-grow.sh a)
check "job submitted" "$?" "0"
# The series of a running job: mem rising past 48 MiB in 0.2 s samples.
until_ok 120 "$J show --json $a | grep -Eq '\"mem\": ([5-9][0-9]{7}|[0-9]{9,})'" \
  && ok "running job's series reaches 50 MB" || bad "running job's series: $($J show --json $a 2>&1 | tail -20) $(tail -5 $st/daemon.log)"

top=$($J top --json 2>&1)
check "top --json exits 0" "$?" "0"
echo "$top" | grep -q "\"memory_pressure\": [0-9]" && ok "top: memory_pressure (PSI) is a number" \
  || bad "top: memory_pressure: $top"
echo "$top" | grep -q "\"cpu_us\": [1-9]" && ok "top: cpu_us > 0" || bad "top: cpu_us: $top"
echo "$top" | grep -q "\"io_read_bytes\": [0-9]" && ok "top: io figures from io.stat" \
  || bad "top: io_read_bytes: $top"

# A periodic_hold on the memory read from the running job's cgroup (MemoryUsage, MiB).
b=$(printf '%s\n' 'executable = /bin/sh' 'arguments = /run/jc-grow.sh b' 'request_memory = 256' \
  'periodic_hold = MemoryUsage > 20' 'queue' | $J submit -q -)
check "periodic_hold job submitted" "$?" "0"
until_ok 120 "$J q --hold --json | grep -q '\"id\": $b,'" \
  && ok "periodic_hold = MemoryUsage > 20 holds the job" || bad "not held: $($J q --json 2>&1) $(tail -5 $st/daemon.log)"

touch /run/jc-stop-a
until_ok 120 "$J history --json | grep -q '\"id\": $a,'" || bad "job $a did not end"
s=$($J show --json $a)
points=$(echo "$s" | grep -c '"t": ')
psi=$(echo "$s" | grep -c '"psi_some": [0-9]')
io=$(echo "$s" | grep -c '"io_r": [0-9]')
[ "$points" -ge 10 ] && ok "finished job's series: $points points" || bad "few points: $s"
check "every point has psi_some" "$psi" "$points"
check "every point has io_r" "$io" "$points"
first=$(echo "$s" | grep -o '"mem": [0-9]*' | head -1 | grep -o '[0-9]*$')
max=$(echo "$s" | grep -o '"mem": [0-9]*' | grep -o '[0-9]*$' | sort -n | tail -1)
[ "$max" -ge $((first + 60000000)) ] && ok "mem rises: $first -> $max" || bad "mem rises: $first -> $max: $s"
$J show $a >$st/show.txt 2>&1
check "show draws the series" "$?/$(grep -c 'samples, every 0.2s' $st/show.txt)" "0/1"

# A clean stop with a job running: its cgroup and its supervisor's stay, nothing empty does.
c=$($J submit -q --cpus 1 --memory 64M -- sh -c 'while [ ! -e /run/jc-stop-c ]; do sleep 0.2; done')
until_ok 60 "$J q --run --json | grep -q '\"id\": $c,'" || bad "job $c not running"
$J rm $b >/dev/null
stop_daemon
check "after TERM, no empty jobcell cgroup" "$(empty_cgroups)" ""
check "the running job's cgroup stays" "$(find /sys/fs/cgroup -path '*jobcell*' -name "*$c" -type d | wc -l)" "1"
touch /run/jc-stop-c
until_ok 60 "[ -z \"\$(find /sys/fs/cgroup -path '*jobcell*' -name '*$c' -type d)\" ]" || bad "job $c's cgroup not removed"
# The next daemon learns the job's end from its job dir; its own stop leaves nothing.
start_daemon
until_ok 60 "$J history --json | grep -q '\"id\": $c,'" || bad "job $c not in history"
stop_daemon
check "after the last stop, no jobcell cgroup" "$(find /sys/fs/cgroup -path '*jobcell*' -type d)" ""

# As a service with a delegated cgroup of its own (systemd's Delegate=yes): jobcelld moves
# itself into <service>/jobcell/launcher to enable controllers for its jobs. A stop with no
# job left gives the service's cgroup back as it found it (no children, no controllers); a
# stop with jobs running leaves their cgroups and nothing empty.
svc=system.slice/jobcelld.service
mkdir -p /sys/fs/cgroup/$svc
echo "+cpu +memory +pids +io" >/sys/fs/cgroup/system.slice/cgroup.subtree_control
start_daemon $svc
check "service: the daemon moved into jobcell's leaf" "$(cat /proc/$daemon/cgroup)" "0::/$svc/jobcell/launcher"
e=$($J submit -q --cpus 1 --memory 64M -- true)
until_ok 60 "$J history --json | grep -q '\"id\": $e,'" || bad "service: job $e did not end"
stop_daemon
check "service, stopped with no job: no cgroup below it" "$(find /sys/fs/cgroup/$svc -mindepth 1 -type d)" ""
check "service, stopped with no job: no controllers enabled in it" "$(cat /sys/fs/cgroup/$svc/cgroup.subtree_control)" ""
start_daemon $svc
d=$($J submit -q --cpus 1 --memory 64M -- sh -c 'while [ ! -e /run/jc-stop-d ]; do sleep 0.2; done')
until_ok 60 "$J q --run --json | grep -q '\"id\": $d,'" || bad "service: job $d not running"
stop_daemon
check "service, stopped with a job running: no empty jobcell cgroup" "$(empty_cgroups)" ""
check "service, stopped with a job running: its cgroup stays" "$(find /sys/fs/cgroup/$svc -name "*$d" -type d | wc -l)" "1"
touch /run/jc-stop-d
until_ok 60 "[ -z \"\$(find /sys/fs/cgroup -path '*jobcell*' -name '*$d' -type d)\" ]" || bad "job $d's cgroup not removed"
# What the stopped daemon could not remove (the job outlived it): gone with the test.
# (The supervisor leaves its cgroup a moment after the job's is gone.)
until_ok 30 "rmdir /sys/fs/cgroup/$svc/jobcell/supervisors" || bad "supervisors' cgroup stays busy"
rmdir /sys/fs/cgroup/$svc/jobcell
echo "-cpu -memory -pids -io" >/sys/fs/cgroup/$svc/cgroup.subtree_control
rmdir /sys/fs/cgroup/$svc /sys/fs/cgroup/system.slice

# As a service with DelegateSubgroup=daemon (systemd >= 254): systemd starts jobcelld in
# <service>/daemon and marks <service> with trusted.delegate=1. jobcell's parent is then
# <service>/jobcell, the daemon stays in its subgroup, and a restart with a job running
# starts the new daemon there (no EBUSY: the service's own cgroup holds no process).
# (Controllers on in <service> too, for its subgroup, as a delegating manager may leave them.)
mkdir -p /sys/fs/cgroup/$svc/daemon
echo "+cpu +memory +pids +io" >/sys/fs/cgroup/system.slice/cgroup.subtree_control
echo "+cpu +memory +pids +io" >/sys/fs/cgroup/$svc/cgroup.subtree_control
$H setxattr /sys/fs/cgroup/$svc trusted.delegate 1
check "subgroup: service cgroup marked trusted.delegate" "$?" "0"
start_daemon $svc/daemon
check "subgroup: the daemon stays in its subgroup" "$(cat /proc/$daemon/cgroup)" "0::/$svc/daemon"
f=$($J submit -q --cpus 1 --memory 64M -- sh -c 'while [ ! -e /run/jc-stop-f ]; do sleep 0.2; done; exit 0')
until_ok 60 "$J q --run --json | grep -q '\"id\": $f,'" || bad "subgroup: job $f not running"
check "subgroup: the job's cgroup is below <service>/jobcell" \
  "$(find /sys/fs/cgroup/$svc/jobcell -name "*$f" -type d | wc -l)" "1"
stop_daemon
check "subgroup, stopped with a job running: the daemon's subgroup stays" \
  "$(find /sys/fs/cgroup/$svc -maxdepth 1 -name daemon -type d | wc -l)" "1"
# (The daemon's subgroup is systemd's: empty while no daemon runs.)
check "subgroup, stopped with a job running: no empty jobcell cgroup" \
  "$(empty_cgroups | grep -vx "/sys/fs/cgroup/$svc/daemon")" ""
# The restart, while the job runs.
start_daemon $svc/daemon
check "subgroup: a new daemon starts in the subgroup while the job runs" \
  "$(cat /proc/$daemon/cgroup)" "0::/$svc/daemon"
$J q --run --json | grep -q "\"id\": $f," && ok "subgroup: the new daemon re-attached job $f" \
  || bad "subgroup: job $f not running after the restart: $($J q --json 2>&1) $(tail -5 $st/daemon.log)"
touch /run/jc-stop-f
until_ok 60 "$J history --json | grep -q '\"id\": $f,'" || bad "subgroup: job $f did not end"
state=$($J history --json | awk -v id="\"id\": $f," 'index($0, id) { f = 1 } f && /"state":/ { print; exit }')
check "subgroup: job $f completed" "$(echo $state)" '"state": "completed",'
until_ok 30 "[ ! -e /sys/fs/cgroup/$svc/jobcell/supervisors ] || [ -z \"\$(cat /sys/fs/cgroup/$svc/jobcell/supervisors/cgroup.procs)\" ]" \
  || bad "subgroup: supervisors still running"
stop_daemon
check "subgroup, last stop: only the service and its subgroup are left" \
  "$(find /sys/fs/cgroup/system.slice -mindepth 1 -type d)" "/sys/fs/cgroup/$svc
/sys/fs/cgroup/$svc/daemon"
rmdir /sys/fs/cgroup/$svc/daemon /sys/fs/cgroup/$svc /sys/fs/cgroup/system.slice

rm -f /run/jc-grow.sh /run/jc-stop-*
rm -rf $st
echo "daemon-checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
