//! An LR engine that keeps a worker's training rows where it computes: the trait a device engine
//! (CUDA) implements, and its CPU oracle [`HostLrResident`].
//!
//! A resident engine receives the worker's training rows once ([`LrResident::setup`]) and keeps
//! them for the whole job. Per clock the session names the batch by its [`Visit`] (positions of
//! the epoch's keyed permutation of the rows, the order the host path visits them in) and hands
//! over the batch keys' pulled weights; the engine returns the gradient of those keys
//! ([`LrResident::gradient_visit`], the contract of [`LrCompute::gradient`]). A device engine
//! makes the row indices itself: on a GPU the weights in and the gradient out are all that
//! cross PCIe in a clock.
//!
//! [`HostLrResident`] gathers the rows and runs a [`LrCompute`] engine on them: exactly the host
//! path's arithmetic, so the session's resident path is tested where there is no GPU.

use super::compute::{batch_keys, LrCompute};
use super::data::SparseRow;
pub use crate::app::Traffic;
use crate::error::ComputeError;
use crate::visit::Visit;

/// An LR engine whose training rows stay resident between clocks (see the module docs).
pub trait LrResident: Send {
    /// A short name for logs (`cuda-resident`, `cpu-resident`).
    fn name(&self) -> &'static str;

    /// Takes the worker's training rows; `gradient`'s row indices point into them. Called once.
    fn setup(&mut self, rows: &[SparseRow]) -> Result<(), ComputeError>;

    /// The gradient of the mean logistic loss of rows `batch` (indices, in visiting order) at
    /// `weights` (of `keys`, sorted and distinct) into `grad`, as [`LrCompute::gradient`] of
    /// those rows; returns the summed loss. An index out of range is an error.
    fn gradient(
        &mut self,
        batch: &[u32],
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError>;

    /// [`LrResident::gradient`] of the rows `visit` names, in its order, where `keys` are
    /// exactly the batch's keys ([`batch_keys`] of its rows; engines may refuse others). A
    /// device engine makes the row indices where the rows are ([`Visit::at`] is a pure
    /// function of the position), and the keys' local ids too, so only the keys' weights cross
    /// the bus. A visit of other than the engine's rows ([`Visit::check`]) is an error.
    fn gradient_visit(
        &mut self,
        visit: &Visit,
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError>;

    /// Totals since the engine was made.
    fn traffic(&self) -> Traffic;
}

/// Checks a resident gradient call's lengths and row indices (shared by the engines).
pub fn check_gradient(
    rows: usize,
    batch: &[u32],
    keys: &[u64],
    weights: &[f32],
    grad: &[f32],
) -> Result<(), String> {
    if weights.len() != keys.len() || grad.len() != keys.len() {
        return Err(format!(
            "{} keys with {} weights and {} gradient slots",
            keys.len(),
            weights.len(),
            grad.len()
        ));
    }
    if keys.windows(2).any(|w| w[0] >= w[1]) {
        return Err("the batch keys are not sorted and distinct".into());
    }
    match batch.iter().find(|&&i| i as usize >= rows) {
        Some(i) => Err(format!("row {i} of {rows} training rows")),
        None => Ok(()),
    }
}

/// Checks that `keys` are exactly the keys of rows `batch` of `rows` (what
/// [`LrResident::gradient_visit`] requires).
pub fn check_visit_keys(rows: &[SparseRow], batch: &[u32], keys: &[u64]) -> Result<(), String> {
    let named: Vec<SparseRow> = batch
        .iter()
        .filter_map(|&i| rows.get(i as usize).cloned())
        .collect();
    if batch_keys(&named) != keys {
        return Err(format!(
            "{} keys that are not the {} keys of the visit's batch",
            keys.len(),
            batch_keys(&named).len()
        ));
    }
    Ok(())
}

/// The CPU oracle of a resident engine: the batch's rows gathered and handed to a
/// [`LrCompute`] engine. Nothing crosses a bus, but its [`Traffic`] counts what the CUDA engine
/// copies for the same calls ([`LrCopies`]), and its compute time is the host engine's.
pub struct HostLrResident {
    engine: Box<dyn LrCompute + Send>,
    rows: Vec<SparseRow>,
    batch: Vec<SparseRow>,
    /// The rows' sorted distinct keys: a call's keys outside them cross no bus.
    keys: Vec<u64>,
    traffic: Traffic,
}

/// The bytes a device LR engine copies, as `worker-gpu`'s `CudaLrResident` copies them:
/// - set-up: the rows in CSR form over local key ids, once (a u32 offset per row and one more,
///   a u32 local id and an f32 value per nonzero, an f32 label per row);
/// - a call naming its rows: their indices and the present keys' local ids and weights in
///   (4 bytes each), the present keys' gradient and the loss (a double) out;
/// - a call by visit: the keys' weights in; the device makes the rows and local ids, and sends
///   back their count and checksum (12 bytes) with the gradient and the loss.
///
/// A call of no rows copies nothing.
pub struct LrCopies;

impl LrCopies {
    /// Bytes in at set-up.
    pub fn setup(rows: &[SparseRow]) -> u64 {
        let nnz: usize = rows.iter().map(|r| r.features.len()).sum();
        4 * (rows.len() as u64 + 1) + 8 * nnz as u64 + 4 * rows.len() as u64
    }

    /// Bytes `(in, out)` of a call of `n` rows whose keys include `present` of the worker's.
    pub fn call(n: usize, present: usize, visit: bool) -> (u64, u64) {
        if n == 0 {
            return (0, 0);
        }
        let m = present as u64;
        if visit {
            (4 * m, 12 + 4 * m + 8)
        } else {
            (4 * (n as u64 + m) + 4 * m, 4 * m + 8)
        }
    }
}

impl HostLrResident {
    /// Runs `engine`.
    pub fn new(engine: Box<dyn LrCompute + Send>) -> HostLrResident {
        HostLrResident {
            engine,
            rows: Vec::new(),
            batch: Vec::new(),
            keys: Vec::new(),
            traffic: Traffic::default(),
        }
    }

    /// The gradient of rows `batch` (checked), the copies counted as a call by visit or not.
    fn run(
        &mut self,
        batch: &[u32],
        (keys, weights, grad): (&[u64], &[f32], &mut [f32]),
        visit: bool,
    ) -> Result<f64, ComputeError> {
        let present = keys
            .iter()
            .filter(|k| self.keys.binary_search(k).is_ok())
            .count();
        let (h2d, d2h) = LrCopies::call(batch.len(), present, visit);
        self.traffic.h2d_bytes += h2d;
        self.traffic.d2h_bytes += d2h;
        self.batch.clear();
        self.batch
            .extend(batch.iter().map(|&i| self.rows[i as usize].clone()));
        let (engine, rows) = (&mut self.engine, &self.batch);
        self.traffic
            .timed(|| engine.gradient(rows, keys, weights, grad))
    }
}

impl LrResident for HostLrResident {
    fn name(&self) -> &'static str {
        "cpu-resident"
    }

    fn setup(&mut self, rows: &[SparseRow]) -> Result<(), ComputeError> {
        self.rows = rows.to_vec();
        self.keys = batch_keys(rows);
        self.traffic.h2d_bytes += LrCopies::setup(rows);
        Ok(())
    }

    fn gradient(
        &mut self,
        batch: &[u32],
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError> {
        check_gradient(self.rows.len(), batch, keys, weights, grad).map_err(|message| {
            ComputeError {
                engine: "cpu-resident",
                message,
            }
        })?;
        self.run(batch, (keys, weights, grad), false)
    }

    fn gradient_visit(
        &mut self,
        visit: &Visit,
        keys: &[u64],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f64, ComputeError> {
        let bad = |message| ComputeError {
            engine: "cpu-resident",
            message,
        };
        // In the CUDA engine's order, so that a refused call has copied what it copies there.
        check_gradient(self.rows.len(), &[], keys, weights, grad).map_err(bad)?;
        visit.check(self.rows.len()).map_err(bad)?;
        grad.fill(0.0);
        let batch: Vec<u32> = visit.order().into_iter().map(|i| i as u32).collect();
        if batch.is_empty() {
            return Ok(0.0);
        }
        if let Err(e) = check_visit_keys(&self.rows, &batch, keys) {
            // Keys all the worker's but not the batch's: the device finds out only after its
            // copies (the count and checksum of the batch's keys come back with the gradient).
            if keys.iter().all(|k| self.keys.binary_search(k).is_ok()) {
                let (h2d, d2h) = LrCopies::call(batch.len(), keys.len(), true);
                self.traffic.h2d_bytes += h2d;
                self.traffic.d2h_bytes += d2h;
            }
            return Err(bad(e));
        }
        self.run(&batch, (keys, weights, grad), true)
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lr::{batch_keys, CpuLr};

    fn row(label: f32, features: &[(u64, f32)]) -> SparseRow {
        SparseRow {
            label,
            features: features.to_vec(),
        }
    }

    #[test]
    fn the_oracle_is_the_engine_on_the_named_rows_and_refuses_bad_calls() {
        let rows = vec![
            row(1.0, &[(3, 1.0), (9, -2.0)]),
            row(0.0, &[(3, 0.5)]),
            row(1.0, &[(7, 1.0), (9, 1.0), (9, 1.0)]),
        ];
        let mut dev = HostLrResident::new(Box::new(CpuLr));
        dev.setup(&rows).unwrap();
        let idx = [2u32, 0, 2];
        let picked: Vec<SparseRow> = idx.iter().map(|&i| rows[i as usize].clone()).collect();
        let keys = batch_keys(&picked);
        let w = vec![0.25f32, -0.5, 1.0];
        let (mut want, mut got) = (vec![0.0; 3], vec![0.0; 3]);
        let lw = CpuLr.gradient(&picked, &keys, &w, &mut want).unwrap();
        let lg = dev.gradient(&idx, &keys, &w, &mut got).unwrap();
        assert_eq!((lw, &want), (lg, &got));
        // Set-up: 4 offsets, 6 nonzeros (id and value), 3 labels; the call: 3 row indices and
        // 3 keys' ids and weights in, 3 gradients and the loss out.
        let t = dev.traffic();
        assert_eq!((t.h2d_bytes, t.d2h_bytes), (16 + 48 + 12 + 36, 20));
        let mut g = vec![0.0; 3];
        assert!(dev.gradient(&[3], &keys, &w, &mut g).is_err(), "row 3 of 3");
        assert!(
            dev.gradient(&[0], &keys, &w[..2], &mut g).is_err(),
            "lengths"
        );
        assert!(
            dev.gradient(&[0], &[9, 3, 7], &w, &mut g).is_err(),
            "unsorted"
        );
        // A visit: the rows its order names; its keys must be exactly theirs.
        let visit = Visit::for_clock(
            crate::seed::ClockKey {
                seed: 1,
                worker: 0,
                clock: 0,
            },
            3,
            0,
            1,
        );
        let named: Vec<SparseRow> = visit.order().iter().map(|&i| rows[i].clone()).collect();
        let keys = batch_keys(&named);
        let (mut want, mut got) = (vec![0.0; keys.len()], vec![0.0; keys.len()]);
        let w = vec![0.5f32; keys.len()];
        let lw = CpuLr.gradient(&named, &keys, &w, &mut want).unwrap();
        let before = dev.traffic();
        let lg = dev.gradient_visit(&visit, &keys, &w, &mut got).unwrap();
        assert_eq!((lw, &want), (lg, &got));
        // Only the weights in; the count and checksum, gradient and loss out.
        let t = dev.traffic().since(&before);
        let m = keys.len() as u64;
        assert_eq!((t.h2d_bytes, t.d2h_bytes), (4 * m, 12 + 4 * m + 8));
        let fewer = &keys[1..];
        let before = dev.traffic();
        let e = dev.gradient_visit(&visit, fewer, &w[1..], &mut got[1..]);
        assert!(e.is_err(), "keys other than the batch's");
        // The worker's keys: the device copied before it found out, and so counts the oracle.
        let t = dev.traffic().since(&before);
        let m = fewer.len() as u64;
        assert_eq!((t.h2d_bytes, t.d2h_bytes), (4 * m, 12 + 4 * m + 8));
    }
}
