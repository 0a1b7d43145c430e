//! A map that holds at most so many values in memory and the rest, as their state-entry JSON, in a
//! cold store beside it.
//!
//! Why: a partition's state grew with every case it owned (~2,100 bytes each): a million-change
//! backfill of 66,000 cases ran one instance steady at 157 MiB. Most of those cases are idle at
//! any moment. Here the least recently used values beyond the bound leave memory as the JSON their
//! state entries carry (the bytes the runtime writes to the state topic; a case with its prospect's
//! JSON laid apart, [`Spill::to_cold`]), and a lookup of one of them reads it back. The state
//! topic stays the source of truth: the cold store is a cache a restore rebuilds, never read by
//! another instance or after a restart.
//!
//! Why a lookup reads through, rather than the runtime loading an event's entries before the
//! engine runs: which entries a rule reads depends on what it finds (a won opportunity reads the
//! other cases of its requester's email). Here every lookup takes `&mut self` and finds a cold
//! value itself, so no rule can miss one.
//!
//! The engine stays free of I/O: the store is a [`ColdStore`] handed in (`state/cold.rs`; the
//! runtime's is a file, `src/runtime/spill.rs`).

use std::collections::HashMap;

use foldhash::fast::RandomState;

pub use super::cold::{ColdStore, Detached, MemoryCold, Taken};

/// A value the map may move out of memory.
pub trait Spill: Sized {
    /// A value that must stay in memory: a case with parked events (expiry walks the cases in
    /// memory, and a parked event's entry is read from its case).
    fn pinned(&self) -> bool {
        false
    }
    /// The value's state-entry JSON.
    fn to_json(&self) -> Vec<u8>;
    /// The value read back from [`Spill::to_json`]'s bytes.
    fn from_json(bytes: &[u8]) -> Result<Self, String>;
    /// The value as the cold store keeps it: its entry's JSON unless the type lays it out so
    /// that it reads back faster (the store never leaves the process).
    fn to_cold(&self) -> Vec<u8> {
        self.to_json()
    }
    /// The value read back from [`Spill::to_cold`]'s bytes.
    fn from_cold(bytes: &[u8]) -> Result<Self, String> {
        Self::from_json(bytes)
    }
}

#[derive(Clone)]
struct Slot<V> {
    value: V,
    /// The map's clock when the value was last looked up: the smallest leave first.
    used: u64,
    /// Where the cold store still has the value's bytes, while it is unchanged since it was read
    /// back ([`ResidentMap::changed`] forgets it): it then leaves memory without being written.
    detached: Option<Detached>,
}

/// Values by key, at most `cap` of them in memory (pinned ones aside) once a cold store is set;
/// without one, all of them (the default).
///
/// A cold store that cannot give back a value it holds is fatal: the value is not lost (the
/// state topic holds it) but this copy of the state can no longer decide correctly, so the map
/// panics with a sentence that says so, and the instance restarts and restores.
pub struct ResidentMap<V> {
    hot: HashMap<String, Slot<V>, RandomState>,
    cold: Option<Box<dyn ColdStore>>,
    /// How many values the cold store holds, kept here so that a lookup in a map with nothing
    /// cold costs no call through the store (the runtime always sets one).
    cold_len: usize,
    cap: usize,
    clock: u64,
    /// Values the cold store refused (they stayed in memory), and why the last one was.
    refused: u64,
    last_refusal: Option<String>,
    /// After a refusal, no eviction is tried until the map has grown past this (an eighth of the
    /// bound): a full disk must not cost a walk of the map per event.
    retry_above: usize,
}

impl<V> Default for ResidentMap<V> {
    fn default() -> Self {
        ResidentMap {
            hot: HashMap::default(),
            cold: None,
            cold_len: 0,
            cap: usize::MAX,
            clock: 0,
            refused: 0,
            last_refusal: None,
            retry_above: 0,
        }
    }
}

impl<V: Spill> ResidentMap<V> {
    /// Moves values beyond `cap` (at least 1) into `cold`, now and as the map grows.
    pub fn spill_to(&mut self, cold: Box<dyn ColdStore>, cap: usize) {
        self.cold_len = cold.len();
        self.cold = Some(cold);
        self.set_cap(cap);
    }

    /// A new bound (an assignment changed how many partitions share the instance's).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        self.evict(false);
    }

    /// Moves what is over the bound out of memory now: values that were pinned, or looked up
    /// since the last eviction, may have kept the map above it.
    pub fn settle(&mut self) {
        self.evict(false);
    }

    /// The value of `key`, read back into memory if it is cold.
    #[inline]
    pub fn get(&mut self, key: &str) -> Option<&V> {
        self.get_mut(key).map(|v| &*v)
    }

    /// The value of `key`, read back into memory if it is cold.
    #[inline]
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.clock += 1;
        // With nothing cold, a miss in memory is a miss: one lookup, as a plain map.
        if self.cold_len > 0 && !self.hot.contains_key(key) {
            let (value, detached) = self.take_cold(key)?;
            self.hot.insert(
                key.to_string(),
                Slot {
                    value,
                    used: self.clock,
                    detached,
                },
            );
            self.evict(true);
        }
        let slot = self.hot.get_mut(key)?;
        slot.used = self.clock;
        Some(&mut slot.value)
    }

    /// The value of `key`, a default one inserted if there is none.
    pub fn get_or_default(&mut self, key: &str) -> &mut V
    where
        V: Default,
    {
        // Looked up rather than checked first: a check of a cold key costs the store a read.
        if self.get_mut(key).is_none() {
            self.insert(key.to_string(), V::default());
        }
        self.get_mut(key).expect("inserted just above")
    }

    /// Sets `key`'s value (and forgets a cold one).
    pub fn insert(&mut self, key: String, value: V) {
        self.clock += 1;
        self.remove_cold(&key);
        let used = self.clock;
        let evict = self.hot.len() >= self.cap && !self.hot.contains_key(&key);
        self.hot.insert(
            key,
            Slot {
                value,
                used,
                detached: None,
            },
        );
        if evict {
            self.evict(true);
        }
    }

    /// Gives back the table room a burst left: a table that grew while the map churned keeps
    /// its buckets (hashbrown grows rather than rehashing in place once its items pass half of
    /// it), so a map bounded at `cap` values can hold a table for twice as many.
    pub fn shrink_to_fit(&mut self) {
        self.hot.shrink_to_fit();
    }

    /// Says `key`'s value changed (its state entry is written): its bytes in the cold store, if it
    /// was read back from there, no longer hold it.
    pub fn changed(&mut self, key: &str) {
        if let Some(slot) = self.hot.get_mut(key) {
            slot.detached = None;
        }
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let cold = self.remove_cold(key);
        self.hot.remove(key).is_some() || cold
    }

    /// Forgets `key`'s cold value; true if it had one.
    fn remove_cold(&mut self, key: &str) -> bool {
        let removed = self.cold_len > 0
            && self
                .cold
                .as_mut()
                .is_some_and(|c| c.remove(key).or_fatal(key));
        if removed {
            self.cold_len -= 1;
        }
        removed
    }

    /// Whether `key` has a value, in memory or not (reads nothing back).
    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        self.hot.contains_key(key)
            || (self.cold_len > 0
                && self
                    .cold
                    .as_ref()
                    .is_some_and(|c| c.contains(key).or_fatal(key)))
    }

    /// The state-entry JSON of `key`'s value, wherever it is (reads nothing back into memory; a
    /// cold value is read and written again as JSON: entries written are of values in memory, so
    /// this is for whole-state comparisons).
    pub fn json(&self, key: &str) -> Option<Vec<u8>> {
        match self.hot.get(key) {
            Some(slot) => Some(slot.value.to_json()),
            None => self.cold.as_ref().and_then(|c| {
                let bytes = c.get(key).or_fatal(key)?;
                let value = V::from_cold(&bytes).or_fatal(key);
                Some(value.to_json())
            }),
        }
    }

    /// The value of `key` if it is in memory (a case with parked events always is).
    pub fn resident(&self, key: &str) -> Option<&V> {
        self.hot.get(key).map(|s| &s.value)
    }

    /// The values in memory, in no order.
    pub fn resident_values(&self) -> impl Iterator<Item = &V> {
        self.hot.values().map(|s| &s.value)
    }

    /// The values in memory, in no order (expiry walks them: only pinned values hold parked
    /// events, and those never leave).
    pub fn resident_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.hot.iter_mut().map(|(k, s)| (k, &mut s.value))
    }

    /// Every key, in memory or cold, in no order.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.hot.keys().cloned().collect();
        if let Some(cold) = &self.cold {
            keys.extend(cold.keys());
        }
        keys
    }

    /// Every value, cold ones read back (not kept): for tests and whole-state comparisons.
    pub fn to_vec(&self) -> Vec<(String, V)>
    where
        V: Clone,
    {
        let mut all: Vec<(String, V)> = self
            .hot
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect();
        if let Some(cold) = &self.cold {
            for k in cold.keys() {
                let bytes = cold.get(&k).or_fatal(&k).expect("a key the store lists");
                let value = V::from_cold(&bytes).or_fatal(&k);
                all.push((k, value));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many values there are, in memory or not.
    pub fn len(&self) -> usize {
        debug_assert_eq!(
            self.cold_len,
            self.cold.as_ref().map_or(0, |c| c.len()),
            "the count of cold values follows the store"
        );
        self.hot.len() + self.cold_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many values are in memory.
    pub fn resident_len(&self) -> usize {
        self.hot.len()
    }

    /// How many values are `[in memory, in the cold store]`.
    pub fn places(&self) -> [usize; 2] {
        [self.hot.len(), self.cold_len]
    }

    /// How many values the cold store refused so far (they stayed in memory), and why the last
    /// one was.
    pub fn refused(&self) -> (u64, Option<&str>) {
        (self.refused, self.last_refusal.as_deref())
    }

    /// `key`'s cold value, and where its bytes stay while it is unchanged.
    fn take_cold(&mut self, key: &str) -> Option<(V, Option<Detached>)> {
        let cold = self.cold.as_mut()?;
        let (bytes, detached) = cold.take(key).or_fatal(key)?;
        self.cold_len -= 1;
        let value = V::from_cold(&bytes).or_fatal(key);
        Some((value, detached))
    }

    /// Once over the bound, moves the least recently used eighth of it (never the value just looked
    /// up or inserted, nor a pinned one) to the cold store: two walks of the map per eighth.
    fn evict(&mut self, keep_newest: bool) {
        let Some(cold) = self.cold.as_mut() else {
            return;
        };
        if self.hot.len() <= self.cap.max(self.retry_above) {
            return;
        }
        // The value just looked up or inserted carries the clock's current reading (each
        // operation moves the clock and stamps one value), so it is told apart without comparing
        // keys.
        let newest = keep_newest.then_some(self.clock);
        let may_leave = |s: &Slot<V>| Some(s.used) != newest && !s.value.pinned();
        let mut used: Vec<u64> = self
            .hot
            .values()
            .filter(|s| may_leave(s))
            .map(|s| s.used)
            .collect();
        let target = self.cap - self.cap / 8;
        let n = (self.hot.len() - target).min(used.len());
        if n == 0 {
            return;
        }
        // The n least recently used leave: those stamped at or before the n-th smallest stamp.
        let (_, &mut last, _) = used.select_nth_unstable(n - 1);
        let (mut left, mut refusal) = (0, None);
        self.hot.retain(|k, s| {
            if refusal.is_some() || s.used > last || !may_leave(s) {
                return true;
            }
            // Unchanged since it was read back: its bytes are still in the store.
            if s.detached.is_some_and(|d| cold.reinstate(k, d)) {
                left += 1;
                return false;
            }
            match cold.put(k, &s.value.to_cold()) {
                Ok(()) => {
                    left += 1;
                    false
                }
                Err(e) => {
                    refusal = Some(e);
                    true
                }
            }
        });
        self.cold_len += left;
        match refusal {
            Some(e) => {
                self.refused += 1;
                self.last_refusal = Some(e);
                self.retry_above = self.hot.len() + self.cap / 8;
            }
            None => self.retry_above = 0,
        }
    }
}

/// A cold store's failure as fatal to the state (see [`ResidentMap`]), with the sentence that says
/// so.
trait OrFatal<T> {
    fn or_fatal(self, key: &str) -> T;
}

impl<T> OrFatal<T> for Result<T, String> {
    fn or_fatal(self, key: &str) -> T {
        self.unwrap_or_else(|error| {
            panic!(
                "The state entry {key:?} moved out of memory cannot be read back ({error}). This \
                 copy of the state can no longer decide correctly, so the instance stops; on \
                 restart it restores the partition from the state topic. Check the volume behind \
                 state.spill_dir."
            )
        })
    }
}

impl<V: Spill + Clone + PartialEq> PartialEq for ResidentMap<V> {
    /// Equal when they hold the same values by key, wherever each is.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.to_vec() == other.to_vec()
    }
}

impl<V> std::fmt::Debug for ResidentMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentMap")
            .field("resident", &self.hot.len())
            .field("cold", &self.cold.as_ref().map_or(0, |c| c.len()))
            .finish()
    }
}

impl<V: Clone> Clone for ResidentMap<V> {
    /// A copy of the values in memory. A map with a cold store is never copied (the engine's state
    /// is copied only in tests, which hold everything in memory); its copy panics rather than
    /// lose the cold values.
    fn clone(&self) -> Self {
        assert!(
            self.cold.is_none(),
            "a state with a cold store is not copied"
        );
        ResidentMap {
            // The table as it is: rebuilding it would hash every key again.
            hot: self.hot.clone(),
            cold: None,
            cold_len: 0,
            cap: self.cap,
            clock: self.clock,
            refused: self.refused,
            last_refusal: self.last_refusal.clone(),
            retry_above: self.retry_above,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Num(u32, bool);

    impl Spill for Num {
        fn pinned(&self) -> bool {
            self.1
        }
        fn to_json(&self) -> Vec<u8> {
            self.0.to_string().into_bytes()
        }
        fn from_json(bytes: &[u8]) -> Result<Num, String> {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            Ok(Num(
                text.parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?,
                false,
            ))
        }
    }

    /// A store that takes nothing: a full disk.
    struct Refusing;
    impl ColdStore for Refusing {
        fn put(&mut self, _: &str, _: &[u8]) -> Result<(), String> {
            Err("no space left on device".into())
        }
        fn get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(None)
        }
        fn remove(&mut self, _: &str) -> Result<bool, String> {
            Ok(false)
        }
        fn contains(&self, _: &str) -> Result<bool, String> {
            Ok(false)
        }
        fn keys(&self) -> Vec<String> {
            Vec::new()
        }
        fn len(&self) -> usize {
            0
        }
    }

    fn filled(cap: usize, n: u32) -> ResidentMap<Num> {
        let mut map = ResidentMap::default();
        map.spill_to(Box::new(MemoryCold::default()), cap);
        for i in 0..n {
            map.insert(format!("k{i}"), Num(i, false));
        }
        map
    }

    #[test]
    fn the_least_recently_used_values_leave_memory_and_a_lookup_reads_one_back() {
        let mut map = filled(8, 8);
        assert_eq!(map.get("k0"), Some(&Num(0, false))); // k0 is now the most recent
        map.insert("k8".into(), Num(8, false));
        // Over the bound by one: an eighth of it left, the least recently used (k1), not k0.
        assert_eq!((map.resident_len(), map.len()), (7, 9));
        assert!(map.resident("k1").is_none() && map.resident("k0").is_some());
        assert!(map.contains_key("k1"));
        assert_eq!(
            map.json("k1"),
            Some(b"1".to_vec()),
            "read from the store, not into memory"
        );
        assert!(map.resident("k1").is_none());
        assert_eq!(map.get_mut("k1"), Some(&mut Num(1, false)));
        assert!(map.resident("k1").is_some(), "a lookup brings it back");
        assert_eq!(map.keys().len(), 9, "every key once, wherever it is");
        assert!(map.remove("k1") && !map.contains_key("k1") && map.len() == 8);
    }

    #[test]
    fn a_table_grown_by_churn_gives_its_room_back_and_keeps_every_value() {
        // Values come and go through a bound of 64: the table fills with erased slots and
        // hashbrown doubles it instead of rehashing in place, as in a backfill's drain.
        let mut map = filled(64, 5_000);
        let grown = map.hot.capacity();
        assert!(map.resident_len() <= 64 && grown > 128, "capacity {grown}");
        map.shrink_to_fit();
        assert!(
            map.hot.capacity() < grown,
            "room for {} values kept, of {grown}",
            map.hot.capacity()
        );
        for i in 0..5_000 {
            assert_eq!(map.get(&format!("k{i}")), Some(&Num(i, false)));
        }
        assert_eq!(map.len(), 5_000);
    }

    #[test]
    fn pinned_values_stay_in_memory_beyond_the_bound_and_leave_once_unpinned_and_settled() {
        let mut map = ResidentMap::default();
        map.spill_to(Box::new(MemoryCold::default()), 2);
        for i in 0..5 {
            map.insert(format!("p{i}"), Num(i, true));
        }
        assert_eq!(map.resident_len(), 5, "pinned values never leave");
        for i in 0..5 {
            map.get_mut(&format!("p{i}")).unwrap().1 = false;
        }
        map.settle();
        assert!(map.resident_len() <= 2, "{} in memory", map.resident_len());
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn a_store_that_refuses_keeps_values_in_memory_says_why_and_waits_before_trying_again() {
        let mut map = ResidentMap::default();
        map.spill_to(Box::new(Refusing), 16);
        for i in 0..17 {
            map.insert(format!("k{i}"), Num(i, false));
        }
        assert_eq!(map.resident_len(), 17, "nothing is lost");
        assert_eq!(map.refused(), (1, Some("no space left on device")));
        // Not tried again until the map has grown by an eighth of its bound.
        map.insert("k17".into(), Num(17, false));
        map.settle();
        assert_eq!(map.refused().0, 1);
        for i in 18..20 {
            map.insert(format!("k{i}"), Num(i, false));
        }
        assert_eq!(map.refused().0, 2);
        assert_eq!(map.get("k3"), Some(&Num(3, false)));
    }

    /// A store that counts its writes.
    #[derive(Default)]
    struct Counting(MemoryCold, std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl ColdStore for Counting {
        fn put(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.put(key, bytes)
        }
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.0.get(key)
        }
        fn remove(&mut self, key: &str) -> Result<bool, String> {
            self.0.remove(key)
        }
        fn contains(&self, key: &str) -> Result<bool, String> {
            self.0.contains(key)
        }
        fn keys(&self) -> Vec<String> {
            self.0.keys()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn detach(&mut self, key: &str) -> Result<Option<Detached>, String> {
            self.0.detach(key)
        }
        fn reinstate(&mut self, key: &str, d: Detached) -> bool {
            self.0.reinstate(key, d)
        }
    }

    #[test]
    fn a_value_read_back_leaves_again_unwritten_unless_it_changed() {
        let store = Counting::default();
        let puts = store.1.clone();
        let mut map = ResidentMap::default();
        map.spill_to(Box::new(store), 1);
        map.insert("a".into(), Num(1, false));
        map.insert("b".into(), Num(2, false)); // a leaves: one write
        assert_eq!(puts.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(map.get("a"), Some(&Num(1, false))); // b leaves: a second write
        assert_eq!(map.get("b"), Some(&Num(2, false))); // a leaves unchanged: no write
        assert_eq!(puts.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(map.get("a"), Some(&Num(1, false)));
        map.get_mut("a").unwrap().0 = 10;
        map.changed("a");
        assert_eq!(map.get("b"), Some(&Num(2, false))); // a leaves changed: written
        assert_eq!(puts.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(map.get("a"), Some(&Num(10, false)));
        assert_eq!((map.len(), map.keys().len()), (2, 2));
    }

    #[test]
    fn without_a_store_every_value_stays_in_memory() {
        let mut map: ResidentMap<Num> = ResidentMap::default();
        for i in 0..100 {
            map.insert(format!("k{i}"), Num(i, false));
        }
        map.settle();
        assert_eq!((map.resident_len(), map.len()), (100, 100));
    }
}
