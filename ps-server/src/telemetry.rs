//! What shards and the coordinator record through the `metrics` facade. Without a recorder
//! installed every call is a no-op; `ps-cluster --metrics-addr` installs a Prometheus exporter.
//! Names follow Prometheus conventions: the unit in the name, `_total` on counters.

use ps_proto::ClockSummary;

/// Pulls parked on the clock vector now (gauge, label `shard`).
pub const PARKED_READS: &str = "ps_server_parked_reads";
/// Rows this shard stores per table: the key range of a dense table, the rows written so far of
/// a sparse one (gauge, labels `shard`, `table`).
pub const ROWS: &str = "ps_server_rows";
/// Pull requests answered (counter, labels `shard`, `table`).
pub const PULLS: &str = "ps_server_pulls_total";
/// Bytes of pull replies sent (counter, labels `shard`, `table`).
pub const PULLED_BYTES: &str = "ps_server_pulled_bytes_total";
/// Values (cells) of pushed updates applied (counter, labels `shard`, `table`).
pub const APPLIED_VALUES: &str = "ps_server_applied_values_total";
/// Worker clock batches accepted (counter, label `shard`).
pub const CLOCK_BATCHES: &str = "ps_server_clock_batches_total";
/// Clocks every worker of the shard's clock vector has completed (gauge, label `shard`).
pub const SHARD_MIN_CLOCK: &str = "ps_server_min_clock";

/// Checkpoints written (counter, labels `shard`, `outcome` = written | failed | skipped).
pub const CHECKPOINTS: &str = "ps_server_checkpoints_total";
/// Seconds the last checkpoint took to encode and write durably (gauge, label `shard`).
pub const CHECKPOINT_SECONDS: &str = "ps_server_checkpoint_seconds";

/// Clocks every worker has reported (counter).
pub const COORD_CLOCKS: &str = "ps_coordinator_clocks_completed_total";
/// Clocks every worker has reported (gauge: the job's clock).
pub const COORD_CLOCK: &str = "ps_coordinator_clock";
/// Clocks a worker has reported (gauge, label `worker`): the spread shows stragglers.
pub const COORD_WORKER_CLOCK: &str = "ps_coordinator_worker_clock";
/// Clock reports received from workers (counter).
pub const COORD_REPORTS: &str = "ps_coordinator_reports_total";
/// Heartbeats received from nodes (counter).
pub const COORD_HEARTBEATS: &str = "ps_coordinator_heartbeats_total";
/// Nodes registered (gauge, label `role`).
pub const COORD_NODES: &str = "ps_coordinator_nodes";
/// Nodes that failed while the job ran (counter, labels `role`, `outcome` = restarted |
/// evicted | waited | rejoined).
pub const COORD_FAILURES: &str = "ps_coordinator_node_failures_total";

/// Gives every shard and coordinator metric its help text; call once after installing a
/// recorder.
pub fn describe() {
    metrics::describe_gauge!(
        PARKED_READS,
        "Pulls parked on the clock vector, waiting for slower workers"
    );
    metrics::describe_gauge!(
        ROWS,
        "Rows stored per table: the key range of a dense table, rows written so far of a sparse one"
    );
    metrics::describe_counter!(PULLS, "Pull requests answered, per table");
    metrics::describe_counter!(PULLED_BYTES, "Bytes of pull replies sent, per table");
    metrics::describe_counter!(
        APPLIED_VALUES,
        "Values of pushed updates applied, per table"
    );
    metrics::describe_counter!(CLOCK_BATCHES, "Worker clock batches accepted");
    metrics::describe_gauge!(
        SHARD_MIN_CLOCK,
        "Clocks every worker has completed at this shard"
    );
    metrics::describe_counter!(
        CHECKPOINTS,
        "Checkpoints: written durably, failed (the shard keeps serving) or skipped (one was still being written)"
    );
    metrics::describe_gauge!(
        CHECKPOINT_SECONDS,
        "Seconds the last checkpoint took to encode and write"
    );
    metrics::describe_counter!(
        COORD_FAILURES,
        "Nodes that failed while the job ran, by what became of them"
    );
    metrics::describe_counter!(COORD_CLOCKS, "Clocks every worker has reported");
    metrics::describe_gauge!(COORD_CLOCK, "Clocks every worker has reported");
    metrics::describe_gauge!(COORD_WORKER_CLOCK, "Clocks each worker has reported");
    metrics::describe_counter!(COORD_REPORTS, "Clock reports received from workers");
    metrics::describe_counter!(COORD_HEARTBEATS, "Heartbeats received from nodes");
    metrics::describe_gauge!(COORD_NODES, "Nodes registered, per role");
}

pub(crate) fn parked_reads(shard: u32, n: usize) {
    metrics::gauge!(PARKED_READS, "shard" => shard.to_string()).set(n as f64);
}

pub(crate) fn rows(shard: u32, table: u32, n: u64) {
    metrics::gauge!(ROWS, "shard" => shard.to_string(), "table" => table.to_string()).set(n as f64);
}

pub(crate) fn pulled(shard: u32, table: u32, bytes: u64) {
    let (shard, table) = (shard.to_string(), table.to_string());
    metrics::counter!(PULLS, "shard" => shard.clone(), "table" => table.clone()).increment(1);
    metrics::counter!(PULLED_BYTES, "shard" => shard, "table" => table).increment(bytes);
}

pub(crate) fn applied(shard: u32, table: u32, values: u64) {
    metrics::counter!(APPLIED_VALUES, "shard" => shard.to_string(), "table" => table.to_string())
        .increment(values);
}

pub(crate) fn clock_batch(shard: u32, min_clock: u64) {
    let shard = shard.to_string();
    metrics::counter!(CLOCK_BATCHES, "shard" => shard.clone()).increment(1);
    metrics::gauge!(SHARD_MIN_CLOCK, "shard" => shard).set(min_clock as f64);
}

pub(crate) fn coordinator_report(worker: u32, clock: u64) {
    metrics::counter!(COORD_REPORTS).increment(1);
    metrics::gauge!(COORD_WORKER_CLOCK, "worker" => worker.to_string()).set((clock + 1) as f64);
}

pub(crate) fn coordinator_clock(s: &ClockSummary) {
    metrics::counter!(COORD_CLOCKS).increment(1);
    metrics::gauge!(COORD_CLOCK).set((s.clock + 1) as f64);
}

pub(crate) fn coordinator_heartbeat() {
    metrics::counter!(COORD_HEARTBEATS).increment(1);
}

pub(crate) fn coordinator_nodes(role: &str, n: usize) {
    metrics::gauge!(COORD_NODES, "role" => role.to_string()).set(n as f64);
}

pub(crate) fn checkpoint(shard: u32, outcome: &'static str, seconds: Option<f64>) {
    let shard = shard.to_string();
    metrics::counter!(CHECKPOINTS, "shard" => shard.clone(), "outcome" => outcome).increment(1);
    if let Some(s) = seconds {
        metrics::gauge!(CHECKPOINT_SECONDS, "shard" => shard).set(s);
    }
}

pub(crate) fn coordinator_failure(role: &'static str, outcome: &'static str) {
    metrics::counter!(COORD_FAILURES, "role" => role, "outcome" => outcome).increment(1);
}
