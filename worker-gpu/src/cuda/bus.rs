//! What a resident engine moves over the host-device bus, counted and timed in one place (and
//! kernels whose time may be read back late, [`Bus::kernels`]).
//!
//! Each copy, or run of copies, goes through [`Bus::h2d`] or [`Bus::d2h`], which records a CUDA
//! event on the copy's stream before it and one after, and counts the bytes the copy reports.
//! The events are read back by [`Bus::settle`], which an engine calls where it has waited for its
//! stream anyway (after a download the host reads), so timing a copy never makes the host wait
//! for it; until then the spans stay open. Times are device times between the events: a copy
//! queued behind kernels starts when they end, so the span is the copy's own.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use ps_apps::app::Traffic;

use super::{Call, GpuError};

/// Open spans beyond this are settled at once (the host then waits): an engine that never
/// settles still keeps a bounded number of events.
const MAX_OPEN: usize = 256;

/// Which way a copy goes, or kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    In,
    Out,
    Kernels,
}

/// An engine's bus traffic and device time so far ([`Bus::traffic`]), and the copies whose
/// times are not read yet.
pub struct Bus {
    /// Bytes each way, settled copy seconds each way, and kernel seconds (which
    /// [`super::buffers::KernelTimer`] adds).
    pub traffic: Traffic,
    ctx: Arc<CudaContext>,
    open: Vec<(CudaEvent, CudaEvent, Way)>,
    spare: Vec<(CudaEvent, CudaEvent)>,
}

impl Bus {
    pub fn new(ctx: &Arc<CudaContext>) -> Bus {
        Bus {
            traffic: Traffic::default(),
            ctx: ctx.clone(),
            open: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Runs `copy`, which queues copies host to device on `stream` and returns the bytes they
    /// move; counts and times them.
    pub fn h2d(
        &mut self,
        stream: &CudaStream,
        copy: impl FnOnce() -> Result<u64, GpuError>,
    ) -> Result<(), GpuError> {
        self.timed(stream, Way::In, copy)
    }

    /// Runs `copy`, which queues copies device to host on `stream` and returns the bytes they
    /// move; counts and times them.
    pub fn d2h(
        &mut self,
        stream: &CudaStream,
        copy: impl FnOnce() -> Result<u64, GpuError>,
    ) -> Result<(), GpuError> {
        self.timed(stream, Way::Out, copy)
    }

    /// Runs `launch`, which queues kernels on `stream`, and times them as it times copies: the
    /// span is read back at [`Bus::settle`] into `traffic.compute_s`, so the host does not wait
    /// for the kernels here (as [`super::buffers::KernelTimer`] would).
    pub fn kernels(
        &mut self,
        stream: &CudaStream,
        launch: impl FnOnce() -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        self.timed(stream, Way::Kernels, || launch().map(|()| 0))
    }

    fn timed(
        &mut self,
        stream: &CudaStream,
        way: Way,
        copy: impl FnOnce() -> Result<u64, GpuError>,
    ) -> Result<(), GpuError> {
        if self.open.len() >= MAX_OPEN {
            self.settle()?;
        }
        let (start, end) = match self.spare.pop() {
            Some(pair) => pair,
            None => {
                let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
                (
                    self.ctx.new_event(timing).call("cuEventCreate")?,
                    self.ctx.new_event(timing).call("cuEventCreate")?,
                )
            }
        };
        start.record(stream).call("cuEventRecord")?;
        let bytes = match copy() {
            Ok(b) => b,
            Err(e) => {
                self.spare.push((start, end));
                return Err(e);
            }
        };
        end.record(stream).call("cuEventRecord")?;
        match way {
            Way::In => self.traffic.h2d_bytes += bytes,
            Way::Out => self.traffic.d2h_bytes += bytes,
            Way::Kernels => {}
        }
        self.open.push((start, end, way));
        Ok(())
    }

    /// Adds the time of every copy (and kernel span) since the last settle to [`Bus::traffic`],
    /// waiting for any still running (none, where the stream was waited for).
    pub fn settle(&mut self) -> Result<(), GpuError> {
        for (start, end, way) in std::mem::take(&mut self.open) {
            let ms = start.elapsed_ms(&end).call("cuEventElapsedTime")?;
            let s = f64::from(ms) / 1e3;
            match way {
                Way::In => self.traffic.h2d_s += s,
                Way::Out => self.traffic.d2h_s += s,
                Way::Kernels => self.traffic.compute_s += s,
            }
            self.spare.push((start, end));
        }
        // cudarc records some driver failures (a stream's wait on a buffer's event, an event's
        // record) in the context instead of returning them; an engine settles at the end of
        // every call, so none goes unreported past it.
        self.ctx
            .check_err()
            .call("a deferred stream wait or event record")?;
        Ok(())
    }
}
