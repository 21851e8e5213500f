#!/usr/bin/env bash
# Soak: a local MF cluster run for a given wall time under faults, checked against an
# undisturbed run of the same job.
#
#   bash benches/soak.sh [MINUTES] [OUT]        (default 30 minutes, OUT=target/soak)
#
# - Both runs: `ps-cluster local --app mf` with 2 shards, 4 workers, checkpoints every 10
#   clocks, and every shard and worker sending through an emulated 100mbit,1ms link. The number
#   of clocks is sized from a short calibration run so the job lasts about MINUTES.
# - The soak run is hit, at random times (seeded by SOAK_SEED, default 1), by SIGKILLs: mostly
#   a random shard (the launcher restarts it from its checkpoint), and up to two workers
#   (evicted; the others go on), every 45-135 s while the job runs. A shard restarted less
#   than 20 s ago is left alone.
# - Every minute the resident memory (VmRSS) of every process of the soak run is sampled into
#   OUT/rss.csv; the report gives each process's first and last sample.
# - The undisturbed run goes alongside, niced. At the end: both summaries, the number of kills,
#   and test RMSE of the soak run against the undisturbed one (the bar: within 1%).
# Not run in CI (it takes MINUTES); `SOAK_SECONDS=120` runs a short one.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
[ "${1:-}" = "-h" ] && { usage; exit 0; }
minutes=${1:-30}
out=${2:-target/soak}
seconds=${SOAK_SECONDS:-$((minutes * 60))}
seed=${SOAK_SEED:-1}
mkdir -p "$out"
logs=$out
RANDOM=$seed

cargo build --release -q -p ps-cluster
bin=target/release/ps-cluster
job=(local --app mf --servers 2 --workers 4 --checkpoint-every 10 --link 100mbit,1ms
  --on-worker-failure evict --restart-timeout 120 --no-progress)

# Seconds per clock, without the start-up: the difference of a 10- and a 210-clock run.
echo "calibrating: 10 and 210 clocks" >&2
t0=$(date +%s.%N)
step calibrate "$bin" "${job[@]}" --clocks 10 >"$out/calibrate.json"
t1=$(date +%s.%N)
step calibrate "$bin" "${job[@]}" --clocks 210 >"$out/calibrate.json"
t2=$(date +%s.%N)
# Sized 1.3x: the soak shares the cores with the undisturbed run, but evicted workers leave
# less work per clock; the report gives the wall time it took.
clocks=$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v s="$seconds" \
  'BEGIN { per = ((c - b) - (b - a)) / 200; n = int(s / per * 1.3); print (n < 40 ? 40 : n) }')
echo "soak: $clocks clocks, about $seconds s; kills seeded with $seed" >&2

nice -n 10 "$bin" "${job[@]}" --clocks "$clocks" >"$out/calm.json" 2>"$out/calm.log" &
calm=$!
"$bin" "${job[@]}" --clocks "$clocks" >"$out/soak.json" 2>"$out/soak.log" &
soak=$!

# Children of the soak launcher: "PID ROLE ID".
procs() {
  for d in /proc/[0-9]*; do
    local pid=${d#/proc/}
    [ "$(awk '{ sub(/.*\) /, ""); print $2 }' "$d/stat" 2>/dev/null)" = "$launcher" ] || continue
    tr '\0' ' ' <"$d/cmdline" 2>/dev/null |
      awk -v p="$pid" '{ for (i = 1; i < NF; i++) if ($i == "--id") id = $(i + 1); print p, $2, id }'
  done
}

# The launcher is the soak job itself (or its child, where the shell forked first).
launcher=$soak
sleep 1
inner=$(pgrep -P "$soak" -f "ps-cluster local" | head -n 1 || true)
[ -n "$inner" ] && launcher=$inner

echo "t_s,pid,process,rss_kb" >"$out/rss.csv"
sample() {
  local t=$1
  echo "$t,$launcher,launcher,$(awk '/VmRSS/ { print $2 }' /proc/$launcher/status 2>/dev/null || echo 0)" >>"$out/rss.csv"
  procs | while read -r pid role id; do
    echo "$t,$pid,$role-$id,$(awk '/VmRSS/ { print $2 }' /proc/$pid/status 2>/dev/null || echo 0)" >>"$out/rss.csv"
  done
}

start=$(date +%s)
declare -A restarted
kills=0 worker_kills=0 next_sample=0
next_kill=$((30 + RANDOM % 60))
: >"$out/kills.log"
while kill -0 "$soak" 2>/dev/null; do
  now=$(($(date +%s) - start))
  if [ "$now" -ge "$next_sample" ]; then
    sleep 1
    sample "$now"
    next_sample=$((next_sample + 60))
  fi
  if [ "$now" -ge "$next_kill" ]; then
    victim=
    if [ "$worker_kills" -lt 2 ] && [ $((RANDOM % 6)) -eq 0 ]; then
      victim=$(procs | awk '$2 == "worker"' | shuf -n 1 --random-source=<(yes "$RANDOM"))
      [ -n "$victim" ] && worker_kills=$((worker_kills + 1))
    else
      victim=$(procs | awk '$2 == "server"' | shuf -n 1 --random-source=<(yes "$RANDOM"))
      if [ -n "$victim" ]; then
        id=$(echo "$victim" | awk '{ print $3 }')
        if [ $((now - ${restarted[$id]:--100})) -lt 20 ]; then victim=; else restarted[$id]=$now; fi
      fi
    fi
    if [ -n "$victim" ]; then
      read -r pid role id <<<"$victim"
      kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
      echo "$now s: SIGKILL $role $id (pid $pid)" | tee -a "$out/kills.log" >&2
    fi
    next_kill=$((now + 45 + RANDOM % 90))
  fi
  sleep 2
done
soak_rc=0
wait "$soak" || soak_rc=$?
calm_rc=0
wait "$calm" || calm_rc=$?
end=$(($(date +%s) - start))

echo "soak: exit $soak_rc after ${end}s, $kills kills ($worker_kills workers); undisturbed: exit $calm_rc"
[ "$soak_rc" = 0 ] || { tail -n 30 "$out/soak.log" >&2; die "the soak run failed"; }
[ "$calm_rc" = 0 ] || { tail -n 30 "$out/calm.log" >&2; die "the undisturbed run failed"; }
echo "memory (VmRSS kB), first and last sample of each process:"
awk -F, 'NR > 1 { k = $2 " " $3; if (!(k in first)) { first[k] = $4; t0[k] = $1; order[++n] = k } last[k] = $4; t1[k] = $1 }
  END { for (i = 1; i <= n; i++) { k = order[i]; printf "  %-22s %6s s: %8s   %6s s: %8s\n", k, t0[k], first[k], t1[k], last[k] } }' "$out/rss.csv"
python3 - "$out/soak.json" "$out/calm.json" <<'PY' || true
import json, sys
s = json.loads(open(sys.argv[1]).read().splitlines()[-1])
c = json.loads(open(sys.argv[2]).read().splitlines()[-1])
a, b = c["test_rmse"], s["test_rmse"]
print(f"test RMSE: soak {b:.5f}, undisturbed {a:.5f}, difference {100 * (b - a) / a:+.3f}%")
print(f"restarts {s['restarts']}, evicted workers {s['evicted_workers']}, clocks {s['clocks']}, wall {s['wall_s']} s")
PY
