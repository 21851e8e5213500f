//! LDA collapsed Gibbs: tokens per second at K = 50 and K = 1000 on a synthetic corpus of
//! 200,000 documents × 100 tokens over 20,000 words (20 M tokens, one worker; `--quick`: 20,000
//! documents), two ways: the sweep kernel alone on device-resident buffers (events; each kind of
//! draw, `LdaSweepKernel`), and the whole `LdaCompute::sweep` call with its host work and copies
//! (wall). The peer is the CPU engine `SparseLda` on one thread (`ParallelSparseLda` on more;
//! workers too), timed on the first documents of the same corpus.
//!
//! The word-major sampler (`CudaWordLda`, `kernels/lda_word.cu`: tokens by word, the word's
//! table in shared memory, the document part over its nonzero topics, counts fixed for the
//! sweep) is timed the same way, its kernels a sweep, in 1, 4 and 16 document groups, against
//! CuLDA_CGS's figure.
//!
//! Floor: the kernel is dense in K; per token it reads K counts of the word row (f32), K of the
//! document row (u32) and K totals (f32), writes K f64 cumulative sums and reads them back:
//! bytes = tokens × K × (4 + 4 + 4 + 8 + 8); flops ≈ tokens × K × 6 (the weight's two adds, a
//! multiply and a divide, the sum and the comparison).

use std::sync::Arc;
use std::time::Instant;

use ps_apps::lda::{
    synthetic_lda, LdaCompute, LdaHyper, LdaWorkerState, SparseLda, SweepKey, SyntheticLdaSpec,
};
use worker_gpu::cuda::lda::{CudaLda, LdaSweepKernel};
use worker_gpu::cuda::lda_word::CudaWordLda;
use worker_gpu::cuda::{Gpu, GpuError};

use crate::{median_event_ms, median_wall_ms, Ceilings, Row};

const DOCS: u32 = 200_000;
const DOC_LEN: u32 = 100;
const VOCAB: u32 = 20_000;
/// Topics of the generator (the corpus is the same for every K sampled).
const TRUE_TOPICS: u32 = 50;
const SEED: u64 = 2024;

fn input(e: impl std::fmt::Display) -> GpuError {
    GpuError::Input(format!("lda bench: {e}"))
}

/// A single worker's state over `docs`, with its own counts as the word-topic copy and totals.
fn worker(
    docs: &[Vec<u32>],
    hyper: &LdaHyper,
) -> Result<(LdaWorkerState, Vec<f32>, Vec<f32>), GpuError> {
    let (state, _) = LdaWorkerState::init(docs, VOCAB, hyper, SEED, 0).map_err(input)?;
    let k = hyper.topics as usize;
    let wt: Vec<f32> = state.local_word_topic().iter().map(|&c| c as f32).collect();
    let mut totals = vec![0f32; k];
    for &t in &state.z {
        totals[t as usize] += 1.0;
    }
    Ok((state, wt, totals))
}

/// Tokens per second of `SparseLda` on one thread: the second sweep after the random start
/// (the first is timed too, as warm-up) over the first `docs` documents.
fn sparse_peer(docs: &[Vec<u32>], hyper: &LdaHyper) -> Result<(f64, usize), GpuError> {
    let (mut state, mut wt, mut totals) = worker(docs, hyper)?;
    let mut engine = SparseLda::new();
    let mut secs = 0.0;
    for clock in 1..=2 {
        let key = SweepKey {
            seed: SEED,
            worker: 0,
            clock,
        };
        let t = Instant::now();
        engine.sweep(&mut state, &mut wt, &mut totals, hyper, key)?;
        secs = t.elapsed().as_secs_f64();
    }
    let n = state.num_tokens();
    Ok((n as f64 / secs.max(1e-9), n))
}

pub fn run(gpu: &Arc<Gpu>, ceil: &Ceilings, quick: bool) -> Result<Vec<Row>, GpuError> {
    let docs = if quick { DOCS / 10 } else { DOCS };
    let t = Instant::now();
    let syn = synthetic_lda(&SyntheticLdaSpec {
        docs,
        vocab: VOCAB,
        topics: TRUE_TOPICS,
        doc_len: DOC_LEN,
        alpha: 0.1,
        beta: 1.0,
        noise: 0.1,
        seed: SEED,
    });
    let corpus = &syn.corpus.docs;
    eprintln!(
        "lda: corpus of {} tokens generated in {:.1} s",
        syn.corpus.num_tokens(),
        t.elapsed().as_secs_f64()
    );
    // The CPU peer on the first documents (one thread is slow at K = 1000).
    let peer_docs = (docs as usize / 20).clamp(1, corpus.len());
    let mut rows = Vec::new();
    for k in [50u32, 1000] {
        let hyper = LdaHyper {
            topics: k,
            alpha: 0.1,
            beta: 0.01,
        };
        let (mut state, mut wt, mut totals) = worker(corpus, &hyper)?;
        let n = state.num_tokens();
        let shape = format!(
            "K {k}, {:.1}M tokens, {}k docs, V {}k",
            n as f64 / 1e6,
            docs / 1000,
            VOCAB / 1000
        );
        let units = n as f64;
        let flops = units * f64::from(k) * 6.0;
        // The floor of each draw: the scratch one writes and reads K f64 sums per token; the
        // chunk-ends one (K <= 1,024) reads one chunk's 3 x 32 counts again instead.
        let floor_of = |kernel: LdaSweepKernel| {
            let counts = units * f64::from(k) * (4.0 + 4.0 + 4.0);
            let (bytes, formula) = match kernel {
                LdaSweepKernel::ChunkEnds if k <= 1024 => (
                    counts + units * 32.0 * 12.0,
                    "floor: bytes = tokens x (K x (4 wt + 4 doc + 4 totals) + 32 x 12 for the \
                     chosen chunk again), flops = tokens x K x 6",
                ),
                _ => (
                    counts + units * f64::from(k) * 16.0,
                    "floor: bytes = tokens x K x (4 wt + 4 doc + 4 totals + 8 + 8 scratch \
                     write/read), flops = tokens x K x 6",
                ),
            };
            let (floor, bound) = ceil.floor_rate(units, flops, bytes);
            (floor, bound, formula)
        };

        let (peer_rate, peer_tokens) = sparse_peer(&corpus[..peer_docs], &hyper)?;
        let peer_name = format!("cpu SparseLda 1 thread ({peer_tokens} tokens, sweep 2)");
        eprintln!("lda K {k}: {peer_name}: {:.3e} tokens/s", peer_rate);

        // (a) The kernel alone, on device-resident buffers (each repeat sweeps again), with
        // each kind of draw (the chunk-ends one never writes the scratch row at K <= 1,024).
        let key = SweepKey {
            seed: SEED,
            worker: 0,
            clock: 1,
        };
        for kernel in LdaSweepKernel::ALL {
            let (floor, bound, formula) = floor_of(kernel);
            let mut engine = CudaLda::new(Arc::clone(gpu))?;
            engine.set_sweep_kernel(kernel)?;
            let (grid, block) = engine.launch_shape(state.num_docs());
            engine.bench_load(&state, &wt, &totals, &hyper, key)?;
            let reps = if k >= 1000 { 5 } else { 10 };
            let (ms, spread) =
                median_event_ms(gpu.compute_stream(), 1, reps, || engine.bench_kernel_only())?;
            gpu.synchronize()?;
            rows.push(Row {
                bench: format!("lda gibbs kernel, {}", kernel.name()),
                shape: shape.clone(),
                rate: units / (ms * 1e-3),
                unit: "tokens/s",
                floor_rate: floor,
                bound,
                peer: Some((peer_name.clone(), peer_rate)),
                note: format!(
                    "median of {reps} ({ms:.2} ms, spread {:.0}%), grid {grid} x {block} (one \
                     warp per document); {formula}",
                    spread * 100.0
                ),
            });
        }
        // Never run on a GPU: a row that fails is reported and the bench goes on.
        for groups in WORD_MAJOR_GROUPS {
            match word_major_row(gpu, ceil, &state, &wt, &totals, &hyper, key, &shape, groups) {
                Ok(r) => rows.push(r),
                Err(e) => eprintln!("lda word-major kernels, {groups} groups ({shape}): {e}"),
            }
        }
        let mut engine = CudaLda::new(Arc::clone(gpu))?;
        let (floor, bound, formula) = floor_of(LdaSweepKernel::default());

        // (b) The whole trait call: host checks, copies both ways, compaction (the uniforms are
        // drawn on the device).
        let mut clock = 1u32;
        let reps = 3;
        let (ms, spread) = median_wall_ms(gpu, 1, reps, || {
            clock += 1;
            let key = SweepKey {
                seed: SEED,
                worker: 0,
                clock,
            };
            let delta = engine.sweep(&mut state, &mut wt, &mut totals, &hyper, key)?;
            std::hint::black_box(delta);
            Ok(())
        })?;
        rows.push(Row {
            bench: "CudaLda::sweep (trait call)".into(),
            shape,
            rate: units / (ms * 1e-3),
            unit: "tokens/s",
            floor_rate: floor,
            bound,
            peer: Some((peer_name, peer_rate)),
            note: format!(
                "wall, median of {reps} ({ms:.1} ms, spread {:.0}%), includes the host's \
                 checks and copies of the whole state; {formula}",
                spread * 100.0
            ),
        });
    }
    Ok(rows)
}

/// CuLDA_CGS on the H200 at K 1,024 (`../shared/gpu-anchors`, 2026-12-04), tokens per second.
const CULDA_TOKENS_PER_S: f64 = 7.8e8;

/// The document groups the word-major rows sweep in (`PS_LDA_SAMPLER=word-major:G`): more
/// groups need fewer sweeps to a quality (the ignored `chain` test of `ps-apps`'s
/// `lda_conformance` measures how many on the CPU) and load each word's table once a group.
const WORD_MAJOR_GROUPS: [usize; 3] = [1, 4, 16];

/// The word-major sweep's kernels on device-resident buffers, in `groups` document groups (the
/// lists once, then a group's draws and moves at a time): after 3 sweeps (the documents' lists
/// shrink as topics settle), the median of 10 (5 at K >= 1,000, as the Gibbs kernel's).
///
/// Floor: per token its place in the word order, its document, topic and new topic, and its
/// document's list (8 bytes an entry); per slot the word row and the totals (8 bytes a topic);
/// flops about 3 per list entry and 64 per token (the word part's two scans).
#[allow(clippy::too_many_arguments)]
fn word_major_row(
    gpu: &Arc<Gpu>,
    ceil: &Ceilings,
    state: &LdaWorkerState,
    wt: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
    key: SweepKey,
    shape: &str,
    groups: usize,
) -> Result<Row, GpuError> {
    let k = f64::from(hyper.topics);
    let units = state.num_tokens() as f64;
    // Each token reads its document's list: sum over documents of length x nonzero topics.
    let kk = hyper.topics as usize;
    let list_entries: f64 = (0..state.num_docs())
        .map(|d| {
            let len = state.doc_offsets[d + 1] - state.doc_offsets[d];
            let nnz = state.doc_topic[d * kk..(d + 1) * kk]
                .iter()
                .filter(|&&c| c != 0)
                .count();
            (len * nnz) as f64
        })
        .sum();
    let mut engine = CudaWordLda::new(Arc::clone(gpu))?.with_groups(groups);
    engine.bench_load(state, wt, totals, hyper, key)?;
    // The groups and slots the sweeps launch on (the set-up's own layout).
    let launches = engine.launches();
    let groups_run = launches.len();
    let slots: f64 = launches.iter().map(|l| f64::from(l.slots)).sum();
    let bytes = units * 16.0 + list_entries * 8.0 + slots * k * 8.0;
    let flops = list_entries * 3.0 + units * 64.0;
    let (floor, bound) = ceil.floor_rate(units, flops, bytes);
    let (warmup, reps) = (3, if hyper.topics >= 1000 { 5 } else { 10 });
    let (ms, spread) = median_event_ms(gpu.compute_stream(), warmup, reps, || {
        engine.bench_kernel_only()
    })?;
    gpu.synchronize()?;
    Ok(Row {
        bench: if groups == 1 {
            "lda word-major kernels".into()
        } else {
            format!("lda word-major kernels, {groups_run} groups")
        },
        shape: shape.to_string(),
        rate: units / (ms * 1e-3),
        unit: "tokens/s",
        floor_rate: floor,
        bound,
        peer: Some(("CuLDA_CGS, H200, K 1024".into(), CULDA_TOKENS_PER_S)),
        note: format!(
            "median of {reps} after {warmup} ({ms:.2} ms, spread {:.0}%): lists, draws and \
             moves of a sweep over fixed counts in {} document groups ({slots} slots); the floor \
             from the first sweep's lists ({:.1} entries a token): bytes = tokens x 16 + list \
             entries x 8 + slots x K x 8",
            spread * 100.0,
            groups_run,
            list_entries / units.max(1.0)
        ),
    })
}
