//! [`DeviceTopK`]: top-k selection with error feedback whose residual stays on the device, the
//! device side of `ps_proto::codec::ErrorFeedback` with the chain `topk:K` or `topk:K,f16`
//! (see [`super::codec`] for how it selects exactly as the host does): [`DeviceTopK::push`]
//! sends the candidates back and the host picks the `k`. [`DeviceTopK::push_encoded_view`]
//! (module `encode`) does it all on the device, in any value format, and hands back the payload;
//! [`DeviceTopK::select_host`] and [`DeviceTopK::subtract`] leave the encoding to the caller.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

mod encode;
mod energy;
mod index;
mod large;
mod pick;

pub(crate) use pick::best_of_candidates;

use super::buffers::{DevBuf, Pinned};
use super::codec::{
    elementwise, initial_above, launch_to_f16, too_short, Kernels, SAMPLE, SORT_THREADS,
};
use super::{Call, Gpu, GpuError};

/// Enqueues `dst += src` over the first `n` elements (`codec_ef_accumulate`) on the compute
/// stream; both views hold at least `n`.
fn launch_accumulate(
    gpu: &Gpu,
    k: &Kernels,
    dst: &mut CudaViewMut<'_, f32>,
    src: &CudaView<'_, f32>,
    n: usize,
) -> Result<(), GpuError> {
    if dst.len() < n || src.len() < n {
        return Err(too_short(
            "codec_ef_accumulate operand",
            dst.len().min(src.len()),
            n,
        ));
    }
    let n64 = n as u64;
    let cfg = elementwise(gpu, n);
    let mut b = gpu.compute.launch_builder(&k.accumulate);
    b.arg(dst).arg(src).arg(&n64);
    // SAFETY: both views hold at least n elements (checked above);
    // codec_ef_accumulate(float*, const float*, unsigned long long).
    unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_ef_accumulate)")?;
    Ok(())
}

/// How the selected values travel (the value format of the host chain `topk:K[,f16]`); error
/// feedback subtracts what the receiver decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentFormat {
    /// f32, lossless: a sent entry's residual becomes 0.
    F32,
    /// f16 (as [`CudaCodec::encode_f16`](super::codec::CudaCodec::encode_f16)): a sent entry keeps its quantisation error.
    F16,
}

/// Error-feedback top-k compression of a block of `n` values whose residual stays on the device:
/// the device side of `ps_proto::codec::ErrorFeedback` with the chain `topk:K` or `topk:K,f16`.
pub struct DeviceTopK {
    gpu: Arc<Gpu>,
    k: Kernels,
    format: SentFormat,
    n: usize,
    residual: DevBuf<f32>,
    /// The block size the sample positions on the device were made for (0: none yet); see
    /// [`DeviceTopK::first_above`]. A block encoded in a caller's buffer (`push_encoded_in`)
    /// may have another size: its positions are made then.
    samples_for: usize,
    d_samples: DevBuf<u32>,
    d_threshold: DevBuf<u32>,
    d_count: DevBuf<u32>,
    d_cand_idx: DevBuf<u32>,
    d_cand_val: DevBuf<f32>,
    d_delta: DevBuf<f32>,
    d_sent_idx: DevBuf<u32>,
    d_sent_raw: DevBuf<f32>,
    d_sent: DevBuf<f32>,
    d_sent_bits: DevBuf<u16>,
    delta_host: Pinned<f32>,
    scalar_host: Pinned<u32>,
    cand_idx_host: Pinned<u32>,
    cand_val_host: Pinned<f32>,
    sent_idx_host: Pinned<u32>,
    sent_val_host: Pinned<f32>,
    /// Bytes copied (host to device, device to host) by the selection and feedback.
    moved: (u64, u64),
    /// The kernels and codec of [`DeviceTopK::push_encoded_view`], loaded on first use.
    encoder: Option<Box<encode::Encoder>>,
}

impl DeviceTopK {
    /// A compressor for blocks of `n` values on `gpu`, its residual zero.
    pub fn new(gpu: Arc<Gpu>, n: usize, format: SentFormat) -> Result<Self, GpuError> {
        let k = Kernels::load(&gpu)?;
        Self::with_kernels(gpu, k, n, format)
    }

    pub(super) fn with_kernels(
        gpu: Arc<Gpu>,
        k: Kernels,
        n: usize,
        format: SentFormat,
    ) -> Result<Self, GpuError> {
        if n > u32::MAX as usize {
            return Err(GpuError::Input(format!(
                "a top-k block of {n} values exceeds the kernels' 32-bit indices and counts"
            )));
        }
        let ctx = &gpu.ctx;
        let mut t = DeviceTopK {
            k,
            format,
            n,
            residual: DevBuf::default(),
            samples_for: 0,
            d_samples: DevBuf::default(),
            d_threshold: DevBuf::default(),
            d_count: DevBuf::default(),
            d_cand_idx: DevBuf::default(),
            d_cand_val: DevBuf::default(),
            d_delta: DevBuf::default(),
            d_sent_idx: DevBuf::default(),
            d_sent_raw: DevBuf::default(),
            d_sent: DevBuf::default(),
            d_sent_bits: DevBuf::default(),
            delta_host: Pinned::new(ctx)?,
            scalar_host: Pinned::new(ctx)?,
            cand_idx_host: Pinned::new(ctx)?,
            cand_val_host: Pinned::new(ctx)?,
            sent_idx_host: Pinned::new(ctx)?,
            sent_val_host: Pinned::new(ctx)?,
            moved: (0, 0),
            encoder: None,
            gpu,
        };
        t.residual.zero(&t.gpu.compute, n.max(1))?;
        t.d_threshold.ensure(&t.gpu.compute, 1)?;
        t.d_count.ensure(&t.gpu.compute, 1)?;
        t.ensure_samples()?;
        Ok(t)
    }

    /// Enqueues `codec_topk_samples` unless the positions on the device are this block size's:
    /// the block's sample positions, made on the device (the host's `sample_positions(n)`), so
    /// that none crosses PCIe.
    fn ensure_samples(&mut self) -> Result<(), GpuError> {
        if self.n == 0 || self.samples_for == self.n {
            return Ok(());
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.d_samples.ensure(&stream, SAMPLE)?;
        let (n64, count) = (self.n as u64, SAMPLE as u32);
        let mut b = stream.launch_builder(&self.k.samples);
        b.arg(&n64).arg(self.d_samples.get_mut()).arg(&count);
        // SAFETY: the buffer holds SAMPLE words; codec_topk_samples(unsigned long long,
        // unsigned int*, unsigned int) writes out[0..count).
        unsafe { b.launch(elementwise(&self.gpu, SAMPLE)) }
            .call("cuLaunchKernel(codec_topk_samples)")?;
        self.samples_for = self.n;
        Ok(())
    }

    /// Values per block.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for a block of no values.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The format of the sent values.
    pub fn format(&self) -> SentFormat {
        self.format
    }

    /// The residual, copied back (what has not been sent yet).
    pub fn residual(&mut self) -> Result<Vec<f32>, GpuError> {
        if self.n == 0 {
            return Ok(Vec::new());
        }
        self.delta_host
            .download(&self.gpu.compute, self.residual.get(), self.n)?;
        Ok(self.delta_host.host()?.to_vec())
    }

    /// Replaces the residual (e.g. from a checkpoint).
    pub fn set_residual(&mut self, values: &[f32]) -> Result<(), GpuError> {
        self.check_len(values.len())?;
        if self.n == 0 {
            return Ok(());
        }
        self.delta_host.fill(values)?;
        self.residual.upload(&self.gpu.copy, &self.delta_host)
    }

    /// Forgets the residual.
    pub fn clear(&mut self) -> Result<(), GpuError> {
        self.residual.zero(&self.gpu.compute, self.n.max(1))
    }

    fn check_len(&self, len: usize) -> Result<(), GpuError> {
        if len == self.n {
            Ok(())
        } else {
            Err(GpuError::Input(format!(
                "a delta of {len} values for a top-k residual of {}",
                self.n
            )))
        }
    }

    /// `residual += delta; send the top k of the residual; residual -= what was sent`, as
    /// `ErrorFeedback::compress` with `topk:k` (or `topk:k,f16`). Returns the sent indices
    /// (ascending) and the values the receiver decodes for them.
    pub fn push(&mut self, delta: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        self.accumulate_host(delta)?;
        self.send(k)
    }

    /// `residual += delta` (uploaded first), then the top `k` entries of the residual, as
    /// (indices ascending, their values), the residual left as it is: for a caller that encodes
    /// the selection itself and then hands [`DeviceTopK::subtract`] what the receiver decodes
    /// (what [`DeviceTopK::push_encoded_view`] does on the host when the device cannot trim).
    pub fn select_host(
        &mut self,
        delta: &[f32],
        k: usize,
    ) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        self.accumulate_host(delta)?;
        self.select(k)
    }

    /// Uploads `delta` and enqueues `residual += delta`.
    fn accumulate_host(&mut self, delta: &[f32]) -> Result<(), GpuError> {
        self.check_len(delta.len())?;
        if self.n == 0 {
            return Ok(());
        }
        self.delta_host.fill(delta)?;
        self.d_delta.upload(&self.gpu.copy, &self.delta_host)?;
        let d = std::mem::take(&mut self.d_delta);
        let r = self.accumulate_device(d.get());
        self.d_delta = d;
        r
    }

    /// [`DeviceTopK::push`] of a device-resident delta (its first `len()` elements).
    pub fn push_device(
        &mut self,
        delta: &CudaSlice<f32>,
        k: usize,
    ) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        self.accumulate_device(delta)?;
        self.send(k)
    }

    /// Enqueues `residual += delta` (the first `len()` elements of `delta`) on the compute stream.
    pub fn accumulate_device(&mut self, delta: &CudaSlice<f32>) -> Result<(), GpuError> {
        if delta.len() < self.n {
            return Err(too_short("codec_ef_accumulate delta", delta.len(), self.n));
        }
        self.accumulate_view(&delta.slice(0..self.n))
    }

    /// [`DeviceTopK::accumulate_device`] of a view (a block of a larger buffer).
    pub fn accumulate_view(&mut self, delta: &CudaView<'_, f32>) -> Result<(), GpuError> {
        let n = self.n;
        if n == 0 {
            return Ok(());
        }
        let mut r = self.residual.get_mut().slice_mut(0..n);
        launch_accumulate(&self.gpu, &self.k, &mut r, delta, n)
    }

    /// [`DeviceTopK::push_device`] of a view (a block of a larger buffer).
    pub fn push_view(
        &mut self,
        delta: &CudaView<'_, f32>,
        k: usize,
    ) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        self.accumulate_view(delta)?;
        self.send(k)
    }

    /// Enqueues `dst += residual` (the first `len()` elements of `dst`): what a worker reads
    /// includes what it has not sent yet.
    pub fn add_residual_to(&self, dst: &mut CudaViewMut<'_, f32>) -> Result<(), GpuError> {
        let n = self.n;
        if n == 0 {
            return Ok(());
        }
        launch_accumulate(&self.gpu, &self.k, dst, &self.residual.view(n), n)
    }

    /// Bytes this compressor copied host to device and back since it was made.
    pub fn moved(&self) -> (u64, u64) {
        self.moved
    }

    /// Enqueues `residual[idx[j]] -= values[j]` (a non-finite residual entry becomes 0), both
    /// uploaded: the feedback of a selection the caller encoded. `idx` must be strictly
    /// increasing and within the block.
    pub fn subtract(&mut self, idx: &[u32], values: &[f32]) -> Result<(), GpuError> {
        if idx.len() != values.len() {
            return Err(GpuError::Input(format!(
                "{} indices with {} values to subtract",
                idx.len(),
                values.len()
            )));
        }
        let ordered = idx.windows(2).all(|w| w[0] < w[1]);
        if !ordered || idx.last().is_some_and(|&i| i as usize >= self.n) {
            return Err(GpuError::Input(format!(
                "indices to subtract must be strictly increasing and below {}",
                self.n
            )));
        }
        if idx.is_empty() {
            return Ok(());
        }
        self.upload_sent(idx, values)?;
        self.subtract_sent(idx.len(), false)
    }

    /// The top `k` entries of the residual as it is (indices ascending, unquantised values).
    fn select(&mut self, k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        let k = k.min(self.n);
        if k == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let count = self.candidates(k)?;
        self.trim(count, k)
    }

    /// Uploads the sent indices and values (as given) for [`DeviceTopK::subtract_sent`].
    fn upload_sent(&mut self, idx: &[u32], values: &[f32]) -> Result<(), GpuError> {
        let stream = &Arc::clone(&self.gpu.compute);
        self.sent_idx_host.fill(idx)?;
        self.sent_val_host.fill(values)?;
        self.d_sent_idx.upload(stream, &self.sent_idx_host)?;
        self.d_sent_raw.upload(stream, &self.sent_val_host)?;
        self.moved.0 += 8 * idx.len() as u64;
        Ok(())
    }

    /// Selection and feedback of the residual as it is: the top `k` entries are sent.
    fn send(&mut self, k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        let (idx, raw) = self.select(k)?;
        let m = idx.len();
        if m == 0 {
            return Ok((idx, raw));
        }
        self.upload_sent(&idx, &raw)?;
        let stream = &Arc::clone(&self.gpu.compute);
        match self.format {
            SentFormat::F32 => {
                self.subtract_sent(m, false)?;
                Ok((idx, raw))
            }
            SentFormat::F16 => {
                self.d_sent_bits.ensure(stream, m)?;
                self.d_sent.ensure(stream, m)?;
                launch_to_f16(
                    &self.gpu,
                    &self.k,
                    self.d_sent_raw.get(),
                    self.d_sent_bits.get_mut(),
                    Some(self.d_sent.get_mut()),
                    m,
                )?;
                self.subtract_sent(m, true)?;
                self.sent_val_host.download(stream, self.d_sent.get(), m)?;
                self.moved.1 += 4 * m as u64;
                let values = self.sent_val_host.host()?.to_vec();
                Ok((idx, values))
            }
        }
    }

    /// Enqueues `residual[idx[j]] -= sent[j]` for the `m` sent entries (`codec_ef_subtract`):
    /// the raw values, or with `decoded_f16` the values the receiver decodes from f16.
    fn subtract_sent(&mut self, m: usize, decoded_f16: bool) -> Result<(), GpuError> {
        let m64 = m as u64;
        let by_index: i32 = 0;
        let cfg = elementwise(&self.gpu, m);
        let idx_v = self.d_sent_idx.view(m);
        let sent_v = if decoded_f16 {
            self.d_sent.view(m)
        } else {
            self.d_sent_raw.view(m)
        };
        let mut b = self.gpu.compute.launch_builder(&self.k.subtract);
        b.arg(self.residual.get_mut())
            .arg(&idx_v)
            .arg(&sent_v)
            .arg(&by_index)
            .arg(&m64);
        // SAFETY: m distinct indices < n and m values; codec_ef_subtract(float*,
        // const unsigned int*, const float*, int, unsigned long long).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_ef_subtract)")?;
        Ok(())
    }

    /// Makes room for `cap` candidates.
    fn ensure_capacity(&mut self, cap: usize) -> Result<(), GpuError> {
        let s = &self.gpu.compute;
        self.d_cand_idx.ensure(s, cap)?;
        self.d_cand_val.ensure(s, cap)?;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.d_cand_idx
            .get()
            .len()
            .min(self.d_cand_val.get().len())
            .min(u32::MAX as usize)
    }

    /// Enqueues the sampled threshold with `above` (`codec_topk_threshold`).
    fn enqueue_threshold(&mut self, above: usize) -> Result<(), GpuError> {
        let samples = SAMPLE as u32;
        let above = above.min(u32::MAX as usize) as u32;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (SORT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let x = self.residual.view(self.n);
        let mut b = self.gpu.compute.launch_builder(&self.k.threshold);
        b.arg(&x)
            .arg(self.d_samples.get())
            .arg(&samples)
            .arg(&above)
            .arg(self.d_threshold.get_mut());
        // SAFETY: SAMPLE positions < n on the device, one threshold word;
        // codec_topk_threshold(const float*, const unsigned int*, unsigned int, unsigned int,
        // unsigned int*), one block of CODEC_SORT_THREADS threads, static shared memory.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_topk_threshold)")?;
        Ok(())
    }

    /// Enqueues one candidate pass at the threshold on the device (`count` zeroed first).
    fn enqueue_compact(&mut self) -> Result<(), GpuError> {
        let stream = &self.gpu.compute;
        self.d_count.zero(stream, 1)?;
        let n64 = self.n as u64;
        let capacity = self.capacity() as u32;
        let cfg = elementwise(&self.gpu, self.n);
        let x = self.residual.view(self.n);
        let mut b = stream.launch_builder(&self.k.compact);
        b.arg(&x)
            .arg(&n64)
            .arg(self.d_threshold.get())
            .arg(self.d_cand_idx.get_mut())
            .arg(self.d_cand_val.get_mut())
            .arg(self.d_count.get_mut())
            .arg(&capacity);
        // SAFETY: x holds n elements, the candidate buffers `capacity` each, threshold and
        // count one word; codec_topk_compact(const float*, unsigned long long,
        // const unsigned int*, unsigned int*, float*, unsigned int*, unsigned int).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_topk_compact)")?;
        Ok(())
    }

    /// Whether the selection of `k` of this block starts from a sampled threshold (`0 < k < n`),
    /// and with which `above`. `select.rs` samples only blocks of at least `EXACT_BELOW` and
    /// takes smaller ones whole; the device samples every block, so that a small block does not
    /// send every entry back as a candidate (8 bytes each, twice the block's f32 delta). The
    /// selection is the same either way: a threshold only bounds the candidates, it is lowered
    /// until at least `k` pass, and the `k` are then picked exactly among them.
    fn first_above(&self, k: usize) -> Option<usize> {
        (self.samples_for == self.n && k > 0 && k < self.n).then(|| initial_above(self.n, k))
    }

    /// Enqueues the first threshold and candidate pass for `k` (the host's first try), with room
    /// for `k + k/2 + 64` candidates; nothing waits. For timing the selection kernels on a
    /// device-resident residual: [`DeviceTopK::candidate_count`] then reads the count.
    pub fn enqueue_candidates(&mut self, k: usize) -> Result<(), GpuError> {
        if self.n == 0 {
            return Ok(());
        }
        let k = k.min(self.n);
        self.ensure_samples()?;
        self.ensure_capacity(k + k / 2 + 64)?;
        match self.first_above(k) {
            Some(above) => self.enqueue_threshold(above)?,
            None => self.d_threshold.zero(&self.gpu.compute, 1)?,
        }
        self.enqueue_compact()
    }

    /// The count of the last candidate pass (waits for it); it may exceed the capacity.
    pub fn candidate_count(&mut self) -> Result<usize, GpuError> {
        if self.n == 0 {
            return Ok(0);
        }
        self.read_scalar(false).map(|c| c as usize)
    }

    /// Reads the count (or the threshold) word back.
    fn read_scalar(&mut self, threshold: bool) -> Result<u32, GpuError> {
        let src = if threshold {
            self.d_threshold.get()
        } else {
            self.d_count.get()
        };
        self.scalar_host.download(&self.gpu.compute, src, 1)?;
        self.moved.1 += 4;
        Ok(self.scalar_host.host()?[0])
    }

    /// Runs the candidate passes until at least `k` entries are candidates, as `select.rs`
    /// `sampled` (threshold lowered by taking 4 × as many sample entries, down to 0), growing the
    /// candidate buffers whenever a pass found more than they hold. Returns the count; the
    /// candidates are in the buffers.
    fn candidates(&mut self, k: usize) -> Result<usize, GpuError> {
        self.ensure_samples()?;
        self.ensure_capacity(k + k / 2 + 64)?;
        let mut above = self.first_above(k);
        loop {
            match above {
                Some(a) => self.enqueue_threshold(a)?,
                None => self.d_threshold.zero(&self.gpu.compute, 1)?,
            }
            self.enqueue_compact()?;
            let mut count = self.read_scalar(false)? as usize;
            if count > self.capacity() {
                self.ensure_capacity(count)?;
                self.enqueue_compact()?;
                count = self.read_scalar(false)? as usize;
            }
            if count >= k {
                // The usual case, the first pass: no need to read the threshold back.
                return Ok(count);
            }
            let t = match above {
                Some(_) => self.read_scalar(true)?,
                None => 0,
            };
            if t == 0 {
                return Ok(count);
            }
            above = above.map(|a| a.saturating_mul(4));
        }
    }

    /// The `k` highest-ranked of the `count` candidates (rank key = magnitude bits << 32 |
    /// !index, as `select.rs`), ascending by index, with their (unquantised) values.
    fn trim(&mut self, count: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        if count == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let stream = &self.gpu.compute;
        self.cand_idx_host
            .download(stream, self.d_cand_idx.get(), count)?;
        self.cand_val_host
            .download(stream, self.d_cand_val.get(), count)?;
        self.moved.1 += 8 * count as u64;
        let idx = self.cand_idx_host.host()?;
        let val = self.cand_val_host.host()?;
        Ok(best_of_candidates(idx, val, k))
    }
}
