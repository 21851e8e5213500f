//! What a worker records through the `metrics` facade. Without a recorder installed (tests, the
//! in-memory paths, any program that installs none) every call is a no-op; `ps-cluster
//! --metrics-addr` installs a Prometheus exporter. Names follow Prometheus conventions: the unit
//! in the name, `_total` on counters.

use ps_proto::ClockReport;

/// Clocks of this worker whose push every shard acknowledged (counter, label `worker`).
pub const CLOCKS_COMPLETED: &str = "ps_worker_clocks_completed_total";
/// Seconds a worker waited in reads per clock (histogram, label `worker`).
pub const BLOCKED_SECONDS: &str = "ps_worker_blocked_seconds";
/// Bytes of push frames sent, per table (counter, labels `worker`, `table`).
pub const PUSHED_BYTES: &str = "ps_client_pushed_bytes_total";
/// Bytes of pull replies received, per table (counter, labels `worker`, `table`).
pub const PULLED_BYTES: &str = "ps_client_pulled_bytes_total";
/// Seconds from sending a pull request to having its reply, parking at the shard included
/// (histogram, labels `worker`, `table`).
pub const PULL_LATENCY_SECONDS: &str = "ps_client_pull_latency_seconds";

/// Gives every worker metric its help text; call once after installing a recorder.
pub fn describe() {
    metrics::describe_counter!(
        CLOCKS_COMPLETED,
        "Clocks of this worker whose push every shard acknowledged"
    );
    metrics::describe_histogram!(
        BLOCKED_SECONDS,
        "Seconds a worker waited in reads during one clock (for rows, and for slower workers under SSP)"
    );
    metrics::describe_counter!(PUSHED_BYTES, "Bytes of push frames sent, per table");
    metrics::describe_counter!(PULLED_BYTES, "Bytes of pull replies received, per table");
    metrics::describe_histogram!(
        PULL_LATENCY_SECONDS,
        "Seconds from sending a pull request to having its reply, parking at the shard included"
    );
}

/// A clock whose push every shard acknowledged, with its report.
pub(crate) fn clock_completed(r: &ClockReport) {
    let worker = r.worker.to_string();
    metrics::counter!(CLOCKS_COMPLETED, "worker" => worker.clone()).increment(1);
    metrics::histogram!(BLOCKED_SECONDS, "worker" => worker).record(r.blocked_s);
}

pub(crate) fn pushed(worker: u32, table: u32, bytes: u64) {
    metrics::counter!(PUSHED_BYTES, "worker" => worker.to_string(), "table" => table.to_string())
        .increment(bytes);
}

/// One pull answered: the reply's bytes and the seconds since the request went out.
pub(crate) fn pulled(worker: u32, table: u32, bytes: u64, seconds: f64) {
    let (worker, table) = (worker.to_string(), table.to_string());
    metrics::counter!(PULLED_BYTES, "worker" => worker.clone(), "table" => table.clone())
        .increment(bytes);
    metrics::histogram!(PULL_LATENCY_SECONDS, "worker" => worker, "table" => table).record(seconds);
}
