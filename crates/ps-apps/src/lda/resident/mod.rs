//! An LDA engine that keeps a worker's state where it samples: the trait a device engine (CUDA)
//! implements, and its CPU oracle [`HostLdaResident`].
//!
//! A resident engine receives the worker's tokens, topic assignments and document-topic counts
//! once ([`LdaResident::setup`]) and keeps them, with a local copy of the worker's word-topic rows
//! (`words.len() x K`, local row `i` = global word `state.words[i]`, the order of the session's
//! read) and of the topic totals, for the whole job. Per clock the session hands it the pulled
//! rows as each shard's reply arrives ([`LdaResident::load_sparse_rows`] by their entries, as the
//! client caches them, or [`LdaResident::load_rows`] dense, by position in the read, and
//! [`LdaResident::load_totals`]), asks for the log-likelihood of the model it read
//! ([`LdaResident::loglik`]), and sweeps ([`LdaResident::sweep`]), taking back only the sparse
//! delta. The uniforms come from Philox keyed by the [`SweepKey`] on both sides, so on a GPU the
//! pulled rows in and the delta out are all that cross PCIe in a clock.
//!
//! [`HostLdaResident`] does the same with a [`LdaCompute`] engine and [`loglik`]: exactly the
//! host path's arithmetic, so the session's resident path is tested, bit for bit, where there is
//! no GPU. It also takes each pulled run through the packed form a device engine copies (a run
//! by its entries Rice coded, [`super::packed::rice`]; a dense run's nonzero entries,
//! [`super::packed`], or a lossy pull's run as codes, [`pulled_run`]), and each delta through
//! the wire encoding a device engine makes ([`super::wire`]), so those steps are tested there
//! too.

use super::packed::rice::{pack_rice_rows, unpack_rice_rows};
use super::packed::{
    pack_delta_entries, pack_rows, pack_sparse_rows, unpack_delta, unpack_rows, Packed, Values,
    MAX_PACKED_TOPICS,
};
use super::wire::{device_bytes, wire_delta, Cut, WireDelta};
use super::{loglik, LdaCompute, LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use crate::app::device_codec::{narrower_codes, LevelImage};
use crate::app::Traffic;
use crate::error::ComputeError;
use crate::seed::mix_all;
use ps_proto::SparseRows;

/// An LDA engine whose worker state stays resident between clocks (see the module docs).
pub trait LdaResident: Send {
    /// A short name for logs (`cuda-resident`, `cpu-resident`).
    fn name(&self) -> &'static str;

    /// Takes the worker's state (tokens, assignments, document-topic counts; checked with
    /// [`check_state`]) and the hyper-parameters, and sizes the local word-topic copy
    /// (`state.words.len() x K`, zero) and totals; called once.
    fn setup(&mut self, state: &LdaWorkerState, hyper: &LdaHyper) -> Result<(), ComputeError>;

    /// Writes local word-topic rows `[first, first + n)`: `values` holds `n` whole rows
    /// (`n x K`), the pulled rows of the read's words `first..first + n`.
    fn load_rows(&mut self, first: usize, values: &[f32]) -> Result<(), ComputeError>;

    /// [`LdaResident::load_rows`] of rows that arrived by their entries (`rows.width` = K):
    /// the same rows, never dense on the host on the way to the device's copy.
    fn load_sparse_rows(&mut self, first: usize, rows: SparseRows<'_>) -> Result<(), ComputeError>;

    /// Writes the totals row (`K` values).
    fn load_totals(&mut self, values: &[f32]) -> Result<(), ComputeError>;

    /// [`loglik`] of the state under the loaded rows and totals: what the host path measures
    /// before each sweep.
    fn loglik(&mut self) -> Result<(f64, u64), ComputeError>;

    /// One collapsed-Gibbs sweep of every token against the loaded rows (which it updates, as
    /// [`LdaCompute::sweep`] does), with the uniforms of `key`; returns the sparse delta.
    fn sweep(&mut self, key: SweepKey) -> Result<LdaDelta, ComputeError>;

    /// [`LdaResident::sweep`], its delta encoded where it was made ([`super::wire`]): `cut`
    /// gives the frame blocks of the touched words, and the payloads come back as the worker
    /// library would have made them. This default encodes on the host; a device engine encodes
    /// on the device, so that only the payloads cross PCIe.
    fn sweep_wire(&mut self, key: SweepKey, cut: &mut Cut<'_>) -> Result<WireDelta, ComputeError> {
        let delta = self.sweep(key)?;
        wire_delta(delta, cut).map_err(|message| ComputeError {
            engine: self.name(),
            message: format!("the sweep's delta: {message}"),
        })
    }

    /// Copies the current assignments and document-topic counts into `state` (the one given to
    /// [`Self::setup`]).
    fn download_state(&mut self, state: &mut LdaWorkerState) -> Result<(), ComputeError>;

    /// Copies the current assignments alone into `z` (one a token, as set up): what a worker
    /// that logs its moves ([`super::moves_log`]) reads back after each sweep, 4 bytes a token.
    fn download_assignments(&mut self, z: &mut [u32]) -> Result<(), ComputeError>;

    /// Takes `state`'s assignments and document-topic counts in place of the engine's (checked
    /// with [`check_state`]; its documents, tokens and words must be the ones set up); the
    /// loaded rows and totals stay. A rejoining worker replays its logged moves on the host and
    /// hands the result back with this before it sweeps again.
    fn restore_state(&mut self, state: &LdaWorkerState) -> Result<(), ComputeError>;

    /// Totals since the engine was made.
    fn traffic(&self) -> Traffic;
}

/// Checks a state a resident engine is set up with: its shape, a strictly increasing word list,
/// every token's word row and topic, and the hyper-parameters' topic count.
pub fn check_state(
    engine: &'static str,
    state: &LdaWorkerState,
    hyper: &LdaHyper,
) -> Result<(), ComputeError> {
    let bad = |message: String| Err(ComputeError { engine, message });
    let (k, n) = (state.topics as usize, state.tokens.len());
    if hyper.topics != state.topics || k == 0 {
        return bad(format!(
            "{} topics in the hyper-parameters, {} in the state",
            hyper.topics, state.topics
        ));
    }
    let docs = state.num_docs();
    if state.z.len() != n || state.doc_topic.len() != docs * k {
        return bad(format!(
            "{} assignments for {n} tokens, {} document-topic counts for {docs} x {k}",
            state.z.len(),
            state.doc_topic.len()
        ));
    }
    if !state.offsets_cover_tokens() {
        return bad(format!(
            "document offsets do not cover the {n} tokens in order"
        ));
    }
    // Engines return deltas in row order, which is (word, topic) order only for sorted words.
    if state.words.windows(2).any(|p| p[0] >= p[1]) {
        return bad("the word list is not strictly increasing".into());
    }
    match state.index_out_of_range() {
        Some(why) => bad(why),
        None => Ok(()),
    }
}

/// Checks a run of `values.len()` values at row `first` against a copy of `rows` rows of `k`.
pub fn check_rows(
    engine: &'static str,
    first: usize,
    values: &[f32],
    rows: usize,
    k: usize,
) -> Result<(), ComputeError> {
    if k == 0 || !values.len().is_multiple_of(k) || first + values.len() / k > rows {
        return Err(ComputeError {
            engine,
            message: format!(
                "{} values at row {first} are not whole rows of {k} within {rows} rows",
                values.len()
            ),
        });
    }
    Ok(())
}

/// Checks a run of rows by their entries, `rows`, at row `first` against a copy of `words`
/// rows of `k`: its width, its place, and its shape ([`SparseRows::check`]).
pub fn check_sparse_rows(
    engine: &'static str,
    first: usize,
    rows: SparseRows<'_>,
    words: usize,
    k: usize,
) -> Result<(), ComputeError> {
    let bad = |message: String| Err(ComputeError { engine, message });
    if rows.width != k || first + rows.rows() > words {
        return bad(format!(
            "{} rows of width {} at row {first} are not whole rows of {k} within {words} rows",
            rows.rows(),
            rows.width
        ));
    }
    rows.check().or_else(|e| bad(e.to_string()))
}

/// The CPU oracle of a resident engine: a [`LdaCompute`] engine on host copies. Nothing crosses
/// a bus, but its [`Traffic`] counts the bytes a device engine would copy each way for the same
/// calls (the state once, each run packed where that is smaller, the log-likelihood's sum, the
/// delta packed with its sizes, the totals' change, the state back). It splits its work as a
/// device engine's is split: unpacking a run's image into its rows, the log-likelihood, the
/// sweep and packing the sweep's delta are timed as the device's compute; packing a run and
/// unpacking the delta's image (into the entries it returns) are host work, as they are beside
/// a GPU. So a `cpu-resident` job's summary gives the bus bytes to expect on a GPU, and its
/// compute less the device's is the host's own work around the engine. Copy times stay zero.
pub struct HostLdaResident {
    engine: Box<dyn LdaCompute + Send>,
    hyper: Option<LdaHyper>,
    state: LdaWorkerState,
    word_topic: Vec<f32>,
    totals: Vec<f32>,
    /// The packed image of the last run loaded.
    image: Vec<u32>,
    traffic: Traffic,
}

const ORACLE: &str = "cpu-resident";

impl HostLdaResident {
    /// Runs `engine`.
    pub fn new(engine: Box<dyn LdaCompute + Send>) -> HostLdaResident {
        HostLdaResident {
            engine,
            hyper: None,
            state: LdaWorkerState {
                topics: 0,
                vocab_size: 0,
                words: Vec::new(),
                doc_offsets: vec![0],
                tokens: Vec::new(),
                z: Vec::new(),
                doc_topic: Vec::new(),
            },
            word_topic: Vec::new(),
            totals: Vec::new(),
            image: Vec::new(),
            traffic: Traffic::default(),
        }
    }

    /// Writes a run of `n` rows from row `first` as a device engine loads it: the image in
    /// `self.image` (`packed`) unpacked on the device (timed as the device's), or, where the run
    /// did not pack, `dense` writing it as it is; and counts the bytes that cross.
    fn place(
        &mut self,
        first: usize,
        n: usize,
        packed: Option<Packed>,
        dense: impl FnOnce(&mut [f32]),
    ) {
        let k = self.state.topics as usize;
        let dst = &mut self.word_topic[first * k..(first + n) * k];
        match packed {
            Some(shape) => self
                .traffic
                .timed(|| unpack_rows(&self.image, shape, k, dst)),
            None => dense(dst),
        }
        self.traffic.h2d_bytes += run_bytes(packed, n * k);
    }

    /// The engine's sweep of the resident state (timed as the device's).
    fn swept(&mut self, key: SweepKey) -> Result<LdaDelta, ComputeError> {
        let hyper = self.hyper()?;
        self.traffic.timed(|| {
            self.engine.sweep(
                &mut self.state,
                &mut self.word_topic,
                &mut self.totals,
                &hyper,
                key,
            )
        })
    }

    fn hyper(&self) -> Result<LdaHyper, ComputeError> {
        self.hyper.ok_or_else(|| ComputeError {
            engine: ORACLE,
            message: "used before setup".into(),
        })
    }
}

impl LdaResident for HostLdaResident {
    fn name(&self) -> &'static str {
        ORACLE
    }

    fn setup(&mut self, state: &LdaWorkerState, hyper: &LdaHyper) -> Result<(), ComputeError> {
        check_state(ORACLE, state, hyper)?;
        let k = state.topics as usize;
        self.state = state.clone();
        self.word_topic = vec![0.0; state.words.len() * k];
        self.totals = vec![0.0; k];
        self.hyper = Some(*hyper);
        // Offsets, tokens, assignments, document-topic counts and words, as u32.
        let (n, d) = (state.tokens.len(), state.num_docs());
        self.traffic.h2d_bytes += 4 * (d + 1 + 2 * n + d * k + state.words.len()) as u64;
        Ok(())
    }

    fn load_rows(&mut self, first: usize, values: &[f32]) -> Result<(), ComputeError> {
        let k = self.hyper()?.topics as usize;
        check_rows(ORACLE, first, values, self.state.words.len(), k)?;
        // Packed or as codes when that is smaller, else as it is.
        match pulled_run(values, k, &mut self.image) {
            PulledRun::Packed(shape) => self.place(first, values.len() / k, Some(shape), |_| {}),
            PulledRun::Codes(codes) => {
                // Widened as the device widens them (the values, exactly: level_image checks).
                let wide = self.traffic.timed(|| codes.widen());
                self.word_topic[first * k..first * k + values.len()].copy_from_slice(&wide);
                self.traffic.h2d_bytes += codes.bytes() as u64;
            }
            PulledRun::Dense => self.place(first, values.len() / k, None, |dst| {
                dst.copy_from_slice(values)
            }),
        }
        Ok(())
    }

    fn load_sparse_rows(&mut self, first: usize, rows: SparseRows<'_>) -> Result<(), ComputeError> {
        let k = self.hyper()?.topics as usize;
        check_sparse_rows(ORACLE, first, rows, self.state.words.len(), k)?;
        // Rice coded from the entries (about the wire's bytes) when that is smaller than dense,
        // and unpacked as the device does (its time); nothing crosses when no entry is kept.
        if let Some(shape) = pack_rice_rows(rows, k, &mut self.image) {
            let dst = &mut self.word_topic[first * k..(first + rows.rows()) * k];
            dst.fill(0.0);
            let image = &self.image;
            let unpacked = self
                .traffic
                .timed(|| unpack_rice_rows(image, shape, k, dst));
            unpacked.map_err(|message| ComputeError {
                engine: ORACLE,
                message: format!("the Rice rows image: {message}"),
            })?;
            self.traffic.h2d_bytes += if shape.entries == 0 { 0 } else { shape.bytes() };
            return Ok(());
        }
        // Else the 16-bit image when that is smaller, else dense.
        let packed = pack_sparse_rows(rows, k, &mut self.image);
        self.place(first, rows.rows(), packed, |dst| rows.write_dense(dst));
        Ok(())
    }

    fn load_totals(&mut self, values: &[f32]) -> Result<(), ComputeError> {
        let k = self.hyper()?.topics as usize;
        check_rows(ORACLE, 0, values, 1, k)?;
        self.totals.copy_from_slice(values);
        self.traffic.h2d_bytes += 4 * k as u64;
        Ok(())
    }

    fn loglik(&mut self) -> Result<(f64, u64), ComputeError> {
        let hyper = self.hyper()?;
        let (state, rows, totals) = (&self.state, &self.word_topic, &self.totals);
        let ll = self.traffic.timed(|| loglik(state, rows, totals, &hyper));
        // The device's sum comes back.
        self.traffic.d2h_bytes += 8;
        Ok(ll)
    }

    fn sweep(&mut self, key: SweepKey) -> Result<LdaDelta, ComputeError> {
        let mut delta = self.swept(key)?;
        let (k, words) = (delta.totals.len(), &self.state.words);
        let out = if k <= MAX_PACKED_TOPICS {
            // As a device engine: it packs the delta (its time), the host unpacks the image.
            let image = &mut self.image;
            let shape = self
                .traffic
                .timed(|| pack_delta_entries(&delta.entries, words, k, image));
            let bad = |message: String| ComputeError {
                engine: ORACLE,
                message: format!("the sweep's delta: {message}"),
            };
            let shape = shape.map_err(bad)?;
            delta.entries = unpack_delta(image, shape, k, words).map_err(bad)?;
            // The image's two sizes, then the image.
            8 + shape.bytes()
        } else {
            // A count, then 12-byte (word, topic, change) triples.
            4 + 12 * delta.entries.len() as u64
        };
        // Then the totals' change.
        self.traffic.d2h_bytes += out + 4 * k as u64;
        Ok(delta)
    }

    fn sweep_wire(&mut self, key: SweepKey, cut: &mut Cut<'_>) -> Result<WireDelta, ComputeError> {
        let bad = |message: String| ComputeError {
            engine: ORACLE,
            message: format!("the sweep's delta: {message}"),
        };
        let k = self.hyper()?.topics as usize;
        // As a device engine: above 65,536 topics its delta does not pack, and it comes back as
        // entries for the host to encode; with no tokens nothing runs and nothing crosses.
        if k > MAX_PACKED_TOPICS || self.state.tokens.is_empty() {
            let delta = match self.state.tokens.is_empty() {
                true => self.swept(key)?,
                false => self.sweep(key)?,
            };
            return wire_delta(delta, cut).map_err(bad);
        }
        let delta = self.swept(key)?;
        // It encodes the delta (its time); the payloads come back.
        let wire = self.traffic.timed(|| wire_delta(delta, cut)).map_err(bad)?;
        let (h2d, d2h) = device_bytes(&wire, self.state.words.len());
        self.traffic.h2d_bytes += h2d;
        self.traffic.d2h_bytes += d2h;
        Ok(wire)
    }

    fn download_state(&mut self, state: &mut LdaWorkerState) -> Result<(), ComputeError> {
        if state.z.len() != self.state.z.len()
            || state.doc_topic.len() != self.state.doc_topic.len()
        {
            return Err(ComputeError {
                engine: ORACLE,
                message: "the state to fill is not the one set up".into(),
            });
        }
        state.z.copy_from_slice(&self.state.z);
        state.doc_topic.copy_from_slice(&self.state.doc_topic);
        self.traffic.d2h_bytes += 4 * (state.z.len() + state.doc_topic.len()) as u64;
        Ok(())
    }

    fn download_assignments(&mut self, z: &mut [u32]) -> Result<(), ComputeError> {
        if z.len() != self.state.z.len() {
            return Err(ComputeError {
                engine: ORACLE,
                message: format!(
                    "{} assignments asked for, {} set up",
                    z.len(),
                    self.state.z.len()
                ),
            });
        }
        z.copy_from_slice(&self.state.z);
        self.traffic.d2h_bytes += 4 * z.len() as u64;
        Ok(())
    }

    fn restore_state(&mut self, state: &LdaWorkerState) -> Result<(), ComputeError> {
        let hyper = self.hyper()?;
        check_state(ORACLE, state, &hyper)?;
        if documents_print(state) != documents_print(&self.state) {
            return Err(other_documents(ORACLE));
        }
        self.state.z.copy_from_slice(&state.z);
        self.state.doc_topic.copy_from_slice(&state.doc_topic);
        self.traffic.h2d_bytes += 4 * (state.z.len() + state.doc_topic.len()) as u64;
        Ok(())
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

/// A fingerprint of the documents of `state`, the part a restore may not change
/// ([`LdaResident::restore_state`]): its topic count, document offsets, tokens and words. An
/// engine keeps the set-up's and refuses a state to restore whose print differs.
pub fn documents_print(state: &LdaWorkerState) -> u64 {
    let offsets = state.doc_offsets.iter().map(|&o| o as u64);
    let tokens = state
        .tokens
        .iter()
        .chain(&state.words)
        .map(|&t| u64::from(t));
    let lengths = [state.tokens.len() as u64, state.words.len() as u64];
    mix_all(
        u64::from(state.topics),
        lengths.into_iter().chain(offsets).chain(tokens),
    )
}

/// The error of a state to restore whose documents are not the ones set up.
pub fn other_documents(engine: &'static str) -> ComputeError {
    ComputeError {
        engine,
        message: "the state to restore is not of the documents set up".into(),
    }
}

/// The bytes a device engine copies in for a run of `cells` values: its packed image (nothing
/// when it has no entry: the rows are only zeroed), or the run dense.
fn run_bytes(packed: Option<Packed>, cells: usize) -> u64 {
    match packed {
        Some(shape) if shape.entries == 0 => 0,
        Some(shape) => shape.bytes(),
        None => 4 * cells as u64,
    }
}

/// How a dense run of pulled rows crosses to a device engine ([`pulled_run`]).
#[derive(Debug)]
pub enum PulledRun {
    /// The packed image [`pack_rows`] left in the caller's buffer.
    Packed(Packed),
    /// The values as codes in runs of scales ([`level_image`](crate::app::device_codec::level_image)),
    /// widened on the device exactly.
    Codes(LevelImage),
    /// The values as they are.
    Dense,
}

impl PulledRun {
    /// The bytes that cross for a run of `cells` values.
    pub fn bytes(&self, cells: usize) -> u64 {
        match self {
            PulledRun::Packed(shape) => run_bytes(Some(*shape), cells),
            PulledRun::Codes(image) => image.bytes() as u64,
            PulledRun::Dense => run_bytes(None, cells),
        }
    }
}

/// How the dense run `values` (whole rows of `k`) crosses: packed entries (into `image`) where
/// they pack smaller as 16-bit whole counts (a lossless pull's sparse rows); otherwise the
/// fewest bytes of the packed entries, the codes ([`narrower_codes`]: a `q8`, `q4`, `q2` or
/// `sign` pull codec's rows, or dense rows of small whole counts, which are codes of scale 1)
/// and the run as it is. Codes are exact by construction, so the rows are the same either way.
pub fn pulled_run(values: &[f32], k: usize, image: &mut Vec<u32>) -> PulledRun {
    let packed = pack_rows(values, k, image);
    if let Some(shape) = packed.filter(|s| s.values == Values::U16 || s.entries == 0) {
        return PulledRun::Packed(shape);
    }
    match narrower_codes(values, false) {
        Some(codes) if (codes.bytes() as u64) < run_bytes(packed, values.len()) => {
            PulledRun::Codes(codes)
        }
        _ => packed.map_or(PulledRun::Dense, PulledRun::Packed),
    }
}

#[cfg(test)]
mod tests;
