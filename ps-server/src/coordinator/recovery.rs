//! What the coordinator does when a node fails or registers while the job runs: a dead shard
//! is waited for (when shards checkpoint) and its replacement assigned with `resume`; a dead
//! worker is evicted, waited for, or fails the job, as `--on-worker-failure` says; nodes silent
//! past the heartbeat timeout count as dead; a node not back within the restart timeout fails
//! the job.

use super::register::{refuse, Registrant};
use super::watch::spawn_watchers;
use super::{assignment, CoordEvent, Job, Node, NodeState, ProcessExit, Step};
use crate::telemetry;
use ps_proto::{ControlEvent, Frame, Kind, Role, Shutdown, WorkerFailure};
use ps_transport::write_frame;
use std::time::{Duration, Instant};
use tracing::{info, warn};

impl Job<'_> {
    /// Node `slot` died and the job waits for it: a shard to restart from its checkpoint, or a
    /// worker (under `wait`) to register again.
    fn declare_down(&mut self, slot: usize, why: String) -> Step {
        let n = &mut self.nodes[slot];
        let (role, outcome, waits_for) = match n.role {
            Role::Server => ("server", "restarted", "to restart from its checkpoint"),
            Role::Worker => ("worker", "waited", "to register again"),
        };
        warn!("{} failed: {why}; waiting for it {waits_for}", n.name());
        telemetry::coordinator_failure(role, outcome);
        n.state = NodeState::Down(Instant::now());
        n.conn.close(1u32.into(), b"declared dead");
        let event = match n.role {
            Role::Server => CoordEvent::ShardDown { shard: n.id, why },
            Role::Worker => CoordEvent::WorkerDown { worker: n.id, why },
        };
        let _ = self.events.send(event);
        Ok(false)
    }

    /// A launcher saw a node's process exit: that node has failed (see [`ProcessExit`]).
    pub(super) async fn on_exit(&mut self, x: ProcessExit) -> Step {
        let slot = self
            .nodes
            .iter()
            .position(|n| n.role == x.role && n.id == x.id && n.reg.pid == x.pid);
        match slot {
            Some(slot) => {
                let why = format!("its process {} exited ({})", x.pid, x.how);
                self.node_failed(slot, why).await
            }
            None => Ok(false),
        }
    }

    pub(super) async fn node_failed(&mut self, slot: usize, why: String) -> Step {
        let recovery = &self.cfg.recovery;
        let n = &mut self.nodes[slot];
        let name = n.name();
        match (n.role, n.state) {
            (Role::Worker, _) if self.done.contains_key(&n.id) => Ok(false),
            (_, NodeState::Evicted | NodeState::Down(_)) => Ok(false),
            (Role::Server, _) if recovery.restartable() => self.declare_down(slot, why),
            (Role::Worker, _) if recovery.on_worker_failure == WorkerFailure::Wait => {
                self.declare_down(slot, why)
            }
            (Role::Worker, _) if recovery.on_worker_failure == WorkerFailure::Evict => {
                let worker = n.id;
                warn!("{name} failed: {why}; evicting it");
                telemetry::coordinator_failure("worker", "evicted");
                n.state = NodeState::Evicted;
                n.tell(&Frame::control(
                    Kind::Shutdown,
                    &Shutdown {
                        ok: false,
                        reason: format!("evicted: {why}"),
                    },
                ))
                .await;
                n.conn.close(1u32.into(), b"evicted");
                self.result.evicted_workers.push(worker);
                if self.evicted() >= self.cfg.workers as usize {
                    return Err(format!("every worker failed; the last, {name}: {why}"));
                }
                let frame = Frame::control(Kind::Event, &ControlEvent::Evict { worker });
                for s in self.nodes.iter_mut().filter(|s| s.role == Role::Server) {
                    if s.state == NodeState::Alive || matches!(s.state, NodeState::Restoring(_)) {
                        s.tell(&frame).await;
                    }
                }
                let _ = self.events.send(CoordEvent::WorkerEvicted { worker, why });
                self.flush_reports();
                Ok(self.finished())
            }
            _ => Err(format!("{name} failed: {why}")),
        }
    }

    /// A node registering while the job runs: a shard replacing a dead one, a worker coming
    /// back under `wait`, or refused.
    pub(super) async fn on_join(&mut self, (reg, conn, mut send): Registrant) -> Step {
        let cfg = self.cfg;
        if reg.role == Role::Worker && cfg.recovery.on_worker_failure == WorkerFailure::Wait {
            return self.worker_rejoins(reg, conn, send).await;
        }
        if reg.role != Role::Server || !cfg.recovery.restartable() {
            refuse(
                &mut send,
                "the job is running: only a shard replacing a dead one may join, and only when shards checkpoint",
            )
            .await;
            return Ok(false);
        }
        let Some(addr) = reg.listen_addr.clone() else {
            refuse(&mut send, "a shard must give its listen address").await;
            return Ok(false);
        };
        // The shard asked for, or the first one down.
        let slot = self.nodes.iter().position(|n| {
            n.role == Role::Server
                && match reg.requested_id {
                    Some(id) => n.id == id,
                    None => matches!(n.state, NodeState::Down(_)),
                }
        });
        let Some(slot) = slot else {
            refuse(
                &mut send,
                "no shard of that id is waiting for a replacement",
            )
            .await;
            return Ok(false);
        };
        let id = self.nodes[slot].id;
        self.shard_map.shards[id as usize] = addr.clone();
        let assign = assignment(cfg, Role::Server, id, &self.shard_map, true);
        if let Err(e) = write_frame(&mut send, &Frame::control(Kind::Assign, &assign)).await {
            warn!("replacement for shard {id} went away: {e}");
            return Ok(false);
        }
        // The shard's clock vector must leave out workers evicted meanwhile.
        for w in &self.result.evicted_workers {
            let frame = Frame::control(Kind::Event, &ControlEvent::Evict { worker: *w });
            let _ = write_frame(&mut send, &frame).await;
        }
        info!(shard = id, %addr, pid = reg.pid, "a replacement shard registered");
        let state = NodeState::Restoring(Instant::now());
        self.replace(slot, Role::Server, reg, conn, send, state);
        Ok(false)
    }

    /// A new process takes node `slot` (same role and id): the old connection is closed, the
    /// incarnation moves on (so the old watchers' reports are ignored) and new watchers start.
    fn replace(
        &mut self,
        slot: usize,
        role: Role,
        reg: ps_proto::Register,
        conn: quinn::Connection,
        send: quinn::SendStream,
        state: NodeState,
    ) {
        let old = &mut self.nodes[slot];
        if old.state == NodeState::Alive {
            warn!(
                "{} registered again: its old process is taken as dead",
                old.name()
            );
        }
        old.conn.close(1u32.into(), b"replaced");
        let (id, incarnation) = (old.id, old.incarnation + 1);
        *old = Node {
            role,
            id,
            reg,
            conn: conn.clone(),
            send,
            state,
            incarnation,
            last_seen: Instant::now(),
        };
        spawn_watchers(slot, incarnation, conn, self.tx.clone(), self.cfg.limits);
    }

    /// A worker registering again under `wait`: it takes the slot of the dead one with its id
    /// (or the first dead one) and replays its clocks (see [`WorkerFailure::Wait`]).
    async fn worker_rejoins(
        &mut self,
        reg: ps_proto::Register,
        conn: quinn::Connection,
        mut send: quinn::SendStream,
    ) -> Step {
        let slot = self.nodes.iter().position(|n| {
            n.role == Role::Worker
                && !self.done.contains_key(&n.id)
                && match reg.requested_id {
                    Some(id) => n.id == id,
                    None => matches!(n.state, NodeState::Down(_)),
                }
        });
        let Some(slot) = slot else {
            refuse(&mut send, "no worker of that id is waiting to rejoin").await;
            return Ok(false);
        };
        let id = self.nodes[slot].id;
        let assign = assignment(self.cfg, Role::Worker, id, &self.shard_map, true);
        if let Err(e) = write_frame(&mut send, &Frame::control(Kind::Assign, &assign)).await {
            warn!("returning worker {id} went away: {e}");
            return Ok(false);
        }
        info!(
            worker = id,
            pid = reg.pid,
            "a worker registered again; it replays its clocks"
        );
        self.replace(slot, Role::Worker, reg, conn, send, NodeState::Alive);
        self.result.rejoins += 1;
        telemetry::coordinator_failure("worker", "rejoined");
        let _ = self.events.send(CoordEvent::WorkerRejoined { worker: id });
        Ok(false)
    }

    pub(super) async fn on_tick(&mut self) -> Step {
        let now = Instant::now();
        let restart = Duration::from_millis(self.cfg.recovery.restart_timeout_ms);
        for slot in 0..self.nodes.len() {
            let n = &self.nodes[slot];
            let waiting = match n.state {
                NodeState::Down(t) | NodeState::Restoring(t) => Some(t),
                _ => None,
            };
            if let Some(since) = waiting {
                if now.duration_since(since) > restart {
                    let role = match n.role {
                        Role::Server => "shard",
                        Role::Worker => "worker",
                    };
                    return Err(format!(
                        "{role} {} failed and did not come back within {:.0}s",
                        n.id,
                        restart.as_secs_f64()
                    ));
                }
            }
            let silent = now.duration_since(n.last_seen);
            let watched = n.state == NodeState::Alive
                && !(n.role == Role::Worker && self.done.contains_key(&n.id));
            if watched && silent > self.cfg.heartbeat_timeout {
                let why = format!("missed heartbeats for {:.1}s", silent.as_secs_f64());
                let step = self.node_failed(slot, why).await;
                if !matches!(step, Ok(false)) {
                    return step;
                }
            }
        }
        Ok(false)
    }
}
