//! A dense multi-layer perceptron (MLP) classifier trained with mini-batch
//! SGD on a parameter server.
//!
//! # Model
//! [`Arch`] describes `input → hidden₁ → … → hiddenₖ → classes`: every hidden
//! layer is affine + ReLU, the output layer is affine + softmax, and the loss
//! is softmax cross-entropy, **averaged over the mini-batch**.
//!
//! # Parameters
//! Layer `l` (0-based, `l = 0` reads the input) has `fan_out` output units and
//! `fan_in` inputs. Its parameters are one dense `Vec<f32>` of
//! `fan_out × (fan_in + 1)` entries, row-major: row `o` holds the `fan_in`
//! weights of unit `o` followed by its bias (the last column). This is exactly
//! one parameter-server table per layer (rows = output units, width =
//! `fan_in + 1`). [`LayerShape`], [`LayerView`], [`Arch::flatten`] and
//! [`Arch::unflatten`] convert between the per-layer and the flat view.
//!
//! The server initialises table `l` with [`layer_init`] (Glorot-uniform weights,
//! zero bias), and workers compute the same with [`init_layer`]`(l, fan_in,
//! fan_out, seed)`, a pure function of its arguments, so server and workers
//! agree without communication.
//!
//! # Schedules
//! Two schedules are supported with the same compute ([`MlpCompute`]):
//!
//! * **Gradient push** (server rule `sgd(lr)` or `adagrad`): per mini-batch a
//!   worker calls [`MlpCompute::gradient`] on its (stale) parameter copy and
//!   pushes the gradient. Gradients are of the *mean* batch loss, so `lr` does
//!   not depend on the batch size in the usual way.
//! * **Local SGD + delta push** (server rule `add`): per clock a worker reads
//!   all tables, runs [`local_sgd_clock`] (one shuffled pass over its samples,
//!   [`sgd_step`] after every mini-batch) and pushes
//!   `delta = local_after − read`. With `W` workers, push `delta / W`
//!   (model averaging, [`ClockOutput::scale`]); pushing the raw sum multiplies
//!   the effective step by `W` and is only stable for small `lr`.
//!
//! Samples are split over workers with [`worker_split`]; the visiting order
//! of an epoch is a [`Visit`] keyed by [`ClockKey`] (a permutation a device can make
//! position by position), and a clock visits a slice of it.
//!
//! # Backends
//! [`CpuMlp`] is the oracle (plain loops, `f64` accumulation); [`FastMlp`]
//! uses `matrixmultiply::sgemm`, preallocated buffers and optionally splits a
//! batch over threads. `tests/mlp_conformance.rs` checks them against each
//! other. A device engine can instead keep a worker's samples and model resident and run a
//! whole clock there ([`MlpResident`], CPU oracle [`HostMlpResident`]); the session
//! ([`MlpSession`]) takes that path when its engines offer one.
//!
//! # Data
//! [`load_idx_pair`] / [`load_mnist_dir`] read MNIST-style IDX files (plain or
//! gzip), scaling pixels `p` to `p / 255 ∈ [0, 1]`; [`synthetic_mlp`] builds
//! the built-in data set ([`SyntheticMlpSpec::default_builtin`]).

mod app;
mod arch;
mod compute;
mod data;
mod fast;
mod resident;
mod session;
mod synth;

pub use app::{
    MlpApp, MlpArgs, MlpClock, MlpFacts, MlpFinal, MlpSettings, BUILTIN_EPOCHS,
    DATA_CLOCKS_PER_EPOCH, DATA_EPOCHS, DATA_LR,
};
pub use arch::{init_layer, layer_init, Arch, LayerShape, LayerView};
pub use resident::{
    check_load, check_setup, HostMlpResident, MlpResident, ReadCoverage, Traffic, EVAL_CHUNK,
};
pub use session::MlpSession;

pub use compute::{
    accuracy, argmax, check_batch, check_labels, cross_entropy, evaluate, mean_loss, predict_all,
    BatchStats, CpuMlp, MlpCompute,
};
pub use data::{
    load_idx_pair, load_idx_pair_classes, load_mnist_dir, parse_idx_images, parse_idx_labels,
    read_idx_images, read_idx_labels, split_train_test, standardise, Dataset, IdxImages,
    MAX_IDX_PAYLOAD, MNIST_CLASSES,
};
pub use fast::FastMlp;
pub use synth::{
    synthetic_mlp, synthetic_mlp_threads, synthetic_mlp_worker, SyntheticMlpSpec, BUILTIN_CLASSES,
    BUILTIN_CLUSTERS_PER_CLASS, BUILTIN_FEATURES, BUILTIN_LATENT, BUILTIN_TEST, BUILTIN_TRAIN,
    CHUNKED_MAX_VALUES, SAMPLES_PER_CHUNK,
};

use serde::{Deserialize, Serialize};

use crate::error::ComputeError;
pub use crate::seed::{epoch_order, ClockKey};
pub use crate::visit::Visit;

/// Local update `params[l] -= lr * grads[l]` for every layer.
///
/// # Panics
/// If the shapes of `params` and `grads` differ.
pub fn sgd_step(params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f32) {
    assert_eq!(params.len(), grads.len(), "layer count mismatch");
    for (p, g) in params.iter_mut().zip(grads) {
        assert_eq!(p.len(), g.len(), "layer size mismatch");
        for (w, d) in p.iter_mut().zip(g) {
            *w -= lr * d;
        }
    }
}

/// `after[l] - before[l]` for every layer (the delta to push with `add`).
pub fn params_delta(after: &[Vec<f32>], before: &[Vec<f32>]) -> Vec<Vec<f32>> {
    assert_eq!(after.len(), before.len(), "layer count mismatch");
    after
        .iter()
        .zip(before)
        .map(|(a, b)| {
            assert_eq!(a.len(), b.len(), "layer size mismatch");
            a.iter().zip(b).map(|(x, y)| x - y).collect()
        })
        .collect()
}

/// `params[l] += scale * delta[l]` for every layer (what the server's `add`
/// rule does with a pushed `scale * delta`).
pub fn add_scaled(params: &mut [Vec<f32>], delta: &[Vec<f32>], scale: f32) {
    assert_eq!(params.len(), delta.len(), "layer count mismatch");
    for (p, d) in params.iter_mut().zip(delta) {
        assert_eq!(p.len(), d.len(), "layer size mismatch");
        for (w, x) in p.iter_mut().zip(d) {
            *w += scale * x;
        }
    }
}

// ---------------------------------------------------------------------------
// Worker splits and clocks
// ---------------------------------------------------------------------------

/// The sample indices owned by worker `w` of `workers`: `w, w + W, w + 2W, …`
/// below `n` (strided, so every worker gets a class mix even if the data is
/// sorted by class; sizes differ by at most one).
///
/// # Panics
/// If `workers == 0` or `w >= workers` (caller bug).
pub fn worker_split(n: usize, workers: usize, w: usize) -> Vec<usize> {
    assert!(workers > 0, "worker_split: workers must be > 0");
    assert!(
        w < workers,
        "worker_split: w ({w}) must be < workers ({workers})"
    );
    (w..n).step_by(workers).collect()
}

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MlpHyper {
    /// Mini-batch size (per worker).
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f32,
    /// Learning rate at clock `c` is `lr * lr_decay^c`.
    pub lr_decay: f32,
}

impl MlpHyper {
    /// Recommended for the built-in data ([`Arch::builtin`]), 2 workers,
    /// either schedule: batch 32, lr 0.1, decay 0.95 per clock (= epoch).
    pub fn builtin() -> Self {
        MlpHyper {
            batch: 32,
            lr: 0.1,
            lr_decay: 0.95,
        }
    }

    /// Recommended for (Fashion-)MNIST with [`Arch::mnist`]: batch 64,
    /// lr 0.05, decay 0.9 per epoch.
    pub fn mnist() -> Self {
        MlpHyper {
            batch: 64,
            lr: 0.05,
            lr_decay: 0.9,
        }
    }

    /// Learning rate at 0-based clock `c`.
    pub fn lr_at(&self, clock: u32) -> f32 {
        self.lr * self.lr_decay.powi(clock.min(i32::MAX as u32) as i32)
    }
}

/// Result of [`local_sgd_clock`].
#[derive(Debug, Clone)]
pub struct ClockOutput {
    /// `local_after - params_read`, per layer (push with `add`, usually
    /// scaled by `1 / workers`).
    pub delta: Vec<Vec<f32>>,
    /// Training loss / accuracy measured on each batch before its update.
    pub stats: BatchStats,
    /// Number of mini-batches (= local SGD steps) run.
    pub batches: usize,
}

impl ClockOutput {
    /// Multiplies the delta by `s` in place (e.g. `1 / workers`).
    pub fn scale(&mut self, s: f32) {
        for d in &mut self.delta {
            for x in d.iter_mut() {
                *x *= s;
            }
        }
    }
}

/// One local-SGD clock: a copy of `params_read` is updated with
/// [`sgd_step`] after every mini-batch of `hyper.batch` samples (the last
/// batch may be smaller) of `order` (indices into `data`, in visiting order: e.g.
/// [`visiting_order`] of a [`worker_split`], or a clock's slice of it), at learning
/// rate `hyper.lr_at(key.clock)`. Returns `local_after - params_read`.
pub fn local_sgd_clock<C: MlpCompute + ?Sized>(
    compute: &mut C,
    arch: &Arch,
    params_read: &[Vec<f32>],
    data: &Dataset,
    order: &[usize],
    hyper: &MlpHyper,
    key: ClockKey,
) -> Result<ClockOutput, ComputeError> {
    let mut local = params_read.to_vec();
    let mut grads = arch.zeros();
    let (stats, batches) = local_sgd_steps(
        compute,
        arch,
        &mut local,
        &mut grads,
        data,
        order,
        hyper,
        hyper.lr_at(key.clock),
    )?;
    let delta = params_delta(&local, params_read);
    Ok(ClockOutput {
        delta,
        stats,
        batches,
    })
}

/// `samples` in the order of the epoch `key`'s [`Visit`] (the whole epoch); a clock of an
/// epoch split over several visits a slice of it ([`Visit::for_clock`]).
pub fn visiting_order(samples: &[usize], key: ClockKey) -> Vec<usize> {
    Visit::for_clock(key, samples.len(), 0, 1)
        .order()
        .into_iter()
        .map(|i| samples[i])
        .collect()
}

/// The steps of a local-SGD clock on `local` in place: an [`sgd_step`] at rate `lr` after
/// every mini-batch of `hyper.batch` samples of `order` (the last may be smaller). `grads` is
/// scratch of the model's shape. Returns the batches' stats (each measured before its step)
/// and the number of steps.
#[allow(clippy::too_many_arguments)]
pub fn local_sgd_steps<C: MlpCompute + ?Sized>(
    compute: &mut C,
    arch: &Arch,
    local: &mut [Vec<f32>],
    grads: &mut [Vec<f32>],
    data: &Dataset,
    order: &[usize],
    hyper: &MlpHyper,
    lr: f32,
) -> Result<(BatchStats, usize), ComputeError> {
    let batch = hyper.batch.max(1);
    let mut xb = Vec::with_capacity(batch * data.d);
    let mut yb = Vec::with_capacity(batch);
    let mut stats = BatchStats::default();
    let mut batches = 0;
    for chunk in order.chunks(batch) {
        data.gather(chunk, &mut xb, &mut yb);
        stats.merge(&compute.gradient(arch, local, &xb, &yb, grads)?);
        sgd_step(local, grads, lr);
        batches += 1;
    }
    Ok((stats, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_built_in_set_keeps_a_test_sample() {
        let args = MlpArgs {
            samples: 2,
            ..MlpArgs::default()
        };
        let spec = args.synthetic_spec(1).unwrap();
        assert_eq!((spec.train, spec.test), (2, 1));
        let args = MlpArgs {
            test_samples: Some(0),
            ..MlpArgs::default()
        };
        let err = args.synthetic_spec(1).unwrap_err().to_string();
        assert!(err.contains("--test-samples"), "{err}");
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let key = ClockKey {
            seed: 1,
            worker: 0,
            clock: 0,
        };
        let a = epoch_order(100, key);
        assert_eq!(a, epoch_order(100, key));
        assert_ne!(a, epoch_order(100, ClockKey { clock: 1, ..key }));
        assert_ne!(a, epoch_order(100, ClockKey { worker: 1, ..key }));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn lr_schedule_decays() {
        let h = MlpHyper::builtin();
        assert_eq!(h.lr_at(0), h.lr);
        assert!((h.lr_at(2) - h.lr * h.lr_decay * h.lr_decay).abs() < 1e-7);
        assert!(h.lr_at(u32::MAX).is_finite());
    }

    #[test]
    fn local_sgd_clock_counts_batches_and_is_deterministic() {
        let mut spec = SyntheticMlpSpec::default_builtin(1);
        spec.train = 100;
        spec.test = 0;
        let (data, _) = synthetic_mlp(&spec);
        let arch = Arch::new(data.d, &[8], data.classes);
        let read = arch.init_params(2);
        let samples = worker_split(data.n, 2, 1);
        let hyper = MlpHyper {
            batch: 16,
            lr: 0.1,
            lr_decay: 1.0,
        };
        let key = ClockKey {
            seed: 3,
            worker: 1,
            clock: 0,
        };
        let a = local_sgd_clock(
            &mut FastMlp::new(),
            &arch,
            &read,
            &data,
            &samples,
            &hyper,
            key,
        )
        .unwrap();
        assert_eq!(a.batches, 4); // 50 samples in batches of 16
        assert_eq!(a.stats.count, 50);
        let b = local_sgd_clock(
            &mut FastMlp::new(),
            &arch,
            &read,
            &data,
            &samples,
            &hyper,
            key,
        )
        .unwrap();
        assert_eq!(a.delta, b.delta);
        // The oracle takes the same steps up to rounding.
        let c = local_sgd_clock(&mut CpuMlp, &arch, &read, &data, &samples, &hyper, key).unwrap();
        for (x, y) in a.delta.iter().flatten().zip(c.delta.iter().flatten()) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        let mut s = a.clone();
        s.scale(0.5);
        assert_eq!(s.delta[0][0], a.delta[0][0] * 0.5);
    }
}
