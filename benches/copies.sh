#!/usr/bin/env bash
# Host bytes copied and allocations per clock of an MF worker (rank 32, built-in data, 2 shards,
# 2 workers), before and after a change.
#
#   benches/copies.sh [BEFORE]      BEFORE: a commit (default 378ba7b, the tree before the worker
#                                   API and sessions); "after" is this working tree
#
# benches/copies/count.c, preloaded into every process of a local job, counts the calls to
# malloc and friends and the bytes through memcpy/memmove (how Rust code allocates and copies
# slices; copies the compiler inlines are not seen), and each process reports its totals at exit.
# A clock's share is the difference between a 40-clock and a 10-clock job over 30 clocks, so
# start-up (data generation, connections) cancels out; figures are per worker. Counted: the
# whole worker process (the apps, the client, quinn and rustls). The job runs with one clock per
# epoch (every item read every clock) and with four (a clock touches a quarter of the ratings).
# Needs gcc; builds BEFORE from `git archive` into target/copies (a few minutes, once).
# Prints a table and appends JSON lines to target/bench-results/copies.jsonl.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
before=${1:-378ba7b}
out=$root/target/copies
mkdir -p "$out" "$root/target/bench-results"
gcc -O2 -shared -fPIC -fno-builtin -o "$out/count.so" "$root/benches/copies/count.c" -ldl

(cd "$root" && cargo build --release --quiet --bin ps-cluster)
src=$out/src-$before
if [ ! -d "$src" ]; then
    mkdir -p "$src"
    git -C "$root" archive --format=tar "$before" | tar -x -C "$src"
fi
(cd "$src" && CARGO_TARGET_DIR=$out/target-$before cargo build --release --quiet --bin ps-cluster)

# Worker totals of one job: allocations, allocated bytes, copies, copied bytes.
totals() {
    local bin=$1 clocks=$2 per_epoch=$3 dir
    dir=$(mktemp -d)
    COPIES_DIR=$dir LD_PRELOAD=$out/count.so "$bin" local --app mf --rank 32 \
        --clocks "$clocks" --clocks-per-epoch "$per_epoch" >/dev/null 2>&1
    awk '$1 == "worker" { a += $3; b += $5; c += $7; d += $9 } END { print a, b, c, d }' "$dir"/*.txt
    rm -r "$dir"
}

printf '%-8s %-10s %16s %16s %12s %16s\n' tree per_epoch allocs/clock alloc_MB/clock copies/clock copied_MB/clock
for per_epoch in 1 4; do
    for tree in before after; do
        if [ "$tree" = before ]; then bin=$out/target-$before/release/ps-cluster; else bin=$root/target/release/ps-cluster; fi
        read -r a1 b1 c1 d1 < <(totals "$bin" 10 "$per_epoch")
        read -r a2 b2 c2 d2 < <(totals "$bin" 40 "$per_epoch")
        line=$(awk -v a1="$a1" -v b1="$b1" -v c1="$c1" -v d1="$d1" -v a2="$a2" -v b2="$b2" \
            -v c2="$c2" -v d2="$d2" 'BEGIN { n = 30 * 2;
            printf "%.0f %.3f %.0f %.3f", (a2 - a1) / n, (b2 - b1) / n / 1e6, (c2 - c1) / n, (d2 - d1) / n / 1e6 }')
        read -r allocs alloc_mb copies copied_mb <<<"$line"
        printf '%-8s %-10s %16s %16s %12s %16s\n' "$tree" "$per_epoch" "$allocs" "$alloc_mb" "$copies" "$copied_mb"
        echo "{\"bench\":\"copies\",\"tree\":\"$tree\",\"commit\":\"$([ "$tree" = before ] && echo "$before" || git -C "$root" rev-parse --short HEAD)\",\"app\":\"mf\",\"rank\":32,\"clocks_per_epoch\":$per_epoch,\"allocations_per_clock\":$allocs,\"allocated_mb_per_clock\":$alloc_mb,\"copies_per_clock\":$copies,\"copied_mb_per_clock\":$copied_mb}" \
            >>"$root/target/bench-results/copies.jsonl"
    done
done
