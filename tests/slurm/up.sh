#!/usr/bin/env bash
# Start a throw-away single-node SLURM 22.05 (Debian slurm-wlm + munge) on loopback for tests.
#
#   SLURM_DIR=/tmp/x tests/slurm/up.sh     # then: export SLURM_CONF=/tmp/x/slurm.conf
#   SLURM_DIR=/tmp/x tests/slurm/down.sh   # stops exactly what up.sh started, by PID
#
# Everything (slurm.conf, state, spool, logs, pid files) lives in $SLURM_DIR; the only file
# outside it is the symlink /etc/slurm/slurm.conf -> $SLURM_DIR/slurm.conf (removed by down.sh).  munged is started only when
# none is running (and then also stopped by down.sh).  Installs slurm-wlm + munge with
# apt-get when they are missing and we are root; exits 3 when they cannot be installed
# (the caller skips).  No accounting database: the Snakemake SLURM executor must use
# `slurm-status-command: squeue` and `slurm-no-account: true` (profiles/slurm), and
# MinJobAge keeps finished jobs visible to squeue for 10 minutes.
set -euo pipefail
SLURM_DIR=${SLURM_DIR:?set SLURM_DIR to an empty folder}
PART=${SLURM_PARTITION:-debug}
CTLD_PORT=${SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_SLURMD_PORT:-6818}
mkdir -p "$SLURM_DIR"/{state,spool,log,run}
chmod 755 "$SLURM_DIR"
PIDS="$SLURM_DIR/pids"
: > "$PIDS"

need_install=0
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_install=1
done
if [ "$need_install" = 1 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "up.sh: slurm-wlm/munge missing and cannot apt-get install (not root or no apt)" >&2
    exit 3
  fi
  echo "up.sh: installing slurm-wlm munge with apt-get" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurm-wlm munge >"$SLURM_DIR/log/apt.log" 2>&1; }; then
    echo "up.sh: apt-get install slurm-wlm munge failed (see $SLURM_DIR/log/apt.log)" >&2
    exit 3
  fi
fi

# --- munge: reuse a running munged, else start one (key made by the package postinst) ---
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 40); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cat /run/munge/munged.pid >> "$PIDS"
  munge -n | unmunge >/dev/null
fi

# --- slurm.conf in $SLURM_DIR, node size from slurmd -C ---
CPUS=$(slurmd -C | grep -oP 'CPUs=\K[0-9]+')
MEM=$(slurmd -C | grep -oP 'RealMemory=\K[0-9]+')
export SLURM_CONF="$SLURM_DIR/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=crossmodal-ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue (the status command without accounting) for 10 min
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PART Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

# Snakemake's SLURM job-step executor drops every SLURM_* variable (SLURM_CONF too) inside a
# job, so `srun` there finds the cluster only through /etc/slurm/slurm.conf: point it at
# ours, unless a real configuration is installed (then refuse rather than overwrite it).
mkdir -p /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf || true)" != "$SLURM_CONF" ]; then
  if [ -L /etc/slurm/slurm.conf ] && [ ! -e "$(readlink /etc/slurm/slurm.conf)" ]; then
    rm /etc/slurm/slurm.conf   # dangling link left by an earlier test run
  else
    echo "up.sh: /etc/slurm/slurm.conf exists and is not ours; not touching a real cluster" >&2
    exit 3
  fi
fi
ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf

/usr/sbin/slurmctld -f "$SLURM_CONF" -i
for _ in $(seq 50); do [ -s "$SLURM_DIR/run/slurmctld.pid" ] && break; sleep 0.1; done
cat "$SLURM_DIR/run/slurmctld.pid" >> "$PIDS"
/usr/sbin/slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 50); do [ -s "$SLURM_DIR/run/slurmd.pid" ] && break; sleep 0.1; done
cat "$SLURM_DIR/run/slurmd.pid" >> "$PIDS"
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.2; done
if ! sinfo -h -o %T | grep -q idle; then
  echo "up.sh: node did not become idle; see $SLURM_DIR/log/" >&2
  sinfo >&2 || true
  exit 1
fi
echo "up.sh: SLURM up (SLURM_CONF=$SLURM_CONF, partition $PART, $CPUS CPUs, ${MEM} MB)" >&2
