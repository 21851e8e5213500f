//! Where sessions get their compute engines: [`Engines`] makes the engine of each built-in app
//! for one worker's device. [`CpuEngines`] gives the fast CPU engines, [`OracleEngines`] the
//! plain oracles (for conformance runs); `worker-gpu` implements it for CUDA devices. An app
//! with an engine of its own (or none) ignores it.

use crate::error::AppError;
use crate::lda::{CpuLda, LdaCompute, LdaResident, ParallelSparseLda, SparseLda};
use crate::lr::{CpuLr, FastLr, LrCompute, LrResident};
use crate::mf::{CpuMf, FastMf, MfCompute, MfResident};
use crate::mlp::{CpuMlp, FastMlp, MlpCompute, MlpResident};

/// The compute engines of one device.
pub trait Engines: Send + Sync {
    /// The device, as the summary names it (`cpu`, `cuda:0`).
    fn device(&self) -> String;
    fn mf(&self, threads: u32) -> Result<Box<dyn MfCompute + Send>, AppError>;
    fn lda(&self, threads: u32) -> Result<Box<dyn LdaCompute + Send>, AppError>;
    fn mlp(&self, threads: u32) -> Result<Box<dyn MlpCompute + Send>, AppError>;
    fn lr(&self, threads: u32) -> Result<Box<dyn LrCompute + Send>, AppError>;

    /// An MF engine that keeps the worker's ratings and factors on its device for the whole job
    /// (see [`MfResident`]); when there is one, the MF session uses it instead of [`Self::mf`].
    /// `None` (the default) on the CPU, whose engines already compute where the state is.
    fn mf_resident(&self) -> Result<Option<Box<dyn MfResident>>, AppError> {
        Ok(None)
    }

    /// An MLP engine that keeps the worker's samples and model on its device for the whole job
    /// and runs a clock's mini-batches there (see [`MlpResident`]); when there is one, the MLP
    /// session uses it instead of [`Self::mlp`]. `None` (the default) on the CPU.
    fn mlp_resident(&self) -> Result<Option<Box<dyn MlpResident>>, AppError> {
        Ok(None)
    }

    /// An LDA engine that keeps the worker's tokens, assignments and document-topic counts on
    /// its device for the whole job and sweeps there (see [`LdaResident`]); when there is one,
    /// the LDA session uses it instead of [`Self::lda`]. `None` (the default) on the CPU.
    fn lda_resident(&self) -> Result<Option<Box<dyn LdaResident>>, AppError> {
        Ok(None)
    }

    /// An LR engine that keeps the worker's training rows on its device for the whole job (see
    /// [`LrResident`]); when there is one, the LR session uses it instead of [`Self::lr`].
    /// `None` (the default) on the CPU.
    fn lr_resident(&self) -> Result<Option<Box<dyn LrResident>>, AppError> {
        Ok(None)
    }
}

/// The fast CPU engines, over `threads` threads where the engine splits its work.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuEngines;

impl Engines for CpuEngines {
    fn device(&self) -> String {
        "cpu".into()
    }

    /// The rank-vectorised SGD kernel, FPSG-blocked over the threads when there are several.
    fn mf(&self, threads: u32) -> Result<Box<dyn MfCompute + Send>, AppError> {
        Ok(Box::new(FastMf::new(threads.max(1) as usize)))
    }

    /// The SparseLDA sampler (exact) on one thread; on several, its sweep cut into runs of
    /// documents that see each other's moves at the sweep's end, as workers would.
    fn lda(&self, threads: u32) -> Result<Box<dyn LdaCompute + Send>, AppError> {
        Ok(match threads {
            0 | 1 => Box::new(SparseLda::new()),
            // Each thread copies the counts: half of what memory the OS has left is theirs.
            t => Box::new(
                ParallelSparseLda::new(t as usize)
                    .with_memory_budget(crate::par::memory_available().map(|b| b / 2)),
            ),
        })
    }

    fn mlp(&self, threads: u32) -> Result<Box<dyn MlpCompute + Send>, AppError> {
        Ok(Box::new(FastMlp::with_threads(threads.max(1) as usize)))
    }

    fn lr(&self, threads: u32) -> Result<Box<dyn LrCompute + Send>, AppError> {
        Ok(Box::new(FastLr::new(threads.max(1) as usize)))
    }
}

/// The plain CPU oracles every other engine is checked against.
#[derive(Debug, Clone, Copy, Default)]
pub struct OracleEngines;

impl Engines for OracleEngines {
    fn device(&self) -> String {
        "cpu-oracle".into()
    }

    fn mf(&self, _threads: u32) -> Result<Box<dyn MfCompute + Send>, AppError> {
        Ok(Box::new(CpuMf))
    }

    fn lda(&self, _threads: u32) -> Result<Box<dyn LdaCompute + Send>, AppError> {
        Ok(Box::new(CpuLda::new()))
    }

    fn mlp(&self, _threads: u32) -> Result<Box<dyn MlpCompute + Send>, AppError> {
        Ok(Box::new(CpuMlp))
    }

    fn lr(&self, _threads: u32) -> Result<Box<dyn LrCompute + Send>, AppError> {
        Ok(Box::new(CpuLr))
    }
}
