//! A counter family labelled by topic, with each topic's counter resolved once.
//!
//! Why: `IntCounterVec::with_label_values` hashes the label values, takes the family's lock and
//! clones the child at every call, and the records read and produced are counted per record on
//! the pipeline's hot path (in a drain profile, `with_label_values` and its lock were ~1–2% of the
//! pipeline thread). A connector has a dozen topics: a short scan of the topics seen so far
//! finds the counter without hashing or locking.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

/// More topics than slots are counted through the family directly: correct, only slower.
const SLOTS: usize = 24;

pub(super) struct ByTopic {
    family: IntCounterVec,
    slots: [OnceLock<(Box<str>, IntCounter)>; SLOTS],
}

impl ByTopic {
    pub(super) fn new(family: IntCounterVec) -> ByTopic {
        ByTopic {
            family,
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Adds one to `topic`'s counter.
    pub(super) fn inc(&self, topic: &str) {
        for slot in &self.slots {
            match slot.get() {
                Some((seen, counter)) if **seen == *topic => return counter.inc(),
                Some(_) => continue,
                None => {
                    let counter = self.family.with_label_values(&[topic]);
                    counter.inc();
                    // Another thread may have taken the slot first, for this topic or another:
                    // either way the count is in the family, and the next call scans on.
                    let _ = slot.set((topic.into(), counter));
                    return;
                }
            }
        }
        self.family.with_label_values(&[topic]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn every_topic_is_counted_under_its_own_label_also_past_the_slots() {
        let family = IntCounterVec::new(Opts::new("t_total", "t"), &["topic"]).unwrap();
        let by_topic = ByTopic::new(family.clone());
        let topics: Vec<String> = (0..SLOTS + 5).map(|i| format!("topic-{i}")).collect();
        for (i, topic) in topics.iter().enumerate() {
            for _ in 0..=i {
                by_topic.inc(topic);
            }
        }
        for (i, topic) in topics.iter().enumerate() {
            assert_eq!(
                family.with_label_values(&[topic]).get(),
                i as u64 + 1,
                "{topic}"
            );
        }
    }
}
