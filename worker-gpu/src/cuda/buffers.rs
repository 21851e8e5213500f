//! Buffers reused across clocks: device buffers that only grow, and pinned (page-locked) host
//! staging buffers whose copies are asynchronous.
//!
//! cudarc's own `PinnedHostSlice` copies its whole length; [`Pinned`] copies only the prefix in
//! use, so one allocation serves every batch size. Each `Pinned` carries an event recorded after
//! every copy that touches it; host access waits on that event, so the host never reads memory a
//! copy is still writing, nor overwrites memory a copy is still reading.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, CudaView, DeviceRepr, HostSlice,
    PinnedHostSlice, SyncOnDrop, ValidAsZeroBits,
};

use super::{Call, GpuError};

/// Growth factor of both kinds of buffer: a slowly growing batch reallocates rarely.
fn grown(len: usize) -> usize {
    len.max(1).saturating_add(len / 4)
}

/// A device buffer reused across calls; it grows when a call needs more and never shrinks.
pub struct DevBuf<T> {
    slice: Option<CudaSlice<T>>,
}

impl<T> Default for DevBuf<T> {
    fn default() -> Self {
        DevBuf { slice: None }
    }
}

impl<T: DeviceRepr + ValidAsZeroBits> DevBuf<T> {
    /// The buffer with room for at least `len` elements (contents unspecified after growth).
    pub fn ensure(
        &mut self,
        stream: &Arc<CudaStream>,
        len: usize,
    ) -> Result<&mut CudaSlice<T>, GpuError> {
        let fits = self.slice.as_ref().is_some_and(|s| s.len() >= len.max(1));
        if !fits {
            self.slice = None; // freed (stream-ordered) before the new allocation
            self.slice = Some(
                stream
                    .alloc_zeros::<T>(grown(len))
                    .call("cuMemAllocAsync")?,
            );
        }
        Ok(self.slice.as_mut().expect("allocated above"))
    }

    /// The buffer, if [`DevBuf::ensure`] has sized it.
    pub fn try_get(&self) -> Option<&CudaSlice<T>> {
        self.slice.as_ref()
    }

    /// The buffer, which [`DevBuf::ensure`] must have sized before.
    pub fn get(&self) -> &CudaSlice<T> {
        self.slice
            .as_ref()
            .expect("DevBuf::ensure was called first")
    }

    /// The buffer, mutably.
    pub fn get_mut(&mut self) -> &mut CudaSlice<T> {
        self.slice
            .as_mut()
            .expect("DevBuf::ensure was called first")
    }

    /// The first `len` elements.
    pub fn view(&self, len: usize) -> CudaView<'_, T> {
        self.get().slice(0..len)
    }

    /// Zeroes the first `len` elements on `stream` (growing first).
    pub fn zero(&mut self, stream: &Arc<CudaStream>, len: usize) -> Result<(), GpuError> {
        let s = self.ensure(stream, len)?;
        if len == 0 {
            return Ok(());
        }
        let mut v = s.slice_mut(0..len);
        stream.memset_zeros(&mut v).call("cuMemsetD8Async")
    }

    /// Copies `src` to the start of the buffer on `stream`, growing it first.
    pub fn upload(&mut self, stream: &Arc<CudaStream>, src: &Pinned<T>) -> Result<(), GpuError> {
        let dst = self.ensure(stream, src.len())?;
        if src.is_empty() {
            return Ok(()); // no copy: an empty pinned buffer has no allocation to copy from
        }
        stream.memcpy_htod(src, dst).call("cuMemcpyHtoDAsync")?;
        src.record(stream)
    }
}

/// Page-locked host memory used as the staging area of asynchronous copies, with a logical
/// length no larger than its capacity.
pub struct Pinned<T> {
    mem: Option<PinnedHostSlice<T>>,
    ptr: *mut T,
    capacity: usize,
    len: usize,
    /// Recorded on the stream of the last copy that touched this memory.
    event: CudaEvent,
    ctx: Arc<CudaContext>,
}

// SAFETY: the raw pointer is the allocation owned by `mem` (a `PinnedHostSlice`, itself Send and
// Sync); it is only dereferenced through `&self` / `&mut self` after waiting on `event`.
unsafe impl<T: Send> Send for Pinned<T> {}
// SAFETY: as above; shared access only reads.
unsafe impl<T: Sync> Sync for Pinned<T> {}

impl<T> Pinned<T> {
    /// Number of elements in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no element is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records, on `stream`, that the copies issued so far use this memory.
    pub fn record(&self, stream: &CudaStream) -> Result<(), GpuError> {
        self.event.record(stream).call("cuEventRecord")
    }
}

impl<T: DeviceRepr + ValidAsZeroBits + Copy + Default> Pinned<T> {
    /// An empty staging buffer of `ctx`.
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self, GpuError> {
        Ok(Pinned {
            mem: None,
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            capacity: 0,
            len: 0,
            event: ctx.new_event(None).call("cuEventCreate")?,
            ctx: Arc::clone(ctx),
        })
    }

    fn reserve(&mut self, len: usize) -> Result<(), GpuError> {
        if len <= self.capacity {
            return Ok(());
        }
        self.event.synchronize().call("cuEventSynchronize")?;
        let cap = grown(len);
        self.mem = None;
        // SAFETY: the memory is written (zeroed) below before anything reads it. Flags 0: plain
        // page-locked memory that the host may also read quickly (write-combined may not).
        let mut mem =
            unsafe { self.ctx.alloc_pinned_with_flags::<T>(cap, 0) }.call("cuMemHostAlloc")?;
        let ptr = mem.as_mut_ptr().call("cuEventSynchronize")?;
        // SAFETY: `ptr` is valid for `cap` elements, and T is valid as zero bits.
        unsafe { std::ptr::write_bytes(ptr, 0, cap) };
        self.ptr = ptr;
        self.mem = Some(mem);
        self.capacity = cap;
        Ok(())
    }

    /// Sets the length to `len` (growing the allocation if needed; new elements are zero or
    /// left from earlier use) and returns the elements for the host to write, after waiting for
    /// any copy still using them.
    pub fn host_mut(&mut self, len: usize) -> Result<&mut [T], GpuError> {
        self.reserve(len)?;
        self.event.synchronize().call("cuEventSynchronize")?;
        self.len = len;
        // SAFETY: `ptr` is valid for `capacity >= len` initialised elements; no copy uses them
        // (waited above) and `&mut self` excludes other host access.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, len) })
    }

    /// Copies `data` in (the length becomes `data.len()`).
    pub fn fill(&mut self, data: &[T]) -> Result<(), GpuError> {
        self.host_mut(data.len())?.copy_from_slice(data);
        Ok(())
    }

    /// The elements in use, after waiting for any copy still writing them.
    pub fn host(&self) -> Result<&[T], GpuError> {
        self.event.synchronize().call("cuEventSynchronize")?;
        // SAFETY: as in `host_mut`; shared access only reads.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// Copies the first `len` elements of `src` into this buffer on `stream` (asynchronous; read
    /// them with [`Pinned::host`], which waits).
    pub fn download(
        &mut self,
        stream: &Arc<CudaStream>,
        src: &CudaSlice<T>,
        len: usize,
    ) -> Result<(), GpuError> {
        self.download_range(stream, src, 0..len)
    }

    /// Copies elements `range` of `src` into the start of this buffer (see [`Pinned::download`]).
    pub fn download_range(
        &mut self,
        stream: &Arc<CudaStream>,
        src: &CudaSlice<T>,
        range: std::ops::Range<usize>,
    ) -> Result<(), GpuError> {
        self.host_mut(range.len())?;
        if range.is_empty() {
            return Ok(());
        }
        stream
            .memcpy_dtoh(&src.slice(range), self)
            .call("cuMemcpyDtoHAsync")?;
        self.record(stream)
    }
}

/// Makes `dst` a copy of `data`, allocated at exactly its size, and waits for the copy: for
/// set-up uploads done once (a worker's resident data). The copy goes from `data` where it is
/// (the driver stages pageable memory itself), so the data set is neither pinned nor held twice
/// on the host, and the device holds no growth margin. Returns the bytes copied.
pub fn upload_once<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    dst: &mut DevBuf<T>,
    data: &[T],
) -> Result<u64, GpuError> {
    dst.slice = None; // freed (stream-ordered) before the new allocation
    let slice = if data.is_empty() {
        stream.alloc_zeros::<T>(1).call("cuMemAllocAsync")?
    } else {
        stream.clone_htod(data).call("cuMemcpyHtoDAsync")?
    };
    stream.synchronize().call("cuStreamSynchronize")?;
    dst.slice = Some(slice);
    Ok(std::mem::size_of_val(data) as u64)
}

/// A list of row keys on the device, with the host's copy of it: set again only when it changes,
/// so a read that repeats clock after clock crosses PCIe once.
#[derive(Default)]
pub struct KeyList {
    pub dev: DevBuf<u32>,
    host: Vec<u64>,
}

impl KeyList {
    /// Keys in the list.
    pub fn len(&self) -> usize {
        self.host.len()
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// The keys, as last set.
    pub fn keys(&self) -> &[u64] {
        &self.host
    }

    /// Makes the list `keys` (each checked below `limit`), copying it only when it changed.
    pub fn set(
        &mut self,
        stream: &Arc<CudaStream>,
        staging: &mut Pinned<u32>,
        bus: &mut super::bus::Bus,
        keys: &[u64],
        limit: usize,
    ) -> Result<(), GpuError> {
        if self.host == keys {
            return Ok(());
        }
        self.host.clear();
        let host = staging.host_mut(keys.len())?;
        for (h, &k) in host.iter_mut().zip(keys) {
            if k >= limit as u64 {
                return Err(GpuError::Input(format!(
                    "row {k} is outside the table of {limit} rows"
                )));
            }
            *h = k as u32;
        }
        bus.h2d(stream, || {
            self.dev.upload(stream, staging)?;
            Ok(4 * keys.len() as u64)
        })?;
        self.host.extend_from_slice(keys);
        Ok(())
    }
}

impl<T> Drop for Pinned<T> {
    /// Waits for the last copy that uses this memory (an upload may still be reading it)
    /// before the memory is freed.
    fn drop(&mut self) {
        if self.mem.is_some() {
            if let Err(e) = self.event.synchronize() {
                tracing::warn!("pinned staging buffer: waiting for its last copy failed: {e}");
            }
        }
    }
}

impl<T> HostSlice<T> for Pinned<T> {
    fn len(&self) -> usize {
        self.len
    }

    unsafe fn stream_synced_slice<'a>(
        &'a self,
        stream: &'a CudaStream,
    ) -> (&'a [T], SyncOnDrop<'a>) {
        stream.context().record_err(stream.wait(&self.event));
        // The caller records `event` after the copy (`Pinned::record`), so nothing is recorded
        // on drop.
        (
            std::slice::from_raw_parts(self.ptr, self.len),
            SyncOnDrop::Record(None),
        )
    }

    unsafe fn stream_synced_mut_slice<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (&'a mut [T], SyncOnDrop<'a>) {
        stream.context().record_err(stream.wait(&self.event));
        (
            std::slice::from_raw_parts_mut(self.ptr, self.len),
            SyncOnDrop::Record(None),
        )
    }
}

/// Two CUDA events that bracket kernels on a stream: [`KernelTimer::stop`] adds the time between
/// them to a [`Traffic`](ps_apps::app::Traffic)'s device seconds (and waits for the kernels).
pub struct KernelTimer {
    start: CudaEvent,
    end: CudaEvent,
}

impl KernelTimer {
    /// Two timing events of `ctx`.
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self, GpuError> {
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        Ok(KernelTimer {
            start: ctx.new_event(timing).call("cuEventCreate")?,
            end: ctx.new_event(timing).call("cuEventCreate")?,
        })
    }

    /// Marks the start, on `stream`.
    pub fn start(&self, stream: &CudaStream) -> Result<(), GpuError> {
        self.start.record(stream).call("cuEventRecord")
    }

    /// Marks the end on `stream` and adds the time since the start to `traffic.compute_s`.
    pub fn stop(
        &self,
        stream: &CudaStream,
        traffic: &mut ps_apps::app::Traffic,
    ) -> Result<(), GpuError> {
        self.end.record(stream).call("cuEventRecord")?;
        let ms = self
            .start
            .elapsed_ms(&self.end)
            .call("cuEventElapsedTime")?;
        traffic.compute_s += f64::from(ms) / 1e3;
        Ok(())
    }
}
