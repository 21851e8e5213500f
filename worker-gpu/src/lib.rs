//! GPU workers: the CUDA backend of each application's compute trait, and the choice of backend
//! at run time (`--device auto|cpu|cuda[:N]`).
//!
//! This version carries the seam only: device parsing and selection, and the CPU engines as the
//! fallback. The CUDA engines (cudarc with dynamic loading, NVRTC-compiled kernels from
//! `kernels/`) arrive with the GPU-workers issue; until then asking for `cuda` is a typed error,
//! never a silent fallback. This crate must not depend on the server or on networking.
//!
//! Already here: the kernels themselves and their run-time compilation ([`kernels`]), and the
//! parser of `ptxas -v` reports ([`ptxas`]) used by the `kernel-check` binary.

use ps_apps::lda::{LdaCompute, SparseLda};
use ps_apps::lr::{FastLr, LrCompute};
use ps_apps::mf::{FastMf, MfCompute};
use ps_apps::mlp::{FastMlp, MlpCompute};
use thiserror::Error;

pub mod kernels;
pub mod ptxas;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeviceError {
    #[error("bad --device {0:?}: expected auto, cpu, cuda or cuda:N")]
    Parse(String),
    #[error("CUDA device requested but unavailable: {0}")]
    CudaUnavailable(String),
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(u32),
}

impl std::str::FromStr for DeviceRequest {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
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
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
        }
    }
}

/// The chosen device and, for `auto`, why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub device: Device,
    pub reason: String,
}

const NO_CUDA: &str = "this build has no CUDA backend yet (it comes with the GPU workers issue)";

/// Resolves a request. `cuda` fails with a typed error rather than falling back to the CPU.
pub fn select(req: DeviceRequest) -> Result<Selection, DeviceError> {
    match req {
        DeviceRequest::Cpu => Ok(Selection {
            device: Device::Cpu,
            reason: "requested".into(),
        }),
        DeviceRequest::Auto => Ok(Selection {
            device: Device::Cpu,
            reason: format!("auto chose cpu: {NO_CUDA}"),
        }),
        DeviceRequest::Cuda(n) => Err(DeviceError::CudaUnavailable(format!("cuda:{n}: {NO_CUDA}"))),
    }
}

/// The MF engine for a device: on the CPU the rank-vectorised SGD kernel, FPSG-blocked over
/// `threads` threads when there are several.
pub fn mf_engine(device: Device, threads: u32) -> Box<dyn MfCompute + Send> {
    match device {
        Device::Cpu => Box::new(FastMf::new(threads.max(1) as usize)),
    }
}

/// The LDA engine for a device: on the CPU the SparseLDA sampler (exact; one thread, since a
/// Gibbs sweep is sequential by nature and parallelism comes from workers).
pub fn lda_engine(device: Device, threads: u32) -> Box<dyn LdaCompute + Send> {
    let _ = threads;
    match device {
        Device::Cpu => Box::new(SparseLda::new()),
    }
}

/// The MLP engine for a device: on the CPU the sgemm engine over `threads` threads.
pub fn mlp_engine(device: Device, threads: u32) -> Box<dyn MlpCompute + Send> {
    match device {
        Device::Cpu => Box::new(FastMlp::with_threads(threads.max(1) as usize)),
    }
}

/// The sparse-LR engine for a device: on the CPU the fast gradient over `threads` threads.
pub fn lr_engine(device: Device, threads: u32) -> Box<dyn LrCompute + Send> {
    match device {
        Device::Cpu => Box::new(FastLr::new(threads.max(1) as usize)),
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
        assert_eq!(select(DeviceRequest::Auto).unwrap().device, Device::Cpu);
        assert!(matches!(
            select(DeviceRequest::Cuda(0)),
            Err(DeviceError::CudaUnavailable(_))
        ));
    }
}
