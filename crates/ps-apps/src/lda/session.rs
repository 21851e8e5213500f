//! One LDA worker's session: its documents' assignments and counts, and its copy of its words'
//! rows, on one of two paths.
//!
//! - **Host** (the CPU engines): the state and the pulled rows live in host memory; each clock
//!   measures the log-likelihood with [`loglik_on`] (on `--threads` threads) and sweeps with a
//!   [`LdaCompute`] engine.
//! - **Resident** (an engine from [`crate::app::Engines::lda_resident`], e.g. CUDA): tokens,
//!   assignments and document-topic counts stay on the device for the whole job; the pulled
//!   word-topic rows and totals go to the device's local copy as they arrive, the
//!   log-likelihood and the sweep run there, and only the sparse delta comes back. The final
//!   read stays on the host (held-out completion, topic recovery and the table hash need the
//!   rows there); its rows and totals then go to the device as a clock's do, and the final
//!   log-likelihood is measured there too, so the assignments never come back.

use super::app::{
    load_corpus, measures_at, LdaClock, LdaFacts, LdaFinal, LdaSettings, Loaded, TOTALS, WORD_TOPIC,
};
use super::delta_out::{sweep_resident, write_entries, write_wire, Swept};
use super::heldout::document_completion;
use super::moves_log::{moves_between, replay, Logged, MovesLog};
use super::resident::LdaResident;
use super::{
    count_check, loglik_on, top_words, topic_recovery, worker_doc_ids, CountCheck, LdaApp,
    LdaCompute, LdaDelta, LdaHyper, LdaWorkerState, SweepKey,
};
use crate::app::flags;
use crate::app::{DeltaSink, Inbox, Outcome, Rejoin, Session, TableRows, Traffic, WorkerContext};
use crate::error::AppError;
use ps_proto::SparseRows;
use std::time::Instant;

/// Where the sweeps run.
enum Path {
    /// A host engine on the session's state and `local`/`totals` copies.
    Host(Box<dyn LdaCompute + Send>),
    /// A resident engine, and its traffic when the current clock began.
    Resident {
        dev: Box<dyn LdaResident>,
        before: Traffic,
    },
}

/// One LDA worker: its documents' assignments and counts, and its copy of its words' rows.
pub struct LdaSession {
    worker: u32,
    hyper: LdaHyper,
    seed: u64,
    /// Threads of the host's log-likelihood (`--threads`; on the host path the CPU engine
    /// sweeps on as many too).
    threads: usize,
    /// `--eval-every`: the clocks that measure the log-likelihood ([`measures_at`]).
    eval_every: u32,
    path: Path,
    /// The state (resident path: as set up, and the device holds the current one; with a moves
    /// log, the assignments are the device's as of the last sweep, and after a replay the
    /// whole state is ahead of the device's until [`LdaSession::catch_up_device`]).
    state: LdaWorkerState,
    /// Clock 0's push: the counts of the random initial assignments.
    initial: Option<LdaDelta>,
    /// The worker's words as table rows (sorted).
    words: Vec<u64>,
    /// Their rows (`words.len() x K`) and the totals row, as read (resident path: the final
    /// read's only).
    local: Vec<f32>,
    totals: Vec<f32>,
    /// The final read's rows (worker 0: the whole word-topic table; the others: their words
    /// and their held-out documents' words), and their values.
    final_rows: Vec<u64>,
    all: Vec<f32>,
    /// This worker's held-out documents: (index in the file, tokens).
    held: Vec<(usize, Vec<u32>)>,
    corpus_vocab: Option<Vec<String>>,
    truth: Option<(Vec<f32>, usize)>,
    inbox: Inbox,
    swept: u64,
    sweep_s: f64,
    /// Whether pulls carry the counts exactly (the final check runs only then).
    exact_pulls: bool,
    /// Whether the moves log may drop what the shards hold for good ([`LdaSettings`]'s
    /// `exact_pushes`).
    compact_log: bool,
    /// Under `--on-worker-failure wait`: every clock's moves, kept so that a later life of
    /// this worker replays them instead of sweeping again ([`super::moves_log`]).
    moves: Option<MovesLog>,
    /// Whether a replay moved the host's state past the resident engine's.
    device_behind: bool,
    /// With a moves log, the other copy of the assignments it diffs (kept between clocks):
    /// on the host path the assignments before the sweep, on the resident path those the
    /// engine hands back after it.
    z_now: Vec<u32>,
    /// The last clock run: `state.z` is the assignments after it (with a moves log).
    clock_done: u64,
}

impl LdaSession {
    /// The log-likelihood of the worker's state under the rows it holds (`local`, `totals`),
    /// measured on the host's `--threads`: the host path's per-clock and final figure.
    fn host_loglik(&self) -> (f64, u64) {
        loglik_on(
            &self.state,
            &self.local,
            &self.totals,
            &self.hyper,
            self.threads,
        )
    }

    pub fn new(s: LdaSettings, ctx: &WorkerContext<'_>) -> Result<LdaSession, AppError> {
        ctx.check()?;
        let Loaded {
            corpus,
            truth,
            test,
        } = load_corpus(&s, ctx.workers, ctx.worker)?;
        let held = match &test {
            Some(t) => worker_doc_ids(t.num_docs(), ctx.workers, ctx.worker)
                .into_iter()
                .map(|d| (d, t.docs[d].clone()))
                .collect(),
            None => Vec::new(),
        };
        // The corpus holds this worker's documents only.
        let (mut state, initial) = LdaWorkerState::init(
            &corpus.docs,
            corpus.vocab_size,
            &s.hyper,
            s.seed,
            ctx.worker,
        )?;
        let moves = match ctx.rejoin {
            Rejoin::Never => None,
            Rejoin::Replay { state_dir, run } => Some(MovesLog::for_worker(
                (state_dir, run),
                (s.seed, &s.hyper),
                ctx.worker,
                &mut state,
            )?),
        };
        let path = match ctx.engines.lda_resident()? {
            Some(mut dev) => {
                dev.setup(&state, &s.hyper)?;
                Path::Resident {
                    before: dev.traffic(),
                    dev,
                }
            }
            None => Path::Host(ctx.engines.lda(s.threads)?),
        };
        let words: Vec<u64> = state.words.iter().map(|&w| u64::from(w)).collect();
        let k = s.hyper.topics as usize;
        tracing::info!(
            worker = ctx.worker,
            docs = state.num_docs(),
            tokens = state.num_tokens(),
            words = words.len(),
            engine = match &path {
                Path::Host(e) => e.name(),
                Path::Resident { dev, .. } => dev.name(),
            },
            "LDA worker ready"
        );
        let lead = ctx.worker == 0;
        Ok(LdaSession {
            worker: ctx.worker,
            hyper: s.hyper,
            seed: s.seed,
            threads: s.threads.max(1) as usize,
            eval_every: s.eval_every,
            path,
            local: vec![0.0; words.len() * k],
            totals: vec![0.0; k],
            final_rows: Vec::new(),
            all: Vec::new(),
            held,
            words,
            state,
            initial: Some(initial),
            corpus_vocab: if lead { corpus.vocab } else { None },
            truth: if lead { truth } else { None },
            inbox: Inbox::default(),
            swept: 0,
            sweep_s: 0.0,
            exact_pulls: s.exact_pulls,
            compact_log: s.exact_pushes,
            moves,
            device_behind: false,
            z_now: Vec::new(),
            clock_done: 0,
        })
    }

    fn k(&self) -> usize {
        self.hyper.topics as usize
    }

    /// Hands the host's state to the resident engine where a replay moved it ahead.
    fn catch_up_device(&mut self) -> Result<(), AppError> {
        if let (Path::Resident { dev, .. }, true) = (&mut self.path, self.device_behind) {
            dev.restore_state(&self.state)?;
            self.device_behind = false;
        }
        Ok(())
    }

    /// After a resident engine's sweep of `clock`: its assignments come back and the tokens
    /// that moved go to the log (before the clock's push leaves).
    fn log_device_moves(&mut self, clock: u64) -> Result<(), AppError> {
        let (Path::Resident { dev, .. }, Some(log)) = (&mut self.path, self.moves.as_mut()) else {
            return Ok(());
        };
        self.z_now.resize(self.state.z.len(), 0);
        dev.download_assignments(&mut self.z_now)?;
        log.append(clock, &moves_between(&self.state.z, &self.z_now))?;
        std::mem::swap(&mut self.state.z, &mut self.z_now);
        Ok(())
    }

    /// The resident engine, when a clock's rows are being read (the final read's rows stay on
    /// the host).
    fn clock_device(&mut self) -> Option<&mut Box<dyn LdaResident>> {
        let final_read = self.inbox.clock().is_none();
        match &mut self.path {
            Path::Resident { dev, .. } if !final_read => Some(dev),
            _ => None,
        }
    }

    /// Where rows of `table` read on the host go: the totals, the final read's rows, or the
    /// worker's words' rows.
    fn host_rows(&mut self, table: u32) -> &mut [f32] {
        match table {
            TOTALS => &mut self.totals,
            _ if self.inbox.clock().is_none() => &mut self.all,
            _ => &mut self.local,
        }
    }

    /// The resident engine's traffic since the last call (zero on the host path).
    fn traffic_since(&mut self) -> Traffic {
        match &mut self.path {
            Path::Host(_) => Traffic::default(),
            Path::Resident { dev, before } => {
                let now = dev.traffic();
                let t = now.since(before);
                *before = now;
                t
            }
        }
    }
}

/// The most bytes of dense rows the final log-likelihood's rows go to a resident engine in at once.
const FINAL_RUN_BYTES: usize = 64 << 20;

impl Session<LdaApp> for LdaSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if !self.inbox.planned(clock) {
            let reads = if clock == 0 {
                Vec::new()
            } else {
                vec![
                    TableRows {
                        table: WORD_TOPIC,
                        rows: self.words.clone(),
                    },
                    TableRows {
                        table: TOTALS,
                        rows: vec![0],
                    },
                ]
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
        let k = self.k();
        self.inbox.accept(table, first, keys, values, k)?;
        if let Some(dev) = self.clock_device() {
            // A clock's rows go straight to the device's copy (the local row order is the
            // read's order).
            match table {
                TOTALS => dev.load_totals(values)?,
                _ => dev.load_rows(first, values)?,
            }
            return Ok(());
        }
        self.host_rows(table)[first * k..(first + keys.len()) * k].copy_from_slice(values);
        Ok(())
    }

    /// The word-topic rows come by their entries: at K in the hundreds or more most of each
    /// row is zero, and the run then never exists dense on the resident path.
    fn takes_sparse(&self, table: u32) -> bool {
        table == WORD_TOPIC
    }

    fn load_sparse(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        rows: SparseRows<'_>,
    ) -> Result<(), AppError> {
        let k = self.k();
        self.inbox.accept_sparse(table, first, keys, rows, k)?;
        if let Some(dev) = self.clock_device() {
            match table {
                TOTALS => dev.load_totals(&rows.to_dense())?,
                _ => dev.load_sparse_rows(first, rows)?,
            }
            return Ok(());
        }
        rows.write_dense(&mut self.host_rows(table)[first * k..(first + keys.len()) * k]);
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<LdaClock, AppError> {
        self.inbox.ready(clock)?;
        if clock == 0 {
            let initial = self.initial.take().unwrap_or_default();
            write_entries(&initial, self.k() as u64, out)?;
            return Ok(LdaClock::default());
        }
        let key = SweepKey {
            seed: self.seed,
            worker: self.worker,
            clock: clock.min(u64::from(u32::MAX)) as u32,
        };
        let logged = match self.moves.as_mut() {
            Some(log) => log.take(clock)?,
            None => None,
        };
        if logged.is_none() {
            self.catch_up_device()?;
        }
        // The model every worker sweeps against this clock, before the sweep (on the clocks
        // `--eval-every` names), where the state is this clock's: not on a clock a snapshot
        // covers, nor on a resident engine's replayed one (its rows are on the device).
        let unmeasurable = match &logged {
            Some(Logged::Durable) => true,
            Some(Logged::Moves(_)) => matches!(self.path, Path::Resident { .. }),
            None => false,
        };
        let measure = measures_at(self.eval_every, clock) && !unmeasurable;
        let host_ll = match &self.path {
            Path::Host(_) if measure => self.host_loglik(),
            _ => (0.0, 0),
        };
        let swept = !matches!(logged, Some(Logged::Durable));
        let ((ll, n), started, delta) = match (&mut self.path, logged) {
            // A clock the shards hold for good, before the snapshot this life started from:
            // the state is already past it, and the shards drop whatever it pushes.
            (_, Some(Logged::Durable)) => (
                (0.0, 0),
                Instant::now(),
                Swept::Entries(LdaDelta::none(self.hyper.topics)),
            ),
            // A clock an earlier life of this worker swept and may have pushed: its moves again,
            // on the host (a resident engine gets the state before it next sweeps).
            (Path::Host(_), Some(Logged::Moves(moves))) => {
                let started = Instant::now();
                let delta = replay(&mut self.state, &moves);
                (host_ll, started, Swept::Entries(delta))
            }
            (Path::Resident { .. }, Some(Logged::Moves(moves))) => {
                self.device_behind = true;
                let started = Instant::now();
                let delta = replay(&mut self.state, &moves);
                ((0.0, 0), started, Swept::Entries(delta))
            }
            (Path::Host(engine), None) => {
                let started = Instant::now();
                // The assignments before the sweep, into the kept buffer, for the log.
                if self.moves.is_some() {
                    self.z_now.clone_from(&self.state.z);
                }
                let delta = engine.sweep(
                    &mut self.state,
                    &mut self.local,
                    &mut self.totals,
                    &self.hyper,
                    key,
                )?;
                // Logged before the push leaves (it leaves after this clock returns).
                if let Some(log) = self.moves.as_mut() {
                    log.append(clock, &moves_between(&self.z_now, &self.state.z))?;
                }
                (host_ll, started, Swept::Entries(delta))
            }
            (Path::Resident { dev, .. }, None) => {
                let ll = if measure { dev.loglik()? } else { (0.0, 0) };
                let started = Instant::now();
                let delta = sweep_resident(dev.as_mut(), key, out)?;
                // Logged before the push leaves.
                self.log_device_moves(clock)?;
                (ll, started, delta)
            }
        };
        self.sweep_s += started.elapsed().as_secs_f64();
        if swept {
            self.swept += self.state.num_tokens() as u64;
        }
        self.clock_done = clock;
        match delta {
            Swept::Entries(delta) => write_entries(&delta, self.k() as u64, out)?,
            Swept::Wire(wire) => write_wire(wire, out)?,
        }
        let t = self.traffic_since();
        Ok(LdaClock {
            clock_loglik: ll,
            clock_tokens: n as f64,
            unmeasured: if measure { 0.0 } else { 1.0 },
            device: t.into(),
        })
    }

    /// The moves log keeps the assignments after a clock and, once the shards hold it for
    /// good, makes them its snapshot and drops the records up to it. Not under a lossy push
    /// codec: its residual (or momentum) after a clock is made by the clocks before, so a
    /// returning worker must push every clock again to rebuild it, and needs every record.
    fn durable(&mut self, clocks: u64) -> Result<(), AppError> {
        match self.moves.as_mut() {
            Some(log) if self.compact_log => log.durable(clocks, self.clock_done, &self.state.z),
            _ => Ok(()),
        }
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        let v = u64::from(self.state.vocab_size);
        let rows: Vec<u64> = if self.worker == 0 {
            (0..v).collect()
        } else {
            let held = self
                .held
                .iter()
                .flat_map(|(_, d)| d.iter().map(|&w| u64::from(w)));
            let mut r: Vec<u64> = self
                .words
                .iter()
                .copied()
                .chain(held)
                .filter(|&w| w < v)
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        self.all = vec![0.0; rows.len() * self.k()];
        self.final_rows = rows.clone();
        self.inbox.expect(vec![
            TableRows {
                table: WORD_TOPIC,
                rows,
            },
            TableRows {
                table: TOTALS,
                rows: vec![0],
            },
        ]);
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<LdaFinal, LdaFacts>, AppError> {
        self.inbox.complete()?;
        let k = self.k();
        let mut facts = LdaFacts::default();
        for (i, w) in self.words.iter().enumerate() {
            let at = self.final_rows.binary_search(w).unwrap_or(0) * k;
            self.local[i * k..(i + 1) * k].copy_from_slice(&self.all[at..at + k]);
        }
        // The final log-likelihood, of the worker's state under the final model's rows: measured
        // where the state is. A resident engine takes the rows as it takes a clock's (packed
        // where that is smaller) and measures on the device; the state never comes back.
        // A job that ended while this worker replayed: the device takes the replayed state.
        self.catch_up_device()?;
        let ((ll, n), traffic) = match &mut self.path {
            Path::Host(_) => (self.host_loglik(), Traffic::default()),
            Path::Resident { dev, .. } => {
                // In runs of at most FINAL_RUN_BYTES dense, as a clock's rows come by shard, so
                // that rows that do not pack never stage the whole table at once.
                let rows_per_run = (FINAL_RUN_BYTES / (4 * k.max(1))).max(1);
                for (i, run) in self.local.chunks(rows_per_run * k.max(1)).enumerate() {
                    dev.load_rows(i * rows_per_run, run)?;
                }
                dev.load_totals(&self.totals)?;
                (dev.loglik()?, dev.traffic())
            }
        };
        let (rows, all) = (&self.final_rows, &self.all);
        let row = |w: u32| {
            let at = rows.binary_search(&u64::from(w)).ok()? * k;
            all.get(at..at + k)
        };
        let held = document_completion(
            &self.held,
            row,
            &self.totals,
            self.state.vocab_size,
            &self.hyper,
            self.seed,
        );
        if self.worker == 0 {
            if let Some((topics, true_k)) = &self.truth {
                facts.topic_recovery = Some(topic_recovery(
                    topics,
                    *true_k,
                    &self.all,
                    k,
                    self.hyper.beta,
                ));
            }
            facts.word_topic_hash = Some(flags::hash_bits(&self.all));
            // The whole final model is here: are its counts still counts? (Only where the
            // pulls carried them exactly: f16 rounds counts past 2048.)
            if self.exact_pulls {
                let check = count_check(&self.all, k, &self.totals);
                if check != CountCheck::default() {
                    tracing::warn!(
                        negative_counts = check.negative_cells,
                        totals_gap = check.totals_gap,
                        "the final word-topic counts are not the counts of any assignments"
                    );
                }
                facts.negative_counts = Some(check.negative_cells);
                facts.totals_gap = Some(check.totals_gap);
            }
            if let Some(vocab) = &self.corpus_vocab {
                for line in top_words(&self.all, k, vocab, 8) {
                    eprintln!("{line}");
                }
            }
        }
        Ok(Outcome {
            sums: LdaFinal {
                final_loglik: ll,
                final_tokens: n as f64,
                tokens_swept: self.swept as f64,
                sweep_s: self.sweep_s,
                workers: 1.0,
                heldout_loglik: held.loglik,
                heldout_tokens: held.tokens as f64,
                heldout_unknown_tokens: held.unknown_tokens as f64,
                heldout_skipped_docs: held.skipped_docs as f64,
                device: traffic.into(),
            },
            facts,
        })
    }
}
