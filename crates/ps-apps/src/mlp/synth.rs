//! The synthetic classification data: Gaussian clusters in a latent space seen through a fixed
//! random nonlinear map, generated in parallel over chunks of samples.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use super::Dataset;
use crate::par;
use crate::seed::{mix64, stream_rng};

/// Training samples of the built-in data set.
pub const BUILTIN_TRAIN: usize = 20_000;
/// Test samples of the built-in data set.
pub const BUILTIN_TEST: usize = 5_000;
/// Features of the built-in data set.
pub const BUILTIN_FEATURES: usize = 64;
/// Latent dimension of the built-in data set.
pub const BUILTIN_LATENT: usize = 8;
/// Classes of the built-in data set.
pub const BUILTIN_CLASSES: usize = 10;
/// Gaussian clusters per class of the built-in data set.
pub const BUILTIN_CLUSTERS_PER_CLASS: usize = 8;

/// Parameters of the synthetic classification generator ([`synthetic_mlp`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticMlpSpec {
    /// Training samples.
    pub train: usize,
    /// Test samples (same distribution).
    pub test: usize,
    /// Observed features `d`.
    pub features: usize,
    /// Latent dimension in which the clusters live.
    pub latent: usize,
    /// Number of classes (2..=256).
    pub classes: usize,
    /// Gaussian clusters per class.
    pub clusters_per_class: usize,
    /// Standard deviation of a cluster in latent space (cluster centres are
    /// `N(0, I)`, at least `min_center_dist` apart across classes).
    pub cluster_std: f32,
    /// Minimum latent distance between centres of different classes
    /// (enforced by rejection sampling, best effort).
    pub min_center_dist: f32,
    /// Gain of the random map: `A` has entries `N(0, map_gain² / latent)`.
    /// Small gains keep `tanh` nearly linear (the classes then interleave in
    /// feature space as they do in latent space); large gains make the
    /// features a rich random-feature expansion that a linear model can
    /// exploit.
    pub map_gain: f32,
    /// Standard deviation of the Gaussian noise added to every feature.
    pub noise_std: f32,
    /// RNG seed; the output is a pure function of the spec.
    pub seed: u64,
}

impl SyntheticMlpSpec {
    /// Features of a sample, as drawn (`features`, at least 1).
    pub fn dims(&self) -> usize {
        self.features.max(1)
    }

    /// Classes, as drawn (`classes` clamped to `2..=256`).
    pub fn num_classes(&self) -> usize {
        self.classes.clamp(2, 256)
    }

    /// The built-in data set: 20,000 train / 5,000 test samples, 10
    /// classes, each a mixture of 8 Gaussian clusters (std 0.25) in an
    /// 8-dimensional latent space, centres `N(0, I)` at least 1.0 apart
    /// across classes, observed through a fixed random nonlinear map
    /// `x = tanh(A z + c) + N(0, 0.05²)` into 64 features (`map_gain` 0.3).
    ///
    /// Why these numbers: 80 clusters scattered in 8 dimensions interleave
    /// the classes, so a linear (softmax) classifier plateaus near 0.36 test
    /// accuracy, while a `64-128-128-10` ReLU net reaches ≈ 0.91 after one
    /// epoch, ≈ 0.97 after two and ≈ 0.99 after a few (single worker, batch
    /// 32, lr 0.1; measured). 64 features and 20k samples keep an epoch at
    /// ≈ 3 GFLOP of training, so the 2-worker cluster job needs seconds of
    /// compute on slow cores, and 5k test samples measure accuracy to
    /// ±0.3 % (1 s.d. at 0.95). A larger `map_gain` makes the features a
    /// random-feature expansion that a linear model can exploit (gain 1.0:
    /// linear ≈ 0.93).
    pub fn default_builtin(seed: u64) -> Self {
        SyntheticMlpSpec {
            train: BUILTIN_TRAIN,
            test: BUILTIN_TEST,
            features: BUILTIN_FEATURES,
            latent: BUILTIN_LATENT,
            classes: BUILTIN_CLASSES,
            clusters_per_class: BUILTIN_CLUSTERS_PER_CLASS,
            cluster_std: 0.25,
            min_center_dist: 1.0,
            map_gain: 0.3,
            noise_std: 0.05,
            seed,
        }
    }
}

/// Generates `(train, test)` from `spec`: a pure function of the spec, whatever the machine's
/// thread count.
///
/// Each sample picks a class and one of its clusters uniformly, draws a
/// latent point `z = centre + cluster_std · N(0, I)` and outputs
/// `x = tanh(A z + c) + noise_std · N(0, I)`, where `A` (`features × latent`,
/// entries `N(0, map_gain² / latent)`) and `c` (entries `N(0, 0.5²)`) are fixed by the
/// seed. Degenerate sizes (`features`, `latent`, `clusters_per_class` = 0)
/// are treated as 1; `classes` is clamped to `2..=256`.
///
/// One RNG stream draws the centres and the map. Then, up to [`CHUNKED_MAX_VALUES`] values
/// (`(train + test) × features`; the built-in set and the GPU benchmark's 60,000 × 784), the
/// same stream draws the first [`SAMPLES_PER_CHUNK`] training samples and the first
/// [`SAMPLES_PER_CHUNK`] test samples (so the built-in set is the data it always was), and every
/// further chunk of either set has its own RNG, seeded by the seed and the chunk's index. Above
/// that, each sample has its own RNG, seeded by the seed, its set and its index, so a worker can
/// draw its share alone ([`synthetic_mlp_worker`]). The chunks or samples are drawn in parallel.
pub fn synthetic_mlp(spec: &SyntheticMlpSpec) -> (Dataset, Dataset) {
    synthetic_mlp_threads(spec, par::threads())
}

/// [`synthetic_mlp`] on `threads` threads (the output does not depend on them).
pub fn synthetic_mlp_threads(spec: &SyntheticMlpSpec, threads: usize) -> (Dataset, Dataset) {
    synthetic_mlp_worker(spec, 1, 0, threads)
}

/// Worker `worker`'s share of [`synthetic_mlp`]'s sets: the samples `worker, worker + workers,
/// ...` of each ([`super::worker_split`]), in that order. Above [`CHUNKED_MAX_VALUES`] values it
/// draws only those samples; below, it draws both sets and keeps its share.
///
/// # Panics
/// If `workers == 0` or `worker >= workers` (caller bug).
pub fn synthetic_mlp_worker(
    spec: &SyntheticMlpSpec,
    workers: usize,
    worker: usize,
    threads: usize,
) -> (Dataset, Dataset) {
    worker_share(spec, workers, worker, threads, CHUNKED_MAX_VALUES)
}

/// Up to this many values (`(train + test) × features`), [`synthetic_mlp`] draws by chunks
/// (the data sets up to this size always were); above it, by samples. 2^26: 64 M values, 256 MiB
/// of `f32`, about 85,000 samples of 784 features.
pub const CHUNKED_MAX_VALUES: u64 = 1 << 26;

/// [`synthetic_mlp_worker`] with its threshold as a parameter (tests lower it).
fn worker_share(
    spec: &SyntheticMlpSpec,
    workers: usize,
    worker: usize,
    threads: usize,
    chunked_max: u64,
) -> (Dataset, Dataset) {
    assert!(
        worker < workers,
        "synthetic_mlp_worker: worker {worker} of {workers}"
    );
    let (law, rng) = Law::of(spec);
    let values = (spec.train as u64 + spec.test as u64) * law.d as u64;
    if values > chunked_max {
        let set = |tag, total| law.by_samples(spec.seed, tag, total, workers, worker, threads);
        return (set(TRAIN, spec.train), set(TEST, spec.test));
    }
    let (train, test) = law.by_chunks(spec, rng, threads);
    (
        train.into_share(workers, worker),
        test.into_share(workers, worker),
    )
}

const TRAIN: u64 = 0x7EA1_C4A5;
const TEST: u64 = 0x7E57_C4A5;

/// Samples per chunk of the generator (each chunk has its own RNG, but the first of each set).
pub const SAMPLES_PER_CHUNK: usize = 32_768;

fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// `tanh(x)` as `1 - 2 / (e^(2x) + 1)`: within about 1e-16 of it, and a third of its cost.
fn squash(x: f64) -> f64 {
    1.0 - 2.0 / ((2.0 * x).exp() + 1.0)
}

/// What a sample is drawn from.
struct Law {
    d: usize,
    k: usize,
    classes: usize,
    cpc: usize,
    centres: Vec<Vec<f64>>,
    a: Vec<f64>,
    c: Vec<f64>,
    cluster_std: f64,
    noise: Normal<f64>,
}

impl Law {
    /// The law `spec` describes, and the stream after drawing it (the chunked sets go on with it).
    fn of(spec: &SyntheticMlpSpec) -> (Law, ChaCha8Rng) {
        let (d, classes) = (spec.dims(), spec.num_classes());
        let k = spec.latent.max(1);
        let cpc = spec.clusters_per_class.max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(spec.seed ^ 0x00D5_11A7));

        // Cluster centres, rejection-sampled for cross-class separation.
        let min_d2 = f64::from(spec.min_center_dist.max(0.0)).powi(2);
        let mut centres: Vec<Vec<f64>> = Vec::with_capacity(classes * cpc);
        for j in 0..classes * cpc {
            let class = j / cpc;
            let mut best: Option<(f64, Vec<f64>)> = None;
            for _ in 0..200 {
                let c: Vec<f64> = (0..k).map(|_| std_normal(&mut rng)).collect();
                let closest = centres
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i / cpc != class)
                    .map(|(_, o)| {
                        o.iter()
                            .zip(&c)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min);
                let better = match &best {
                    None => true,
                    Some((bd, _)) => closest > *bd,
                };
                if better {
                    best = Some((closest, c));
                }
                if closest >= min_d2 {
                    break;
                }
            }
            centres.push(best.map(|b| b.1).unwrap_or_else(|| vec![0.0; k]));
        }

        let a_std = f64::from(spec.map_gain.max(0.0)) / (k as f64).sqrt();
        let a: Vec<f64> = (0..d * k).map(|_| a_std * std_normal(&mut rng)).collect();
        let c: Vec<f64> = (0..d).map(|_| 0.5 * std_normal(&mut rng)).collect();
        let law = Law {
            d,
            k,
            classes,
            cpc,
            centres,
            a,
            c,
            cluster_std: f64::from(spec.cluster_std.max(0.0)),
            noise: Normal::new(0.0f64, f64::from(spec.noise_std.max(0.0))).expect("finite std"),
        };
        (law, rng)
    }

    /// Both whole sets by chunks: the first chunk of each from `rng`, the others from their own.
    fn by_chunks(
        &self,
        spec: &SyntheticMlpSpec,
        rng: ChaCha8Rng,
        threads: usize,
    ) -> (Dataset, Dataset) {
        // At least one chunk per set: the first, even when empty.
        let (train_chunks, test_chunks) = (
            spec.train.div_ceil(SAMPLES_PER_CHUNK).max(1),
            spec.test.div_ceil(SAMPLES_PER_CHUNK).max(1),
        );
        let size = |total: usize, j: usize| (total - j * SAMPLES_PER_CHUNK).min(SAMPLES_PER_CHUNK);
        // Task 0: both sets' first chunks, on the stream; then the training set's other chunks,
        // then the test set's.
        let tasks = train_chunks + test_chunks - 1;
        let parts = par::map(tasks, threads, |t| {
            if t == 0 {
                let mut rng = rng.clone();
                let train = self.samples(&mut rng, size(spec.train, 0));
                let test = self.samples(&mut rng, size(spec.test, 0));
                return vec![train, test];
            }
            let (tag, j, total) = if t < train_chunks {
                (TRAIN, t, spec.train)
            } else {
                (TEST, t - train_chunks + 1, spec.test)
            };
            let mut rng = stream_rng(spec.seed, tag, j as u64);
            vec![self.samples(&mut rng, size(total, j))]
        });
        let mut parts = parts.into_iter().flatten();
        let (train0, test0) = (parts.next(), parts.next());
        let train: Vec<Dataset> = train0
            .into_iter()
            .chain(parts.by_ref().take(train_chunks - 1))
            .collect();
        let test: Vec<Dataset> = test0.into_iter().chain(parts).collect();
        (self.join(train), self.join(test))
    }

    /// Samples `worker, worker + workers, ...` below `total` of the set `tag`, each from its
    /// own stream, drawn in parallel by chunks of [`SAMPLES_PER_CHUNK`] straight into the set.
    fn by_samples(
        &self,
        seed: u64,
        tag: u64,
        total: usize,
        workers: usize,
        worker: usize,
        threads: usize,
    ) -> Dataset {
        let n = total.saturating_sub(worker).div_ceil(workers);
        let d = self.d;
        let ends: Vec<usize> = (1..=n.div_ceil(SAMPLES_PER_CHUNK))
            .map(|c| (c * SAMPLES_PER_CHUNK).min(n) * d)
            .collect();
        let labels: Vec<OnceLock<Vec<u8>>> = ends.iter().map(|_| OnceLock::new()).collect();
        let mut x = vec![0.0f32; n * d];
        par::fill(&mut x, &ends, threads, |c, rows| {
            let mut scratch = self.scratch();
            let first = c * SAMPLES_PER_CHUNK;
            let y = rows
                .chunks_exact_mut(d)
                .enumerate()
                .map(|(i, row)| {
                    let mut rng = stream_rng(seed, tag, (worker + (first + i) * workers) as u64);
                    self.sample(&mut rng, &mut scratch, row)
                })
                .collect();
            labels[c].set(y).expect("each chunk is drawn once");
        });
        let y: Vec<u8> = labels
            .into_iter()
            .flat_map(|l| l.into_inner().expect("every chunk is drawn"))
            .collect();
        Dataset {
            x,
            y,
            n,
            d,
            classes: self.classes,
        }
    }

    /// `n` samples drawn one after the other from `rng`.
    fn samples(&self, rng: &mut ChaCha8Rng, n: usize) -> Dataset {
        let mut x = vec![0.0f32; n * self.d];
        let mut scratch = self.scratch();
        let y = x
            .chunks_exact_mut(self.d)
            .map(|row| self.sample(rng, &mut scratch, row))
            .collect();
        Dataset {
            x,
            y,
            n,
            d: self.d,
            classes: self.classes,
        }
    }

    /// The latent point and the squashed features of the sample being drawn.
    fn scratch(&self) -> (Vec<f64>, Vec<f64>) {
        (vec![0.0; self.k], vec![0.0; self.d])
    }

    /// One sample from `rng`: its features into `row`, its class returned.
    fn sample(
        &self,
        rng: &mut ChaCha8Rng,
        (z, pre): &mut (Vec<f64>, Vec<f64>),
        row: &mut [f32],
    ) -> u8 {
        let class = rng.gen_range(0..self.classes);
        let cl = rng.gen_range(0..self.cpc);
        let centre = &self.centres[class * self.cpc + cl];
        for (zv, &cv) in z.iter_mut().zip(centre) {
            *zv = cv + self.cluster_std * std_normal(rng);
        }
        for ((p, a), &cv) in pre.iter_mut().zip(self.a.chunks_exact(self.k)).zip(&self.c) {
            *p = squash(a.iter().zip(z.iter()).map(|(p, q)| p * q).sum::<f64>() + cv);
        }
        for (x, &p) in row.iter_mut().zip(pre.iter()) {
            *x = (p + self.noise.sample(rng)) as f32;
        }
        class as u8
    }

    /// The chunks as one set.
    fn join(&self, mut parts: Vec<Dataset>) -> Dataset {
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let n = parts.iter().map(|p| p.n).sum();
        let mut x = Vec::with_capacity(n * self.d);
        let mut y = Vec::with_capacity(n);
        for p in parts {
            x.extend_from_slice(&p.x);
            y.extend_from_slice(&p.y);
        }
        Dataset {
            x,
            y,
            n,
            d: self.d,
            classes: self.classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::flags::hash_bits;

    fn spec(train: usize, test: usize) -> SyntheticMlpSpec {
        SyntheticMlpSpec {
            train,
            test,
            features: 5,
            ..SyntheticMlpSpec::default_builtin(9)
        }
    }

    #[test]
    fn the_builtin_set_is_the_data_it_always_was() {
        // Fingerprints of the set drawn before samples could be drawn one by one and `tanh`
        // became `squash`.
        let (train, test) = synthetic_mlp_threads(&SyntheticMlpSpec::default_builtin(1), 2);
        let labels: Vec<f32> = train.y.iter().chain(&test.y).map(|&c| c.into()).collect();
        assert_eq!(
            [hash_bits(&train.x), hash_bits(&test.x), hash_bits(&labels)],
            ["49105e08fb249ab5", "a109e951c14543c4", "c0e857d3d94e63d2"]
        );
    }

    #[test]
    fn squash_is_tanh() {
        for i in -4000..=4000 {
            let x = f64::from(i) / 200.0;
            assert!((squash(x) - x.tanh()).abs() < 1e-15, "{x}");
        }
        for x in [-1e300, -800.0, 800.0, 1e300, f64::MIN, f64::MAX] {
            assert_eq!(squash(x), x.signum(), "{x}");
        }
    }

    #[test]
    fn a_worker_draws_its_share_by_chunks_and_by_samples() {
        // Two training chunks, and fewer test samples than some worker counts.
        let s = spec(SAMPLES_PER_CHUNK + 700, 3);
        for chunked_max in [u64::MAX, 0] {
            let (train, test) = worker_share(&s, 1, 0, 2, chunked_max);
            assert_eq!((train.n, test.n, train.d), (SAMPLES_PER_CHUNK + 700, 3, 5));
            assert_eq!(
                worker_share(&s, 1, 0, 1, chunked_max),
                (train.clone(), test.clone())
            );
            for workers in [3, 4] {
                for w in 0..workers {
                    let share = worker_share(&s, workers, w, 3, chunked_max);
                    let want = (
                        train.clone().into_share(workers, w),
                        test.clone().into_share(workers, w),
                    );
                    assert_eq!(share, want, "{chunked_max} {workers} {w}");
                }
            }
        }
    }

    #[test]
    fn sets_by_samples_are_other_draws_of_the_same_law() {
        let s = SyntheticMlpSpec {
            classes: 4,
            ..spec(8_000, 2_000)
        };
        let (chunked, _) = worker_share(&s, 1, 0, 2, u64::MAX);
        let (sampled, sampled_test) = worker_share(&s, 1, 0, 2, 0);
        assert_ne!(chunked.x, sampled.x);
        // The training and held-out sets are different draws.
        assert_ne!(sampled.x[..2_000 * 5], sampled_test.x[..]);
        let mean =
            |d: &Dataset, j: usize| (0..d.n).map(|i| d.row(i)[j] as f64).sum::<f64>() / d.n as f64;
        for j in 0..5 {
            let (a, b) = (mean(&chunked, j), mean(&sampled, j));
            assert!((a - b).abs() < 0.05, "feature {j}: {a} against {b}");
        }
        for counts in [chunked.class_counts(), sampled.class_counts()] {
            assert!(
                counts.iter().all(|&c| (1_800..=2_200).contains(&c)),
                "{counts:?}"
            );
        }
    }
}
