//! Which dead letters a replay sends, and where: decided from plain values, no Kafka.

use std::collections::BTreeSet;

/// Header prefixes the connector adds to a dead letter; what remains are the record's own headers.
const ERROR_HEADER_PREFIXES: [&str; 2] = ["__connect.errors.", "partnersync.errors."];
/// A replay's mark on the dead-letter topic: `<partition>/<offset>` of the dead letter it replayed.
pub const REPLAY_OF: &str = "partnersync.replay.of";
/// Where the replayed record landed: `<topic>/<partition>/<offset>`.
pub const REPLAY_TO: &str = "partnersync.replay.to";

/// One record of the dead-letter topic, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    /// When it was dead-lettered (the record's timestamp), epoch ms.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Letter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The topic the record was first read from.
    pub fn original_topic(&self) -> Option<&str> {
        self.header("__connect.errors.topic")
    }

    pub fn reason(&self) -> &str {
        self.header("partnersync.errors.reason").unwrap_or("")
    }

    /// The record's own headers, without the error headers the dead letter added.
    pub fn original_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(k, _)| !ERROR_HEADER_PREFIXES.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect()
    }

    /// The dead letter this record marks as replayed, if it is a replay's mark.
    fn marks(&self) -> Option<(i32, i64)> {
        let (partition, offset) = self.header(REPLAY_OF)?.split_once('/')?;
        Some((partition.parse().ok()?, offset.parse().ok()?))
    }
}

/// Which dead letters to replay. Each given criterion must hold; `all` selects without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub reasons: Vec<String>,
    pub topics: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub all: bool,
}

impl Selection {
    /// True when it says which dead letters it wants (a replay of everything must be asked for).
    pub fn is_given(&self) -> bool {
        self.all
            || !self.reasons.is_empty()
            || !self.topics.is_empty()
            || self.since_ms.is_some()
            || self.until_ms.is_some()
    }

    fn selects(&self, letter: &Letter) -> bool {
        let at = letter.timestamp_ms.unwrap_or(0);
        (self.reasons.is_empty() || self.reasons.iter().any(|r| r == letter.reason()))
            && (self.topics.is_empty()
                || letter
                    .original_topic()
                    .is_some_and(|t| self.topics.iter().any(|s| s == t)))
            && self.since_ms.is_none_or(|since| at >= since)
            && self.until_ms.is_none_or(|until| at < until)
    }
}

/// What a replay does with one record of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it back to this input topic.
    Replay(String),
    /// An earlier replay sent it already (its mark is on the dead-letter topic).
    AlreadyReplayed,
    /// The selection does not take it.
    NotSelected,
    /// It cannot be sent back, for this reason (a sentence).
    NotReplayable(&'static str),
    /// A replay's own mark, not a dead letter.
    Mark,
}

/// The verdict on each letter, in order. `inputs` are the topics partner-sync reads: a dead
/// letter goes back only to one of them.
pub fn plan(letters: &[Letter], selection: &Selection, inputs: &[&str]) -> Vec<Verdict> {
    let marked: BTreeSet<(i32, i64)> = letters.iter().filter_map(Letter::marks).collect();
    letters
        .iter()
        .map(|letter| {
            if letter.marks().is_some() {
                return Verdict::Mark;
            }
            if !selection.selects(letter) {
                return Verdict::NotSelected;
            }
            if marked.contains(&(letter.partition, letter.offset)) {
                return Verdict::AlreadyReplayed;
            }
            let Some(topic) = letter.original_topic() else {
                return Verdict::NotReplayable("it names no original topic");
            };
            if !inputs.contains(&topic) {
                return Verdict::NotReplayable(
                    "its original topic is not an input topic (an internal record, re-read from the inputs instead)",
                );
            }
            if letter.value.is_none() {
                return Verdict::NotReplayable(
                    "it does not carry the original value; fetch the record from its original topic",
                );
            }
            Verdict::Replay(topic.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, reason: &str, topic: &str, at: i64) -> Letter {
        Letter {
            partition: 0,
            offset,
            timestamp_ms: Some(at),
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                ("traceparent".into(), b"00-1-2-01".to_vec()),
                ("__connect.errors.topic".into(), topic.as_bytes().to_vec()),
                (
                    "partnersync.errors.reason".into(),
                    reason.as_bytes().to_vec(),
                ),
            ],
        }
    }

    fn mark(offset: i64, of: i64) -> Letter {
        Letter {
            value: None,
            headers: vec![(REPLAY_OF.into(), format!("0/{of}").into_bytes())],
            ..letter(offset, "", "", 0)
        }
    }

    #[test]
    fn a_replay_selects_by_reason_topic_and_time_and_skips_what_is_marked() {
        let inputs = ["sales.contact.changes", "sales.account.changes"];
        let letters = vec![
            letter(0, "too_many_parked", "sales.contact.changes", 1_000),
            letter(1, "unknown_schema", "sales.account.changes", 2_000),
            letter(2, "too_many_parked", "sales.account.changes", 3_000),
            letter(3, "too_many_parked", "partnersync.cases", 3_500),
            Letter {
                value: None,
                ..letter(4, "too_many_parked", "sales.contact.changes", 4_000)
            },
            mark(5, 0),
        ];
        let by_reason = Selection {
            reasons: vec!["too_many_parked".into()],
            ..Selection::default()
        };
        let verdicts = plan(&letters, &by_reason, &inputs);
        assert_eq!(verdicts[0], Verdict::AlreadyReplayed);
        assert_eq!(verdicts[1], Verdict::NotSelected);
        assert_eq!(verdicts[2], Verdict::Replay("sales.account.changes".into()));
        assert!(
            matches!(verdicts[3], Verdict::NotReplayable(s) if s.contains("not an input topic"))
        );
        assert!(matches!(verdicts[4], Verdict::NotReplayable(s) if s.contains("original value")));
        assert_eq!(verdicts[5], Verdict::Mark);

        let by_time = Selection {
            since_ms: Some(1_500),
            until_ms: Some(3_000),
            ..Selection::default()
        };
        let verdicts = plan(&letters, &by_time, &inputs);
        assert_eq!(verdicts[1], Verdict::Replay("sales.account.changes".into()));
        assert_eq!(verdicts[2], Verdict::NotSelected, "until is exclusive");

        let by_topic = Selection {
            topics: vec!["sales.contact.changes".into()],
            ..Selection::default()
        };
        assert_eq!(
            plan(&letters, &by_topic, &inputs)[..3],
            [
                Verdict::AlreadyReplayed,
                Verdict::NotSelected,
                Verdict::NotSelected
            ]
        );
        assert!(!Selection::default().is_given());
        assert!(by_topic.is_given());
    }

    #[test]
    fn the_original_headers_are_the_records_own() {
        let l = letter(0, "x", "t", 0);
        assert_eq!(
            l.original_headers(),
            vec![("traceparent".to_string(), b"00-1-2-01".to_vec())]
        );
    }
}
