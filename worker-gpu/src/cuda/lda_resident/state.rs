//! The worker's state crossing the bus after set-up: all of it back ([`LdaResident::download_state`]),
//! the assignments alone back after each sweep for a moves log, and a replayed state in
//! ([`LdaResident::restore_state`]), for a worker that rejoins under `--on-worker-failure wait`
//! (`ps_apps::lda::moves_log`).

use ps_apps::lda::{
    check_state, documents_print, other_documents, LdaHyper, LdaResident, LdaWorkerState,
};

use super::super::buffers::{DevBuf, Pinned};
use super::super::bus::Bus;
use super::super::{Gpu, GpuError};
use super::CudaLdaResident;

impl CudaLdaResident {
    pub(super) fn try_download(&mut self, state: &mut LdaWorkerState) -> Result<(), GpuError> {
        let s = self.shape()?;
        if state.z.len() != s.tokens || state.doc_topic.len() != s.docs as usize * s.topics as usize
        {
            return Err(GpuError::Input(
                "LDA: the state to fill is not the one set up".into(),
            ));
        }
        let (gpu, bus, h) = (&self.gpu, &mut self.bus, &mut self.h_state);
        download(gpu, bus, h, &self.dev.z, &mut state.z)?;
        download(gpu, bus, h, &self.dev.doc_topic, &mut state.doc_topic)
    }

    pub(super) fn try_download_assignments(&mut self, z: &mut [u32]) -> Result<(), GpuError> {
        let s = self.shape()?;
        if z.len() != s.tokens {
            return Err(GpuError::Input(format!(
                "LDA: {} assignments asked for, {} set up",
                z.len(),
                s.tokens
            )));
        }
        download(&self.gpu, &mut self.bus, &mut self.h_state, &self.dev.z, z)
    }

    /// Uploads `state`'s assignments and document-topic counts over the set-up ones; rows,
    /// totals and the sweep's buffers stay.
    pub(super) fn try_restore(&mut self, state: &LdaWorkerState) -> Result<(), GpuError> {
        let s = self.shape()?;
        // The set-up's topic count: check_state reads nothing else of the hyper-parameters.
        let topics = LdaHyper {
            topics: s.topics,
            ..LdaHyper::default()
        };
        check_state(self.name(), state, &topics)?;
        if documents_print(state) != self.documents {
            return Err(other_documents(self.name()).into());
        }
        let (gpu, t) = (&self.gpu, &mut self.bus);
        Self::upload_u32(gpu, t, &mut self.dev.z, &state.z)?;
        Self::upload_u32(gpu, t, &mut self.dev.doc_topic, &state.doc_topic)?;
        self.bus.settle()
    }
}

/// Copies `dst.len()` values of `src` into `dst` through the pinned buffer `h`, counted and
/// timed on `bus`; waits for the copy.
fn download(
    gpu: &Gpu,
    bus: &mut Bus,
    h: &mut Pinned<u32>,
    src: &DevBuf<u32>,
    dst: &mut [u32],
) -> Result<(), GpuError> {
    if dst.is_empty() {
        return Ok(());
    }
    let stream = &gpu.compute;
    bus.d2h(stream, || {
        h.download(stream, src.get(), dst.len())?;
        Ok(4 * dst.len() as u64)
    })?;
    dst.copy_from_slice(h.host()?);
    // The host has waited for the stream: every copy timed so far has finished.
    bus.settle()
}
