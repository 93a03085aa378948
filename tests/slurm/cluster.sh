#!/usr/bin/env bash
# A throwaway single-node Slurm cluster for the --slurm test (recipe: shared/notes/slurm-single-node.md).
#   cluster.sh start DIR   writes DIR/slurm.conf, starts munged, slurmctld and slurmd, waits for the node to be idle
#   cluster.sh stop DIR    stops them and waits until they are gone
# Needs root (slurmd) and Debian's slurm-wlm and munge (scripts/setup.sh --test installs them).
set -euo pipefail
cmd=$1 S=$2
export SLURM_CONF=$S/slurm.conf
case $cmd in
start)
  chmod 755 "$S"; mkdir -p "$S/munge" "$S/ctld" "$S/d"
  head -c 1024 /dev/urandom >"$S/munge/key"; chmod 400 "$S/munge/key"
  munged --key-file="$S/munge/key" --socket="$S/munge/sock" --pid-file="$S/munge/pid" \
    --log-file="$S/munge/log" --seed-file="$S/munge/seed"
  H=$(hostname -s) CPUS=$(nproc)
  MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cat >"$SLURM_CONF" <<CONF
ClusterName=formationtest
SlurmctldHost=$H
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge/sock
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/d
SlurmctldPidFile=$S/ctld.pid
SlurmdPidFile=$S/d.pid
SlurmctldLogFile=$S/ctld.log
SlurmdLogFile=$S/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
ReturnToService=2
MailProg=/bin/true
NodeName=$H CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  setsid slurmctld -D -c >"$S/c.err" 2>&1 </dev/null & echo $! >"$S/ctld.run"
  setsid slurmd -D >"$S/d.err" 2>&1 </dev/null & echo $! >"$S/d.run"
  for _ in $(seq 150); do
    [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] && exit 0
    sleep 0.2
  done
  echo "cluster.sh: the node did not become idle in 30 s; $(sinfo -h -N -o %t 2>&1)" >&2
  tail -5 "$S/c.err" "$S/d.err" >&2 || true
  exit 1
  ;;
stop)
  for f in d.run ctld.run munge/pid; do
    [ -f "$S/$f" ] && kill "$(cat "$S/$f")" 2>/dev/null || true
  done
  for f in d.run ctld.run munge/pid; do
    [ -f "$S/$f" ] || continue
    for _ in $(seq 100); do kill -0 "$(cat "$S/$f")" 2>/dev/null || break; sleep 0.05; done
  done
  ;;
esac
