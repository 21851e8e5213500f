#!/usr/bin/env bash
# MovieLens 100K, the real ratings: a fixed 80/20 train/test split, Surprise's SVD on it as the
# quality baseline, and our MF on the same split (not a test).
#
#   benches/movielens.sh [STEP ...] [-- EXTRA FLAGS FOR OURS]
#       STEP: data surprise ours (default: data then surprise; ours only when named)
#   e.g. benches/movielens.sh ours -- --rank 100 --clocks 40
#
# Steps:
#   data      pip-downloads the wheel of recbole==1.2.1 (once) into target/movielens/, takes its
#             dataset_example/ml-100k/ml-100k.inter, checks it (SHA-256; 100,000 ratings,
#             943 users, 1682 items, ratings 1-5) and writes target/movielens/ml-100k/:
#             u.data (GroupLens' format: user TAB item TAB rating TAB time, ids as in the file),
#             train.data and test.data (same format): a uniform random 80/20 split of the
#             ratings, reproducible: Python's random.Random(ML_SEED).shuffle of the ratings'
#             positions, the first 80,000 train, the other 20,000 test, each file in u.data's
#             order (benches/movielens/split.py has the details and checks the files' SHA-256).
#   surprise  a venv in target/surprise-venv with pinned scikit-surprise; on train/test:
#             SVD with Surprise's defaults (biased, 100 factors, 20 epochs, lr 0.005, reg 0.02)
#             for random_state 0..4, the same with biased=False, and BaselineOnly (biases only,
#             ALS); test RMSE per seed and the mean (benches/movielens/surprise_svd.py).
#   ours      runs an already-built PS_CLUSTER (never built here) as
#             `ps-cluster local --app mf --data train.data --test test.data EXTRA...`, takes
#             test_rmse from the JSON summary it prints last, and prints it next to Surprise's
#             mean RMSEs (from the surprise step's lines in the results) with ours/surprise
#             (below 1: ours is better). Needs a ps-cluster whose --app mf takes --test.
#
# Results: target/bench-results/movielens.jsonl, JSON lines tagged with "step"; data and surprise
# replace their own earlier lines, each ours run adds one. Logs: target/bench-results/movielens-logs/.
#
# Environment: ML_SEED (split seed, default 42), PS_CLUSTER (the binary for ours; default
# ${CARGO_TARGET_DIR:-target}/release/ps-cluster), PYTHON (default python3: split.py and the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=common.sh
. benches/common.sh

steps=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    data | surprise | ours) steps+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1' (flags for ours go after --)" ;;
  esac
  shift
done
[ ${#steps[@]} -gt 0 ] || steps=(data surprise)
if [ ${#extra[@]} -gt 0 ] && [[ " ${steps[*]} " != *" ours "* ]]; then
  die "flags after -- are for ours, which was not asked for"
fi
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree

python=${PYTHON:-python3}
seed=${ML_SEED:-42}
dir=target/movielens
mldir=$dir/ml-100k
venv=target/surprise-venv
results=target/bench-results
logs=$results/movielens-logs
jsonl=$results/movielens.jsonl
bin=${PS_CLUSTER:-${CARGO_TARGET_DIR:-target}/release/ps-cluster}
mkdir -p "$dir" "$logs"

# Versions verified to install (binary wheels) and run here (Python 3.11, x86-64 Linux).
pins=(scikit-surprise==1.1.5 numpy==2.4.6 scipy==1.17.1 joblib==1.6.0 cloudpickle==3.1.3)


# record STEP MODE: JSON lines on stdin into the results; MODE replace drops STEP's earlier lines.
record() {
  "$python" -c '
import json, os, sys
path, step, mode = sys.argv[1:4]
new = [l for l in sys.stdin.read().splitlines() if l.startswith("{")]
if not new:
    sys.exit(f"movielens.sh: error: step {step} printed no JSON line")
old = open(path).read().splitlines() if os.path.exists(path) else []
if mode == "replace":
    old = [l for l in old if l.strip() and json.loads(l).get("step") != step]
with open(path + ".tmp", "w") as f:
    f.write("".join(l + "\n" for l in old + new))
os.replace(path + ".tmp", path)
' "$jsonl" "$1" "$2"
}

step_data() {
  echo "== data: MovieLens 100K into $mldir (split seed $seed)" >&2
  local out
  out=$(step data "$python" benches/movielens/split.py --dir "$dir" --seed "$seed") || exit 1
  cat "$logs/data.log" >&2
  printf '%s\n' "$out" | record data replace
}

need_split() {
  [ -f "$mldir/train.data" ] && [ -f "$mldir/test.data" ] ||
    die "no $mldir/train.data or test.data: run 'benches/movielens.sh data' first"
}

step_surprise() {
  need_split
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv" >&2
    step venv "$python" -m venv "$venv"
  fi
  echo "== pip install ${pins[*]}" >&2
  step pip "$venv/bin/python" -m pip install --disable-pip-version-check -q "${pins[@]}"
  echo "== surprise: SVD (seeds 0..4), SVD biased=False (seeds 0..4), BaselineOnly" >&2
  local out
  out=$(step surprise "$venv/bin/python" benches/movielens/surprise_svd.py --dir "$mldir") || exit 1
  cat "$logs/surprise.log" >&2
  printf '%s\n' "$out" | record surprise replace
}

step_ours() {
  need_split
  [ -x "$bin" ] || die "no ps-cluster binary at $bin: build it (cargo build --release) or set PS_CLUSTER"
  local cmd=("$bin" local --app mf --data "$mldir/train.data" --test "$mldir/test.data")
  [ ${#extra[@]} -eq 0 ] || cmd+=("${extra[@]}")
  echo "== ours: ${cmd[*]}" >&2
  local out=$logs/ours.out err=$logs/ours.log
  if ! "${cmd[@]}" >"$out" 2>"$err"; then
    echo "---- last lines of $err" >&2
    tail -n 10 "$err" >&2
    if grep -q -- '--test' "$err"; then
      die "$bin refused --test (see above): this build's --app mf has no --test TESTFILE yet;" \
        "build one that has it, or point PS_CLUSTER at one"
    fi
    die "ps-cluster failed (stdout: $out, stderr: $err)"
  fi
  grep -v '^{' "$out" | tail -n 1 >&2 || true
  # The summary line, with Surprise's figures from the results, into one JSON line.
  local line
  line=$(ML_BIN=$bin "$python" - "$out" "$jsonl" "$mldir" ${extra[@]+"${extra[@]}"} <<'PY'
import hashlib, json, os, sys, time
out, jsonl, mldir = sys.argv[1:4]
summary = None
for l in open(out).read().splitlines():
    if l.startswith("{"):
        summary = json.loads(l)
if summary is None or not isinstance(summary.get("test_rmse"), (int, float)):
    sys.exit(f"movielens.sh: error: no JSON summary with a numeric test_rmse at the end of {out}")
sha = lambda p: hashlib.sha256(open(os.path.join(mldir, p), "rb").read()).hexdigest()
train_sha, test_sha = sha("train.data"), sha("test.data")
peers = {}
if os.path.exists(jsonl):
    for l in open(jsonl):
        r = json.loads(l)
        if r.get("step") == "surprise":
            peers[r["model"]] = r
if "SVD" not in peers:
    sys.exit(f"movielens.sh: error: no Surprise SVD figure in {jsonl}: run 'benches/movielens.sh surprise'")
if (peers["SVD"]["train_sha256"], peers["SVD"]["test_sha256"]) != (train_sha, test_sha):
    sys.exit("movielens.sh: error: Surprise's figures are for another split: run 'benches/movielens.sh surprise' again")
ours = summary["test_rmse"]
print(f"{'model':40} {'test RMSE':>9}  {'ours/model':>10}", file=sys.stderr)
print(f"{'ours (ps-cluster mf)':40} {ours:9.4f}", file=sys.stderr)
for name in ("SVD", "SVD-unbiased", "BaselineOnly"):
    if name in peers:
        p = peers[name]
        label = f"surprise {p['surprise']} {name}" + (f" (mean of {len(p['seeds'])})" if len(p["seeds"]) > 1 else "")
        print(f"{label:40} {p['test_rmse']:9.4f}  {ours / p['test_rmse']:10.4f}", file=sys.stderr)
print(json.dumps({
    "step": "ours", "test_rmse": ours, "surprise_svd_test_rmse": peers["SVD"]["test_rmse"],
    "ratio_vs_surprise_svd": ours / peers["SVD"]["test_rmse"],
    "args": sys.argv[4:], "binary": os.environ.get("ML_BIN", ""), "train_sha256": train_sha,
    "test_sha256": test_sha, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": summary,
}))
PY
  ) || exit 1
  printf '%s\n' "$line" | record ours append
}

for s in "${steps[@]}"; do
  "step_$s"
done
echo "results: $jsonl" >&2
