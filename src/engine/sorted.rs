//! Small sorted collections for the engine's state, each a vector instead of a B-tree.
//!
//! Why: the state lives in memory for every case a partition owns, and most of its sets and maps
//! hold one or two entries (one case per requester email, 0.7 opportunities per case in the
//! generated stories). A `BTreeSet` or `BTreeMap` allocates a node of eleven slots for its first
//! entry: the requester index cost 508 bytes per case and an opportunities map ~450 bytes per
//! opportunity (`cargo bench --bench engine -- summary`, "state in memory"). A vector grown one
//! slot at a time holds what is there. Lookups search it in order, which for a handful of
//! entries is as fast as a tree. Each serializes as the B-tree collection it replaced did, in
//! ascending order, so state entries are byte for byte the same and earlier ones restore.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The case keys that use one requester email: a set, nearly always of one. Read back sorted and
/// without repeats whatever order a record holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CaseKeys(Vec<String>);

impl CaseKeys {
    /// Adds `key`; false if it was there.
    pub fn insert(&mut self, key: String) -> bool {
        match self.0.binary_search(&key) {
            Ok(_) => false,
            Err(at) => {
                // One more slot, not the four a first push reserves.
                self.0.reserve_exact(1);
                self.0.insert(at, key);
                true
            }
        }
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.0.binary_search_by(|k| k.as_str().cmp(key)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for CaseKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CaseKeys, D::Error> {
        let mut keys = Vec::<String>::deserialize(d)?;
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        Ok(CaseKeys(keys))
    }
}

/// A map from string keys, in key order, nearly always of a few entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedMap<V>(Vec<(String, V)>);

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<V> SortedMap<V> {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).ok().map(|at| &self.0[at].1)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<V: Serialize> Serialize for SortedMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SortedMap<V> {
    /// Through a `BTreeMap`: sorted, and a key given twice keeps its last value, as before.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SortedMap<V>, D::Error> {
        let map = BTreeMap::<String, V>::deserialize(d)?;
        Ok(SortedMap(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn case_keys_serialize_as_the_btreeset_they_replace_and_read_back_sorted() {
        let mut keys = CaseKeys::default();
        let mut set = BTreeSet::new();
        for k in ["lead-b", "lead-a", "lead-c", "lead-a"] {
            assert_eq!(keys.insert(k.to_string()), set.insert(k.to_string()), "{k}");
        }
        assert_eq!(
            serde_json::to_string(&keys).unwrap(),
            serde_json::to_string(&set).unwrap()
        );
        assert!(keys.remove("lead-b") && !keys.remove("lead-b"));
        assert_eq!(
            serde_json::to_string(&keys).unwrap(),
            r#"["lead-a","lead-c"]"#
        );
        // A record in any order, even with a repeat, reads back as the set it means.
        let read: CaseKeys = serde_json::from_str(r#"["lead-c","lead-a","lead-c"]"#).unwrap();
        assert_eq!(read, keys);
        assert!(keys.remove("lead-a") && keys.remove("lead-c") && keys.is_empty());
    }

    #[test]
    fn a_sorted_map_behaves_and_serializes_as_the_btreemap_it_replaces() {
        let mut map = SortedMap::default();
        let mut tree = BTreeMap::new();
        for (k, v) in [("opp-2", 1), ("opp-1", 2), ("opp-3", 3), ("opp-1", 4)] {
            assert_eq!(
                map.insert(k.to_string(), v),
                tree.insert(k.to_string(), v),
                "{k}"
            );
        }
        assert_eq!(map.len(), tree.len());
        assert_eq!(map.get("opp-1"), Some(&4));
        assert_eq!(map.get("opp-9"), None);
        assert!(map.iter().eq(tree.iter()));
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, serde_json::to_string(&tree).unwrap());
        // A record in another order reads back sorted.
        let read: SortedMap<i32> =
            serde_json::from_str(r#"{"opp-3":3,"opp-1":4,"opp-2":1}"#).unwrap();
        assert_eq!(read, map);
        assert!(SortedMap::<i32>::default().is_empty() && !map.is_empty());
    }
}
