//! Wire format of the parameter server: the fixed frame header, the message kinds, the control
//! messages, the shard map and the validation of everything that comes off the network; and
//! the pure cores both sides share: the update rules ([`rules`]), the seeded table initialisers
//! ([`init`]), the job's reports and their typed figures ([`report`]), and rows held by their
//! entries ([`sparse_rows`]), as a worker's cache keeps mostly-zero rows and hands them on.
//!
//! This crate is pure: it must not depend on any I/O, async runtime, socket or clock source.
//! Everything here is tested with plain byte buffers. Bytes off the network may be misaligned,
//! so headers are read with `bytemuck::pod_read_unaligned` and payloads are copied into aligned
//! buffers before use.

pub mod codec;
mod control;
mod error;
mod frame;
mod header;
pub mod init;
pub mod push_plan;
pub mod report;
pub mod rules;
mod shard_map;
pub mod sparse_rows;
#[cfg(test)]
mod test_rng;

pub use control::{
    Assign, ClockReport, ControlEvent, Done, Init, JobSpec, Layout, Recovery, Register, Role,
    Shutdown, TableSpec, UpdateRule, WorkerFailure,
};
pub use error::{ErrorCode, ProtoError};
pub use frame::{decode_f32s, encode_f32s, extend_f32s, is_range, Frame, FrameBuilder, KeyForm};
pub use header::{
    Codec, Header, Kind, Limits, RawHeader, FLAG_END_CLOCK, FLAG_KEY_ASSIGN, FLAG_KEY_CACHED,
    FLAG_KEY_RANGE, HEADER_LEN, MAGIC, VERSION,
};
pub use push_plan::{PushBlock, PushPlan};
pub use report::{ClockSummary, JobResult};
pub use shard_map::{KeyRange, ShardMap, ShardStarts};
pub use sparse_rows::{SparseRows, SparseRowsBuf};

/// ALPN protocol id every endpoint offers and requires.
pub const ALPN: &[u8] = b"ps/1";
/// The same protocol with plaintext 1-RTT packets, offered before [`ALPN`] by endpoints set for
/// trusted links (`ps_transport::PacketProtection::None`) and chosen only when both ends offer it.
pub const ALPN_PLAIN: &[u8] = b"ps/1-plain";
