#!/usr/bin/env bash
# End-to-end GPU benchmark: each row is a whole `ps-cluster local` job (2 CPU shards on this host,
# QUIC on loopback), GPU workers against CPU workers that use all of the host's cores, with the
# per-clock compute, PCIe and communication time and the rate, from each job's summary.
#
#   bash benches/gpu/e2e.sh BIN_DIR OUT_DIR [full|quick|tiny]
#
# BIN_DIR holds ps-cluster (the GPU bundle). Jobs (the issue's shapes with `full`, the default;
# `quick` divides the MF and LDA data by 10, `tiny` everything by 1,000, for a smoke test):
#   mf   rank 128, Netflix-shaped: 480,189 users x 17,770 items, 100 M ratings, item popularity
#        Zipf 0.45 (its top item holds 0.25% of the ratings, as Netflix's top movie does: 232,944
#        of 100.5 M; 0.8 gives 3.2%, a row that conflict-free SGD must update serially); on the
#        GPU with f32 and with f16 factor rows (--factors f16), each with the default wave kernel
#        and with the window-4 one (PS_MF_WAVE_KERNEL=window-4; E2E_MF_WAVES names others, ""
#        none)
#   lda  K 1000, NYTimes-shaped: 300,000 documents x 330 tokens, vocabulary 100,000
#   mlp  784-256-256-10 on 60,000 samples
# CPU workers: for MF and LDA one worker with --threads $(nproc) (LDA's sweep then runs as
# $(nproc) runs of documents; until 2026-12-06 LDA had $(nproc) workers of one thread). For the
# MLP $(nproc) workers of one thread: its CPU engine splits a batch of 32 over at most 2 threads
# (16 rows each), so one worker used about 2 cores whatever --threads said (until 2026-12-06).
# The samples are split across the workers, so a clock trains as many in all. On the 2-core
# machine (6,000 samples, 3 clocks, two runs each): 1 worker of 1 thread 47.7 k samples/s, of 2
# threads 21-45 k, 2 workers of 1 thread 83-90 k.
# MF runs E2E_MF_CLOCKS clocks (default 8), LDA 3,
# the MLP 5. E2E_JOBS="mf" runs only some apps. Each job has a time limit (E2E_LIMIT_S, default
# 150 s); a job past it is reported as such. With E2E_DEADLINE_S, no job runs past that many
# seconds from the start (later ones are reported as skipped), so the table is always printed. Writes OUT_DIR/e2e.jsonl (one summary per job) and
# each job's per-clock CSV (OUT_DIR/e2e-APP-DEVICE[-f16][-WAVES].csv), and prints the table.
#
# Staleness (E2E_MF_SSP, E2E_LDA_SSP, E2E_MLP_SSP: the flags each app's rows run with, GPU and
# CPU alike). A lone worker's model is the same at every staleness (its reads are its own
# updates on the shards' start: `one_workers_model_is_the_same_at_every_staleness` in
# crates/ps-cluster/tests), so the MF and MLP rows run with `--staleness 2 --reads overlapped`:
# clock c's push and the pull for clock c + 1 travel while c + 1 computes, which is how a GPU
# worker is meant to run (issue 11, item 7). Until 2026-12-06 every row ran at staleness 0, where
# each clock's first read waited for the last push to be applied and the rows pulled back. LDA
# stays at staleness 0: there, a read that lacks the worker's last push merges its millions of
# count changes into the rows, and the acknowledged push is folded into the cache, which cost
# more host time a clock (0.35-0.47 s at the quick shape on a 2-core machine) than the blocked
# time it saved (0.12-0.17 s); a GPU host's spare cores may differ, so the GPU LDA job runs once
# more at the end with E2E_LDA_TRY_SSP (default `--staleness 2 --reads overlapped`, "" none), as
# its own row (`cuda-overlapped`).
#
# E2E_MLP_GEMM (default cublas, "" none): the MLP's GPU row once more with PS_MLP_GEMM set to
# each name (row `cuda-cublas`): its matrix products through cuBLAS instead of the tiled kernel.
#
# E2E_LDA_SAMPLER (default `word-major word-major:4`, "" none): LDA's GPU row once more with
# PS_LDA_SAMPLER set to each name (rows `cuda-word-major`, `cuda-word-major-g4`): the word-major
# sweep over fixed counts (`kernels/lda_word.cu`, tokens grouped by word, the word's table in
# shared memory) instead of the Gibbs sweep, one warp per document; `:4` sweeps the documents in
# 4 groups, each drawing from the counts the groups before it left. Each is another chain, so
# read its quality column too.
#
# E2E_WIRE_FLAGS (default `--packet-protection none --server-threads 4`, "" none): the MF and
# LDA default rows run once more at the end, GPU and CPU, with these flags (rows `cuda-wire` and
# `cpu-wire`, compared with each other), to see what the loopback wire's encryption and the
# shards' single thread cost each side.
#
# E2E_LOCAL_FLAGS adds flags to every job, GPU and CPU alike: `--packet-protection none` takes
# AES-GCM off the loopback QUIC packets (about 1.3-1.45x the transport's bytes per second on 2
# cores; README "Transport throughput"), for comparing what the encryption costs a GPU worker.
# The summaries say `"packet_protection":"none"` when it is set.
#
# Three rates per job: the app's own (`rate`: MF and the MLP count all clocks' compute, LDA only
# its sweeps); `steady`, the same for every app: the work of clocks 1 and later over their
# compute seconds (the worker's whole clock but the time it is blocked on the network: reads,
# loading rows, the engine, the delta's way out), so clock 0's first touches of memory and the
# engines' one-off allocations stay out of it; and `wall-steady`, the same work over the wall
# seconds from the end of clock 0 to the end of the last clock, so communication that the
# computation did not hide counts too (end to end). All three ratios are printed.
set -uo pipefail
BIN=${1:?usage: e2e.sh BIN_DIR OUT_DIR [full|quick|tiny]}
OUT=${2:?usage: e2e.sh BIN_DIR OUT_DIR [full|quick|tiny]}
SIZE=${3:-full}
LIMIT=${E2E_LIMIT_S:-150}
CORES=$(nproc)
mkdir -p "$OUT"
: >"$OUT/e2e.jsonl"

case "$SIZE" in
    full) DIV=1 MLP_DIV=1 ;;
    quick) DIV=10 MLP_DIV=1 ;;
    tiny) DIV=1000 MLP_DIV=30 ;;
    *) echo "e2e.sh: size must be full, quick or tiny, not $SIZE" >&2; exit 2 ;;
esac
scale() { echo $(($1 / DIV)); }

MF_DATA="--users 480189 --items 17770 --ratings $(scale 100000000) --item-zipf 0.45 --rank 128"
LDA_DATA="--docs $(scale 300000) --doc-length 330 --vocab-size 100000 --topics 1000"
MLP_DATA="--samples $((60000 / MLP_DIV)) --features 784 --hidden 256,256"

MF_SSP=${E2E_MF_SSP---staleness 2 --reads overlapped}
LDA_SSP=${E2E_LDA_SSP---staleness 0}
MLP_SSP=${E2E_MLP_SSP---staleness 2 --reads overlapped}
# Last of all, MF and LDA once more on a faster wire for shards on one host (E2E_WIRE_FLAGS, ""
# none): packets in the clear after the handshake and each shard on 4 threads.
WIRE_FLAGS=${E2E_WIRE_FLAGS---packet-protection none --server-threads 4}

# job NAME DEVICE ARGS...: runs one job, appends its summary (with name, device and the SSP
# flags in ARGS) to e2e.jsonl. E2E_JOBS (default "mf lda mlp") picks the apps. With WAVES set (an
# MF wave kernel), the job runs with PS_MF_WAVE_KERNEL=$WAVES.
WAVES=
GEMM=
SAMPLER=
VARIANT=
job() {
    local name=$1 device=$2
    shift 2
    case " ${E2E_JOBS:-mf lda mlp} " in *" $name "*) ;; *) return 0 ;; esac
    # The f16-factor MF job and each wave kernel get their own files beside the default's.
    local label=$device
    case " $* " in *" --factors f16 "*) label="$label-f16" ;; esac
    [ -n "$WAVES" ] && label="$label-$WAVES"
    [ -n "$VARIANT" ] && label="$label-$VARIANT"
    local log="$OUT/e2e-$name-$label"
    local limit=$LIMIT
    if [ -n "${E2E_DEADLINE_S:-}" ]; then
        local left=$((E2E_DEADLINE_S - SECONDS))
        if [ "$left" -lt 5 ]; then
            echo "-- $name on $label: SKIPPED (the deadline of ${E2E_DEADLINE_S}s is near)" >&2
            printf '{"job": "%s", "run_device": "%s", "skipped": true}\n' "$name" "$label" \
                >>"$OUT/e2e.jsonl"
            return 0
        fi
        [ "$limit" -gt "$left" ] && limit=$left
    fi
    echo "-- $name on $device${WAVES:+ ($WAVES waves)}: ps-cluster local $*" >&2
    # shellcheck disable=SC2086
    if timeout "$limit" env ${WAVES:+PS_MF_WAVE_KERNEL=$WAVES} ${GEMM:+PS_MLP_GEMM=$GEMM} \
        ${SAMPLER:+PS_LDA_SAMPLER=$SAMPLER} "$BIN/ps-cluster" local --servers 2 \
        --no-progress --device "$device" ${E2E_LOCAL_FLAGS:-} "$@" --log-csv "$log.csv" \
        >"$log.json" 2>"$log.err"; then
        tail -n 1 "$log.json" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
s["job"], s["run_device"], s["clock_csv"] = sys.argv[1], sys.argv[2], sys.argv[3]
if sys.argv[4]:
    s["wave_kernel"] = sys.argv[4]
if sys.argv[6]:
    s["variant"] = sys.argv[6]
args = sys.argv[5].split()
reads = args[args.index("--reads") + 1] if "--reads" in args[:-1] else "fresh"
s["ssp"] = "s%s-%s" % (s.get("staleness", "0"), reads)
print(json.dumps(s))' "$name" "$device" "$log.csv" "$WAVES" "$*" "$VARIANT" >>"$OUT/e2e.jsonl"
    else
        local rc=$?
        echo "   FAILED (rc $rc$([ $rc -eq 124 ] && echo ", past ${limit}s"))" >&2
        tail -n 5 "$log.err" >&2
        printf '{"job": "%s", "run_device": "%s", "failed": %d}\n' "$name" "$label" "$rc" \
            >>"$OUT/e2e.jsonl"
    fi
}

# shellcheck disable=SC2086
{
    MF_CLOCKS=${E2E_MF_CLOCKS:-8}
    job mf cuda --app mf --workers 1 --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP
    job mf cuda --app mf --workers 1 --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP --factors f16
    job mf cpu --app mf --workers 1 --threads "$CORES" --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP
    job lda cuda --app lda --workers 1 --clocks 3 $LDA_DATA $LDA_SSP
    job lda cpu --app lda --workers 1 --threads "$CORES" --clocks 3 $LDA_DATA $LDA_SSP
    job mlp cuda --app mlp --workers 1 --clocks 5 $MLP_DATA $MLP_SSP
    job mlp cpu --app mlp --workers "$CORES" --threads 1 --clocks 5 $MLP_DATA $MLP_SSP
    # Last, so that a tight time budget cuts these first.
    for WAVES in ${E2E_MF_WAVES-window-4}; do
        job mf cuda --app mf --workers 1 --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP
        job mf cuda --app mf --workers 1 --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP --factors f16
    done
    WAVES=
    # The MLP's products through each other library (E2E_MLP_GEMM, default cublas; "" none).
    for GEMM in ${E2E_MLP_GEMM-cublas}; do
        VARIANT=$GEMM
        job mlp cuda --app mlp --workers 1 --clocks 5 $MLP_DATA $MLP_SSP
        VARIANT=
    done
    GEMM=
    # LDA's GPU row with each other sampler (E2E_LDA_SAMPLER; "" none); `:G` is `-gG` in names.
    for SAMPLER in ${E2E_LDA_SAMPLER-word-major word-major:4}; do
        VARIANT=${SAMPLER/:/-g}
        job lda cuda --app lda --workers 1 --clocks 3 $LDA_DATA $LDA_SSP
        VARIANT=
    done
    SAMPLER=
    if [ -n "${E2E_LDA_TRY_SSP-x}" ]; then
        VARIANT=overlapped
        job lda cuda --app lda --workers 1 --clocks 3 $LDA_DATA \
            ${E2E_LDA_TRY_SSP---staleness 2 --reads overlapped}
        VARIANT=
    fi
    # The wire variant: MF's and LDA's default rows again, GPU and CPU, with E2E_WIRE_FLAGS.
    if [ -n "$WIRE_FLAGS" ]; then
        VARIANT=wire
        job mf cuda --app mf --workers 1 --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP $WIRE_FLAGS
        job mf cpu --app mf --workers 1 --threads "$CORES" --clocks "$MF_CLOCKS" $MF_DATA $MF_SSP \
            $WIRE_FLAGS
        job lda cuda --app lda --workers 1 --clocks 3 $LDA_DATA $LDA_SSP $WIRE_FLAGS
        job lda cpu --app lda --workers 1 --threads "$CORES" --clocks 3 $LDA_DATA $LDA_SSP $WIRE_FLAGS
        VARIANT=
    fi
}

python3 - "$OUT/e2e.jsonl" <<'EOF'
import csv, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate_keys = [("updates_per_s", "updates/s"), ("tokens_per_s", "tokens/s"), ("samples_per_s", "samples/s")]
# The per-clock count each app's CSV carries: ratings or samples trained, tokens swept.
count_columns = ("sum_train_n", "sum_clock_tokens")
def rate(s):
    for k, unit in rate_keys:
        if k in s:
            return s[k], unit
    return None, ""
def steady(s):
    """The work of clocks >= 1 (all workers') over their compute seconds (the workers' mean, as
    the apps' rates), and over their wall seconds: from the end of clock 0 to the end of the
    last clock, so communication that computation did not hide counts too."""
    try:
        clocks = list(csv.DictReader(open(s["clock_csv"])))
        later = [c for c in clocks if int(c["clock"]) >= 1]
        col = next((k for k in count_columns if later and later[0].get(k)), None)
        if col is None:
            return None, None
        work = sum(float(c[col]) for c in later)
        secs = sum(float(c["compute_s"]) for c in later)
        first = [c for c in clocks if int(c["clock"]) == 0]
        wall = float(later[-1]["elapsed_s"]) - float(first[0]["elapsed_s"]) if first else 0.0
    except (KeyError, OSError, ValueError, TypeError):
        # No CSV, or a clock without a figure (an empty cell): no steady rates for the row.
        return None, None
    return (work / secs if secs > 0 else None), (work / wall if wall > 0 else None)
def per_clock(s, k):
    v, c = s.get(k), s.get("clocks") or 1
    return None if v is None else v / c
fmt = lambda v, f: "-" if v is None else format(v, f)
def label(s):
    """A row's name: its device, and its factors, wave kernel or variant where it has one."""
    dev = s["run_device"] + ("-f16" if s.get("factors") == "f16" else "")
    dev += "-" + s["wave_kernel"] if s.get("wave_kernel") else ""
    return dev + ("-" + s["variant"] if s.get("variant") else "")
print(f"{'job':<5} {'device':<18} {'workers':>7} {'rate':>11} {'steady':>11} {'wall-steady':>11} {'unit':<10} {'compute/clk s':>13} "
      f"{'device/clk s':>12} {'comm/clk s':>10} {'pcie in/clk MB':>14} {'pcie out/clk MB':>15} "
      f"{'in/clk ms':>9} {'out/clk ms':>10} {'wall s':>7} {'quality':<24} {'ssp':<14}")
by_job = {}
for s in rows:
    if "failed" in s or "skipped" in s:
        print(f"{s['job']:<5} {s['run_device']:<18} " +
              ("SKIPPED (deadline)" if "skipped" in s else f"FAILED rc {s['failed']}"))
        continue
    r, unit = rate(s)
    st, wst = steady(s)
    # The f16-factor MF job is its own row (and ratio) beside the f32 one, as is each wave kernel.
    dev = label(s)
    by_job.setdefault(s["job"], {})[dev] = (r, st, wst)
    # A figure may be null (no data, or NaN from a diverging job): no quality rather than a crash.
    q = next((f"{k} {s[k]:.4g}" for k in ("test_rmse", "loglik_per_token", "test_accuracy")
              if isinstance(s.get(k), (int, float))), "")
    mb = lambda k: None if s.get(k) is None else s[k] / 1e6
    ms = lambda k: None if s.get(k) is None else s[k] * 1e3
    print(f"{s['job']:<5} {dev:<18} {s.get('workers', 0):>7} {fmt(r, '11.4e')} {fmt(st, '11.4e')} {fmt(wst, '11.4e')} {unit:<10} "
          f"{fmt(per_clock(s, 'compute_s'), '13.4f')} {fmt(per_clock(s, 'device_compute_s_clocks'), '12.4f')} "
          f"{fmt(per_clock(s, 'comm_s'), '10.4f')} {fmt(mb('pcie_bytes_h2d_per_clock'), '14.2f')} "
          f"{fmt(mb('pcie_bytes_d2h_per_clock'), '15.2f')} {fmt(ms('pcie_h2d_s_per_clock'), '9.3f')} "
          f"{fmt(ms('pcie_d2h_s_per_clock'), '10.3f')} {fmt(s.get('wall_s'), '7.1f')} {q:<24} "
          f"{s.get('ssp', '-'):<14}")
# Where each row's compute went, per clock and worker (ps-cluster's `host_*_s`, the device's
# compute and copy seconds): storing the pulled replies (read less the session's loads), the
# session's own host work (its loads and step less the device's compute and copies, and less the
# library's intake of the delta), the device, the copies both ways, that intake, asking for the
# next clock's rows ahead, sealing the clock's push frames, folding acknowledged pushes into the
# library's cached rows (read-my-writes), and what none of these covers. A resident engine's device time falls in
# both the loads (unpacking rows) and the step, so the session's host work is one column.
print(f"\n{'job':<5} {'device':<24} {'compute':>8} {'store':>8} {'session':>8} {'device':>8} "
      f"{'pcie':>8} {'sink':>8} {'prefetch':>8} {'seal':>8} {'fold':>8} {'other':>8}   (s per clock and worker)")
for s in rows:
    if "failed" in s or "skipped" in s or "host_step_s" not in s:
        continue
    c = lambda k: per_clock(s, k) or 0.0
    dev = label(s)
    # The device's figures are sums over workers, the host's means.
    w = max(s.get("workers", 1), 1)
    device = c("device_compute_s_clocks") / w
    pcie = ((s.get("pcie_h2d_s_per_clock") or 0.0) + (s.get("pcie_d2h_s_per_clock") or 0.0)) / w
    session = c("host_load_s") + c("host_step_s") - device - pcie - c("host_sink_s")
    other = (c("compute_s") - c("host_read_s") - c("host_step_s") - c("host_prefetch_s")
             - c("host_seal_s") - c("host_fold_s"))
    print(f"{s['job']:<5} {dev:<24} {c('compute_s'):8.4f} {c('host_read_s') - c('host_load_s'):8.4f} "
          f"{session:8.4f} {device:8.4f} {pcie:8.4f} {c('host_sink_s'):8.4f} "
          f"{c('host_prefetch_s'):8.4f} {c('host_seal_s'):8.4f} {c('host_fold_s'):8.4f} {other:8.4f}")
ratio = lambda a, b: "-" if not (a and b) else f"{a / b:.2f}x"
for job, d in by_job.items():
    for gpu in (k for k in d if k.startswith("cuda")):
        # The wire variant's GPU row against the CPU row on the same wire.
        cpu = "cpu-wire" if gpu.endswith("-wire") else "cpu"
        if d.get(gpu) and d.get(cpu):
            (gr, gs, gw), (cr, cs, cw) = d[gpu], d[cpu]
            print(f"{job}: GPU worker ({gpu}) / CPU workers on all cores ({cpu}) = {ratio(gr, cr)} (rate), "
                  f"{ratio(gs, cs)} (steady), {ratio(gw, cw)} (wall-steady)")
EOF
