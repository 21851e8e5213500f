#!/usr/bin/env bash
# Overlap benchmark (not a test): MF on the built-in data over an emulated link, with overlap on
# and off, reporting per-clock wall time against max(compute, communication).
#
#   benches/overlap.sh [LINK] [STALENESS] [RANK] [CLOCKS] [REPEATS]
#   defaults:          1gbit,100us  1     128    30       3
#
# Per clock (means over workers, from the summary line): compute = wall - blocked on each
# worker; comm = time push and pull requests took, start to finish (a prefetch counts from when
# it was sent, parking at the shard included); wall = the job's training wall time / clocks.
# Target: with overlap on, wall <= 1.15 x max(compute, comm). Rows go to
# target/bench-results/overlap.csv (one per run) and a table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
link=${1:-1gbit,100us}
staleness=${2:-1}
rank=${3:-128}
clocks=${4:-30}
repeats=${5:-3}
cargo build --release --quiet --bin ps-cluster
mkdir -p target/bench-results
csv=target/bench-results/overlap.csv
[ -f "$csv" ] || echo "link,staleness,rank,clocks,overlap,run,wall_ms,compute_ms,comm_ms,blocked_ms,overlap_ms,max_ms,wall_over_max,test_rmse,bytes_sent,bytes_received" > "$csv"
printf "%-8s %4s %9s %11s %9s %10s %9s %13s\n" overlap run wall_ms compute_ms comm_ms blocked_ms max_ms wall/max
for run in $(seq 1 "$repeats"); do
  for mode in on off; do
    flag=""; [ "$mode" = off ] && flag="--no-overlap"
    line=$(./target/release/ps-cluster local --app mf --rank "$rank" --staleness "$staleness" \
      --clocks "$clocks" --link "$link" $flag 2>/dev/null | tail -1)
    python3 - "$line" "$mode" "$run" "$link" "$csv" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); mode, run, link, csv = sys.argv[2:6]
c = d["clocks"]
ms = lambda k: 1000.0 * d[k] / c
wall, comp, comm, blk, ovl = ms("wall_s"), ms("compute_s"), ms("comm_s"), ms("blocked_s"), ms("overlap_s")
mx = max(comp, comm)
print(f"{mode:<8} {run:>4} {wall:9.2f} {comp:11.2f} {comm:9.2f} {blk:10.2f} {mx:9.2f} {wall/mx:13.3f}")
with open(csv, "a") as f:
    f.write(",".join(str(x) for x in [link, d["staleness"], d["rank"], c, mode, run,
        round(wall, 3), round(comp, 3), round(comm, 3), round(blk, 3), round(ovl, 3),
        round(mx, 3), round(wall / mx, 4), d["test_rmse"], d["bytes_sent"], d["bytes_received"]]) + "\n")
PY
  done
done
echo "rows appended to $csv"
