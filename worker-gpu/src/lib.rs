//! GPU workers: the CUDA backend of each application's compute trait, and the choice of backend
//! at run time (`--device auto|cpu|cpu-resident|cuda[:N]`).
//!
//! - [`kernels`]: the CUDA sources of `kernels/`, embedded, compiled by NVRTC at run time and
//!   cached per process; [`ptxas`] parses `ptxas -v` for the `kernel-check` binary.
//! - [`cuda`]: one context handle and two streams per engine, reusable device and pinned host
//!   buffers, and the CUDA engines [`cuda::mf::CudaMf`], [`cuda::lda::CudaLda`],
//!   [`cuda::mlp::CudaMlp`], [`cuda::lr::CudaLr`] and the on-device delta codecs
//!   [`cuda::codec::CudaCodec`]. Each engine implements the same compute trait as the CPU
//!   engines of `ps-apps`, whose CPU oracle it is checked against (`tests/conformance.rs`);
//!   [`cuda::rng::CudaRng`] draws `ps_apps::philox`'s uniforms on the device, bit for bit;
//!   [`DeviceEngines`] hands them to the apps' sessions.
//! - [`select`] resolves `--device`; `auto` takes the first GPU when one works and says why it
//!   did not otherwise. With `PS_REQUIRE_GPU=1` a fallback to the CPU is an error instead.
//!
//! cudarc loads `libcuda` and `libnvrtc` with `dlopen`, so this crate builds with no CUDA
//! toolkit, and a machine without a driver gets a typed error ([`DeviceError`]), never a panic.
//! This crate must not depend on the server or on networking.

use ps_apps::app::{CpuEngines, Engines};
use ps_apps::lda::{HostLdaResident, LdaCompute, LdaResident};
use ps_apps::lr::{HostLrResident, LrCompute, LrResident};
use ps_apps::mf::{HostResident, MfCompute, MfResident};
use ps_apps::mlp::{HostMlpResident, MlpCompute, MlpResident};
use ps_apps::AppError;
use thiserror::Error;

pub mod cuda;
pub mod kernels;
pub mod ptxas;

use cuda::lda::CudaLda;
use cuda::lda_resident::CudaLdaResident;
use cuda::lda_word::{CudaWordLda, LdaSampler};
use cuda::lr::CudaLr;
use cuda::lr_resident::CudaLrResident;
use cuda::mf::CudaMf;
use cuda::mf_resident::CudaMfResident;
use cuda::mf_wave_kernel::MfWaveKernel;
use cuda::mlp::{CudaMlp, MlpGemm};
use cuda::mlp_resident::CudaMlpResident;
use cuda::{Gpu, GpuError};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeviceError {
    #[error("bad --device {0:?}: expected auto, cpu, cpu-resident, cuda or cuda:N")]
    Parse(String),
    #[error("CUDA device requested but unavailable: {0}")]
    CudaUnavailable(String),
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    CpuResident,
    Cuda(u32),
}

impl std::str::FromStr for DeviceRequest {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cpu-resident" => Ok(DeviceRequest::CpuResident),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

/// The backend a worker computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// The sessions' device paths (state resident in an engine, the delta compressed by the
    /// engine) run by the engines' CPU oracles: what a GPU worker does, minus the kernels, for
    /// tests and for checking a job before it goes to a GPU.
    CpuResident,
    /// CUDA device ordinal.
    Cuda(u32),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::CpuResident => write!(f, "cpu-resident"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The chosen device and, for `auto`, why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub device: Device,
    pub reason: String,
}

/// True when the environment says a GPU must be used (`PS_REQUIRE_GPU=1`): a fallback to the
/// CPU, or a GPU test that would skip, fails instead.
pub fn gpu_required() -> bool {
    std::env::var("PS_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1")
}

fn unavailable(ordinal: u32, e: GpuError) -> DeviceError {
    DeviceError::CudaUnavailable(format!("cuda:{ordinal}: {e}"))
}

/// Resolves a request. `cuda[:N]` fails with a typed error rather than falling back to the CPU;
/// `auto` picks `cuda:0` when it opens and compiles kernels, else the CPU (an error instead
/// when [`gpu_required`]).
/// Checks the kernel, sampler and encoding choices the environment names
/// (`PS_MF_WAVE_KERNEL`, `PS_MLP_GEMM`, `PS_LDA_SAMPLER`, `PS_DEVICE_CODEC`): a launcher calls
/// it so that a misspelt one stops the job before anything starts, with the message the
/// workers would give (they check them again where they build their engines and sessions, on
/// every device).
pub fn check_env_choices() -> Result<(), String> {
    MfWaveKernel::from_env()?;
    MlpGemm::from_env()?;
    LdaSampler::from_env()?;
    ps_apps::app::device_codec::engines_encode()?;
    Ok(())
}

pub fn select(req: DeviceRequest) -> Result<Selection, DeviceError> {
    match req {
        DeviceRequest::Cpu => Ok(Selection {
            device: Device::Cpu,
            reason: "requested".into(),
        }),
        DeviceRequest::CpuResident => Ok(Selection {
            device: Device::CpuResident,
            reason: "requested: the GPU workers' resident paths on their CPU oracles".into(),
        }),
        DeviceRequest::Cuda(n) => {
            let info = cuda::probe(n).map_err(|e| unavailable(n, e))?;
            Ok(Selection {
                device: Device::Cuda(n),
                reason: format!("requested: {info}"),
            })
        }
        DeviceRequest::Auto => match cuda::probe(0) {
            Ok(info) => Ok(Selection {
                device: Device::Cuda(0),
                reason: format!("auto chose {info}"),
            }),
            Err(e) if gpu_required() => Err(DeviceError::CudaUnavailable(format!(
                "auto found no usable GPU and PS_REQUIRE_GPU=1 forbids the CPU: {e}"
            ))),
            Err(e) => Ok(Selection {
                device: Device::Cpu,
                reason: format!("auto chose cpu: {e}"),
            }),
        },
    }
}

fn open(ordinal: u32) -> Result<std::sync::Arc<Gpu>, AppError> {
    Gpu::open(ordinal).map_err(|e| AppError::Device(unavailable(ordinal, e).to_string()))
}

fn cuda<T>(ordinal: u32, r: Result<T, GpuError>) -> Result<T, AppError> {
    r.map_err(|e| AppError::Device(unavailable(ordinal, e).to_string()))
}

/// Lanes the MF oracle schedules for under `cpu-resident` (its waves run one block at a time).
const ORACLE_LANES: usize = 8;

/// The compute engines of a device, for the apps' sessions: on the CPU the fast engines of
/// `ps-apps` ([`CpuEngines`]); on a GPU the CUDA engines (MF: resident, conflict-free waves,
/// [`CudaMfResident`]; LDA: resident, one warp per document, [`CudaLdaResident`]; MLP: resident, a whole clock of tiled SGEMM
/// kernels on device-resident samples, [`CudaMlpResident`]; LR: resident rows, warp per row, [`CudaLrResident`]).
#[derive(Debug, Clone, Copy)]
pub struct DeviceEngines(pub Device);

impl Engines for DeviceEngines {
    fn device(&self) -> String {
        self.0.to_string()
    }

    fn mf(&self, threads: u32) -> Result<Box<dyn MfCompute + Send>, AppError> {
        match self.0 {
            Device::Cpu | Device::CpuResident => CpuEngines.mf(threads),
            Device::Cuda(n) => Ok(Box::new(cuda(n, CudaMf::new(open(n)?))?)),
        }
    }

    fn lda(&self, threads: u32) -> Result<Box<dyn LdaCompute + Send>, AppError> {
        // Checked on every device; the CPU runs the word-major sweep's twin.
        let sampler = LdaSampler::from_env().map_err(AppError::Settings)?;
        match (self.0, sampler.unwrap_or_default()) {
            (Device::Cpu | Device::CpuResident, s) => match s.word_major_twin(threads as usize) {
                Some(twin) => Ok(Box::new(twin)),
                None => CpuEngines.lda(threads),
            },
            (Device::Cuda(n), LdaSampler::WordMajor { groups }) => Ok(Box::new(cuda(
                n,
                CudaWordLda::new(open(n)?).map(|e| e.with_groups(groups as usize)),
            )?)),
            (Device::Cuda(n), LdaSampler::Gibbs) => Ok(Box::new(cuda(n, CudaLda::new(open(n)?))?)),
        }
    }

    fn mlp(&self, threads: u32) -> Result<Box<dyn MlpCompute + Send>, AppError> {
        match self.0 {
            Device::Cpu | Device::CpuResident => CpuEngines.mlp(threads),
            Device::Cuda(n) => Ok(Box::new(cuda(n, CudaMlp::new(open(n)?))?)),
        }
    }

    fn lr(&self, threads: u32) -> Result<Box<dyn LrCompute + Send>, AppError> {
        match self.0 {
            Device::Cpu | Device::CpuResident => CpuEngines.lr(threads),
            Device::Cuda(n) => Ok(Box::new(cuda(n, CudaLr::new(open(n)?))?)),
        }
    }

    fn mf_resident(&self) -> Result<Option<Box<dyn MfResident>>, AppError> {
        // Checked on every device, so that a misspelt name fails here too, not only on a GPU.
        let wave = MfWaveKernel::from_env().map_err(AppError::Settings)?;
        match self.0 {
            Device::Cpu => Ok(None),
            Device::CpuResident => Ok(Some(Box::new(HostResident::new(
                CpuEngines.mf(1)?,
                ORACLE_LANES,
            )))),
            Device::Cuda(n) => {
                let mut engine = cuda(n, CudaMfResident::new(open(n)?))?;
                if let Some(wave) = wave {
                    cuda(n, engine.set_wave_kernel(wave))?;
                }
                Ok(Some(Box::new(engine)))
            }
        }
    }

    fn mlp_resident(&self) -> Result<Option<Box<dyn MlpResident>>, AppError> {
        // Checked on every device, as the MF wave kernel's name is.
        let gemm = MlpGemm::from_env().map_err(AppError::Settings)?;
        match self.0 {
            Device::Cpu => Ok(None),
            Device::CpuResident => Ok(Some(Box::new(HostMlpResident::new(CpuEngines.mlp(1)?)))),
            Device::Cuda(n) => Ok(Some(Box::new(cuda(
                n,
                CudaMlpResident::with_gemm(open(n)?, gemm.unwrap_or_default()),
            )?))),
        }
    }

    fn lr_resident(&self) -> Result<Option<Box<dyn LrResident>>, AppError> {
        match self.0 {
            Device::Cpu => Ok(None),
            Device::CpuResident => Ok(Some(Box::new(HostLrResident::new(CpuEngines.lr(1)?)))),
            Device::Cuda(n) => Ok(Some(Box::new(cuda(n, CudaLrResident::new(open(n)?))?))),
        }
    }

    fn lda_resident(&self) -> Result<Option<Box<dyn LdaResident>>, AppError> {
        let sampler = LdaSampler::from_env()
            .map_err(AppError::Settings)?
            .unwrap_or_default();
        match self.0 {
            Device::Cpu => Ok(None),
            Device::CpuResident => Ok(Some(Box::new(HostLdaResident::new(self.lda(1)?)))),
            Device::Cuda(n) => Ok(Some(Box::new(cuda(
                n,
                CudaLdaResident::with_sampler(open(n)?, sampler),
            )?))),
        }
    }
}

/// For GPU tests: the first GPU, or `None` after printing a visible `SKIP` line naming `test`
/// and the reason. With `PS_REQUIRE_GPU=1` a missing GPU panics instead.
pub fn gpu_or_skip(test: &str) -> Option<std::sync::Arc<Gpu>> {
    match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(e) if gpu_required() => panic!("{test}: PS_REQUIRE_GPU=1 but no GPU: {e}"),
        Err(e) => {
            // Written to the stderr handle rather than with `eprintln!`, which the test harness
            // captures: the skip must show in a plain `cargo test` run.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP {test}: no GPU ({e})");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects() {
        assert_eq!("auto".parse::<DeviceRequest>(), Ok(DeviceRequest::Auto));
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>(),
            Ok(DeviceRequest::Cuda(3))
        );
        assert!("gpu".parse::<DeviceRequest>().is_err());
        assert!("cuda:x".parse::<DeviceRequest>().is_err());
        assert_eq!(select(DeviceRequest::Cpu).unwrap().device, Device::Cpu);
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        // Without a driver, `cuda` is a typed error and `auto` says why it chose the CPU.
        if !cuda::driver_available() {
            assert!(matches!(
                select(DeviceRequest::Cuda(0)),
                Err(DeviceError::CudaUnavailable(_))
            ));
            if !gpu_required() {
                let s = select(DeviceRequest::Auto).unwrap();
                assert_eq!(s.device, Device::Cpu);
                assert!(s.reason.contains("no NVIDIA driver"), "{}", s.reason);
            }
        }
    }

    #[test]
    fn a_misspelt_mf_wave_kernel_is_refused_on_any_device() {
        // The only test of this binary that reads the variable.
        std::env::set_var(MfWaveKernel::ENV, "window-8");
        let r = DeviceEngines(Device::CpuResident).mf_resident();
        std::env::set_var(MfWaveKernel::ENV, "window-2");
        let ok = DeviceEngines(Device::CpuResident).mf_resident();
        std::env::remove_var(MfWaveKernel::ENV);
        let e = r.err().expect("refused").to_string();
        assert!(
            e.contains("PS_MF_WAVE_KERNEL") && e.contains("window-8"),
            "{e}"
        );
        assert!(ok.is_ok());
    }
}
