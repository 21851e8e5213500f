//! Prefetches: the rows a clock will read, pulled when the clock before it ends. Each shard's
//! reply goes into the cache as it arrives, so a read waits only while a shard it still needs
//! rows from has not answered, and a streamed read hands each shard's run on as soon as that
//! shard has.

use crate::client::PsClient;
use crate::error::ClientError;
use crate::read::ShardReplies;
use std::time::Instant;
use tokio::sync::mpsc;

/// Pulls started when a clock ended, for the rows a later clock will read.
pub(crate) struct Prefetch {
    /// Each pulled shard's replies as it answers, with the seconds since the pulls started.
    replies: mpsc::UnboundedReceiver<(u32, ShardReplies, f64)>,
    /// Shards that have not answered yet.
    waiting_on: Vec<u32>,
    /// The rows pulled, sorted.
    rows: Vec<u64>,
    /// The longest any shard has taken so far.
    took: f64,
    /// The clock it is for (the worker's current clock when it started): rows that land
    /// later still count as fetched in this clock, so they serve no read of a later one.
    pub issued: u64,
    /// The lowest own-clock count any shard had acknowledged when the prefetch started: its
    /// replies report at least this, so the own-update log is kept from here while it is in
    /// flight.
    pub floor: u64,
}

impl Prefetch {
    /// Whether a reply still to come will store `row` (of shard `shard`) in the cache.
    pub(crate) fn will_store(&self, shard: u32, row: u64) -> bool {
        self.waiting_on.contains(&shard) && self.rows.binary_search(&row).is_ok()
    }
}

impl PsClient {
    /// Prefetches the rows each table will read at clock `next`: those the caller named with
    /// `Table::prefetch_next`, else those read in the clock that just ended. The pull asks for
    /// what a read at `next` needs, so the shards answer it as soon as the staleness bound
    /// allows (at once under staleness, after every worker's push of this clock under
    /// staleness 0); its round trip travels with this clock's push and behind whatever the
    /// worker does before its next read.
    pub(crate) fn start_prefetch(&mut self, next: u64) {
        let floor = self.log_floor();
        let mut ids: Vec<u32> = self.tables.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(t) = self.tables.get_mut(&id) else {
                continue;
            };
            let read = std::mem::take(&mut t.read_this_clock);
            let mut rows: Vec<u64> = match t.next_reads.take() {
                Some(rows) => rows,
                None => read.into_iter().collect(),
            };
            rows.sort_unstable();
            rows.dedup();
            let (need, width) = (t.staleness.required_min_clock(next), t.spec.width);
            // One prefetch per clock, at most two in flight (an unconsumed older one does not
            // hold back this clock's).
            if rows.is_empty()
                || t.prefetch.iter().any(|p| p.issued >= next)
                || t.prefetch.len() >= 2
            {
                continue;
            }
            let (replies, waiting_on) = self.spawn_streamed(id, width, rows.iter().copied(), need);
            if let Some(t) = self.tables.get_mut(&id) {
                t.prefetch.push_back(Prefetch {
                    replies,
                    waiting_on,
                    rows,
                    took: 0.0,
                    issued: next,
                    floor,
                });
            }
        }
    }

    /// Takes every prefetched reply of table `id` that has arrived into the cache, without
    /// waiting.
    pub(crate) fn take_prefetched(&mut self, id: u32) -> Result<(), ClientError> {
        loop {
            let Some(t) = self.tables.get_mut(&id) else {
                return Ok(());
            };
            let arrived = t
                .prefetch
                .iter_mut()
                .enumerate()
                .find_map(|(i, p)| p.replies.try_recv().ok().map(|r| (i, r)));
            let Some((i, reply)) = arrived else {
                return Ok(());
            };
            self.ingest_prefetched(id, i, reply)?;
        }
    }

    /// Waits for the next reply of table `id`'s oldest prefetch still waiting on one of
    /// `shards`, and takes it into the cache (the wait counts as blocked). False when no
    /// prefetch waits on any of them.
    pub(crate) fn wait_prefetched(&mut self, id: u32, shards: &[u32]) -> Result<bool, ClientError> {
        let Some(t) = self.tables.get_mut(&id) else {
            return Ok(false);
        };
        let Some(i) = t
            .prefetch
            .iter()
            .position(|p| p.waiting_on.iter().any(|s| shards.contains(s)))
        else {
            return Ok(false);
        };
        let started = Instant::now();
        let reply = self.rt.block_on(t.prefetch[i].replies.recv());
        self.blocked_s += started.elapsed().as_secs_f64();
        let reply =
            reply.ok_or_else(|| ClientError::PushFailed("prefetch tasks stopped".into()))?;
        self.ingest_prefetched(id, i, reply)?;
        Ok(true)
    }

    /// One shard's reply to prefetch `i` of table `id`, into the cache as fetched in the clock
    /// the prefetch was for; the prefetch ends with its last shard's reply.
    fn ingest_prefetched(
        &mut self,
        id: u32,
        i: usize,
        (shard, replies, took): (u32, ShardReplies, f64),
    ) -> Result<(), ClientError> {
        let t = self.state_mut(id)?;
        let p = &mut t.prefetch[i];
        p.waiting_on.retain(|s| *s != shard);
        p.took = p.took.max(took);
        let issued = p.issued;
        if p.waiting_on.is_empty() {
            let took = p.took;
            t.prefetch.remove(i);
            self.pull_comm_s += took;
        }
        let frames = self.answered(shard, replies)?;
        self.ingest_frames(id, &frames, issued)
    }
}
