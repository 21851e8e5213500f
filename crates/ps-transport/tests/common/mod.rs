//! The exchange both packet-size tests run: a client asks, the server answers with one large
//! reply, and the server's path figures come back.

use ps_transport::{connect, DEFAULT_SERVER_NAME};
use std::net::SocketAddr;
use std::time::Duration;

/// What the server sends: enough for path-MTU discovery (it probes once per round trip) to
/// finish at full size.
pub const REPLY: usize = 8 << 20;

/// `client` asks the server at `addr` (served by `server`) for [`REPLY`] bytes and reads them
/// whole, within `limit`; returns the server's path figures and the client's connection (for
/// its own figures). Panics (failing the test) if anything fails or hangs.
pub async fn fetch_reply(
    server: &quinn::Endpoint,
    client: &quinn::Endpoint,
    addr: SocketAddr,
    limit: Duration,
) -> (quinn::PathStats, quinn::Connection) {
    let (path_tx, path_rx) = tokio::sync::oneshot::channel();
    let accept = server.clone();
    tokio::spawn(async move {
        let conn = accept.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        recv.read_to_end(64).await.unwrap();
        send.write_all(&vec![7u8; REPLY]).await.unwrap();
        send.finish().unwrap();
        let _ = send.stopped().await;
        let _ = path_tx.send(conn.stats().path);
    });
    tokio::time::timeout(limit, async {
        let conn = connect(client, addr, DEFAULT_SERVER_NAME).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"pull").await.unwrap();
        send.finish().unwrap();
        let reply = recv.read_to_end(2 * REPLY).await.unwrap();
        assert_eq!(reply.len(), REPLY);
        (path_rx.await.unwrap(), conn)
    })
    .await
    .expect("the exchange hung")
}
