#!/usr/bin/env bash
# The GPU check, in two halves because the GPU machine has no Rust:
#
#   bash benches/gpu/check.sh build     # here: release-build the binaries and the conformance
#                                       # test binary into target/gpu-bundle (stripped, < 64 MiB)
#   bash benches/gpu/check.sh device    # there, in ONE call of the device tool with
#                                       # carry=["target/gpu-bundle"] (see benches/gpu/README.md):
#                                       # finds NVRTC and cuBLAS (never a stubs/ library), runs
#                                       # kernel-check, the conformance suite with PS_REQUIRE_GPU=1,
#                                       # gpu-bench, the PyTorch MLP peer, and trains mf / lda /
#                                       # mlp / lr end to end with --device cuda. Every step runs
#                                       # under `timeout` and the whole half within
#                                       # CHECK_BUDGET_S (default 285 s); a step that times out is
#                                       # reported and the next one runs.
#   bash benches/gpu/check.sh libs      # anywhere: print which CUDA libraries `device` would use
#                                       # (PS_CUDA_ROOTS / PS_CUDA_SITE_DIRS override the search;
#                                       # benches/gpu/test_cuda_libs.sh tests it on a fake tree)
#
# On the device, the steps write into a work folder, and $OUT (or ./gpu-check-out when OUT is
# unset) gets at most four files, refreshed after every step (the device tool brings back at
# most 8 files of $OUT): summary.txt (every figure, also printed last, then its step lines and
# verdicts again, so that they are in the tail of the output that comes back), logs.tar.gz
# (every step's output), and e2e.jsonl and gpu-bench.json when those steps ran.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=target/gpu-bundle

build() {
    set -e
    cargo build --release --locked -p worker-gpu --bins -p ps-cluster
    # The conformance suite and worker-gpu's unit tests, as executables.
    local tests
    tests=$(cargo test --release --locked -p worker-gpu --no-run --message-format=json |
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
    # The commit, marked when the tree it was built from had changes beyond it.
    { git rev-parse HEAD 2>/dev/null || echo unknown; } | tr -d '\n' >"$BUNDLE/COMMIT"
    git diff --quiet HEAD 2>/dev/null || printf -- '-dirty' >>"$BUNDLE/COMMIT"
    echo >>"$BUNDLE/COMMIT"
    du -sh "$BUNDLE"
    ls -l "$BUNDLE"
    echo "now: device tool run(command='bash benches/gpu/check.sh device', carry=['$BUNDLE'])"
}

# shellcheck source=benches/gpu/cuda_libs.sh
. benches/gpu/cuda_libs.sh

# ---- the device half: one function per step, each run through run_step ----------------------
# To add a step: write a step_NAME function that uses run_step (bounded) and summary (figures),
# and add it to DEVICE_STEPS. CHECK_STEPS="conformance unit" runs only those (a rerun).
DEVICE_STEPS=${CHECK_STEPS:-"kernel_check conformance unit gpu_bench torch_peer end_to_end mf_deterministic mlp_device_codec mf_device_codec shard_restart e2e_bench"}

# Appends its arguments (or stdin when none) to summary.txt, which is printed at the end.
summary() {
    if [ $# -gt 0 ]; then
        printf '%s\n' "$*" >>"$SUMMARY"
    else
        cat >>"$SUMMARY"
    fi
}

# Copies what must come back into $results: the summary, every step's files as one archive
# (written aside, then renamed, so a cut leaves the last whole one), and the two files the
# results are read from.
pack() {
    cp "$SUMMARY" "$results/summary.txt"
    tar czf "$results/logs.tar.gz.part" -C "$out" . 2>/dev/null &&
        mv "$results/logs.tar.gz.part" "$results/logs.tar.gz"
    local f
    for f in e2e.jsonl gpu-bench.json; do
        [ -f "$out/$f" ] && cp "$out/$f" "$results/$f"
    done
    return 0
}

# Progress on stdout and a line of the summary.
report() {
    echo "$*"
    summary "$*"
}

# run_step NAME LIMIT_S CMD...: runs CMD with stdout to $out/NAME.txt and stderr to
# $out/NAME.err, killed after LIMIT_S seconds or when the device budget runs out, whichever
# comes first. Records the outcome in the summary, sets STEP_RC (124 on a timeout) and returns 0
# when CMD succeeded. A failure or timeout makes the whole check fail, and the next step runs.
run_step() {
    local name=$1 limit=$2 left started
    shift 2
    left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 5 ]; then
        STEP_RC=125
        : >"$out/$name.txt"
        : >"$out/$name.err"
        report "step $name: SKIPPED (the device budget of ${CHECK_BUDGET_S}s is spent)"
        STATUS=1
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    started=$SECONDS
    timeout -k 5 "$limit" "$@" >"$out/$name.txt" 2>"$out/$name.err"
    STEP_RC=$?
    if [ $STEP_RC -eq 0 ]; then
        report "step $name: ok in $((SECONDS - started))s"
        return 0
    fi
    STATUS=1
    if [ $STEP_RC -eq 124 ] || [ $STEP_RC -eq 137 ]; then
        report "step $name: TIMEOUT after ${limit}s (killed; output so far in $name.txt / $name.err)"
    else
        report "step $name: FAILED with status $STEP_RC after $((SECONDS - started))s; last lines of $name.err:"
        tail -n 15 "$out/$name.err" | sed 's/^/    /' | summary
    fi
    return 1
}

step_kernel_check() {
    echo "== kernels through the worker's NVRTC path, for the device's architecture"
    run_step kernel-check 30 "$BUNDLE/kernel-check" --arch compute_90
    grep -E "^kernel-check: [0-9]+ of [0-9]+" "$out/kernel-check.txt" "$out/kernel-check.err" -h | summary
}

step_conformance() {
    echo "== conformance (PS_REQUIRE_GPU=1: a missing GPU fails)"
    run_step conformance 150 "$BUNDLE/conformance" --test-threads 1 --nocapture
    # libtest writes the results to stdout and the cases' own lines (seeds, SKIP) to stderr.
    grep -hE "^test .*(FAILED|ignored)|panicked|SKIP" "$out/conformance.txt" "$out/conformance.err" | head -n 20 | summary
    grep -h "^test result" "$out/conformance.txt" | summary
}

step_unit() {
    echo "== worker-gpu unit tests"
    run_step unit 30 "$BUNDLE/worker-gpu-unit" --test-threads 1
    grep -hE "^test .*FAILED|^test result" "$out/unit.txt" | summary
}

step_gpu_bench() {
    echo "== gpu-bench"
    # One process per group of benches, so that a CUDA error that spoils the context (in a
    # kernel that has never run on a GPU) costs its group only; the MLP clock (the MLP bar's
    # figure) and the cheap benches first, LDA's long rows last. Each bench's rows reach
    # gpu-bench-GROUP.txt and the group's folder as it ends (a cut keeps them), and its time
    # is in gpu-bench-GROUP.err ("gpu-bench: lda took ... s"); gpu-bench.json gathers them all.
    # GPU_BENCH_ARGS with its own --only runs that selection as one process.
    local groups="mlp:mlp-clock,mlp,codec:40 mf:mf:45 lda:lda:60" group name only limit
    case " ${GPU_BENCH_ARGS:-} " in *" --only "*) groups="all:all:120" ;; esac
    for group in $groups; do
        IFS=: read -r name only limit <<<"$group"
        local sel=(--only "$only")
        [ "$name" = all ] && sel=()
        # shellcheck disable=SC2086
        run_step "gpu-bench-$name" "$limit" "$BUNDLE/gpu-bench" --out "$out/gpu-bench-$name" \
            "${sel[@]}" ${GPU_BENCH_ARGS:-}
        summary <"$out/gpu-bench-$name.txt"
    done
    # Rust writes an infinite rate as inf, which JSON lacks.
    python3 - "$out" <<'PY' || summary "gpu-bench: no rows gathered"
import glob, json, os, re, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "gpu-bench-*", "gpu-bench.json"))):
    try:
        text = re.sub(r"(?<=: )(-?)inf\b", r"\1Infinity", open(f).read())
        rows += json.loads(text)
    except (OSError, ValueError) as e:
        print(f"gpu-bench: {f}: {e}", file=sys.stderr)
json.dump(rows, open(os.path.join(sys.argv[1], "gpu-bench.json"), "w"), indent=1)
PY
}

step_torch_peer() {
    echo "== PyTorch MLP peer"
    # With the loader path the job started with: torch brings its own CUDA libraries.
    run_step torch-mlp 45 env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" python3 benches/gpu/torch_mlp.py
    sed 's/^/torch: /' "$out/torch-mlp.txt" | summary
    mlp_clock_bar "$out/gpu-bench.json" "$out/torch-mlp.txt" | summary
}

# Issue 11's MLP bar, reported: gpu-bench's "mlp resident clock" rows (batch 1,024, every batch's
# SGD step on the device; the tiled kernel's products and cuBLAS's) against PyTorch's train step
# with SGD at batch 1,024, TF32 off.
mlp_clock_bar() {
    python3 - "$1" "$2" <<'PY' 2>/dev/null || echo "mlp clock bar: no figures (gpu-bench or torch did not run)"
import json, sys
rows = json.load(open(sys.argv[1]))
torch = [t for t in map(json.loads, filter(str.strip, open(sys.argv[2])))
         if t["batch"] == 1024 and not t["tf32"] and t.get("sgd")][0]
# One line per library of the products: "mlp resident clock" (tiled) and "... (cublas)".
for ours in (r for r in rows if r["bench"].startswith("mlp resident clock")):
    ratio = ours["rate"] / torch["samples_per_s"]
    gemm = ours["bench"][len("mlp resident clock"):].strip(" ()") or "tiled"
    print(f"mlp clock bar ({gemm}): resident clock {ours['rate']:.3e} samples/s vs torch train "
          f"step + SGD {torch['samples_per_s']:.3e} at batch 1024, TF32 off: {ratio:.2f}x "
          f"({'met' if ratio >= 1.5 else 'not met'}: the bar is 1.5x)")
PY
}

# The key figures of a ps-cluster job's summary (its last stdout line, JSON).
job_figures() {
    tail -n 1 "$1" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
keys = ["device", "test_rmse", "topic_recovery", "loglik_per_token", "test_accuracy", "test_auc",
        "updates_per_s", "tokens_per_s", "samples_per_s", "compute_s", "wall_s"]
line = "  ".join(f"{k}={s[k]}" for k in keys if k in s)
# The PCIe bar of issue 11: per clock, no more than the pulled rows plus the encoded delta, plus 5%.
# The wire bytes each way (framing included, so the bar is a little generous) stand for both.
if "pcie_bytes_h2d_per_clock" in s and s.get("clocks"):
    pcie = s["pcie_bytes_h2d_per_clock"] + s.get("pcie_bytes_d2h_per_clock", 0.0)
    wire = (s.get("bytes_received", 0) + s.get("bytes_sent", 0)) / s["clocks"]
    line += (f"  pcie/clock={pcie:.0f} B vs 1.05 x wire/clock={1.05 * wire:.0f} B "
             + ("(met)" if pcie <= 1.05 * wire else "(NOT met)"))
print(line)
' 2>/dev/null || echo "(no JSON summary in $1)"
}

step_end_to_end() {
    echo "== end to end: ps-cluster local --device cuda"
    local app
    for app in mf lda mlp lr; do
        run_step "$app" 60 "$BUNDLE/ps-cluster" local --app "$app" --device cuda
        [ "$STEP_RC" -eq 125 ] && continue
        summary "$app: $(grep -m1 "^device:" "$out/$app.err") $(job_figures "$out/$app.txt")"
    done
    # LDA's rows of rounded counts cross as codes (ps_apps::lda::pulled_run).
    run_step lda-q8 60 "$BUNDLE/ps-cluster" local --app lda --device cuda --pull-codec q8
    [ "$STEP_RC" -eq 125 ] || summary "lda --pull-codec q8: $(job_figures "$out/lda-q8.txt")"
}

# MF on the GPU twice with --deterministic: the item tables' hashes must match, and the built-in
# job must reach test RMSE <= 1.15 x its noise sigma. Then once with f16 factor rows
# (--factors f16): test RMSE within 1% of the f32 run's. Then once with the window-4 wave
# kernel (PS_MF_WAVE_KERNEL): the same hash as the default kernel's, bit for bit (the built-in
# job's 1,000 items make the window hand rows from rating to rating often).
step_mf_deterministic() {
    echo "== MF --device cuda --deterministic, twice, with f16 factors, and with window-4 waves"
    local i
    for i in 1 2; do
        run_step "mf-det-$i" 60 "$BUNDLE/ps-cluster" local --app mf --device cuda --deterministic --no-progress ||
            return 0
    done
    run_step mf-f16 60 "$BUNDLE/ps-cluster" local --app mf --device cuda --deterministic \
        --no-progress --factors f16 || return 0
    run_step mf-det-w4 60 env PS_MF_WAVE_KERNEL=window-4 "$BUNDLE/ps-cluster" local --app mf \
        --device cuda --deterministic --no-progress || return 0
    if ! python3 - "$out/mf-det-1.txt" "$out/mf-det-2.txt" "$out/mf-f16.txt" "$out/mf-det-w4.txt" \
        >"$out/mf-det.txt" 2>&1 <<'PY'; then
import json, sys
a, b, h, w = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:5])
ok_hash = a["item_table_hash"] == b["item_table_hash"]
ok_window = w["item_table_hash"] == a["item_table_hash"]
bar = 1.15 * a["noise_sigma"]
ok_rmse = a["test_rmse"] <= bar
ok_f16 = h.get("factors") == "f16" and h["test_rmse"] <= 1.01 * a["test_rmse"]
print(f"mf deterministic on {a['device']}: hashes {a['item_table_hash']} / {b['item_table_hash']} "
      f"({'equal' if ok_hash else 'DIFFER'}); test_rmse {a['test_rmse']:.5f} "
      f"({'<=' if ok_rmse else 'ABOVE'} 1.15 x sigma = {bar:.4f}); "
      f"PCIe per clock in {a.get('pcie_bytes_h2d_per_clock')} B ({a.get('pcie_h2d_s_per_clock')} s), "
      f"out {a.get('pcie_bytes_d2h_per_clock')} B ({a.get('pcie_d2h_s_per_clock')} s); "
      f"f16 factors: test_rmse {h['test_rmse']:.5f} ({'within' if ok_f16 else 'NOT within'} 1% of f32); "
      f"window-4 waves: hash {w['item_table_hash']} ({'equal' if ok_window else 'DIFFERS'}), "
      f"test_rmse {w['test_rmse']:.5f}")
sys.exit(0 if ok_hash and ok_rmse and ok_f16 and ok_window else 1)
PY
        STATUS=1
    fi
    summary <"$out/mf-det.txt"
}

# The MLP's delta compressed on the GPU (--push-codec topk:0.02,f16): the engine encoded it
# (push_payload_bytes_engine_encoded), the accuracy is within 1 point of the same job on CPU
# workers, and the PCIe bytes per clock against the raw job's and against the bar of issue 11
# (no more than the pulled rows plus the encoded delta, plus 5%), reported, not enforced.
step_mlp_device_codec() {
    echo "== MLP with its delta compressed on the device"
    run_step mlp-raw-cuda 60 "$BUNDLE/ps-cluster" local --app mlp --device cuda --deterministic \
        --no-progress || return 0
    # A top-k in f16 and in sign, an energy stage (its count found on the device), a
    # whole-value format (the payload is made there), and q8 pulls (the model crosses as codes;
    # clock 0's is made on the device).
    local spec codec extra name
    for spec in topk:0.02,f16 topk:0.02,sign energy:0.1,sign q4 \
        "energy:0.1,sign --pull-codec q8"; do
        read -r codec extra <<<"$spec"
        name=mlp-codec-${codec//[:,.]/_}${extra:+-${extra//[^a-z0-9]/}}
        # shellcheck disable=SC2086 # $extra is flags, split on purpose
        run_step "$name-cuda" 60 "$BUNDLE/ps-cluster" local --app mlp --device cuda \
            --deterministic --no-progress --push-codec "$codec" $extra || continue
        # shellcheck disable=SC2086
        run_step "$name-cpu" 60 "$BUNDLE/ps-cluster" local --app mlp --device cpu \
            --deterministic --no-progress --push-codec "$codec" $extra || continue
        if ! python3 - "$out/$name-cuda.txt" "$out/$name-cpu.txt" "$out/mlp-raw-cuda.txt" \
            "$spec" >"$out/$name.txt" 2>&1 <<'PY'; then
import json, sys
gpu, cpu, raw = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:4])
clocks = max(1, gpu["clocks"])
encoded = gpu.get("push_payload_bytes_engine_encoded", 0.0)
d2h, h2d = gpu.get("pcie_bytes_d2h_per_clock", 0.0), gpu.get("pcie_bytes_h2d_per_clock", 0.0)
ok_enc = encoded > 0
ok_acc = abs(gpu["test_accuracy"] - cpu["test_accuracy"]) <= 0.01
# The raw job's bytes in per clock (the model; the device makes the sample order itself).
pulled = raw.get("pcie_bytes_h2d_per_clock", 0.0)
bar = 1.05 * (pulled + encoded / clocks)
wire = (gpu.get("bytes_sent", 0) + gpu.get("bytes_received", 0)) / clocks
print(f"mlp {sys.argv[4]}: engine-encoded payload {encoded:.0f} B over {clocks} clocks "
      f"({'ok' if ok_enc else 'NONE'}); accuracy cuda {gpu['test_accuracy']:.4f} vs cpu "
      f"{cpu['test_accuracy']:.4f} ({'ok' if ok_acc else 'MORE THAN 1 POINT'}); PCIe per clock "
      f"in {h2d:.0f} B, out {d2h:.0f} B (raw job: in {pulled:.0f}, out "
      f"{raw.get('pcie_bytes_d2h_per_clock', 0.0):.0f}); in + out {h2d + d2h:.0f} B against the bar "
      f"{bar:.0f} B ({'met' if h2d + d2h <= bar else 'not met'}) and 1.05 x wire "
      f"{1.05 * wire:.0f} B ({'met' if h2d + d2h <= 1.05 * wire else 'not met'})")
sys.exit(0 if ok_enc and ok_acc else 1)
PY
            STATUS=1
        fi
        summary <"$out/$name.txt"
    done
}

# MF with its delta encoded on the device (q4, a top-k in sign: selected, trimmed and encoded
# there, an energy stage: counted there too, and that over an epoch split into clocks) against the same job with the library encoding the plain delta
# (PS_DEVICE_CODEC=off): the waves are deterministic, so the models must be the same bit for
# bit; only the payloads (and a top-k's chosen indices) should leave the device.
step_mf_device_codec() {
    echo "== MF with its delta encoded on the device"
    local spec codec name extra
    # Then an epoch split over 4 clocks (each clock also pushes the rows still held), and q8
    # pulls (their rows cross as codes). topk:0.05 sends f32 values: its last clock hands
    # plain rows to the library.
    for spec in q4 topk:0.15,warmup:1,sign energy:0.4,sign topk:0.05 \
        "energy:0.4,sign --clocks-per-epoch 4" "energy:0.4,sign --pull-codec q8"; do
        read -r codec extra <<<"$spec"
        name=mf-codec-${codec//[:,.]/_}${extra:+-${extra//[^a-z0-9]/}}
        # shellcheck disable=SC2086 # $extra is flags, split on purpose
        run_step "$name-cuda" 60 "$BUNDLE/ps-cluster" local --app mf --device cuda \
            --deterministic --no-progress --push-codec "$codec" $extra || continue
        # shellcheck disable=SC2086
        PS_DEVICE_CODEC=off run_step "$name-off" 60 "$BUNDLE/ps-cluster" local --app mf \
            --device cuda --deterministic --no-progress --push-codec "$codec" $extra || continue
        if ! python3 - "$out/$name-cuda.txt" "$out/$name-off.txt" "$codec" \
            >"$out/$name.txt" 2>&1 <<'PY'; then
import json, sys
dev, lib = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:3])
same = all(dev.get(k) == lib.get(k) for k in ("item_table_hash", "push_bytes", "test_rmse"))
out = lambda s: s.get("pcie_bytes_d2h_per_clock", 0.0)
wire = lambda s: (s.get("bytes_sent", 0) + s.get("bytes_received", 0)) / max(1, s["clocks"])
pcie = dev.get("pcie_bytes_h2d_per_clock", 0.0) + out(dev)
print(f"mf {sys.argv[3]} encoded on the device: hash {dev.get('item_table_hash')} vs library "
      f"{lib.get('item_table_hash')} ({'same model' if same else 'DIFFERENT'}); test RMSE "
      f"{dev.get('test_rmse')}; PCIe out per clock {out(dev):.0f} B vs {out(lib):.0f} B; in + out "
      f"{pcie:.0f} B vs 1.05 x wire {1.05 * wire(dev):.0f} B "
      f"({'met' if pcie <= 1.05 * wire(dev) else 'not met'})")
sys.exit(0 if same and out(dev) < out(lib) else 1)
PY
            STATUS=1
        fi
        summary <"$out/$name.txt"
    done
}

# A shard killed under GPU workers comes back from its checkpoint and nothing is lost
# (benches/gpu/restart.sh: MF hash equal to the undisturbed run's, LDA within 1%).
step_shard_restart() {
    echo "== a shard killed under GPU workers"
    run_step shard-restart 90 bash benches/gpu/restart.sh "$BUNDLE" "$out" cuda || true
    summary <"$out/shard-restart.txt"
}

# The end-to-end benchmark (benches/gpu/e2e.sh): E2E_SIZE=full for the issue's shapes (several
# minutes: run it alone, CHECK_STEPS=e2e_bench CHECK_BUDGET_S=560), tenfold smaller by default.
step_e2e_bench() {
    echo "== end-to-end benchmark (${E2E_SIZE:-quick})"
    local size=quick
    [ "${E2E_SIZE:-quick}" = full ] && size=full
    export E2E_LIMIT_S=${E2E_LIMIT_S:-75}
    # The jobs stop 10 s before the step's limit, so the table is printed even when time is short.
    local total=${E2E_LIMIT_TOTAL_S:-240} left=$((DEADLINE - SECONDS))
    [ "$total" -gt "$left" ] && total=$left
    export E2E_DEADLINE_S=$((total - 10))
    run_step e2e-bench "$total" bash benches/gpu/e2e.sh "$BUNDLE" "$out" "$size"
    summary <"$out/e2e-bench.txt"
}

device() {
    # CHECK_BUNDLE: another bundle directory (a test of this script with fake binaries).
    BUNDLE=${CHECK_BUNDLE:-$BUNDLE}
    results="${OUT:-$PWD/gpu-check-out}"
    STATUS=0
    CHECK_BUDGET_S=${CHECK_BUDGET_S:-285}
    DEADLINE=$((SECONDS + CHECK_BUDGET_S))
    ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
    mkdir -p "$results"
    # The steps' own files (about a hundred with the end-to-end benchmark) stay here; see pack.
    out=${CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
    mkdir -p "$out"
    SUMMARY="$out/summary.txt"
    : >"$SUMMARY"
    [ -x "$BUNDLE/conformance" ] || { echo "check.sh: $BUNDLE missing: build here and carry it" >&2; exit 1; }
    report "== GPU check of commit $(cat "$BUNDLE/COMMIT" 2>/dev/null), budget ${CHECK_BUDGET_S}s"
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem \
        --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | summary
    find_cuda_libs >"$out/cuda-libs.txt" 2>&1 || STATUS=1
    # The symlink directory serves the whole run (LD_LIBRARY_PATH), then goes.
    trap 'rm -rf "${CUDA_LIBS_SHIM:-}"' EXIT
    summary <"$out/cuda-libs.txt"
    export PS_REQUIRE_GPU=1 RUST_BACKTRACE=1
    # kernel-check assembles with ptxas: the toolkit's, where it is not on the PATH.
    PTXAS=${PTXAS:-$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)}
    export PTXAS
    pack

    local step
    for step in $DEVICE_STEPS; do
        "step_$step"
        pack
    done

    report "== overall status $STATUS after $((SECONDS))s (files: $results/logs.tar.gz)"
    pack
    echo
    echo "======== summary.txt"
    cat "$SUMMARY"
    # The verdicts once more, last: only the tail of a long output may come back.
    echo
    echo "======== verdicts"
    grep -E "^(step |== overall|mf deterministic|mlp clock bar|mlp |[a-z]+: GPU worker)" "$SUMMARY"
    return $STATUS
}

libs() {
    local rc=0
    find_cuda_libs || rc=$?
    printf '%s' "$CUDA_LIBS_CHOSEN"
    rm -rf "$CUDA_LIBS_SHIM"
    return $rc
}

case "${1:-}" in
    build) build ;;
    device) device ;;
    libs) libs ;;
    *)
        sed -n 2,21p "$0"
        exit 2
        ;;
esac
