//! The resident CUDA MLP engine: [`ps_apps::mlp::MlpResident`] on a device.
//!
//! [`MlpResident::setup`] uploads the worker's training samples and labels and its held-out
//! share once; they stay on the device until the engine is dropped. Per clock:
//!
//! - the loads of the read model write a pinned host mirror of it; before the model is used
//!   the mirror goes to the device in one copy (the parameters in), in 16 bits where every row
//!   was loaded since the last use and every value was an f16 value, or every one a bf16 value
//!   (module `read`); the seeded initial model of clock 0 is made on the device instead
//!   (`mlp_init_glorot`) and does not cross;
//! - the clock's sample order is made on the device from the visit's key (`mlp_visit_order`,
//!   `kernels/visit.cuh`, [`ps_apps::visit::Visit`]); only a caller of `run_clock` with an
//!   order of its own sends it, as u32 indices;
//! - the read model is copied on the device into the local model, and every mini-batch runs
//!   back to back on the compute stream: its inputs and labels gathered from the resident set
//!   (`mlp_gather_batch`), the forward and backward kernels of [`CudaMlp`] on the local model
//!   (`kernels/mlp.cu`), and the SGD step `p -= lr * g` (`mlp_sgd_step`); the batches' loss and
//!   correct totals accumulate on the device and come back once (16 bytes);
//! - the delta `(local - read) * scale` is formed by `mlp_delta` and only it comes back;
//!   or, when the push codec is one the device runs ([`MlpResident::delta_encoded`],
//!   `ps_apps::app::device_codec::device_chain`), each block of the worker library's push plan
//!   is compressed on the device by an encoder that keeps the block's residual there: a
//!   `DeviceTopK` (one top-k, in any value format) selects the k, codes their indices and
//!   encodes their values on the device, and sends back the indices' measure and codes and the
//!   values' bytes; the host writes the opening of the payload's index part
//!   (`DeviceTopK::push_encoded_view`, which leaves a dense layout to the host); a
//!   `DeviceDense` (no selection; f16,
//!   bf16, q8, q4, q2 or sign) makes the whole payload on the device and only it comes back.
//!   The residual is added to the whole read model whenever it is uploaded again (so a read
//!   must then load every row: [`ReadCoverage`]), and handed back with the next plain delta
//!   (the job's last clock). A plan's blocks must cover the model once (`check_tiling`).
//!   Payloads equal the host encoder's for finite values; a NaN's payload bits are not kept by
//!   the device's additions (they give the canonical NaN), so its bytes may differ.
//!
//! Evaluation runs the read model over the resident held-out set in chunks, on the device.
//! Every byte copied either way is counted ([`Traffic`]), with the kernels' time from CUDA
//! events. Everything runs on the compute stream, in order.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::app::device_codec::{DeltaBlock, DeviceChain};
use ps_apps::mlp::{check_setup, Arch, BatchStats, Dataset, MlpResident, ReadCoverage, Traffic};
use ps_apps::visit::Visit;
use ps_apps::ComputeError;

use super::buffers::{upload_once, DevBuf, KernelTimer, Pinned};
use super::bus::Bus;
use super::mlp::{CudaMlp, MlpGemm, DEFAULT_CHUNK};
use super::{failed, Call, Gpu, GpuError};

mod encode;
mod read;

/// Threads per block of the element-wise kernels.
const BLOCK: u32 = 256;
/// Blocks per multiprocessor for the grid-stride kernels.
const BLOCKS_PER_SM: u32 = 8;

const NAME: &str = "cuda-resident";

/// A resident sample set.
#[derive(Default)]
struct DevSet {
    x: DevBuf<f32>,
    y: DevBuf<u8>,
    n: usize,
}

/// Resident MLP on a CUDA device (see the module docs).
pub struct CudaMlpResident {
    gpu: Arc<Gpu>,
    mlp: CudaMlp,
    gather_fn: CudaFunction,
    visit_fn: CudaFunction,
    sgd_fn: CudaFunction,
    delta_fn: CudaFunction,
    init_fn: CudaFunction,
    arch: Option<Arch>,
    /// Each layer's offset in the flat model, and the total last.
    offsets: Vec<usize>,
    train: DevSet,
    test: DevSet,
    /// The read model, flat, and its host mirror (loads write the mirror; `dirty` until it is
    /// copied to the device).
    read: DevBuf<f32>,
    read_host: Pinned<f32>,
    dirty: bool,
    /// The read model in 16 bits (f16, else bf16), while every load since its last use fits.
    halves: read::Halves,
    /// The local model, per layer: swapped into the [`CudaMlp`]'s parameter slots for a clock.
    local: Vec<DevBuf<f32>>,
    order: DevBuf<u32>,
    order_host: Pinned<u32>,
    delta: DevBuf<f32>,
    delta_host: Pinned<f32>,
    /// The engine's own push encoding ([`MlpResident::delta_encoded`]): one compressor per
    /// block of the last plan, each keeping its block's residual on the device.
    encoders: Vec<(DeltaBlock, encode::BlockEncoder)>,
    /// The rows loaded since the read model was last used: while the encoders keep a residual
    /// (added to the whole read model in `sync_read`), a read must load every row.
    coverage: ReadCoverage,
    timer: KernelTimer,
    bus: Bus,
}

fn input(m: String) -> GpuError {
    GpuError::Input(format!("mlp resident: {m}"))
}

fn to_u32(n: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| input(format!("{what} ({n}) does not fit the kernel's u32")))
}

/// Copies the layers of the flat model `read` (layer `l` at `offsets[l]..offsets[l + 1]`) into
/// `dst`, one buffer per layer, on `stream`.
fn copy_layers(
    stream: &Arc<cudarc::driver::CudaStream>,
    read: &DevBuf<f32>,
    offsets: &[usize],
    dst: &mut [DevBuf<f32>],
) -> Result<(), GpuError> {
    for (l, d) in dst
        .iter_mut()
        .enumerate()
        .take(offsets.len().saturating_sub(1))
    {
        let (lo, hi) = (offsets[l], offsets[l + 1]);
        if hi == lo {
            continue;
        }
        let src = read.get().slice(lo..hi);
        d.ensure(stream, hi - lo)?;
        let mut to = d.get_mut().slice_mut(0..hi - lo);
        stream
            .memcpy_dtod(&src, &mut to)
            .call("cuMemcpyDtoDAsync")?;
    }
    Ok(())
}

impl CudaMlpResident {
    /// The engine on `gpu`, its products by the library `PS_MLP_GEMM` names ([`CudaMlp::new`]).
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let mlp = CudaMlp::new(Arc::clone(&gpu))?;
        Self::around(gpu, mlp)
    }

    /// The engine on `gpu`, its products by `gemm`.
    pub fn with_gemm(gpu: Arc<Gpu>, gemm: MlpGemm) -> Result<Self, GpuError> {
        let mlp = CudaMlp::with_gemm(Arc::clone(&gpu), DEFAULT_CHUNK, gemm)?;
        Self::around(gpu, mlp)
    }

    fn around(gpu: Arc<Gpu>, mlp: CudaMlp) -> Result<Self, GpuError> {
        let timer = KernelTimer::new(&gpu.ctx)?;
        Ok(CudaMlpResident {
            mlp,
            gather_fn: gpu.function("mlp_resident", "mlp_gather_batch")?,
            visit_fn: gpu.function("mlp_resident", "mlp_visit_order")?,
            sgd_fn: gpu.function("mlp_resident", "mlp_sgd_step")?,
            delta_fn: gpu.function("mlp_resident", "mlp_delta")?,
            init_fn: gpu.function("mlp_resident", "mlp_init_glorot")?,
            arch: None,
            offsets: Vec::new(),
            train: DevSet::default(),
            test: DevSet::default(),
            read: DevBuf::default(),
            read_host: Pinned::new(&gpu.ctx)?,
            dirty: false,
            halves: read::Halves::default(),
            local: Vec::new(),
            order: DevBuf::default(),
            order_host: Pinned::new(&gpu.ctx)?,
            delta: DevBuf::default(),
            delta_host: Pinned::new(&gpu.ctx)?,
            encoders: Vec::new(),
            coverage: ReadCoverage::default(),
            timer,
            bus: Bus::new(&gpu.ctx),
            gpu,
        })
    }

    fn arch(&self) -> Result<Arch, GpuError> {
        self.arch
            .clone()
            .ok_or_else(|| input("setup was not called".into()))
    }

    fn cfg(&self, n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.gpu.grid_for(n as u64, BLOCK, BLOCKS_PER_SM), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn try_setup(&mut self, arch: &Arch, train: &Dataset, test: &Dataset) -> Result<(), GpuError> {
        // No model until set-up succeeds: a failed one leaves an engine that refuses every call.
        self.arch = None;
        (self.train.n, self.test.n) = (0, 0);
        check_setup(arch, train, test).map_err(input)?;
        to_u32(train.n, "training samples")?;
        to_u32(test.n, "held-out samples")?;
        to_u32(arch.input, "input width")?;
        let compute = &self.gpu.compute;
        self.bus.h2d(compute, || {
            Ok(upload_once(compute, &mut self.train.x, &train.x)?
                + upload_once(compute, &mut self.train.y, &train.y)?
                + upload_once(compute, &mut self.test.x, &test.x)?
                + upload_once(compute, &mut self.test.y, &test.y)?)
        })?;
        // upload_once waited for its copies.
        self.bus.settle()?;
        self.train.n = train.n;
        self.test.n = test.n;
        let total = arch.num_params();
        self.offsets = arch.flat_offsets();
        self.read_host.host_mut(total)?.fill(0.0);
        self.read.ensure(&self.gpu.compute, total)?;
        self.delta.ensure(&self.gpu.compute, total)?;
        self.local = arch
            .layers()
            .iter()
            .map(|s| {
                let mut b = DevBuf::default();
                b.ensure(&self.gpu.compute, s.len())?;
                Ok(b)
            })
            .collect::<Result<_, GpuError>>()?;
        self.dirty = true;
        self.halves.reset();
        self.encoders.clear();
        self.coverage = ReadCoverage::new(arch);
        self.arch = Some(arch.clone());
        Ok(())
    }

    /// Adds the time since the timer started to the compute seconds.
    fn time_kernels(&mut self) -> Result<(), GpuError> {
        self.timer.stop(&self.gpu.compute, &mut self.bus.traffic)
    }

    /// Gathers batch rows `first..first + rows` (of the clock's order when `from_train`, else
    /// of the held-out set) into the engine's input slot and labels.
    fn gather(&mut self, from_train: bool, first: usize, rows: usize) -> Result<(), GpuError> {
        let d = self.arch()?.input;
        let (first32, rows32, d32) = (
            to_u32(first, "first sample")?,
            to_u32(rows, "rows")?,
            to_u32(d, "input width")?,
        );
        let cfg = self.cfg(rows * d);
        let set = if from_train { &self.train } else { &self.test };
        let null: u64 = 0;
        let slots = self.mlp.slots();
        let mut b = self.gpu.compute.launch_builder(&self.gather_fn);
        b.arg(set.x.get()).arg(set.y.get());
        if from_train {
            b.arg(self.order.get());
        } else {
            b.arg(&null);
        }
        b.arg(&first32)
            .arg(&rows32)
            .arg(&d32)
            .arg(slots.x.get_mut())
            .arg(slots.y.get_mut());
        // SAFETY: the set holds n x d features and n labels; every sample index is below n (the
        // order was checked on the host, a held-out range is within n by construction); the
        // input slot and labels hold at least rows x d and rows (CudaMlp::size_for).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_gather_batch)")?;
        Ok(())
    }

    /// One SGD step on every layer of the model in the parameter slots.
    fn sgd_step(&mut self, arch: &Arch, lr: f32) -> Result<(), GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        let cfgs: Vec<(usize, LaunchConfig)> = arch
            .layers()
            .iter()
            .map(|s| (s.len(), self.cfg(s.len())))
            .collect();
        let slots = self.mlp.slots();
        for (l, (n, cfg)) in cfgs.into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            let n64 = n as u64;
            let mut p = slots.params[l].get_mut().slice_mut(0..n);
            let g = slots.grads[l].get().slice(0..n);
            let mut b = stream.launch_builder(&self.sgd_fn);
            b.arg(&mut p).arg(&g).arg(&lr).arg(&n64);
            // SAFETY: both views hold the layer's n parameters.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_sgd_step)")?;
        }
        Ok(())
    }

    /// The clock's mini-batches on the model in the parameter slots: gather, forward, backward,
    /// SGD step, back to back on the compute stream.
    fn batches(&mut self, arch: &Arch, len: usize, batch: usize, lr: f32) -> Result<(), GpuError> {
        for first in (0..len).step_by(batch) {
            let rows = batch.min(len - first);
            self.gather(true, first, rows)?;
            self.mlp.chunk_kernels(arch, rows, true)?;
            self.sgd_step(arch, lr)?;
        }
        Ok(())
    }

    /// Exchanges the local model with the [`CudaMlp`]'s parameter slots.
    fn swap_local(&mut self) {
        let slots = self.mlp.slots();
        for (a, b) in slots.params.iter_mut().zip(self.local.iter_mut()) {
            std::mem::swap(a, b);
        }
    }

    fn try_run_clock(
        &mut self,
        order: &[usize],
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, GpuError> {
        let n = self.train.n;
        let idx = order
            .iter()
            .map(|&i| {
                if i < n {
                    Ok(i as u32)
                } else {
                    Err(input(format!("sample {i} of {n} training samples")))
                }
            })
            .collect::<Result<Vec<u32>, _>>()?;
        self.start_clock()?;
        if idx.is_empty() {
            return Ok(BatchStats::default());
        }
        self.order_host.fill(&idx)?;
        self.bus.h2d(&self.gpu.compute, || {
            self.order.upload(&self.gpu.compute, &self.order_host)?;
            Ok(4 * idx.len() as u64)
        })?;
        self.run_ordered(idx.len(), batch, lr)
    }

    /// A clock whose order the device makes itself (`mlp_visit_order`): only the visit's key
    /// and range cross PCIe, as kernel arguments.
    fn try_run_visit(
        &mut self,
        visit: &Visit,
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, GpuError> {
        visit.check(self.train.n).map_err(input)?;
        self.start_clock()?;
        let count = visit.count as usize;
        if count == 0 {
            return Ok(BatchStats::default());
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.order.ensure(&stream, count)?;
        let [k0, k1, k2, k3] = visit.keys;
        let cfg = self.cfg(count);
        self.timer.start(&stream)?;
        let mut b = stream.launch_builder(&self.visit_fn);
        b.arg(&k0)
            .arg(&k1)
            .arg(&k2)
            .arg(&k3)
            .arg(&visit.n)
            .arg(&visit.from)
            .arg(&visit.count)
            .arg(self.order.get_mut());
        // SAFETY: the order buffer holds `count` words; mlp_visit_order(unsigned int x 7,
        // unsigned int*) writes order[0..count), each a position's sample below n.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_visit_order)")?;
        self.time_kernels()?;
        self.run_ordered(count, batch, lr)
    }

    /// The read model into the local one, once any loads are on the device.
    fn start_clock(&mut self) -> Result<(), GpuError> {
        self.sync_read()?;
        copy_layers(
            &self.gpu.compute,
            &self.read,
            &self.offsets,
            &mut self.local,
        )
    }

    /// The clock's mini-batches over the first `count` samples of the device's order.
    fn run_ordered(&mut self, count: usize, batch: usize, lr: f32) -> Result<BatchStats, GpuError> {
        let arch = self.arch()?;
        let batch = batch.clamp(1, count);
        // Sized first (sizing may reallocate the parameter slots, which hold the local model
        // only between the swaps below).
        self.mlp.size_for(&arch, batch, true)?;
        self.timer.start(&self.gpu.compute)?;
        self.swap_local();
        let run = self.batches(&arch, count, batch, lr);
        self.swap_local();
        run?;
        self.time_kernels()?;
        self.totals(count)
    }

    fn try_delta(&mut self, scale: f32, out: &mut [Vec<f32>]) -> Result<(), GpuError> {
        let arch = self.arch()?;
        let shapes = arch.layers();
        if out.len() != shapes.len() || out.iter().zip(&shapes).any(|(o, s)| o.len() != s.len()) {
            return Err(input("the delta is not shaped like the model".into()));
        }
        self.form_delta(scale)?;
        // What the engine's own encoding held back goes with it, through the worker library.
        self.fold_encoders()?;
        let stream = Arc::clone(&self.gpu.compute);
        let total = arch.num_params();
        self.bus.d2h(&stream, || {
            self.delta_host.download(&stream, self.delta.get(), total)?;
            Ok(4 * total as u64)
        })?;
        let host = self.delta_host.host()?;
        for (l, o) in out.iter_mut().enumerate() {
            o.copy_from_slice(&host[self.offsets[l]..self.offsets[l + 1]]);
        }
        // The host has waited for the stream: every copy timed so far has finished.
        self.bus.settle()
    }

    /// Forms `(local - read) * scale` per layer in the flat `delta` on the device.
    fn form_delta(&mut self, scale: f32) -> Result<(), GpuError> {
        let arch = self.arch()?;
        let shapes = arch.layers();
        self.sync_read()?;
        let stream = Arc::clone(&self.gpu.compute);
        self.timer.start(&stream)?;
        for (l, s) in shapes.iter().enumerate() {
            let (lo, n) = (self.offsets[l], s.len());
            if n == 0 {
                continue;
            }
            let cfg = self.cfg(n);
            let n64 = n as u64;
            let local = self.local[l].get().slice(0..n);
            let read = self.read.get().slice(lo..lo + n);
            let mut dst = self.delta.get_mut().slice_mut(lo..lo + n);
            let mut b = stream.launch_builder(&self.delta_fn);
            b.arg(&local).arg(&read).arg(&scale).arg(&mut dst).arg(&n64);
            // SAFETY: the three views hold the layer's n values.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(mlp_delta)")?;
        }
        self.time_kernels()
    }

    fn try_evaluate(&mut self) -> Result<BatchStats, GpuError> {
        let arch = self.arch()?;
        let n = self.test.n;
        if n == 0 {
            return Ok(BatchStats::default());
        }
        self.sync_read()?;
        let chunk = self.mlp.chunk().min(n);
        self.mlp.size_for(&arch, chunk, false)?;
        // The read model into the parameter slots (the local model is elsewhere).
        copy_layers(
            &self.gpu.compute,
            &self.read,
            &self.offsets,
            self.mlp.slots().params,
        )?;
        self.timer.start(&self.gpu.compute)?;
        for first in (0..n).step_by(chunk) {
            let rows = chunk.min(n - first);
            self.gather(false, first, rows)?;
            self.mlp.chunk_kernels(&arch, rows, false)?;
        }
        self.time_kernels()?;
        self.totals(n)
    }

    /// The loss and accuracy sums of the last `count` samples' kernels (16 bytes back; the
    /// host waits for them, so every copy timed so far is settled too).
    fn totals(&mut self, count: usize) -> Result<BatchStats, GpuError> {
        // Only the copies between the copy's events: the host's wait for them comes after.
        self.bus.d2h(&self.gpu.compute, || {
            self.mlp.fetch_totals()?;
            Ok(16)
        })?;
        let stats = self.mlp.read_totals(count)?;
        self.bus.settle()?;
        Ok(stats)
    }
}

impl MlpResident for CudaMlpResident {
    fn name(&self) -> &'static str {
        match self.mlp.gemm() {
            MlpGemm::Tiled => NAME,
            MlpGemm::Cublas => "cuda-resident-cublas",
        }
    }

    fn setup(&mut self, arch: &Arch, train: &Dataset, test: &Dataset) -> Result<(), ComputeError> {
        failed(NAME, self.try_setup(arch, train, test))
    }

    fn load(&mut self, layer: usize, first_row: usize, values: &[f32]) -> Result<(), ComputeError> {
        failed(NAME, self.try_load(layer, first_row, values))
    }

    fn load_initial(&mut self, seed: u64) -> Result<(), ComputeError> {
        failed(NAME, self.try_load_initial(seed))
    }

    fn run_clock(
        &mut self,
        order: &[usize],
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError> {
        failed(NAME, self.try_run_clock(order, batch, lr))
    }

    fn run_visit(
        &mut self,
        visit: &Visit,
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError> {
        failed(NAME, self.try_run_visit(visit, batch, lr))
    }

    fn delta(&mut self, scale: f32, out: &mut [Vec<f32>]) -> Result<(), ComputeError> {
        failed(NAME, self.try_delta(scale, out))
    }

    fn encodes(&self, _chain: DeviceChain) -> bool {
        true
    }

    fn delta_encoded(
        &mut self,
        scale: f32,
        chain: DeviceChain,
        blocks: &[DeltaBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ComputeError> {
        failed(NAME, self.try_delta_encoded(scale, chain, blocks, out))
    }

    fn drop_unsent(&mut self) -> Result<f64, ComputeError> {
        failed(NAME, self.try_drop_unsent())
    }

    fn evaluate(&mut self) -> Result<BatchStats, ComputeError> {
        failed(NAME, self.try_evaluate())
    }

    fn traffic(&self) -> Traffic {
        self.bus.traffic
    }
}
