//! The resident CUDA LR engine: [`ps_apps::lr::LrResident`] on a device.
//!
//! [`LrResident::setup`] uploads the worker's training rows once, in CSR form over local key ids
//! (a key's position in the sorted list of the worker's distinct keys, kept on the host), with
//! their labels; they stay on the device until the engine is dropped. Per clock
//! (`kernels/lr_resident.cu`):
//!
//! - the batch's row indices, and the local ids and pulled weights of its keys, go to the
//!   device; the weights are scattered into a dense vector over the local ids, zeroed first, so
//!   a feature whose key is not in the call's key list counts as weight 0 (the trait's
//!   contract);
//! - one warp per batch row computes the margin and adds the row's terms to a dense gradient
//!   (`lr_gradient_rows`);
//! - the keys' entries are gathered (`lr_gather`) and only they and the loss come back.
//!
//! Every byte copied either way is counted ([`Traffic`]), with the kernels' time from CUDA
//! events. Everything runs on the compute stream, in order.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use ps_apps::lr::{batch_keys, check_gradient, LrResident, SparseRow, Traffic};
use ps_apps::visit::Visit;
use ps_apps::ComputeError;

use super::buffers::{upload_once, DevBuf, KernelTimer, Pinned};
use super::bus::Bus;
use super::{failed, Call, Gpu, GpuError};

/// Threads per block (a multiple of 32).
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the grid-stride launches.
const BLOCKS_PER_SM: u32 = 8;

const NAME: &str = "cuda-resident";

/// How a call names its batch: by row indices the host made, or by a visit whose indices the
/// device makes itself.
#[derive(Clone, Copy)]
enum BatchRows<'a> {
    Named(&'a [u32]),
    Visit(&'a Visit),
}

fn input(m: String) -> GpuError {
    GpuError::Input(format!("lr resident: {m}"))
}

/// Resident sparse LR on a CUDA device (see the module docs).
pub struct CudaLrResident {
    gpu: Arc<Gpu>,
    scatter_fn: CudaFunction,
    gather_fn: CudaFunction,
    gradient_fn: CudaFunction,
    visit_fn: CudaFunction,
    /// slots.cuh's passes: mark, count, scan, write.
    slots_fns: [CudaFunction; 4],
    /// The worker's distinct keys, sorted: a key's local id is its position.
    keys: Vec<u64>,
    rows: usize,
    d_row_ptr: DevBuf<u32>,
    d_cols: DevBuf<u32>,
    d_vals: DevBuf<f32>,
    d_labels: DevBuf<f32>,
    /// Dense over the local ids.
    d_weights: DevBuf<f32>,
    d_grad: DevBuf<f32>,
    d_loss: DevBuf<f64>,
    d_batch: DevBuf<u32>,
    d_slots: DevBuf<u32>,
    /// A visit's batch columns as flags over the local ids, and the per-chunk counts (then
    /// offsets, the total last) of slots.cuh.
    d_flags: DevBuf<u8>,
    d_counts: DevBuf<u32>,
    d_sums: DevBuf<u64>,
    count_host: Pinned<u32>,
    sum_host: Pinned<u64>,
    d_values: DevBuf<f32>,
    d_out: DevBuf<f32>,
    batch_host: Pinned<u32>,
    slots_host: Pinned<u32>,
    values_host: Pinned<f32>,
    out_host: Pinned<f32>,
    loss_host: Pinned<f64>,
    timer: KernelTimer,
    bus: Bus,
}

impl CudaLrResident {
    /// The engine on `gpu`.
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        let timer = KernelTimer::new(&gpu.ctx)?;
        let ctx = &gpu.ctx;
        Ok(CudaLrResident {
            scatter_fn: gpu.function("lr_resident", "lr_scatter")?,
            gather_fn: gpu.function("lr_resident", "lr_gather")?,
            gradient_fn: gpu.function("lr_resident", "lr_gradient_rows")?,
            visit_fn: gpu.function("lr_resident", "lr_visit_rows")?,
            slots_fns: [
                gpu.function("lr_resident", "lr_slots_mark")?,
                gpu.function("lr_resident", "lr_slots_count")?,
                gpu.function("lr_resident", "lr_slots_scan")?,
                gpu.function("lr_resident", "lr_slots_write")?,
            ],
            keys: Vec::new(),
            rows: 0,
            d_row_ptr: DevBuf::default(),
            d_cols: DevBuf::default(),
            d_vals: DevBuf::default(),
            d_labels: DevBuf::default(),
            d_weights: DevBuf::default(),
            d_grad: DevBuf::default(),
            d_loss: DevBuf::default(),
            d_batch: DevBuf::default(),
            d_slots: DevBuf::default(),
            d_flags: DevBuf::default(),
            d_counts: DevBuf::default(),
            d_sums: DevBuf::default(),
            count_host: Pinned::new(ctx)?,
            sum_host: Pinned::new(ctx)?,
            d_values: DevBuf::default(),
            d_out: DevBuf::default(),
            batch_host: Pinned::new(ctx)?,
            slots_host: Pinned::new(ctx)?,
            values_host: Pinned::new(ctx)?,
            out_host: Pinned::new(ctx)?,
            loss_host: Pinned::new(ctx)?,
            timer,
            bus: Bus::new(&gpu.ctx),
            gpu,
        })
    }

    fn grid(&self, work: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.gpu.grid_for(work as u64, BLOCK, BLOCKS_PER_SM), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn try_setup(&mut self, rows: &[SparseRow]) -> Result<(), GpuError> {
        // No rows until set-up succeeds: a failed one leaves an engine that refuses every call.
        self.rows = 0;
        self.keys.clear();
        let nnz: usize = rows.iter().map(|r| r.features.len()).sum();
        // The kernels walk a row's nonzeros with a 32-bit counter in steps of a warp (32): it
        // must not wrap past the last offset.
        let limit = (u32::MAX - 64) as usize;
        if nnz >= limit || rows.len() >= limit {
            return Err(input(format!(
                "{} rows with {nnz} nonzeros exceed the kernels' 32-bit offsets",
                rows.len()
            )));
        }
        let LocalCsr {
            keys,
            row_ptr,
            cols,
            vals,
            labels,
        } = local_csr(rows);
        let compute = &self.gpu.compute;
        self.bus.h2d(compute, || {
            Ok(upload_once(compute, &mut self.d_row_ptr, &row_ptr)?
                + upload_once(compute, &mut self.d_cols, &cols)?
                + upload_once(compute, &mut self.d_vals, &vals)?
                + upload_once(compute, &mut self.d_labels, &labels)?)
        })?;
        // upload_once waited for its copies.
        self.bus.settle()?;
        self.d_weights.ensure(compute, keys.len())?;
        self.d_grad.ensure(compute, keys.len())?;
        self.rows = rows.len();
        self.keys = keys;
        Ok(())
    }

    fn try_gradient(
        &mut self,
        batch: BatchRows<'_>,
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, GpuError> {
        let named = match batch {
            BatchRows::Named(b) => b,
            BatchRows::Visit(_) => &[],
        };
        check_gradient(self.rows, named, keys, weights, grad).map_err(input)?;
        let n = match batch {
            BatchRows::Named(b) => b.len(),
            BatchRows::Visit(v) => {
                v.check(self.rows).map_err(input)?;
                v.count as usize
            }
        };
        grad.fill(0.0);
        if n == 0 {
            return Ok(0.0);
        }
        let Present { slots, values, at } = present_keys(&self.keys, keys, weights);
        if matches!(batch, BatchRows::Visit(_)) && slots.len() != keys.len() {
            return Err(input(format!(
                "{} of a visit's {} keys are not the worker's: they must be the batch's keys",
                keys.len() - slots.len(),
                keys.len()
            )));
        }
        let (m, f) = (slots.len(), self.keys.len());
        let compute = Arc::clone(&self.gpu.compute);
        // The copies first, then the timed kernels (a visit's rows and slots among them).
        if let BatchRows::Named(b) = batch {
            self.batch_host.fill(b)?;
            self.slots_host.fill(&slots)?;
            self.bus.h2d(&compute, || {
                self.d_batch.upload(&compute, &self.batch_host)?;
                self.d_slots.upload(&compute, &self.slots_host)?;
                Ok(4 * (n + m) as u64)
            })?;
        }
        self.values_host.fill(&values)?;
        self.bus.h2d(&compute, || {
            self.d_values.upload(&compute, &self.values_host)?;
            Ok(4 * m as u64)
        })?;
        self.timer.start(&compute)?;
        if let BatchRows::Visit(v) = batch {
            // The batch's row indices made on the device (visit.cuh): nothing crosses.
            self.d_batch.ensure(&compute, n)?;
            let [k0, k1, k2, k3] = v.keys;
            let cfg = self.grid(n);
            let mut b = compute.launch_builder(&self.visit_fn);
            b.arg(&k0)
                .arg(&k1)
                .arg(&k2)
                .arg(&k3)
                .arg(&v.n)
                .arg(&v.from)
                .arg(&v.count)
                .arg(self.d_batch.get_mut());
            // SAFETY: the batch buffer holds n = count words; lr_visit_rows(unsigned x 7,
            // unsigned*) writes batch[0..count), each a row below v.n = rows (checked).
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(lr_visit_rows)")?;
            // The batch keys' local ids made on the device, ascending: the order of `keys`.
            self.device_slots(n)?;
        }
        self.d_weights.zero(&compute, f)?;
        self.d_grad.zero(&compute, f)?;
        self.d_loss.zero(&compute, 1)?;
        self.d_out.ensure(&compute, m)?;
        let (n32, m32) = (n as u32, m as u32);
        let (cfg_keys, cfg_rows) = (self.grid(m), self.grid(n * 32));
        if m > 0 {
            let mut b = compute.launch_builder(&self.scatter_fn);
            b.arg(self.d_slots.get())
                .arg(self.d_values.get())
                .arg(&m32)
                .arg(self.d_weights.get_mut());
            // SAFETY: m slots < f (local ids) and m values; the dense weights hold f;
            // lr_scatter(const unsigned*, const float*, unsigned, float*).
            unsafe { b.launch(cfg_keys) }.call("cuLaunchKernel(lr_scatter)")?;
        }
        let inv_n = 1.0f32 / n as f32;
        {
            let mut b = compute.launch_builder(&self.gradient_fn);
            b.arg(self.d_row_ptr.get())
                .arg(self.d_cols.get())
                .arg(self.d_vals.get())
                .arg(self.d_labels.get())
                .arg(self.d_batch.get())
                .arg(&n32)
                .arg(self.d_weights.get())
                .arg(self.d_grad.get_mut())
                .arg(&inv_n)
                .arg(self.d_loss.get_mut());
            // SAFETY: row_ptr holds rows + 1 offsets into cols / vals; every col is a local id
            // < f; every batch index is < rows (checked above); weights and grad hold f; loss
            // one double; lr_gradient_rows' signature; blockDim a multiple of 32.
            unsafe { b.launch(cfg_rows) }.call("cuLaunchKernel(lr_gradient_rows)")?;
        }
        if m > 0 {
            let mut b = compute.launch_builder(&self.gather_fn);
            b.arg(self.d_grad.get())
                .arg(self.d_slots.get())
                .arg(&m32)
                .arg(self.d_out.get_mut());
            // SAFETY: m slots < f into the dense gradient (f); out holds m;
            // lr_gather(const float*, const unsigned*, unsigned, float*).
            unsafe { b.launch(cfg_keys) }.call("cuLaunchKernel(lr_gather)")?;
        }
        self.timer.stop(&compute, &mut self.bus.traffic)?;
        self.bus.d2h(&compute, || {
            self.out_host.download(&compute, self.d_out.get(), m)?;
            self.loss_host.download(&compute, self.d_loss.get(), 1)?;
            Ok(4 * m as u64 + 8)
        })?;
        if matches!(batch, BatchRows::Visit(_)) {
            // The device's slots are the call's keys' only if the two sets agree: the same
            // count and the same checksum.
            let found = self.count_host.host()?[0] as usize;
            let sum = self.sum_host.host()?[0];
            if found != m || sum != slot_checksum(&slots) {
                return Err(input(format!(
                    "the visit's batch has {found} keys on the device; the call named {m} \
                     (or other keys): a visit's keys must be its batch's"
                )));
            }
        }
        for (&i, &g) in at.iter().zip(self.out_host.host()?) {
            grad[i] = g;
        }
        let loss = self.loss_host.host()?[0];
        // The host has waited for the stream: every copy timed so far has finished.
        self.bus.settle()?;
        Ok(loss)
    }
}

/// The checksum of a set of local ids that `kernels/slots.cuh` computes on the device: the
/// wrapping sum of a 64-bit mix of each id (`slots_hash`).
pub fn slot_checksum(ids: &[u32]) -> u64 {
    ids.iter().fold(0u64, |acc, &id| {
        let mut x = (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        acc.wrapping_add(x ^ (x >> 32))
    })
}

/// Local ids per chunk of slots.cuh's passes: at most this many chunks, one thread each.
const MAX_CHUNKS: usize = 4096;

impl CudaLrResident {
    /// The sorted local ids of the columns of the `n` rows in `d_batch`, into `d_slots`
    /// (slots.cuh), and their count and checksum ([`slot_checksum`]) queued for download into
    /// `count_host` and `sum_host`.
    fn device_slots(&mut self, n: usize) -> Result<(), GpuError> {
        let f = self.keys.len();
        let chunk = f.div_ceil(MAX_CHUNKS).max(1);
        let chunks = f.div_ceil(chunk);
        let compute = Arc::clone(&self.gpu.compute);
        self.d_flags.zero(&compute, f)?;
        self.d_counts.ensure(&compute, chunks + 1)?;
        self.d_sums.ensure(&compute, chunks + 1)?;
        self.d_slots.ensure(&compute, f)?;
        let (n32, f32_, chunk32, chunks32) = (n as u32, f as u32, chunk as u32, chunks as u32);
        let [mark, count, scan, write] = &self.slots_fns;
        let (rows_cfg, chunks_cfg, one) = (self.grid(n), self.grid(chunks), self.grid(1));
        let mut b = compute.launch_builder(mark);
        b.arg(self.d_row_ptr.get())
            .arg(self.d_cols.get())
            .arg(self.d_batch.get())
            .arg(&n32)
            .arg(self.d_flags.get_mut());
        // SAFETY: n batch rows < rows; their columns are local ids < f, the flags' length;
        // lr_slots_mark(const unsigned*, const unsigned*, const unsigned*, unsigned, u8*).
        unsafe { b.launch(rows_cfg) }.call("cuLaunchKernel(lr_slots_mark)")?;
        let mut b = compute.launch_builder(count);
        b.arg(self.d_flags.get())
            .arg(&f32_)
            .arg(&chunk32)
            .arg(&chunks32)
            .arg(self.d_counts.get_mut())
            .arg(self.d_sums.get_mut());
        // SAFETY: chunks * chunk >= f flags read below f; counts and sums hold chunks + 1;
        // lr_slots_count(const u8*, unsigned, unsigned, unsigned, unsigned*, u64*).
        unsafe { b.launch(chunks_cfg) }.call("cuLaunchKernel(lr_slots_count)")?;
        let mut b = compute.launch_builder(scan);
        b.arg(self.d_counts.get_mut())
            .arg(self.d_sums.get_mut())
            .arg(&chunks32);
        // SAFETY: counts and sums hold chunks + 1; lr_slots_scan(unsigned*, u64*, unsigned),
        // thread 0 only.
        unsafe { b.launch(one) }.call("cuLaunchKernel(lr_slots_scan)")?;
        let mut b = compute.launch_builder(write);
        b.arg(self.d_flags.get())
            .arg(&f32_)
            .arg(&chunk32)
            .arg(&chunks32)
            .arg(self.d_counts.get())
            .arg(self.d_slots.get_mut());
        // SAFETY: the offsets are a prefix sum of the chunks' flags, so every write is below
        // their total <= f, the slots' length; lr_slots_write(const u8*, unsigned, unsigned,
        // unsigned, const unsigned*, unsigned*).
        unsafe { b.launch(chunks_cfg) }.call("cuLaunchKernel(lr_slots_write)")?;
        self.bus.d2h(&compute, || {
            self.count_host
                .download_range(&compute, self.d_counts.get(), chunks..chunks + 1)?;
            self.sum_host
                .download_range(&compute, self.d_sums.get(), chunks..chunks + 1)?;
            Ok(12)
        })?;
        Ok(())
    }
}

/// A worker's rows in CSR form over local key ids: `keys` are the rows' sorted distinct keys and
/// a column is a key's position among them, so weights and gradient can be dense on the device.
struct LocalCsr {
    keys: Vec<u64>,
    row_ptr: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
    labels: Vec<f32>,
}

/// `rows` as [`LocalCsr`] (the caller checked that the offsets fit 32 bits).
fn local_csr(rows: &[SparseRow]) -> LocalCsr {
    let keys = batch_keys(rows);
    let nnz: usize = rows.iter().map(|r| r.features.len()).sum();
    let mut row_ptr = Vec::with_capacity(rows.len() + 1);
    let (mut cols, mut vals) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
    row_ptr.push(0u32);
    for r in rows {
        for &(k, x) in &r.features {
            // Every key of the rows is in `keys`.
            cols.push(keys.binary_search(&k).unwrap_or(0) as u32);
            vals.push(x);
        }
        row_ptr.push(cols.len() as u32);
    }
    let labels = rows.iter().map(|r| r.label).collect();
    LocalCsr {
        keys,
        row_ptr,
        cols,
        vals,
        labels,
    }
}

/// The keys of a call that the worker's rows hold: their local ids, their weights and their
/// positions in the call. The others get no gradient (and no row reads their weight).
struct Present {
    slots: Vec<u32>,
    values: Vec<f32>,
    at: Vec<usize>,
}

fn present_keys(worker_keys: &[u64], keys: &[u64], weights: &[f32]) -> Present {
    let (mut slots, mut values, mut at) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (k, &w)) in keys.iter().zip(weights).enumerate() {
        if let Ok(id) = worker_keys.binary_search(k) {
            slots.push(id as u32);
            values.push(w);
            at.push(i);
        }
    }
    Present { slots, values, at }
}

impl LrResident for CudaLrResident {
    fn name(&self) -> &'static str {
        NAME
    }

    fn setup(&mut self, rows: &[SparseRow]) -> Result<(), ComputeError> {
        failed(NAME, self.try_setup(rows))
    }

    fn gradient(
        &mut self,
        batch: &[u32],
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError> {
        failed(
            NAME,
            self.try_gradient(BatchRows::Named(batch), keys, weights, grad),
        )
    }

    fn gradient_visit(
        &mut self,
        visit: &Visit,
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError> {
        failed(
            NAME,
            self.try_gradient(BatchRows::Visit(visit), keys, weights, grad),
        )
    }

    fn traffic(&self) -> Traffic {
        self.bus.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_apps::lr::{CpuLr, LrCompute};

    /// What the kernels compute from the CSR and the present keys (lr_scatter, lr_gradient_rows,
    /// lr_gather), emulated in f64 on the host: the host halves of the engine (the CSR over
    /// local ids, the key-to-slot mapping, the scatter back into the call's order) give the
    /// oracle's gradient for any batch and any subset of keys.
    #[test]
    fn the_local_csr_and_slots_give_the_oracles_gradient() {
        let row = |label: f32, f: &[(u64, f32)]| SparseRow {
            label,
            features: f.to_vec(),
        };
        let rows = vec![
            row(1.0, &[(7, 0.5), (1 << 40, -1.0), (3, 2.0)]),
            row(0.0, &[(3, 1.0)]),
            row(1.0, &[]),
            row(0.0, &[(9, 0.25), (7, 1.5)]),
        ];
        let csr = local_csr(&rows);
        assert_eq!(csr.keys, [3, 7, 9, 1 << 40]);
        assert_eq!(csr.row_ptr, [0, 3, 4, 4, 6]);
        assert_eq!(csr.cols, [1, 3, 0, 0, 2, 1]);
        for (batch, keys) in [
            (vec![0u32, 3, 1], vec![3u64, 7, 9, 1 << 40]),
            (vec![3, 3, 2], vec![1, 7, 8, 9]),
            (vec![1], vec![3]),
        ] {
            let weights: Vec<f32> = (0..keys.len()).map(|i| 0.3 * i as f32 - 0.4).collect();
            let p = present_keys(&csr.keys, &keys, &weights);
            let mut dense_w = vec![0.0f64; csr.keys.len()];
            for (&s, &v) in p.slots.iter().zip(&p.values) {
                dense_w[s as usize] = f64::from(v);
            }
            let mut dense_g = vec![0.0f64; csr.keys.len()];
            for &r in &batch {
                let (lo, hi) = (
                    csr.row_ptr[r as usize] as usize,
                    csr.row_ptr[r as usize + 1] as usize,
                );
                let z: f64 = (lo..hi)
                    .map(|e| dense_w[csr.cols[e] as usize] * f64::from(csr.vals[e]))
                    .sum();
                let err = 1.0 / (1.0 + (-z).exp()) - f64::from(csr.labels[r as usize]);
                for e in lo..hi {
                    dense_g[csr.cols[e] as usize] +=
                        err * f64::from(csr.vals[e]) / batch.len() as f64;
                }
            }
            let mut got = vec![0.0f32; keys.len()];
            for (&i, &s) in p.at.iter().zip(&p.slots) {
                got[i] = dense_g[s as usize] as f32;
            }
            let named: Vec<SparseRow> = batch.iter().map(|&r| rows[r as usize].clone()).collect();
            let mut want = vec![0.0f32; keys.len()];
            CpuLr.gradient(&named, &keys, &weights, &mut want).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{batch:?} {keys:?}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
