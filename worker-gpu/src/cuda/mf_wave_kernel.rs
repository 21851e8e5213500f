//! Which form of the MF wave kernel (`kernels/mf_sgd.cu`) the resident engine
//! ([`super::mf_resident::CudaMfResident`]) launches, and the engine's kernels of one storage
//! format with it (`MfKernels`). Sessions use the default unless the
//! worker's environment names another in `PS_MF_WAVE_KERNEL` ([`MfWaveKernel::from_env`]), so
//! that a GPU run can time a whole job with each. Also what every wave launch needs from the
//! device: its block size, the warps it can hold at once ([`lanes_of`]), and the device to
//! itself within this process ([`WAVES_ALONE`]).

use std::str::FromStr;
use std::sync::Mutex;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::CudaFunction;
use ps_apps::mf::{Factors, Layout};

use super::{Call, Gpu, GpuError};

/// Threads per block of the wave kernel: four warps, four bands.
pub(crate) const WAVE_BLOCK: u32 = 128;

/// One wave launch at a time in this process: a launch sizes its grid so that all its warps
/// are resident on an otherwise idle device (they wait on each other), so two at once could
/// each wait for warps that cannot be scheduled until the 20 s stall. Where the device runs
/// cooperative launches (`GpuInfo::cooperative`; Hopper does) the waves launch that way, and
/// the driver itself keeps every block of the grid resident, whatever else shares the device.
pub(crate) static WAVES_ALONE: Mutex<()> = Mutex::new(());

/// Warps of the wave kernels that are resident at once on every SM of the device: the
/// occupancy of the lower of the two formats' kernels.
pub(crate) fn lanes_of(gpu: &Gpu, f32k: &MfKernels, f16k: &MfKernels) -> Result<usize, GpuError> {
    gpu.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
    let mut per_sm = u32::MAX;
    for k in [f32k, f16k] {
        let n = k
            .waves
            .occupancy_max_active_blocks_per_multiprocessor(WAVE_BLOCK, 0, None)
            .call("cuOccupancyMaxActiveBlocksPerMultiprocessor(mf_sgd_waves)")?;
        per_sm = per_sm.min(n);
    }
    if per_sm == 0 {
        // The waves wait on each other: a grid sized from a guess could never finish.
        return Err(GpuError::Input(format!(
            "the MF wave kernels fit no block of {WAVE_BLOCK} threads on an SM"
        )));
    }
    Ok((per_sm * gpu.info.multiprocessors * (WAVE_BLOCK / 32)) as usize)
}

/// How each warp of the wave kernel loads its ratings' rows (`kernels/mf_sgd.cu`). `NextRating`
/// loads the next rating's rows while the current one is computed (`mf_sgd_waves`); `Window2`
/// and `Window4` copy the rows of the next 2 or 4 ratings into shared memory ahead of their turn
/// (`mf_sgd_waves_w2`, `_w4`, `kernels/mf_window.cuh`, asynchronous copies waited for by count),
/// and a rating that shares a row with one before it in the window takes that row from it. The
/// windows take plain rows of whole 16-byte pieces up to rank 128 ([`MfWaveKernel::windows`]);
/// other layouts run the next-rating loop inside the same kernels. All three run the same
/// ratings in the same order with the same arithmetic, so they give the same tables. Their
/// registers set how many warps fit on the device ([`ps_apps::mf::MfResident::lanes`]).
/// `NextRating` is the default until a GPU run shows which is faster (gpu-bench times all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfWaveKernel {
    #[default]
    NextRating,
    Window2,
    Window4,
}

impl MfWaveKernel {
    /// Every kind, for benchmarks and conformance.
    pub const ALL: [MfWaveKernel; 3] = [
        MfWaveKernel::NextRating,
        MfWaveKernel::Window2,
        MfWaveKernel::Window4,
    ];

    /// The environment variable that picks the sessions' kernel.
    pub const ENV: &'static str = "PS_MF_WAVE_KERNEL";

    /// The kernel `PS_MF_WAVE_KERNEL` names (`None` where it is unset or empty), or an error
    /// that says which names there are.
    pub fn from_env() -> Result<Option<Self>, String> {
        crate::cuda::choice_from_env(Self::ENV)
    }

    /// Whether this kernel runs its window for rows of `layout` stored as `factors` (the
    /// kernel's `mf_window_fits`): plain rows (no bias) of whole 16-byte pieces, rank at most
    /// 128. Elsewhere, and on devices older than compute capability 8.0 (no `cp.async`; see
    /// `CudaMfResident::runs_window`), the window kernels run the next-rating loop.
    pub fn windows(self, layout: Layout, factors: Factors) -> bool {
        self != MfWaveKernel::NextRating
            && layout.mean.is_none()
            && layout.rank <= 128
            && (layout.rank * factors.bytes()).is_multiple_of(16)
    }

    /// The resident engine's name with this kernel (the worker logs it).
    pub fn engine_name(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "cuda-waves",
            MfWaveKernel::Window2 => "cuda-waves-w2",
            MfWaveKernel::Window4 => "cuda-waves-w4",
        }
    }

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "next-rating",
            MfWaveKernel::Window2 => "window-2",
            MfWaveKernel::Window4 => "window-4",
        }
    }

    pub(crate) fn entry(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "mf_sgd_waves",
            MfWaveKernel::Window2 => "mf_sgd_waves_w2",
            MfWaveKernel::Window4 => "mf_sgd_waves_w4",
        }
    }

    /// The driver call that launches it, for errors.
    pub(crate) fn launch(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "cuLaunchKernel(mf_sgd_waves)",
            MfWaveKernel::Window2 => "cuLaunchKernel(mf_sgd_waves_w2)",
            MfWaveKernel::Window4 => "cuLaunchKernel(mf_sgd_waves_w4)",
        }
    }

    /// The driver call that launches it cooperatively (every block resident at once), for
    /// errors: `CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE` says the grid does not fit the device.
    pub(crate) fn launch_cooperative(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "cuLaunchCooperativeKernel(mf_sgd_waves)",
            MfWaveKernel::Window2 => "cuLaunchCooperativeKernel(mf_sgd_waves_w2)",
            MfWaveKernel::Window4 => "cuLaunchCooperativeKernel(mf_sgd_waves_w4)",
        }
    }
}

/// The kernels of one storage format.
pub(crate) struct MfKernels {
    pub(crate) waves: CudaFunction,
    pub(crate) error: CudaFunction,
    pub(crate) scatter: CudaFunction,
    pub(crate) gather: CudaFunction,
}

impl MfKernels {
    /// The kernels of `factors` (a function of the two fields, so that a launch can borrow the
    /// engine's other fields mutably beside it).
    pub(crate) fn of<'a>(
        f32k: &'a MfKernels,
        f16k: &'a MfKernels,
        factors: Factors,
    ) -> &'a MfKernels {
        match factors {
            Factors::F32 => f32k,
            Factors::F16 => f16k,
        }
    }

    pub(crate) fn load(
        gpu: &Gpu,
        factors: Factors,
        wave: MfWaveKernel,
    ) -> Result<MfKernels, GpuError> {
        let suffix = match factors {
            Factors::F32 => "",
            Factors::F16 => "_f16",
        };
        let f = |name: &str| gpu.function("mf_sgd", &format!("{name}{suffix}"));
        let waves = f(wave.entry())?;
        if wave != MfWaveKernel::NextRating {
            // The windows keep their slots in shared memory. Every warp of a launch must be
            // resident (the waits between neighbours rely on it): ask for the whole carveout as
            // shared memory, so that a smaller one chosen at launch never holds fewer blocks than
            // the occupancy that sized the lanes (the windows read rows through L2 only).
            gpu.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
            waves
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                    100,
                )
                .call("cuFuncSetAttribute(PREFERRED_SHARED_MEMORY_CARVEOUT)")?;
        }
        Ok(MfKernels {
            waves,
            error: f("mf_squared_error")?,
            scatter: f("mf_scatter_rows")?,
            gather: f("mf_gather_rows")?,
        })
    }
}

impl FromStr for MfWaveKernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "no MF wave kernel {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_are_refused() {
        for k in MfWaveKernel::ALL {
            assert_eq!(k.name().parse::<MfWaveKernel>(), Ok(k));
            assert!(k.engine_name().starts_with("cuda-waves"));
        }
        assert_eq!(" window-4 ".parse(), Ok(MfWaveKernel::Window4));
        let biased = Layout {
            rank: 32,
            mean: Some(3.0),
        };
        let w = MfWaveKernel::Window4;
        assert!(w.windows(Layout::plain(128), Factors::F32));
        assert!(w.windows(Layout::plain(8), Factors::F16));
        assert!(w.windows(Layout::plain(4), Factors::F32));
        assert!(!w.windows(Layout::plain(4), Factors::F16), "8 bytes a row");
        assert!(!w.windows(Layout::plain(130), Factors::F32));
        assert!(
            !w.windows(Layout::plain(136), Factors::F16),
            "past rank 128"
        );
        assert!(!w.windows(biased, Factors::F32));
        assert!(!MfWaveKernel::NextRating.windows(Layout::plain(128), Factors::F32));
        let e = "window-3".parse::<MfWaveKernel>().unwrap_err();
        assert!(
            e.contains("window-3") && e.contains("next-rating, window-2, window-4"),
            "{e}"
        );
    }
}
