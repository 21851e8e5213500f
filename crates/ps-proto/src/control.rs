//! Control messages exchanged with the coordinator. They travel as JSON payloads of control
//! frames: they are small and rare, and serde validates their shape.

use crate::shard_map::ShardMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Worker,
}

/// node -> coordinator, first frame on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub role: Role,
    /// For servers: the address workers should connect to.
    pub listen_addr: Option<String>,
    pub host: String,
    pub pid: u32,
    /// The shard or worker id this node asks for (e.g. to match its certificate's name); nodes
    /// without one get the ids left over, in registration order.
    #[serde(default)]
    pub requested_id: Option<u32>,
}

/// How a shard applies a pushed delta `d` to a stored value `w`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum UpdateRule {
    /// w += d
    Add,
    /// w -= lr * d (d is a gradient)
    Sgd { lr: f32 },
}

/// How a shard fills a table before the first update. Seeded initialisers depend only on
/// (seed, table, row, column), never on the shard layout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "init", rename_all = "lowercase")]
pub enum Init {
    Zeros,
    Normal { std: f32, seed: u64 },
    Uniform { low: f32, high: f32, seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    pub id: u32,
    pub name: String,
    pub rows: u64,
    pub width: u32,
    pub rule: UpdateRule,
    pub init: Init,
    /// Read staleness for this table; `None` is unbounded (asynchronous).
    pub staleness: Option<u64>,
}

/// The job a worker runs: the app name and its settings, opaque to the server side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub app: String,
    pub clocks: u64,
    pub settings: serde_json::Value,
}

/// coordinator -> node, answers Register once every node has registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assign {
    pub role: Role,
    /// Shard id for servers, worker id for workers.
    pub id: u32,
    pub num_servers: u32,
    pub num_workers: u32,
    pub deterministic: bool,
    pub shard_map: ShardMap,
    pub job: JobSpec,
    /// How often to send heartbeat datagrams.
    pub heartbeat_ms: u64,
    /// The job's cap on a frame's body (keys and payload), in bytes.
    pub max_frame_bytes: u64,
}

/// worker -> coordinator after each clock's push has been acknowledged by every shard.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClockReport {
    pub worker: u32,
    pub clock: u64,
    pub compute_s: f64,
    pub comm_s: f64,
    pub blocked_s: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// App figures that add up across workers (sums and counts), e.g. squared error and count.
    pub sums: std::collections::BTreeMap<String, f64>,
}

/// worker -> coordinator at the end: final figures over the fully synchronised model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Done {
    pub worker: u32,
    pub sums: std::collections::BTreeMap<String, f64>,
    /// Other facts (e.g. a hash of the final model read by worker 0).
    pub facts: std::collections::BTreeMap<String, serde_json::Value>,
}

/// coordinator -> every node: stop. `ok == false` means the job failed for `reason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {
    pub ok: bool,
    pub reason: String,
}
