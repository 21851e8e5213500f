//! The CUDA kernels of `kernels/*.cu`, embedded in the binary, and their compilation to PTX by
//! NVRTC at run time.
//!
//! NVRTC comes through `cudarc` with dynamic loading: `libnvrtc.so` is opened with `dlopen` on
//! first use (found through the loader's search path, e.g. `LD_LIBRARY_PATH`), so building needs
//! no CUDA toolkit. A machine without the library gets [`KernelError::NvrtcMissing`]: this module
//! checks that the library loads before calling into it, because cudarc itself panics when it
//! cannot find it.
//!
//! Compiled PTX is cached per process, keyed by kernel file and architecture.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::nvrtc::{CompileError, CompileOptions};
use thiserror::Error;

/// The virtual architecture the worker compiles for by default (Hopper, H100 / H200).
pub const DEFAULT_ARCH: &str = "compute_90";

/// One kernel source file and the entry points (`extern "C" __global__` functions) it defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// Short name, the file name without `.cu`.
    pub name: &'static str,
    /// File name under `kernels/`.
    pub file: &'static str,
    /// The shared headers (`kernels/*.cuh`, see [`HEADERS`]) prepended to the file, in order.
    pub headers: &'static [&'static str],
    /// What NVRTC compiles, embedded at build time: the headers' sources, then (when there are
    /// headers) a `#line 1 "FILE"` directive, then the file's own source.
    pub source: &'static str,
    /// Names of the entry points, in source order.
    pub entries: &'static [&'static str],
}

/// A shared header of device code, `kernels/NAME.cuh`: NVRTC compiles every kernel file alone
/// (no `#include`), so the kernels that need a header name it and get its text prepended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// File name under `kernels/`.
    pub file: &'static str,
    /// The source, embedded at build time.
    pub source: &'static str,
}

macro_rules! header {
    ($name:literal) => {
        Header {
            file: concat!($name, ".cuh"),
            source: include_str!(concat!("../../kernels/", $name, ".cuh")),
        }
    };
}

/// Every header of `kernels/` (a unit test checks the list against the directory).
pub const HEADERS: &[Header] = &[
    header!("bitonic"),
    header!("lda_rows"),
    header!("lda_word"),
    header!("lr"),
    header!("mf_step"),
    header!("mf_window"),
    header!("philox"),
    header!("slots"),
    header!("sparse_index"),
    header!("values"),
    header!("visit"),
];

macro_rules! kernel {
    ($name:literal, [$($entry:literal),+ $(,)?] $(, headers [$($h:literal),+ $(,)?])?) => {
        Kernel {
            name: $name,
            file: concat!($name, ".cu"),
            headers: &[$($(concat!($h, ".cuh")),+)?],
            source: concat!(
                $($(include_str!(concat!("../../kernels/", $h, ".cuh")),)+
                "#line 1 \"", $name, ".cu\"\n",)?
                include_str!(concat!("../../kernels/", $name, ".cu"))
            ),
            entries: &[$($entry),+],
        }
    };
}

/// Every kernel file of `kernels/` (a unit test checks that the list is complete and that the
/// entry points match the sources).
pub const KERNELS: &[Kernel] = &[
    kernel!(
        "mf_sgd",
        [
            "mf_sgd",
            "mf_sgd_waves",
            "mf_sgd_waves_f16",
            "mf_sgd_waves_w2",
            "mf_sgd_waves_w2_f16",
            "mf_sgd_waves_w4",
            "mf_sgd_waves_w4_f16",
            "mf_squared_error",
            "mf_squared_error_f16",
            "mf_scatter_rows",
            "mf_scatter_rows_f16",
            "mf_gather_rows",
            "mf_gather_rows_f16",
            "mf_held_rows"
        ],
        headers["mf_step", "mf_window"]
    ),
    kernel!(
        "lda_gibbs",
        [
            "lda_gibbs_sweep",
            "lda_gibbs_sweep_ends",
            "lda_gibbs_sample_token",
            "lda_gibbs_sample_token_ends",
            "lda_compact_delta"
        ],
        headers["philox"]
    ),
    kernel!(
        "lda_resident",
        [
            "lda_loglik",
            "lda_sum_partials",
            "lda_scatter_rows",
            "lda_scatter_rice",
            "lda_delta_count",
            "lda_delta_chunks",
            "lda_delta_scan",
            "lda_delta_write",
            "lda_delta_ends"
        ],
        headers["lda_rows"]
    ),
    kernel!(
        "lda_wire",
        [
            "lda_wire_touched",
            "lda_wire_rank",
            "lda_wire_index",
            "lda_wire_plan",
            "lda_wire_offsets",
            "lda_wire_write"
        ],
        headers["sparse_index"]
    ),
    kernel!(
        "lda_word",
        [
            "lda_word_doc_lists",
            "lda_word_sample",
            "lda_word_sample_token",
            "lda_word_apply"
        ],
        headers["philox", "lda_word"]
    ),
    kernel!(
        "mlp",
        [
            "mlp_sgemm",
            "mlp_softmax_xent",
            "mlp_bias_act",
            "mlp_relu_backward",
            "mlp_bias_grad"
        ]
    ),
    kernel!(
        "mlp_resident",
        [
            "mlp_visit_order",
            "mlp_gather_batch",
            "mlp_sgd_step",
            "mlp_delta",
            "mlp_init_glorot"
        ],
        headers["visit"]
    ),
    kernel!("lr_grad", ["lr_gradient"], headers["lr"]),
    kernel!(
        "lr_resident",
        [
            "lr_visit_rows",
            "lr_slots_mark",
            "lr_slots_count",
            "lr_slots_scan",
            "lr_slots_write",
            "lr_scatter",
            "lr_gather",
            "lr_gradient_rows"
        ],
        headers["lr", "visit", "slots"]
    ),
    kernel!(
        "codecs",
        [
            "codec_f32_to_f16",
            "codec_f16_to_f32",
            "codec_bf16_to_f32",
            "codec_levels_to_f32",
            "codec_topk_threshold",
            "codec_topk_samples",
            "codec_topk_compact",
            "codec_ef_accumulate",
            "codec_ef_subtract"
        ],
        headers["values", "bitonic"]
    ),
    kernel!(
        "codec_dense",
        [
            "codec_dense_accumulate",
            "codec_dense_add_to",
            "codec_dense_halves",
            "codec_dense_groups",
            "codec_dense_subtract"
        ],
        headers["values"]
    ),
    kernel!(
        "codec_topk",
        ["codec_topk_trim", "codec_topk_scatter"],
        headers["bitonic"]
    ),
    kernel!(
        "codec_index",
        ["codec_index_plan", "codec_index_write"],
        headers["sparse_index"]
    ),
    kernel!(
        "codec_select",
        [
            "codec_select_hist",
            "codec_select_pick",
            "codec_select_count",
            "codec_select_scan",
            "codec_select_write"
        ]
    ),
    kernel!(
        "codec_energy",
        ["codec_energy_max", "codec_energy_hist", "codec_energy_pick"]
    ),
    kernel!("rng", ["rng_philox_uniforms"], headers["philox"]),
];

/// The kernel called `name` (file name without `.cu`).
pub fn kernel(name: &str) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name)
}

/// Why a kernel could not be compiled.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KernelError {
    #[error(
        "the NVRTC library could not be loaded (tried {candidates}); put the directory that \
         holds libnvrtc.so.12 on LD_LIBRARY_PATH (e.g. from the PyPI wheel \
         nvidia-cuda-nvrtc-cu12, as .ci/check-kernels does)"
    )]
    NvrtcMissing { candidates: String },
    #[error("no kernel named {0:?}")]
    UnknownKernel(String),
    #[error("bad GPU architecture {0:?}: expected compute_XY or sm_XY")]
    BadArch(String),
    #[error("NVRTC failed to compile {file} for {arch}: {error}\n{log}")]
    Compile {
        file: String,
        arch: String,
        /// The NVRTC status or the failing step.
        error: String,
        /// NVRTC's program log (the compiler's messages), possibly empty.
        log: String,
    },
    #[error("NVRTC panicked while compiling {file}: {message}")]
    Panicked { file: String, message: String },
    #[error("the PTX of {file} lacks entry point {entry}")]
    MissingEntry { file: String, entry: String },
}

/// Whether the NVRTC library loads (checked once per process; the loader's search path is
/// fixed at process start anyway).
pub fn nvrtc_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the candidate names and closes what it opened.
    *PRESENT.get_or_init(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
}

fn require_nvrtc() -> Result<(), KernelError> {
    if nvrtc_available() {
        Ok(())
    } else {
        let mut names: Vec<String> = Vec::new();
        for n in cudarc::get_lib_name_candidates("nvrtc") {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        Err(KernelError::NvrtcMissing {
            candidates: names.join(", "),
        })
    }
}

/// The version of the loaded NVRTC library, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), KernelError> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        Ok((major, minor))
    } else {
        Err(KernelError::Compile {
            file: String::new(),
            arch: String::new(),
            error: format!("nvrtcVersion failed: {status:?}"),
            log: String::new(),
        })
    }
}

fn check_arch(arch: &str) -> Result<(), KernelError> {
    let digits = arch
        .strip_prefix("compute_")
        .or_else(|| arch.strip_prefix("sm_"))
        .unwrap_or("");
    let ok = digits.len() >= 2
        && digits
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || (i >= 2 && c.is_ascii_lowercase()));
    if ok {
        Ok(())
    } else {
        Err(KernelError::BadArch(arch.to_string()))
    }
}

type PtxCache = Mutex<HashMap<(&'static str, &'static str), Arc<str>>>;

fn cache() -> &'static PtxCache {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The options every kernel is compiled with.
fn options(file: &str, arch: &'static str) -> CompileOptions {
    CompileOptions {
        arch: Some(arch),
        name: Some(file.to_string()),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Compiles a CUDA C++ source to PTX for `arch`, without the cache.
fn compile_source(file: &str, source: &str, arch: &'static str) -> Result<String, KernelError> {
    check_arch(arch)?;
    require_nvrtc()?;
    if source.contains('\0') {
        return Err(KernelError::Compile {
            file: file.into(),
            arch: arch.into(),
            error: "the source contains a NUL byte".into(),
            log: String::new(),
        });
    }
    let opts = options(file, arch);
    let result = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(source, opts).map(|ptx| ptx.to_src())
    }))
    .map_err(|p| KernelError::Panicked {
        file: file.into(),
        message: panic_message(p.as_ref()),
    })?;
    result.map_err(|e| {
        let (error, log) = match e {
            CompileError::CompileError { nvrtc, log, .. } => {
                (format!("{nvrtc:?}"), log.to_string_lossy().into_owned())
            }
            other => (format!("{other:?}"), String::new()),
        };
        KernelError::Compile {
            file: file.into(),
            arch: arch.into(),
            error,
            log,
        }
    })
}

/// Whether `ptx` defines the entry point `entry`.
pub fn ptx_has_entry(ptx: &str, entry: &str) -> bool {
    ptx.lines().any(|l| {
        l.trim_start()
            .strip_prefix(".visible .entry ")
            .or_else(|| l.trim_start().strip_prefix(".entry "))
            .is_some_and(|rest| {
                rest.strip_prefix(entry)
                    .is_some_and(|r| r.starts_with('(') || r.trim().is_empty())
            })
    })
}

/// The PTX of `kernel` for `arch` (e.g. [`DEFAULT_ARCH`]), compiled by NVRTC on first use and
/// cached for the rest of the process. Checks that every listed entry point is in the PTX.
pub fn compile_ptx(kernel: &'static Kernel, arch: &'static str) -> Result<Arc<str>, KernelError> {
    check_arch(arch)?;
    let key = (kernel.file, arch);
    if let Some(ptx) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(ptx));
    }
    // Compiled outside the lock: two threads may both compile a kernel once, never block.
    let ptx = compile_source(kernel.file, kernel.source, arch)?;
    if let Some(missing) = kernel.entries.iter().find(|e| !ptx_has_entry(&ptx, e)) {
        return Err(KernelError::MissingEntry {
            file: kernel.file.into(),
            entry: (*missing).into(),
        });
    }
    let ptx: Arc<str> = ptx.into();
    let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
    Ok(Arc::clone(map.entry(key).or_insert(ptx)))
}

/// [`compile_ptx`] by kernel name.
pub fn compile_ptx_named(name: &str, arch: &'static str) -> Result<Arc<str>, KernelError> {
    let k = kernel(name).ok_or_else(|| KernelError::UnknownKernel(name.to_string()))?;
    compile_ptx(k, arch)
}

#[cfg(test)]
mod tests;
