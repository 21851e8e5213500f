//! The coordinator: nodes register, it hands out ids and the shard map once everyone is there,
//! watches heartbeats and control streams, aggregates per-clock reports, and stops the job at the
//! end, or fails it, naming the node, when a node dies before it is done.

use crate::error::ServerError;
use crate::telemetry;
use ps_proto::{
    Assign, ClockReport, ClockSummary, Done, Frame, JobResult, JobSpec, Kind, Limits, Register,
    Role, ShardMap, Shutdown, TableSpec,
};
use ps_transport::{read_frame, write_frame, FrameRead};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

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
    /// The job failed for this reason; sent before nodes are told to stop.
    Failed(String),
}

pub struct Coordinator {
    pub endpoint: quinn::Endpoint,
    pub config: CoordinatorConfig,
}

struct Node {
    role: Role,
    id: u32,
    reg: Register,
    conn: quinn::Connection,
    send: quinn::SendStream,
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
}

enum NodeEvent {
    Report(ClockReport),
    Done(Done),
    Heartbeat(usize),
    Lost(usize, String),
}

impl Coordinator {
    /// Runs the whole job. Returns when every worker is done (after telling every node to stop),
    /// or fails when a node dies, with a message naming it.
    pub async fn run(
        self,
        events: mpsc::UnboundedSender<CoordEvent>,
    ) -> Result<JobResult, ServerError> {
        let cfg = &self.config;
        let started = Instant::now();
        crate::shard::validate_tables(&cfg.tables)?;
        let mut nodes = self.register_all(&events).await?;
        let _ = events.send(CoordEvent::Started);

        let (tx, mut rx) = mpsc::unbounded_channel::<NodeEvent>();
        for (i, n) in nodes.iter().enumerate() {
            spawn_watchers(i, n.conn.clone(), tx.clone(), cfg.limits);
        }

        let mut last_seen: Vec<Instant> = vec![Instant::now(); nodes.len()];
        let mut done: HashMap<u32, Done> = HashMap::new();
        let mut pending: BTreeMap<u64, Vec<ClockReport>> = BTreeMap::new();
        let mut result = JobResult::default();
        let mut tick = tokio::time::interval(cfg.heartbeat);
        let failure: Option<String> = loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(NodeEvent::Report(r)) => {
                        let c = r.clock;
                        telemetry::coordinator_report(r.worker, c);
                        let list = pending.entry(c).or_default();
                        list.push(r);
                        while let Some(entry) = pending.first_entry() {
                            if entry.get().len() < cfg.workers as usize { break; }
                            let reports = entry.remove();
                            let s = ClockSummary::from_reports(&reports, cfg.workers);
                            telemetry::coordinator_clock(&s);
                            result.clocks.push(s.clone());
                            let _ = events.send(CoordEvent::Clock(s));
                        }
                    }
                    Some(NodeEvent::Done(d)) => {
                        done.insert(d.worker, d);
                        if done.len() == cfg.workers as usize { break None; }
                    }
                    Some(NodeEvent::Heartbeat(i)) => {
                        last_seen[i] = Instant::now();
                        telemetry::coordinator_heartbeat();
                    }
                    Some(NodeEvent::Lost(i, why)) => {
                        let n = &nodes[i];
                        if n.role == Role::Worker && done.contains_key(&n.id) { continue; }
                        break Some(format!("{} failed: {why}", n.name()));
                    }
                    None => break Some("coordinator lost its event channel".into()),
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    if let Some((i, _)) = last_seen.iter().enumerate().find(|(i, t)| {
                        let n = &nodes[*i];
                        !(n.role == Role::Worker && done.contains_key(&n.id)) && now.duration_since(**t) > cfg.heartbeat_timeout
                    }) {
                        break Some(format!("{} missed heartbeats for {:.1}s", nodes[i].name(), now.duration_since(last_seen[i]).as_secs_f64()));
                    }
                }
            }
        };

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
        for n in nodes.iter_mut() {
            let _ = write_frame(&mut n.send, &frame).await;
            let _ = n.send.finish();
        }
        // Give nodes a moment to read the shutdown before the connections go.
        let deadline = Instant::now() + Duration::from_secs(2);
        for n in &nodes {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, n.conn.closed()).await;
        }
        self.endpoint.close(0u32.into(), b"job over");
        if let Some(why) = failure {
            return Err(ServerError::NodeFailed(why));
        }
        result.add_done(done.into_values().collect());
        result.wall_s = started.elapsed().as_secs_f64();
        Ok(result)
    }

    async fn register_all(
        &self,
        events: &mpsc::UnboundedSender<CoordEvent>,
    ) -> Result<Vec<Node>, ServerError> {
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
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    warn!("rejected connection: {e}");
                    continue;
                }
            };
            let registered = tokio::time::timeout(Duration::from_secs(10), async {
                let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
                match read_frame(&mut recv, &cfg.limits)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    FrameRead::Frame(f) => {
                        let reg: Register =
                            f.parse_control(Kind::Register).map_err(|e| e.to_string())?;
                        Ok::<_, String>((reg, send))
                    }
                    FrameRead::End => Err("control stream ended before registering".into()),
                }
            })
            .await;
            let (reg, mut send) = match registered {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    warn!("{}: bad registration: {e}", conn.remote_address());
                    conn.close(1u32.into(), b"bad registration");
                    continue;
                }
                Err(_) => {
                    conn.close(1u32.into(), b"registration timed out");
                    continue;
                }
            };
            let list = match reg.role {
                Role::Server => &mut servers,
                Role::Worker => &mut workers,
            };
            let cap = match reg.role {
                Role::Server => cfg.servers,
                Role::Worker => cfg.workers,
            };
            let id_taken = reg.requested_id.is_some_and(|id| {
                id >= cap || list.iter().any(|(r, _, _)| r.requested_id == Some(id))
            });
            if id_taken {
                let why = format!(
                    "requested id {:?} is out of range or taken",
                    reg.requested_id
                );
                let _ = write_frame(
                    &mut send,
                    &Frame::error(ps_proto::ErrorCode::Protocol, &why),
                )
                .await;
                let _ = send.finish();
                continue;
            }
            if list.len() as u32 >= cap || (reg.role == Role::Server && reg.listen_addr.is_none()) {
                let why = if list.len() as u32 >= cap {
                    "the job already has all its nodes of that role"
                } else {
                    "a shard must give its listen address"
                };
                let _ =
                    write_frame(&mut send, &Frame::error(ps_proto::ErrorCode::Protocol, why)).await;
                let _ = send.finish();
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
                let assign = Assign {
                    role,
                    id: id as u32,
                    num_servers: cfg.servers,
                    num_workers: cfg.workers,
                    deterministic: cfg.deterministic,
                    shard_map: shard_map.clone(),
                    job: cfg.job.clone(),
                    heartbeat_ms: cfg.heartbeat.as_millis() as u64,
                    max_frame_bytes: cfg.limits.max_frame_bytes,
                };
                write_frame(&mut send, &Frame::control(Kind::Assign, &assign)).await?;
                nodes.push(Node {
                    role,
                    id: id as u32,
                    reg,
                    conn,
                    send,
                });
            }
        }
        Ok(nodes)
    }
}

type Registrant = (Register, quinn::Connection, quinn::SendStream);

/// Orders registrants by id: requested ids (checked unique and in range at registration) first
/// claim their slot, the rest fill the free ids in registration order.
fn order_by_id(list: Vec<Registrant>, n: u32) -> Vec<Registrant> {
    let ids = assign_ids(
        &list
            .iter()
            .map(|(r, _, _)| r.requested_id)
            .collect::<Vec<_>>(),
        n,
    );
    let mut slots: Vec<(u32, Registrant)> = ids.into_iter().zip(list).collect();
    slots.sort_by_key(|(id, _)| *id);
    slots.into_iter().map(|(_, r)| r).collect()
}

/// Ids for registrants that requested `requested` (unique, < n) or nothing.
fn assign_ids(requested: &[Option<u32>], n: u32) -> Vec<u32> {
    let mut free = (0..n).filter(|id| !requested.contains(&Some(*id)));
    requested
        .iter()
        .map(|r| r.unwrap_or_else(|| free.next().unwrap_or(u32::MAX)))
        .collect()
}

/// Reads a node's control stream (reports, done) and heartbeat datagrams.
fn spawn_watchers(
    i: usize,
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<NodeEvent>,
    limits: Limits,
) {
    let c = conn.clone();
    let t = tx.clone();
    tokio::spawn(async move {
        loop {
            match c.read_datagram().await {
                Ok(_) => {
                    if t.send(NodeEvent::Heartbeat(i)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = t.send(NodeEvent::Lost(i, format!("connection lost: {e}")));
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        // Reports and Done travel on a second stream the node opens after its assignment.
        let mut recv = match conn.accept_uni().await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(NodeEvent::Lost(i, format!("connection lost: {e}")));
                return;
            }
        };
        loop {
            match read_frame(&mut recv, &limits).await {
                Ok(FrameRead::Frame(f)) => {
                    let ev = match f.header.kind {
                        Kind::Report => f
                            .parse_control::<ClockReport>(Kind::Report)
                            .map(NodeEvent::Report),
                        Kind::Done => f.parse_control::<Done>(Kind::Done).map(NodeEvent::Done),
                        other => Err(ps_proto::ProtoError::Protocol(format!(
                            "unexpected {} frame",
                            other.name()
                        ))),
                    };
                    match ev {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(NodeEvent::Lost(i, format!("sent a bad report: {e}")));
                            return;
                        }
                    }
                }
                Ok(FrameRead::End) => return,
                Err(e) => {
                    let _ = tx.send(NodeEvent::Lost(i, format!("report stream failed: {e}")));
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::assign_ids;

    #[test]
    fn requested_ids_are_kept_and_the_rest_fill_gaps() {
        assert_eq!(
            assign_ids(&[None, Some(0), None, Some(3)], 4),
            vec![1, 0, 2, 3]
        );
        assert_eq!(assign_ids(&[None, None], 2), vec![0, 1]);
        assert_eq!(assign_ids(&[Some(1), Some(0)], 2), vec![1, 0]);
    }
}
