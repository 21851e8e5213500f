//! The server side of the parameter server: shard storage (dense or sparse f32 tables split by
//! key range, with per-cell optimizer state for adagrad and ftrl),
//! update rules and seeded initialisers, request handling over QUIC (pulls parked on the SSP clock
//! vector, pushes applied per worker clock), shard [`checkpoint`]s (file format and store), the
//! coordinator, and the server node role.
//! [`telemetry`] names what shards and the coordinator record through the `metrics` facade
//! (no-ops unless the program installs a recorder).
//!
//! This crate must never link cudarc or any GPU code, nor the worker library or the apps: servers
//! are CPU processes that know tables, rows and clocks, not models.

pub mod checkpoint;
mod checkpointer;
pub mod coordinator;
mod error;
pub mod node;
pub mod plan;
pub mod service;
pub mod shard;
mod sparse;
pub mod table;
pub mod telemetry;

pub use checkpoint::{
    job_fingerprint, CheckpointError, CheckpointStore, Loaded, ShardFacts, ShardSnapshot, Skipped,
    TableFacts, TableSlice, Written,
};
pub use coordinator::{CoordEvent, Coordinator, CoordinatorConfig, ProcessExit};
pub use error::ServerError;
pub use node::{run_server_node, ServerNodeConfig};
pub use ps_proto::{init, rules, ClockSummary, JobResult};
pub use service::{serve_shard, serve_shard_with, ShardHandle};
pub use shard::{validate_tables, PushRows, Shard, DEFAULT_SPARSE_BATCH_CELLS};
pub use table::{DenseTable, SparseTable, Table};
