//! Both ends of a connection honour the packet size their options ask for, in both directions.
//!
//! - A worker's endpoint is client-only; it once came from quinn's defaults, which advertise a
//!   1472-byte largest UDP payload, so every pull reply a shard sent it went in 1472-byte packets
//!   even when both ends were tuned for 4096 (half the pull throughput on loopback).
//! - quinn sends up to 10 packets as one segmentation-offload datagram, which the kernel refuses
//!   once it is over 64 KiB: packets over about 6,500 bytes were all lost, and path-MTU discovery
//!   declared a black hole and fell back to 1200.

mod common;

use ps_transport::{
    generate_cluster_certs, make_client_endpoint, make_endpoint, CertPaths, ClusterIdentity,
    EndpointOptions,
};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_endpoint_receives_the_packet_size_its_options_ask_for() {
    let opts = EndpointOptions::for_loopback();
    assert!(opts.max_udp_payload > 1472, "the test needs large packets");
    let certs = tempfile::tempdir().unwrap();
    let names = vec!["server".to_string(), "client".to_string()];
    generate_cluster_certs(certs.path(), &names, &[]).unwrap();
    let id = |n: &str| ClusterIdentity::load(&CertPaths::in_dir(certs.path(), n)).unwrap();
    let server = make_endpoint(([127, 0, 0, 1], 0).into(), &id("server"), &opts).unwrap();
    let client = make_client_endpoint(&id("client"), &opts).unwrap();
    let addr = server.local_addr().unwrap();

    // The server answers one request with 8 MiB, then reports its path's figures.
    let (path, conn) = common::fetch_reply(&server, &client, addr, Duration::from_secs(30)).await;
    let rx = conn.stats().udp_rx;
    let mean = rx.bytes / rx.datagrams.max(1);
    println!(
        "server's path to the client: packets of {} bytes, {} lost, {} black holes; the \
         client received {} datagrams, {mean} bytes each on average",
        path.current_mtu, path.lost_packets, path.black_holes_detected, rx.datagrams
    );
    assert_eq!(path.black_holes_detected, 0, "large packets were lost");
    assert!(
        path.current_mtu > opts.initial_mtu,
        "path-MTU discovery did not take the server's packets past {} bytes",
        opts.initial_mtu
    );
    assert!(
        mean > 1472,
        "the reply arrived in packets of {mean} bytes on average"
    );
}
