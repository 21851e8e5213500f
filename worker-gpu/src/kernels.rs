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
    /// The CUDA C++ source, embedded at build time.
    pub source: &'static str,
    /// Names of the entry points, in source order.
    pub entries: &'static [&'static str],
}

macro_rules! kernel {
    ($name:literal, [$($entry:literal),+ $(,)?]) => {
        Kernel {
            name: $name,
            file: concat!($name, ".cu"),
            source: include_str!(concat!("../../kernels/", $name, ".cu")),
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
            "mf_squared_error",
            "mf_scatter_rows",
            "mf_gather_rows"
        ]
    ),
    kernel!("lda_gibbs", ["lda_gibbs_sweep", "lda_compact_delta"]),
    kernel!(
        "mlp",
        [
            "mlp_sgemm",
            "mlp_softmax_xent",
            "mlp_relu_backward",
            "mlp_bias_grad"
        ]
    ),
    kernel!("lr_grad", ["lr_gradient"]),
    kernel!(
        "codecs",
        [
            "codec_f32_to_f16",
            "codec_f16_to_f32",
            "codec_topk_threshold",
            "codec_topk_compact",
            "codec_ef_accumulate",
            "codec_ef_subtract"
        ]
    ),
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
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn kernels_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels")
    }

    /// Names of the `__global__` functions of a source, checking that each is `extern "C"`.
    fn global_functions(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find("__global__") {
            let before = rest[..at].trim_end();
            assert!(
                before.ends_with("extern \"C\""),
                "a __global__ function is not extern \"C\": {:?}",
                &rest[at..(at + 80).min(rest.len())]
            );
            let mut s = rest[at + "__global__".len()..].trim_start();
            s = s
                .strip_prefix("void")
                .expect("__global__ void")
                .trim_start();
            if let Some(after) = s.strip_prefix("__launch_bounds__") {
                let close = after.find(')').expect("__launch_bounds__(...)");
                s = after[close + 1..].trim_start();
            }
            let name: String = s
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                s[name.len()..].trim_start().starts_with('('),
                "cannot parse the declaration of {name}"
            );
            out.push(name);
            rest = &rest[at + "__global__".len()..];
        }
        out
    }

    #[test]
    fn every_kernel_file_is_listed() {
        let on_disk: BTreeSet<String> = std::fs::read_dir(kernels_dir())
            .expect("kernels/ directory")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        let listed: BTreeSet<String> = KERNELS.iter().map(|k| k.file.to_string()).collect();
        assert_eq!(on_disk, listed, "kernels/*.cu and KERNELS differ");
        for k in KERNELS {
            let text = std::fs::read_to_string(kernels_dir().join(k.file)).unwrap();
            assert_eq!(text, k.source, "{} embedded source is stale", k.file);
            assert_eq!(k.file, format!("{}.cu", k.name));
            assert_eq!(kernel(k.name), Some(k));
        }
        assert_eq!(kernel("nope"), None);
    }

    #[test]
    fn entry_points_match_the_sources() {
        let mut all = BTreeSet::new();
        for k in KERNELS {
            let found = global_functions(k.source);
            assert_eq!(found, k.entries, "{}: entry points", k.file);
            for e in k.entries {
                assert!(all.insert(*e), "entry point {e} defined twice");
            }
            assert!(
                !k.source.contains("#include"),
                "{}: kernels must compile with NVRTC alone (no #include)",
                k.file
            );
        }
    }

    #[test]
    fn parses_declarations() {
        let src = "extern \"C\" __global__ void a(int x) {}\n\
                   extern \"C\" __global__ void __launch_bounds__(256)\n    b (float* y) {}";
        assert_eq!(global_functions(src), ["a", "b"]);
    }

    #[test]
    fn arch_names() {
        for ok in [
            "compute_90",
            "sm_90",
            "compute_90a",
            "sm_100",
            "compute_120",
        ] {
            assert_eq!(check_arch(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "90",
            "compute_",
            "sm_9",
            "compute_9x",
            "gfx90a",
            "sm_90 -G",
        ] {
            assert!(
                matches!(check_arch(bad), Err(KernelError::BadArch(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            compile_ptx(&KERNELS[0], "bogus"),
            Err(KernelError::BadArch(_))
        ));
        assert!(matches!(
            compile_ptx_named("nope", DEFAULT_ARCH),
            Err(KernelError::UnknownKernel(_))
        ));
    }

    #[test]
    fn finds_ptx_entries() {
        let ptx = "//\n.visible .entry mf_sgd(\n\t.param .u64 a\n)\n.entry mf_sgd_x(\n";
        assert!(ptx_has_entry(ptx, "mf_sgd"));
        assert!(ptx_has_entry(ptx, "mf_sgd_x"));
        assert!(!ptx_has_entry(ptx, "mf"));
        assert!(!ptx_has_entry(ptx, "lr_gradient"));
    }

    #[test]
    fn every_kernel_compiles_to_ptx_when_nvrtc_is_present() {
        if !nvrtc_available() {
            // Never a panic: a typed error.
            let err = compile_ptx(&KERNELS[0], DEFAULT_ARCH).unwrap_err();
            assert!(matches!(err, KernelError::NvrtcMissing { .. }), "{err}");
            assert!(nvrtc_version().is_err());
            println!(
                "SKIP: libnvrtc not loadable, kernels not compiled (.ci/check-kernels provides it)"
            );
            return;
        }
        let (major, minor) = nvrtc_version().unwrap();
        assert!(major >= 12, "NVRTC {major}.{minor}");
        for k in KERNELS {
            let ptx = compile_ptx(k, DEFAULT_ARCH).unwrap_or_else(|e| panic!("{e}"));
            assert!(ptx.contains(".target sm_90"), "{}: target", k.file);
            for e in k.entries {
                assert!(
                    ptx_has_entry(&ptx, e),
                    "{}: no entry {e} in the PTX",
                    k.file
                );
            }
            // Cached: the same PTX object comes back.
            let again = compile_ptx(k, DEFAULT_ARCH).unwrap();
            assert!(Arc::ptr_eq(&ptx, &again), "{}: not cached", k.file);
        }
    }

    #[test]
    fn compile_errors_carry_the_log_when_nvrtc_is_present() {
        if !nvrtc_available() {
            println!("SKIP: libnvrtc not loadable");
            return;
        }
        let err = compile_source(
            "broken.cu",
            "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
            DEFAULT_ARCH,
        )
        .unwrap_err();
        match err {
            KernelError::Compile { file, log, .. } => {
                assert_eq!(file, "broken.cu");
                assert!(log.contains("undefined_name"), "log: {log}");
            }
            other => panic!("expected a compile error, got {other}"),
        }
    }
}
