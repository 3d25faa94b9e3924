//! A hash map whose copies share their contents.  One generation of a DNS
//! config and the next differ in a few names, so the next is a copy of the
//! previous one (a few hundred pointer copies, not a million names) with
//! only the shards holding changed names rebuilt: the DNS server's compiled
//! zones and Nexus's loaded config are both kept this way.
//!
//! The map is split into a fixed number of shards, each behind an `Arc`; a
//! write clones just the shard it touches when that shard is shared
//! (`Arc::make_mut`).  Lookups cost one extra hash (FNV-1a, a few
//! nanoseconds for a DNS name) to pick the shard.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A one-name change at 100,000 names copies ~800 entries (0.22 ms to
/// apply, as with 1,024 shards); a 1,000-name change copies them all.
/// Fewer shards keep the shards' own headers in the CPU's cache: every
/// lookup reads one, and with 1,024 shards (per map) at 100,000 names that
/// read was most of a lookup's time (docs/PERFORMANCE.md).
const SHARDS: usize = 128;

/// FNV-1a: fast for short keys.  Keys come from the authenticated config
/// API, never from queries, so collision attacks are not a concern.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        // FNV-1a leaves similar keys (name1, name2, ...) with similar high
        // bits, which hashbrown uses as tags: mix them (MurmurHash3's
        // finalizer) so that a probe rarely compares names.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Shard<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

pub struct SharedMap<K, V> {
    shards: Vec<Arc<Shard<K, V>>>,
    len: usize,
}

impl<K, V> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap { shards: self.shards.clone(), len: self.len }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap { shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(), len: 0 }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SharedMap<K, V> {
    /// Room for about `entries` without growing.
    pub fn with_capacity(entries: usize) -> Self {
        let per_shard = entries.div_ceil(SHARDS) * 9 / 8;
        SharedMap {
            shards: (0..SHARDS)
                .map(|_| Arc::new(Shard::with_capacity_and_hasher(per_shard, Default::default())))
                .collect(),
            len: 0,
        }
    }

    fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
        let mut hasher = Fnv::default();
        key.hash(&mut hasher);
        // The shard's own table uses the lowest bits (bucket) and the top
        // seven (tag) of the same hash: take middle ones, or every key of a
        // shard would share its tag and each probe would compare names.
        (hasher.finish() >> 24) as usize % SHARDS
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.shards[Self::shard_of(key)].get(key)
    }

    /// The stored key with its value: a caller that needs a key's bytes
    /// for as long as the map lives borrows them from here.
    pub fn get_key_value<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
    {
        self.shards[Self::shard_of(key)].get_key_value(key)
    }

    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let previous = Arc::make_mut(&mut self.shards[Self::shard_of(&key)]).insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let shard = &mut self.shards[Self::shard_of(key)];
        if !shard.contains_key(key) {
            return None;
        }
        let previous = Arc::make_mut(shard).remove(key);
        self.len -= 1;
        previous
    }

    /// The value of `key`, inserted as `default()` first when absent.
    pub fn get_mut_or(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        let shard = Arc::make_mut(&mut self.shards[Self::shard_of(&key)]);
        let len = &mut self.len;
        shard.entry(key).or_insert_with(|| {
            *len += 1;
            default()
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_until_written() {
        let mut a: SharedMap<String, u32> = SharedMap::default();
        for i in 0..1000 {
            a.insert(format!("n{i}"), i);
        }
        let mut b = a.clone();
        b.insert("n5".into(), 55);
        b.remove("n6");
        b.insert("new".into(), 1);
        *b.get_mut_or("n7".into(), || 0) += 1;
        assert_eq!((a.len(), b.len()), (1000, 1000));
        assert_eq!(a.get("n5"), Some(&5), "the original is untouched");
        assert_eq!(a.get("n6"), Some(&6));
        assert_eq!(b.get("n5"), Some(&55));
        assert_eq!(b.get("n6"), None);
        assert_eq!(b.get("n7"), Some(&8));
        let shared = a.shards.iter().zip(&b.shards).filter(|(x, y)| Arc::ptr_eq(x, y)).count();
        assert!(shared >= SHARDS - 4, "only touched shards are copied: {shared} shared");
        assert_eq!(b.iter().count(), 1000);
        assert_eq!(b.remove("absent"), None);
        assert_eq!(b.len(), 1000);
    }
}
