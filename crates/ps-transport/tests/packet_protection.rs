//! Plaintext packets only when both ends ask for them, and then really in the clear.
//!
//! A relay between client and server sees every datagram the server sends: the 8 MiB reply (a
//! run of one byte value) must show through when both ends chose `PacketProtection::None`, and
//! never when either kept AEAD. The reply arriving whole shows both ends agreed on the keys.

mod common;

use ps_transport::{
    generate_cluster_certs, is_plain, make_client_endpoint, make_endpoint, CertPaths,
    ClusterIdentity, EndpointOptions, PacketProtection,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// Datagrams the server sent through the relay, and how many of them carried reply bytes in
/// the clear.
#[derive(Default)]
struct Seen {
    datagrams: AtomicUsize,
    clear: AtomicUsize,
}

/// The reply is `vec![7u8; REPLY]`: 64 sevens in a row do not happen in AES-GCM output.
fn shows_the_reply(datagram: &[u8]) -> bool {
    datagram.windows(64).any(|w| w.iter().all(|&b| b == 7))
}

/// A UDP relay in front of `server`: returns the address clients should dial.
async fn relay(server: SocketAddr, seen: Arc<Seen>) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let addr = front.local_addr().unwrap();
    {
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let _ = back.send(&buf[..n]).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = back.recv(&mut buf).await {
            seen.datagrams.fetch_add(1, Ordering::Relaxed);
            if shows_the_reply(&buf[..n]) {
                seen.clear.fetch_add(1, Ordering::Relaxed);
            }
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

/// Runs the exchange with the server's and the client's protection; returns whether the
/// connection settled on plaintext and what the relay saw.
async fn exchange(server: PacketProtection, client: PacketProtection) -> (bool, Arc<Seen>) {
    let certs = tempfile::tempdir().unwrap();
    let names = vec!["server".to_string(), "client".to_string()];
    generate_cluster_certs(certs.path(), &names, &[]).unwrap();
    let id = |n: &str| ClusterIdentity::load(&CertPaths::in_dir(certs.path(), n)).unwrap();
    let opts = |p| EndpointOptions {
        packet_protection: p,
        ..EndpointOptions::for_loopback()
    };
    let server_ep =
        make_endpoint(([127, 0, 0, 1], 0).into(), &id("server"), &opts(server)).unwrap();
    let client_ep = make_client_endpoint(&id("client"), &opts(client)).unwrap();
    let seen = Arc::new(Seen::default());
    let addr = relay(server_ep.local_addr().unwrap(), seen.clone()).await;
    let (_, conn) =
        common::fetch_reply(&server_ep, &client_ep, addr, Duration::from_secs(60)).await;
    let plain = is_plain(&conn).expect("the handshake's protocol is known");
    (plain, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_asking_send_the_payload_in_the_clear() {
    let (plain, seen) = exchange(PacketProtection::None, PacketProtection::None).await;
    let (all, clear) = (
        seen.datagrams.load(Ordering::Relaxed),
        seen.clear.load(Ordering::Relaxed),
    );
    println!("{clear} of {all} datagrams from the server showed the reply");
    assert!(plain);
    assert!(
        clear * 2 > all,
        "only {clear} of {all} datagrams carried the reply in the clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_end_asking_keeps_aead() {
    for (server, client) in [
        (PacketProtection::None, PacketProtection::Aead),
        (PacketProtection::Aead, PacketProtection::None),
        (PacketProtection::Aead, PacketProtection::Aead),
    ] {
        let (plain, seen) = exchange(server, client).await;
        let (all, clear) = (
            seen.datagrams.load(Ordering::Relaxed),
            seen.clear.load(Ordering::Relaxed),
        );
        println!("server {server}, client {client}: {clear} of {all} datagrams in the clear");
        assert!(
            !plain,
            "server {server}, client {client} settled on plaintext"
        );
        assert!(all > 100, "the relay saw only {all} datagrams");
        assert_eq!(
            clear, 0,
            "server {server}, client {client} sent reply bytes in the clear"
        );
    }
}
