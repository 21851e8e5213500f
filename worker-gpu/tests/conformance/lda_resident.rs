//! The resident CUDA LDA engine against its CPU oracle `HostLdaResident` on `CpuLda`, over several
//! clocks of two workers sharing an emulated server table: each clock both engines load the same
//! rows (in runs, the last first) and totals, measure the log-likelihood and sweep with the
//! clock's key; the server applies the oracle's deltas, so both keep reading the same model.
//!
//! - Sequential mode (one warp): every clock's delta equals the oracle's, and the assignments
//!   agree token for token (up to a uniform within rounding of a CDF boundary, where the chains
//!   may part: the case then stops, as `lda::sequential_sweep_replays_the_oracle` does); the
//!   log-likelihood agrees to 1e-9 relative (f64, summed in another order).
//! - Parallel mode: every sweep keeps the count invariants exactly (the delta is the change of
//!   the worker's own counts, its columns sum to the totals' change, which sums to zero; the
//!   document-topic counts are the assignments' counts).
//! - The bus traffic is exactly the state once, the rows (packed where that is smaller) and
//!   totals in per clock, and the log-likelihood, the packed delta and the totals' change out;
//!   bad input is a typed error.

use ps_apps::lda::packed::rice::pack_rice_rows;
use ps_apps::lda::packed::{pack_rows, Packed, Values};
use ps_apps::lda::{
    gather_rows, loglik, pulled_run, split_docs, synthetic_lda, CpuLda, HostLdaResident, LdaDelta,
    LdaHyper, LdaResident, LdaWorkerState, PulledRun, SweepKey, SyntheticLdaSpec,
};
use ps_proto::SparseRowsBuf;
use worker_gpu::cuda::lda::LdaSweepKernel;
use worker_gpu::cuda::lda_resident::CudaLdaResident;

use crate::common::{draws_agree, seed};

const WORKERS: u32 = 2;
const CLOCKS: u32 = 6;

/// A small built-in corpus of `vocab` words, its workers' states and the server's table after
/// the initial pushes.
pub(crate) fn job(
    s: u64,
    topics: u32,
    docs: u32,
    vocab: u32,
) -> (Vec<LdaWorkerState>, Vec<f32>, Vec<f32>, LdaHyper) {
    let mut spec = SyntheticLdaSpec::default_builtin(s);
    spec.docs = docs;
    spec.vocab = vocab;
    let syn = synthetic_lda(&spec);
    let hyper = LdaHyper {
        topics,
        ..LdaHyper::default()
    };
    let k = topics as usize;
    let mut table = vec![0f32; syn.corpus.vocab_size as usize * k];
    let mut totals = vec![0f32; k];
    let states = (0..WORKERS)
        .map(|w| {
            let docs = split_docs(&syn.corpus, WORKERS, w);
            let (state, init) =
                LdaWorkerState::init(&docs, syn.corpus.vocab_size, &hyper, s, w).expect("init");
            init.apply(&mut table, &mut totals);
            state
        })
        .collect();
    (states, table, totals, hyper)
}

/// Loads the worker's rows of `table` (two runs, the second half first, by its entries as the
/// client hands rows it caches sparse; the first half dense) and the totals; returns the bytes
/// that should cross the bus: the run by its entries Rice coded, the dense run as
/// `ps_apps::lda::pulled_run` has it cross (the 16-bit image, codes), each where that is
/// smaller than dense, and the totals dense; and how many runs went packed.
pub(crate) fn load(
    e: &mut dyn LdaResident,
    state: &LdaWorkerState,
    table: &[f32],
    totals: &[f32],
) -> (u64, usize) {
    let k = totals.len();
    let rows = gather_rows(table, &state.words, k as u32);
    let half = state.words.len() / 2;
    let (mut bytes, mut packed) = (4 * k as u64, 0);
    let mut image = Vec::new();
    for (first, run) in [(half, &rows[half * k..]), (0, &rows[..half * k])] {
        if first > 0 {
            let mut entries = SparseRowsBuf::default();
            entries.clear(k);
            run.chunks_exact(k).for_each(|r| entries.push_dense(r));
            e.load_sparse_rows(first, entries.view())
                .expect("load_sparse_rows");
            // By its entries: Rice coded where that is smaller than dense.
            if let Some(shape) = pack_rice_rows(entries.view(), k, &mut image) {
                bytes += if shape.entries == 0 { 0 } else { shape.bytes() };
                packed += 1;
                continue;
            }
        } else {
            e.load_rows(first, run).expect("load_rows");
        }
        // Packed (an all-zero run zeroes the rows and copies nothing), as codes (a dense run
        // only), or dense.
        let how = if first > 0 {
            pack_rows(run, k, &mut image).map_or(PulledRun::Dense, PulledRun::Packed)
        } else {
            pulled_run(run, k, &mut image)
        };
        bytes += how.bytes(run.len());
        packed += usize::from(matches!(how, PulledRun::Packed(_)));
    }
    e.load_totals(totals).expect("load_totals");
    (bytes, packed)
}

/// The bytes of a delta's trip out: its two sizes and its packed image (`ps_apps::lda::packed`:
/// a word per row, then `u16` topics and `i16` changes, or `i32` when one does not fit).
fn delta_bytes(delta: &LdaDelta, rows: usize) -> u64 {
    let wide = delta.entries.iter().any(|e| e.2.unsigned_abs() > 32_767);
    let shape = Packed {
        rows,
        entries: delta.entries.len(),
        values: if wide { Values::I32 } else { Values::I16 },
    };
    8 + shape.bytes()
}

pub(crate) fn key(s: u64, worker: u32, clock: u32) -> SweepKey {
    SweepKey {
        seed: s,
        worker,
        clock,
    }
}

pub(crate) fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

/// The delta a sweep must return: the change of the worker's own counts, in global words.
fn own_change(state: &LdaWorkerState, z_before: &[u32]) -> LdaDelta {
    let k = state.topics as usize;
    let mut cells = vec![0i32; state.words.len() * k];
    let mut totals = vec![0i32; k];
    for ((&w, &old), &new) in state.tokens.iter().zip(z_before).zip(&state.z) {
        cells[w as usize * k + old as usize] -= 1;
        cells[w as usize * k + new as usize] += 1;
        totals[old as usize] -= 1;
        totals[new as usize] += 1;
    }
    let entries = cells
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(i, &c)| (state.words[i / k], (i % k) as u32, c))
        .collect();
    LdaDelta {
        topics: state.topics,
        entries,
        totals,
    }
}

#[test]
fn sequential_resident_engine_matches_the_oracle_clock_by_clock() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_resident sequential") else {
        return;
    };
    let s = seed("lda_resident sequential");
    // K 12: the rows are dense and copied as they are; K 300: most runs pack. The chunk-ends
    // draw once, at K 300 (ten chunks).
    let mut packed = 0;
    for (topics, kernel) in [
        (12, LdaSweepKernel::Scratch),
        (300, LdaSweepKernel::Scratch),
        (300, LdaSweepKernel::ChunkEnds),
    ] {
        packed += sequential_case(&gpu, s, topics, kernel);
    }
    assert!(packed > 0, "no run went packed");
}

/// One sequential case; returns how many runs went packed.
fn sequential_case(
    gpu: &std::sync::Arc<worker_gpu::cuda::Gpu>,
    s: u64,
    topics: u32,
    kernel: LdaSweepKernel,
) -> usize {
    let mut packed_runs = 0;
    let (states, mut table, mut totals, hyper) = job(s, topics, 200, 300);
    let k = topics as usize;
    let mut pairs: Vec<(CudaLdaResident, HostLdaResident, LdaWorkerState)> = states
        .into_iter()
        .map(|state| {
            let mut dev = CudaLdaResident::sequential(gpu.clone()).expect("engine");
            dev.set_sweep_kernel(kernel).expect("sweep kernel");
            assert_eq!(dev.name(), "cuda-resident-sequential");
            let mut host = HostLdaResident::new(Box::new(CpuLda::new()));
            dev.setup(&state, &hyper).expect("setup");
            host.setup(&state, &hyper).expect("setup");
            let (n, d, w) = (state.tokens.len(), state.num_docs(), state.words.len());
            let t = dev.traffic();
            assert_eq!(
                t.h2d_bytes,
                4 * (d + 1 + 2 * n + d * k + w) as u64,
                "set-up bytes"
            );
            assert_eq!(t.d2h_bytes, 0);
            (dev, host, state)
        })
        .collect();
    'clocks: for clock in 1..=CLOCKS {
        let mut deltas = Vec::new();
        for (w, (dev, host, state)) in pairs.iter_mut().enumerate() {
            let ctx = format!("{} K {topics} clock {clock} worker {w}", kernel.name());
            let before = dev.traffic();
            let (bytes_in, packed) = load(dev, state, &table, &totals);
            packed_runs += packed;
            load(host, state, &table, &totals);
            let (lg, ng) = dev.loglik().expect("loglik");
            let (lc, nc) = host.loglik().expect("loglik");
            assert_eq!(ng, nc, "{ctx}");
            assert!(close(lg, lc), "{ctx}: loglik {lg} vs {lc}");
            let want = loglik(
                state,
                &gather_rows(&table, &state.words, topics),
                &totals,
                &hyper,
            );
            assert_eq!(want, (lc, nc), "{ctx}: the oracle's loglik");
            let kk = key(s, w as u32, clock);
            let dg = dev.sweep(kk).expect("sweep");
            let dc = host.sweep(kk).expect("sweep");
            let t = dev.traffic().since(&before);
            assert_eq!(t.h2d_bytes, bytes_in, "{ctx}: bytes in");
            // The log-likelihood, the packed delta with its sizes, the totals' change.
            let out = 8 + delta_bytes(&dg, state.words.len()) + 4 * k as u64;
            assert_eq!(t.d2h_bytes, out, "{ctx}: bytes out");
            let (th, td) = (host.traffic(), dev.traffic());
            assert_eq!(
                (th.h2d_bytes, th.d2h_bytes),
                (td.h2d_bytes, td.d2h_bytes),
                "{ctx}: the oracle counts the device's bytes"
            );
            assert!(t.compute_s > 0.0, "{ctx}: no kernel time");
            assert!(
                t.h2d_s > 0.0 && t.d2h_s > 0.0,
                "{ctx}: copies not timed: {t:?}"
            );
            let (mut sg, mut sc) = (state.clone(), state.clone());
            dev.download_state(&mut sg).expect("download");
            host.download_state(&mut sc).expect("download");
            if !draws_agree(&ctx, &sg.z, &sc.z) {
                eprintln!("{ctx}: a CDF-rounding tie: the chains diverge, stopping");
                break 'clocks;
            }
            assert_eq!(sg, sc, "{ctx}: state");
            assert_eq!(dg, dc, "{ctx}: delta");
            assert!(!dg.entries.is_empty(), "{ctx}: nothing moved");
            *state = sc;
            deltas.push(dc);
        }
        for d in &deltas {
            d.apply(&mut table, &mut totals);
        }
    }
    packed_runs
}

#[test]
fn parallel_resident_engine_keeps_the_invariants() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_resident parallel") else {
        return;
    };
    let s = seed("lda_resident parallel");
    for topics in [7u32, 40] {
        let (states, mut table, mut totals, hyper) = job(s, topics, 2_000, 2_000);
        let k = topics as usize;
        let mut engines: Vec<(CudaLdaResident, LdaWorkerState)> = states
            .into_iter()
            .map(|state| {
                let mut dev = CudaLdaResident::new(gpu.clone()).expect("engine");
                assert_eq!(dev.name(), "cuda-resident");
                dev.setup(&state, &hyper).expect("setup");
                (dev, state)
            })
            .collect();
        for clock in 1..=3 {
            let mut deltas = Vec::new();
            for (w, (dev, state)) in engines.iter_mut().enumerate() {
                let ctx = format!("K {topics} clock {clock} worker {w}");
                let before = dev.traffic();
                let (bytes_in, _) = load(dev, state, &table, &totals);
                let rows = gather_rows(&table, &state.words, topics);
                let (lg, n) = dev.loglik().expect("loglik");
                let want = loglik(state, &rows, &totals, &hyper);
                assert_eq!(n, want.1, "{ctx}");
                assert!(close(lg, want.0), "{ctx}: loglik {lg} vs {}", want.0);
                let z_before = state.z.clone();
                let delta = dev.sweep(key(s, w as u32, clock)).expect("sweep");
                dev.download_state(state).expect("download");
                state.check().expect("the downloaded state's invariants");
                assert_eq!(delta, own_change(state, &z_before), "{ctx}: delta");
                assert_eq!(delta.totals.iter().sum::<i32>(), 0, "{ctx}");
                let moved = z_before
                    .iter()
                    .zip(&state.z)
                    .filter(|(a, b)| a != b)
                    .count();
                eprintln!(
                    "{ctx}: {moved} tokens moved, {} entries",
                    delta.entries.len()
                );
                assert!(moved > 0, "{ctx}: no token moved");
                let t = dev.traffic().since(&before);
                let docs = state.num_docs();
                assert_eq!(t.h2d_bytes, bytes_in, "{ctx}: bytes in");
                let out = 8
                    + delta_bytes(&delta, state.words.len())
                    + 4 * (k + state.z.len() + docs * k) as u64;
                assert_eq!(t.d2h_bytes, out, "{ctx}: bytes out");
                deltas.push(delta);
            }
            for d in &deltas {
                d.apply(&mut table, &mut totals);
            }
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_resident bad input") else {
        return;
    };
    let (states, _, _, hyper) = job(3, 5, 40, 100);
    let state = &states[0];
    let k = hyper.topics as usize;
    let mut dev = CudaLdaResident::new(gpu).expect("engine");
    assert!(dev.load_totals(&vec![0.0; k]).is_err(), "before setup");
    assert!(dev.loglik().is_err(), "before setup");
    assert!(dev.sweep(key(1, 0, 1)).is_err(), "before setup");
    let mut bad = state.clone();
    bad.z[0] = hyper.topics;
    assert!(dev.setup(&bad, &hyper).is_err(), "topic out of range");
    let mut bad = state.clone();
    bad.tokens[0] = state.words.len() as u32;
    assert!(dev.setup(&bad, &hyper).is_err(), "word row out of range");
    dev.setup(state, &hyper).expect("setup");
    let n = state.words.len();
    assert!(
        dev.load_rows(n, &vec![0.0; k]).is_err(),
        "past the last row"
    );
    assert!(
        dev.load_rows(0, &vec![0.0; k + 1]).is_err(),
        "a partial row"
    );
    assert!(dev.load_totals(&vec![0.0; 2 * k]).is_err(), "totals width");
    let entries = |width: usize, at: &'static [u32]| ps_proto::SparseRows {
        width,
        offsets: if at.is_empty() { &[0, 0] } else { &[0, 2] },
        at,
        values: if at.is_empty() { &[] } else { &[1.0, 2.0] },
    };
    assert!(
        dev.load_sparse_rows(n, entries(k, &[])).is_err(),
        "entries past the last row"
    );
    assert!(
        dev.load_sparse_rows(0, entries(k + 1, &[])).is_err(),
        "entries of another width"
    );
    assert!(
        dev.load_sparse_rows(0, entries(k, &[3, 1])).is_err(),
        "columns out of order"
    );
    let mut other = state.clone();
    other.z.push(0);
    assert!(dev.download_state(&mut other).is_err(), "another state");
    // Still usable after the refusals.
    dev.load_rows(n - 1, &vec![1.0; k]).expect("load");
}

/// Rows that are not whole counts (a stale or hostile copy) load as `f32` bits, packed: the
/// device's log-likelihood over them is the oracle's, and the bytes in are the packed image's.
#[test]
fn fractional_rows_load_packed_as_f32() {
    let (states, mut table, totals, hyper) = job(11, 300, 200, 300);
    for (i, x) in table.iter_mut().enumerate() {
        if *x != 0.0 && i % 3 == 0 {
            // Each its own fraction: no few scales hold them, so no codes either.
            *x += 0.25 + (i % 1000) as f32 * 1e-4;
        }
    }
    let state = &states[0];
    let k = hyper.topics as usize;
    let rows = gather_rows(&table, &state.words, hyper.topics);
    let mut image = Vec::new();
    let how = pulled_run(&rows[..state.words.len() / 2 * k], k, &mut image);
    // The case's premise, checked with or without a GPU.
    assert!(
        matches!(
            how,
            PulledRun::Packed(Packed {
                values: Values::F32,
                ..
            })
        ),
        "the case packs as f32, not as codes or dense: {}",
        match &how {
            PulledRun::Codes(c) => format!("codes of {} B in {} segments", c.bytes(), c.segments()),
            other => format!("{other:?}"),
        }
    );
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_resident f32 rows") else {
        return;
    };
    let mut dev = CudaLdaResident::new(gpu).expect("engine");
    let mut host = HostLdaResident::new(Box::new(CpuLda::new()));
    dev.setup(state, &hyper).expect("setup");
    host.setup(state, &hyper).expect("setup");
    let before = dev.traffic();
    let (bytes_in, packed) = load(&mut dev, state, &table, &totals);
    load(&mut host, state, &table, &totals);
    assert!(packed > 0);
    assert_eq!(dev.traffic().since(&before).h2d_bytes, bytes_in);
    let (lg, ng) = dev.loglik().expect("loglik");
    let (lc, nc) = host.loglik().expect("loglik");
    assert_eq!(ng, nc);
    assert!(close(lg, lc), "loglik {lg} vs {lc}");
}

/// Rows a `q8` pull codec's reply decoded to (codes times scales, not whole counts) cross as
/// their codes where those take fewer bytes than their packed entries (`pulled_run`) and widen
/// on the device exactly (`codec_levels_to_f32` into the rows in place): the device's
/// log-likelihood over them is the oracle's, both count the image's bytes, and the next
/// sweep's delta is the oracle's in sequential mode.
#[test]
fn quantized_rows_cross_as_codes() {
    let (states, table, totals, hyper) = job(12, 10, 200, 300);
    let state = &states[0];
    let k = hyper.topics as usize;
    let q8 = ps_proto::codec::ValueFormat::Q8.round_trip(&table);
    let rows = gather_rows(&q8, &state.words, hyper.topics);
    let mut image = Vec::new();
    // The case's premise, checked with or without a GPU.
    assert!(
        matches!(
            pulled_run(&rows[..state.words.len() / 2 * k], k, &mut image),
            PulledRun::Codes(_)
        ),
        "the case crosses as codes"
    );
    // The oracle's count, checked with or without a GPU.
    let mut host = HostLdaResident::new(Box::new(CpuLda::new()));
    host.setup(state, &hyper).expect("setup");
    let h0 = host.traffic();
    let (bytes_in, _) = load(&mut host, state, &q8, &totals);
    assert_eq!(host.traffic().since(&h0).h2d_bytes, bytes_in);
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_resident q8 rows") else {
        return;
    };
    let mut dev = CudaLdaResident::sequential(gpu).expect("engine");
    dev.setup(state, &hyper).expect("setup");
    let d0 = dev.traffic();
    load(&mut dev, state, &q8, &totals);
    assert_eq!(dev.traffic().since(&d0).h2d_bytes, bytes_in);
    let (lg, ng) = dev.loglik().expect("loglik");
    let (lc, nc) = host.loglik().expect("loglik");
    assert_eq!(ng, nc);
    assert!(close(lg, lc), "loglik {lg} vs {lc}");
    let key = SweepKey {
        seed: 12,
        worker: 0,
        clock: 1,
    };
    let (a, b) = (
        dev.sweep(key).expect("sweep"),
        host.sweep(key).expect("sweep"),
    );
    let (mut sg, mut sc) = (state.clone(), state.clone());
    dev.download_state(&mut sg).expect("download");
    host.download_state(&mut sc).expect("download");
    if draws_agree("q8 rows", &sg.z, &sc.z) {
        assert_eq!(a, b, "the sweep over the widened rows");
    }
}

/// What a rejoining worker relies on (`--on-worker-failure wait`): the assignments alone come
/// back as `download_state` gives them, 4 bytes a token; a state restored over the device's
/// (the oracle's after a sweep) keeps the loaded rows, and the next sweep is the oracle's as if
/// the device had made the first one itself; a state of other documents is refused.
#[test]
fn a_restored_state_sweeps_as_the_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda_resident restore") else {
        return;
    };
    let s = seed("lda_resident restore");
    let (states, table, totals, hyper) = job(s, 40, 120, 200);
    let state = &states[0];
    let mut dev = CudaLdaResident::sequential(gpu).expect("engine");
    let mut host = HostLdaResident::new(Box::new(CpuLda::new()));
    dev.setup(state, &hyper).expect("setup");
    host.setup(state, &hyper).expect("setup");
    load(&mut dev, state, &table, &totals);
    load(&mut host, state, &table, &totals);
    dev.sweep(key(s, 0, 1)).expect("sweep");
    host.sweep(key(s, 0, 1)).expect("sweep");
    let (mut sg, mut sc) = (state.clone(), state.clone());
    dev.download_state(&mut sg).expect("download");
    host.download_state(&mut sc).expect("download");
    let mut z = vec![0; state.z.len()];
    let before = dev.traffic().d2h_bytes;
    dev.download_assignments(&mut z).expect("assignments");
    assert_eq!(dev.traffic().d2h_bytes - before, 4 * z.len() as u64);
    assert_eq!(z, sg.z, "the assignments alone are the state's");
    assert!(dev.download_assignments(&mut [0; 3]).is_err(), "a length");
    let mut other = sc.clone();
    other.tokens.swap(0, 1);
    other.tokens[0] = (other.tokens[0] + 1) % state.words.len() as u32;
    assert!(dev.restore_state(&other).is_err(), "other documents");
    let mut bad = sc.clone();
    bad.z[0] = hyper.topics;
    assert!(dev.restore_state(&bad).is_err(), "a topic past K");
    if !draws_agree("restore clock 1", &sg.z, &sc.z) {
        eprintln!("restore: a CDF-rounding tie at clock 1, stopping");
        return;
    }
    // The next clock's rows first, as a session loads them before it restores: the restore
    // keeps them. The device is set back to the start, then handed the oracle's state.
    load(&mut dev, state, &table, &totals);
    load(&mut host, state, &table, &totals);
    dev.restore_state(state).expect("restore");
    dev.download_state(&mut sg).expect("download");
    assert_eq!(&sg, state, "restored");
    dev.restore_state(&sc).expect("restore");
    let (lg, lc) = (
        dev.loglik().expect("loglik"),
        host.loglik().expect("loglik"),
    );
    assert!(
        close(lg.0, lc.0),
        "loglik {lg:?} vs {lc:?}: the rows were not kept"
    );
    let (dg, dc) = (
        dev.sweep(key(s, 0, 2)).expect("sweep"),
        host.sweep(key(s, 0, 2)).expect("sweep"),
    );
    dev.download_state(&mut sg).expect("download");
    host.download_state(&mut sc).expect("download");
    if draws_agree("restore clock 2", &sg.z, &sc.z) {
        assert_eq!(sg, sc, "state after the restored sweep");
        assert_eq!(dg, dc, "delta after the restored sweep");
    }
}
