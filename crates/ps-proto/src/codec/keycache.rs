//! Key caching: a key list sent before is sent again as a short reference.
//!
//! One [`KeyCacheSender`] and one [`KeyCacheReceiver`] per (connection, table), fed the messages
//! in the order the sender produced them (one ordered stream; after a lost or reordered message,
//! reset both sides). The sender assigns ids sequentially (0, 1, 2, … wrapping at 2^32) to each
//! new key list and answers [`Keys::Full`] with the id to assign, or [`Keys::Cached`] for a list
//! it has sent under a live id. Both sides keep the last `capacity` ids (FIFO by id) and evict the
//! same ones, so the sender never refers to an id the receiver dropped.
//!
//! Two different key lists are never confused: the sender reuses an id only for a list equal to
//! the stored one (compared element by element, the hash is only a shortcut), and the receiver
//! requires the ids of `Full` messages to come in sequence and checks on every cached use that
//! the id is live and that the hash sent matches the hash of the list it stored under that id.

use crate::error::ProtoError;
use std::collections::VecDeque;

/// Hash of a key list; both sides of a cache must use the same one.
pub type KeyHasher = fn(&[u64]) -> u64;

/// Ids each side keeps unless told otherwise.
pub const DEFAULT_KEY_CACHE_IDS: usize = 64;

/// A fast 64-bit hash of a key list (length included). Not collision-resistant against an
/// adversary, and it does not need to be: ids, not hashes, name the lists.
pub fn default_key_hash(keys: &[u64]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (keys.len() as u64).wrapping_mul(K) ^ 0x2545_F491_4F6C_DD1D;
    for &k in keys {
        h = (h.rotate_left(23) ^ k).wrapping_mul(K);
    }
    // fmix64 of MurmurHash3.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// What goes on the wire in place of a key list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// The whole list; the receiver stores it under id `assign`.
    Full { keys: Vec<u64>, assign: u32 },
    /// The list stored under `id`, whose hash is `hash`.
    Cached { id: u32, hash: u64 },
}

#[derive(Debug, Clone)]
struct Entry {
    id: u32,
    hash: u64,
    keys: Vec<u64>,
}

/// The sending side of a key cache.
#[derive(Debug, Clone)]
pub struct KeyCacheSender {
    capacity: usize,
    hasher: KeyHasher,
    next_id: u32,
    entries: VecDeque<Entry>,
}

impl KeyCacheSender {
    /// Keeps the last `capacity` ids (at least 1) and hashes with [`default_key_hash`].
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity, default_key_hash)
    }

    /// With a hash function of your own (the receiver must use the same one).
    pub fn with_hasher(capacity: usize, hasher: KeyHasher) -> Self {
        KeyCacheSender {
            capacity: capacity.max(1),
            hasher,
            next_id: 0,
            entries: VecDeque::new(),
        }
    }

    /// `Cached` if an equal list is stored under a live id, otherwise `Full` with a new id.
    pub fn keys(&mut self, keys: &[u64]) -> Keys {
        let hash = (self.hasher)(keys);
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.hash == hash && e.keys == keys)
        {
            return Keys::Cached { id: e.id, hash };
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.push_back(Entry {
            id,
            hash,
            keys: keys.to_vec(),
        });
        if self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
        Keys::Full {
            keys: keys.to_vec(),
            assign: id,
        }
    }

    /// Forgets everything and starts again at id 0 (reset the receiver too).
    pub fn reset(&mut self) {
        self.entries.clear();
        self.next_id = 0;
    }

    /// The live (id, hash) of an equal list, without assigning anything.
    pub fn lookup(&self, keys: &[u64]) -> Option<(u32, u64)> {
        let hash = (self.hasher)(keys);
        self.entries
            .iter()
            .find(|e| e.hash == hash && e.keys == keys)
            .map(|e| (e.id, e.hash))
    }
}

/// The receiving side of a key cache.
#[derive(Debug, Clone)]
pub struct KeyCacheReceiver {
    capacity: usize,
    hasher: KeyHasher,
    next_id: u32,
    /// Live entries, ids consecutive from the front.
    entries: VecDeque<Entry>,
}

impl KeyCacheReceiver {
    /// Must be given the sender's capacity.
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity, default_key_hash)
    }

    pub fn with_hasher(capacity: usize, hasher: KeyHasher) -> Self {
        KeyCacheReceiver {
            capacity: capacity.max(1),
            hasher,
            next_id: 0,
            entries: VecDeque::new(),
        }
    }

    /// The key list a message stands for. Errors on an id out of sequence, an unknown or evicted
    /// id, or a hash that does not match the stored list; the cache is unchanged on error.
    pub fn resolve(&mut self, msg: Keys) -> Result<&[u64], ProtoError> {
        match msg {
            Keys::Full { keys, assign } => {
                if assign != self.next_id {
                    return Err(ProtoError::Protocol(format!(
                        "key cache: new key list as id {assign}, expected id {}",
                        self.next_id
                    )));
                }
                self.next_id = self.next_id.wrapping_add(1);
                let hash = (self.hasher)(&keys);
                self.entries.push_back(Entry {
                    id: assign,
                    hash,
                    keys,
                });
                if self.entries.len() > self.capacity {
                    self.entries.pop_front();
                }
                Ok(self
                    .entries
                    .back()
                    .map(|e| e.keys.as_slice())
                    .unwrap_or(&[]))
            }
            Keys::Cached { id, hash } => {
                let front = self.entries.front().map_or(self.next_id, |e| e.id);
                let pos = id.wrapping_sub(front) as usize;
                let Some(e) = self.entries.get(pos).filter(|e| e.id == id) else {
                    return Err(ProtoError::Protocol(format!(
                        "key cache: unknown or evicted key list id {id}"
                    )));
                };
                if e.hash != hash {
                    return Err(ProtoError::Protocol(format!(
                        "key cache: hash {hash:#018x} does not match key list {id} ({:#018x})",
                        e.hash
                    )));
                }
                Ok(&e.keys)
            }
        }
    }

    /// Forgets everything and expects id 0 next.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.next_id = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_is_cached() {
        let mut s = KeyCacheSender::new(4);
        let mut r = KeyCacheReceiver::new(4);
        let a = s.keys(&[1, 2, 3]);
        assert!(matches!(a, Keys::Full { assign: 0, .. }));
        assert_eq!(r.resolve(a).unwrap(), &[1, 2, 3]);
        let b = s.keys(&[1, 2, 3]);
        assert!(matches!(b, Keys::Cached { id: 0, .. }));
        assert_eq!(r.resolve(b).unwrap(), &[1, 2, 3]);
        let e = s.keys(&[]);
        assert!(matches!(e, Keys::Full { assign: 1, .. }));
        assert_eq!(r.resolve(e).unwrap(), &[] as &[u64]);
    }

    #[test]
    fn receiver_rejects_bad_references() {
        let mut r = KeyCacheReceiver::new(2);
        assert!(r.resolve(Keys::Cached { id: 0, hash: 0 }).is_err());
        assert!(r
            .resolve(Keys::Full {
                keys: vec![1],
                assign: 1
            })
            .is_err());
        r.resolve(Keys::Full {
            keys: vec![1],
            assign: 0,
        })
        .unwrap();
        let h = default_key_hash(&[1]);
        assert!(r.resolve(Keys::Cached { id: 0, hash: h ^ 1 }).is_err());
        assert!(r.resolve(Keys::Cached { id: 1, hash: h }).is_err());
        assert!(r
            .resolve(Keys::Cached {
                id: u32::MAX,
                hash: h
            })
            .is_err());
        assert_eq!(r.resolve(Keys::Cached { id: 0, hash: h }).unwrap(), &[1]);
    }
}
