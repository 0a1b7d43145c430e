//! Counters of what the pipeline did: the one place every record's outcome is counted.
//!
//! Each method is named for what happened, so call sites read as sentences. The figures back the
//! `run` command's exit summary and the tests' assertions; the metrics endpoint reads the same.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::{Decision, Disposition};
use crate::model::SourceKind;

/// Shared counters; cheap to update from the processing loop.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
    in_flight: AtomicUsize,
    paused: AtomicBool,
    restores: AtomicU64,
    ready: AtomicBool,
}

impl Stats {
    fn add(&self, key: String, n: u64) {
        *self.counts.lock().expect("stats").entry(key).or_default() += n;
    }

    /// A snapshot of every counter, by name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("stats").clone()
    }

    /// One counter's value (0 if never counted).
    pub fn get(&self, key: &str) -> u64 {
        self.counts
            .lock()
            .expect("stats")
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    pub fn consumed(&self, topic: &str) {
        self.add(format!("consumed/{topic}"), 1);
    }

    pub fn produced(&self, topic: &str) {
        self.add(format!("produced/{topic}"), 1);
    }

    pub fn decided(&self, kind: SourceKind, d: &Decision, _took: Duration, _modified_on: i64) {
        let outcome = match &d.disposition {
            Disposition::Emitted => "emitted".to_string(),
            Disposition::Skipped(r) => format!("skipped/{}", r.as_str()),
            Disposition::Parked(r) => format!("parked/{}", r.as_str()),
            Disposition::Rejected(r) => format!("rejected/{}", r.code()),
        };
        self.add(format!("decided/{}/{outcome}", kind.as_str()), 1);
        for c in &d.commands {
            self.add(format!("command/{}", c.kind().as_str()), 1);
        }
    }

    pub fn dead_letter(&self, stage: &str, reason: &str) {
        self.add(format!("dead_letter/{stage}/{reason}"), 1);
    }

    pub fn expired(&self) {
        self.add("parked_expired".into(), 1);
    }

    pub fn registry(&self, outcome: &str) {
        self.add(format!("registry/{outcome}"), 1);
    }

    pub fn committed(&self, ok: bool) {
        self.add(
            if ok {
                "commits".into()
            } else {
                "commit_failures".into()
            },
            1,
        );
    }

    pub fn restored(&self) {
        self.restores.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Ordering::Relaxed);
    }

    pub fn set_paused(&self, paused: bool) {
        if paused && !self.paused.load(Ordering::Relaxed) {
            self.add("intake_pauses".into(), 1);
        }
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn restores(&self) -> u64 {
        self.restores.load(Ordering::Relaxed)
    }

    /// Ready: partitions are assigned and the pipeline is consuming.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The sum of every counter whose name starts with `prefix`.
    pub fn sum(&self, prefix: &str) -> u64 {
        self.counts
            .lock()
            .expect("stats")
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}
