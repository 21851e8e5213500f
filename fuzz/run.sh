#!/usr/bin/env bash
# Fuzzes every decoder for a fixed number of inputs in all (README.md, "Fuzzing").
#
#   bash fuzz/run.sh [INPUTS] [TARGET...]
#
# INPUTS (default 10000000) is shared evenly by the targets (all of them, or those named).
# Builds fuzz/src/main.rs with stable rustc's sanitizer-coverage instrumentation (edge
# counters, PC table, comparison tracing) plus debug assertions and overflow checks, and runs
# libFuzzer on each target for its share: JOBS targets at a time (default: the number of
# cores, at most 2), each input under the harness's limits: at most 1 s of CPU time (30 s of
# wall time for an input that never returns) and the heap cap. Each
# target starts from corpus/<target>/, regressions/<target>/ and what earlier runs kept in
# work/<target>/; a crashing, hanging or over-allocating input goes to artifacts/<target>/.
# Prints inputs, crashes, hangs, over-allocations and wall time per target; exits non-zero on
# any finding or if a target ran short. Env: JOBS, SEED (libFuzzer -seed, default 0 = random),
# EXTRA (more libFuzzer flags).
set -euo pipefail

cd "$(dirname "$0")"
INPUTS=${1:-10000000}
shift || true
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
[ "$JOBS" -gt 2 ] && JOBS=2
SEED=${SEED:-0}
EXTRA=${EXTRA:-}

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# The instrumented build goes to its own --target directory, so build scripts and proc macros
# (host code) are built without the coverage passes.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --features libfuzzer --bin ps-fuzz --target "$TRIPLE"
unset RUSTFLAGS
cargo build --release --bin ps-fuzz-tool
FUZZ=target/$TRIPLE/release/ps-fuzz
TOOL=target/release/ps-fuzz-tool

declare -A MAXLEN
ALL=()
while read -r name max_len; do
    MAXLEN[$name]=$max_len
    ALL+=("$name")
done < <("$TOOL" --list)
if [ $# -gt 0 ]; then
    for t in "$@"; do [ -n "${MAXLEN[$t]:-}" ] || { echo "no target $t" >&2; exit 2; }; done
    TARGETS=("$@")
else
    TARGETS=("${ALL[@]}")
fi
COUNT=${#TARGETS[@]}
SHARE=$((INPUTS / COUNT))
REM=$((INPUTS % COUNT))

mkdir -p logs
PLAN=()
for i in "${!TARGETS[@]}"; do
    t=${TARGETS[$i]}
    runs=$SHARE
    [ "$i" -lt "$REM" ] && runs=$((runs + 1))
    PLAN+=("$t" "$runs" "${MAXLEN[$t]}")
done

run_one() {
    local t=$1 runs=$2 max_len=$3
    mkdir -p "work/$t" "artifacts/$t"
    local dirs=("work/$t" "corpus/$t")
    [ -d "regressions/$t" ] && dirs+=("regressions/$t")
    local start end rc=0
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    PS_FUZZ_TARGET=$t "$FUZZ" -runs="$runs" -seed="$SEED" -timeout=30 -rss_limit_mb=4096 \
        -max_len="$max_len" -print_final_stats=1 -artifact_prefix="artifacts/$t/" $EXTRA \
        "${dirs[@]}" >"logs/$t.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    echo "$rc $start $end" >"logs/$t.status"
}
export -f run_one
export FUZZ SEED EXTRA

printf '%s\n' "${PLAN[@]}" | xargs -n 3 -P "$JOBS" bash -c 'run_one "$@"' _

echo
printf '%-16s %12s %8s %6s %10s %9s %s\n' target inputs crashes hangs over-alloc wall_s "exec/s"
total=0
bad=0
for i in "${!TARGETS[@]}"; do
    t=${TARGETS[$i]}
    want=${PLAN[$((i * 3 + 1))]}
    log=logs/$t.log
    read -r rc start end <"logs/$t.status"
    inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    inputs=${inputs:-0}
    crashes=0 hangs=0 over=0
    if [ "$rc" -ne 0 ]; then
        if grep -q -e 'over-allocation: target' -e 'memory allocation of' -e 'out-of-memory' "$log"; then
            over=1
        elif grep -q -e 'hang: target' -e 'libFuzzer: timeout' "$log"; then
            hangs=1
        else
            crashes=1
        fi
    fi
    wall=$(echo "$end - $start" | bc)
    rate=$(echo "$inputs / $wall" | bc)
    printf '%-16s %12d %8d %6d %10d %9.1f %s\n' "$t" "$inputs" "$crashes" "$hangs" "$over" "$wall" "$rate"
    total=$((total + inputs))
    if [ $((crashes + hangs + over)) -ne 0 ]; then
        bad=1
        echo "  finding: see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
    elif [ "$inputs" -lt "$want" ]; then
        bad=1
        echo "  $t ran $inputs of $want inputs: see fuzz/logs/$t.log" >&2
    fi
done
printf '%-16s %12d\n' total "$total"
exit $bad
