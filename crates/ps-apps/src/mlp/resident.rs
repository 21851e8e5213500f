//! An MLP engine that keeps a worker's data and model where it computes: the trait a device
//! engine (CUDA) implements, and its CPU oracle [`HostMlpResident`].
//!
//! A resident engine receives the architecture, the worker's training samples and its share of
//! the held-out set once ([`MlpResident::setup`]) and keeps them for the whole job. Per clock the
//! session hands it the pulled parameter rows ([`MlpResident::load`], layer by layer, by row) —
//! the *read* model; [`MlpResident::evaluate`] measures the read model on the held-out set;
//! [`MlpResident::run_visit`] copies the read model into a local one and runs the clock's
//! mini-batches on it (forward, backward, `p -= lr * g` after every batch) in the order of the
//! clock's [`Visit`], which a device engine makes itself from the visit's key
//! ([`MlpResident::run_clock`] takes an order made elsewhere); [`MlpResident::delta`] forms
//! `(local - read) * scale` where the model is and hands back only that. On a GPU the
//! parameters in and the delta out are all that cross PCIe in a clock. An engine may also compress the delta itself
//! ([`MlpResident::delta_encoded`], `crate::app::device_codec`): then only the selection comes
//! back, and the engine keeps the error-feedback residual, adding it to what it reads.
//!
//! [`HostMlpResident`] does the same with a [`MlpCompute`] engine through
//! [`local_sgd_steps`] and [`evaluate`](super::evaluate): exactly the host path's arithmetic,
//! so the session's resident path can be tested where there is no GPU, bit for bit.

use super::compute::{evaluate, BatchStats, MlpCompute};
use super::data::Dataset;
use super::{local_sgd_steps, Arch, MlpHyper};
use crate::app::device_codec::{
    check_tiling, dense_device_bytes, narrower_codes, DeltaBlock, DeviceChain, HalfLoads,
    ResidualKeeper, TopKCopies,
};
pub use crate::app::Traffic;
use crate::error::ComputeError;
use crate::visit::Visit;

/// Samples per evaluation call (the session's host path uses the same chunks).
pub const EVAL_CHUNK: usize = 1024;

/// An MLP engine whose data and model stay resident between clocks (see the module docs).
pub trait MlpResident: Send {
    /// A short name for logs (`cuda-resident`, `cpu-resident`).
    fn name(&self) -> &'static str;

    /// Takes the architecture, the worker's training samples (`run_clock`'s indices point into
    /// them) and its held-out samples; called once. Labels must be below `arch.classes`.
    fn setup(&mut self, arch: &Arch, train: &Dataset, test: &Dataset) -> Result<(), ComputeError>;

    /// Writes rows `[first_row, first_row + n)` of layer `layer` of the read model: `values`
    /// holds `n` whole rows (`n x (fan_in + 1)`).
    fn load(&mut self, layer: usize, first_row: usize, values: &[f32]) -> Result<(), ComputeError>;

    /// Writes the seeded initial model, [`Arch::init_params`]`(seed)`, as the whole read model
    /// (the model clock 0 starts from), overwriting what loads wrote since its last use. A
    /// device engine makes it where the model is (`kernels/mlp_resident.cu`, `mlp_init_glorot`),
    /// so nothing crosses the bus. While the engine keeps a residual (never at clock 0) it is
    /// loaded as [`MlpResident::load`] loads rows, and crosses.
    fn load_initial(&mut self, seed: u64) -> Result<(), ComputeError>;

    /// Copies the read model into the local one and runs one SGD step on the local model per
    /// mini-batch of `batch` samples of `order` (indices into the training samples, in visiting
    /// order; the last batch may be smaller) at rate `lr`. Returns the batches' statistics, each
    /// measured before its step.
    fn run_clock(
        &mut self,
        order: &[usize],
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError>;

    /// [`MlpResident::run_clock`] over the samples of `visit`, in its order. A device engine
    /// makes the order where the samples are ([`Visit::at`] is a pure function of the position),
    /// so nothing but the visit's key and range crosses the bus. A visit of other than the
    /// engine's training samples ([`Visit::check`]) is an error.
    fn run_visit(
        &mut self,
        visit: &Visit,
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError>;

    /// Writes `(local - read) * scale` per layer into `out` (shaped like the model), plus any
    /// residual [`MlpResident::delta_encoded`] kept, which the engine then forgets.
    fn delta(&mut self, scale: f32, out: &mut [Vec<f32>]) -> Result<(), ComputeError>;

    /// Whether this engine compresses its delta itself with `chain` (see
    /// [`crate::app::device_codec`]). Default: no.
    fn encodes(&self, _chain: DeviceChain) -> bool {
        false
    }

    /// `(local - read) * scale` plus what earlier calls kept back, compressed block by block
    /// (rows of one layer each) with `chain` (a top-k sends the block's `k`): one payload per block
    /// into `out`, the bytes the worker library's encoder makes of the same values. What is
    /// not sent stays in the engine: it is added to every row [`MlpResident::load`] writes
    /// from then on (a worker sees what it has not sent yet) until [`MlpResident::delta`]
    /// hands it back. The blocks must cover the model, every row once ([`check_tiling`]);
    /// and while the engine keeps a residual, a read loads every row of the model or none
    /// before the model is used again ([`ReadCoverage`]): engines refuse anything else.
    fn delta_encoded(
        &mut self,
        _scale: f32,
        _chain: DeviceChain,
        _blocks: &[DeltaBlock],
        _out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ComputeError> {
        Err(ComputeError {
            engine: self.name(),
            message: "this engine does not encode its delta".into(),
        })
    }

    /// Forgets what [`MlpResident::delta_encoded`] kept back and returns the sum of its
    /// magnitudes: the job has ended, no clock would send it, and the final reads must show
    /// the shards' model (as the worker library's `drop_unsent` does for its own residual).
    /// Default: nothing kept.
    fn drop_unsent(&mut self) -> Result<f64, ComputeError> {
        Ok(0.0)
    }

    /// Loss and accuracy totals of the read model over the held-out samples.
    fn evaluate(&mut self) -> Result<BatchStats, ComputeError>;

    /// Totals since the engine was made.
    fn traffic(&self) -> Traffic;
}

/// The CPU oracle of a resident engine: the host path's computation ([`local_sgd_steps`] and
/// chunked [`evaluate`](super::evaluate) on a [`MlpCompute`] engine). Nothing crosses a bus, but
/// [`Traffic`] counts the bytes the CUDA engine copies for the same calls: the data at set-up;
/// nothing for the seeded initial model ([`MlpResident::load_initial`]);
/// the whole read model when loads changed it, before its next use (in 16 bits where it can,
/// f16 or bf16); the order of a
/// [`MlpResident::run_clock`] (not of a visit, which the device makes); 16 bytes of totals per
/// clock and per evaluation; the plain delta, or each block's encoded copies ([`TopKCopies`],
/// [`dense_device_bytes`]); the residual at the drop. The compute time is the host's.
pub struct HostMlpResident {
    engine: Box<dyn MlpCompute + Send>,
    arch: Arch,
    train: Dataset,
    test: Dataset,
    read: Vec<Vec<f32>>,
    local: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// What [`MlpResident::delta_encoded`] kept back, from its first call on.
    kept: Option<ResidualKeeper>,
    /// The device's encoder of each block of the current plan (its copies), as the CUDA engine
    /// keeps one per block until the plan changes or a plain delta folds them.
    encoders: Vec<(DeltaBlock, DeviceChain, Option<TopKCopies>)>,
    coverage: ReadCoverage,
    /// Loads changed the read model since it was last used (the device copies it then).
    dirty: bool,
    /// Which 16-bit format (f16, else bf16) holds every load since the read model's last use.
    halves: HalfLoads,
    /// The read model as loaded (flat, layer `l` at `arch.flat_offsets()[l]`), without what
    /// this engine keeps back: the CUDA engine's host mirror, whose codes may cross instead.
    loaded: Vec<f32>,
    traffic: Traffic,
}

impl HostMlpResident {
    /// Runs `engine`.
    pub fn new(engine: Box<dyn MlpCompute + Send>) -> HostMlpResident {
        HostMlpResident {
            engine,
            arch: Arch::new(0, &[], 0),
            train: empty(),
            test: empty(),
            read: Vec::new(),
            local: Vec::new(),
            grads: Vec::new(),
            kept: None,
            encoders: Vec::new(),
            coverage: ReadCoverage::default(),
            dirty: false,
            halves: HalfLoads::default(),
            loaded: Vec::new(),
            traffic: Traffic::default(),
        }
    }

    /// A clock starts: the read model is used (and copied in if loads changed it) and becomes
    /// the local one, whether or not the clock has samples (an empty clock's delta is zero), as
    /// the CUDA engine's `start_clock` does.
    fn start_clock(&mut self) -> Result<(), ComputeError> {
        self.use_read()?;
        for (l, r) in self.local.iter_mut().zip(&self.read) {
            l.copy_from_slice(r);
        }
        Ok(())
    }

    /// The clock's local SGD steps over `order` (validated) from the local model.
    fn run_order(
        &mut self,
        order: &[usize],
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError> {
        let hyper = MlpHyper {
            batch,
            lr,
            lr_decay: 1.0,
        };
        let (engine, arch, train) = (self.engine.as_mut(), &self.arch, &self.train);
        let (local, grads) = (&mut self.local, &mut self.grads);
        let (stats, _) = self
            .traffic
            .timed(|| local_sgd_steps(engine, arch, local, grads, train, order, &hyper, lr))?;
        Ok(stats)
    }

    /// The read model is about to be used (see [`ReadCoverage`]): the device copies it in if
    /// loads changed it, in 16 bits (2 bytes a value) where every row was loaded since its last
    /// use and every value loaded was an f16 value, or every one a bf16 value, and as codes
    /// where the model as loaded has an image in fewer bytes than that ([`narrower_codes`]: a
    /// q8, q4, q2 or sign pull codec's), as the CUDA engine's `sync_read` does.
    fn use_read(&mut self) -> Result<(), ComputeError> {
        let halves = self.halves.take().is_some() && self.coverage.complete();
        let strict = self.kept.is_some();
        self.coverage.settle(strict).map_err(Self::bad)?;
        if std::mem::take(&mut self.dirty) {
            let n = self.loaded.len() as u64;
            self.traffic.h2d_bytes += match narrower_codes(&self.loaded, halves) {
                Some(image) => image.bytes() as u64,
                None if halves => 2 * n,
                None => 4 * n,
            };
        }
        Ok(())
    }

    /// Refuses a delta not shaped like the model (before anything is used, as the CUDA engine
    /// refuses it).
    fn check_shape(&self, out: &[Vec<f32>]) -> Result<(), ComputeError> {
        if out.len() != self.read.len()
            || out.iter().zip(&self.read).any(|(o, r)| o.len() != r.len())
        {
            return Err(Self::bad("the delta is not shaped like the model".into()));
        }
        Ok(())
    }

    /// `(local - read) * scale` per layer into `out`.
    fn plain_delta(&self, scale: f32, out: &mut [Vec<f32>]) -> Result<(), ComputeError> {
        self.check_shape(out)?;
        for ((o, after), before) in out.iter_mut().zip(&self.local).zip(&self.read) {
            for ((d, a), b) in o.iter_mut().zip(after).zip(before) {
                *d = (a - b) * scale;
            }
        }
        Ok(())
    }

    fn bad(message: String) -> ComputeError {
        ComputeError {
            engine: "cpu-resident",
            message,
        }
    }
}

/// Which rows loads wrote since the read model was last used. The CUDA engine adds the residual
/// it keeps to the whole read model when the model is next used, where the oracle adds it to
/// each row as it is loaded: the two agree when a read loads every row or none, which is what
/// the MLP session does. Both engines check it, so a session that reads part of the model is
/// caught where there is no GPU too.
#[derive(Debug, Clone, Default)]
pub struct ReadCoverage {
    loaded: Vec<Vec<bool>>,
    count: usize,
    total: usize,
}

impl ReadCoverage {
    /// Nothing loaded, for the layers of `arch`.
    pub fn new(arch: &Arch) -> ReadCoverage {
        let loaded: Vec<Vec<bool>> = arch
            .layers()
            .iter()
            .map(|s| vec![false; s.rows()])
            .collect();
        let total = loaded.iter().map(Vec::len).sum();
        ReadCoverage {
            loaded,
            count: 0,
            total,
        }
    }

    /// Rows `[first_row, first_row + rows)` of `layer` were loaded (checked by [`check_load`]).
    pub fn mark(&mut self, layer: usize, first_row: usize, rows: usize) {
        if let Some(l) = self.loaded.get_mut(layer) {
            for r in l.iter_mut().skip(first_row).take(rows) {
                self.count += usize::from(!*r);
                *r = true;
            }
        }
    }

    /// Whether every row of the model was loaded since the last [`ReadCoverage::settle`].
    pub fn complete(&self) -> bool {
        self.total > 0 && self.count == self.total
    }

    /// The read model is about to be used: with `strict` (the engine keeps a residual), an
    /// error unless no row or every row was loaded since the last call. Forgets the loads.
    pub fn settle(&mut self, strict: bool) -> Result<(), String> {
        let (count, total) = (self.count, self.total);
        if count > 0 {
            self.loaded.iter_mut().for_each(|l| l.fill(false));
            self.count = 0;
        }
        if strict && count > 0 && count < total {
            return Err(format!(
                "a read loaded {count} of the model's {total} rows while the engine keeps a \
                 residual: it must load every row"
            ));
        }
        Ok(())
    }
}

fn empty() -> Dataset {
    Dataset {
        x: Vec::new(),
        y: Vec::new(),
        n: 0,
        d: 0,
        classes: 0,
    }
}

/// Checks a resident engine's set-up arguments (shared by the engines).
pub fn check_setup(arch: &Arch, train: &Dataset, test: &Dataset) -> Result<(), String> {
    arch.validate()?;
    for (what, s) in [("training", train), ("held-out", test)] {
        if s.d != arch.input || s.x.len() != s.n * s.d || s.y.len() != s.n {
            return Err(format!(
                "{what} set of {} samples x {} features ({} values, {} labels) for input {}",
                s.n,
                s.d,
                s.x.len(),
                s.y.len(),
                arch.input
            ));
        }
        if let Some(y) = s.y.iter().find(|&&y| usize::from(y) >= arch.classes) {
            return Err(format!(
                "{what} label {y} is not below {} classes",
                arch.classes
            ));
        }
    }
    Ok(())
}

/// Checks a load against the architecture: the rows fit layer `layer` (shared by the engines).
pub fn check_load(
    arch: &Arch,
    layer: usize,
    first_row: usize,
    values: &[f32],
) -> Result<(), String> {
    if layer >= arch.num_layers() {
        return Err(format!("no layer {layer} of {}", arch.num_layers()));
    }
    let s = arch.layer(layer);
    let w = s.width();
    let n = values.len() / w;
    if !values.len().is_multiple_of(w) || first_row + n > s.rows() {
        return Err(format!(
            "{} values (rows of {w}) at row {first_row} of layer {layer} ({} rows)",
            values.len(),
            s.rows()
        ));
    }
    Ok(())
}

impl MlpResident for HostMlpResident {
    fn name(&self) -> &'static str {
        "cpu-resident"
    }

    fn setup(&mut self, arch: &Arch, train: &Dataset, test: &Dataset) -> Result<(), ComputeError> {
        check_setup(arch, train, test).map_err(Self::bad)?;
        self.arch = arch.clone();
        self.train = train.clone();
        self.test = test.clone();
        self.read = arch.zeros();
        self.local = arch.zeros();
        self.grads = arch.zeros();
        self.coverage = ReadCoverage::new(arch);
        self.kept = None;
        self.encoders.clear();
        // The device's read model is zeros to copy in at first use, loads or not.
        self.dirty = true;
        self.halves = HalfLoads::default();
        self.loaded = vec![0.0; arch.num_params()];
        self.traffic.h2d_bytes +=
            4 * (train.x.len() + test.x.len()) as u64 + (train.y.len() + test.y.len()) as u64;
        Ok(())
    }

    fn load(&mut self, layer: usize, first_row: usize, values: &[f32]) -> Result<(), ComputeError> {
        check_load(&self.arch, layer, first_row, values).map_err(Self::bad)?;
        let at = first_row * self.arch.layer(layer).width();
        let dst = &mut self.read[layer][at..at + values.len()];
        dst.copy_from_slice(values);
        let rows = values.len() / self.arch.layer(layer).width();
        self.coverage.mark(layer, first_row, rows);
        self.dirty = true;
        self.halves.note(values);
        let flat = self.arch.flat_offsets()[layer] + at;
        self.loaded[flat..flat + values.len()].copy_from_slice(values);
        if let Some(k) = &mut self.kept {
            k.add_to(layer as u32, first_row, dst)?;
        }
        Ok(())
    }

    fn load_initial(&mut self, seed: u64) -> Result<(), ComputeError> {
        if self.read.is_empty() {
            return Err(Self::bad("setup was not called".into()));
        }
        let model = self.arch.init_params(seed);
        if self.kept.is_some() {
            for (l, p) in model.iter().enumerate() {
                self.load(l, 0, p)?;
            }
            return Ok(());
        }
        // Made on the device: nothing crosses, and what loads wrote is overwritten.
        self.coverage.settle(false).map_err(Self::bad)?;
        self.halves = HalfLoads::default();
        self.dirty = false;
        let mut at = 0;
        for (r, p) in self.read.iter_mut().zip(&model) {
            r.copy_from_slice(p);
            self.loaded[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Ok(())
    }

    fn run_clock(
        &mut self,
        order: &[usize],
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError> {
        if let Some(i) = order.iter().find(|&&i| i >= self.train.n) {
            return Err(Self::bad(format!(
                "sample {i} of {} training samples",
                self.train.n
            )));
        }
        self.start_clock()?;
        if order.is_empty() {
            return Ok(BatchStats::default());
        }
        // The order in, the batches' totals out.
        self.traffic.h2d_bytes += 4 * order.len() as u64;
        self.traffic.d2h_bytes += 16;
        self.run_order(order, batch, lr)
    }

    fn run_visit(
        &mut self,
        visit: &Visit,
        batch: usize,
        lr: f32,
    ) -> Result<BatchStats, ComputeError> {
        visit.check(self.train.n).map_err(Self::bad)?;
        self.start_clock()?;
        if visit.count == 0 {
            return Ok(BatchStats::default());
        }
        // The device makes the order: only the totals come out.
        self.traffic.d2h_bytes += 16;
        self.run_order(&visit.order(), batch, lr)
    }

    fn delta(&mut self, scale: f32, out: &mut [Vec<f32>]) -> Result<(), ComputeError> {
        self.check_shape(out)?;
        self.use_read()?;
        self.plain_delta(scale, out)?;
        self.traffic.d2h_bytes += 4 * self.arch.num_params() as u64;
        self.encoders.clear();
        if let Some(mut k) = self.kept.take() {
            for (l, o) in out.iter_mut().enumerate() {
                k.take_into(l as u32, o)?;
            }
        }
        Ok(())
    }

    fn encodes(&self, _chain: DeviceChain) -> bool {
        true
    }

    fn delta_encoded(
        &mut self,
        scale: f32,
        chain: DeviceChain,
        blocks: &[DeltaBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ComputeError> {
        let rows: Vec<usize> = self.arch.layers().iter().map(|s| s.rows()).collect();
        check_tiling(blocks, &rows).map_err(Self::bad)?;
        self.use_read()?;
        let mut delta = self.arch.zeros();
        self.plain_delta(scale, &mut delta)?;
        let mut slices: Vec<&[f32]> = Vec::with_capacity(blocks.len());
        for b in blocks {
            let w = self.arch.layers().get(b.table as usize).map(|s| s.width());
            let layer = delta.get(b.table as usize);
            let rows = w.and_then(|w| {
                layer.and_then(|l| l.get(b.first_row * w..(b.first_row + b.rows) * w))
            });
            slices.push(rows.ok_or_else(|| {
                Self::bad(format!(
                    "block of rows {}..{} of layer {} is not in the model",
                    b.first_row,
                    b.first_row + b.rows,
                    b.table
                ))
            })?);
        }
        let arch = &self.arch;
        let kept = self.kept.get_or_insert_with(|| {
            let shapes: Vec<(usize, usize)> = arch
                .layers()
                .iter()
                .map(|s| (s.rows(), s.width()))
                .collect();
            ResidualKeeper::new(&shapes)
        });
        // The device's copies: a new plan makes new encoders (which copy nothing), then each
        // block's push.
        let same = |(b, e): (&DeltaBlock, &(DeltaBlock, DeviceChain, Option<TopKCopies>))| {
            (b.table, b.first_row, b.rows) == (e.0.table, e.0.first_row, e.0.rows) && e.1 == chain
        };
        if self.encoders.len() != blocks.len() || !blocks.iter().zip(&self.encoders).all(same) {
            self.encoders.clear();
            for (b, d) in blocks.iter().zip(&slices) {
                let copies = chain.selects().then(|| TopKCopies::new(d.len()));
                self.encoders.push((*b, chain, copies));
            }
        }
        for ((b, d), e) in blocks.iter().zip(&slices).zip(&mut self.encoders) {
            let (h2d, d2h) = match (&mut e.2, chain) {
                (Some(c), DeviceChain::TopK(format) | DeviceChain::Energy(_, format)) => {
                    let values = kept.accumulated(b.table, b.first_row, d)?;
                    c.push(&values, chain.keep(b.k), format)
                }
                (_, chain) => (0, dense_device_bytes(chain.format(), d.len()).unwrap_or(0)),
            };
            self.traffic.h2d_bytes += h2d;
            self.traffic.d2h_bytes += d2h;
        }
        out.extend(kept.encode_blocks(blocks, chain, &slices)?);
        Ok(())
    }

    fn drop_unsent(&mut self) -> Result<f64, ComputeError> {
        if self.dirty {
            // As the device syncs a read loaded since the model's last use.
            self.use_read()?;
        }
        // Each encoder's residual comes back to be summed.
        for (b, _, _) in std::mem::take(&mut self.encoders) {
            let w = self.arch.layer(b.table as usize).width();
            self.traffic.d2h_bytes += 4 * (b.rows * w) as u64;
        }
        Ok(self.kept.take().map_or(0.0, |k| k.l1()))
    }

    fn evaluate(&mut self) -> Result<BatchStats, ComputeError> {
        if self.test.n == 0 {
            return Ok(BatchStats::default());
        }
        self.use_read()?;
        self.traffic.d2h_bytes += 16;
        let (engine, arch, read, test) = (self.engine.as_mut(), &self.arch, &self.read, &self.test);
        self.traffic
            .timed(|| evaluate(engine, arch, read, test, EVAL_CHUNK))
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}
