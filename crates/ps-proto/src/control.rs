//! Control messages exchanged with the coordinator. They travel as JSON payloads of control
//! frames: they are small and rare, and serde validates their shape.

use crate::codec::CodecChain;
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

/// How a shard applies a pushed delta `d` to a stored value `w`. For the optimizer rules the
/// delta is a gradient `g` (summed over the worker's mini-batches in that clock), and the shard
/// keeps per-cell optimizer state next to the values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum UpdateRule {
    /// w += d
    Add,
    /// w -= lr * d (d is a gradient)
    Sgd { lr: f32 },
    /// AdaGrad: per cell accumulator `a` (starting at `initial_accumulator`);
    /// a += g^2; w -= lr * g / (sqrt(a) + eps).
    Adagrad {
        lr: f32,
        eps: f32,
        initial_accumulator: f32,
    },
    /// FTRL-proximal (McMahan et al. 2013, Algorithm 1) per cell with state z and n (both start
    /// at 0): sigma = (sqrt(n + g^2) - sqrt(n)) / alpha; z += g - sigma * w; n += g^2;
    /// w = 0 if |z| <= l1, else -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2).
    /// The stored value `w` is what workers read; the table's init must be zeros.
    Ftrl {
        alpha: f32,
        beta: f32,
        l1: f32,
        l2: f32,
    },
}

impl UpdateRule {
    /// Optimizer state floats the rule keeps per cell (besides the value itself).
    pub fn state_per_cell(&self) -> usize {
        match self {
            UpdateRule::Add | UpdateRule::Sgd { .. } => 0,
            UpdateRule::Adagrad { .. } => 1,
            UpdateRule::Ftrl { .. } => 2,
        }
    }

    /// Checks the rule's parameters: every one finite, `lr > 0`, `eps > 0`,
    /// `initial_accumulator >= 0`, `alpha > 0`, `beta >= 0`, `l1 >= 0`, `l2 >= 0`.
    pub fn validate(&self) -> Result<(), String> {
        fn check(rule: &str, name: &str, v: f32, positive: bool) -> Result<(), String> {
            let ok = v.is_finite() && if positive { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else {
                let want = if positive { "> 0" } else { ">= 0" };
                Err(format!(
                    "rule {rule}: {name} must be finite and {want}, got {v}"
                ))
            }
        }
        match *self {
            UpdateRule::Add => Ok(()),
            UpdateRule::Sgd { lr } => check("sgd", "lr", lr, true),
            UpdateRule::Adagrad {
                lr,
                eps,
                initial_accumulator,
            } => {
                check("adagrad", "lr", lr, true)?;
                check("adagrad", "eps", eps, true)?;
                check("adagrad", "initial_accumulator", initial_accumulator, false)
            }
            UpdateRule::Ftrl {
                alpha,
                beta,
                l1,
                l2,
            } => {
                check("ftrl", "alpha", alpha, true)?;
                check("ftrl", "beta", beta, false)?;
                check("ftrl", "l1", l1, false)?;
                check("ftrl", "l2", l2, false)
            }
        }
    }
}

/// How a shard stores its slice of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Every row of the slice, allocated up front.
    #[default]
    Dense,
    /// Only rows that have been written (e.g. hashed u64 feature keys); absent rows read as
    /// their initial value.
    Sparse,
}

/// How a shard fills a table before the first update. Seeded initialisers depend only on
/// (seed, table, row, column), never on the shard layout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "init", rename_all = "lowercase")]
pub enum Init {
    Zeros,
    Normal {
        std: f32,
        seed: u64,
    },
    Uniform {
        low: f32,
        high: f32,
        seed: u64,
    },
    /// A dense layer, a row per output unit: columns `< fan_in` (the weights) uniform in
    /// `[-bound, bound]` (Glorot's `sqrt(6 / (fan_in + fan_out))`), the rest (the bias) 0.
    Glorot {
        bound: f32,
        fan_in: u32,
        seed: u64,
    },
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
    /// Dense (every row allocated) or sparse (rows stored once written). For a sparse table
    /// `rows` is the size of the key space (e.g. `u64::MAX` for hashed keys): keys are `< rows`.
    #[serde(default)]
    pub layout: Layout,
    /// How workers encode this table's pushed deltas (e.g. `topk:0.01,f16`); lossy chains keep
    /// what they did not send in a per-worker residual (error feedback).
    #[serde(default, with = "chain_as_string")]
    pub push_codec: CodecChain,
    /// How shards encode this table's pull replies: a value format only (`raw`, `f16`, `bf16`);
    /// pulls carry values, not deltas, so selection stages make no sense there.
    #[serde(default, with = "chain_as_string")]
    pub pull_codec: CodecChain,
}

/// A codec chain in JSON as its string form (`"topk:0.01,f16"`).
mod chain_as_string {
    use crate::codec::CodecChain;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &CodecChain, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CodecChain, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TableSpec {
    /// Checks what a shard needs to hold the table: width > 0, a valid rule, and zeros as the
    /// init of an `ftrl` table (its values are derived from z and n, which start at 0).
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 {
            return Err("width must be > 0".into());
        }
        self.rule.validate()?;
        self.push_codec
            .validate()
            .map_err(|e| format!("push codec: {e}"))?;
        if self.pull_codec.is_sparse() {
            return Err(format!(
                "pull codec {}: pulls carry values, not deltas, so only raw, f16 or bf16",
                self.pull_codec
            ));
        }
        if matches!(self.rule, UpdateRule::Ftrl { .. }) && self.init != Init::Zeros {
            return Err(format!(
                "rule ftrl needs init zeros (w is derived from z and n, which start at 0), got {:?}",
                self.init
            ));
        }
        Ok(())
    }
}

/// The job a worker runs: the app name and its settings, opaque to the server side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub app: String,
    pub clocks: u64,
    pub settings: serde_json::Value,
    /// Workers overlap communication with compute (push in the background, prefetch the next
    /// clock's rows); false makes every clock wait for its push.
    #[serde(default = "overlap_default")]
    pub overlap: bool,
    /// Reads may use rows pulled for the previous clock (`--reads overlapped`); false (the
    /// default): only rows pulled for the current clock.
    #[serde(default)]
    pub overlapped_reads: bool,
    /// Settings of the program that drives the workers (e.g. fault injection), opaque here.
    #[serde(default)]
    pub driver: serde_json::Value,
}

fn overlap_default() -> bool {
    true
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
    /// Checkpoints, restarts and worker failures.
    #[serde(default)]
    pub recovery: Recovery,
}

/// What the job does about failures: shard checkpoints (so a restarted shard loses nothing),
/// how long nodes wait for a dead shard to come back, and what a dead worker means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Shards checkpoint every this many clocks of their min clock (and at the end); 0: never,
    /// and a dead shard fails the job.
    pub checkpoint_every: u64,
    /// Checkpoints each shard keeps (>= 1). Workers keep their batches back to the oldest kept
    /// one, so a torn newest file costs nothing.
    pub keep: u32,
    /// How long the coordinator waits for a dead shard to register again, and nodes wait for
    /// its new address, before the job fails.
    pub restart_timeout_ms: u64,
    pub on_worker_failure: WorkerFailure,
    /// Identifies this run of the job: a checkpoint written by another run is refused.
    pub job_nonce: u64,
    /// For a shard: it replaces a dead one and must restore the latest checkpoint.
    pub resume: bool,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            checkpoint_every: 0,
            keep: 2,
            restart_timeout_ms: 60_000,
            on_worker_failure: WorkerFailure::Fail,
            job_nonce: 0,
            resume: false,
        }
    }
}

impl Recovery {
    /// Whether shards checkpoint, so that one can be restarted without losing updates.
    pub fn restartable(&self) -> bool {
        self.checkpoint_every > 0
    }
}

/// What a worker that dies (its connection lost, or its heartbeats missed) does to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerFailure {
    /// The job fails, naming the worker.
    #[default]
    Fail,
    /// The worker leaves every shard's clock vector (the others go on; SSP bounds are over the
    /// live workers) and its data share is dropped.
    Evict,
    /// The others wait (within the staleness bound) for the worker to register again with its
    /// id: it replays its clocks from the start, rebuilding its local state against the current
    /// model, while shards acknowledge and drop the batches they already applied; from the
    /// first clock they lack, its updates count again. Where the shared tables count the
    /// worker's local state (LDA's assignments), the worker replays from a log it kept in its
    /// state directory instead (`ps_apps::app::Rejoin`).
    Wait,
}

impl std::str::FromStr for WorkerFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(WorkerFailure::Fail),
            "evict" => Ok(WorkerFailure::Evict),
            "wait" => Ok(WorkerFailure::Wait),
            _ => Err(format!("expected fail, evict or wait, got {s:?}")),
        }
    }
}

impl std::fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerFailure::Fail => "fail",
            WorkerFailure::Evict => "evict",
            WorkerFailure::Wait => "wait",
        })
    }
}

/// Events of a running job, on the control streams ([`crate::Kind::Event`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    /// shard -> coordinator: a restarted shard restored its checkpoint; `worker_clocks[w]` is
    /// how many of worker w's clocks it holds (workers resend the rest).
    Restored {
        shard: u32,
        checkpoint_clock: u64,
        worker_clocks: Vec<u64>,
    },
    /// coordinator -> workers: shard `shard` is back at `addr` with `worker_clocks` applied.
    ShardRestarted {
        shard: u32,
        addr: String,
        worker_clocks: Vec<u64>,
    },
    /// coordinator -> shards: worker `worker` is gone; drop it from the clock vector.
    Evict { worker: u32 },
}

/// worker -> coordinator after each clock's push has been acknowledged by every shard.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClockReport {
    pub worker: u32,
    pub clock: u64,
    pub compute_s: f64,
    pub comm_s: f64,
    pub blocked_s: f64,
    /// Communication time that did not hold compute up: `comm_s - blocked_s`, at least 0.
    #[serde(default)]
    pub overlap_s: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// What `bytes_sent` would have been as raw f32 frames with listed keys and a separate
    /// clock frame per batch: the baseline for the compression ratio.
    #[serde(default)]
    pub bytes_logical: u64,
    /// The push part of `bytes_sent` (push and clock frames), and its raw f32 equivalent.
    #[serde(default)]
    pub push_bytes: u64,
    #[serde(default)]
    pub push_bytes_logical: u64,
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

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn events_and_recovery_round_trip_and_old_assignments_still_parse() {
        let ev = ControlEvent::ShardRestarted {
            shard: 1,
            addr: "127.0.0.1:9".into(),
            worker_clocks: vec![5, 6],
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains("\"event\":\"shard_restarted\""), "{json}");
        assert_eq!(serde_json::from_str::<ControlEvent>(&json).unwrap(), ev);
        let r = Recovery {
            checkpoint_every: 5,
            on_worker_failure: "evict".parse().unwrap(),
            ..Recovery::default()
        };
        let back: Recovery = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(back.restartable() && !Recovery::default().restartable());
        assert_eq!("wait".parse::<WorkerFailure>(), Ok(WorkerFailure::Wait));
        assert!("rejoin".parse::<WorkerFailure>().is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rule: UpdateRule, init: Init) -> TableSpec {
        TableSpec {
            id: 3,
            name: "w".into(),
            rows: u64::MAX,
            width: 1,
            rule,
            init,
            staleness: Some(1),
            layout: Layout::Sparse,
            push_codec: Default::default(),
            pull_codec: Default::default(),
        }
    }

    #[test]
    fn update_rules_round_trip_through_json() {
        let rules = [
            UpdateRule::Add,
            UpdateRule::Sgd { lr: 0.5 },
            UpdateRule::Adagrad {
                lr: 0.1,
                eps: 1e-8,
                initial_accumulator: 0.1,
            },
            UpdateRule::Ftrl {
                alpha: 0.05,
                beta: 1.0,
                l1: 0.5,
                l2: 0.25,
            },
        ];
        for r in rules {
            let json = serde_json::to_string(&r).unwrap();
            let back: UpdateRule = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r, "{json}");
        }
        // The wire shape is the tagged one the existing rules already use.
        assert_eq!(
            serde_json::to_string(&UpdateRule::Add).unwrap(),
            r#"{"rule":"add"}"#
        );
        let ftrl: UpdateRule =
            serde_json::from_str(r#"{"rule":"ftrl","alpha":0.1,"beta":1,"l1":2,"l2":0}"#).unwrap();
        assert_eq!(
            ftrl,
            UpdateRule::Ftrl {
                alpha: 0.1,
                beta: 1.0,
                l1: 2.0,
                l2: 0.0
            }
        );
        assert!(serde_json::from_str::<UpdateRule>(r#"{"rule":"ftrl","alpha":0.1}"#).is_err());
    }

    #[test]
    fn table_spec_without_layout_reads_as_dense() {
        let s = spec(UpdateRule::Add, Init::Zeros);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""layout":"sparse""#), "{json}");
        assert_eq!(serde_json::from_str::<TableSpec>(&json).unwrap(), s);
        let old = r#"{"id":1,"name":"t","rows":10,"width":2,"rule":{"rule":"add"},"init":{"init":"zeros"},"staleness":0}"#;
        let t: TableSpec = serde_json::from_str(old).unwrap();
        assert_eq!(t.layout, Layout::Dense);
    }

    #[test]
    fn rule_parameters_are_validated() {
        let ok = [
            UpdateRule::Add,
            UpdateRule::Sgd { lr: 0.1 },
            UpdateRule::Adagrad {
                lr: 0.1,
                eps: 1e-10,
                initial_accumulator: 0.0,
            },
            UpdateRule::Ftrl {
                alpha: 0.1,
                beta: 0.0,
                l1: 0.0,
                l2: 0.0,
            },
        ];
        for r in ok {
            assert_eq!(r.validate(), Ok(()), "{r:?}");
        }
        let bad = [
            (UpdateRule::Sgd { lr: 0.0 }, "lr"),
            (UpdateRule::Sgd { lr: f32::NAN }, "lr"),
            (
                UpdateRule::Adagrad {
                    lr: 0.1,
                    eps: 0.0,
                    initial_accumulator: 0.0,
                },
                "eps",
            ),
            (
                UpdateRule::Adagrad {
                    lr: 0.1,
                    eps: 1e-8,
                    initial_accumulator: -1.0,
                },
                "initial_accumulator",
            ),
            (
                UpdateRule::Ftrl {
                    alpha: 0.0,
                    beta: 1.0,
                    l1: 0.0,
                    l2: 0.0,
                },
                "alpha",
            ),
            (
                UpdateRule::Ftrl {
                    alpha: 0.1,
                    beta: -1.0,
                    l1: 0.0,
                    l2: 0.0,
                },
                "beta",
            ),
            (
                UpdateRule::Ftrl {
                    alpha: 0.1,
                    beta: 1.0,
                    l1: f32::INFINITY,
                    l2: 0.0,
                },
                "l1",
            ),
            (
                UpdateRule::Ftrl {
                    alpha: 0.1,
                    beta: 1.0,
                    l1: 0.0,
                    l2: -0.5,
                },
                "l2",
            ),
        ];
        for (r, field) in bad {
            let e = r.validate().unwrap_err();
            assert!(e.contains(field), "{r:?}: {e}");
        }
        let ftrl = UpdateRule::Ftrl {
            alpha: 0.1,
            beta: 1.0,
            l1: 1.0,
            l2: 0.0,
        };
        assert!(spec(ftrl, Init::Zeros).validate().is_ok());
        let e = spec(ftrl, Init::Normal { std: 0.1, seed: 1 })
            .validate()
            .unwrap_err();
        assert!(e.contains("zeros"), "{e}");
        let mut zero_width = spec(UpdateRule::Add, Init::Zeros);
        zero_width.width = 0;
        assert!(zero_width.validate().is_err());
    }
}
