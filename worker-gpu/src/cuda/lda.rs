//! The CUDA LDA engine: `kernels/lda_gibbs.cu` behind [`LdaCompute`].
//!
//! One sweep copies the worker's state (tokens, topic assignments, document-topic counts), its
//! local word-topic copy and the totals to the device; no uniforms cross PCIe: `lda_gibbs_sweep`
//! draws token `i`'s uniform itself from Philox-4x32-10 (`kernels/philox.cuh`) keyed by the
//! sweep's seed, stream and index ([`SweepKey::philox_stream`], [`SweepKey::philox_index`]), bit
//! for bit the [`SweepKey::uniform`]`(i)` the CPU engines draw. It resamples every token,
//! `lda_compact_delta` turns the dense move counts into `(word, topic, change)` triples, and
//! everything comes back into the caller's slices. Device and pinned buffers are kept across
//! calls; nothing else is (the tokens are uploaded every sweep, since the caller owns them).
//!
//! Parallel mode (the default) runs one warp per document over the whole device: documents are
//! sampled concurrently against the shared word-topic copy and totals (AD-LDA style staleness
//! within the sweep; the atomics keep the counts exact). [`CudaLda::sequential`] launches one warp,
//! which visits documents and tokens in the oracle's order with the oracle's uniforms, so its draws
//! agree with [`ps_apps::lda::CpuLda`] except where a uniform falls within rounding of a boundary
//! of the cumulative sum (the kernel sums in a different order); it exists for checking.
//!
//! The returned delta is the sum of the moves the kernel made (exactly `word_topic_after -
//! word_topic_before` while counts stay below 2^24, as the trait asks).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use ps_apps::lda::{check_dims, LdaCompute, LdaDelta, LdaHyper, LdaWorkerState, SweepKey};

use super::buffers::{DevBuf, Pinned};
use super::bus::Bus;
use super::lda_compact::Compaction;
use super::{failed, Call, Gpu, GpuError};
use ps_apps::ComputeError;

/// Threads per block in parallel mode (8 warps, one document each at a time).
const BLOCK: u32 = 256;

/// Blocks per multiprocessor of the sweep when the driver gives no occupancy figure.
const BLOCKS_PER_SM: u32 = 4;

/// The scalar arguments of one sweep launch.
#[derive(Debug, Clone, Copy)]
struct Launch {
    docs: u32,
    topics: u32,
    words: u32,
    /// Tokens visited by the sweep (an upper bound on the moves).
    visited: usize,
    alpha: f64,
    beta: f64,
    vbeta: f64,
    /// The sweep's Philox key, stream and first index (the kernel draws the uniforms).
    key: SweepKey,
}

/// A worker's LDA state on the device and a sweep's move counts: the buffers every sweep
/// (`lda_gibbs_sweep`'s, and the word-major one's) reads and moves, held by each engine.
#[derive(Default)]
pub(crate) struct StateDev {
    pub offsets: DevBuf<u32>,
    pub tokens: DevBuf<u32>,
    pub z: DevBuf<u32>,
    pub doc_topic: DevBuf<u32>,
    pub word_topic: DevBuf<f32>,
    pub totals: DevBuf<f32>,
    pub wt_delta: DevBuf<i32>,
    pub totals_delta: DevBuf<i32>,
}

/// Which draw the sweep kernel makes (`kernels/lda_gibbs.cu`). `Scratch` forms each token's
/// cumulative sums in the warp's scratch row in memory (any K); `ChunkEnds` keeps only the end of
/// each chunk of 32 topics in a register and forms the chosen chunk's sums again (where K <=
/// 1,024; the scratch row above that). With one warp both give the oracle's topics. `Scratch`
/// is the default until a GPU run shows which is faster (gpu-bench times both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LdaSweepKernel {
    #[default]
    Scratch,
    ChunkEnds,
}

impl LdaSweepKernel {
    /// Both kinds, for benchmarks and conformance.
    pub const ALL: [LdaSweepKernel; 2] = [LdaSweepKernel::Scratch, LdaSweepKernel::ChunkEnds];

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            LdaSweepKernel::Scratch => "scratch",
            LdaSweepKernel::ChunkEnds => "chunk-ends",
        }
    }

    fn sample_entry(self) -> &'static str {
        match self {
            LdaSweepKernel::Scratch => "lda_gibbs_sample_token",
            LdaSweepKernel::ChunkEnds => "lda_gibbs_sample_token_ends",
        }
    }

    /// The sweep's kernel on `gpu`, and how many of its blocks of `block` threads an SM holds
    /// (`fallback` where the driver says none).
    pub(crate) fn sweep_fn(
        self,
        gpu: &Gpu,
        block: u32,
        fallback: u32,
    ) -> Result<(CudaFunction, u32), GpuError> {
        let entry = match self {
            LdaSweepKernel::Scratch => "lda_gibbs_sweep",
            LdaSweepKernel::ChunkEnds => "lda_gibbs_sweep_ends",
        };
        let f = gpu.function("lda_gibbs", entry)?;
        gpu.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(block, 0, None)
            .call("cuOccupancyMaxActiveBlocksPerMultiprocessor(lda gibbs sweep)")?;
        Ok((f, if per_sm == 0 { fallback } else { per_sm }))
    }
}

/// Collapsed Gibbs sampling for LDA on a CUDA device.
pub struct CudaLda {
    gpu: Arc<Gpu>,
    sweep_fn: CudaFunction,
    sample_fn: CudaFunction,
    sequential: bool,
    /// Blocks of the sweep resident per multiprocessor (the driver's occupancy figure): the
    /// parallel grid fills the device with resident warps and no second wave.
    sweep_blocks_per_sm: u32,
    /// The launch of the last [`CudaLda::bench_load`].
    loaded: Option<Launch>,
    /// The delta's compaction on the device (shared with the resident engine).
    compaction: Compaction,
    /// What the compaction's copies moved (this engine reports no traffic).
    bus: Bus,
    // Device buffers.
    dev: StateDev,
    d_scratch: DevBuf<f64>,
    d_words: DevBuf<u32>,
    // Pinned staging buffers (the state ones serve both directions).
    h_offsets: Pinned<u32>,
    h_tokens: Pinned<u32>,
    h_z: Pinned<u32>,
    h_doc_topic: Pinned<u32>,
    h_word_topic: Pinned<f32>,
    h_totals: Pinned<f32>,
    h_words: Pinned<u32>,
    h_totals_delta: Pinned<i32>,
}

/// `x` as the kernel's `unsigned int`, or a typed error naming `what`.
pub(super) fn narrow(x: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(x).map_err(|_| {
        GpuError::Input(format!(
            "LDA: {what} {x} exceeds the kernel's 32-bit indices"
        ))
    })
}

/// Enqueues `lda_gibbs_sweep` (or its chunk-ends form: `sweep` is the kernel with its grid and
/// block) over the state `b` of `docs` documents and `topics` topics on `stream`, with the
/// priors `(alpha, beta, V * beta)` and the uniforms of `key`: the launch of both CUDA LDA
/// engines. `scratch` holds K doubles per warp of the grid.
pub(super) fn launch_gibbs(
    stream: &Arc<CudaStream>,
    sweep: (&CudaFunction, u32, u32),
    b: &mut StateDev,
    scratch: &mut DevBuf<f64>,
    (docs, topics): (u32, u32),
    (alpha, beta, vbeta): (f64, f64, f64),
    key: SweepKey,
) -> Result<(), GpuError> {
    let (f, grid, block) = sweep;
    let (seed_lo, seed_hi) = (key.seed as u32, (key.seed >> 32) as u32);
    let (philox_stream, first_index) = (key.philox_stream(), key.philox_index(0));
    let cfg = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = stream.launch_builder(f);
    l.arg(b.offsets.get())
        .arg(&docs)
        .arg(b.tokens.get())
        .arg(b.z.get_mut())
        .arg(b.doc_topic.get_mut())
        .arg(b.word_topic.get_mut())
        .arg(b.totals.get_mut())
        .arg(&seed_lo)
        .arg(&seed_hi)
        .arg(&philox_stream)
        .arg(&first_index)
        .arg(scratch.get_mut())
        .arg(b.wt_delta.get_mut())
        .arg(b.totals_delta.get_mut())
        .arg(&topics)
        .arg(&alpha)
        .arg(&beta)
        .arg(&vbeta);
    // SAFETY: the callers' state: doc_offsets holds docs + 1 offsets, each <= the number of
    // tokens; tokens and z hold one entry per token, every token row < words and every topic
    // < K (checked when loaded); doc_topic holds docs x K, word_topic and wt_delta words x K,
    // totals and totals_delta K entries; scratch holds (grid * block / 32) x K doubles.
    unsafe { l.launch(cfg) }.call("cuLaunchKernel(lda gibbs sweep)")?;
    Ok(())
}

/// The word row and topic of token `pos` of document `doc`, for `sample_token`, panicking on
/// an index out of range as the CPU engines would (caller bugs).
pub(super) fn token_at(state: &LdaWorkerState, doc: usize, pos: usize) -> (usize, u32) {
    assert!(doc < state.num_docs(), "sample_token: doc out of range");
    let i = state.doc_offsets[doc] + pos;
    assert!(
        i < state.doc_offsets[doc + 1],
        "sample_token: pos out of range"
    );
    let w = state.tokens[i] as usize;
    assert!(
        w < state.words.len(),
        "sample_token: token row out of range"
    );
    let old = state.z[i];
    assert!(old < state.topics, "sample_token: topic out of range");
    (w, old)
}

/// `(alpha, beta, V * beta)` exactly as the CPU engines compute them.
fn priors(state: &LdaWorkerState, hyper: &LdaHyper) -> (f64, f64, f64) {
    let (alpha, beta) = hyper.effective();
    (alpha, beta, beta * f64::from(state.vocab_size.max(1)))
}

impl CudaLda {
    /// The parallel engine (one warp per document) on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let ctx = &gpu.ctx;
        let kernel = LdaSweepKernel::default();
        let (sweep_fn, sweep_blocks_per_sm) = kernel.sweep_fn(&gpu, BLOCK, BLOCKS_PER_SM)?;
        Ok(CudaLda {
            sweep_fn,
            sample_fn: gpu.function("lda_gibbs", kernel.sample_entry())?,
            sequential: false,
            sweep_blocks_per_sm,
            compaction: Compaction::new(&gpu)?,
            bus: Bus::new(&gpu.ctx),
            loaded: None,
            dev: StateDev::default(),
            d_scratch: DevBuf::default(),
            d_words: DevBuf::default(),
            h_offsets: Pinned::new(ctx)?,
            h_tokens: Pinned::new(ctx)?,
            h_z: Pinned::new(ctx)?,
            h_doc_topic: Pinned::new(ctx)?,
            h_word_topic: Pinned::new(ctx)?,
            h_totals: Pinned::new(ctx)?,
            h_words: Pinned::new(ctx)?,
            h_totals_delta: Pinned::new(ctx)?,
            gpu,
        })
    }

    /// The one-warp engine (grid 1, block 32): documents and tokens in the oracle's order.
    pub fn sequential(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let mut e = Self::new(gpu)?;
        e.sequential = true;
        Ok(e)
    }

    /// Draws with `kernel` from now on (sweeps and `sample_token`).
    pub fn set_sweep_kernel(&mut self, kernel: LdaSweepKernel) -> Result<(), GpuError> {
        (self.sweep_fn, self.sweep_blocks_per_sm) =
            kernel.sweep_fn(&self.gpu, BLOCK, BLOCKS_PER_SM)?;
        self.sample_fn = self.gpu.function("lda_gibbs", kernel.sample_entry())?;
        Ok(())
    }

    /// `(grid, block)` of the sweep over `docs` documents.
    fn sweep_shape(&self, docs: u32) -> (u32, u32) {
        if self.sequential {
            (1, 32)
        } else {
            (
                self.gpu
                    .grid_for(u64::from(docs) * 32, BLOCK, self.sweep_blocks_per_sm),
                BLOCK,
            )
        }
    }

    /// Checks the state (panicking on caller bugs, as the CPU engines would when indexing) and
    /// returns the number of tokens a sweep visits.
    pub(super) fn validate(
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
    ) -> Result<usize, GpuError> {
        check_dims(state, word_topic, totals, hyper);
        let k = state.topics as usize;
        let n = state.tokens.len();
        let docs = state.num_docs();
        assert_eq!(state.z.len(), n, "LDA: z must have one topic per token");
        assert_eq!(
            state.doc_topic.len(),
            docs * k,
            "LDA: doc_topic must be num_docs x K"
        );
        narrow(docs, "number of documents")?;
        narrow(state.words.len(), "number of distinct words")?;
        narrow(n, "number of tokens")?;
        let mut visited = 0usize;
        for w in state.doc_offsets.windows(2) {
            assert!(
                w[0] <= n && w[1] <= n,
                "LDA: doc_offsets entry beyond the {n} tokens"
            );
            visited += w[1].saturating_sub(w[0]);
        }
        Ok(visited)
    }

    /// Stages the (validated) state, starts the uploads and zeroes the move counts. Returns the
    /// launch's scalars, the key's Philox seed, stream and first index among them (the kernel
    /// draws the uniforms). A token row or topic out of range is an input error (the kernel
    /// would read past its tables).
    fn load(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<Launch, GpuError> {
        let visited = Self::validate(state, word_topic, totals, hyper)?;
        if let Some(why) = state.index_out_of_range() {
            return Err(GpuError::Input(format!("LDA: {why}")));
        }
        let k = state.topics as usize;
        let docs = state.num_docs();
        let docs_u32 = narrow(docs, "number of documents")?;
        let words_u32 = narrow(state.words.len(), "number of distinct words")?;
        {
            let off = self.h_offsets.host_mut(state.doc_offsets.len())?;
            for (o, &x) in off.iter_mut().zip(&state.doc_offsets) {
                *o = narrow(x, "token offset")?;
            }
        }
        self.h_tokens.fill(&state.tokens)?;
        // The large read-only inputs go on the copy stream (overlapping the host's staging of
        // the rest), the others on the compute stream.
        let (copy, compute) = (&self.gpu.copy, &self.gpu.compute);
        self.dev.tokens.upload(copy, &self.h_tokens)?;
        self.h_z.fill(&state.z)?;
        self.dev.z.upload(compute, &self.h_z)?;
        self.dev.offsets.upload(compute, &self.h_offsets)?;
        self.h_doc_topic.fill(&state.doc_topic)?;
        self.dev.doc_topic.upload(compute, &self.h_doc_topic)?;
        self.h_word_topic.fill(word_topic)?;
        self.dev.word_topic.upload(compute, &self.h_word_topic)?;
        self.h_totals.fill(totals)?;
        self.dev.totals.upload(compute, &self.h_totals)?;
        self.h_words.fill(&state.words)?;
        self.d_words.upload(copy, &self.h_words)?;
        self.dev.wt_delta.zero(compute, state.words.len() * k)?;
        self.dev.totals_delta.zero(compute, k)?;

        let (alpha, beta, vbeta) = priors(state, hyper);
        Ok(Launch {
            docs: docs_u32,
            topics: state.topics,
            words: words_u32,
            visited,
            alpha,
            beta,
            vbeta,
            key,
        })
    }

    /// Enqueues `lda_gibbs_sweep` on the device-resident buffers (compute stream).
    fn launch_sweep(&mut self, p: &Launch, grid: u32, block: u32) -> Result<(), GpuError> {
        let warps = grid as usize * block as usize / 32;
        self.d_scratch
            .ensure(&self.gpu.compute, warps * p.topics as usize)?;
        let priors = (p.alpha, p.beta, p.vbeta);
        let sweep = (&self.sweep_fn, grid, block);
        launch_gibbs(
            &self.gpu.compute,
            sweep,
            &mut self.dev,
            &mut self.d_scratch,
            (p.docs, p.topics),
            priors,
            p.key,
        )
    }

    fn try_sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, GpuError> {
        if Self::validate(state, word_topic, totals, hyper)? == 0 {
            // Nothing to sample (the oracle draws nothing either).
            return Ok(LdaDelta {
                topics: state.topics,
                entries: Vec::new(),
                totals: vec![0; state.topics as usize],
            });
        }
        // The buffers are about to change: a later bench_kernel_only needs a new bench_load.
        self.loaded = None;
        let p = self.load(state, word_topic, totals, hyper, key)?;
        let k = p.topics as usize;
        let (grid, block) = self.sweep_shape(p.docs);
        self.launch_sweep(&p, grid, block)?;

        let compute = &self.gpu.compute;
        let n = state.tokens.len();
        self.h_z.download(compute, self.dev.z.get(), n)?;
        self.h_doc_topic
            .download(compute, self.dev.doc_topic.get(), state.doc_topic.len())?;
        self.h_word_topic
            .download(compute, self.dev.word_topic.get(), word_topic.len())?;
        self.h_totals.download(compute, self.dev.totals.get(), k)?;
        self.h_totals_delta
            .download(compute, self.dev.totals_delta.get(), k)?;
        let entries = self.compaction.run(
            &self.gpu,
            &mut self.bus,
            None,
            &self.dev.wt_delta,
            (&self.d_words, p.words),
            p.topics,
            p.visited,
        )?;

        state.z.copy_from_slice(self.h_z.host()?);
        state.doc_topic.copy_from_slice(self.h_doc_topic.host()?);
        word_topic.copy_from_slice(self.h_word_topic.host()?);
        totals.copy_from_slice(self.h_totals.host()?);
        Ok(LdaDelta {
            topics: state.topics,
            entries,
            totals: self.h_totals_delta.host()?.to_vec(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn try_sample_token(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        doc: usize,
        pos: usize,
        u: f64,
    ) -> Result<u32, GpuError> {
        check_dims(state, word_topic, totals, hyper);
        let k = state.topics as usize;
        let (w, old) = token_at(state, doc, pos);

        self.loaded = None;
        // Copies of the token's document row, word row and totals on the device: the kernel
        // removes the token's own counts and draws with the caller's `u` exactly as a sweep does
        // (the same device function), on the copies (nothing of the caller changes).
        self.h_doc_topic
            .fill(&state.doc_topic[doc * k..(doc + 1) * k])?;
        self.h_word_topic.fill(&word_topic[w * k..(w + 1) * k])?;
        self.h_totals.fill(totals)?;
        let compute = &self.gpu.compute;
        self.dev.doc_topic.upload(compute, &self.h_doc_topic)?;
        self.dev.word_topic.upload(compute, &self.h_word_topic)?;
        self.dev.totals.upload(compute, &self.h_totals)?;
        self.d_scratch.ensure(compute, k)?;
        self.dev.z.ensure(compute, 1)?;
        let (alpha, beta, vbeta) = priors(state, hyper);
        let topics = state.topics;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = compute.launch_builder(&self.sample_fn);
        b.arg(self.dev.doc_topic.get_mut())
            .arg(self.dev.word_topic.get_mut())
            .arg(self.dev.totals.get_mut())
            .arg(&old)
            .arg(&u)
            .arg(self.d_scratch.get_mut())
            .arg(self.dev.z.get_mut())
            .arg(&topics)
            .arg(&alpha)
            .arg(&beta)
            .arg(&vbeta);
        // SAFETY: the document row, word row and totals hold K entries each (uploaded above),
        // old < K (checked), scratch holds at least K doubles and z at least one entry.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(lda gibbs sample token)")?;
        self.h_z.download(compute, self.dev.z.get(), 1)?;
        Ok(self.h_z.host()?[0])
    }

    /// For benchmarks: checks and uploads a sweep's inputs (as [`LdaCompute::sweep`] does) and
    /// keeps them on the device for [`CudaLda::bench_kernel_only`].
    pub fn bench_load(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<(), GpuError> {
        if Self::validate(state, word_topic, totals, hyper)? == 0 {
            return Err(GpuError::Input(
                "CudaLda::bench_load: no token to sample".into(),
            ));
        }
        self.loaded = None;
        let p = self.load(state, word_topic, totals, hyper, key)?;
        self.loaded = Some(p);
        self.gpu.synchronize()
    }

    /// For benchmarks: enqueues one `lda_gibbs_sweep` on the compute stream over the buffers of
    /// the last [`CudaLda::bench_load`], with no copy (each call sweeps the device-resident state
    /// again with the same key, hence the same uniforms; the counts stay consistent).
    pub fn bench_kernel_only(&mut self) -> Result<(), GpuError> {
        let p = self.loaded.ok_or_else(|| {
            GpuError::Input("CudaLda::bench_kernel_only needs bench_load first".into())
        })?;
        let (grid, block) = self.sweep_shape(p.docs);
        self.launch_sweep(&p, grid, block)
    }

    /// The `(grid, block)` a sweep over `docs` documents is launched with.
    pub fn launch_shape(&self, docs: usize) -> (u32, u32) {
        self.sweep_shape(u32::try_from(docs).unwrap_or(u32::MAX))
    }
}

impl LdaCompute for CudaLda {
    fn sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, ComputeError> {
        let r = self.try_sweep(state, word_topic, totals, hyper, key);
        failed("cuda-lda", r)
    }

    fn sample_token(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        doc: usize,
        pos: usize,
        u: f64,
    ) -> Result<u32, ComputeError> {
        let r = self.try_sample_token(state, word_topic, totals, hyper, doc, pos, u);
        failed("cuda-lda", r)
    }

    fn name(&self) -> &'static str {
        if self.sequential {
            "cuda-sequential"
        } else {
            "cuda"
        }
    }
}
