//! The engine's cold store as a file: where the cases and customer links that left memory wait
//! (`engine/state/resident.rs`).
//!
//! Why a private file: it is a cache of values the state topic holds, read only by the map that
//! wrote it, so it needs no format beyond appended values and an index in memory (key → where).
//! It is unlinked as soon as it is opened: it is gone when the process ends, however it ends, and
//! a restart never finds stale values (it restores the state topic instead). On Kubernetes,
//! `state.spill_dir` is an emptyDir: nothing there outlives the pod, as nothing needs to.
//!
//! Appends are buffered and written 256 KiB at a time; a value is read from the buffer until
//! then. A value read back or replaced leaves garbage behind; once the garbage is both over 64 MiB
//! and more than the live bytes, the live values are copied to a new file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::FastMap;
use crate::engine::state::{ColdStore, Detached, Taken};

const FLUSH_BYTES: usize = 256 * 1024;
const COMPACT_GARBAGE: u64 = 64 * 1024 * 1024;

/// One map's cold values in one unlinked file.
pub struct FileCold {
    dir: PathBuf,
    label: String,
    file: File,
    /// Key → (offset, length) in the file (or in `pending`, past `flushed`).
    index: FastMap<String, (u64, u32)>,
    /// Bytes written to the file; `pending` continues from here.
    flushed: u64,
    pending: Vec<u8>,
    live: u64,
    /// Counts compactions: a value detached before one is not where its handle says any more.
    generation: u64,
}

impl FileCold {
    /// A new, empty store under `dir` (made if missing); `label` names it in errors.
    pub fn create(dir: &Path, label: &str) -> Result<FileCold, String> {
        Ok(FileCold {
            dir: dir.to_path_buf(),
            label: label.to_string(),
            file: open_unlinked(dir, label)?,
            index: FastMap::default(),
            flushed: 0,
            pending: Vec::new(),
            live: 0,
            generation: 0,
        })
    }

    /// Bytes the file and its buffer hold, live or not.
    pub fn file_bytes(&self) -> u64 {
        self.flushed + self.pending.len() as u64
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

    fn read(&self, at: u64, len: u32) -> Result<Vec<u8>, String> {
        if at >= self.flushed {
            let from = (at - self.flushed) as usize;
            return Ok(self.pending[from..from + len as usize].to_vec());
        }
        let mut bytes = vec![0; len as usize];
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| self.failed("read from", &e))?;
        Ok(bytes)
    }

    /// Points `key` at `len` bytes at `at`, replacing (and counting as garbage) its old place.
    fn place(&mut self, key: &str, at: u64, len: u32) {
        if let Some((_, old)) = self.index.insert(key.to_string(), (at, len)) {
            self.live -= u64::from(old);
        }
        self.live += u64::from(len);
    }

    /// Copies the live values to a new file once garbage dominates (see the module docs).
    fn compact_if_due(&mut self) -> Result<(), String> {
        let garbage = self.file_bytes() - self.live;
        if garbage < COMPACT_GARBAGE || garbage < self.live {
            return Ok(());
        }
        let mut fresh = FileCold::create(&self.dir, &self.label)?;
        for (key, &(at, len)) in &self.index {
            let bytes = self.read(at, len)?;
            fresh.put(key, &bytes)?;
        }
        fresh.flush()?;
        fresh.generation = self.generation + 1;
        *self = fresh;
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

impl ColdStore for FileCold {
    /// A value the file cannot take is rolled back alone (the map keeps it in memory); the values
    /// taken before it stay in the buffer, and the next flush tries them again.
    fn put(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
        let len =
            u32::try_from(bytes.len()).map_err(|_| format!("a {}-byte value", bytes.len()))?;
        let at = self.file_bytes();
        self.pending.extend_from_slice(bytes);
        let flushing = self.pending.len() >= FLUSH_BYTES;
        if flushing {
            if let Err(e) = self.flush() {
                self.pending.truncate((at - self.flushed) as usize);
                return Err(e);
            }
        }
        self.place(key, at, len);
        if flushing {
            // The value is stored either way; a file that cannot be compacted now is at a later
            // flush.
            let _ = self.compact_if_due();
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.index.get(key) {
            Some(&(at, len)) => self.read(at, len).map(Some),
            None => Ok(None),
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        self.detach(key).is_some()
    }

    fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    fn keys(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// One lookup: the value is detached first and reinstated only if the read fails.
    fn take(&mut self, key: &str) -> Result<Option<Taken>, String> {
        let Some(detached) = self.detach(key) else {
            return Ok(None);
        };
        match self.read(detached.at, detached.len) {
            Ok(bytes) => Ok(Some((bytes, Some(detached)))),
            Err(e) => {
                self.reinstate(key, detached);
                Err(e)
            }
        }
    }

    /// The bytes stay in the file (or its buffer), counted as garbage until reinstated.
    fn detach(&mut self, key: &str) -> Option<Detached> {
        let (at, len) = self.index.remove(key)?;
        self.live -= u64::from(len);
        Some(Detached {
            generation: self.generation,
            at,
            len,
        })
    }

    fn reinstate(&mut self, key: &str, d: Detached) -> bool {
        if d.generation != self.generation {
            return false;
        }
        self.place(key, d.at, d.len);
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
        assert!(cold.remove("a") && !cold.remove("a") && !cold.contains("a"));
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
        let handle = cold.detach("a").unwrap();
        assert!(!cold.contains("a") && cold.get("a").unwrap().is_none());
        assert!(cold.reinstate("a", handle));
        assert_eq!(cold.get("a").unwrap().as_deref(), Some(&b"case a"[..]));
        assert_eq!(cold.file_bytes(), before, "nothing written again");

        // Taken (read and detached in one): the same, through the buffer or the file.
        let (bytes, handle) = cold.take("a").unwrap().unwrap();
        assert_eq!(
            (bytes.as_slice(), cold.contains("a")),
            (&b"case a"[..], false)
        );
        assert!(cold.reinstate("a", handle.unwrap()) && cold.take("b").unwrap().is_none());

        // Detached, then garbage enough for a compaction: the bytes did not move with it.
        let handle = cold.detach("a").unwrap();
        let value = vec![1u8; 8_000];
        for round in 0..12 {
            for i in 0..1_000 {
                cold.put(&format!("k{i}"), &value[..8_000 - round]).unwrap();
            }
        }
        assert!(cold.generation > 0, "compacted");
        assert!(!cold.reinstate("a", handle) && !cold.contains("a"));
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
