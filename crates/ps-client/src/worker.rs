//! `Worker`: a worker process's membership of a job. `Worker::join` registers with the
//! coordinator, receives the assignment (worker id, shard map, tables, the job's settings),
//! connects to every shard, sends heartbeats, forwards each clock's report, and watches for the
//! coordinator's shutdown; `Worker::finish` sends the final figures and waits for the end of the
//! job. In between, [`Worker::client`] is the table API.

use crate::client::{lock, ClientConfig, PsClient};
use crate::error::ClientError;
use ps_proto::{Assign, ControlEvent, Done, Frame, Kind, Limits, Register, Role, Shutdown};
use ps_transport::node::{host_name, next_control, register, spawn_heartbeats, Control};
use ps_transport::{
    make_client_endpoint, write_frame, ClusterIdentity, EndpointOptions, TransportError,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How to join a job.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The coordinator's address.
    pub coordinator: SocketAddr,
    /// This node's certificate and key, and the cluster CA.
    pub identity: ClusterIdentity,
    /// The worker id to ask for (default: the next free one).
    pub requested_id: Option<u32>,
    /// QUIC settings: the name to check in peers' certificates, loopback tuning, link emulation.
    pub endpoint: EndpointOptions,
}

impl WorkerOptions {
    /// Options for `coordinator` with `identity`, tuned for loopback when the coordinator is on
    /// this machine.
    pub fn new(coordinator: SocketAddr, identity: ClusterIdentity) -> WorkerOptions {
        let endpoint = if coordinator.ip().is_loopback() {
            EndpointOptions::for_loopback()
        } else {
            EndpointOptions::default()
        };
        WorkerOptions {
            coordinator,
            identity,
            requested_id: None,
            endpoint,
        }
    }
}

/// A worker's membership of a job; see the module docs.
pub struct Worker {
    rt: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    assign: Assign,
    client: Option<PsClient>,
    frames_tx: mpsc::UnboundedSender<Frame>,
    writer: tokio::task::JoinHandle<()>,
    forwarder: tokio::task::JoinHandle<()>,
    heartbeats: tokio::task::JoinHandle<()>,
    shutdown: oneshot::Receiver<Result<Shutdown, TransportError>>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Worker {
    /// Registers with the coordinator and connects to every shard. Returns once the job has
    /// started (every node registered).
    pub fn join(opts: WorkerOptions) -> Result<Worker, ClientError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| ClientError::Runtime(e.to_string()))?;
        let limits = Limits::default();
        let endpoint = {
            let _guard = rt.enter();
            make_client_endpoint(&opts.identity, &opts.endpoint)?
        };
        let reg = Register {
            role: Role::Worker,
            listen_addr: None,
            host: host_name(),
            pid: std::process::id(),
            requested_id: opts.requested_id,
        };
        let registration = rt.block_on(register(
            &endpoint,
            opts.coordinator,
            &opts.endpoint.server_name,
            reg,
            &limits,
        ))?;
        let assign = registration.assign.clone();
        let conn = registration.conn.clone();
        let heartbeats = {
            let _guard = rt.enter();
            spawn_heartbeats(
                conn.clone(),
                assign.id,
                Duration::from_millis(assign.heartbeat_ms.max(10)),
            )
        };

        // Outgoing control frames (reports, done) on one unidirectional stream.
        let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Frame>();
        let mut uni = rt
            .block_on(conn.open_uni())
            .map_err(|e| TransportError::Stream(format!("opening the report stream: {e}")))?;
        let writer = rt.spawn(async move {
            while let Some(f) = frames_rx.recv().await {
                if write_frame(&mut uni, &f).await.is_err() {
                    break;
                }
            }
            let _ = uni.finish();
            // Keep the stream object alive until its data is acknowledged.
            let _ = uni.stopped().await;
        });

        let mut cfg = ClientConfig::new(assign.id, assign.num_workers, assign.shard_map.clone());
        cfg.server_name = opts.endpoint.server_name.clone();
        cfg.limits.max_frame_bytes = assign.max_frame_bytes;
        cfg.overlap = assign.job.overlap;
        cfg.reads = if assign.job.overlapped_reads {
            ps_ssp::Reads::Overlapped
        } else {
            ps_ssp::Reads::Fresh
        };
        cfg.restartable = assign.recovery.restartable();
        cfg.restart_wait = Duration::from_millis(assign.recovery.restart_timeout_ms);
        cfg.max_frame_body = cfg.max_frame_body.min(assign.max_frame_bytes / 2).max(4096);
        let mut client = PsClient::connect(rt.handle().clone(), &endpoint, cfg)?;

        // The coordinator's events and shutdown. A restarted shard is brought back (its
        // missing batches resent) while compute goes on; a failure stops every operation of
        // the client at once (a read parked on a shard would otherwise wait for a worker that
        // is gone).
        let failure = Arc::new(Mutex::new(None));
        let (shutdown_tx, shutdown) = oneshot::channel();
        let (shared, ep, slot) = (client.shared.clone(), endpoint.clone(), failure.clone());
        let restarts = client.restarts();
        let mut control = registration.control_recv;
        rt.spawn(async move {
            let links = restarts.links.clone();
            let fail = Arc::new(move |why: String| {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                lock(&shared).failure.get_or_insert(why.clone());
                links.fail_all(&why);
            });
            let outcome = loop {
                match next_control(&mut control, &limits).await {
                    Ok(Control::Event(ControlEvent::ShardRestarted {
                        shard,
                        addr,
                        worker_clocks,
                    })) => {
                        let (r, fail) = (restarts.clone(), fail.clone());
                        tokio::spawn(async move {
                            if let Err(e) = r.shard_restarted(shard, &addr, &worker_clocks).await {
                                fail(format!("bringing back shard {shard}: {e}"));
                            }
                        });
                    }
                    Ok(Control::Event(other)) => {
                        tracing::warn!("ignoring an unexpected event: {other:?}")
                    }
                    Ok(Control::Shutdown(s)) => break Ok(s),
                    Err(e) => break Err(e),
                }
            };
            match &outcome {
                Ok(s) if !s.ok => {
                    fail(format!("job failed: {}", s.reason));
                    ep.close(1u32.into(), b"job failed");
                }
                Ok(_) => {}
                Err(e) => {
                    // The coordinator is gone: the job cannot end well.
                    fail(format!("job failed: {e}"));
                    ep.close(1u32.into(), b"coordinator lost");
                }
            }
            let _ = shutdown_tx.send(outcome);
        });

        let mut reports = client
            .take_reports()
            .ok_or_else(|| ClientError::Runtime("report channel taken".into()))?;
        let tx = frames_tx.clone();
        let forwarder = rt.spawn(async move {
            while let Some(r) = reports.recv().await {
                if tx.send(Frame::control(Kind::Report, &r)).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            rt,
            endpoint,
            conn,
            assign,
            client: Some(client),
            frames_tx,
            writer,
            forwarder,
            heartbeats,
            shutdown,
            failure,
        })
    }

    /// What the coordinator assigned: worker id, worker count, shard map, the job.
    pub fn assignment(&self) -> &Assign {
        &self.assign
    }

    pub fn id(&self) -> u32 {
        self.assign.id
    }

    pub fn num_workers(&self) -> u32 {
        self.assign.num_workers
    }

    /// The table API.
    pub fn client(&mut self) -> &mut PsClient {
        // Present until `finish` consumes the worker.
        self.client.as_mut().expect("the client lives until finish")
    }

    /// Why the coordinator failed the job, once it has.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for every push, sends the final figures, and waits for the coordinator to end the
    /// job (up to a minute). Fails if the coordinator failed the job.
    pub fn finish(mut self, done: Done) -> Result<(), ClientError> {
        if let Some(c) = self.client.as_mut() {
            c.flush()?;
        }
        // Reports of the last clocks go out before Done.
        drop(self.client.take());
        let _ = self.rt.block_on(&mut self.forwarder);
        let _ = self.frames_tx.send(Frame::control(Kind::Done, &done));
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.frames_tx, tx));
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), &mut self.shutdown).await
        });
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), &mut self.writer).await
        });
        self.heartbeats.abort();
        self.conn.close(0u32.into(), b"done");
        let ep = self.endpoint.clone();
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await })
            .ok();
        match outcome {
            Ok(Ok(Ok(s))) if s.ok => Ok(()),
            Ok(Ok(Ok(s))) => Err(ClientError::JobFailed(s.reason)),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(_)) => Err(ClientError::JobFailed("lost the shutdown watcher".into())),
            Err(_) => Err(ClientError::JobFailed(
                "no shutdown from the coordinator within 60 s of finishing".into(),
            )),
        }
    }
}
