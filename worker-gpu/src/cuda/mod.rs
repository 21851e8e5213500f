//! The CUDA backend: one [`Gpu`] per worker engine (the device's primary context, a compute
//! stream and a copy stream, the kernels loaded from NVRTC's PTX), reusable device and pinned
//! host buffers ([`buffers`]), and one engine per compute trait.
//!
//! Nothing here is called unless [`probe`] succeeded: cudarc panics when `libcuda` or `libnvrtc`
//! is missing, so [`Gpu::open`] checks both libraries first and answers with a [`GpuError`].
//!
//! A CUDA failure in the middle of a run (for example an out-of-memory on a shared card) comes
//! back through the compute traits as a typed [`ps_apps::ComputeError`] naming the failed call;
//! construction, where a missing driver, device or compiler is found, returns a [`GpuError`].

pub mod buffers;
pub mod bus;
pub mod codec;
pub mod dense;
pub mod lda;
pub mod lda_compact;
pub mod lda_resident;
pub mod lda_wire;
pub mod lda_word;
pub mod lr;
pub mod lr_resident;
pub mod mf;
pub mod mf_resident;
pub mod mf_wave_kernel;
pub mod mlp;
pub mod mlp_resident;
pub mod rng;
pub mod topk;
pub mod widen;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use thiserror::Error;

use crate::kernels::{self, KernelError};
use ps_apps::ComputeError;

/// Why the CUDA backend cannot be used, or why a CUDA call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GpuError {
    #[error(
        "the NVIDIA driver library (libcuda.so.1) could not be loaded: this machine has no \
         NVIDIA driver"
    )]
    NoDriver,
    #[error("no CUDA device {ordinal}: the driver sees {count}")]
    NoDevice { ordinal: u32, count: i32 },
    #[error("{0}")]
    Kernel(#[from] KernelError),
    #[error("CUDA call {call} failed: {error}")]
    Driver { call: &'static str, error: String },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Compute(#[from] ComputeError),
}

/// Adds the name of the failed call to a driver error.
pub(crate) trait Call<T> {
    fn call(self, what: &'static str) -> Result<T, GpuError>;
}

impl<T> Call<T> for Result<T, DriverError> {
    fn call(self, what: &'static str) -> Result<T, GpuError> {
        self.map_err(|e| GpuError::Driver {
            call: what,
            error: e.to_string(),
        })
    }
}

/// What the driver reports about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: u32,
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub capability: (i32, i32),
    pub total_mem: usize,
    pub multiprocessors: u32,
    /// The driver's CUDA version, e.g. 13000 for 13.0.
    pub driver_version: i32,
    /// Whether the device runs cooperative launches: every block of the grid resident at once,
    /// or the launch refused. The MF wave kernel's warps wait on each other, so it launches
    /// that way where it can.
    pub cooperative: bool,
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cuda:{} {} (sm_{}{}, {} SMs, {:.1} GiB, driver CUDA {}.{})",
            self.ordinal,
            self.name,
            self.capability.0,
            self.capability.1,
            self.multiprocessors,
            self.total_mem as f64 / (1u64 << 30) as f64,
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10
        )
    }
}

/// Whether `libcuda` loads (checked once per process).
pub fn driver_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the candidate names and closes what it opened.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// Checks that CUDA device `ordinal` can run the kernels: the driver loads, the device exists,
/// NVRTC loads. Creates (retains) the device's primary context to read its properties.
pub fn probe(ordinal: u32) -> Result<GpuInfo, GpuError> {
    Gpu::open(ordinal).map(|g| g.info.clone())
}

/// One worker's handle on a device: the primary context, its own compute and copy streams, and
/// the kernel modules loaded so far.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    /// Kernels run here.
    pub(crate) compute: Arc<CudaStream>,
    /// Host-device copies run here, overlapping the kernels of the compute stream (cudarc's
    /// per-buffer events order a buffer's copy before the kernels that read it).
    pub(crate) copy: Arc<CudaStream>,
    pub info: GpuInfo,
    arch: &'static str,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("info", &self.info)
            .field("arch", &self.arch)
            .finish()
    }
}

/// The NVRTC architecture for a compute capability, as a `'static` name (one per capability per
/// process). Devices newer than Hopper get `compute_90` PTX, which their driver JIT-compiles.
fn arch_name(cap: (i32, i32)) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<(i32, i32), &'static str>>> = OnceLock::new();
    let cap = if cap.0 > 9 { (9, 0) } else { cap };
    let mut map = NAMES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(cap)
        .or_insert_with(|| Box::leak(format!("compute_{}{}", cap.0, cap.1).into_boxed_str()))
}

impl Gpu {
    /// Opens device `ordinal` with two new streams. Fails with a typed error, never a panic, when
    /// the driver, the device or NVRTC is missing.
    pub fn open(ordinal: u32) -> Result<Arc<Gpu>, GpuError> {
        if !driver_available() {
            return Err(GpuError::NoDriver);
        }
        if !kernels::nvrtc_available() {
            // The typed NVRTC error, with the names that were tried.
            kernels::nvrtc_version()?;
        }
        let count = CudaContext::device_count().call("cuDeviceGetCount")?;
        if i64::from(ordinal) >= i64::from(count) {
            return Err(GpuError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal as usize).call("cuDevicePrimaryCtxRetain")?;
        let compute = ctx.new_stream().call("cuStreamCreate")?;
        let copy = ctx.new_stream().call("cuStreamCreate")?;
        let capability = ctx.compute_capability().call("cuDeviceGetAttribute")?;
        let mut driver_version = 0;
        // SAFETY: the driver library is loaded (checked above); the pointer is valid.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) }
            .result()
            .call("cuDriverGetVersion")?;
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .call("cuDeviceGetAttribute")?;
        let cooperative = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
            )
            .call("cuDeviceGetAttribute")?;
        let info = GpuInfo {
            ordinal,
            name: ctx.name().call("cuDeviceGetName")?,
            capability,
            total_mem: ctx.total_mem().call("cuDeviceTotalMem")?,
            multiprocessors: multiprocessors.max(1) as u32,
            driver_version,
            cooperative: cooperative != 0,
        };
        Ok(Arc::new(Gpu {
            arch: arch_name(capability),
            ctx,
            compute,
            copy,
            info,
            modules: Mutex::new(HashMap::new()),
        }))
    }

    /// The NVRTC architecture the kernels are compiled for on this device.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// Entry point `entry` of kernel file `kernel` (compiled by NVRTC on first use in the process,
    /// loaded into this context on first use by this handle).
    pub fn function(&self, kernel: &'static str, entry: &str) -> Result<CudaFunction, GpuError> {
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(kernel) {
                Some(m) => Arc::clone(m),
                None => {
                    let ptx = kernels::compile_ptx_named(kernel, self.arch)?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_src(ptx.to_string()))
                        .call("cuModuleLoadData (a PTX newer than the driver fails here)")?;
                    modules.insert(kernel, Arc::clone(&m));
                    m
                }
            }
        };
        module.load_function(entry).call("cuModuleGetFunction")
    }

    /// A grid that fills the device for a grid-stride kernel: `blocks_per_sm` blocks per
    /// multiprocessor, never more than `work` blocks of `threads`.
    pub fn grid_for(&self, work: u64, threads: u32, blocks_per_sm: u32) -> u32 {
        let needed = work.div_ceil(u64::from(threads)).max(1);
        let full = u64::from(self.info.multiprocessors * blocks_per_sm);
        needed.min(full).min(u64::from(u32::MAX)) as u32
    }

    /// Waits for both streams.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.compute.synchronize().call("cuStreamSynchronize")?;
        self.copy.synchronize().call("cuStreamSynchronize")
    }
}

/// A driver or kernel error of a compute-trait method, as the trait's typed error: the clock's
/// work is lost and the caller decides what happens next.
/// The choice the environment variable `var` names, parsed (`None` where it is unset or empty),
/// or an error that names the variable, its value and (through `T`'s error) the names there are:
/// how a GPU run picks a kernel variant for a whole job.
pub(crate) fn choice_from_env<T: std::str::FromStr<Err = String>>(
    var: &str,
) -> Result<Option<T>, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            v.parse().map(Some).map_err(|e| format!("{var}={v:?}: {e}"))
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{var}: {e}")),
    }
}

pub(crate) fn failed<T>(engine: &'static str, r: Result<T, GpuError>) -> Result<T, ComputeError> {
    r.map_err(|e| ComputeError {
        engine,
        message: e.to_string(),
    })
}

impl Gpu {
    /// The stream kernels run on (benchmarks time work enqueued there).
    pub fn compute_stream(&self) -> &Arc<CudaStream> {
        &self.compute
    }

    /// The stream host-device copies run on.
    pub fn copy_stream(&self) -> &Arc<CudaStream> {
        &self.copy
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}
