//! One MLP worker's session, on one of two paths.
//!
//! - **Host** (the CPU engines, or a device engine called per mini-batch): the read model and
//!   the local copy live in host memory; each clock runs [`local_sgd_steps`] over the next slice
//!   of the epoch's shuffled samples with a [`MlpCompute`] engine.
//! - **Resident** (an engine from [`crate::app::Engines::mlp_resident`], e.g. CUDA): the
//!   worker's training samples and its share of the held-out set stay on the device for the whole
//!   job; per clock the pulled model goes in, the clock's visit goes in (a permutation key and a
//!   range: the engine can make the order itself), every mini-batch's forward, backward and SGD
//!   step run there, and only the delta (and the loss totals) come back. The held-out figures
//!   are computed on the device too.
//!
//! Both paths visit the same samples in the same order ([`Visit`]: each epoch a keyed
//! permutation of the worker's samples, its clocks consecutive slices of it) with the same
//! learning rate and push the same `(local - read) / workers`.

use super::app::{load_share, MlpApp, MlpClock, MlpFacts, MlpFinal, MlpSettings};
use super::resident::{MlpResident, Traffic, EVAL_CHUNK};
use super::{evaluate, local_sgd_steps, Arch, BatchStats, Dataset, MlpCompute};
use crate::app::device_codec::{block_k, device_chain, DeltaBlock, PushEncoder};
use crate::app::flags;
use crate::app::{DeltaSink, Inbox, Outcome, Session, TableRows, WorkerContext};
use crate::error::AppError;
use crate::seed::ClockKey;
use crate::visit::Visit;

/// The host path: the engine, this worker's training samples, and the local model and gradient
/// buffers.
struct HostPath {
    engine: Box<dyn MlpCompute + Send>,
    train: Dataset,
    local: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

/// The resident path: the engine (holding this worker's samples, in `samples` order) and the
/// host buffer the delta comes back into.
struct ResidentPath {
    dev: Box<dyn MlpResident>,
    /// How many training samples the engine holds.
    samples: usize,
    delta: Vec<Vec<f32>>,
    /// The engine's traffic when the current clock began.
    before: Traffic,
}

enum Path {
    Host(HostPath),
    Resident(ResidentPath),
}

/// One MLP worker: its samples, the model it read, and its local copy.
pub struct MlpSession {
    worker: u32,
    workers: u32,
    settings: MlpSettings,
    path: Path,
    arch: Arch,
    /// This worker's share of the held-out set (host path).
    test: Dataset,
    /// The model as read, per layer.
    read: Vec<Vec<f32>>,
    inbox: Inbox,
    trained: u64,
    /// What the engine held back of its own encoded pushes when the job ended.
    unsent: f64,
    /// Who encodes this worker's lossy pushes (see [`push_encoded`]).
    encoder: PushEncoder,
}

impl MlpSession {
    pub fn new(s: MlpSettings, ctx: &WorkerContext<'_>) -> Result<MlpSession, AppError> {
        ctx.check()?;
        // This worker's samples, in order (`worker_split`), and its share of the held-out set.
        let (train, test) = load_share(&s, ctx.workers as usize, ctx.worker as usize)?;
        let arch = Arch::new(train.d, &s.hidden, train.classes);
        arch.validate()
            .map_err(|e| AppError::Settings(format!("MLP architecture: {e}")))?;
        let path = match ctx.engines.mlp_resident()? {
            Some(mut dev) => {
                dev.setup(&arch, &train, &test)?;
                Path::Resident(ResidentPath {
                    before: dev.traffic(),
                    dev,
                    samples: train.n,
                    delta: arch.zeros(),
                })
            }
            None => Path::Host(HostPath {
                engine: ctx.engines.mlp(s.threads)?,
                train,
                local: arch.zeros(),
                grads: arch.zeros(),
            }),
        };
        let (engine, count) = match &path {
            Path::Host(h) => (h.engine.name(), h.train.n),
            Path::Resident(r) => (r.dev.name(), r.samples),
        };
        tracing::info!(
            worker = ctx.worker,
            samples = count,
            engine,
            "MLP worker ready"
        );
        Ok(MlpSession {
            worker: ctx.worker,
            workers: ctx.workers,
            read: arch.zeros(),
            path,
            arch,
            test,
            settings: s,
            inbox: Inbox::default(),
            trained: 0,
            unsent: 0.0,
            encoder: PushEncoder::from_env().map_err(AppError::Settings)?,
        })
    }

    fn all_layers(&self) -> Vec<TableRows> {
        self.arch
            .layers()
            .iter()
            .enumerate()
            .map(|(l, shape)| TableRows {
                table: l as u32,
                rows: (0..shape.rows() as u64).collect(),
            })
            .collect()
    }

    /// Held-out figures of the read model (each worker its share), where the model is.
    fn held_out(&mut self) -> Result<BatchStats, AppError> {
        Ok(match &mut self.path {
            Path::Host(h) => evaluate(
                h.engine.as_mut(),
                &self.arch,
                &self.read,
                &self.test,
                EVAL_CHUNK,
            )?,
            Path::Resident(r) => r.dev.evaluate()?,
        })
    }

    /// The traffic of a resident engine since the last call (zero on the host path).
    fn traffic_since(&mut self) -> Traffic {
        match &mut self.path {
            Path::Host(_) => Traffic::default(),
            Path::Resident(r) => {
                let now = r.dev.traffic();
                let t = now.since(&r.before);
                r.before = now;
                t
            }
        }
    }
}

/// Pushes the clock's delta compressed by the engine itself, when the sink plans every layer
/// with a chain the engine runs (`device_codec`) and `encoder` leaves it to the engine (not
/// once the library has encoded a lossy delta: an `energy:` chain, say, whose last clock plans
/// its format alone); only the payloads leave the engine. Returns the payloads'
/// bytes, or `None`, having done nothing, otherwise (the session then pushes the plain delta).
fn push_encoded(
    dev: &mut dyn MlpResident,
    arch: &Arch,
    scale: f32,
    out: &mut dyn DeltaSink,
    encoder: &mut PushEncoder,
) -> Result<Option<usize>, AppError> {
    let mut plans = Vec::with_capacity(arch.num_layers());
    for l in 0..arch.num_layers() {
        let rows: Vec<u64> = (0..arch.layer(l).rows() as u64).collect();
        let Some(plan) = out.push_plan(l as u32, &rows)? else {
            return Ok(None);
        };
        plans.push((rows, plan));
    }
    let chains: Vec<_> = plans.iter().map(|(_, p)| device_chain(&p.chain)).collect();
    let runs = chains
        .iter()
        .all(|c| c.is_some_and(|c| dev.encodes(c)) && *c == chains[0]);
    let lossy = plans.iter().any(|(_, p)| !p.chain.is_lossless());
    if !encoder.engine_encodes(runs, lossy) {
        return Ok(None);
    }
    let (mut blocks, mut wire_ids, mut keys, chain) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        chains.first().copied().flatten(),
    );
    for (l, (rows, plan)) in plans.into_iter().enumerate() {
        let w = arch.layer(l).width();
        for b in &plan.blocks {
            // Every row is pushed, in order: a key's position is its row.
            blocks.push(DeltaBlock {
                table: l as u32,
                first_row: b.rows.start,
                rows: b.rows.len(),
                k: block_k(&plan.chain, b.rows.len() * w),
            });
            wire_ids.push(plan.chain.wire_id());
        }
        keys.push(rows);
    }
    let Some(chain) = chain else {
        return Ok(None);
    };
    let mut payloads = Vec::with_capacity(blocks.len());
    dev.delta_encoded(scale, chain, &blocks, &mut payloads)?;
    let mut bytes = 0;
    for ((b, payload), id) in blocks.iter().zip(payloads).zip(wire_ids) {
        let k = &keys[b.table as usize][b.first_row..b.first_row + b.rows];
        bytes += payload.len();
        out.encoded(b.table, k, id, payload)?;
    }
    Ok(Some(bytes))
}

impl Session<MlpApp> for MlpSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if !self.inbox.planned(clock) {
            // Clock 0 starts from the seeded initial model.
            let reads = if clock == 0 {
                Vec::new()
            } else {
                self.all_layers()
            };
            self.inbox.expect_clock(clock, reads);
        }
        Ok(self.inbox.reads().to_vec())
    }

    fn load(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
    ) -> Result<(), AppError> {
        let width = self
            .arch
            .layers()
            .get(table as usize)
            .map(|s| s.width())
            .ok_or_else(|| AppError::Rows {
                table,
                reason: "no such layer".into(),
            })?;
        self.inbox.accept(table, first, keys, values, width)?;
        self.read[table as usize][first * width..(first + keys.len()) * width]
            .copy_from_slice(values);
        // Every layer is read whole and in order: the position in the read is the row.
        if let Path::Resident(r) = &mut self.path {
            r.dev.load(table as usize, first, values)?;
        }
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<MlpClock, AppError> {
        self.inbox.ready(clock)?;
        let seed = self.settings.seed;
        if clock == 0 {
            self.read = self.arch.init_params(seed);
            if let Path::Resident(r) = &mut self.path {
                // Made where the model is: it does not cross.
                r.dev.load_initial(seed)?;
            }
        }
        // Held-out figures of the model this clock starts from (each worker its share).
        let held_out = self.held_out()?;
        let per_epoch = u64::from(self.settings.clocks_per_epoch.max(1));
        let key = ClockKey {
            seed,
            worker: self.worker,
            clock: (clock / per_epoch).min(u64::from(u32::MAX)) as u32,
        };
        let hyper = self.settings.hyper;
        let lr = hyper.lr_at(key.clock);
        let scale = 1.0 / self.workers as f32;
        let (slice_of, of) = ((clock % per_epoch) as usize, per_epoch as usize);
        let mut engine_encoded = 0;
        let stats = match &mut self.path {
            Path::Host(h) => {
                let visit = Visit::for_clock(key, h.train.n, slice_of, of);
                let order = visit.order();
                for (l, r) in h.local.iter_mut().zip(&self.read) {
                    l.copy_from_slice(r);
                }
                let (stats, _) = local_sgd_steps(
                    h.engine.as_mut(),
                    &self.arch,
                    &mut h.local,
                    &mut h.grads,
                    &h.train,
                    &order,
                    &hyper,
                    lr,
                )?;
                for l in 0..self.arch.num_layers() {
                    let rows: Vec<u64> = (0..self.arch.layer(l).rows() as u64).collect();
                    let d = out.rows(l as u32, &rows)?;
                    let (after, before) = (&h.local[l], &self.read[l]);
                    for ((d, a), b) in d.iter_mut().zip(after).zip(before) {
                        *d = (a - b) * scale;
                    }
                }
                stats
            }
            Path::Resident(r) => {
                // The engine's samples are this worker's, in order: the same visit by position.
                let visit = Visit::for_clock(key, r.samples, slice_of, of);
                let stats = r.dev.run_visit(&visit, hyper.batch, lr)?;
                match push_encoded(r.dev.as_mut(), &self.arch, scale, out, &mut self.encoder)? {
                    Some(bytes) => engine_encoded = bytes,
                    None => {
                        r.dev.delta(scale, &mut r.delta)?;
                        for (l, delta) in r.delta.iter().enumerate() {
                            let rows: Vec<u64> = (0..self.arch.layer(l).rows() as u64).collect();
                            out.rows(l as u32, &rows)?.copy_from_slice(delta);
                        }
                    }
                }
                stats
            }
        };
        self.trained += stats.count;
        let traffic = self.traffic_since();
        Ok(MlpClock {
            train_loss: stats.loss_sum,
            train_n: stats.count as f64,
            test_correct: held_out.correct as f64,
            test_n: held_out.count as f64,
            device: traffic.into(),
            engine_encoded: engine_encoded as f64,
        })
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        // The final reads show the shards' model, as the worker library's do.
        if let Path::Resident(r) = &mut self.path {
            self.unsent += r.dev.drop_unsent()?;
        }
        self.inbox.expect(self.all_layers());
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<MlpFinal, MlpFacts>, AppError> {
        self.inbox.complete()?;
        let held_out = self.held_out()?;
        let traffic = match &self.path {
            Path::Host(_) => Traffic::default(),
            Path::Resident(r) => r.dev.traffic(),
        };
        Ok(Outcome {
            sums: MlpFinal {
                test_correct: held_out.correct as f64,
                test_loss: held_out.loss_sum,
                test_n: held_out.count as f64,
                samples: self.trained as f64,
                device: traffic.into(),
                unsent_l1: self.unsent,
            },
            facts: MlpFacts {
                model_hash: (self.worker == 0).then(|| flags::hash_bits(&self.read.concat())),
            },
        })
    }
}
