//! The resident CUDA LDA engine: [`ps_apps::lda::LdaResident`] on a device.
//!
//! [`LdaResident::setup`] uploads the worker's document offsets, tokens, topic assignments,
//! document-topic counts and its word list once, and sizes the local word-topic copy
//! (`words x K`), the totals, the move counts and the compaction outputs; all stay on the device
//! until the engine is dropped. Per clock:
//!
//! - each pulled run of word-topic rows (rows `first..first + n` of the read, which is the local
//!   row order) crosses PCIe as its nonzero entries ([`ps_apps::lda::packed`]): the host packs
//!   it (from its entries, as the client caches the rows, so the run is never dense on the
//!   host; or from a dense run) into pinned memory (two buffers taken in turn, so the host
//!   fills one while the other is copied), the run's rows of the local copy are zeroed, and
//!   `lda_scatter_rows` writes the entries in. A run that does not pack smaller (dense rows, or
//!   K over 65,536) is copied dense, at its offset; the totals row likewise. A dense run of a
//!   `q8`, `q4`, `q2` or `sign` pull codec's rows (not whole counts) crosses as its codes
//!   instead where they are fewer bytes ([`ps_apps::lda::pulled_run`]), widened into the rows
//!   in place (`widen::NarrowIn`);
//! - `lda_loglik` and `lda_sum_partials` (`kernels/lda_resident.cu`) measure the state under the
//!   rows read, and 8 bytes come back;
//! - `lda_gibbs_sweep` (`kernels/lda_gibbs.cu`, the uniforms drawn there from Philox) resamples
//!   every token in place, the move counts are packed on the device ([`PackedDelta`]: row ends,
//!   `u16` topics, `i16` changes; above 65,536 topics, [`Compaction`]'s 12-byte triples), and
//!   only their sizes, the packed delta and the totals' change come back.
//!
//! Every copy either way is counted and timed on the device ([`Bus`]), and so are the kernels.
//! Everything runs on the compute stream, in order. [`CudaLdaResident::sequential`] launches
//! the sweep (and the log-likelihood) on one warp: documents and tokens in the oracle's order,
//! for exact checks against [`ps_apps::lda::HostLdaResident`] on [`ps_apps::lda::CpuLda`].

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::app::Traffic;
use ps_apps::lda::packed::rice::{pack_rice_rows, RiceShape};
use ps_apps::lda::packed::{pack_sparse_rows, Packed, Values};
use ps_apps::lda::wire::{Cut, WireDelta};
use ps_apps::lda::{
    check_rows, check_sparse_rows, check_state, documents_print, pulled_run, LdaDelta, LdaHyper,
    LdaResident, LdaWorkerState, PulledRun, SweepKey,
};
use ps_apps::ComputeError;
use ps_proto::SparseRows;

use super::buffers::{upload_once, DevBuf, KernelTimer, Pinned};
use super::bus::Bus;
use super::lda::{narrow, LdaSweepKernel, StateDev};
use super::lda_compact::{Compaction, PackedDelta};
use super::lda_wire::WireEncoder;
use super::lda_word::{LdaSampler, SweepScalars, WordSweep};
use super::widen::NarrowIn;
use super::{failed, Call, Gpu, GpuError};

mod state;
mod sweep;

/// Threads per block of the sweep and the log-likelihood (8 warps, one document each).
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the log-likelihood, and of the sweep when the driver gives no
/// occupancy figure.
const BLOCKS_PER_SM: u32 = 4;
/// Threads of `lda_sum_partials` (its `LDA_SUM_BLOCK`).
const SUM_BLOCK: u32 = 256;

/// What the engine was set up with.
#[derive(Debug, Clone, Copy)]
struct Shape {
    docs: u32,
    topics: u32,
    words: usize,
    tokens: usize,
    alpha: f64,
    beta: f64,
    vbeta: f64,
}

/// Resident LDA on a CUDA device (see the module docs).
pub struct CudaLdaResident {
    gpu: Arc<Gpu>,
    sweep_fn: CudaFunction,
    loglik_fn: CudaFunction,
    sum_fn: CudaFunction,
    scatter_fn: CudaFunction,
    scatter_rice_fn: CudaFunction,
    sequential: bool,
    sweep_blocks_per_sm: u32,
    shape: Option<Shape>,
    dev: StateDev,
    scratch: DevBuf<f64>,
    partial: DevBuf<f64>,
    sum: DevBuf<f64>,
    compaction: Compaction,
    packed_delta: PackedDelta,
    wire: WireEncoder,
    /// The worker's global word ids (local row `i` is word `words[i]`), on the device and here.
    words: DevBuf<u32>,
    host_words: Vec<u32>,
    /// The set-up state's [`documents_print`]: a state to restore must have it.
    documents: u64,
    /// Staging of incoming dense runs, and of packed ones, each pair taken in turn (its own
    /// turn, so that a dense run between two packed ones does not make the second wait).
    staging: [Pinned<f32>; 2],
    packed_staging: [Pinned<u32>; 2],
    next_dense: usize,
    next_packed: usize,
    /// The packed run being built on the host, and its copy on the device.
    image: Vec<u32>,
    d_image: DevBuf<u32>,
    /// Runs that cross as codes (a `q8`, `q4`, `q2` or `sign` pull codec's rows).
    narrow: NarrowIn,
    h_totals_delta: Pinned<i32>,
    h_sum: Pinned<f64>,
    h_state: Pinned<u32>,
    timer: KernelTimer,
    bus: Bus,
    /// The word-major sweep ([`LdaSampler::WordMajor`]) and its scalars (set up), in place of
    /// `lda_gibbs_sweep`.
    word: Option<(WordSweep, Option<SweepScalars>)>,
}

fn not_set_up() -> GpuError {
    GpuError::Input("LDA: the resident engine was used before setup".into())
}

impl CudaLdaResident {
    /// The parallel engine (one warp per document) on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let (sweep_fn, sweep_blocks_per_sm) =
            LdaSweepKernel::default().sweep_fn(&gpu, BLOCK, BLOCKS_PER_SM)?;
        let ctx = &gpu.ctx;
        Ok(CudaLdaResident {
            loglik_fn: gpu.function("lda_resident", "lda_loglik")?,
            sum_fn: gpu.function("lda_resident", "lda_sum_partials")?,
            scatter_fn: gpu.function("lda_resident", "lda_scatter_rows")?,
            scatter_rice_fn: gpu.function("lda_resident", "lda_scatter_rice")?,
            compaction: Compaction::new(&gpu)?,
            packed_delta: PackedDelta::new(&gpu)?,
            wire: WireEncoder::new(&gpu)?,
            words: DevBuf::default(),
            host_words: Vec::new(),
            documents: 0,
            sweep_fn,
            sequential: false,
            sweep_blocks_per_sm,
            shape: None,
            dev: StateDev::default(),
            scratch: DevBuf::default(),
            partial: DevBuf::default(),
            sum: DevBuf::default(),
            staging: [Pinned::new(ctx)?, Pinned::new(ctx)?],
            packed_staging: [Pinned::new(ctx)?, Pinned::new(ctx)?],
            next_dense: 0,
            next_packed: 0,
            image: Vec::new(),
            d_image: DevBuf::default(),
            narrow: NarrowIn::default(),
            h_totals_delta: Pinned::new(ctx)?,
            h_sum: Pinned::new(ctx)?,
            h_state: Pinned::new(ctx)?,
            timer: KernelTimer::new(ctx)?,
            bus: Bus::new(ctx),
            word: None,
            gpu,
        })
    }

    /// The engine with `sampler`'s sweep.
    pub fn with_sampler(gpu: Arc<Gpu>, sampler: LdaSampler) -> Result<Self, GpuError> {
        let mut e = Self::new(gpu)?;
        if let LdaSampler::WordMajor { groups } = sampler {
            e.word = Some((WordSweep::new(&e.gpu, groups)?, None));
        }
        Ok(e)
    }

    /// The one-warp engine (grid 1, block 32): documents and tokens in the oracle's order.
    pub fn sequential(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let mut e = Self::new(gpu)?;
        e.sequential = true;
        Ok(e)
    }

    /// Sweeps with `kernel`; before `setup`, which sizes the scratch rows for the kernel's
    /// launch shape (an error after it).
    pub fn set_sweep_kernel(&mut self, kernel: LdaSweepKernel) -> Result<(), GpuError> {
        if self.shape.is_some() {
            return Err(GpuError::Input(
                "LDA: the sweep kernel is chosen before setup".into(),
            ));
        }
        (self.sweep_fn, self.sweep_blocks_per_sm) =
            kernel.sweep_fn(&self.gpu, BLOCK, BLOCKS_PER_SM)?;
        Ok(())
    }

    /// `(grid, block)` of the kernels over `docs` documents, one warp each.
    fn shape_for(&self, docs: u32, per_sm: u32) -> (u32, u32) {
        if self.sequential {
            (1, 32)
        } else {
            (
                self.gpu.grid_for(u64::from(docs) * 32, BLOCK, per_sm),
                BLOCK,
            )
        }
    }

    fn shape(&self) -> Result<Shape, GpuError> {
        self.shape.ok_or_else(not_set_up)
    }

    /// Copies `data` into `dst` (sized to it), counting the bytes. From pageable memory: a
    /// set-up copies each part of the state once, and pinning it first would lock gigabytes of
    /// host memory at the scale (3e8 document-topic counts alone are 1.2 GB).
    fn upload_u32(
        gpu: &Gpu,
        bus: &mut Bus,
        dst: &mut DevBuf<u32>,
        data: &[u32],
    ) -> Result<(), GpuError> {
        bus.h2d(&gpu.compute, || upload_once(&gpu.compute, dst, data))
    }

    fn start_timer(&self) -> Result<(), GpuError> {
        self.timer.start(&self.gpu.compute)
    }

    fn stop_timer(&mut self) -> Result<(), GpuError> {
        self.timer.stop(&self.gpu.compute, &mut self.bus.traffic)
    }

    fn try_setup(&mut self, state: &LdaWorkerState, hyper: &LdaHyper) -> Result<(), GpuError> {
        check_state(self.name(), state, hyper)?;
        // Until this set-up has finished, the buffers hold no state a call may use (a failed
        // second set-up must not leave the first one's shape over the new buffers).
        self.shape = None;
        let k = state.topics as usize;
        let (n, docs, words) = (state.tokens.len(), state.num_docs(), state.words.len());
        let docs32 = narrow(docs, "number of documents")?;
        narrow(n, "number of tokens")?;
        narrow(words, "number of distinct words")?;
        let offsets: Vec<u32> = state.doc_offsets.iter().map(|&o| o as u32).collect();
        let (gpu, t) = (&self.gpu, &mut self.bus);
        Self::upload_u32(gpu, t, &mut self.dev.offsets, &offsets)?;
        Self::upload_u32(gpu, t, &mut self.dev.tokens, &state.tokens)?;
        Self::upload_u32(gpu, t, &mut self.dev.z, &state.z)?;
        Self::upload_u32(gpu, t, &mut self.dev.doc_topic, &state.doc_topic)?;
        Self::upload_u32(gpu, t, &mut self.words, &state.words)?;
        let stream = &gpu.compute;
        self.dev.word_topic.zero(stream, words * k)?;
        self.dev.totals.zero(stream, k)?;
        self.dev.wt_delta.zero(stream, words * k)?;
        self.dev.totals_delta.zero(stream, k)?;
        self.sum.zero(stream, 1)?;
        let (alpha, beta) = hyper.effective();
        let shape = Shape {
            docs: docs32,
            topics: state.topics,
            words,
            tokens: n,
            alpha,
            beta,
            vbeta: beta * f64::from(state.vocab_size.max(1)),
        };
        // The Gibbs sweep's scratch rows (the word-major sweep has none).
        if self.word.is_none() {
            let (grid, block) = self.shape_for(docs32, self.sweep_blocks_per_sm);
            self.scratch
                .ensure(stream, (grid * block / 32) as usize * k)?;
        }
        let (grid, block) = self.shape_for(docs32, BLOCKS_PER_SM);
        self.partial.ensure(stream, (grid * block / 32) as usize)?;
        if let Some((word, scalars)) = &mut self.word {
            self.bus.h2d(stream, || word.set_up(gpu, state))?;
            *scalars = Some(SweepScalars::of(state, hyper)?);
        }
        stream.synchronize().call("cuStreamSynchronize")?;
        self.bus.settle()?;
        self.host_words = state.words.clone();
        self.documents = documents_print(state);
        self.shape = Some(shape);
        Ok(())
    }

    /// Copies a run of rows (or the totals) into the local copy at row `first`: packed where
    /// that is smaller (see the module docs), else as it is.
    fn try_load(&mut self, first: usize, values: &[f32], totals: bool) -> Result<(), GpuError> {
        let s = self.shape()?;
        let (k, rows) = (s.topics as usize, if totals { 1 } else { s.words });
        check_rows(self.name(), first, values, rows, k)?;
        if values.is_empty() {
            return Ok(());
        }
        if !totals {
            match pulled_run(values, k, &mut self.image) {
                PulledRun::Packed(shape) => return self.load_packed(first, values.len(), shape),
                PulledRun::Codes(codes) => {
                    let at = first * k;
                    let mut view = self
                        .dev
                        .word_topic
                        .get_mut()
                        .slice_mut(at..at + values.len());
                    return self
                        .narrow
                        .levels_into(&self.gpu, &mut self.bus, &codes, &mut view);
                }
                PulledRun::Dense => {}
            }
        }
        self.load_dense(first * k, values, totals)
    }

    /// [`Self::try_load`] of rows that arrived by their entries: packed from them where that
    /// is smaller, else made dense on the host (rows mostly nonzero) and copied as they are.
    fn try_load_sparse(&mut self, first: usize, rows: SparseRows<'_>) -> Result<(), GpuError> {
        let s = self.shape()?;
        let k = s.topics as usize;
        check_sparse_rows(self.name(), first, rows, s.words, k)?;
        if rows.rows() == 0 {
            return Ok(());
        }
        if let Some(shape) = pack_rice_rows(rows, k, &mut self.image) {
            return self.load_rice(first, rows.rows() * k, shape);
        }
        if let Some(shape) = pack_sparse_rows(rows, k, &mut self.image) {
            return self.load_packed(first, rows.rows() * k, shape);
        }
        let dense = rows.to_dense();
        self.load_dense(first * k, &dense, false)
    }

    /// Zeroes `len` values of the word-topic copy from `at` and, when the image in `self.image`
    /// has entries, copies it (`bytes`) to the device through the next pinned staging buffer;
    /// returns whether there is an image to scatter.
    fn stage_image(
        &mut self,
        at: usize,
        len: usize,
        entries: usize,
        bytes: u64,
    ) -> Result<bool, GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        {
            let mut view = self.dev.word_topic.get_mut().slice_mut(at..at + len);
            stream.memset_zeros(&mut view).call("cuMemsetD8Async")?;
        }
        if entries == 0 {
            return Ok(false);
        }
        let stage = &mut self.packed_staging[self.next_packed];
        self.next_packed ^= 1;
        stage.fill(&self.image)?;
        let d_image = &mut self.d_image;
        self.bus.h2d(&stream, || {
            d_image.upload(&stream, stage)?;
            Ok(bytes)
        })?;
        Ok(true)
    }

    /// Loads the Rice rows image in `self.image` (`len` values at row `first`): zeroes those
    /// rows, copies the image and decodes it into them (`lda_scatter_rice`, a thread a row).
    fn load_rice(&mut self, first: usize, len: usize, shape: RiceShape) -> Result<(), GpuError> {
        let at = first * self.shape()?.topics as usize;
        if !self.stage_image(at, len, shape.entries, shape.bytes())? {
            return Ok(());
        }
        let rows = narrow(shape.rows, "rows in a run")?;
        let wide = u32::from(shape.wide_lengths);
        let words = narrow(shape.stream_words, "stream words of a run")?;
        // SAFETY (of the launch): the image holds shape.words() words as pack_rice_rows laid
        // them out (the kernel reads no row past its length or the stream).
        self.scatter(true, at..at + len, u64::from(rows), [rows, wide, words])
    }

    /// Copies `values` as they are to value `at` of the word-topic copy (or of the totals)
    /// through the next pinned staging buffer.
    fn load_dense(&mut self, at: usize, values: &[f32], totals: bool) -> Result<(), GpuError> {
        let stage = &mut self.staging[self.next_dense];
        self.next_dense ^= 1;
        stage.fill(values)?;
        let dst = if totals {
            &mut self.dev.totals
        } else {
            &mut self.dev.word_topic
        };
        let mut view = dst.get_mut().slice_mut(at..at + values.len());
        let stream = &self.gpu.compute;
        self.bus.h2d(stream, || {
            stream
                .memcpy_htod(stage, &mut view)
                .call("cuMemcpyHtoDAsync")?;
            stage.record(stream)?;
            Ok(4 * values.len() as u64)
        })
    }

    /// Loads the packed run in `self.image` (`len` values at row `first`): zeroes those rows,
    /// copies the image and scatters its entries.
    fn load_packed(&mut self, first: usize, len: usize, shape: Packed) -> Result<(), GpuError> {
        let at = first * self.shape()?.topics as usize;
        if !self.stage_image(at, len, shape.entries, shape.bytes())? {
            return Ok(());
        }
        let rows = narrow(shape.rows, "rows in a run")?;
        let entries = narrow(shape.entries, "entries in a run")?;
        let f32_values = u32::from(shape.values == Values::F32);
        // SAFETY (of the launch): the image holds shape.words() words laid out as lda_rows.cuh
        // reads them (pack_rows made it; row ends are clamped to `entries` on the device).
        self.scatter(
            false,
            at..at + len,
            32 * u64::from(rows),
            [rows, entries, f32_values],
        )
    }

    /// Launches `lda_scatter_rice` (`rice`) or `lda_scatter_rows` on `threads` threads: the
    /// staged image, its three sizes, K, and the run's values `cells` of the word-topic copy,
    /// where only topics < K are written. Timed on the bus, read back at the next settle: a
    /// KernelTimer would make the host wait here, and the next run's packing would no longer
    /// overlap this one's copy.
    fn scatter(
        &mut self,
        rice: bool,
        cells: std::ops::Range<usize>,
        threads: u64,
        sizes: [u32; 3],
    ) -> Result<(), GpuError> {
        let k = self.shape()?.topics;
        let stream = Arc::clone(&self.gpu.compute);
        let cfg = LaunchConfig {
            grid_dim: (self.gpu.grid_for(threads, BLOCK, BLOCKS_PER_SM), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (function, name) = match rice {
            true => (&self.scatter_rice_fn, "cuLaunchKernel(lda_scatter_rice)"),
            false => (&self.scatter_fn, "cuLaunchKernel(lda_scatter_rows)"),
        };
        let (word_topic, d_image) = (&mut self.dev.word_topic, &self.d_image);
        self.bus.kernels(&stream, || {
            let mut dst = word_topic.get_mut().slice_mut(cells);
            let mut b = stream.launch_builder(function);
            b.arg(d_image.get());
            for x in &sizes {
                b.arg(x);
            }
            b.arg(&k).arg(&mut dst);
            // SAFETY: d_image is the image the caller staged, with these sizes (see the callers);
            // dst holds the run's rows x K values, and the kernels write only topics < K.
            unsafe { b.launch(cfg) }.call(name)?;
            Ok(())
        })
    }

    fn try_loglik(&mut self) -> Result<(f64, u64), GpuError> {
        let s = self.shape()?;
        if s.tokens == 0 {
            // The rows loaded for it still crossed: their copies' times are read here, as below.
            self.gpu.compute.synchronize().call("cuStreamSynchronize")?;
            self.bus.settle()?;
            return Ok((0.0, 0));
        }
        let (grid, block) = self.shape_for(s.docs, BLOCKS_PER_SM);
        let warps = narrow((grid * block / 32) as usize, "warps")?;
        self.start_timer()?;
        let stream = Arc::clone(&self.gpu.compute);
        {
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (block, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(&self.loglik_fn);
            b.arg(self.dev.offsets.get())
                .arg(&s.docs)
                .arg(self.dev.tokens.get())
                .arg(self.dev.doc_topic.get())
                .arg(self.dev.word_topic.get())
                .arg(self.dev.totals.get())
                .arg(&s.topics)
                .arg(&s.alpha)
                .arg(&s.beta)
                .arg(&s.vbeta)
                .arg(self.partial.get_mut());
            // SAFETY: offsets hold docs + 1 increasing offsets ending at the token count, every
            // token row < words (checked at set-up); doc_topic holds docs x K, word_topic
            // words x K, totals K; partial holds one double per warp of this shape (set-up).
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(lda_loglik)")?;
        }
        {
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (SUM_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(&self.sum_fn);
            b.arg(self.partial.get())
                .arg(&warps)
                .arg(self.sum.get_mut());
            // SAFETY: partial holds `warps` doubles, sum one.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(lda_sum_partials)")?;
        }
        self.stop_timer()?;
        self.bus.d2h(&stream, || {
            self.h_sum.download(&stream, self.sum.get(), 1)?;
            Ok(8)
        })?;
        let sum = self.h_sum.host()?[0];
        self.bus.settle()?;
        Ok((sum, s.tokens as u64))
    }
}

impl LdaResident for CudaLdaResident {
    fn name(&self) -> &'static str {
        if self.sequential {
            "cuda-resident-sequential"
        } else if self.word.is_some() {
            "cuda-resident-word-major"
        } else {
            "cuda-resident"
        }
    }

    fn setup(&mut self, state: &LdaWorkerState, hyper: &LdaHyper) -> Result<(), ComputeError> {
        let r = self.try_setup(state, hyper);
        failed(self.name(), r)
    }

    fn load_rows(&mut self, first: usize, values: &[f32]) -> Result<(), ComputeError> {
        let r = self.try_load(first, values, false);
        failed(self.name(), r)
    }

    fn load_sparse_rows(&mut self, first: usize, rows: SparseRows<'_>) -> Result<(), ComputeError> {
        let r = self.try_load_sparse(first, rows);
        failed(self.name(), r)
    }

    fn load_totals(&mut self, values: &[f32]) -> Result<(), ComputeError> {
        let r = self.try_load(0, values, true);
        failed(self.name(), r)
    }

    fn loglik(&mut self) -> Result<(f64, u64), ComputeError> {
        let r = self.try_loglik();
        failed(self.name(), r)
    }

    fn sweep(&mut self, key: SweepKey) -> Result<LdaDelta, ComputeError> {
        let r = self.try_sweep(key);
        failed(self.name(), r)
    }

    fn sweep_wire(&mut self, key: SweepKey, cut: &mut Cut<'_>) -> Result<WireDelta, ComputeError> {
        let r = self.try_sweep_wire(key, cut);
        failed(self.name(), r)
    }

    fn download_state(&mut self, state: &mut LdaWorkerState) -> Result<(), ComputeError> {
        let r = self.try_download(state);
        failed(self.name(), r)
    }

    fn download_assignments(&mut self, z: &mut [u32]) -> Result<(), ComputeError> {
        let r = self.try_download_assignments(z);
        failed(self.name(), r)
    }

    fn restore_state(&mut self, state: &LdaWorkerState) -> Result<(), ComputeError> {
        let r = self.try_restore(state);
        failed(self.name(), r)
    }

    fn traffic(&self) -> Traffic {
        self.bus.traffic
    }
}
