#!/bin/bash
# Runs examples/ps.sbatch on a real single-node Slurm started here: a generated munge key and
# slurm.conf in a temporary directory, munged, slurmctld and slurmd as root, then
# `sbatch --wait` of a 5-task job (1 coordinator, 2 shards, 2 workers) on this one node, and the
# job's output. Stops the daemons it started on exit.
#
# Needs root and Debian's slurm-wlm and munge (`apt-get install -y slurm-wlm munge`).
#   PS_BIN    the ps-cluster binary [default: target/release/ps-cluster, else target/debug/ps-cluster]
#   PS_ARGS   flags for the job [default: "--clocks 3"]
#   PS_DEVICE the workers' device [default: cpu]
#   PS_TASKS  tasks in the job step [default: 5: a coordinator, 2 shards, 2 workers]
#   KEEP=1    keep the temporary directory (configs, daemon logs)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
say() { echo "single-node-test: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (the daemons run as root)"
for c in munged slurmctld slurmd sbatch sinfo scontrol; do
  command -v "$c" > /dev/null || die "$c not found: apt-get install -y slurm-wlm munge"
done
if [[ -z ${PS_BIN:-} ]]; then
  for b in "$repo/target/release/ps-cluster" "$repo/target/debug/ps-cluster"; do
    [[ -x $b ]] && PS_BIN=$b && break
  done
fi
[[ -x ${PS_BIN:-} ]] || die "no ps-cluster binary: cargo build -p ps-cluster, or set PS_BIN"
PS_BIN=$(realpath "$PS_BIN")
PS_ARGS=${PS_ARGS:---clocks 3}
PS_DEVICE=${PS_DEVICE:-cpu}
PS_TASKS=${PS_TASKS:-5}

run=$(mktemp -d /tmp/ps-slurm.XXXXXX)
chmod 755 "$run"
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  if [[ -f $run/munge/munged.pid ]]; then
    # munged is not our child: wait (up to 5 s) for it to exit, since it writes its seed file
    # on the way out and would race the removal below.
    local mp
    mp=$(cat "$run/munge/munged.pid")
    kill "$mp" 2> /dev/null || true
    for _ in $(seq 50); do kill -0 "$mp" 2> /dev/null || break; sleep 0.1; done
  fi
  if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then
    say "logs and configs kept in $run"
  else
    rm -rf "$run" 2> /dev/null || { sleep 1; rm -rf "$run" || say "could not remove $run"; }
  fi
  exit "$rc"
}
trap cleanup EXIT

host=$(hostname -s)
mkdir -p "$run/munge" "$run/key" "$run/state" "$run/spool" "$run/shared"
chmod 755 "$run/munge" # munged wants its socket's directory searchable by all
chmod 700 "$run/key"
t0=$(date +%s.%N)

# munge: a fresh key and a private socket.
dd if=/dev/urandom of="$run/key/munge.key" bs=1024 count=1 status=none
chmod 400 "$run/key/munge.key"
munged --key-file="$run/key/munge.key" --socket="$run/munge/munge.socket" \
  --pid-file="$run/munge/munged.pid" --log-file="$run/munge/munged.log" \
  --seed-file="$run/munge/munged.seed" \
  || die "munged did not start: $(tail -5 "$run/munge/munged.log" 2> /dev/null)"

# One node that claims at least 8 CPUs (config_overrides: slurmd takes the configured figures
# rather than the hardware's), so the tasks fit on a 2-core machine.
cpus=$(nproc)
((cpus >= 8)) || cpus=8
((cpus >= PS_TASKS)) || cpus=$PS_TASKS
cat > "$run/slurm.conf" << EOF
ClusterName=pstest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$run/munge/munge.socket
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$run/state
SlurmdSpoolDir=$run/spool
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$run/slurmctld.log
SlurmdLogFile=$run/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=60
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$run/slurm.conf

slurmctld -D -i -f "$SLURM_CONF" > "$run/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" > "$run/slurmd.out" 2>&1 &
pids+=($!)

state=
for _ in $(seq 1 60); do
  state=$(sinfo -h -n "$host" -o %T 2> /dev/null || true)
  [[ $state == idle ]] && break # not "idle*": slurmd has not registered yet
  for p in "${pids[@]}"; do
    kill -0 "$p" 2> /dev/null || {
      say "a daemon exited; its output:"
      tail -n 30 "$run"/slurmctld.out "$run"/slurmd.out "$run"/slurmctld.log "$run"/slurmd.log >&2 || true
      die "daemon $p exited"
    }
  done
  sleep 1
done
if [[ $state != idle ]]; then
  tail -n 30 "$run"/slurmctld.log "$run"/slurmd.log >&2 || true
  die "node $host is ${state:-unknown}, not idle, after 60 s"
fi
t1=$(date +%s.%N)
say "daemons up in $(printf %.1f "$(awk "BEGIN { print $t1 - $t0 }")") s (munged, slurmctld, slurmd; node $host idle)"

cd "$repo"
PS_BIN=$PS_BIN PS_DIR=$run/shared PS_SERVERS=2 PS_ARGS=$PS_ARGS PS_DEVICE=$PS_DEVICE \
  sbatch --wait --nodes=1 --ntasks-per-node="$PS_TASKS" --time=5 \
  --output="$run/job.out" examples/ps.sbatch \
  || { cat "$run/job.out" 2> /dev/null; die "the job failed"; }
t2=$(date +%s.%N)
say "job done in $(printf %.1f "$(awk "BEGIN { print $t2 - $t1 }")") s; its output:"
cat "$run/job.out"
summary=$(grep '^{"app"' "$run/job.out" | tail -n 1)
[[ -n $summary ]] || die "no JSON summary in the job's output"
say "OK: summary: $summary"
