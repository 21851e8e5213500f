//! The sending side of the key caches: a key list a worker sends a shard again and again (the
//! rows it reads each clock, the rows it pushes) goes as a cache id and hash after the first
//! time. Pure bookkeeping: no I/O.
//!
//! Requests travel on concurrent streams, so the shard may see them in any order. Two rules keep
//! its receiver in step with this sender all the same:
//! * a list is referred to by id only after a reply proved the shard stored it (`confirm`);
//! * at most one new list is in flight per (shard, table), so the shard stores lists in the
//!   order ids were given (its receiver insists on that order).
//!
//! A list is stored only the second time it is sent: lists that change every clock (the rows a
//! top-k push happens to carry) would otherwise take the one in-flight slot and evict the lists
//! that do repeat (the rows read each clock), and the requests for those would go listed.
//!
//! The shard keeps [`RECEIVER_IDS`] lists, four times what a sender keeps, so a reference that
//! is overtaken by other requests still finds its list unless more than `3 x SENDER_IDS` new
//! lists were stored meanwhile, each after a full round trip. Should that ever happen the shard
//! answers with an error naming the id and the job fails loudly; nothing is misread, because the
//! shard checks the hash of every reference.

use ps_proto::codec::{KeyCacheSender, Keys};
use ps_proto::{is_range, KeyForm};
use std::collections::HashMap;

/// Lists each sender keeps.
pub const SENDER_IDS: usize = 16;
/// Lists each shard keeps per (connection, table): must match the shard's receiver.
pub const RECEIVER_IDS: usize = ps_proto::codec::DEFAULT_KEY_CACHE_IDS;
/// Shorter lists go as they are: a reference is 16 bytes.
pub const MIN_CACHED_KEYS: usize = 8;
/// Hashes of lists sent once, remembered per (shard, table) so a second sending stores them.
pub const SEEN_ONCE: usize = 64;

const _: () = assert!(RECEIVER_IDS >= 4 * SENDER_IDS);

/// One (shard, table) cache.
struct SendCache {
    sender: KeyCacheSender,
    /// Ids below this are stored at the shard.
    confirmed_below: u32,
    /// The new list in flight, if any.
    in_flight: Option<u32>,
    /// Hashes of lists sent as they are, oldest first.
    seen_once: std::collections::VecDeque<u64>,
}

impl SendCache {
    /// Whether `keys` was sent before (as they are); remembers them if not.
    fn seen_before(&mut self, keys: &[u64]) -> bool {
        let hash = ps_proto::codec::default_key_hash(keys);
        if let Some(i) = self.seen_once.iter().position(|&h| h == hash) {
            self.seen_once.remove(i);
            return true;
        }
        if self.seen_once.len() == SEEN_ONCE {
            self.seen_once.pop_front();
        }
        self.seen_once.push_back(hash);
        false
    }
}

/// Every key cache of one worker.
#[derive(Default)]
pub struct KeyCaches {
    caches: HashMap<(u32, u32), SendCache>,
    /// Per shard, how many times its connection was replaced: a confirmation of a list sent
    /// over an earlier connection must not confirm one sent over the new.
    epochs: HashMap<u32, u64>,
}

impl KeyCaches {
    /// How to send `keys` to `shard` for `table`: by reference when the shard has them, as a new
    /// list to store when none is in flight, otherwise as they are (a list or a range).
    pub fn form(&mut self, shard: u32, table: u32, keys: &[u64]) -> KeyForm {
        if keys.len() < MIN_CACHED_KEYS || is_range(keys) {
            return KeyForm::List;
        }
        let c = self
            .caches
            .entry((shard, table))
            .or_insert_with(|| SendCache {
                sender: KeyCacheSender::new(SENDER_IDS),
                confirmed_below: 0,
                in_flight: None,
                seen_once: Default::default(),
            });
        match c.sender.lookup(keys) {
            Some((id, hash)) if id < c.confirmed_below => KeyForm::Cached { id, hash },
            Some(_) => KeyForm::List,
            None if c.in_flight.is_some() => KeyForm::List,
            None if !c.seen_before(keys) => KeyForm::List,
            None => match c.sender.keys(keys) {
                Keys::Full { assign, .. } => {
                    c.in_flight = Some(assign);
                    KeyForm::Assign(assign)
                }
                Keys::Cached { .. } => KeyForm::List,
            },
        }
    }

    /// The connection to `shard` was replaced (the shard restarted): it stores no list of ours.
    pub fn reset_shard(&mut self, shard: u32) {
        self.caches.retain(|(s, _), _| *s != shard);
        *self.epochs.entry(shard).or_default() += 1;
    }

    /// The current connection epoch of `shard` (see [`KeyCaches::reset_shard`]).
    pub fn epoch(&self, shard: u32) -> u64 {
        self.epochs.get(&shard).copied().unwrap_or(0)
    }

    /// [`KeyCaches::confirm`] of a list sent when `shard` was in `epoch`; a confirmation from
    /// an earlier connection is ignored.
    pub fn confirm_at(&mut self, shard: u32, table: u32, id: u32, epoch: u64) {
        if self.epoch(shard) == epoch {
            self.confirm(shard, table, id);
        }
    }

    /// The shard answered a request that sent list `id` to store: it has it.
    pub fn confirm(&mut self, shard: u32, table: u32, id: u32) {
        if let Some(c) = self.caches.get_mut(&(shard, table)) {
            if c.in_flight == Some(id) {
                c.in_flight = None;
                c.confirmed_below = id.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_referenced_only_after_the_shard_confirmed_it() {
        let mut k = KeyCaches::default();
        let a: Vec<u64> = (0..20).map(|i| i * 3).collect();
        let b: Vec<u64> = (0..20).map(|i| i * 5).collect();
        // Stored the second time it is sent, not the first.
        assert_eq!(k.form(0, 1, &a), KeyForm::List);
        assert_eq!(k.form(0, 1, &b), KeyForm::List);
        assert_eq!(k.form(1, 1, &a), KeyForm::List);
        assert_eq!(k.form(0, 1, &a), KeyForm::Assign(0));
        // In flight: neither a again nor a new list b goes by the cache yet.
        assert_eq!(k.form(0, 1, &a), KeyForm::List);
        assert_eq!(k.form(0, 1, &b), KeyForm::List);
        // Another shard or table has its own cache.
        assert_eq!(k.form(1, 1, &a), KeyForm::Assign(0));
        k.confirm(0, 1, 0);
        assert!(matches!(k.form(0, 1, &a), KeyForm::Cached { id: 0, .. }));
        assert_eq!(k.form(0, 1, &b), KeyForm::Assign(1));
        // A stale confirmation changes nothing.
        k.confirm(0, 1, 0);
        assert_eq!(k.form(0, 1, &b), KeyForm::List);
    }

    #[test]
    fn lists_that_never_repeat_are_never_stored() {
        let mut k = KeyCaches::default();
        let reads: Vec<u64> = (0..30).map(|i| i * 7).collect();
        for clock in 0..100u64 {
            // A different push list each clock, then the same read list.
            let push: Vec<u64> = (0..20).map(|i| clock * 1000 + i * 2).collect();
            assert_eq!(k.form(0, 0, &push), KeyForm::List);
            match k.form(0, 0, &reads) {
                KeyForm::Assign(id) => {
                    assert_eq!(clock, 1);
                    k.confirm(0, 0, id);
                }
                KeyForm::Cached { id: 0, .. } => assert!(clock >= 2),
                KeyForm::List => assert_eq!(clock, 0),
                other => panic!("clock {clock}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_replaced_connection_starts_over_and_ignores_old_confirmations() {
        let mut k = KeyCaches::default();
        let a: Vec<u64> = (0..20).map(|i| i * 3).collect();
        assert_eq!(k.form(0, 1, &a), KeyForm::List);
        assert_eq!(k.form(0, 1, &a), KeyForm::Assign(0));
        let old = k.epoch(0);
        k.reset_shard(0);
        assert_eq!(
            k.form(0, 1, &a),
            KeyForm::List,
            "forgotten: first sending again"
        );
        assert_eq!(k.form(0, 1, &a), KeyForm::Assign(0));
        k.confirm_at(0, 1, 0, old);
        assert_eq!(
            k.form(0, 1, &a),
            KeyForm::List,
            "the old connection's ack confirms nothing"
        );
        k.confirm_at(0, 1, 0, k.epoch(0));
        assert!(matches!(k.form(0, 1, &a), KeyForm::Cached { id: 0, .. }));
    }

    #[test]
    fn short_lists_and_ranges_go_as_they_are() {
        let mut k = KeyCaches::default();
        assert_eq!(k.form(0, 0, &[1, 5, 9]), KeyForm::List);
        let range: Vec<u64> = (100..200).collect();
        assert_eq!(k.form(0, 0, &range), KeyForm::List);
    }
}
