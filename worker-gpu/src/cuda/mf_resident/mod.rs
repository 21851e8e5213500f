//! The resident CUDA MF engine: [`ps_apps::mf::MfResident`] on a device.
//!
//! [`MfResident::setup`] uploads the worker's training ratings (arranged in the schedule's block
//! order, structure of arrays), the block offsets, the held-out ratings and the user rows once,
//! and sizes a dense item cache; all stay on the device until the engine is dropped. Per clock:
//!
//! - the read's row keys go to the device when they differ from the last clock's; each pulled
//!   chunk of rows is staged in pinned memory, copied to the device and scattered into the cache
//!   by its position in the read (`mf_scatter_rows`);
//! - the clock's waves run in one launch of `mf_sgd_waves` (one warp per band, all resident, no
//!   two warps on the same row; see `kernels/mf_sgd.cu`), or of one of its windowed forms
//!   ([`MfWaveKernel`]);
//! - the rows the clock touched are gathered into a compact buffer (`mf_gather_rows`) and only
//!   they are copied back (their key list, too, crosses only when it changes); or, when the push
//!   codec is a dense lossy chain (`f16`, `bf16`, `q8`, `q4`, `q2`, `sign`), the engine encodes
//!   the clock's delta itself and only the payloads come back (`encode`: the rows kept before
//!   the waves, the residual kept per item row on the device and added to the rows loaded).
//!
//! The user and item tables hold f32 values or, with [`Factors::F16`], f16 bits (the kernels'
//! `_f16` variants convert on every load and round on every store); rows cross PCIe as f32
//! either way.
//!
//! Every byte copied either way is counted ([`Traffic`]), with the time of the wave and error
//! kernels from CUDA events. Everything runs on the engine's compute stream, in order.

use std::sync::Arc;

use cudarc::driver::{LaunchConfig, PushKernelArg};
use ps_apps::app::device_codec::{DeviceChain, KeyedBlock, PulledRows};
use ps_apps::mf::{Factors, Layout, MfResident, ResidentSetup, Split, Traffic};
use ps_apps::ComputeError;

use super::buffers::{DevBuf, KernelTimer, KeyList, Pinned};
use super::bus::Bus;
pub use super::mf_wave_kernel::MfWaveKernel;
use super::mf_wave_kernel::{lanes_of, MfKernels, WAVES_ALONE, WAVE_BLOCK};
use super::{failed, Call, Gpu, GpuError};

mod encode;
mod setup;

/// Threads per block of the row and error kernels.
const BLOCK: u32 = 256;

/// Ratings on the device, structure of arrays.
#[derive(Default)]
struct DevRatings {
    user: DevBuf<u32>,
    item: DevBuf<u32>,
    value: DevBuf<f32>,
    len: usize,
}

/// Resident MF on a CUDA device (see the module docs).
pub struct CudaMfResident {
    gpu: Arc<Gpu>,
    f32_kernels: MfKernels,
    f16_kernels: MfKernels,
    wave: MfWaveKernel,
    lanes: usize,
    layout: Layout,
    factors: Factors,
    bands: u32,
    num_users: usize,
    num_items: usize,
    train: DevRatings,
    test: DevRatings,
    starts: DevBuf<u32>,
    /// The tables in 16-bit words ([`stored_words`]): f32 values or f16 bits, as `factors` says.
    users: DevBuf<u16>,
    items: DevBuf<u16>,
    shifts: DevBuf<u32>,
    done: DevBuf<u32>,
    stalled: DevBuf<u32>,
    sse: DevBuf<f64>,
    /// The rows of the current read (loads scatter by position), of the last gather of item
    /// rows, and of the last gather of user rows.
    reads: KeyList,
    gathers: KeyList,
    user_keys: KeyList,
    rows: DevBuf<f32>,
    keys_host: Pinned<u32>,
    rows_host: Pinned<f32>,
    shifts_host: Pinned<u32>,
    sse_host: Pinned<f64>,
    flag_host: Pinned<u32>,
    timer: KernelTimer,
    bus: Bus,
    /// The engine's own push encoding (`encode`).
    own: encode::OwnPushes,
}

fn input(m: String) -> GpuError {
    GpuError::Input(m)
}

fn to_u32(n: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| input(format!("{what} ({n}) does not fit the kernel's u32")))
}

impl CudaMfResident {
    /// The engine on `gpu`, with the default wave kernel; sizes its lanes by that kernel's
    /// occupancy (the lower of the two formats'), so that every warp of a launch is resident at
    /// once (the kernel's waits rely on it).
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let wave = MfWaveKernel::default();
        let f32_kernels = MfKernels::load(&gpu, Factors::F32, wave)?;
        let f16_kernels = MfKernels::load(&gpu, Factors::F16, wave)?;
        let lanes = lanes_of(&gpu, &f32_kernels, &f16_kernels)?;
        let timer = KernelTimer::new(&gpu.ctx)?;
        Ok(CudaMfResident {
            f32_kernels,
            f16_kernels,
            wave,
            lanes,
            layout: Layout::plain(0),
            factors: Factors::F32,
            bands: 1,
            num_users: 0,
            num_items: 0,
            train: DevRatings::default(),
            test: DevRatings::default(),
            starts: DevBuf::default(),
            users: DevBuf::default(),
            items: DevBuf::default(),
            shifts: DevBuf::default(),
            done: DevBuf::default(),
            stalled: DevBuf::default(),
            sse: DevBuf::default(),
            reads: KeyList::default(),
            gathers: KeyList::default(),
            user_keys: KeyList::default(),
            rows: DevBuf::default(),
            keys_host: Pinned::new(&gpu.ctx)?,
            rows_host: Pinned::new(&gpu.ctx)?,
            shifts_host: Pinned::new(&gpu.ctx)?,
            sse_host: Pinned::new(&gpu.ctx)?,
            flag_host: Pinned::new(&gpu.ctx)?,
            timer,
            bus: Bus::new(&gpu.ctx),
            own: encode::OwnPushes::default(),
            gpu,
        })
    }

    /// Runs the waves with `wave` from now on, and sizes [`MfResident::lanes`] by its
    /// occupancy. After set-up, an error (and no change) where the schedule has more bands
    /// than the new kernel's lanes.
    pub fn set_wave_kernel(&mut self, wave: MfWaveKernel) -> Result<(), GpuError> {
        let f32_kernels = MfKernels::load(&self.gpu, Factors::F32, wave)?;
        let f16_kernels = MfKernels::load(&self.gpu, Factors::F16, wave)?;
        let lanes = lanes_of(&self.gpu, &f32_kernels, &f16_kernels)?;
        if self.bands as usize > lanes {
            return Err(input(format!(
                "the {} wave kernel holds {lanes} warps, fewer than the schedule's {} bands",
                wave.name(),
                self.bands
            )));
        }
        (self.f32_kernels, self.f16_kernels) = (f32_kernels, f16_kernels);
        (self.wave, self.lanes) = (wave, lanes);
        Ok(())
    }

    fn rows_config(&self, n: usize) -> LaunchConfig {
        let w = self.layout.width() as u64;
        LaunchConfig {
            grid_dim: (self.gpu.grid_for(n as u64 * w, BLOCK, 8), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn try_expect(&mut self, keys: &[u64]) -> Result<(), GpuError> {
        let limit = self.num_items;
        self.reads.set(
            &self.gpu.compute,
            &mut self.keys_host,
            &mut self.bus,
            keys,
            limit,
        )
    }

    fn try_load(&mut self, first: usize, values: &[f32]) -> Result<(), GpuError> {
        let w = self.layout.width().max(1);
        let n = values.len() / w;
        let end = first.checked_add(n).filter(|&e| e <= self.reads.len());
        let Some(end) = end.filter(|_| values.len().is_multiple_of(w)) else {
            return Err(input(format!(
                "{} values (rows of {w}) at row {first} of a read of {} rows",
                values.len(),
                self.reads.len()
            )));
        };
        if n == 0 {
            return Ok(());
        }
        // Rows of f16 or bf16 values (a 16-bit pull codec's) cross as they are, rows of codes
        // (a q8, q4, q2 or sign pull codec's) as codes, and widen here, exactly.
        match PulledRows::of(values) {
            PulledRows::Halves(kind, bits) => {
                let (gpu, bus) = (&self.gpu, &mut self.bus);
                self.own
                    .narrow
                    .halves_in(gpu, bus, kind, &bits, &mut self.rows)?
            }
            PulledRows::Levels(image) => {
                let (gpu, bus) = (&self.gpu, &mut self.bus);
                self.own
                    .narrow
                    .levels_in(gpu, bus, &image, &mut self.rows)?
            }
            PulledRows::F32 => {
                self.rows_host.fill(values)?;
                self.bus.h2d(&self.gpu.compute, || {
                    self.rows.upload(&self.gpu.compute, &self.rows_host)?;
                    Ok(4 * values.len() as u64)
                })?;
            }
        }
        if self.own.held() {
            // What this engine has not sent yet shows in what it reads.
            self.add_own_residual(first, n)?;
        }
        let cfg = self.rows_config(n);
        let (n32, w32) = (to_u32(n, "rows")?, w as u32);
        let keys = self.reads.dev.get().slice(first..end);
        let kernels = MfKernels::of(&self.f32_kernels, &self.f16_kernels, self.factors);
        let mut b = self.gpu.compute.launch_builder(&kernels.scatter);
        b.arg(&keys)
            .arg(self.rows.get())
            .arg(&n32)
            .arg(&w32)
            .arg(self.items.get_mut());
        // SAFETY: `keys` holds n keys of the read, each checked below the item rows when the
        // read was set; `rows` holds n * w values; the cache holds num_items * w.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(mf_scatter_rows)")?;
        Ok(())
    }

    fn try_rows(&mut self, keys: &[u64], out: &mut [f32], users: bool) -> Result<(), GpuError> {
        let w = self.layout.width();
        if out.len() != keys.len() * w {
            return Err(input(format!(
                "{} outputs for {} rows",
                out.len(),
                keys.len()
            )));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let kernels = MfKernels::of(&self.f32_kernels, &self.f16_kernels, self.factors);
        let (list, limit, table) = if users {
            (&mut self.user_keys, self.num_users, &self.users)
        } else {
            (&mut self.gathers, self.num_items, &self.items)
        };
        list.set(
            &self.gpu.compute,
            &mut self.keys_host,
            &mut self.bus,
            keys,
            limit,
        )?;
        self.rows.ensure(&self.gpu.compute, out.len())?;
        let cfg = LaunchConfig {
            grid_dim: (self.gpu.grid_for(out.len() as u64, BLOCK, 8), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n32, w32) = (to_u32(keys.len(), "rows")?, w as u32);
        let mut b = self.gpu.compute.launch_builder(&kernels.gather);
        b.arg(list.dev.get())
            .arg(&n32)
            .arg(&w32)
            .arg(table.get())
            .arg(self.rows.get_mut());
        // SAFETY: the list holds n keys checked below the table's rows; `rows` holds n * w.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(mf_gather_rows)")?;
        self.bus.d2h(&self.gpu.compute, || {
            self.rows_host
                .download(&self.gpu.compute, self.rows.get(), out.len())?;
            Ok(4 * out.len() as u64)
        })?;
        out.copy_from_slice(self.rows_host.host()?);
        // The host has waited for the stream: every copy timed so far has finished.
        self.bus.settle()
    }

    /// Reads the device's sum of squared errors (and zeroes it for the next call).
    fn take_sse(&mut self) -> Result<f64, GpuError> {
        let stream = &self.gpu.compute;
        self.bus.d2h(stream, || {
            self.sse_host.download(stream, self.sse.get(), 1)?;
            Ok(8)
        })?;
        let v = self.sse_host.host()?[0];
        self.bus.settle()?;
        self.sse.zero(stream, 1)?;
        Ok(v)
    }

    fn try_run_waves(&mut self, shifts: &[u32], lr: f32, reg: f32) -> Result<f64, GpuError> {
        if shifts.is_empty() || self.train.len == 0 {
            return Ok(0.0);
        }
        if let Some(s) = shifts.iter().find(|&&s| s >= self.bands) {
            return Err(input(format!("wave {s} of a {}-band schedule", self.bands)));
        }
        let n = to_u32(shifts.len(), "waves")?;
        self.shifts_host.fill(shifts)?;
        self.bus.h2d(&self.gpu.compute, || {
            self.shifts.upload(&self.gpu.compute, &self.shifts_host)?;
            Ok(4 * shifts.len() as u64)
        })?;
        let stream = Arc::clone(&self.gpu.compute);
        self.done.zero(&stream, self.bands as usize)?;
        // The stall flag is zero (a stall ends the engine's use); the window's is cleared.
        self.stalled.zero(&stream, 2)?;
        let (rank, width) = (self.layout.rank as u32, self.layout.width() as u32);
        let (biased, mean) = (
            i32::from(self.layout.mean.is_some()),
            self.layout.mean.unwrap_or(0.0),
        );
        let cfg = LaunchConfig {
            grid_dim: ((self.bands * 32).div_ceil(WAVE_BLOCK), 1, 1),
            block_dim: (WAVE_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // Held until the kernel has finished (the stall flag's copy is waited for below).
        let _alone = WAVES_ALONE.lock().unwrap_or_else(|p| p.into_inner());
        self.timer.start(&stream)?;
        {
            let t = &self.train;
            let kernels = MfKernels::of(&self.f32_kernels, &self.f16_kernels, self.factors);
            let mut b = stream.launch_builder(&kernels.waves);
            b.arg(t.user.get())
                .arg(t.item.get())
                .arg(t.value.get())
                .arg(self.starts.get())
                .arg(self.shifts.get())
                .arg(&n)
                .arg(&self.bands)
                .arg(self.users.get_mut())
                .arg(self.items.get_mut())
                .arg(&rank)
                .arg(&width)
                .arg(&biased)
                .arg(&mean)
                .arg(&lr)
                .arg(&reg)
                .arg(self.done.get_mut())
                .arg(self.stalled.get_mut())
                .arg(self.sse.get_mut());
            // SAFETY: the ratings' indices were checked against the tables at set-up; the block
            // starts index the ratings (bands^2 + 1 of them); shifts < bands (checked above);
            // `done` holds `bands` counters; every warp of the grid is resident (bands <= lanes,
            // checked at set-up), which the kernel's waits need. A cooperative launch has the
            // driver keep it so (or refuse the grid) even where other work shares the device.
            if self.gpu.info.cooperative {
                unsafe { b.launch_cooperative(cfg) }.call(self.wave.launch_cooperative())?;
            } else {
                unsafe { b.launch(cfg) }.call(self.wave.launch())?;
            }
        }
        self.timer.stop(&stream, &mut self.bus.traffic)?;
        self.bus.d2h(&stream, || {
            self.flag_host.download(&stream, self.stalled.get(), 1)?;
            Ok(4)
        })?;
        if self.flag_host.host()?[0] != 0 {
            // The warps that ran added their errors: none of them belongs to a later call.
            self.sse.zero(&stream, 1)?;
            return Err(input(
                "the wave kernel stalled: a warp waited 20 s for its neighbour (were all \
                 warps resident?)"
                    .into(),
            ));
        }
        self.take_sse()
    }

    /// Whether the wave kernel runs its window for the set-up layout on this device: the
    /// layout fits ([`MfWaveKernel::windows`]) and the device has `cp.async` (compute
    /// capability 8.0 or later; on older ones the window kernels run the next-rating loop).
    pub fn runs_window(&self) -> bool {
        self.gpu.info.capability.0 >= 8 && self.wave.windows(self.layout, self.factors)
    }

    /// Whether the last [`MfResident::run_waves`] ran any block with the window (the kernel's
    /// own word; [`Self::runs_window`] predicts it). Copies 4 bytes, counted. False before
    /// any run.
    pub fn window_ran(&mut self) -> Result<bool, GpuError> {
        let stream = Arc::clone(&self.gpu.compute);
        let Some(flags) = self.stalled.try_get() else {
            return Ok(false);
        };
        self.bus.d2h(&stream, || {
            self.flag_host.download_range(&stream, flags, 1..2)?;
            Ok(4)
        })?;
        let ran = self.flag_host.host()?[0] != 0;
        self.bus.settle()?;
        Ok(ran)
    }

    fn try_squared_error(&mut self, which: Split) -> Result<f64, GpuError> {
        let r = match which {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };
        if r.len == 0 {
            return Ok(0.0);
        }
        let n = r.len as u32;
        let (rank, width) = (self.layout.rank as u32, self.layout.width() as u32);
        let (biased, mean) = (
            i32::from(self.layout.mean.is_some()),
            self.layout.mean.unwrap_or(0.0),
        );
        let cfg = LaunchConfig {
            grid_dim: (self.gpu.grid_for(u64::from(n) * 32, BLOCK, 8), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = &self.gpu.compute;
        let kernels = MfKernels::of(&self.f32_kernels, &self.f16_kernels, self.factors);
        self.timer.start(stream)?;
        let mut b = stream.launch_builder(&kernels.error);
        b.arg(r.user.get())
            .arg(r.item.get())
            .arg(r.value.get())
            .arg(&n)
            .arg(self.users.get())
            .arg(self.items.get())
            .arg(&rank)
            .arg(&width)
            .arg(&biased)
            .arg(&mean)
            .arg(self.sse.get_mut());
        // SAFETY: indices checked at set-up; the tables are num_users/num_items x width.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(mf_squared_error)")?;
        self.timer.stop(stream, &mut self.bus.traffic)?;
        self.take_sse()
    }
}

impl MfResident for CudaMfResident {
    fn name(&self) -> &'static str {
        if self.runs_window() {
            self.wave.engine_name()
        } else {
            MfWaveKernel::NextRating.engine_name()
        }
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn setup(&mut self, s: &ResidentSetup<'_>) -> Result<(), ComputeError> {
        failed("cuda-waves", self.try_setup(s))
    }

    fn expect_items(&mut self, keys: &[u64]) -> Result<(), ComputeError> {
        failed("cuda-waves", self.try_expect(keys))
    }

    fn load_items(&mut self, first: usize, values: &[f32]) -> Result<(), ComputeError> {
        failed("cuda-waves", self.try_load(first, values))
    }

    fn run_waves(&mut self, shifts: &[u32], lr: f32, reg: f32) -> Result<f64, ComputeError> {
        failed("cuda-waves", self.try_run_waves(shifts, lr, reg))
    }

    fn item_rows(&mut self, keys: &[u64], out: &mut [f32]) -> Result<(), ComputeError> {
        failed("cuda-waves", self.try_rows(keys, out, false))
    }

    fn user_rows(&mut self, users: &[u32], out: &mut [f32]) -> Result<(), ComputeError> {
        let keys: Vec<u64> = users.iter().map(|&u| u64::from(u)).collect();
        failed("cuda-waves", self.try_rows(&keys, out, true))
    }

    fn squared_error(&mut self, which: Split) -> Result<f64, ComputeError> {
        failed("cuda-waves", self.try_squared_error(which))
    }

    fn encodes(&self, chain: DeviceChain) -> bool {
        ps_apps::mf::mf_engine_encodes(chain)
    }

    fn keep_before(&mut self, keys: &[u64]) -> Result<(), ComputeError> {
        failed("cuda-waves", self.try_keep_before(keys))
    }

    fn delta_encoded(
        &mut self,
        keys: &[u64],
        chain: DeviceChain,
        blocks: &[KeyedBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ComputeError> {
        failed(
            "cuda-waves",
            self.try_delta_encoded(keys, chain, blocks, out),
        )
    }

    fn held_rows(&mut self, keys: &[u64]) -> Result<Vec<u64>, ComputeError> {
        failed("cuda-waves", self.try_held_rows(keys))
    }

    fn delta_with_held(&mut self, keys: &[u64], out: &mut [f32]) -> Result<(), ComputeError> {
        failed("cuda-waves", self.try_delta_with_held(keys, out))
    }

    fn drop_unsent(&mut self) -> Result<f64, ComputeError> {
        failed("cuda-waves", self.try_drop_unsent())
    }

    fn traffic(&self) -> Traffic {
        self.bus.traffic
    }
}
