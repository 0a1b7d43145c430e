//! Where the values a [`ResidentMap`](super::ResidentMap) moves out of memory wait: the
//! [`ColdStore`] interface the runtime implements with a file (`src/runtime/spill.rs`), and
//! [`MemoryCold`], the same in memory for tests.
//!
//! Why a trait: the engine does no I/O. The store is handed in, and a test can use one that
//! refuses, counts or keeps everything in memory.

use std::collections::HashMap;
use std::num::NonZeroU32;

/// A value taken out of a cold store: its bytes, and where they stay if the store detached them.
pub type Taken = (Vec<u8>, Option<Detached>);

/// Where cold values wait, by key. Keys are a map's own keys (one store per map).
pub trait ColdStore: Send + Sync {
    /// Keeps `bytes` as `key`'s value, replacing any. An error keeps the value in memory.
    fn put(&mut self, key: &str, bytes: &[u8]) -> Result<(), String>;
    /// `key`'s bytes, if it is here. An error is fatal to the state (see
    /// [`ResidentMap`](super::ResidentMap)).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Forgets `key`; true if it was here. An error, as for [`ColdStore::get`], is fatal.
    fn remove(&mut self, key: &str) -> Result<bool, String>;
    /// Whether `key` is here. An error, as for [`ColdStore::get`], is fatal.
    fn contains(&self, key: &str) -> Result<bool, String>;
    fn keys(&self) -> Vec<String>;
    fn len(&self) -> usize;
    /// Forgets `key` like [`ColdStore::remove`], but leaves its bytes where they are, for
    /// [`ColdStore::reinstate`]: a value read back often leaves memory again unchanged, and then
    /// needs no second write. `None` if the store cannot (or `key` is not here).
    fn detach(&mut self, _key: &str) -> Result<Option<Detached>, String> {
        Ok(None)
    }
    /// `key`'s bytes, taken out of the store: detached where it can ([`ColdStore::detach`]), else
    /// forgotten. A store may do this in one lookup of its own.
    fn take(&mut self, key: &str) -> Result<Option<Taken>, String> {
        let Some(bytes) = self.get(key)? else {
            return Ok(None);
        };
        let detached = self.detach(key)?;
        if detached.is_none() {
            self.remove(key)?;
        }
        Ok(Some((bytes, detached)))
    }
    /// Makes `key` point at its detached bytes again; false if they are gone (the store moved its
    /// values since), and then the value is written with [`ColdStore::put`].
    fn reinstate(&mut self, _key: &str, _detached: Detached) -> bool {
        false
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a store left a detached value's bytes ([`ColdStore::detach`]); only the store that
/// made it reads it. 16 bytes, and as many as an `Option` (the generation is never 0): every
/// value in memory carries one, for cases, customer links and requesters alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached {
    /// Which layout of the store the place is in (a store that moves its values counts up).
    pub generation: NonZeroU32,
    pub len: u32,
    pub at: u64,
}

const _: () = assert!(std::mem::size_of::<Option<Detached>>() == 16);

/// A cold store in memory: for tests, which need the map's behaviour without a file.
#[derive(Debug, Default)]
pub struct MemoryCold {
    values: HashMap<String, Vec<u8>>,
    detached: HashMap<String, Vec<u8>>,
}

impl ColdStore for MemoryCold {
    fn put(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
        self.detached.remove(key);
        self.values.insert(key.to_string(), bytes.to_vec());
        Ok(())
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.values.get(key).cloned())
    }
    fn remove(&mut self, key: &str) -> Result<bool, String> {
        self.detached.remove(key);
        Ok(self.values.remove(key).is_some())
    }
    fn contains(&self, key: &str) -> Result<bool, String> {
        Ok(self.values.contains_key(key))
    }
    fn keys(&self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }
    fn len(&self) -> usize {
        self.values.len()
    }
    fn detach(&mut self, key: &str) -> Result<Option<Detached>, String> {
        let Some(bytes) = self.values.remove(key) else {
            return Ok(None);
        };
        let len = bytes.len() as u32;
        self.detached.insert(key.to_string(), bytes);
        Ok(Some(Detached {
            generation: NonZeroU32::MIN,
            at: 0,
            len,
        }))
    }
    fn reinstate(&mut self, key: &str, _detached: Detached) -> bool {
        match self.detached.remove(key) {
            Some(bytes) => {
                self.values.insert(key.to_string(), bytes);
                true
            }
            None => false,
        }
    }
}
