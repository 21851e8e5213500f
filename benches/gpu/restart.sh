#!/usr/bin/env bash
# A shard killed with SIGKILL under GPU workers: `ps-cluster local` restarts it from its
# checkpoint, the workers resend what it lacks, and the model is the undisturbed run's.
#
#   bash benches/gpu/restart.sh BIN_DIR OUT [DEVICE]      (DEVICE default cuda; cpu works too)
#
# MF with --deterministic: the item table hash must equal the undisturbed run's. LDA (the
# resident engine on a GPU), also --deterministic: the job must end with restarts 1 and a
# log-likelihood per token at the app's quality bar (>= -5.55); the line says whether it equals
# the undisturbed run's (one Gibbs chain may settle in another mode than another).
# Writes OUT/restart-*.json and prints one line per app.
set -uo pipefail
bin=$1/ps-cluster
out=$2
device=${3:-cuda}
mkdir -p "$out"

# The pid of shard 0 among the children of process $1: by pgrep, or where procps is not
# installed (a minimal image), by the children's command lines in /proc.
shard0_of() {
  if command -v pgrep >/dev/null; then
    pgrep -P "$1" -f -- 'server .*--id 0( |$)' | head -n 1
    return
  fi
  local d
  for d in /proc/[0-9]*; do
    # The parent's pid is the second field after the command name's closing parenthesis.
    [ "$(sed 's/.*) //' "$d/stat" 2>/dev/null | awk '{print $2}')" = "$1" ] || continue
    tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qE 'server .*--id 0( |$)' && {
      echo "${d#/proc/}"
      return
    }
  done
}

# Runs the job; with KILL=1 kills shard 0 once clock 12 is printed. Summary to $1.json.
run() {
  local name=$1 kill=$2
  shift 2
  "$bin" local --device "$device" --no-progress --checkpoint-every 5 --slow-worker 0:60 "$@" \
    >"$out/$name.out" 2>"$out/$name.err" &
  local launcher=$! killed=0
  while kill -0 "$launcher" 2>/dev/null; do
    if [ "$kill" = 1 ] && [ "$killed" = 0 ] && grep -qE '^clock +1[2-9]' "$out/$name.out"; then
      local pid
      pid=$(shard0_of "$launcher")
      [ -n "$pid" ] && kill -9 "$pid" && killed=1
    fi
    sleep 0.1
  done
  wait "$launcher" || { echo "$name: the job failed"; tail -n 5 "$out/$name.err"; return 1; }
  tail -n 1 "$out/$name.out" >"$out/$name.json"
}

status=0
run restart-mf-calm 0 --app mf --clocks 30 --deterministic || status=1
run restart-mf-hit 1 --app mf --clocks 30 --deterministic || status=1
run restart-lda-calm 0 --app lda --clocks 30 --deterministic || status=1
run restart-lda-hit 1 --app lda --clocks 30 --deterministic || status=1
[ "$status" = 0 ] || exit 1
python3 - "$out" "$device" <<'PY'
import json, sys
out, device = sys.argv[1], sys.argv[2]
load = lambda n: json.loads(open(f"{out}/{n}.json").read())
ok = True
a, b = load("restart-mf-calm"), load("restart-mf-hit")
same = a["item_table_hash"] == b["item_table_hash"] and b["restarts"] == 1
ok &= same
print(f"restart mf on {b.get('device', device)}: restarts {b['restarts']}, hash {b['item_table_hash']} vs undisturbed "
      f"{a['item_table_hash']} ({'equal' if same else 'DIFFER'}), test_rmse {b['test_rmse']:.5f} vs {a['test_rmse']:.5f}")
a, b = load("restart-lda-calm"), load("restart-lda-hit")
x, y = a["loglik_per_token"], b["loglik_per_token"]
good = y >= -5.55 and b["restarts"] == 1
ok &= good
print(f"restart lda on {b.get('device', device)}: restarts {b['restarts']}, loglik/token {y:.4f} "
      f"({'at' if good else 'BELOW'} the bar -5.55) vs undisturbed {x:.4f} ({'equal' if x == y else 'differs'}), "
      f"topic recovery {b.get('topic_recovery', 0):.4f} vs {a.get('topic_recovery', 0):.4f}")
sys.exit(0 if ok else 1)
PY
