#!/usr/bin/env bash
# Dry-runs the device half of the GPU check (benches/gpu/check.sh device) here, without a GPU:
# a fake bundle whose test binaries only print a result and whose ps-cluster runs `--device
# cuda` as `--device cpu-resident`. Checks what the device tool would bring back: at most 8
# files of $OUT (it brings back no more), the summary and an archive of every step's files
# among them, and the verdicts at the end of the output (only its tail comes back). Run by
# .ci/run; about 15 s with a debug build.
#
#   bash benches/gpu/test_check.sh [PS_CLUSTER]     default: target/debug/ps-cluster
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/ps-cluster}")
[ -x "$bin" ] || { echo "test_check: no ps-cluster at $bin (cargo build first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bundle"
echo fake >"$tmp/bundle/COMMIT"
for t in conformance worker-gpu-unit; do
    printf '#!/usr/bin/env bash\necho "test result: ok. 1 passed; 0 failed"\n' >"$tmp/bundle/$t"
done
printf '#!/usr/bin/env bash\necho "kernel-check: 10 of 10 kernel files compiled"\n' \
    >"$tmp/bundle/kernel-check"
# gpu-bench: one row named after its --only, written as the real one writes them (NaN and inf
# as Rust prints them), and a failure in the mf group.
cat >"$tmp/bundle/gpu-bench" <<'BENCH'
#!/usr/bin/env bash
while [ $# -gt 0 ]; do
    case "$1" in --out) out=$2; shift ;; --only) only=$2; shift ;; esac
    shift
done
[ "$only" = mf ] && { echo "gpu-bench: mf failed: an injected error" >&2; exit 3; }
mkdir -p "$out"
printf '[\n  {"bench": "%s", "rate": inf, "floor_rate": NaN}\n]\n' "$only" >"$out/gpu-bench.json"
echo "$only row"
BENCH
cat >"$tmp/bundle/ps-cluster" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do [ "\$a" = cuda ] && a=cpu-resident; args+=("\$a"); done
exec "$bin" "\${args[@]}"
WRAP
chmod +x "$tmp/bundle"/*

failures=0
fail() {
    echo "test_check: FAIL: $*" >&2
    failures=$((failures + 1))
}

# No CUDA here, so the library search fails and the check's status is 1: only the packing is
# tested. PS_REQUIRE_GPU=1 does not stop cpu-resident jobs.
OUT="$tmp/out" CHECK_WORK="$tmp/work" CHECK_BUNDLE="$tmp/bundle" CHECK_STEPS="kernel_check unit gpu_bench end_to_end" \
    PS_CUDA_ROOTS="$tmp/none" PS_CUDA_SITE_DIRS="$tmp/none" \
    bash benches/gpu/check.sh device >"$tmp/stdout.txt" 2>"$tmp/stderr.txt"
files=$(find "$tmp/out" -type f | wc -l)
[ "$files" -le 8 ] || fail "$files files under \$OUT; the device tool brings back 8"
for f in summary.txt logs.tar.gz; do
    [ -s "$tmp/out/$f" ] || fail "no $f under \$OUT"
done
extra=$(find "$tmp/out" -type f ! -name summary.txt ! -name logs.tar.gz ! -name e2e.jsonl \
    ! -name gpu-bench.json)
[ -z "$extra" ] || fail "unexpected files under \$OUT: $extra"
listed=$(tar tzf "$tmp/out/logs.tar.gz" 2>/dev/null)
for f in summary.txt cuda-libs.txt kernel-check.txt unit.txt mf.txt lda.txt mlp.txt lr.txt; do
    grep -qx "./$f" <<<"$listed" || fail "logs.tar.gz lacks $f"
done
# gpu-bench ran as three processes; the failed one cost its own rows only.
python3 - "$tmp/out/gpu-bench.json" <<'PY' || fail "gpu-bench.json does not gather the groups' rows"
import json, sys
rows = json.load(open(sys.argv[1]))
assert sorted(r["bench"] for r in rows) == ["lda", "mlp-clock,mlp,codec"], rows
assert rows[0]["rate"] == float("inf"), rows
PY
grep -q "^step gpu-bench-mf: FAILED" "$tmp/out/summary.txt" || fail "the failed gpu-bench group is not reported"
# Every app ran and left its figures in the summary.
for app in mf lda mlp lr; do
    grep -q "^step $app: ok" "$tmp/out/summary.txt" ||
        fail "step $app did not pass: $(grep "^step $app" "$tmp/out/summary.txt")"
done
# The verdicts close the output.
tail -n 12 "$tmp/stdout.txt" | grep -q "^======== verdicts" ||
    tail -n 12 "$tmp/stdout.txt" | grep -q "^step unit: ok" ||
    fail "the output does not end with the verdicts"
tail -n 1 "$tmp/stdout.txt" | grep -q "^== overall status" ||
    fail "the output's last line is not the overall status: $(tail -n 1 "$tmp/stdout.txt")"

if [ "$failures" -gt 0 ]; then
    echo "--- stdout"
    tail -n 40 "$tmp/stdout.txt"
    echo "--- stderr"
    tail -n 20 "$tmp/stderr.txt"
    exit 1
fi
echo "test_check: the device half packed its results into $files files of \$OUT and ended with its verdicts"
