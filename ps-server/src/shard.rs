//! One shard's state: its slice of every table, the SSP clock vector that orders and releases
//! pushed batches, and the pulls parked until the clock vector allows them. No I/O here: the
//! service feeds it validated frames.

use crate::table::DenseTable;
use ps_proto::{ProtoError, ShardMap, TableSpec};
use ps_ssp::{ParkedReads, ShardClock, SspError};
use std::collections::HashMap;
use tokio::sync::oneshot;

/// The rows one push frame carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRows {
    pub table: u32,
    pub keys: Vec<u64>,
    pub values: Vec<f32>,
}

/// Everything one worker pushed to this shard for one clock.
pub type Batch = Vec<PushRows>;

pub struct Shard {
    pub id: u32,
    tables: HashMap<u32, DenseTable>,
    clock: ShardClock<Batch>,
    parked: ParkedReads<oneshot::Sender<()>>,
    params_applied: u64,
}

/// What a pull read: values, the shard's min clock and the requesting worker's applied clocks.
#[derive(Debug, Clone, PartialEq)]
pub struct PullResult {
    pub values: Vec<f32>,
    pub min_clock: u64,
    pub worker_clock: u64,
}

impl Shard {
    pub fn new(
        id: u32,
        num_shards: u32,
        tables: &[TableSpec],
        num_workers: u32,
        deterministic: bool,
    ) -> Shard {
        let tables = tables
            .iter()
            .map(|t| {
                let range = ShardMap::range_of(t.rows, num_shards, id);
                (t.id, DenseTable::new(t.clone(), range))
            })
            .collect();
        Shard {
            id,
            tables,
            clock: ShardClock::new(num_workers, deterministic),
            parked: ParkedReads::new(),
            params_applied: 0,
        }
    }

    pub fn table(&self, id: u32) -> Result<&DenseTable, ProtoError> {
        self.tables.get(&id).ok_or(ProtoError::UnknownTable(id))
    }

    /// Validates a request against a table without changing anything.
    pub fn check(&self, table: u32, width: u32, keys: &[u64]) -> Result<(), ProtoError> {
        self.table(table)?.check(width, keys)
    }

    pub fn check_worker(&self, worker: u32) -> Result<(), ProtoError> {
        if worker >= self.clock.num_workers() {
            return Err(ProtoError::Protocol(format!(
                "worker {worker} is not in this job ({} workers)",
                self.clock.num_workers()
            )));
        }
        Ok(())
    }

    pub fn min_clock(&self) -> u64 {
        self.clock.min_clock()
    }

    pub fn worker_clock(&self, worker: u32) -> u64 {
        self.clock.worker_clock(worker).unwrap_or(0)
    }

    /// Cells (rows x width) over every table slice this shard holds.
    pub fn cells(&self) -> u64 {
        self.tables
            .values()
            .map(|t| t.range.len() * t.width() as u64)
            .sum()
    }

    pub fn params_applied(&self) -> u64 {
        self.params_applied
    }

    /// Accepts worker `worker`'s complete batch for `clock` (rows already checked), applies
    /// whatever the clock vector releases, and wakes the pulls that became servable.
    pub fn submit(&mut self, worker: u32, clock: u64, batch: Batch) -> Result<(), SspError> {
        let released = self.clock.submit(worker, clock, batch)?;
        for (_, _, batch) in released {
            for rows in batch {
                if let Some(t) = self.tables.get_mut(&rows.table) {
                    t.apply(&rows.keys, &rows.values);
                    self.params_applied += rows.values.len() as u64;
                }
            }
        }
        let min = self.clock.min_clock();
        for waiter in self.parked.release(min) {
            let _ = waiter.send(());
        }
        Ok(())
    }

    /// Parks a pull that needs the rows complete through `required` clocks. Returns `None` if it
    /// can be served now, or a receiver that fires when it can.
    pub fn park(&mut self, required: u64) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        match self.parked.park(required, self.clock.min_clock(), tx) {
            Some(_) => None,
            None => Some(rx),
        }
    }

    /// Reads rows (already checked) with the clocks they are complete through.
    pub fn read(&self, table: u32, keys: &[u64], worker: u32) -> Result<PullResult, ProtoError> {
        let t = self.table(table)?;
        let mut values = Vec::new();
        t.read_into(keys, &mut values);
        Ok(PullResult {
            values,
            min_clock: self.clock.min_clock(),
            worker_clock: self.worker_clock(worker),
        })
    }

    /// Drops every parked pull (their waiters see the shard going away).
    pub fn shutdown(&mut self) {
        self.parked.release(u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::{Init, UpdateRule};

    fn spec() -> TableSpec {
        TableSpec {
            id: 1,
            name: "t".into(),
            rows: 10,
            width: 2,
            rule: UpdateRule::Add,
            init: Init::Zeros,
            staleness: Some(0),
        }
    }

    #[test]
    fn deterministic_mode_applies_at_the_boundary_in_worker_order() {
        let mut s = Shard::new(0, 2, &[spec()], 2, true);
        assert!(s.check(1, 2, &[4]).is_ok());
        assert!(matches!(
            s.check(1, 2, &[5]),
            Err(ProtoError::KeyOutOfRange { .. })
        ));
        assert!(matches!(
            s.check(1, 3, &[0]),
            Err(ProtoError::WrongWidth { .. })
        ));
        assert!(matches!(
            s.check(2, 2, &[0]),
            Err(ProtoError::UnknownTable(2))
        ));
        let rx = s.park(1).expect("must park until clock 0 is complete");
        s.submit(
            1,
            0,
            vec![PushRows {
                table: 1,
                keys: vec![0],
                values: vec![1.0, 2.0],
            }],
        )
        .unwrap();
        assert_eq!(
            s.read(1, &[0], 1).unwrap().values,
            vec![0.0, 0.0],
            "held back until worker 0 is in"
        );
        s.submit(0, 0, vec![]).unwrap();
        let r = s.read(1, &[0], 1).unwrap();
        assert_eq!(r.values, vec![1.0, 2.0]);
        assert_eq!((r.min_clock, r.worker_clock), (1, 1));
        assert!(rx.blocking_recv().is_ok());
        assert!(s.park(1).is_none());
    }
}
