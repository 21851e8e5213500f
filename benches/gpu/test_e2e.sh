#!/usr/bin/env bash
# Dry-runs the end-to-end GPU benchmark (benches/gpu/e2e.sh) here, without a GPU: a fake bundle
# whose ps-cluster runs `--device cuda` as `--device cpu-resident` (the CUDA engines' CPU
# oracles), at the `tiny` size. Checks that every job ran, that each left its summary and its
# per-clock CSV, and that the table has all three rates and GPU/CPU ratios for every app, so
# that a script error never costs a GPU run. Run by .ci/run; about 20 s with a debug build.
#
#   bash benches/gpu/test_e2e.sh [PS_CLUSTER]     default: target/debug/ps-cluster
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/ps-cluster}")
[ -x "$bin" ] || { echo "test_e2e: no ps-cluster at $bin (cargo build first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bundle"
cat >"$tmp/bundle/ps-cluster" <<WRAP
#!/usr/bin/env bash
[ -n "\${PS_MLP_GEMM:-}" ] && echo "\$PS_MLP_GEMM \$*" >>"$tmp/gemm.log"
[ -n "\${PS_LDA_SAMPLER:-}" ] && echo "\$PS_LDA_SAMPLER \$*" >>"$tmp/sampler.log"
args=()
for a in "\$@"; do [ "\$a" = cuda ] && a=cpu-resident; args+=("\$a"); done
exec "$bin" "\${args[@]}"
WRAP
chmod +x "$tmp/bundle/ps-cluster"

failures=0
fail() {
    echo "test_e2e: FAIL: $*" >&2
    failures=$((failures + 1))
}

E2E_MF_CLOCKS=3 bash benches/gpu/e2e.sh "$tmp/bundle" "$tmp/out" tiny >"$tmp/table.txt" 2>"$tmp/log.txt" ||
    fail "e2e.sh exited with $?"
jobs=$(grep -c . "$tmp/out/e2e.jsonl" || true)
[ "$jobs" = 17 ] || fail "$jobs summaries in e2e.jsonl, 17 expected"
grep -q '"failed"' "$tmp/out/e2e.jsonl" && fail "a job failed: $(grep '"failed"' "$tmp/out/e2e.jsonl")"
for f in mf-cuda mf-cuda-f16 mf-cuda-window-4 mf-cuda-f16-window-4 mf-cpu lda-cuda lda-cpu \
    lda-cuda-overlapped lda-cuda-word-major lda-cuda-word-major-g4 mlp-cuda mlp-cpu mlp-cuda-cublas mf-cuda-wire mf-cpu-wire lda-cuda-wire lda-cpu-wire; do
    [ -s "$tmp/out/e2e-$f.csv" ] || fail "no per-clock CSV for $f"
done
head -n 1 "$tmp/table.txt" | grep -q ' steady  *wall-steady ' ||
    fail "the table has no steady and wall-steady columns"
for job in "mf: GPU worker (cuda)" "mf: GPU worker (cuda-f16)" "mf: GPU worker (cuda-window-4)" \
    "mf: GPU worker (cuda-f16-window-4)" "lda: GPU worker (cuda)" "lda: GPU worker (cuda-overlapped)" "lda: GPU worker (cuda-word-major)" \
    "lda: GPU worker (cuda-word-major-g4)" \
    "mlp: GPU worker (cuda)" "mlp: GPU worker (cuda-cublas)" "mf: GPU worker (cuda-wire)" "lda: GPU worker (cuda-wire)"; do
    grep -F "$job" "$tmp/table.txt" |
        grep -Eq '[0-9.]+x \(rate\), [0-9.]+x \(steady\), [0-9.]+x \(wall-steady\)' ||
        fail "no rate, steady and wall-steady ratios for '$job'"
done
# Every row has a number in all three rate columns.
rows=$(awk '$2 ~ /^(cuda|cuda-f16|cpu)(-window-4|-overlapped|-wire|-cublas|-word-major|-word-major-g4)?$/ && $4 ~ /e[+-]/ && $5 ~ /e[+-]/ && $6 ~ /e[+-]/' "$tmp/table.txt" | wc -l)
[ "$rows" = 17 ] || fail "$rows rows with all three rates, 17 expected"
# Every row has its line in the table of where the compute went.
breakdown=$(awk '/^job .* session .* seal /{on=1; next} on && NF == 12 && $3 ~ /^[0-9.]+$/' "$tmp/table.txt" | wc -l)
[ "$breakdown" = 17 ] || fail "$breakdown rows in the compute breakdown, 17 expected"
# Each app's rows ran with its SSP flags, GPU and CPU alike, and the table says which.
[ "$(grep -c '"ssp": "s2-overlapped"' "$tmp/out/e2e.jsonl")" = 11 ] ||
    fail "not every MF and MLP job (and LDA's try) ran at staleness 2 with overlapped reads"
[ "$(grep -c '"ssp": "s0-fresh"' "$tmp/out/e2e.jsonl")" = 6 ] || fail "LDA jobs not at staleness 0"
[ "$(grep -c ' s2-overlapped *$' "$tmp/table.txt")" = 11 ] || fail "the table lacks the ssp column"
grep -q '"variant": "overlapped"' "$tmp/out/e2e.jsonl" || fail "LDA's overlapped try is not marked"
# The MLP's cuBLAS row, and only it, ran with PS_MLP_GEMM=cublas.
[ "$(grep -c '^cublas local .*--app mlp' "$tmp/gemm.log" 2>/dev/null)" = 1 ] ||
    fail "PS_MLP_GEMM=cublas reached $(grep -c . "$tmp/gemm.log" 2>/dev/null) jobs, not the MLP's one"
grep -q '"variant": "cublas"' "$tmp/out/e2e.jsonl" || fail "the MLP's cuBLAS row is not marked"
# LDA's word-major rows, and only they, ran with PS_LDA_SAMPLER set, one with each sampler.
[ "$(grep -c '^word-major local .*--app lda' "$tmp/sampler.log" 2>/dev/null)" = 1 ] &&
    [ "$(grep -c '^word-major:4 local .*--app lda' "$tmp/sampler.log" 2>/dev/null)" = 1 ] &&
    [ "$(grep -c . "$tmp/sampler.log" 2>/dev/null)" = 2 ] ||
    fail "PS_LDA_SAMPLER reached $(grep -c . "$tmp/sampler.log" 2>/dev/null) jobs, not LDA's two"
grep -q '"variant": "word-major"' "$tmp/out/e2e.jsonl" || fail "LDA's word-major row is not marked"
grep -q '"variant": "word-major-g4"' "$tmp/out/e2e.jsonl" || fail "LDA's word-major:4 row is not marked"
# The wire variant's four jobs ran with its flags, and its GPU rows are compared with its CPU rows.
[ "$(grep '"variant": "wire"' "$tmp/out/e2e.jsonl" | grep '"packet_protection": "none"' |
    grep -c '"server_threads": 4')" = 4 ] || fail "the wire jobs did not run with E2E_WIRE_FLAGS"
for job in mf lda; do
    grep -F "$job: GPU worker (cuda-wire) / CPU workers on all cores (cpu-wire)" "$tmp/table.txt" >/dev/null ||
        fail "$job's wire row is not compared with the CPU's wire row"
done
# The window-4 jobs ran with the variable set (their engine checks the name on any device).
grep -q '"wave_kernel": "window-4"' "$tmp/out/e2e.jsonl" || fail "no job carried its wave kernel"

# Past its deadline every job is skipped, and the table still comes out.
E2E_DEADLINE_S=1 bash benches/gpu/e2e.sh "$tmp/bundle" "$tmp/late" tiny >"$tmp/late.txt" 2>/dev/null ||
    fail "e2e.sh past its deadline exited with $?"
[ "$(grep -c '"skipped": true' "$tmp/late/e2e.jsonl")" = 17 ] || fail "not every late job was skipped"
[ "$(grep -c 'SKIPPED (deadline)' "$tmp/late.txt")" = 17 ] || fail "the late table lacks its skipped rows"

if [ "$failures" -gt 0 ]; then
    echo "--- table" >&2
    cat "$tmp/table.txt" >&2
    echo "--- log (last lines)" >&2
    tail -n 20 "$tmp/log.txt" >&2
    exit 1
fi
echo "test_e2e: the end-to-end benchmark ran every job (cuda as cpu-resident) and printed all three rates"
