//! Registration: nodes open a control stream, send `Register`, and are answered with their
//! `Assign` once every node of the job is there (or, for a shard replacing a dead one, at once).

use ps_proto::{Frame, Kind, Limits, Register};
use ps_transport::{read_frame, write_frame, FrameRead};
use std::time::Duration;
use tracing::warn;

/// A node that has registered: what it said, its connection, its control stream.
pub(super) type Registrant = (Register, quinn::Connection, quinn::SendStream);

/// Accepts one connection's registration: its `Register` on a new bidirectional stream, within
/// ten seconds. A peer that fails any step is closed with the reason and `None` returned.
pub(super) async fn read_registration(
    incoming: quinn::Incoming,
    limits: &Limits,
) -> Option<Registrant> {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes peers without a certificate from the cluster CA.
            warn!("rejected connection: {e}");
            return None;
        }
    };
    let registered = tokio::time::timeout(Duration::from_secs(10), async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        match read_frame(&mut recv, limits)
            .await
            .map_err(|e| e.to_string())?
        {
            FrameRead::Frame(f) => {
                let reg: Register = f.parse_control(Kind::Register).map_err(|e| e.to_string())?;
                Ok::<_, String>((reg, send))
            }
            FrameRead::End => Err("control stream ended before registering".into()),
        }
    })
    .await;
    match registered {
        Ok(Ok((reg, send))) => Some((reg, conn, send)),
        Ok(Err(e)) => {
            warn!("{}: bad registration: {e}", conn.remote_address());
            conn.close(1u32.into(), b"bad registration");
            None
        }
        Err(_) => {
            conn.close(1u32.into(), b"registration timed out");
            None
        }
    }
}

/// Refuses a registration with a reason the node prints.
pub(super) async fn refuse(send: &mut quinn::SendStream, why: &str) {
    let _ = write_frame(send, &Frame::error(ps_proto::ErrorCode::Protocol, why)).await;
    let _ = send.finish();
}

/// Orders registrants by id: requested ids (checked unique and in range at registration) first
/// claim their slot, the rest fill the free ids in registration order.
pub(super) fn order_by_id(list: Vec<Registrant>, n: u32) -> Vec<Registrant> {
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
