#!/usr/bin/env bash
# The GPU check, in two halves because the GPU machine has no Rust:
#
#   bash benches/gpu/check.sh build     # here: release-build the binaries and the conformance
#                                       # test binary into target/gpu-bundle (stripped, < 64 MiB)
#   bash benches/gpu/check.sh device    # there, in ONE call of the device tool with
#                                       # carry=["target/gpu-bundle"] (see benches/gpu/README.md):
#                                       # finds NVRTC, runs the conformance suite with
#                                       # PS_REQUIRE_GPU=1, trains mf / lda / mlp / lr end to end
#                                       # with --device cuda, runs gpu-bench and the PyTorch MLP
#                                       # peer, and prints a summary last.
#
# On the device, results go to $OUT (or ./gpu-check-out when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=target/gpu-bundle

build() {
    set -e
    cargo build --release --locked -p worker-gpu --bins -p ps-cluster
    # The conformance suite and worker-gpu's unit tests, as executables.
    local tests
    tests=$(cargo test --release --locked -p worker-gpu --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
')
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE"
    local dir="${CARGO_TARGET_DIR:-target}/release"
    for b in ps-cluster gpu-bench kernel-check; do
        cp "$dir/$b" "$BUNDLE/$b"
    done
    while read -r name exe; do
        case "$name" in
            conformance) cp "$exe" "$BUNDLE/conformance" ;;
            worker_gpu | worker-gpu) cp "$exe" "$BUNDLE/worker-gpu-unit" ;;
        esac
    done <<<"$tests"
    [ -x "$BUNDLE/conformance" ] || { echo "check.sh: the conformance test binary was not built" >&2; exit 1; }
    strip "$BUNDLE"/* 2>/dev/null || true
    git rev-parse HEAD >"$BUNDLE/COMMIT" 2>/dev/null || echo unknown >"$BUNDLE/COMMIT"
    du -sh "$BUNDLE"
    ls -l "$BUNDLE"
    echo "now: device tool run(command='bash benches/gpu/check.sh device', carry=['$BUNDLE'])"
}

# Puts a directory holding libnvrtc.so (and its builtins) and libcublas.so on LD_LIBRARY_PATH.
# cudarc looks for libnvrtc.so / .so.13 / .so.12 (and libcublas.so / .so.13 / .so.12); a private
# directory of symlinks covers toolkits that ship only other names.
find_cuda_libs() {
    local shim roots lib found dirs=""
    shim=$(mktemp -d)
    roots="/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu"
    roots="$roots $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
    for lib in nvrtc cublas cublasLt; do
        # shellcheck disable=SC2086
        found=$(find $roots -maxdepth 5 -name "lib$lib.so*" \( -type f -o -type l \) 2>/dev/null |
            grep -v builtins | sort -V | tail -n 1)
        if [ -n "$found" ]; then
            ln -sf "$found" "$shim/lib$lib.so"
            dirs="$dirs:$(dirname "$found")"
            echo "check.sh: lib$lib -> $found"
        else
            echo "check.sh: lib$lib not found under $roots" >&2
        fi
    done
    export LD_LIBRARY_PATH="$shim$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

device() {
    local out="${OUT:-$PWD/gpu-check-out}" status=0
    mkdir -p "$out"
    [ -x "$BUNDLE/conformance" ] || { echo "check.sh: $BUNDLE missing: build here and carry it" >&2; exit 1; }
    echo "== bundle from commit $(cat "$BUNDLE/COMMIT" 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$out/nvidia-smi.txt"
    find_cuda_libs
    export PS_REQUIRE_GPU=1 RUST_BACKTRACE=1

    echo "== kernels through the worker's NVRTC path, for the device's architecture"
    "$BUNDLE/kernel-check" --arch compute_90 2>&1 | tee "$out/kernel-check.txt" | tail -n 20

    echo "== conformance (PS_REQUIRE_GPU=1: a missing GPU fails)"
    "$BUNDLE/conformance" --test-threads 1 --nocapture >"$out/conformance.txt" 2>&1
    local conf=$?
    grep -E "^test |test result|panicked|SKIP|rel|rmse|PS_TEST_SEED" "$out/conformance.txt" | tail -n 60
    [ $conf -eq 0 ] || status=1
    "$BUNDLE/worker-gpu-unit" --test-threads 1 >"$out/unit.txt" 2>&1 || status=1
    tail -n 3 "$out/unit.txt"

    echo "== end to end: ps-cluster local --device cuda"
    local app
    for app in mf lda mlp lr; do
        echo "-- $app"
        if "$BUNDLE/ps-cluster" local --app "$app" --device cuda >"$out/$app.txt" 2>"$out/$app.err"; then
            grep -m1 "^device:" "$out/$app.err" || true
            tail -n 1 "$out/$app.txt" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
keys = ["device", "test_rmse", "topic_recovery", "loglik_per_token", "test_accuracy", "test_auc",
        "updates_per_s", "tokens_per_s", "samples_per_s", "compute_s", "wall_s"]
print("  ".join(f"{k}={s[k]}" for k in keys if k in s))
' || tail -n 5 "$out/$app.txt"
        else
            echo "ps-cluster --app $app FAILED"; tail -n 20 "$out/$app.err"; status=1
        fi
    done

    echo "== PyTorch MLP peer"
    python3 benches/gpu/torch_mlp.py >"$out/torch-mlp.jsonl" 2>"$out/torch-mlp.err" || { tail -n 5 "$out/torch-mlp.err"; }
    cat "$out/torch-mlp.jsonl"

    echo "== gpu-bench"
    "$BUNDLE/gpu-bench" --out "$out" ${GPU_BENCH_ARGS:-} 2>"$out/gpu-bench.err" | tee "$out/gpu-bench.txt" | tail -n 40
    [ "${PIPESTATUS[0]}" -eq 0 ] || { tail -n 10 "$out/gpu-bench.err"; status=1; }

    echo "== summary: conformance rc $conf, overall status $status (files under $out)"
    return $status
}

case "${1:-}" in
    build) build ;;
    device) device ;;
    *)
        sed -n 2,14p "$0"
        exit 2
        ;;
esac
