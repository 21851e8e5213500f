//! The worker library: table handles with `read_row`, `read_rows`, `inc`, `inc_row` and `clock`
//! under the SSP contract of DESIGN.md, a row cache tagged with the clocks it is complete
//! through, read-my-writes through a log of the worker's own unacknowledged updates, updates
//! coalesced per clock and pushed by background tasks so compute never waits on a send, and
//! per-clock metrics (compute, communication, blocked seconds; bytes each way).
//!
//! The API is synchronous (compute code calls it from its own thread); communication runs on a
//! tokio runtime whose handle the caller provides. This crate must not depend on the server, the
//! apps or any GPU code.

mod cache;
mod client;
mod error;
mod keys;
mod push;
mod wire;

pub use client::{ClientConfig, PsClient, Table};
pub use error::ClientError;
