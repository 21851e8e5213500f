//! Cluster tests over real QUIC on loopback with mutual TLS: the SSP read guarantee and bound
//! with a deliberately slow worker, rows spanning shards, bad frames, peers without a cluster
//! certificate, and whole jobs through the `ps-cluster` binary (determinism, failure naming).
//!
//! This file holds the in-process cluster harness (`TestCluster`); the tests are grouped by
//! topic under `cluster/`.

mod common;

#[path = "cluster/failures.rs"]
mod failures;
#[path = "cluster/hostile_peers.rs"]
mod hostile_peers;
#[path = "cluster/jobs.rs"]
mod jobs;
#[path = "cluster/routing.rs"]
mod routing;
#[path = "cluster/ssp.rs"]
mod ssp;

use ps_client::{ClientConfig, PsClient};
use ps_proto::{Init, Limits, ShardMap, TableSpec, UpdateRule};
use ps_server::{serve_shard, Shard, ShardHandle};
use ps_transport::{
    generate_cluster_certs, make_client_endpoint, make_endpoint, CertPaths, ClusterIdentity,
    EndpointOptions,
};

struct TestCluster {
    rt: tokio::runtime::Runtime,
    shards: Vec<ShardHandle>,
    map: ShardMap,
    certs: tempfile::TempDir,
}

fn table(id: u32, rows: u64, width: u32, staleness: Option<u64>) -> TableSpec {
    TableSpec {
        id,
        name: format!("t{id}"),
        rows,
        width,
        rule: UpdateRule::Add,
        init: Init::Zeros,
        staleness,
        layout: Default::default(),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

impl TestCluster {
    fn start(
        shards: u32,
        workers: u32,
        tables: Vec<TableSpec>,
        deterministic: bool,
    ) -> TestCluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let certs = tempfile::tempdir().unwrap();
        let mut names: Vec<String> = (0..shards).map(|i| format!("shard-{i}")).collect();
        names.extend((0..workers + 2).map(|i| format!("worker-{i}")));
        generate_cluster_certs(certs.path(), &names, &[]).unwrap();
        let mut handles = Vec::new();
        for i in 0..shards {
            let id = ClusterIdentity::load(&CertPaths::in_dir(certs.path(), &format!("shard-{i}")))
                .unwrap();
            let _g = rt.enter();
            let ep = make_endpoint(
                ([127, 0, 0, 1], 0).into(),
                &id,
                &EndpointOptions::for_loopback(),
            )
            .unwrap();
            let shard = Shard::new(i, shards, &tables, workers, deterministic);
            handles.push(serve_shard(ep, shard, Limits::default()).unwrap());
        }
        let map = ShardMap {
            shards: handles.iter().map(|h| h.addr.to_string()).collect(),
            tables,
        };
        TestCluster {
            rt,
            shards: handles,
            map,
            certs,
        }
    }

    fn identity(&self, name: &str) -> ClusterIdentity {
        ClusterIdentity::load(&CertPaths::in_dir(self.certs.path(), name)).unwrap()
    }

    fn client(&self, worker: u32, workers: u32) -> PsClient {
        self.client_with(worker, workers, |_| {})
    }

    fn client_with(
        &self,
        worker: u32,
        workers: u32,
        f: impl FnOnce(&mut ClientConfig),
    ) -> PsClient {
        let id = self.identity(&format!("worker-{worker}"));
        let ep = {
            let _g = self.rt.enter();
            make_client_endpoint(&id, &EndpointOptions::for_loopback()).unwrap()
        };
        let mut cfg = ClientConfig::new(worker, workers, self.map.clone());
        f(&mut cfg);
        PsClient::connect(self.rt.handle().clone(), &ep, cfg).unwrap()
    }

    /// The whole table, gathered from every shard's slice.
    fn table(&self, id: u32) -> Vec<f32> {
        self.shards
            .iter()
            .flat_map(|s| s.snapshot(id).unwrap())
            .collect()
    }
}
