//! The key cache: a sender and receiver that agree on cached key lists, with forced hash
//! collisions, eviction and a desynchronised sender.

use proptest::prelude::*;
use ps_proto::codec::{self, KeyCacheReceiver, KeyCacheSender, Keys};

fn weak_hash(keys: &[u64]) -> u64 {
    // Collides constantly: only the parity of the length.
    keys.len() as u64 & 1
}

fn zero_hash(_: &[u64]) -> u64 {
    0
}

proptest! {
    /// The receiver always resolves exactly the list the sender was given, with forced hash
    /// collisions and eviction.
    #[test]
    fn key_cache_never_confuses_lists(
        picks in proptest::collection::vec(0usize..12, 1..200),
        capacity in 1usize..6,
        hasher in prop_oneof![Just(weak_hash as fn(&[u64]) -> u64), Just(zero_hash as fn(&[u64]) -> u64),
                              Just(codec::default_key_hash as fn(&[u64]) -> u64)],
    ) {
        // A pool of distinct lists, several equal-length (same weak hash) and a prefix pair.
        let pool: Vec<Vec<u64>> = (0..12u64).map(|i| match i {
            0 => vec![],
            1 => vec![1, 2, 3],
            2 => vec![1, 2],
            3 => vec![3, 2, 1],
            _ => (0..(i % 4)).map(|j| j * 100 + i).collect(),
        }).collect();
        let mut s = KeyCacheSender::with_hasher(capacity, hasher);
        let mut r = KeyCacheReceiver::with_hasher(capacity, hasher);
        let mut full = 0;
        for p in picks {
            let msg = s.keys(&pool[p]);
            if matches!(msg, Keys::Full { .. }) { full += 1; }
            prop_assert_eq!(r.resolve(msg).unwrap(), pool[p].as_slice());
        }
        prop_assert!(full >= 1);
    }
}

#[test]
fn key_cache_eviction_is_mirrored() {
    let mut s = KeyCacheSender::with_hasher(2, zero_hash);
    let mut r = KeyCacheReceiver::with_hasher(2, zero_hash);
    let lists = [vec![1u64], vec![2], vec![3]];
    for l in &lists {
        let m = s.keys(l);
        assert!(matches!(m, Keys::Full { .. }));
        r.resolve(m).unwrap();
    }
    // id 0 ([1]) is evicted on both sides: the sender sends it in full again, under id 3.
    let m = s.keys(&lists[0]);
    assert_eq!(
        m,
        Keys::Full {
            keys: vec![1],
            assign: 3
        }
    );
    // A stale reference to id 0 is refused, and changes nothing.
    assert!(r.resolve(Keys::Cached { id: 0, hash: 0 }).is_err());
    assert_eq!(r.resolve(m).unwrap(), &[1]);
    // ids 2 and 3 are live.
    assert_eq!(s.keys(&lists[2]), Keys::Cached { id: 2, hash: 0 });
    assert_eq!(r.resolve(Keys::Cached { id: 2, hash: 0 }).unwrap(), &[3]);
    assert!(r.resolve(Keys::Cached { id: 1, hash: 0 }).is_err());
}

#[test]
fn key_cache_receiver_detects_a_desynchronised_sender() {
    // Two senders share a receiver by mistake: ids collide, the hash check catches the mismatch.
    let mut a = KeyCacheSender::new(4);
    let mut b = KeyCacheSender::new(4);
    let mut r = KeyCacheReceiver::new(4);
    r.resolve(a.keys(&[1, 2, 3])).unwrap();
    let _ = b.keys(&[9, 9]); // b's id 0 names [9, 9], never sent to r
    let stale = b.keys(&[9, 9]);
    assert!(matches!(stale, Keys::Cached { id: 0, .. }));
    assert!(r.resolve(stale).is_err());
    // Out-of-sequence assignment is refused too.
    assert!(r
        .resolve(Keys::Full {
            keys: vec![5],
            assign: 7
        })
        .is_err());
    assert_eq!(r.resolve(a.keys(&[1, 2, 3])).unwrap(), &[1, 2, 3]);
}
