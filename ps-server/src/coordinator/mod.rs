//! The coordinator: nodes register, it hands out ids and the shard map once everyone is there,
//! watches heartbeats and control streams, aggregates per-clock reports, and stops the job at the
//! end.
//!
//! Failures, as the job's [`Recovery`] says:
//! - a shard that dies, when shards checkpoint, is waited for: a process registering with its
//!   id gets the assignment with `resume` set, restores its latest checkpoint, and says what it
//!   holds (`ControlEvent::Restored`); the coordinator tells every worker where the shard is now
//!   and what it holds, and the workers resend the rest. If it is not back within the restart
//!   timeout, the job fails naming it. Without checkpoints a dead shard fails the job.
//! - a worker that dies is, under `evict`, removed from every shard's clock vector (the others
//!   go on; its data share is dropped) and listed in the result; under `fail` the job fails.
//!
//! The coordinator itself keeps its state in memory only: it is small (the job spec, the shard
//! map, ids, which nodes are live) but if the coordinator dies the job fails, and the user
//! starts it again (see README, Failures).

mod recovery;
mod register;
mod reports;
mod watch;

use crate::error::ServerError;
use crate::telemetry;
use ps_proto::{
    Assign, ClockSummary, ControlEvent, Done, Frame, JobResult, JobSpec, Kind, Limits, Recovery,
    Role, ShardMap, Shutdown, TableSpec,
};
use ps_transport::write_frame;
use register::{order_by_id, read_registration, refuse, Registrant};
use reports::ReportBook;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::info;
use watch::{spawn_watchers, NodeEvent, Tagged};

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub servers: u32,
    pub workers: u32,
    pub tables: Vec<TableSpec>,
    pub job: JobSpec,
    pub deterministic: bool,
    pub heartbeat: Duration,
    /// A node silent this long has failed.
    pub heartbeat_timeout: Duration,
    /// How long to wait for every node to register.
    pub register_timeout: Duration,
    pub limits: Limits,
    /// Checkpoints, restarts, worker failures.
    pub recovery: Recovery,
}

/// What the coordinator tells its caller while the job runs.
#[derive(Debug, Clone)]
pub enum CoordEvent {
    Registered {
        role: Role,
        /// The id the node asked for, if any.
        id: Option<u32>,
        host: String,
        pid: u32,
    },
    Started,
    Clock(ClockSummary),
    /// A shard died; the job waits for it to come back.
    ShardDown {
        shard: u32,
        why: String,
    },
    /// A restarted shard restored its checkpoint and the workers were told.
    ShardRestored {
        shard: u32,
        checkpoint_clock: u64,
    },
    /// A worker died; the job waits for it to register again.
    WorkerDown {
        worker: u32,
        why: String,
    },
    /// A worker registered again and replays its clocks.
    WorkerRejoined {
        worker: u32,
    },
    /// A worker died and was evicted.
    WorkerEvicted {
        worker: u32,
        why: String,
    },
    /// The job failed for this reason; sent before nodes are told to stop.
    Failed(String),
}

pub struct Coordinator {
    pub endpoint: quinn::Endpoint,
    pub config: CoordinatorConfig,
}

/// A node's process has exited, as a launcher that started it saw (`ps-cluster local`): the
/// coordinator treats it as the node's failure at once, instead of waiting for its heartbeats
/// to stop. Matched by role, id and process id, so a notice about a process that a
/// replacement has since succeeded is ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessExit {
    pub role: Role,
    pub id: u32,
    pub pid: u32,
    /// How it ended (an exit status, a signal).
    pub how: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeState {
    Alive,
    /// A shard that died at this instant, waiting for its replacement.
    Down(Instant),
    /// A replacement shard restoring its checkpoint, since this instant.
    Restoring(Instant),
    Evicted,
}

struct Node {
    role: Role,
    id: u32,
    reg: ps_proto::Register,
    conn: quinn::Connection,
    send: quinn::SendStream,
    state: NodeState,
    incarnation: u32,
    last_seen: Instant,
}

impl Node {
    fn name(&self) -> String {
        let role = match self.role {
            Role::Server => "shard",
            Role::Worker => "worker",
        };
        format!(
            "{role} {} (pid {} on {}, {})",
            self.id,
            self.reg.pid,
            self.reg.host,
            self.conn.remote_address()
        )
    }

    /// Sends a control frame, giving up after two seconds (a dead peer must not stall the job).
    async fn tell(&mut self, frame: &Frame) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), write_frame(&mut self.send, frame)).await;
    }
}

/// The running job's bookkeeping.
struct Job<'a> {
    cfg: &'a CoordinatorConfig,
    events: &'a mpsc::UnboundedSender<CoordEvent>,
    tx: mpsc::UnboundedSender<Tagged>,
    nodes: Vec<Node>,
    shard_map: ShardMap,
    done: HashMap<u32, Done>,
    /// Clock reports not summarised yet.
    reports: ReportBook,
    result: JobResult,
}

impl Coordinator {
    /// Runs the whole job. Returns when every worker is done or evicted (after telling every
    /// node to stop), or fails with a message naming the node that brought it down.
    pub async fn run(
        self,
        events: mpsc::UnboundedSender<CoordEvent>,
    ) -> Result<JobResult, ServerError> {
        self.run_watching(events, None).await
    }

    /// [`Coordinator::run`], also told of nodes' processes exiting (by the launcher that
    /// started them) on `exits`.
    pub async fn run_watching(
        self,
        events: mpsc::UnboundedSender<CoordEvent>,
        mut exits: Option<mpsc::UnboundedReceiver<ProcessExit>>,
    ) -> Result<JobResult, ServerError> {
        let cfg = &self.config;
        let started = Instant::now();
        crate::shard::validate_tables(&cfg.tables)?;
        let (nodes, shard_map) = self.register_all(&events).await?;
        let _ = events.send(CoordEvent::Started);

        let (tx, mut rx) = mpsc::unbounded_channel::<Tagged>();
        for (i, n) in nodes.iter().enumerate() {
            spawn_watchers(i, 0, n.conn.clone(), tx.clone(), cfg.limits);
        }
        // Late registrations: shards replacing dead ones.
        let (join_tx, mut join_rx) = mpsc::unbounded_channel::<Registrant>();
        let (ep, limits) = (self.endpoint.clone(), cfg.limits);
        let acceptor = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let join_tx = join_tx.clone();
                tokio::spawn(async move {
                    if let Some(r) = read_registration(incoming, &limits).await {
                        let _ = join_tx.send(r);
                    }
                });
            }
        });

        let mut job = Job {
            cfg,
            events: &events,
            tx,
            nodes,
            shard_map,
            done: HashMap::new(),
            reports: ReportBook::default(),
            result: JobResult::default(),
        };
        let mut tick = tokio::time::interval(cfg.heartbeat);
        let failure: Option<String> = loop {
            let outcome = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(t) => job.on_event(t).await,
                    None => Err("coordinator lost its event channel".into()),
                },
                Some(r) = join_rx.recv() => job.on_join(r).await,
                Some(x) = next_exit(&mut exits) => job.on_exit(x).await,
                _ = tick.tick() => job.on_tick().await,
            };
            match outcome {
                Ok(true) => break None,
                Ok(false) => {}
                Err(why) => break Some(why),
            }
        };
        acceptor.abort();

        if let Some(why) = &failure {
            let _ = events.send(CoordEvent::Failed(why.clone()));
        }
        let shutdown = match &failure {
            None => Shutdown {
                ok: true,
                reason: "job complete".into(),
            },
            Some(why) => Shutdown {
                ok: false,
                reason: why.clone(),
            },
        };
        let frame = Frame::control(Kind::Shutdown, &shutdown);
        for n in job
            .nodes
            .iter_mut()
            .filter(|n| n.state != NodeState::Evicted)
        {
            n.tell(&frame).await;
            let _ = n.send.finish();
        }
        // Give nodes a moment to read the shutdown before the connections go.
        let deadline = Instant::now() + Duration::from_secs(2);
        for n in &job.nodes {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, n.conn.closed()).await;
        }
        self.endpoint.close(0u32.into(), b"job over");
        if let Some(why) = failure {
            return Err(ServerError::NodeFailed(why));
        }
        let mut result = job.result;
        result.add_done(job.done.into_values().collect());
        result.wall_s = started.elapsed().as_secs_f64();
        Ok(result)
    }

    async fn register_all(
        &self,
        events: &mpsc::UnboundedSender<CoordEvent>,
    ) -> Result<(Vec<Node>, ShardMap), ServerError> {
        let cfg = &self.config;
        let total = (cfg.servers + cfg.workers) as usize;
        let mut servers: Vec<Registrant> = Vec::new();
        let mut workers: Vec<Registrant> = Vec::new();
        let deadline = tokio::time::Instant::now() + cfg.register_timeout;
        while servers.len() + workers.len() < total {
            let incoming = match tokio::time::timeout_at(deadline, self.endpoint.accept()).await {
                Ok(Some(i)) => i,
                Ok(None) => {
                    return Err(ServerError::Coordinator(
                        "endpoint closed while nodes registered".into(),
                    ))
                }
                Err(_) => {
                    return Err(ServerError::Coordinator(format!(
                        "only {} of {} shards and {} of {} workers registered within {:?}",
                        servers.len(),
                        cfg.servers,
                        workers.len(),
                        cfg.workers,
                        cfg.register_timeout
                    )))
                }
            };
            let Some((reg, conn, mut send)) = read_registration(incoming, &cfg.limits).await else {
                continue;
            };
            let (list, cap) = match reg.role {
                Role::Server => (&mut servers, cfg.servers),
                Role::Worker => (&mut workers, cfg.workers),
            };
            let id_taken = reg.requested_id.is_some_and(|id| {
                id >= cap || list.iter().any(|(r, _, _)| r.requested_id == Some(id))
            });
            if id_taken {
                let why = format!(
                    "requested id {:?} is out of range or taken",
                    reg.requested_id
                );
                refuse(&mut send, &why).await;
                continue;
            }
            if list.len() as u32 >= cap || (reg.role == Role::Server && reg.listen_addr.is_none()) {
                let why = if list.len() as u32 >= cap {
                    "the job already has all its nodes of that role"
                } else {
                    "a shard must give its listen address"
                };
                refuse(&mut send, why).await;
                continue;
            }
            info!(role = ?reg.role, host = %reg.host, pid = reg.pid, "registered");
            let _ = events.send(CoordEvent::Registered {
                role: reg.role,
                id: reg.requested_id,
                host: reg.host.clone(),
                pid: reg.pid,
            });
            let role = match reg.role {
                Role::Server => "server",
                Role::Worker => "worker",
            };
            list.push((reg, conn, send));
            telemetry::coordinator_nodes(role, list.len());
        }
        let servers = order_by_id(servers, cfg.servers);
        let workers = order_by_id(workers, cfg.workers);
        let shard_map = ShardMap {
            shards: servers
                .iter()
                .map(|(r, _, _)| r.listen_addr.clone().unwrap_or_default())
                .collect(),
            tables: cfg.tables.clone(),
        };
        let mut nodes = Vec::new();
        for (role, list) in [(Role::Server, servers), (Role::Worker, workers)] {
            for (id, (reg, conn, mut send)) in list.into_iter().enumerate() {
                let assign = assignment(cfg, role, id as u32, &shard_map, false);
                write_frame(&mut send, &Frame::control(Kind::Assign, &assign)).await?;
                nodes.push(Node {
                    role,
                    id: id as u32,
                    reg,
                    conn,
                    send,
                    state: NodeState::Alive,
                    incarnation: 0,
                    last_seen: Instant::now(),
                });
            }
        }
        Ok((nodes, shard_map))
    }
}

fn assignment(
    cfg: &CoordinatorConfig,
    role: Role,
    id: u32,
    shard_map: &ShardMap,
    resume: bool,
) -> Assign {
    Assign {
        role,
        id,
        num_servers: cfg.servers,
        num_workers: cfg.workers,
        deterministic: cfg.deterministic,
        shard_map: shard_map.clone(),
        job: cfg.job.clone(),
        heartbeat_ms: cfg.heartbeat.as_millis() as u64,
        max_frame_bytes: cfg.limits.max_frame_bytes,
        recovery: Recovery {
            resume,
            ..cfg.recovery.clone()
        },
    }
}

/// What the loop does next: `Ok(true)` ends the job, `Err` fails it.
type Step = Result<bool, String>;

impl Job<'_> {
    fn evicted(&self) -> usize {
        self.result.evicted_workers.len()
    }

    /// Whether every worker is done or evicted.
    fn finished(&self) -> bool {
        self.done.len() + self.evicted() >= self.cfg.workers as usize
    }

    async fn on_event(&mut self, t: Tagged) -> Step {
        let Some(node) = self.nodes.get_mut(t.slot) else {
            return Ok(false);
        };
        if node.incarnation != t.incarnation || node.state == NodeState::Evicted {
            return Ok(false);
        }
        match t.event {
            NodeEvent::Heartbeat => {
                node.last_seen = Instant::now();
                telemetry::coordinator_heartbeat();
            }
            NodeEvent::Report(r) => {
                telemetry::coordinator_report(r.worker, r.clock);
                self.reports.add(r);
                self.flush_reports();
            }
            NodeEvent::Done(d) => {
                self.done.insert(d.worker, d);
                return Ok(self.finished());
            }
            NodeEvent::Event(ControlEvent::Restored {
                shard,
                checkpoint_clock,
                worker_clocks,
            }) if node.role == Role::Server && node.id == shard => {
                node.state = NodeState::Alive;
                node.last_seen = Instant::now();
                let addr = node.reg.listen_addr.clone().unwrap_or_default();
                self.result.restarts += 1;
                info!(shard, checkpoint_clock, %addr, "shard restored; telling the workers");
                let ev = ControlEvent::ShardRestarted {
                    shard,
                    addr,
                    worker_clocks,
                };
                let frame = Frame::control(Kind::Event, &ev);
                for w in self
                    .nodes
                    .iter_mut()
                    .filter(|n| n.role == Role::Worker && n.state != NodeState::Evicted)
                {
                    w.tell(&frame).await;
                }
                let _ = self.events.send(CoordEvent::ShardRestored {
                    shard,
                    checkpoint_clock,
                });
            }
            NodeEvent::Event(other) => {
                let why = format!("sent an unexpected event {other:?}");
                return self.node_failed(t.slot, why).await;
            }
            NodeEvent::Lost(why) => return self.node_failed(t.slot, why).await,
        }
        Ok(false)
    }

    /// Summarises every clock all live workers have reported, in clock order.
    fn flush_reports(&mut self) {
        let live = self.cfg.workers as usize - self.evicted();
        for s in self.reports.complete(live) {
            telemetry::coordinator_clock(&s);
            self.result.add_clock(s.clone());
            let _ = self.events.send(CoordEvent::Clock(s));
        }
    }
}

/// The next process exit, if a launcher tells of them; never, otherwise (or once it is gone).
async fn next_exit(
    exits: &mut Option<mpsc::UnboundedReceiver<ProcessExit>>,
) -> Option<ProcessExit> {
    if let Some(rx) = exits {
        if let Some(x) = rx.recv().await {
            return Some(x);
        }
        *exits = None;
    }
    std::future::pending().await
}
