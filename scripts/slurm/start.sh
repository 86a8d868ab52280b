#!/usr/bin/env bash
# Start a throw-away one-node SLURM cluster on this machine (for tests), as root, no systemd.
#   scripts/slurm/start.sh STATE_DIR     then   export SLURM_CONF=STATE_DIR/slurm.conf
# Needs the Debian packages slurmctld slurmd slurm-client munge (`make test-slurm` installs
# them). Everything lives under STATE_DIR: slurm.conf, spool, logs, and the PIDs of the daemons
# this script started, which scripts/slurm/stop.sh STATE_DIR stops again. A munged that is
# already running is reused (and left running). /etc/slurm/slurm.conf becomes a symlink to
# STATE_DIR/slurm.conf (removed by stop.sh): the slurm executor's job step drops every SLURM_*
# variable, SLURM_CONF included, before its nested `srun`, which then only finds the default
# path. An existing real /etc/slurm/slurm.conf is never replaced (the script stops instead).
set -euo pipefail
state=${1:?usage: start.sh STATE_DIR}
partition=${SLURM_TEST_PARTITION:-debug}
ctld_port=${SLURM_TEST_CTLD_PORT:-6817}
slurmd_port=${SLURM_TEST_SLURMD_PORT:-6818}
start=$(date +%s)

[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root" >&2; exit 1; }
for bin in slurmctld slurmd sbatch squeue sinfo munged munge unmunge runuser; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] ||
        { echo "start.sh: $bin not found (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 1; }
done
mkdir -p "$state"/{ctld,spool}
state=$(cd "$state" && pwd)
export SLURM_CONF="$state/slurm.conf"

# munge: authenticates slurmctld <-> slurmd <-> clients.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null ||
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown munge: /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge: /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$state/munged.pid"
fi

# The default config path must lead to this cluster (see above); never clobber a real one.
etc_conf=/etc/slurm/slurm.conf
if [ -e "$etc_conf" ] || [ -L "$etc_conf" ]; then
    if [ -L "$etc_conf" ] && { [ ! -e "$etc_conf" ] || grep -q "scripts/slurm/start.sh" "$etc_conf"; }; then
        rm -f "$etc_conf"   # left over from an earlier test cluster
    else
        echo "start.sh: $etc_conf exists and is not a test-cluster link; not touching it" >&2
        exit 1
    fi
fi

host=$(hostname)
cpus=$(nproc)
cat > "$SLURM_CONF" <<CONF
# written by scripts/slurm/start.sh -- a one-node test cluster
ClusterName=darstest
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${state}/ctld
SlurmdSpoolDir=${state}/spool
SlurmctldPidFile=${state}/slurmctld.daemon.pid
SlurmdPidFile=${state}/slurmd.daemon.pid
SlurmctldLogFile=${state}/slurmctld.log
SlurmdLogFile=${state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=300
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=4000 State=UNKNOWN
PartitionName=${partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

mkdir -p /etc/slurm
ln -s "$SLURM_CONF" "$etc_conf"
echo "$etc_conf" > "$state/etc_link"

# Foreground daemons (-D) in the background, so that $! is the daemon itself.
setsid slurmctld -D -i -f "$SLURM_CONF" >"$state/slurmctld.out" 2>&1 < /dev/null &
echo $! > "$state/slurmctld.pid"
setsid slurmd -D -f "$SLURM_CONF" >"$state/slurmd.out" 2>&1 < /dev/null &
echo $! > "$state/slurmd.pid"

for _ in $(seq 120); do
    if [ "$(sinfo -h -o %t 2>/dev/null | head -1)" = idle ]; then
        echo "start.sh: SLURM up in $(( $(date +%s) - start )) s (SLURM_CONF=$SLURM_CONF)"
        exit 0
    fi
    sleep 0.5
done
echo "start.sh: node not idle after 60 s; sinfo says: $(sinfo 2>&1)" >&2
tail -5 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
"$(dirname "$0")/stop.sh" "$state"
exit 1
