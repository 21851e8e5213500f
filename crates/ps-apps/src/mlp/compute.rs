//! The MLP compute trait, its CPU oracle, and the metrics.

use serde::{Deserialize, Serialize};

use super::data::Dataset;
use super::Arch;
use crate::error::ComputeError;

/// Loss and accuracy totals over a set of samples. Totals (not means), so
/// that batches and workers can be merged with [`BatchStats::merge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    /// Sum over samples of the softmax cross-entropy `−ln p(y)` (natural log).
    pub loss_sum: f64,
    /// Number of samples whose arg-max class (first maximum on ties) equals
    /// the label.
    pub correct: u64,
    /// Number of samples.
    pub count: u64,
}

impl BatchStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
    }

    /// Mean loss (0 for no samples).
    pub fn mean_loss(&self) -> f64 {
        mean_loss(self.loss_sum, self.count)
    }

    /// Fraction correct (0 for no samples).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }
}

/// The compute trait (one per app).
///
/// `params[l]` is layer `l`'s table (row-major `fan_out × (fan_in + 1)`, bias
/// last, see [`Arch`]); `x` is a batch of `b = y.len()` samples, row-major
/// `b × arch.input`; labels must be `< arch.classes`.
///
/// # Panics
/// Implementations panic on caller bugs: parameter shapes that do not match
/// `arch`, `x.len() != y.len() * arch.input`, `out.len()` different from the
/// batch size, or a label `>= arch.classes`.
pub trait MlpCompute {
    /// Forward + backward pass. Overwrites `grads[l]` (same shapes as
    /// `params`) with the gradient of the **mean** cross-entropy over the
    /// batch. Returns the batch's [`BatchStats`] (loss *sum* and correct
    /// count, measured with `params`, i.e. before any update). An empty batch
    /// gives zero gradients and zero stats.
    fn gradient(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        grads: &mut [Vec<f32>],
    ) -> Result<BatchStats, ComputeError>;

    /// Forward pass only: loss sum and correct count of the batch.
    fn evaluate(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
    ) -> Result<BatchStats, ComputeError>;

    /// Forward pass only: writes the arg-max class (first maximum on ties) of
    /// each of the `out.len()` samples of `x`.
    fn predict(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), ComputeError>;

    /// A short backend name for logs, e.g. `"cpu"`.
    fn name(&self) -> &'static str;
}

/// Index of the first maximum of `row` (0 for an empty row). NaN entries
/// never win.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

fn argmax64(row: &[f64]) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// Softmax cross-entropy `−ln softmax(logits)[label]`, computed stably as
/// `logsumexp(logits) − logits[label]` (max subtracted first).
///
/// # Panics
/// If `label >= logits.len()`.
pub fn cross_entropy(logits: &[f32], label: usize) -> f64 {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
    let s: f64 = logits.iter().map(|&z| (f64::from(z) - m).exp()).sum();
    m + s.ln() - f64::from(logits[label])
}

/// Mean loss from a loss sum and a count (0 for `count == 0`).
pub fn mean_loss(loss_sum: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        loss_sum / count as f64
    }
}

/// Fraction of positions where `pred == labels` (0 for empty input).
///
/// # Panics
/// If the lengths differ.
pub fn accuracy(pred: &[u8], labels: &[u8]) -> f64 {
    assert_eq!(pred.len(), labels.len(), "accuracy: length mismatch");
    if labels.is_empty() {
        return 0.0;
    }
    let ok = pred.iter().zip(labels).filter(|(a, b)| a == b).count();
    ok as f64 / labels.len() as f64
}

/// [`MlpCompute::evaluate`] over a whole data set in chunks of `chunk`
/// samples (bounded memory).
pub fn evaluate<C: MlpCompute + ?Sized>(
    compute: &mut C,
    arch: &Arch,
    params: &[Vec<f32>],
    data: &Dataset,
    chunk: usize,
) -> Result<BatchStats, ComputeError> {
    let chunk = chunk.max(1);
    let mut total = BatchStats::default();
    let d = data.d;
    for (xs, ys) in data.x.chunks(chunk * d.max(1)).zip(data.y.chunks(chunk)) {
        total.merge(&compute.evaluate(arch, params, xs, ys)?);
    }
    Ok(total)
}

/// [`MlpCompute::predict`] over a whole data set in chunks of `chunk`.
pub fn predict_all<C: MlpCompute + ?Sized>(
    compute: &mut C,
    arch: &Arch,
    params: &[Vec<f32>],
    data: &Dataset,
    chunk: usize,
) -> Result<Vec<u8>, ComputeError> {
    let chunk = chunk.max(1);
    let mut out = vec![0u8; data.n];
    let d = data.d;
    for (xs, os) in data.x.chunks(chunk * d.max(1)).zip(out.chunks_mut(chunk)) {
        compute.predict(arch, params, xs, os)?;
    }
    Ok(out)
}

/// The shape checks every MLP backend makes (caller bugs panic with these messages).
pub fn check_batch(arch: &Arch, params: &[Vec<f32>], x: &[f32], b: usize) {
    arch.check_params(params);
    assert_eq!(
        x.len(),
        b * arch.input,
        "x has {} values, expected batch {b} x input {}",
        x.len(),
        arch.input
    );
}

/// The label check every MLP backend makes (a label `>= classes` panics).
pub fn check_labels(arch: &Arch, y: &[u8]) {
    if let Some(&bad) = y.iter().find(|&&l| usize::from(l) >= arch.classes) {
        panic!("label {bad} out of range (classes = {})", arch.classes);
    }
}

/// Plain, obviously correct CPU oracle: per-sample loops, all activations,
/// sums and gradients accumulated in `f64`, softmax with the maximum
/// subtracted. ReLU's derivative at 0 is taken as 0 (same as [`super::FastMlp`]).
/// Allocates per call; meant for checking, not speed.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMlp;

impl CpuMlp {
    /// Forward pass of one sample: the activations of every layer
    /// (`acts[0]` = input, `acts[L]` = logits; hidden ones after ReLU).
    fn forward(arch: &Arch, params: &[Vec<f32>], xs: &[f32]) -> Vec<Vec<f64>> {
        let nl = arch.num_layers();
        let mut acts: Vec<Vec<f64>> = Vec::with_capacity(nl + 1);
        acts.push(xs.iter().map(|&v| f64::from(v)).collect());
        for (l, p) in params.iter().enumerate() {
            let s = arch.layer(l);
            let input = &acts[l];
            let mut out = vec![0.0f64; s.fan_out];
            for (o, z) in out.iter_mut().enumerate() {
                let row = &p[o * s.width()..(o + 1) * s.width()];
                let mut acc = f64::from(row[s.fan_in]);
                for i in 0..s.fan_in {
                    acc += f64::from(row[i]) * input[i];
                }
                *z = if l + 1 < nl { acc.max(0.0) } else { acc };
            }
            acts.push(out);
        }
        acts
    }

    /// Stable softmax probabilities and the loss for `label`.
    fn softmax(logits: &[f64], label: usize) -> (Vec<f64>, f64) {
        let m = logits.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let e: Vec<f64> = logits.iter().map(|&z| (z - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let loss = m + s.ln() - logits[label];
        (e.iter().map(|v| v / s).collect(), loss)
    }
}

impl MlpCompute for CpuMlp {
    fn gradient(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        grads: &mut [Vec<f32>],
    ) -> Result<BatchStats, ComputeError> {
        let b = y.len();
        check_batch(arch, params, x, b);
        check_labels(arch, y);
        arch.check_params(grads);
        let nl = arch.num_layers();
        let d = arch.input;
        let mut acc: Vec<Vec<f64>> = grads.iter().map(|g| vec![0.0f64; g.len()]).collect();
        let mut stats = BatchStats::default();
        let inv_b = if b == 0 { 0.0 } else { 1.0 / b as f64 };
        for (s_idx, &label) in y.iter().enumerate() {
            let acts = Self::forward(arch, params, &x[s_idx * d..(s_idx + 1) * d]);
            let label = usize::from(label);
            let (p, loss) = Self::softmax(&acts[nl], label);
            stats.loss_sum += loss;
            stats.count += 1;
            if argmax64(&acts[nl]) == label {
                stats.correct += 1;
            }
            // dL/dz for the output layer, scaled for the batch mean.
            let mut delta: Vec<f64> = p
                .iter()
                .enumerate()
                .map(|(c, &pc)| (pc - if c == label { 1.0 } else { 0.0 }) * inv_b)
                .collect();
            for l in (0..nl).rev() {
                let s = arch.layer(l);
                let w = s.width();
                let input = &acts[l];
                let g = &mut acc[l];
                for (o, &dz) in delta.iter().enumerate() {
                    for i in 0..s.fan_in {
                        g[o * w + i] += dz * input[i];
                    }
                    g[o * w + s.fan_in] += dz;
                }
                if l > 0 {
                    let p = &params[l];
                    let mut prev = vec![0.0f64; s.fan_in];
                    for (i, pv) in prev.iter_mut().enumerate() {
                        // ReLU'(z) = 1 iff z > 0 iff the activation is > 0.
                        if input[i] > 0.0 {
                            let mut sum = 0.0;
                            for (o, &dz) in delta.iter().enumerate() {
                                sum += dz * f64::from(p[o * w + i]);
                            }
                            *pv = sum;
                        }
                    }
                    delta = prev;
                }
            }
        }
        for (g, a) in grads.iter_mut().zip(&acc) {
            for (gv, av) in g.iter_mut().zip(a) {
                *gv = *av as f32;
            }
        }
        Ok(stats)
    }

    fn evaluate(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
    ) -> Result<BatchStats, ComputeError> {
        let b = y.len();
        check_batch(arch, params, x, b);
        check_labels(arch, y);
        let nl = arch.num_layers();
        let d = arch.input;
        let mut stats = BatchStats::default();
        for (s_idx, &label) in y.iter().enumerate() {
            let acts = Self::forward(arch, params, &x[s_idx * d..(s_idx + 1) * d]);
            let label = usize::from(label);
            let (_, loss) = Self::softmax(&acts[nl], label);
            stats.loss_sum += loss;
            stats.count += 1;
            if argmax64(&acts[nl]) == label {
                stats.correct += 1;
            }
        }
        Ok(stats)
    }

    fn predict(
        &mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), ComputeError> {
        check_batch(arch, params, x, out.len());
        let nl = arch.num_layers();
        let d = arch.input;
        for (s_idx, o) in out.iter_mut().enumerate() {
            let acts = Self::forward(arch, params, &x[s_idx * d..(s_idx + 1) * d]);
            *o = argmax64(&acts[nl]) as u8;
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "cpu"
    }
}
