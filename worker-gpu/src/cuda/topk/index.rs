//! The index part of a selection coded on the device (`kernels/codec_index.cu`): the chosen
//! indices stay there; their measure comes back (8 words, 64 bytes), the host picks the layout
//! and writes its opening (`ps_proto::codec::index_layout`), and the device writes the codes,
//! which come back as whole words. Where the layout is dense, nothing is coded: the caller
//! takes the indices back and encodes the selection on the host.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use ps_proto::codec::{self, IndexLayout, IndexSizes, ValueFormat};

use crate::cuda::buffers::{DevBuf, Pinned};
use crate::cuda::{Call, Gpu, GpuError};

/// Words of a measure (`codec_index_plan`).
const PLAN_WORDS: usize = 8;

/// The kernels and buffers of the device's index coding.
pub(super) struct IndexCoder {
    plan: CudaFunction,
    write: CudaFunction,
    d_plan: DevBuf<u64>,
    d_codes: DevBuf<u32>,
    plan_host: Pinned<u64>,
    codes_host: Pinned<u32>,
}

fn one_warp() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl IndexCoder {
    pub(super) fn load(gpu: &Gpu) -> Result<IndexCoder, GpuError> {
        Ok(IndexCoder {
            plan: gpu.function("codec_index", "codec_index_plan")?,
            write: gpu.function("codec_index", "codec_index_write")?,
            d_plan: DevBuf::default(),
            d_codes: DevBuf::default(),
            plan_host: Pinned::new(&gpu.ctx)?,
            codes_host: Pinned::new(&gpu.ctx)?,
        })
    }

    /// The layout of the `m` (>= 1) strictly increasing indices `idx` holds, in a block of `n`
    /// with values in `format`, from their measure made on the device; adds the bytes copied
    /// back to `moved`.
    pub(super) fn layout(
        &mut self,
        gpu: &Gpu,
        idx: &CudaSlice<u32>,
        m: usize,
        (n, format): (usize, ValueFormat),
        moved: &mut u64,
    ) -> Result<IndexLayout, GpuError> {
        let stream = Arc::clone(&gpu.compute);
        if m == 0 || idx.len() < m || m > u32::MAX as usize - 64 {
            return Err(GpuError::Input(format!(
                "an index part of {m} entries from a buffer of {}",
                idx.len()
            )));
        }
        self.d_plan.ensure(&stream, PLAN_WORDS)?;
        let (m32, n64) = (m as u32, n as u64);
        let mut b = stream.launch_builder(&self.plan);
        b.arg(idx).arg(&m32).arg(&n64).arg(self.d_plan.get_mut());
        // SAFETY: idx holds m indices, the plan 8 words; codec_index_plan(const unsigned int*,
        // unsigned int, unsigned long long, unsigned long long*), its first warp working.
        unsafe { b.launch(one_warp()) }.call("cuLaunchKernel(codec_index_plan)")?;
        self.plan_host
            .download(&stream, self.d_plan.get(), PLAN_WORDS)?;
        *moved += 8 * PLAN_WORDS as u64;
        let p = self.plan_host.host()?;
        // A parameter of 32 or more: not one (the kernel marks indices out of order or range
        // with an impossible Rice parameter).
        let param = |v: u64| u32::try_from(v).ok().filter(|&k| k < 32);
        let (Some(rice_k), Some(gap_k), Some(len_k)) = (param(p[5]), param(p[6]), param(p[7]))
        else {
            return Err(GpuError::Input(format!(
                "an implausible index measure {p:?}"
            )));
        };
        let sizes = IndexSizes {
            entries: m as u64,
            list_bytes: p[0],
            rice_k,
            rice_bits: p[1],
            runs: p[2],
            gap_k,
            gap_bits: p[3],
            len_k,
            len_bits: p[4],
        };
        let layout = codec::index_layout(&sizes, n, format);
        // A code takes at most 68 bits (a run's gap and length): more is a fault.
        if layout.body_bytes > 9 * m as u64 + 16 || sizes.runs > m as u64 {
            return Err(GpuError::Input(format!(
                "an implausible index measure {sizes:?}"
            )));
        }
        Ok(layout)
    }

    /// Appends the codes of `layout` (not dense) for the `m` indices `idx` holds, made on the
    /// device, to `out`; adds the bytes copied back (whole words) to `moved`.
    pub(super) fn codes(
        &mut self,
        gpu: &Gpu,
        idx: &CudaSlice<u32>,
        m: usize,
        layout: &IndexLayout,
        out: &mut Vec<u8>,
        moved: &mut u64,
    ) -> Result<(), GpuError> {
        let stream = Arc::clone(&gpu.compute);
        let bytes = layout.body_bytes as usize;
        let words = bytes.div_ceil(4);
        if words == 0 {
            return Ok(());
        }
        self.d_codes.zero(&stream, words)?;
        let (m32, mode, k, kl) = (m as u32, u32::from(layout.mode), layout.k, layout.kl);
        let words64 = words as u64;
        let mut b = stream.launch_builder(&self.write);
        b.arg(idx)
            .arg(&m32)
            .arg(&mode)
            .arg(&k)
            .arg(&kl)
            .arg(&words64)
            .arg(self.d_codes.get_mut());
        // SAFETY: idx holds m indices; the codes buffer, zeroed, holds `words` words, past
        // which the kernel writes nothing; codec_index_write(const unsigned int*, unsigned int,
        // unsigned int, unsigned int, unsigned int, unsigned long long, unsigned int*), its
        // first warp working.
        unsafe { b.launch(one_warp()) }.call("cuLaunchKernel(codec_index_write)")?;
        self.codes_host
            .download(&stream, self.d_codes.get(), words)?;
        *moved += 4 * words as u64;
        let host = self.codes_host.host()?;
        let start = out.len();
        out.extend(host.iter().flat_map(|w| w.to_le_bytes()));
        out.truncate(start + bytes);
        Ok(())
    }
}
