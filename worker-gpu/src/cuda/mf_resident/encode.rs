//! The engine's own push encoding (`MfResident::keep_before`, `delta_encoded`, `drop_unsent`):
//! a dense lossy chain (`ps_apps::app::device_codec::DeviceChain::Dense`) run on the device by
//! [`DenseCodec`], or a top-k or an energy stage (`DeviceChain::TopK`, `DeviceChain::Energy`) by
//! one [`DeviceTopK`] over every block (`push_encoded_in`: counted, selected and encoded there
//! whatever the block's size), with what is not sent kept per item row in a residual table on
//! the device and added to every such row a later load writes (held rows only). Per clock: the
//! pushed rows are gathered from the cache before the waves (`before`) and after them
//! (`after`), their difference is the delta; each block of the push plan gathers its rows'
//! residual, is encoded (only its payload's bytes come back, for a selection with its count or
//! candidates' counts and its indices' 64-byte measure) and scatters the residual back. After
//! a push, which rows still hold something comes back as a bit a row (`held_rows`, for an epoch
//! split over clocks); an f32 selection's last clock sends its rows plain, residual included
//! (`delta_with_held`). The oracle is `HostResident`, which counts the same bytes.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use ps_apps::app::device_codec::{check_keyed, DeviceChain, KeyedBlock};

use super::{input, to_u32, CudaMfResident, BLOCK};
use crate::cuda::buffers::{DevBuf, KeyList, Pinned};
use crate::cuda::dense::DenseCodec;
use crate::cuda::mf_wave_kernel::MfKernels;
use crate::cuda::topk::{DeviceTopK, SentFormat};
use crate::cuda::widen::NarrowIn;
use crate::cuda::{Call, GpuError};

/// What the engine keeps for its own encoding.
#[derive(Default)]
pub(super) struct OwnPushes {
    /// The pushed rows (`keep_before`), as they were then and after the waves.
    keys: KeyList,
    before: DevBuf<f32>,
    after: DevBuf<f32>,
    /// What was not sent, per item row (`num_items x width`), from the first encoded push on.
    residual: DevBuf<f32>,
    held: bool,
    /// Gathered residual rows (of a block, or of a load).
    scratch: DevBuf<f32>,
    codec: Option<DenseCodec>,
    /// The top-k encoder of every block (its own residual unused: each block's is gathered).
    topk: Option<DeviceTopK>,
    sum_host: Option<Pinned<f32>>,
    /// Loaded rows that cross narrow (16-bit values, codes), staged.
    pub(super) narrow: NarrowIn,
    /// `mf_held_rows`, its bits and their copy (`held_rows`).
    held_fn: Option<CudaFunction>,
    held_words: DevBuf<u32>,
    held_host: Option<Pinned<u32>>,
}

impl OwnPushes {
    /// Whether a residual is kept (added to the rows loaded).
    pub(super) fn held(&self) -> bool {
        self.held
    }
}

/// A launch over `n` rows of `w` values.
fn rows_cfg(gpu: &crate::cuda::Gpu, n: usize, w: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (gpu.grid_for((n * w) as u64, BLOCK, 8), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `mf_gather_rows` (or its f16 form, per `f`): `out[i] = table[keys[i]]`, `n` rows of `w`.
fn gather<T: cudarc::driver::DeviceRepr>(
    gpu: &crate::cuda::Gpu,
    f: &CudaFunction,
    keys: &CudaView<'_, u32>,
    n: usize,
    w: usize,
    table: &CudaSlice<T>,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let (n32, w32) = (to_u32(n, "rows")?, to_u32(w, "width")?);
    let mut b = gpu.compute.launch_builder(f);
    b.arg(keys).arg(&n32).arg(&w32).arg(table).arg(out);
    // SAFETY: the keys were checked below the table's rows when their list was set; `out`
    // holds at least n * w values (the callers ensure it).
    unsafe { b.launch(rows_cfg(gpu, n, w)) }.call("cuLaunchKernel(mf_gather_rows)")?;
    Ok(())
}

/// `mf_scatter_rows` (f32): `table[keys[i]] = rows[i]`, `n` rows of `w`: gathered residual
/// rows back into the residual table.
fn scatter(
    gpu: &crate::cuda::Gpu,
    f: &CudaFunction,
    keys: &CudaView<'_, u32>,
    (n, w): (usize, usize),
    rows: &CudaSlice<f32>,
    table: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let (n32, w32) = (to_u32(n, "rows")?, to_u32(w, "width")?);
    let mut b = gpu.compute.launch_builder(f);
    b.arg(keys).arg(rows).arg(&n32).arg(&w32).arg(table);
    // SAFETY: the keys were checked below the table's rows when their list was set; `rows`
    // holds at least n * w values (the callers ensure it).
    unsafe { b.launch(rows_cfg(gpu, n, w)) }.call("cuLaunchKernel(mf_scatter_rows)")?;
    Ok(())
}

impl CudaMfResident {
    /// The dense codec, loaded on first use.
    fn codec(&mut self) -> Result<&mut DenseCodec, GpuError> {
        if self.own.codec.is_none() {
            self.own.codec = Some(DenseCodec::new(Arc::clone(&self.gpu))?);
        }
        self.own
            .codec
            .as_mut()
            .ok_or_else(|| input("no dense codec".into()))
    }

    /// Adds the held residual of the read's rows `[first, first + n)` to the staged rows (before
    /// they are scattered into the cache).
    pub(super) fn add_own_residual(&mut self, first: usize, n: usize) -> Result<(), GpuError> {
        let w = self.layout.width();
        let stream = Arc::clone(&self.gpu.compute);
        self.codec()?;
        self.own.scratch.ensure(&stream, n * w)?;
        let keys = self.reads.dev.get().slice(first..first + n);
        gather(
            &self.gpu,
            &self.f32_kernels.gather,
            &keys,
            n,
            w,
            self.own.residual.get(),
            self.own.scratch.get_mut(),
        )?;
        let scratch = self.own.scratch.view(n * w);
        let mut rows = self.rows.get_mut().slice_mut(0..n * w);
        let codec = self
            .own
            .codec
            .as_ref()
            .ok_or_else(|| input("no dense codec".into()))?;
        codec.add_held(&mut rows, &scratch, n, w)
    }

    pub(super) fn try_keep_before(&mut self, keys: &[u64]) -> Result<(), GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        let limit = self.num_items;
        self.own
            .keys
            .set(&stream, &mut self.keys_host, &mut self.bus, keys, limit)?;
        let n = keys.len();
        if n == 0 {
            return Ok(());
        }
        self.gather_pushed(n, false)
    }

    /// Gathers the `n` pushed rows of the cache, as stored, into `after` (or `before`).
    fn gather_pushed(&mut self, n: usize, after: bool) -> Result<(), GpuError> {
        let w = self.layout.width();
        let dst = if after {
            &mut self.own.after
        } else {
            &mut self.own.before
        };
        dst.ensure(&self.gpu.compute, n * w)?;
        let k = MfKernels::of(&self.f32_kernels, &self.f16_kernels, self.factors);
        let list = self.own.keys.dev.view(n);
        gather(
            &self.gpu,
            &k.gather,
            &list,
            n,
            w,
            self.items.get(),
            dst.get_mut(),
        )
    }

    pub(super) fn try_delta_encoded(
        &mut self,
        keys: &[u64],
        chain: DeviceChain,
        blocks: &[KeyedBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), GpuError> {
        if keys != self.own.keys.keys() {
            return Err(input(
                "the pushed rows are not the rows kept before the waves".into(),
            ));
        }
        check_keyed(blocks, keys.len()).map_err(input)?;
        let stream = Arc::clone(&self.gpu.compute);
        let (n, w) = (keys.len(), self.layout.width());
        if !self.own.held {
            self.own
                .residual
                .zero(&stream, (self.num_items * w).max(1))?;
            self.own.held = true;
        }
        if n == 0 {
            return Ok(());
        }
        self.codec()?;
        if chain.selects() && self.own.topk.is_none() {
            self.own.topk = Some(DeviceTopK::new(Arc::clone(&self.gpu), 0, SentFormat::F32)?);
        }
        self.timer.start(&stream)?;
        // The delta: the rows after the waves less the rows before them.
        self.gather_pushed(n, true)?;
        let codec = self
            .own
            .codec
            .as_mut()
            .ok_or_else(|| input("no dense codec".into()))?;
        let before = self.own.before.view(n * w);
        codec.subtract(
            &mut self.own.after.get_mut().slice_mut(0..n * w),
            &before,
            n * w,
        )?;
        for b in blocks {
            let m = b.rows.len();
            if m == 0 {
                out.push(Vec::new());
                continue;
            }
            let keys = self.own.keys.dev.get().slice(b.rows.clone());
            self.own.scratch.ensure(&stream, m * w)?;
            gather(
                &self.gpu,
                &self.f32_kernels.gather,
                &keys,
                m,
                w,
                self.own.residual.get(),
                self.own.scratch.get_mut(),
            )?;
            let delta = self.own.after.get().slice(b.rows.start * w..b.rows.end * w);
            let payload = match (chain, &mut self.own.topk) {
                (DeviceChain::Dense(format), _) => {
                    let mut r = self.own.scratch.get_mut().slice_mut(0..m * w);
                    let (payload, moved) = codec.encode(format, &mut r, &delta, m * w)?;
                    self.bus.traffic.d2h_bytes += moved;
                    payload
                }
                (DeviceChain::TopK(format) | DeviceChain::Energy(_, format), Some(topk)) => {
                    let before = topk.moved();
                    let keep = chain.keep(b.k);
                    let payload =
                        topk.push_encoded_in(&mut self.own.scratch, m * w, &delta, keep, format)?;
                    let now = topk.moved();
                    self.bus.traffic.h2d_bytes += now.0 - before.0;
                    self.bus.traffic.d2h_bytes += now.1 - before.1;
                    payload
                }
                (DeviceChain::TopK(_) | DeviceChain::Energy(..), None) => {
                    return Err(input("no top-k encoder".into()))
                }
            };
            // The block's residual back into its rows.
            scatter(
                &self.gpu,
                &self.f32_kernels.scatter,
                &keys,
                (m, w),
                self.own.scratch.get(),
                self.own.residual.get_mut(),
            )?;
            out.push(payload);
        }
        self.timer.stop(&stream, &mut self.bus.traffic)?;
        Ok(())
    }

    /// The pushed rows `keys` (the list `keep_before` set) after the waves less before them,
    /// plus what is held back of them, as plain values into `out`, `(0 + delta) + residual`
    /// as the worker library forms a flushed row; their residual is then zero. The result is
    /// built in the kept rows' buffer: once per `keep_before`, as the trait says.
    pub(super) fn try_delta_with_held(
        &mut self,
        keys: &[u64],
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let w = self.layout.width();
        if keys != self.own.keys.keys() || out.len() != keys.len() * w {
            return Err(input(format!(
                "{} values for {} rows, which must be the rows last kept",
                out.len(),
                keys.len()
            )));
        }
        let n = keys.len();
        if n == 0 {
            return Ok(());
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.codec()?;
        self.timer.start(&stream)?;
        self.gather_pushed(n, true)?;
        let codec = self
            .own
            .codec
            .as_ref()
            .ok_or_else(|| input("no dense codec".into()))?;
        let len = n * w;
        let before = self.own.before.view(len);
        codec.subtract(
            &mut self.own.after.get_mut().slice_mut(0..len),
            &before,
            len,
        )?;
        // `before` becomes 0 + delta, then takes the rows' residual.
        self.own.before.zero(&stream, len)?;
        let after = self.own.after.view(len);
        codec.add(
            &mut self.own.before.get_mut().slice_mut(0..len),
            &after,
            len,
        )?;
        let list = self.own.keys.dev.view(n);
        if self.own.held {
            self.own.scratch.ensure(&stream, len)?;
            gather(
                &self.gpu,
                &self.f32_kernels.gather,
                &list,
                n,
                w,
                self.own.residual.get(),
                self.own.scratch.get_mut(),
            )?;
            let held = self.own.scratch.view(len);
            codec.add(&mut self.own.before.get_mut().slice_mut(0..len), &held, len)?;
            // Sent whole: the rows' residual is zero from now on.
            self.own.scratch.zero(&stream, len)?;
            scatter(
                &self.gpu,
                &self.f32_kernels.scatter,
                &list,
                (n, w),
                self.own.scratch.get(),
                self.own.residual.get_mut(),
            )?;
        }
        self.timer.stop(&stream, &mut self.bus.traffic)?;
        let (host, dev) = (&mut self.rows_host, &self.own.before);
        self.bus.d2h(&stream, || {
            host.download(&stream, dev.get(), len)?;
            Ok(4 * len as u64)
        })?;
        out.copy_from_slice(self.rows_host.host()?);
        self.bus.settle()
    }

    /// Which of the pushed rows `keys` (the list `keep_before` set) hold something back: a bit
    /// a row made on the device (`mf_held_rows`) and copied back.
    pub(super) fn try_held_rows(&mut self, keys: &[u64]) -> Result<Vec<u64>, GpuError> {
        if keys != self.own.keys.keys() {
            return Err(input(
                "the rows asked about are not the rows last pushed".into(),
            ));
        }
        let n = keys.len();
        if !self.own.held || n == 0 {
            // Nothing was ever encoded here: nothing is held, and nothing to copy.
            return Ok(Vec::new());
        }
        let stream = Arc::clone(&self.gpu.compute);
        if self.own.held_fn.is_none() {
            self.own.held_fn = Some(self.gpu.function("mf_sgd", "mf_held_rows")?);
        }
        let words = n.div_ceil(32);
        self.own.held_words.ensure(&stream, words)?;
        let (n32, w32) = (to_u32(n, "rows")?, to_u32(self.layout.width(), "width")?);
        let f = self
            .own
            .held_fn
            .as_ref()
            .ok_or_else(|| input("no held-rows kernel".into()))?;
        let list = self.own.keys.dev.view(n);
        let mut b = stream.launch_builder(f);
        b.arg(&list)
            .arg(&n32)
            .arg(&w32)
            .arg(self.own.residual.get())
            .arg(self.own.held_words.get_mut());
        // SAFETY: the n keys are below num_items (checked when their list was set), the
        // residual holds num_items * width values, the words ceil(n / 32);
        // mf_held_rows(const unsigned*, unsigned, unsigned, const float*, unsigned*).
        unsafe { b.launch(rows_cfg(&self.gpu, words, 1)) }.call("cuLaunchKernel(mf_held_rows)")?;
        let host = match &mut self.own.held_host {
            Some(h) => h,
            slot => slot.insert(Pinned::new(&self.gpu.ctx)?),
        };
        let dev = &self.own.held_words;
        self.bus.d2h(&stream, || {
            host.download(&stream, dev.get(), words)?;
            Ok(4 * words as u64)
        })?;
        self.bus.settle()?;
        let bits = host.host()?;
        Ok(keys
            .iter()
            .enumerate()
            .filter(|(i, _)| bits[i / 32] >> (i % 32) & 1 == 1)
            .map(|(_, &k)| k)
            .collect())
    }

    pub(super) fn try_drop_unsent(&mut self) -> Result<f64, GpuError> {
        if !self.own.held {
            return Ok(0.0);
        }
        self.own.held = false;
        let stream = Arc::clone(&self.gpu.compute);
        let n = self.num_items * self.layout.width();
        if n == 0 {
            return Ok(0.0);
        }
        if self.own.sum_host.is_none() {
            self.own.sum_host = Some(Pinned::new(&self.gpu.ctx)?);
        }
        let host = self
            .own
            .sum_host
            .as_mut()
            .ok_or_else(|| input("no staging".into()))?;
        host.download(&stream, self.own.residual.get(), n)?;
        self.bus.traffic.d2h_bytes += 4 * n as u64;
        Ok(host.host()?.iter().map(|v| f64::from(v.abs())).sum())
    }
}
