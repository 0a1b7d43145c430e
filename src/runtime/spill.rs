//! The engine's cold store as a file: where the cases and customer links that left memory wait
//! (`engine/state/resident.rs`).
//!
//! Why a private file: it is a cache of values the state topic holds, read only by the map that
//! wrote it, so it needs no format beyond appended records and an index in memory (key → where).
//! It is unlinked as soon as it is opened: it is gone when the process ends, however it ends, and
//! a restart never finds stale values (it restores the state topic instead). On Kubernetes,
//! `state.spill_dir` is an emptyDir: nothing there outlives the pod, as nothing needs to.
//!
//! Why the index holds hashes, not keys: the index is what stays in memory for every value that
//! left it, so it is what a case costs beyond `state.resident_cases`. Keyed by the key's text
//! (a `String` of ~45 bytes for `case/<lead id>`), an entry cost ~130 bytes; keyed by a 64-bit
//! hash of it, with the place packed in another 64 bits, ~20–40 bytes. Each record carries its
//! key, and a hit is checked against it, so the index stays exact: a key whose hash another
//! key holds already goes to a small table of its own (`collided`), keyed by its text. A check
//! costs a read only where the record is in the file and the caller did not read it anyway
//! (`contains`, `remove`, a `put` over a value still here), which the map's hot path avoids.
//!
//! A record is the key's length (2 bytes, little-endian), the key, the value. Appends are
//! buffered and written 256 KiB at a time; a record is read from the buffer until then. A value
//! read back or replaced leaves garbage behind; once the garbage is both over 64 MiB and more than
//! the live bytes, the live records are copied to a new file.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::FastMap;
use crate::engine::state::{ColdStore, Detached, Taken};

const FLUSH_BYTES: usize = 256 * 1024;
const COMPACT_GARBAGE: u64 = 64 * 1024 * 1024;
/// A record starts with its key's length.
const KEY_LEN: usize = 2;
/// A [`Place`] packs a record's length in its low 24 bits (16 MiB) and its offset above (1 TiB).
const LEN_BITS: u32 = 24;
const MAX_RECORD: u64 = (1 << LEN_BITS) - 1;
const MAX_OFFSET: u64 = (1 << (64 - LEN_BITS)) - 1;

/// Where a record is: its offset and length in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place(u64);

impl Place {
    fn new(at: u64, len: u32) -> Place {
        debug_assert!(at <= MAX_OFFSET && u64::from(len) <= MAX_RECORD);
        Place((at << LEN_BITS) | u64::from(len))
    }
    fn at(self) -> u64 {
        self.0 >> LEN_BITS
    }
    fn len(self) -> u32 {
        (self.0 & MAX_RECORD) as u32
    }
}

/// The index's hasher: its keys are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in rather than fail.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where a key's record was found: under its hash in the index, or among the collided keys.
#[derive(Clone, Copy)]
struct Found {
    hash: Option<u64>,
    place: Place,
}

/// One map's cold values in one unlinked file.
pub struct FileCold {
    dir: PathBuf,
    label: String,
    file: File,
    /// Hash of a key → its record (in the file, or in `pending` past `flushed`).
    index: HashMap<u64, Place, BuildHasherDefault<Prehashed>>,
    /// Keys whose hash another key in `index` holds.
    collided: FastMap<String, Place>,
    /// The store's own seed: the same for its whole life, compactions included.
    hasher: foldhash::fast::RandomState,
    /// Bytes written to the file; `pending` continues from here.
    flushed: u64,
    pending: Vec<u8>,
    live: u64,
    /// Counts compactions from 1: a value detached before one is not where its handle says any
    /// more.
    generation: NonZeroU32,
    /// Tests: every key hashes alike, so that every key after the first collides.
    #[cfg(test)]
    colliding: bool,
}

impl FileCold {
    /// A new, empty store under `dir` (made if missing); `label` names it in errors.
    pub fn create(dir: &Path, label: &str) -> Result<FileCold, String> {
        Ok(FileCold {
            dir: dir.to_path_buf(),
            label: label.to_string(),
            file: open_unlinked(dir, label)?,
            index: HashMap::default(),
            collided: FastMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            flushed: 0,
            pending: Vec::new(),
            live: 0,
            generation: NonZeroU32::MIN,
            #[cfg(test)]
            colliding: false,
        })
    }

    /// Bytes the file and its buffer hold, live or not.
    pub fn file_bytes(&self) -> u64 {
        self.flushed + self.pending.len() as u64
    }

    fn hash(&self, key: &str) -> u64 {
        #[cfg(test)]
        if self.colliding {
            return 0;
        }
        self.hasher.hash_one(key)
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.pending, self.flushed)
            .map_err(|e| self.failed("write to", &e))?;
        self.flushed += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// `buf.len()` bytes at `at`, from the buffer or the file.
    fn read_into(&self, at: u64, buf: &mut [u8]) -> Result<(), String> {
        if at >= self.flushed {
            let from = (at - self.flushed) as usize;
            buf.copy_from_slice(&self.pending[from..from + buf.len()]);
            return Ok(());
        }
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| self.failed("read from", &e))
    }

    fn read(&self, place: Place) -> Result<Vec<u8>, String> {
        let mut bytes = vec![0; place.len() as usize];
        self.read_into(place.at(), &mut bytes)?;
        Ok(bytes)
    }

    /// Whether the record at `place` is `key`'s, reading only its key.
    fn holds(&self, place: Place, key: &str) -> Result<bool, String> {
        let n = KEY_LEN + key.len();
        if (place.len() as usize) < n {
            return Ok(false);
        }
        let mut head = [0u8; 128];
        let mut long = Vec::new();
        let buf = if n <= head.len() {
            &mut head[..n]
        } else {
            long.resize(n, 0);
            &mut long[..]
        };
        self.read_into(place.at(), buf)?;
        Ok(is_keys(buf, key))
    }

    /// The record that may be `key`'s: among the collided keys (by its text, so surely), else
    /// under its hash (not checked yet).
    fn candidate(&self, key: &str) -> Option<Found> {
        if let Some(&place) = self.collided.get(key) {
            return Some(Found { hash: None, place });
        }
        let hash = self.hash(key);
        let place = *self.index.get(&hash)?;
        Some(Found {
            hash: Some(hash),
            place,
        })
    }

    /// Where `key`'s record is, checked against the key it holds.
    fn find(&self, key: &str) -> Result<Option<Found>, String> {
        match self.candidate(key) {
            Some(found) if found.hash.is_none() || self.holds(found.place, key)? => Ok(Some(found)),
            _ => Ok(None),
        }
    }

    /// `key`'s record, read whole and checked: one read where [`FileCold::find`] and a read of
    /// the record would make two.
    fn find_read(&self, key: &str) -> Result<Option<(Found, Vec<u8>)>, String> {
        let Some(found) = self.candidate(key) else {
            return Ok(None);
        };
        let record = self.read(found.place)?;
        Ok(is_keys(&record, key).then_some((found, record)))
    }

    /// Points `key` (found at `old`, if it was here) at `new`, counting its old record as garbage.
    fn place(&mut self, key: &str, old: Option<Found>, new: Place) {
        match old {
            Some(Found {
                hash: Some(hash),
                place,
            }) => {
                self.index.insert(hash, new);
                self.live -= u64::from(place.len());
            }
            Some(Found { hash: None, place }) => {
                self.collided.insert(key.to_string(), new);
                self.live -= u64::from(place.len());
            }
            None => match self.index.entry(self.hash(key)) {
                Entry::Vacant(v) => drop(v.insert(new)),
                // Another key's hash: checked by `find`, which found none of this key.
                Entry::Occupied(_) => drop(self.collided.insert(key.to_string(), new)),
            },
        }
        self.live += u64::from(new.len());
    }

    /// Takes `found` out of the index; its record stays, counted as garbage.
    fn unplace(&mut self, key: &str, found: Found) -> Detached {
        match found.hash {
            Some(hash) => drop(self.index.remove(&hash)),
            None => drop(self.collided.remove(key)),
        }
        self.live -= u64::from(found.place.len());
        Detached {
            generation: self.generation,
            at: found.place.at(),
            len: found.place.len(),
        }
    }

    /// Appends `record` (key and value, as laid out) and returns its place; the buffer is
    /// flushed when full, and a record the file cannot take is rolled back alone.
    fn append(&mut self, record: &[&[u8]]) -> Result<(Place, bool), String> {
        let len: usize = record.iter().map(|part| part.len()).sum();
        let at = self.file_bytes();
        if len as u64 > MAX_RECORD || at > MAX_OFFSET {
            return Err(format!(
                "a {len}-byte record at offset {at} is past what the spill file indexes (16 MiB \
                 records, 1 TiB files)"
            ));
        }
        for part in record {
            self.pending.extend_from_slice(part);
        }
        let flushing = self.pending.len() >= FLUSH_BYTES;
        if flushing {
            if let Err(e) = self.flush() {
                self.pending.truncate((at - self.flushed) as usize);
                return Err(e);
            }
        }
        Ok((Place::new(at, len as u32), flushing))
    }

    /// Appends the record at `place` in `other` as a live one of this store's (a compaction).
    fn copy_from(&mut self, other: &FileCold, place: Place) -> Result<Place, String> {
        let (new, _) = self.append(&[&other.read(place)?])?;
        self.live += u64::from(new.len());
        Ok(new)
    }

    /// Copies the live records to a new file once garbage dominates (see the module docs).
    fn compact_if_due(&mut self) -> Result<(), String> {
        let garbage = self.file_bytes() - self.live;
        if garbage < COMPACT_GARBAGE || garbage < self.live {
            return Ok(());
        }
        let mut fresh = FileCold::create(&self.dir, &self.label)?;
        fresh.hasher = self.hasher.clone();
        #[cfg(test)]
        {
            fresh.colliding = self.colliding;
        }
        for (&hash, &place) in &self.index {
            let new = fresh.copy_from(self, place)?;
            fresh.index.insert(hash, new);
        }
        for (key, &place) in &self.collided {
            let new = fresh.copy_from(self, place)?;
            fresh.collided.insert(key.clone(), new);
        }
        fresh.flush()?;
        // Four billion compactions of 64 MiB of garbage each are out of reach.
        fresh.generation = self.generation.checked_add(1).expect("a compaction count");
        *self = fresh;
        Ok(())
    }

    /// Calls `f` with each key and its value, one record read each, in no order.
    pub fn each(&self, mut f: impl FnMut(&str, &[u8]) -> Result<(), String>) -> Result<(), String> {
        for &place in self.index.values().chain(self.collided.values()) {
            let record = self.read(place)?;
            let (key, value) = split_record(&record);
            let key = std::str::from_utf8(key).map_err(|_| {
                self.failed("read a key from", &std::io::ErrorKind::InvalidData.into())
            })?;
            f(key, value)?;
        }
        Ok(())
    }

    fn failed(&self, what: &str, e: &std::io::Error) -> String {
        format!(
            "could not {what} the state's spill file for {} under {} ({e})",
            self.label,
            self.dir.display()
        )
    }
}

/// A record split into its key and its value.
fn split_record(record: &[u8]) -> (&[u8], &[u8]) {
    let key_len = usize::from(u16::from_le_bytes([record[0], record[1]]));
    record[KEY_LEN..].split_at(key_len)
}

/// Whether `record` starts with `key` as a record lays it out.
fn is_keys(record: &[u8], key: &str) -> bool {
    record.len() >= KEY_LEN + key.len()
        && record[..KEY_LEN] == (key.len() as u16).to_le_bytes()
        && &record[KEY_LEN..KEY_LEN + key.len()] == key.as_bytes()
}

/// The value of a record read whole: what follows its key.
fn value_of(mut record: Vec<u8>) -> Vec<u8> {
    let key_len = split_record(&record).0.len();
    record.drain(..KEY_LEN + key_len);
    record
}

impl ColdStore for FileCold {
    /// A value the file cannot take is rolled back alone (the map keeps it in memory); the values
    /// taken before it stay in the buffer, and the next flush tries them again.
    fn put(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
        let key_len = u16::try_from(key.len()).map_err(|_| {
            format!(
                "a {}-byte key is longer than the spill file takes",
                key.len()
            )
        })?;
        let old = self.find(key)?;
        let (new, flushed) = self.append(&[&key_len.to_le_bytes(), key.as_bytes(), bytes])?;
        self.place(key, old, new);
        if flushed {
            // The value is stored either way; a file that cannot be compacted now is at a later
            // flush.
            let _ = self.compact_if_due();
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.find_read(key)?.map(|(_, record)| value_of(record)))
    }

    fn remove(&mut self, key: &str) -> Result<bool, String> {
        Ok(self.detach(key)?.is_some())
    }

    fn contains(&self, key: &str) -> Result<bool, String> {
        Ok(self.find(key)?.is_some())
    }

    /// Every key, read from its record: for tests and whole-state comparisons, not a hot path.
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(self.len());
        self.each(|key, _| {
            keys.push(key.to_string());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("the spill file's keys cannot be listed: {e}"));
        keys
    }

    fn len(&self) -> usize {
        self.index.len() + self.collided.len()
    }

    /// One read: the record is read whole, checked, and then detached.
    fn take(&mut self, key: &str) -> Result<Option<Taken>, String> {
        let Some((found, record)) = self.find_read(key)? else {
            return Ok(None);
        };
        let detached = self.unplace(key, found);
        Ok(Some((value_of(record), Some(detached))))
    }

    /// The record stays in the file (or its buffer), counted as garbage until reinstated.
    fn detach(&mut self, key: &str) -> Result<Option<Detached>, String> {
        let Some(found) = self.find(key)? else {
            return Ok(None);
        };
        Ok(Some(self.unplace(key, found)))
    }

    fn reinstate(&mut self, key: &str, d: Detached) -> bool {
        if d.generation != self.generation {
            return false;
        }
        // A key being reinstated is not here (it was detached), unless a failed read says
        // otherwise: then it is written again instead.
        let Ok(old) = self.find(key) else {
            return false;
        };
        self.place(key, old, Place::new(d.at, d.len));
        true
    }
}

/// A new file under `dir`, opened and at once removed from the directory.
fn open_unlinked(dir: &Path, label: &str) -> Result<File, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).map_err(|e| unusable(dir, &e))?;
    let name = format!(
        "{label}-{}-{}.cold",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| unusable(dir, &e))?;
    std::fs::remove_file(&path).map_err(|e| unusable(dir, &e))?;
    Ok(file)
}

fn unusable(dir: &Path, e: &std::io::Error) -> String {
    format!(
        "state.spill_dir {} cannot hold the state's spill files ({e}). Point it at a writable \
         directory (in Kubernetes, an emptyDir), or set state.resident_cases = 0 to hold every \
         case in memory.",
        dir.display()
    )
}

/// Checks at startup that `dir` can hold spill files, so a bad setting fails before any record.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    open_unlinked(dir, "check").map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempdir::Dir, FileCold) {
        let dir = tempdir::Dir::new();
        let cold = FileCold::create(dir.path(), "test").unwrap();
        (dir, cold)
    }

    /// A directory of this test's own under the system's temporary one, removed afterwards.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("partner-sync-spill-{}-{n}", std::process::id()));
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn values_read_back_from_the_buffer_and_from_the_file_and_leave_no_file_in_the_directory() {
        let (dir, mut cold) = store();
        cold.put("a", b"first").unwrap();
        assert_eq!(cold.get("a").unwrap().as_deref(), Some(&b"first"[..]));
        // Enough to flush the buffer to the file several times.
        let big = vec![7u8; 100_000];
        for i in 0..10 {
            cold.put(&format!("big{i}"), &big).unwrap();
        }
        assert!(cold.flushed > 0, "the buffer was written out");
        assert_eq!(cold.get("a").unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(cold.get("big3").unwrap().as_deref(), Some(&big[..]));
        cold.put("a", b"second").unwrap();
        assert_eq!(cold.get("a").unwrap().as_deref(), Some(&b"second"[..]));
        assert_eq!(cold.len(), 11);
        assert!(cold.remove("a").unwrap() && !cold.remove("a").unwrap());
        assert!(!cold.contains("a").unwrap());
        assert_eq!(cold.get("a").unwrap(), None);
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 0, "the file is unlinked once opened");
    }

    #[test]
    fn garbage_over_its_bound_and_the_live_bytes_is_compacted_away_keeping_every_live_value() {
        let (_dir, mut cold) = store();
        let value = |i: usize| format!("{i:08}").repeat(1_000).into_bytes(); // 8,000 bytes
        for round in 0..12 {
            for i in 0..1_000 {
                cold.put(&format!("k{i}"), &value(i + round)).unwrap();
            }
        }
        // 96 MB written for 8 MB live: compacted at least once, so the file is far below that.
        assert!(cold.file_bytes() < 80_000_000, "{}", cold.file_bytes());
        assert_eq!(cold.len(), 1_000);
        for i in 0..1_000 {
            assert_eq!(cold.get(&format!("k{i}")).unwrap(), Some(value(i + 11)));
        }
    }

    #[test]
    fn a_detached_value_is_reinstated_without_a_write_unless_a_compaction_moved_it() {
        let (_dir, mut cold) = store();
        cold.put("a", b"case a").unwrap();
        let before = cold.file_bytes();
        let handle = cold.detach("a").unwrap().unwrap();
        assert!(!cold.contains("a").unwrap() && cold.get("a").unwrap().is_none());
        assert!(cold.reinstate("a", handle));
        assert_eq!(cold.get("a").unwrap().as_deref(), Some(&b"case a"[..]));
        assert_eq!(cold.file_bytes(), before, "nothing written again");

        // Taken (read and detached in one): the same, through the buffer or the file.
        let (bytes, handle) = cold.take("a").unwrap().unwrap();
        assert_eq!(
            (bytes.as_slice(), cold.contains("a")),
            (&b"case a"[..], Ok(false))
        );
        assert!(cold.reinstate("a", handle.unwrap()) && cold.take("b").unwrap().is_none());

        // Detached, then garbage enough for a compaction: the bytes did not move with it.
        let handle = cold.detach("a").unwrap().unwrap();
        let value = vec![1u8; 8_000];
        for round in 0..12 {
            for i in 0..1_000 {
                cold.put(&format!("k{i}"), &value[..8_000 - round]).unwrap();
            }
        }
        assert!(cold.generation > NonZeroU32::MIN, "compacted");
        assert!(!cold.reinstate("a", handle) && !cold.contains("a").unwrap());
    }

    #[test]
    fn keys_whose_hashes_collide_keep_their_own_values_through_every_operation_and_a_compaction() {
        let (_dir, mut cold) = store();
        cold.colliding = true; // every key hashes to 0: all but the first land among the collided
        let value = |i: usize, round: usize| format!("{i}:{round}:").repeat(4_000).into_bytes();
        for i in 0..50 {
            cold.put(&format!("case/{i}"), &value(i, 0)).unwrap();
        }
        assert_eq!((cold.index.len(), cold.collided.len()), (1, 49));
        assert!(cold.contains("case/7").unwrap() && !cold.contains("case/50").unwrap());
        assert_eq!(cold.get("case/50").unwrap(), None, "a miss on a taken hash");
        // The key under the hash leaves; a collided one stays reachable, a new one takes the hash.
        let (bytes, handle) = cold.take("case/0").unwrap().unwrap();
        assert_eq!(bytes, value(0, 0));
        assert_eq!(cold.get("case/1").unwrap(), Some(value(1, 0)));
        cold.put("case/new", b"new").unwrap();
        assert!(
            cold.index.len() == 1 && cold.get("case/new").unwrap().as_deref() == Some(&b"new"[..])
        );
        assert!(
            cold.reinstate("case/0", handle.unwrap()),
            "back among the collided"
        );
        assert_eq!(cold.get("case/0").unwrap(), Some(value(0, 0)));
        assert!(cold.remove("case/3").unwrap() && !cold.remove("case/3").unwrap());
        // Rewritten until compacted: every value is its last one, found by its own key.
        for round in 1..=60 {
            for i in 0..50 {
                cold.put(&format!("case/{i}"), &value(i, round)).unwrap();
            }
        }
        assert!(cold.generation > NonZeroU32::MIN, "compacted");
        for i in 0..50 {
            assert_eq!(
                cold.get(&format!("case/{i}")).unwrap(),
                Some(value(i, 60)),
                "case/{i}"
            );
        }
        let mut keys = cold.keys();
        keys.sort();
        assert_eq!(keys.len(), 51);
        assert!(keys.contains(&"case/new".to_string()) && keys.contains(&"case/3".to_string()));
        assert_eq!(cold.len(), 51);
    }

    #[test]
    fn a_key_is_found_by_its_text_not_by_its_hash_alone() {
        let (_dir, mut cold) = store();
        cold.put("case/a", b"a").unwrap();
        // Another key under the same hash, as a collision would put it: not found as "case/a".
        let place = *cold.index.values().next().unwrap();
        let hash_of_b = cold.hash("case/b");
        cold.index.insert(hash_of_b, place);
        assert!(!cold.contains("case/b").unwrap());
        assert_eq!(cold.get("case/b").unwrap(), None);
        assert!(cold.take("case/b").unwrap().is_none() && !cold.remove("case/b").unwrap());
        // A write of "case/b" then goes among the collided and leaves "case/a" alone.
        cold.put("case/b", b"b").unwrap();
        assert_eq!(cold.collided.len(), 1);
        assert_eq!(cold.get("case/a").unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(cold.get("case/b").unwrap().as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn a_value_past_what_the_index_can_place_is_refused_and_the_store_is_unchanged() {
        let (_dir, mut cold) = store();
        cold.put("a", b"kept").unwrap();
        let err = cold.put("big", &vec![0u8; 1 << 24]).unwrap_err();
        assert!(err.contains("16 MiB"), "{err}");
        assert!(!cold.contains("big").unwrap() && cold.len() == 1);
        assert_eq!(cold.get("a").unwrap().as_deref(), Some(&b"kept"[..]));
        assert_eq!(
            cold.file_bytes(),
            2 + 1 + 4,
            "nothing of the refused value stayed"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_refused_with_what_to_change() {
        let err = check_dir(Path::new("/proc/partner-sync-cannot-be-here")).unwrap_err();
        assert!(
            err.contains("state.spill_dir") && err.contains("writable"),
            "{err}"
        );
    }
}
