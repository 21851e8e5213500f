//! A test double of the parameter server: tables in memory, the shards' update rules and
//! initialisers (the same pure code, from `ps_proto`), and a lockstep driver that runs every
//! worker's session through whole clocks the way a bulk-synchronous deterministic job does:
//! at clock `c` each session reads the tables as of the end of clock `c - 1`, and the clock's
//! updates are applied in worker-id order at the boundary. Conformance suites use it to compare
//! sessions with the oracles clock by clock, with no network.

use super::{App, DeltaSink, Engines, Outcome, Plan, Session, TableRows, WorkerContext};
use crate::error::{AppError, SinkError};
use ps_proto::{init, rules, SparseRowsBuf, TableSpec};
use std::collections::{BTreeMap, HashMap};

/// One table's rows (created at their initial value when first touched) and optimizer state.
#[derive(Debug, Clone)]
struct FakeTable {
    spec: TableSpec,
    rows: HashMap<u64, Vec<f32>>,
    state: HashMap<u64, Vec<f32>>,
}

impl FakeTable {
    fn row(&self, key: u64) -> Vec<f32> {
        self.rows.get(&key).cloned().unwrap_or_else(|| {
            (0..self.spec.width)
                .map(|c| init::value(self.spec.init, self.spec.id, key, c))
                .collect()
        })
    }

    fn apply(&mut self, key: u64, delta: &[f32]) {
        let value = self.row(key);
        let (rule, w) = (self.spec.rule, self.spec.width as usize);
        let row = self.rows.entry(key).or_insert(value);
        let state = self.state.entry(key).or_insert_with(|| {
            let mut s = vec![0.0; rules::state_per_cell(rule) * w];
            rules::init_state(rule, &mut s);
            s
        });
        rules::apply(rule, row, state, delta);
    }
}

/// Tables in memory; see the module docs.
#[derive(Debug, Clone)]
pub struct FakePs {
    tables: BTreeMap<u32, FakeTable>,
}

/// One worker's update of one clock, as a session wrote it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Updates {
    /// (table, keys, rows) per block, in the order written; encoded blocks decoded.
    pub blocks: Vec<(u32, Vec<u64>, Vec<f32>)>,
    /// How many blocks came encoded.
    pub encoded: usize,
}

impl Updates {
    /// The update of one table as a map from row to delta (blocks of a row added up).
    pub fn of_table(&self, table: u32) -> BTreeMap<u64, Vec<f32>> {
        let mut out: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
        for (t, keys, values) in &self.blocks {
            if *t != table || keys.is_empty() {
                continue;
            }
            let w = values.len() / keys.len();
            for (k, row) in keys.iter().zip(values.chunks_exact(w)) {
                let e = out.entry(*k).or_insert_with(|| vec![0.0; w]);
                e.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        out
    }

    /// Whether both change every table's rows alike, however the blocks were cut or encoded.
    pub fn same_as(&self, other: &Updates) -> bool {
        let tables: std::collections::BTreeSet<u32> = (self.blocks.iter())
            .chain(&other.blocks)
            .map(|b| b.0)
            .collect();
        tables
            .into_iter()
            .all(|t| self.of_table(t) == other.of_table(t))
    }
}

/// A [`DeltaSink`] over the double's tables: refuses unknown tables, unsorted or out-of-range
/// keys and codecs the table does not take, like the real client.
struct Sink<'a> {
    ps: &'a FakePs,
    updates: Updates,
}

impl Sink<'_> {
    fn check(&self, table: u32, keys: &[u64]) -> Result<&TableSpec, SinkError> {
        let refuse = |reason: &str| SinkError {
            table,
            reason: reason.into(),
        };
        let t = self
            .ps
            .tables
            .get(&table)
            .ok_or_else(|| refuse("unknown table"))?;
        if !keys.windows(2).all(|p| p[0] < p[1]) {
            return Err(refuse("rows must be sorted and distinct"));
        }
        if keys.iter().any(|&k| k >= t.spec.rows) {
            return Err(refuse("row out of range"));
        }
        Ok(&t.spec)
    }
}

impl DeltaSink for Sink<'_> {
    fn rows(&mut self, table: u32, keys: &[u64]) -> Result<&mut [f32], SinkError> {
        let width = self.check(table, keys)?.width as usize;
        self.updates
            .blocks
            .push((table, keys.to_vec(), vec![0.0; keys.len() * width]));
        let last = self.updates.blocks.len() - 1;
        Ok(&mut self.updates.blocks[last].2)
    }

    fn encoded(
        &mut self,
        table: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Result<(), SinkError> {
        let spec = self.check(table, keys)?;
        let exact = spec.push_codec.is_lossless() && ps_proto::codec::is_exact_wire_id(wire_id);
        if wire_id != spec.push_codec.wire_id() && !exact {
            return Err(SinkError {
                table,
                reason: format!("the table's pushes are encoded as {}", spec.push_codec),
            });
        }
        let n = keys.len() * spec.width as usize;
        let values = ps_proto::codec::decode(wire_id, &payload, n)
            .and_then(|d| d.into_dense(n))
            .map_err(|e| SinkError {
                table,
                reason: e.to_string(),
            })?;
        self.updates.blocks.push((table, keys.to_vec(), values));
        self.updates.encoded += 1;
        Ok(())
    }

    /// Runs of at most [`ENTRIES_PER_BLOCK`] rows on lossless tables (this fake has no shards).
    fn entries_blocks(
        &mut self,
        table: u32,
        keys: &[u64],
    ) -> Result<Option<Vec<std::ops::Range<usize>>>, SinkError> {
        let spec = self.check(table, keys)?;
        if !spec.push_codec.is_lossless() {
            return Ok(None);
        }
        let cut = (0..keys.len())
            .step_by(ENTRIES_PER_BLOCK)
            .map(|s| s..(s + ENTRIES_PER_BLOCK).min(keys.len()))
            .collect();
        Ok(Some(cut))
    }
}

/// Rows a block of self-encoded entries holds here: few, so that sessions' tests see many.
pub const ENTRIES_PER_BLOCK: usize = 7;

impl FakePs {
    pub fn new(specs: &[TableSpec]) -> Result<FakePs, AppError> {
        let mut tables = BTreeMap::new();
        for s in specs {
            s.validate()
                .map_err(|e| AppError::Settings(format!("table {}: {e}", s.id)))?;
            tables.insert(
                s.id,
                FakeTable {
                    spec: s.clone(),
                    rows: HashMap::new(),
                    state: HashMap::new(),
                },
            );
        }
        Ok(FakePs { tables })
    }

    /// The rows `keys` of `table`, row-major.
    pub fn read(&self, table: u32, keys: &[u64]) -> Vec<f32> {
        match self.tables.get(&table) {
            Some(t) => keys.iter().flat_map(|&k| t.row(k)).collect(),
            None => Vec::new(),
        }
    }

    /// Applies one worker's clock update with each table's rule.
    pub fn apply(&mut self, u: &Updates) {
        for (table, keys, values) in &u.blocks {
            if let Some(t) = self.tables.get_mut(table) {
                let w = t.spec.width as usize;
                for (k, d) in keys.iter().zip(values.chunks_exact(w)) {
                    t.apply(*k, d);
                }
            }
        }
    }

    /// Hands `reads` to `load` the way replies arrive: each table's rows in two runs, the
    /// second half first.
    pub fn feed(
        &self,
        reads: &[TableRows],
        mut load: impl FnMut(u32, usize, &[u64], &[f32]) -> Result<(), AppError>,
    ) -> Result<(), AppError> {
        for r in reads {
            let mid = r.rows.len() / 2;
            for (first, keys) in [(mid, &r.rows[mid..]), (0, &r.rows[..mid])] {
                if !keys.is_empty() {
                    load(r.table, first, keys, &self.read(r.table, keys))?;
                }
            }
        }
        Ok(())
    }

    /// [`FakePs::feed`] into `session`; of a table it [`Session::takes_sparse`], the run that
    /// arrives first (the second half, when there are two) comes by its entries
    /// ([`Session::load_sparse`]), as the client hands on rows cached sparse, and the other dense.
    pub fn feed_session<A: App + ?Sized>(
        &self,
        reads: &[TableRows],
        session: &mut dyn Session<A>,
    ) -> Result<(), AppError> {
        let mut buf = SparseRowsBuf::default();
        self.feed(reads, |t, first, keys, values| {
            if first == 0 || values.is_empty() || !session.takes_sparse(t) {
                return session.load(t, first, keys, values);
            }
            let width = values.len() / keys.len();
            buf.clear(width);
            values.chunks_exact(width).for_each(|r| buf.push_dense(r));
            session.load_sparse(t, first, keys, buf.view())
        })
    }

    /// A clock's update of one session, written into a sink over these tables.
    pub fn run_clock<A: App + ?Sized>(
        &self,
        session: &mut dyn Session<A>,
        clock: u64,
    ) -> Result<(A::Clock, Updates), AppError> {
        let mut sink = Sink {
            ps: self,
            updates: Updates::default(),
        };
        let figures = session.run_clock(clock, &mut sink)?;
        Ok((figures, sink.updates))
    }
}

/// What a lockstep run produced.
pub struct BspRun<A: App + ?Sized> {
    /// Per clock, per worker: the figures and the update.
    pub clocks: Vec<Vec<(A::Clock, Updates)>>,
    /// Per worker: the final figures.
    pub finals: Vec<Outcome<A::Final, A::Facts>>,
    /// The tables at the end.
    pub ps: FakePs,
}

/// Runs `workers` sessions of `app` for `clocks` clocks in lockstep; see the module docs.
pub fn run_bsp<A: App>(
    app: &A,
    plan: &Plan<A::Settings>,
    workers: u32,
    clocks: u64,
    engines: &dyn Engines,
) -> Result<BspRun<A>, AppError> {
    let mut ps = FakePs::new(&plan.tables)?;
    let mut sessions = (0..workers)
        .map(|worker| {
            let ctx = WorkerContext {
                worker,
                workers,
                engines,
                rejoin: Default::default(),
            };
            app.session(plan.settings.clone(), &ctx)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut run = Vec::new();
    for clock in 0..clocks {
        let mut this = Vec::new();
        for s in sessions.iter_mut() {
            let reads = s.reads(clock)?;
            ps.feed_session(&reads, s.as_mut())?;
            this.push(ps.run_clock(s.as_mut(), clock)?);
        }
        for (_, u) in &this {
            ps.apply(u);
        }
        run.push(this);
    }
    let mut finals = Vec::new();
    for s in sessions.iter_mut() {
        let reads = s.final_reads()?;
        ps.feed_session(&reads, s.as_mut())?;
        finals.push(s.evaluate()?);
    }
    Ok(BspRun {
        clocks: run,
        finals,
        ps,
    })
}
