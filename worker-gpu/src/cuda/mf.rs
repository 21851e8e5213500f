//! The CUDA MF engine: `kernels/mf_sgd.cu` behind [`MfCompute`].
//!
//! One call copies the factor tables in, streams the ratings through in chunks, and copies the
//! tables back. The ratings are converted to structure-of-arrays form in pinned buffers, two
//! chunks alternating: while the compute stream runs chunk `c`, the host fills chunk `c + 1` and
//! the copy stream moves it to the device. Device and pinned buffers are kept across calls.
//!
//! Parallel mode (the default) runs one warp per rating over the whole device, Hogwild: two warps
//! on the same row at once may lose part of one update, as in cuMF_SGD. On few rows that loses
//! almost everything (the built-in set's 1,000 items did not learn on an H200), so the MF
//! sessions do not use this engine: they use the resident, conflict-free
//! [`super::mf_resident::CudaMfResident`]. This one remains as `gpu-bench`'s Hogwild speed
//! reference and, sequential, as a check of the update itself. [`CudaMf::sequential`]
//! launches a single warp, which visits the ratings in order like the CPU oracle (the conformance
//! suite compares the two); it exists for checking, not for speed.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::mf::{MfCompute, Rating};

use super::buffers::{DevBuf, Pinned};
use super::{failed, Call, Gpu, GpuError};
use ps_apps::ComputeError;

/// Ratings per chunk: 12 MiB of structure-of-arrays, large enough to fill the device.
pub const CHUNK: usize = 1 << 20;

/// Threads per block in parallel mode.
const BLOCK: u32 = 256;

struct Chunk {
    user: Pinned<u32>,
    item: Pinned<u32>,
    value: Pinned<f32>,
    d_user: DevBuf<u32>,
    d_item: DevBuf<u32>,
    d_value: DevBuf<f32>,
}

impl Chunk {
    fn new(gpu: &Gpu) -> Result<Self, GpuError> {
        Ok(Chunk {
            user: Pinned::new(&gpu.ctx)?,
            item: Pinned::new(&gpu.ctx)?,
            value: Pinned::new(&gpu.ctx)?,
            d_user: DevBuf::default(),
            d_item: DevBuf::default(),
            d_value: DevBuf::default(),
        })
    }
}

/// Matrix-factorisation SGD on a CUDA device.
pub struct CudaMf {
    gpu: Arc<Gpu>,
    sgd: CudaFunction,
    squared_error: CudaFunction,
    sequential: bool,
    users: DevBuf<f32>,
    items: DevBuf<f32>,
    users_host: Pinned<f32>,
    items_host: Pinned<f32>,
    chunks: [Chunk; 2],
    sse: DevBuf<f64>,
    sse_host: Pinned<f64>,
}

impl CudaMf {
    /// The parallel (Hogwild) engine on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        Ok(CudaMf {
            sgd: gpu.function("mf_sgd", "mf_sgd")?,
            squared_error: gpu.function("mf_sgd", "mf_squared_error")?,
            sequential: false,
            users: DevBuf::default(),
            items: DevBuf::default(),
            users_host: Pinned::new(&gpu.ctx)?,
            items_host: Pinned::new(&gpu.ctx)?,
            chunks: [Chunk::new(&gpu)?, Chunk::new(&gpu)?],
            sse: DevBuf::default(),
            sse_host: Pinned::new(&gpu.ctx)?,
            gpu,
        })
    }

    /// The one-warp engine: ratings in the given order, like the CPU oracle.
    pub fn sequential(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let mut e = Self::new(gpu)?;
        e.sequential = true;
        Ok(e)
    }

    fn launch_config(&self, ratings: usize) -> LaunchConfig {
        if self.sequential {
            LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (32, 1, 1),
                shared_mem_bytes: 0,
            }
        } else {
            LaunchConfig {
                grid_dim: (self.gpu.grid_for(ratings as u64 * 32, BLOCK, 8), 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            }
        }
    }

    /// Fills chunk `slot` with `ratings` in structure-of-arrays form (checking every index) and
    /// starts its copy to the device on the copy stream.
    fn stage(
        &mut self,
        slot: usize,
        ratings: &[Rating],
        users: usize,
        items: usize,
    ) -> Result<(), GpuError> {
        let c = &mut self.chunks[slot];
        let n = ratings.len();
        let (u, i, v) = (
            c.user.host_mut(n)?,
            c.item.host_mut(n)?,
            c.value.host_mut(n)?,
        );
        for (j, r) in ratings.iter().enumerate() {
            if r.user as usize >= users || r.item as usize >= items {
                return Err(GpuError::Input(format!(
                    "rating of user {} and item {} but the tables have {users} and {items} rows",
                    r.user, r.item
                )));
            }
            (u[j], i[j], v[j]) = (r.user, r.item, r.value);
        }
        let copy = &self.gpu.copy;
        c.d_user.upload(copy, &c.user)?;
        c.d_item.upload(copy, &c.item)?;
        c.d_value.upload(copy, &c.value)
    }

    fn tables_in(&mut self, users: &[f32], items: &[f32]) -> Result<(), GpuError> {
        self.users_host.fill(users)?;
        self.items_host.fill(items)?;
        self.users.upload(&self.gpu.copy, &self.users_host)?;
        self.items.upload(&self.gpu.copy, &self.items_host)?;
        self.sse.zero(&self.gpu.compute, 1)
    }

    fn sse_out(&mut self) -> Result<f64, GpuError> {
        self.sse_host
            .download(&self.gpu.compute, self.sse.get(), 1)?;
        Ok(self.sse_host.host()?[0])
    }

    /// One pass; `mean` is `Some` for the biased model (rows `rank + 1` wide, the bias last).
    #[allow(clippy::too_many_arguments)]
    fn try_sgd_epoch(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        mean: Option<f32>,
        lr: f32,
        reg: f32,
    ) -> Result<f64, GpuError> {
        let width = rank + usize::from(mean.is_some());
        let (nu, ni) = (users.len() / width, items.len() / width);
        let too_wide = || GpuError::Input(format!("rank {rank} does not fit the kernel"));
        let rank_u32 = u32::try_from(rank).map_err(|_| too_wide())?;
        let width_u32 = u32::try_from(width).map_err(|_| too_wide())?;
        let (biased, mean) = (i32::from(mean.is_some()), mean.unwrap_or(0.0));
        self.tables_in(users, items)?;
        let mut chunks = ratings.chunks(CHUNK).enumerate().peekable();
        if let Some((_, first)) = chunks.peek() {
            self.stage(0, first, nu, ni)?;
        }
        while let Some((c, chunk)) = chunks.next() {
            let slot = c % 2;
            // Stage the next chunk first: its host fill and copy overlap this chunk's kernel
            // (the fill waits only for the copy that last used the same pinned buffers).
            let cfg = self.launch_config(chunk.len());
            let n = chunk.len() as u32;
            {
                let ch = &self.chunks[slot];
                let mut b = self.gpu.compute.launch_builder(&self.sgd);
                b.arg(ch.d_user.get())
                    .arg(ch.d_item.get())
                    .arg(ch.d_value.get())
                    .arg(&n)
                    .arg(self.users.get_mut())
                    .arg(self.items.get_mut())
                    .arg(&rank_u32)
                    .arg(&width_u32)
                    .arg(&biased)
                    .arg(&mean)
                    .arg(&lr)
                    .arg(&reg)
                    .arg(self.sse.get_mut());
                // SAFETY: the rating arrays hold n entries whose indices were checked against
                // the table sizes in `stage`; the tables hold users.len() and items.len()
                // elements; sse holds one double.
                unsafe { b.launch(cfg) }.call("cuLaunchKernel(mf_sgd)")?;
            }
            if let Some((_, next)) = chunks.peek() {
                self.stage(1 - slot, next, nu, ni)?;
            }
        }
        let compute = &self.gpu.compute;
        self.users_host
            .download(compute, self.users.get(), users.len())?;
        self.items_host
            .download(compute, self.items.get(), items.len())?;
        let sse = self.sse_out()?;
        users.copy_from_slice(self.users_host.host()?);
        items.copy_from_slice(self.items_host.host()?);
        Ok(sse)
    }

    /// Sum of squared errors of `ratings` under the given tables (the plain model), computed on the device
    /// (held-out RMSE). Same index checks as [`MfCompute::sgd_epoch`].
    pub fn squared_error(
        &mut self,
        ratings: &[Rating],
        users: &[f32],
        items: &[f32],
        rank: usize,
    ) -> Result<f64, GpuError> {
        if ratings.is_empty() {
            return Ok(0.0);
        }
        if rank == 0 {
            return Ok(ratings.iter().map(|r| f64::from(r.value).powi(2)).sum());
        }
        let (nu, ni) = (users.len() / rank, items.len() / rank);
        let rank_u32 = u32::try_from(rank)
            .map_err(|_| GpuError::Input(format!("rank {rank} does not fit the kernel")))?;
        self.tables_in(users, items)?;
        for (c, chunk) in ratings.chunks(CHUNK).enumerate() {
            let slot = c % 2;
            self.stage(slot, chunk, nu, ni)?;
            let cfg = LaunchConfig {
                grid_dim: (self.gpu.grid_for(chunk.len() as u64 * 32, BLOCK, 8), 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let n = chunk.len() as u32;
            let ch = &self.chunks[slot];
            let mut b = self.gpu.compute.launch_builder(&self.squared_error);
            b.arg(ch.d_user.get())
                .arg(ch.d_item.get())
                .arg(ch.d_value.get())
                .arg(&n)
                .arg(self.users.get())
                .arg(self.items.get())
                .arg(&rank_u32)
                .arg(&rank_u32)
                .arg(&0i32)
                .arg(&0.0f32)
                .arg(self.sse.get_mut());
            // SAFETY: as in `sgd_epoch`.
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(mf_squared_error)")?;
        }
        self.sse_out()
    }
}

impl MfCompute for CudaMf {
    fn sgd_epoch(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        if ratings.is_empty() {
            return Ok(0.0);
        }
        if rank == 0 {
            // Nothing to update; the prediction is 0 (as the CPU oracle).
            return Ok(ratings.iter().map(|r| f64::from(r.value).powi(2)).sum());
        }
        failed(
            "cuda-mf",
            self.try_sgd_epoch(ratings, users, items, rank, None, lr, reg),
        )
    }

    fn sgd_epoch_biased(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        mean: f32,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        if ratings.is_empty() {
            return Ok(0.0);
        }
        failed(
            "cuda-mf",
            self.try_sgd_epoch(ratings, users, items, rank, Some(mean), lr, reg),
        )
    }

    fn name(&self) -> &'static str {
        if self.sequential {
            "cuda-sequential"
        } else {
            "cuda"
        }
    }
}
