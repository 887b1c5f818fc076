#!/usr/bin/env bash
# A real one-node Slurm on this machine (Debian's slurm-wlm and munge), for the tests of
# deploy/slurm.sbatch: time limits, signals and requeue, with `srun --mpi=pmix`.
#   scripts/slurm-local.sh up     install what is missing, write the configuration, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh down   stop the daemons it started
# Root only; the node is this machine under its own hostname, partition "main", all its cores.
# KillWait is 30 s, Slurm's default: a job at its time limit gets SIGTERM, then SIGKILL 30 s later.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "slurm-local: needs root" >&2; exit 1; }
state=/run/orthohash-slurm
conf=/etc/slurm/slurm.conf

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  mkdir -p "$state" /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
  local node cores memory
  node=$(hostname)
  cores=$(nproc)
  memory=$(awk '/MemTotal/ { print int($2 / 1024) - 1024 }' /proc/meminfo)
  cat > "$conf" <<EOF
ClusterName=orthohash
SlurmctldHost=$node
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=30
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$node CPUs=$cores Sockets=1 CoresPerSocket=$cores ThreadsPerCore=1 RealMemory=$memory State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  [ -s /etc/munge/munge.key ] || head -c 1024 /dev/urandom > /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key /run/munge
  chmod 400 /etc/munge/munge.key
  for daemon in munged slurmctld slurmd; do
    if ! pgrep -x "$daemon" >/dev/null; then
      case $daemon in munged) /usr/sbin/munged --force ;; *) "/usr/sbin/$daemon" ;; esac
      echo "$daemon" >> "$state/started"
      [ "$daemon" = slurmctld ] && sleep 2
    fi
  done
  for _ in $(seq 60); do
    sinfo -h -o %t 2>/dev/null | grep -qE 'idle|mix|alloc' && { echo "slurm-local: node $node up, $cores cores"; return 0; }
    sleep 1
  done
  echo "slurm-local: the node did not come up (see /var/log/slurm)" >&2
  exit 1
}

stop() {
  [ -f "$state/started" ] || return 0
  for daemon in $(tac "$state/started"); do pkill -x "$daemon" 2>/dev/null || true; done
  rm -f "$state/started"
}

case "${1:-}" in
  up) start ;;
  down) stop ;;
  *) echo "usage: $0 up | down" >&2; exit 2 ;;
esac
