//! Path-MTU discovery between hosts, over a veth pair between two network namespaces. With the
//! default (non-loopback) options packets stay within a 1500-byte link; with the ceiling raised
//! for jumbo frames (`--max-packet 8952`) they grow to it on a 9000-byte link. That needs every
//! segmentation-offload batch to fit in one datagram (`gso.rs`): 10 packets of 8952 bytes do
//! not. On a 1500-byte link the raised ceiling costs lost probes, and packets stay at 1200 bytes
//! until discovery, slowed by those losses, settles (hence not the default).
//!
//! Needs root and `ip` (iproute2); without them each test prints why and passes without
//! checking anything.

mod common;

use ps_transport::{
    generate_cluster_certs, make_client_endpoint, make_endpoint, CertPaths, ClusterIdentity,
    EndpointOptions,
};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Two namespaces joined by a veth pair of the given MTU, removed on drop.
struct Veth {
    server_ns: String,
    client_ns: String,
    server_ip: [u8; 4],
}

impl Veth {
    /// `None` (with the reason printed) where this machine cannot make namespaces.
    fn new(mtu: u32) -> Option<Veth> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let v = Veth {
            server_ns: format!("psmtu-s-{tag}"),
            client_ns: format!("psmtu-c-{tag}"),
            server_ip: [10, 213, n as u8, 1],
        };
        let client_ip = format!("10.213.{n}.2/24");
        let server_ip = format!("10.213.{n}.1/24");
        let (sv, cv) = (
            format!("pss{n}-{}", std::process::id() % 10_000),
            format!("psc{n}-{}", std::process::id() % 10_000),
        );
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &v.server_ns],
            vec!["netns", "add", &v.client_ns],
            vec!["link", "add", &sv, "type", "veth", "peer", "name", &cv],
            vec!["link", "set", &sv, "netns", &v.server_ns],
            vec!["link", "set", &cv, "netns", &v.client_ns],
        ];
        let mtu = mtu.to_string();
        let inside: Vec<(&str, Vec<&str>)> = vec![
            (&v.server_ns, vec!["link", "set", &sv, "mtu", &mtu, "up"]),
            (&v.client_ns, vec!["link", "set", &cv, "mtu", &mtu, "up"]),
            (&v.server_ns, vec!["addr", "add", &server_ip, "dev", &sv]),
            (&v.client_ns, vec!["addr", "add", &client_ip, "dev", &cv]),
        ];
        for args in steps {
            if let Err(why) = ip(&args) {
                println!("SKIP: cannot make a veth pair between namespaces ({why})");
                return None;
            }
        }
        for (ns, args) in inside {
            let mut all = vec!["-n", ns];
            all.extend(args);
            if let Err(why) = ip(&all) {
                println!("SKIP: cannot configure the veth pair ({why})");
                return None;
            }
        }
        Some(v)
    }

    fn server_addr(&self) -> SocketAddr {
        (self.server_ip, 0).into()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, and with it the other end.
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.client_ns]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `f` on a thread that has entered namespace `ns` and the current tokio runtime: sockets
/// it opens belong to `ns` for good, whichever thread uses them later.
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let _entered = runtime.enter();
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}

/// Options for hosts on a network of 9000-byte frames (what `--max-packet 8952` sets).
fn jumbo() -> EndpointOptions {
    EndpointOptions {
        max_udp_payload: 8952,
        ..EndpointOptions::default()
    }
}

/// The server's path figures after sending `common::REPLY` bytes to a client across a veth pair of
/// `mtu`, both ends with `opts`; `None` where namespaces are not available.
async fn transfer_over(mtu: u32, opts: EndpointOptions) -> Option<quinn::PathStats> {
    let veth = Veth::new(mtu)?;
    let certs = tempfile::tempdir().unwrap();
    let names = vec!["server".to_string(), "client".to_string()];
    generate_cluster_certs(certs.path(), &names, &[]).unwrap();
    let id = |n: &str| ClusterIdentity::load(&CertPaths::in_dir(certs.path(), n)).unwrap();
    let (server_id, client_id) = (id("server"), id("client"));
    let (o, at) = (opts.clone(), veth.server_addr());
    let server = in_namespace(&veth.server_ns, move || make_endpoint(at, &server_id, &o))
        .expect("server endpoint");
    let o = opts.clone();
    let client = in_namespace(&veth.client_ns, move || {
        make_client_endpoint(&client_id, &o)
    })
    .expect("client endpoint");
    let addr = server.local_addr().unwrap();

    let (path, _conn) = common::fetch_reply(&server, &client, addr, Duration::from_secs(60)).await;
    println!(
        "veth mtu {mtu}: packets of {} bytes, {} lost, {} probes sent and {} lost, {} black holes",
        path.current_mtu,
        path.lost_packets,
        path.sent_plpmtud_probes,
        path.lost_plpmtud_probes,
        path.black_holes_detected
    );
    server.close(0u32.into(), b"done");
    client.close(0u32.into(), b"done");
    Some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_ethernet_link_packets_stay_within_its_mtu() {
    let Some(path) = transfer_over(1500, EndpointOptions::default()).await else {
        return;
    };
    assert_eq!(path.black_holes_detected, 0);
    assert!(path.current_mtu <= 1472, "{} bytes", path.current_mtu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_jumbo_frame_link_packets_grow_to_a_raised_ceiling() {
    let Some(path) = transfer_over(9000, jumbo()).await else {
        return;
    };
    assert_eq!(path.black_holes_detected, 0, "large packets were lost");
    assert!(
        path.current_mtu > 8000 && path.current_mtu <= 8952,
        "{} bytes",
        path.current_mtu
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_ceiling_on_an_ethernet_link_stays_within_its_mtu() {
    let Some(path) = transfer_over(1500, jumbo()).await else {
        return;
    };
    assert_eq!(path.black_holes_detected, 0);
    assert!(path.current_mtu <= 1472, "{} bytes", path.current_mtu);
}
