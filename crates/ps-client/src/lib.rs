//! The worker library: everything a worker process needs to take part in a job, usable by any
//! program (the `ps-cluster` driver is one user; `examples/` has others).
//!
//! - [`Worker::join`] registers with the coordinator, connects to every shard, and owns the
//!   heartbeats, the per-clock reports and the shutdown; [`Worker::finish`] ends its part.
//! - [`PsClient`] and its [`Table`] handles: `read_row(s)`, reads streamed into a caller's sink
//!   shard by shard as replies arrive (`read_into`; `read_runs_into` hands runs of wide,
//!   mostly-zero rows on by their entries, as the cache keeps them), asynchronous pulls
//!   (`pull_async`, `wait`),
//!   updates by cell (`inc`), row (`inc_row`), batch (`push`, `push_owned`), in place
//!   (`rows_mut`), as sparse entries of wide rows (`push_entries`) or already encoded
//!   (`push_encoded`), `clock`, and the dense `push_pull` of
//!   model averaging; all under the SSP contract of DESIGN.md: a row cache tagged with the
//!   clocks it is complete through, read-my-writes through a log of the worker's own
//!   unacknowledged updates, updates pushed by background tasks so compute never waits on a
//!   send, and per-clock metrics (compute, communication, blocked seconds; bytes each way) with
//!   the application's typed figures ([`PsClient::set_figures`]).
//!
//! - [`telemetry`]: what a worker records through the `metrics` facade (clocks completed,
//!   blocked time, bytes pushed and pulled per table, pull latency); no-ops unless the program
//!   installs a recorder.
//!
//! The API is synchronous (compute code calls it from its own thread); communication runs on a
//! tokio runtime. This crate must not depend on the server, the apps or any GPU code.

mod cache;
mod client;
mod clock;
mod entries;
mod error;
mod keys;
mod links;
mod par;
mod pending;
mod prefetch;
mod push;
#[cfg(test)]
mod push_exact_tests;
mod read;
mod retained;
mod row_values;
mod table;
pub mod telemetry;
#[cfg(test)]
mod test_rng;
mod wire;
mod worker;

pub use client::{ClientConfig, PsClient};
pub use clock::{FOLD_SECONDS, SEAL_SECONDS};
pub use error::ClientError;
pub use links::Restarts;
pub use read::{PullTicket, Run};
pub use table::Table;
pub use worker::{Worker, WorkerOptions};
