//! A top-k encoded where it is selected ([`DeviceTopK::push_encoded_view`]): the candidates are
//! trimmed to the `k` on the device (`kernels/codec_topk.cu`), the chosen values are encoded
//! there in the chain's format by [`DenseCodec::encode_values`] on the compact selection (the
//! values part of a sparse payload is the format's encoding of the selected values in index
//! order), and what error feedback keeps of them is scattered back into the residual. The index
//! part is coded there too (`index.rs`): only the indices' measure (64 bytes), their codes and
//! the values' bytes come back; nothing goes in.
//!
//! Up to `CODEC_TRIM_CAP` (4,096) candidates, one block sorts them; past that, `large.rs`
//! selects among any number. One case goes the host's way instead (the chosen indices and
//! values come back and the host encodes them; what the receiver decodes goes in): a selection
//! whose smallest layout is dense (every value of the block, zeros between: a large fraction
//! in a format other than `sign`).
//!
//! An energy stage ([`Keep::Energy`]) has no candidates: its count is found over the whole
//! block on the device (`energy.rs`), and the scan of `large.rs` writes the chosen entries by
//! the state that count left; the rest is as for a top-k.
//!
//! [`DeviceTopK::push_encoded_in`] does the same with a residual the caller keeps (a block of
//! MF item rows gathered from the engine's residual table), of any size.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaView, LaunchConfig, PushKernelArg};
use ps_apps::app::device_codec::{selection_payload, Keep};
use ps_proto::codec::{self, ValueFormat};

use super::energy::Energy;
use super::index::IndexCoder;
use super::large::Select;
use super::DeviceTopK;
use crate::cuda::buffers::DevBuf;
use crate::cuda::codec::elementwise;
use crate::cuda::dense::DenseCodec;
use crate::cuda::{Call, GpuError};

pub use ps_apps::app::device_codec::TRIM_CAP;
/// The kernel's shared memory holds `CODEC_TRIM_CAP` (4,096) keys: a larger cap here would be
/// cut short on the device.
const _: () = assert!(TRIM_CAP <= 4096);
/// The trim's block (`CODEC_TRIM_THREADS`).
const TRIM_THREADS: u32 = 1024;

/// The kernels and the value codec of the device-side encoding.
pub(super) struct Encoder {
    trim: CudaFunction,
    scatter: CudaFunction,
    dense: DenseCodec,
    pub(super) select: Select,
    pub(super) energy: Energy,
    index: IndexCoder,
}

fn proto(e: ps_proto::ProtoError) -> GpuError {
    GpuError::Input(e.to_string())
}

impl DeviceTopK {
    pub(super) fn encoder(&mut self) -> Result<&mut Encoder, GpuError> {
        let enc = match &mut self.encoder {
            Some(e) => e,
            slot => slot.insert(Box::new(Encoder {
                trim: self.gpu.function("codec_topk", "codec_topk_trim")?,
                scatter: self.gpu.function("codec_topk", "codec_topk_scatter")?,
                dense: DenseCodec::new(Arc::clone(&self.gpu))?,
                select: Select::load(&self.gpu)?,
                energy: Energy::load(&self.gpu)?,
                index: IndexCoder::load(&self.gpu)?,
            })),
        };
        Ok(enc)
    }

    /// `residual += delta` (a view of `len()` values), then what `keep` says of the residual
    /// sent in `format`: the payload `ErrorFeedback::compress` makes with the chain
    /// `topk:k,format` (or `energy:E,format`), and the residual it leaves (bit for bit, for
    /// finite values). See the module docs for what crosses PCIe.
    pub fn push_encoded_view(
        &mut self,
        delta: &CudaView<'_, f32>,
        keep: Keep,
        format: ValueFormat,
    ) -> Result<Vec<u8>, GpuError> {
        self.accumulate_view(delta)?;
        self.encode_residual(keep, format)
    }

    /// [`DeviceTopK::push_encoded_view`] of a delta on the host (uploaded first).
    pub fn push_encoded(
        &mut self,
        delta: &[f32],
        keep: Keep,
        format: ValueFormat,
    ) -> Result<Vec<u8>, GpuError> {
        self.accumulate_host(delta)?;
        self.encode_residual(keep, format)
    }

    /// `residual += delta`, then what `keep` says of the residual sent in `format`, as
    /// [`DeviceTopK::push_encoded_view`] but with a residual the caller keeps: the first `n`
    /// values of `residual` (any `n`, each call its own), which are left holding what error
    /// feedback keeps. This encoder's own residual is not touched.
    pub fn push_encoded_in(
        &mut self,
        residual: &mut DevBuf<f32>,
        n: usize,
        delta: &CudaView<'_, f32>,
        keep: Keep,
        format: ValueFormat,
    ) -> Result<Vec<u8>, GpuError> {
        let held = residual.try_get().map_or(0, |r| r.len());
        if held < n || delta.len() < n || n > u32::MAX as usize {
            return Err(GpuError::Input(format!(
                "a top-k of {n} values in a residual of {held} with a delta of {}",
                delta.len()
            )));
        }
        // The caller's residual stands in for this encoder's own for the call.
        std::mem::swap(&mut self.residual, residual);
        let own = std::mem::replace(&mut self.n, n);
        let out = self
            .accumulate_view(delta)
            .and_then(|()| self.encode_residual(keep, format));
        self.n = own;
        std::mem::swap(&mut self.residual, residual);
        out
    }

    /// What `keep` says of the residual as it is, sent in `format` (see the module docs).
    fn encode_residual(&mut self, keep: Keep, format: ValueFormat) -> Result<Vec<u8>, GpuError> {
        let n = self.n;
        let k = match keep {
            Keep::Count(k) => k.min(n),
            Keep::Energy(e) => self.energy_count(e)?,
        };
        let mut out = Vec::new();
        if k == 0 {
            codec::encode_selection(format, n, &[], &[], &mut out).map_err(proto)?;
            return Ok(out);
        }
        match keep {
            // The energy pick left the state the scan writes the chosen entries by.
            Keep::Energy(_) => self.enqueue_write(k)?,
            Keep::Count(_) => {
                let count = self.candidates(k)?;
                if count > TRIM_CAP {
                    self.enqueue_select(count, k)?;
                } else {
                    self.enqueue_trim(count, k)?;
                }
            }
        }
        let enc = match self.encoder.as_deref_mut() {
            Some(e) => e,
            None => return Err(GpuError::Input("no top-k encoder".into())),
        };
        let idx = self.d_sent_idx.get();
        let layout = enc
            .index
            .layout(&self.gpu, idx, k, (n, format), &mut self.moved.1)?;
        if layout.is_dense() {
            let stream = Arc::clone(&self.gpu.compute);
            self.sent_idx_host
                .download(&stream, self.d_sent_idx.get(), k)?;
            self.moved.1 += 4 * k as u64;
            let idx = self.sent_idx_host.host()?.to_vec();
            let raw = self.chosen_values(k)?;
            return self.encoded_on_host(format, &idx, &raw);
        }
        out.extend_from_slice(&layout.header);
        enc.index
            .codes(&self.gpu, idx, k, &layout, &mut out, &mut self.moved.1)?;
        if format == ValueFormat::F32 {
            // Sent as they are: their residual becomes 0.
            for v in self.chosen_values(k)? {
                out.extend_from_slice(&v.to_le_bytes());
            }
            self.subtract_sent(k, false)?;
            return Ok(out);
        }
        let mut values = self.d_sent_raw.get_mut().slice_mut(0..k);
        let enc = match &mut self.encoder {
            Some(e) => e,
            None => return Err(GpuError::Input("no top-k encoder".into())),
        };
        let (payload, moved) = enc.dense.encode_values(format, &mut values, k)?;
        self.moved.1 += moved;
        out.extend_from_slice(&payload);
        self.enqueue_scatter(k)?;
        Ok(out)
    }

    /// The values of the `k` chosen entries (as the trim left them), copied back.
    fn chosen_values(&mut self, k: usize) -> Result<Vec<f32>, GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        self.sent_val_host
            .download(&stream, self.d_sent_raw.get(), k)?;
        self.moved.1 += 4 * k as u64;
        Ok(self.sent_val_host.host()?.to_vec())
    }

    /// The payload of a selection made here and encoded on the host; what the receiver decodes
    /// goes back in and is subtracted.
    fn encoded_on_host(
        &mut self,
        format: ValueFormat,
        idx: &[u32],
        raw: &[f32],
    ) -> Result<Vec<u8>, GpuError> {
        let (payload, decoded) =
            selection_payload(format, self.n, idx, raw).map_err(|e| GpuError::Input(e.message))?;
        self.subtract(idx, &decoded)?;
        Ok(payload)
    }

    /// Enqueues `codec_topk_trim` of the `count` candidates: the chosen `k` indices and values
    /// into the sent buffers.
    fn enqueue_trim(&mut self, count: usize, k: usize) -> Result<(), GpuError> {
        if count > TRIM_CAP || k > count || count > self.capacity() {
            return Err(GpuError::Input(format!(
                "a device trim of {count} candidates to {k} (at most {TRIM_CAP}, {} held)",
                self.capacity()
            )));
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.d_sent_idx.ensure(&stream, k)?;
        self.d_sent_raw.ensure(&stream, k)?;
        self.encoder()?;
        let enc = self
            .encoder
            .as_ref()
            .ok_or_else(|| GpuError::Input("no top-k encoder".into()))?;
        let (count32, k32) = (count as u32, k as u32);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (TRIM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let x = self.residual.view(self.n);
        let mut b = stream.launch_builder(&enc.trim);
        b.arg(&x)
            .arg(self.d_cand_idx.get())
            .arg(self.d_cand_val.get())
            .arg(&count32)
            .arg(&k32)
            .arg(self.d_sent_idx.get_mut())
            .arg(self.d_sent_raw.get_mut());
        // SAFETY: x holds n values and the candidates (indices below n) `count` <= capacity
        // each; the sent buffers hold k; codec_topk_trim(const float*, const unsigned int*,
        // const float*, unsigned int, unsigned int, unsigned int*, float*), one block of
        // CODEC_TRIM_THREADS threads, static shared memory.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_topk_trim)")?;
        Ok(())
    }

    /// Enqueues `residual[sent_idx[j]] = sent[j]` for the `k` chosen entries: what the encoder
    /// left of their values goes back.
    fn enqueue_scatter(&mut self, k: usize) -> Result<(), GpuError> {
        let enc = self
            .encoder
            .as_ref()
            .ok_or_else(|| GpuError::Input("no top-k encoder".into()))?;
        let k64 = k as u64;
        let mut b = self.gpu.compute.launch_builder(&enc.scatter);
        b.arg(self.residual.get_mut())
            .arg(self.d_sent_idx.get())
            .arg(self.d_sent_raw.get())
            .arg(&k64);
        // SAFETY: the k indices are distinct and below n (the trim chose them among the
        // candidates), the values k; codec_topk_scatter(float*, const unsigned int*,
        // const float*, unsigned long long).
        unsafe { b.launch(elementwise(&self.gpu, k)) }
            .call("cuLaunchKernel(codec_topk_scatter)")?;
        Ok(())
    }
}
