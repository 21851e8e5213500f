#!/usr/bin/env bash
# Our fast CPU engines next to well-known reference tools, on the same generated data, at 1 and
# 2 threads (not a test). See benches/PEERS.md.
#
#   benches/peers.sh [--quick] [APP ...]        APP: mf lda lr mlp (default: all four)
#
# Steps: a venv in target/peer-venv with the pinned peers (pip), an AVX build of LIBMF from the
# pip package's own sources (for MF), `cargo bench -p ps-benches --bench engines --no-run`,
# the data sets exported to target/peer-data/APP, then for each app and thread count our engine
# and the peer(s) back to back. Prints a table (ours, peer, ours/peer) and writes
# target/bench-results/peers.csv (one row per comparison, this run only) and the raw JSON
# lines to target/bench-results/peers.jsonl. Logs of every step: target/bench-results/peers-logs/.
#
# Environment: CARGO_TARGET_DIR (where cargo builds; default the workspace target/),
# PEER_THREADS (default "1 2"), PEER_SEED (default 42), PYTHON (default python3, for the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=common.sh
. benches/common.sh

quick=""
apps=()
for a in "$@"; do
  case "$a" in
    --quick) quick="--quick" ;;
    mf | lda | lr | mlp) apps+=("$a") ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$a'" ;;
  esac
done
[ ${#apps[@]} -gt 0 ] || apps=(mf lda lr mlp)
threads_list=${PEER_THREADS:-1 2}
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
seed=${PEER_SEED:-42}

venv=target/peer-venv
data=target/peer-data
results=target/bench-results
logs=$results/peers-logs
jsonl=$results/peers.jsonl
csv=$results/peers.csv
mkdir -p "$data" "$logs"
: >"$jsonl"

# Versions verified to install and run here (Python 3.11, x86-64 Linux).
pins=(numpy==2.4.6 scipy==1.17.1 scikit-learn==1.9.1 threadpoolctl==3.8.0 tomotopy==0.14.0 libmf==0.9.2)


# CPU seconds all processes on the machine have used (user, nice, system, irq, softirq,
# steal), and those used by this shell's finished children (which include the steps).
hz=$(getconf CLK_TCK)
ncores=$(nproc)
busy_s() { awk -v hz="$hz" '/^cpu /{ printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/hz }' /proc/stat; }
# `times` must run in this shell (a subshell starts with zero child times), hence the file.
times_file=$logs/.times
own_s() { awk 'NR==2 { n=0; for (i=1; i<=2; i++) { split($i, a, "m"); sub("s", "", a[2]); n += a[1]*60 + a[2] } printf "%.2f\n", n }' "$times_file"; }

# Runs a measurement; its JSON lines (stdout) go to peers.jsonl, tagged with the step name and
# "others_cpu": the share of the machine's CPU (0..1) that OTHER processes used meanwhile.
measure() {
  local name=$1
  shift
  echo "  $name" >&2
  local out b0 o0 w0 b1 o1 w1 others lines
  times >"$times_file"
  b0=$(busy_s) o0=$(own_s) w0=$(date +%s.%N)
  out=$(step "$name" "$@") || exit 1
  times >"$times_file"
  b1=$(busy_s) o1=$(own_s) w1=$(date +%s.%N)
  others=$(awk -v b="$b1" -v b0="$b0" -v o="$o1" -v o0="$o0" -v w="$w1" -v w0="$w0" \
    -v n="$ncores" 'BEGIN { x = ((b - b0) - (o - o0)) / ((w - w0) * n); if (x < 0) x = 0; printf "%.2f", x }')
  lines=$(printf '%s\n' "$out" | grep '^{' || true)
  [ -n "$lines" ] || die "step '$name' printed no JSON line (log: $logs/$name.log)"
  printf '%s\n' "$lines" | sed "s/^{/{\"step\":\"$name\",\"others_cpu\":$others,/" >>"$jsonl"
}


# ---- 1. venv with the peers
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv" >&2
  step venv "${PYTHON:-python3}" -m venv "$venv"
fi
py=$venv/bin/python
echo "== pip install ${pins[*]}" >&2
step pip "$py" -m pip install --disable-pip-version-check -q "${pins[@]}"

# ---- 2. LIBMF with AVX, built from the sources inside the pip package's sdist
libmf_avx=""
if [[ " ${apps[*]} " == *" mf "* ]]; then
  libmf_avx=$venv/libmf-0.9.2-avx.so
  if ! command -v g++ >/dev/null; then
    echo "peers.sh: warning: no g++, so no AVX build of LIBMF: only the pip build is compared" >&2
    libmf_avx=""
  elif ! grep -qw avx /proc/cpuinfo; then
    echo "peers.sh: warning: this CPU has no AVX: only the pip build of LIBMF is compared" >&2
    libmf_avx=""
  elif [ ! -f "$libmf_avx" ]; then
    echo "== building LIBMF 0.9.2 with -mavx -DUSEAVX from the libmf sdist" >&2
    src=$(mktemp -d)
    step libmf-download "$py" -m pip download --disable-pip-version-check -q --no-deps \
      --no-binary :all: libmf==0.9.2 -d "$src"
    step libmf-untar tar -xzf "$src/libmf-0.9.2.tar.gz" -C "$src"
    # The flags of LIBMF's own Makefile with AVX on (the pip build uses Python's default
    # flags, i.e. the plain SSE2 path).
    step libmf-build g++ -O3 -pthread -std=c++11 -march=native -mavx -DUSEAVX -fPIC -shared \
      "$src/libmf-0.9.2/src_cpp/mf.cpp" "$src/libmf-0.9.2/src_cpp/libmf_interface.cpp" \
      -o "$libmf_avx"
    rm -rf "$src"
  fi
fi

# ---- 3. our bench binary
echo "== cargo bench -p ps-benches --bench engines --no-run (target: ${CARGO_TARGET_DIR:-target})" >&2
cargo_json=$(step cargo cargo bench -p ps-benches --bench engines --no-run --message-format=json) || exit 1
bin=$(printf '%s\n' "$cargo_json" | "$py" -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "engines" and m.get("executable"):
        exe = m["executable"]
print(exe)')
[ -n "$bin" ] && [ -x "$bin" ] || die "could not find the engines bench executable (log: $logs/cargo.log)"

# ---- 4. per app: export the data once, then ours and the peers at each thread count
# Same warm-up and timed repetitions on both sides.
reps_for() {
  case "$1" in
    mf) echo "1 5" ;;   # epochs; LIBMF: the difference of fit(1) and fit(1+5), 3 pairs
    lda) echo "5 10" ;; # sweeps/iterations
    lr) echo "1 20" ;;  # epochs
    mlp) echo "1 5" ;;  # epochs
  esac
}
for app in "${apps[@]}"; do
  read -r warm reps <<<"$(reps_for "$app")"
  dir=$data/$app
  echo "== $app: exporting data to $dir" >&2
  rm -rf "$dir"
  step "$app-export" "$bin" --app "$app" $quick --seed "$seed" --export "$dir" --export-only
  common=(--warmup "$warm" --reps "$reps" --seed "$seed")
  for t in $threads_list; do
    case "$app" in
      mf)
        measure "mf-ours-t$t" "$bin" --app mf $quick --threads "$t" "${common[@]}"
        measure "mf-libmf-pip-t$t" "$py" benches/peers/libmf_peer.py --data "$dir" \
          --threads "$t" --warmup "$warm" --reps "$reps" --pairs 3 --name libmf-pip
        if [ -n "$libmf_avx" ]; then
          measure "mf-libmf-avx-t$t" "$py" benches/peers/libmf_peer.py --data "$dir" \
            --threads "$t" --warmup "$warm" --reps "$reps" --pairs 3 --so "$libmf_avx" \
            --name libmf-avx
        fi
        ;;
      lda)
        for k in 50 500; do
          measure "lda-k$k-ours-t$t" "$bin" --app lda $quick --threads "$t" --topics "$k" \
            "${common[@]}"
          measure "lda-k$k-tomotopy-t$t" "$py" benches/peers/tomotopy_peer.py --data "$dir" \
            --threads "$t" --topics "$k" "${common[@]}"
        done
        ;;
      lr)
        measure "lr-ours-t$t" "$bin" --app lr $quick --threads "$t" "${common[@]}"
        measure "lr-sklearn-t$t" "$py" benches/peers/sgd_peer.py --data "$dir" --threads "$t" \
          "${common[@]}"
        ;;
      mlp)
        measure "mlp-ours-t$t" "$bin" --app mlp $quick --threads "$t" "${common[@]}"
        measure "mlp-sklearn-t$t" "$py" benches/peers/mlp_peer.py --data "$dir" --threads "$t" \
          "${common[@]}"
        ;;
    esac
  done
done

# ---- 5. table and CSV
"$py" - "$jsonl" "$csv" <<'PY' || die "building the table failed"
import csv, json, sys, time

jsonl, out_csv = sys.argv[1:3]
lines = [json.loads(l) for l in open(jsonl) if l.strip()]
ours = [l for l in lines if l["engine"].startswith("ours-")]
peers = [l for l in lines if not l["engine"].startswith("ours-")]

def config(l):
    app = l["app"]
    if app == "mf":
        return f"rank {l['rank']}, {l['users']}x{l['items']}, {l['ratings']} ratings"
    if app == "lda":
        return f"K={l['topics']}, {l['docs']} docs x {l['doc_len']}, V={l['vocab']}"
    if app == "lr":
        return f"{l['rows']} rows x {l['features']} feats, {l['nnz_per_row']} nnz/row"
    return f"784-256-256-10, {l['samples']} samples, batch {l['batch']}"

def variant(l):
    if l["app"] == "mf":
        return f"{l['order']} order"
    if l["app"] == "lr":
        return {"train": "train step", "engine": "keys+gradient", "gradient": "gradient only"}[l["measure"]]
    return "train"

rows = []
stamp = time.strftime("%Y-%m-%dT%H:%M:%S")

def peer_best_upto(p):
    """The peer's best rate at any thread count <= p's (same engine and shape)."""
    same = [q["rate"] for q in peers if q["engine"] == p["engine"] and q["app"] == p["app"]
            and q.get("topics") == p.get("topics") and q["threads"] <= p["threads"]]
    return max(same)

for p in peers:
    key = lambda l: (l["app"], l["threads"], l.get("topics"))
    mine = [o for o in ours if key(o) == key(p)]
    if not mine:
        sys.exit(f"no measurement of ours for {p['app']} threads {p['threads']}")
    for o in mine:
        if o["data_hash"] != p["data_hash"]:
            sys.exit(f"data mismatch for {p['app']}: ours {o['data_hash']} vs {p['engine']} {p['data_hash']}")
        best_o, best_p = o.get("rate_best"), p.get("rate_best")
        rows.append({
            "app": p["app"], "config": config(o), "threads": p["threads"],
            "ours": f"ours ({variant(o)})", "ours_rate": o["rate"], "ours_rate_best": best_o,
            "peer": p["engine"], "peer_version": p.get("version", ""),
            "peer_rate": p["rate"], "peer_rate_best": best_p, "unit": p["unit"],
            "ratio": o["rate"] / p["rate"],
            "ratio_best": (best_o / best_p) if best_o and best_p else None,
            "ratio_vs_peer_best_upto_threads": o["rate"] / peer_best_upto(p),
            "others_cpu_ours": o.get("others_cpu"), "others_cpu_peer": p.get("others_cpu"),
            "floor_fraction": o.get("floor_fraction"),
            "warmup": o["warmup"], "reps": o["reps"], "data_hash": p["data_hash"],
            "quick": o.get("quick", False), "timestamp": stamp,
        })

def si(x):
    if x is None:
        return "-"
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f} {suf}"
    return f"{x:.0f}"

hdr = f"{'app':4} {'thr':>3}  {'ours (variant)':<26} {'ours':>10}  {'peer':<12} {'peer rate':>10}  {'unit':<10} {'ours/peer':>9} {'(best)':>7} {'(<=thr)':>8}  {'floor':>6}  {'others':>9}  config"
print(hdr)
print("-" * len(hdr))
for r in rows:
    ff = f"{r['floor_fraction']:.2f}" if r["floor_fraction"] is not None else ""
    rb = f"{r['ratio_best']:.2f}" if r["ratio_best"] is not None else "-"
    lu = r["ratio_vs_peer_best_upto_threads"]
    lu = f"{lu:.2f}" if abs(lu - r["ratio"]) > 0.005 else "="
    load = f"{r['others_cpu_ours']:.2f}/{r['others_cpu_peer']:.2f}"
    print(f"{r['app']:4} {r['threads']:>3}  {r['ours']:<26} {si(r['ours_rate']):>10}  {r['peer']:<12} "
          f"{si(r['peer_rate']):>10}  {r['unit']:<10} {r['ratio']:>9.2f} {rb:>7} {lu:>8}  {ff:>6}  {load:>9}  {r['config']}")
with open(out_csv, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
versions = sorted({(p["engine"], p.get("version", "")) for p in peers})
print("peers: " + ", ".join(f"{e} {v}" for e, v in versions))
print("floor = ours / (39 M updates/s x threads), the per-core memory floor of MF rank 32")
print("rates: work x timed reps / their time; (best) = ratio of the best single reps;")
print("(<=thr) = ours / the peer's best rate at any thread count <= thr ('=' when the same);")
print("others = share of the machine's CPU used by other processes during ours / the peer (0 = quiet)")
print(f"csv: {out_csv}  json: {jsonl}")
PY
