//! `partner-sync replay`: sends chosen dead letters back to the input topics they came from, once
//! the cause is fixed (a mapping table, a legal entity, a registered schema, a parking bound).
//!
//! A replay reads the dead-letter topic up to the end it has when the replay starts, decides what
//! to send ([`mod@plan`], pure), sends each chosen dead letter's original key, value and own headers to
//! its original topic, and, once that record is acknowledged, appends a mark to the dead-letter
//! topic (a record with no value and header `partnersync.replay.of = <partition>/<offset>`). A
//! later replay reads the marks and does not send those dead letters again, so a replay that
//! stops half-way can simply be run again. A crash between a record and its mark sends that one
//! record twice, which the engine absorbs (the second is a `duplicate`). A replayed record that
//! fails again becomes a new dead letter, replayable in turn.

mod plan;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub use plan::{plan, Letter, Selection, Verdict, REPLAY_OF, REPLAY_TO};

use crate::runtime::Topics;
use crate::settings::{ClientRole, Settings};

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Sent (or to send), by reason and original topic.
    pub replayed: BTreeMap<(String, String), usize>,
    pub already_replayed: usize,
    pub not_selected: usize,
    /// Chosen but not sendable, by why.
    pub not_replayable: BTreeMap<&'static str, usize>,
    /// One line per dead letter sent (or to send).
    pub lines: Vec<String>,
}

impl Report {
    pub fn sent(&self) -> usize {
        self.replayed.values().sum()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ((reason, topic), n) in &self.replayed {
            writeln!(f, "  {n} × {reason} → {topic}")?;
        }
        writeln!(
            f,
            "  {} already replayed, {} not selected",
            self.already_replayed, self.not_selected
        )?;
        for (why, n) in &self.not_replayable {
            writeln!(f, "  {n} not replayable: {why}")?;
        }
        Ok(())
    }
}

/// Replays the dead letters `selection` chooses; with `dry_run`, only says which it would send.
/// Gives up with a sentence if the dead-letter topic cannot be read to its end within `timeout`.
pub async fn replay(
    settings: &Settings,
    selection: &Selection,
    dry_run: bool,
    timeout: Duration,
) -> Result<Report, String> {
    let topics = Topics::new(&settings.topics);
    let letters = read_to_end(settings, &topics.dead_letters, timeout)?;
    let inputs: Vec<&str> = topics.inputs().collect();
    let verdicts = plan(&letters, selection, &inputs);
    let mut report = Report::default();
    let producer: Option<FutureProducer> = if dry_run {
        None
    } else {
        Some(
            settings
                .kafka
                .client_config(ClientRole::Producer)?
                .create()
                .map_err(|e| format!("cannot create a Kafka producer: {e}"))?,
        )
    };
    for (letter, verdict) in letters.iter().zip(verdicts) {
        let topic = match verdict {
            Verdict::Replay(topic) => topic,
            Verdict::AlreadyReplayed => {
                report.already_replayed += 1;
                continue;
            }
            Verdict::NotSelected => {
                report.not_selected += 1;
                continue;
            }
            Verdict::NotReplayable(why) => {
                *report.not_replayable.entry(why).or_default() += 1;
                continue;
            }
            Verdict::Mark => continue,
        };
        let from = format!(
            "{}/{}@{}",
            topics.dead_letters, letter.partition, letter.offset
        );
        let line = match &producer {
            None => format!("would replay {from} ({}) to {topic}", letter.reason()),
            Some(producer) => {
                let to = send_back(producer, letter, &topic, timeout).await?;
                mark(producer, &topics.dead_letters, letter, &to, timeout).await?;
                format!("replayed {from} ({}) to {to}", letter.reason())
            }
        };
        report.lines.push(line);
        *report
            .replayed
            .entry((letter.reason().to_string(), topic))
            .or_default() += 1;
    }
    Ok(report)
}

/// Sends the dead letter's original record to `topic`; returns where it landed.
async fn send_back(
    producer: &FutureProducer,
    letter: &Letter,
    topic: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut headers = OwnedHeaders::new();
    for (k, v) in letter.original_headers() {
        headers = headers.insert(Header {
            key: &k,
            value: Some(&v),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = &letter.key {
        record = record.key(key.as_slice());
    }
    if let Some(value) = &letter.value {
        record = record.payload(value.as_slice());
    }
    let delivered = producer
        .send(record, timeout)
        .await
        .map_err(|(e, _)| format!("cannot send a dead letter back to {topic}: {e}"))?;
    Ok(format!(
        "{topic}/{}@{}",
        delivered.partition, delivered.offset
    ))
}

/// Appends the mark that says `letter` was replayed (to `to`).
async fn mark(
    producer: &FutureProducer,
    dead_letters: &str,
    letter: &Letter,
    to: &str,
    timeout: Duration,
) -> Result<(), String> {
    let of = format!("{}/{}", letter.partition, letter.offset);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: REPLAY_OF,
            value: Some(&of),
        })
        .insert(Header {
            key: REPLAY_TO,
            value: Some(to),
        });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dead_letters).headers(headers);
    if let Some(key) = &letter.key {
        record = record.key(key.as_slice());
    }
    producer.send(record, timeout).await.map_err(|(e, _)| {
        format!(
            "replayed {of} to {to}, but cannot mark it on {dead_letters}: {e}. A second replay will send it again, which the connector absorbs"
        )
    })?;
    Ok(())
}

/// Every record of `topic` up to the end offsets it has now.
fn read_to_end(settings: &Settings, topic: &str, timeout: Duration) -> Result<Vec<Letter>, String> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = settings
        .kafka
        .client_config(ClientRole::StateReader)?
        .create()
        .map_err(|e| format!("cannot create a Kafka consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("cannot read the metadata of {topic}: {e}; check kafka.bootstrap_servers and that the topic exists"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if partitions == 0 {
        return Err(format!(
            "topic {topic} does not exist; check topics.dead_letters"
        ));
    }
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| format!("cannot read the end offsets of {topic}: {e}"))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| e.to_string())?;
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut letters = Vec::new();
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(format!(
                "could not read {topic} to its end within {} s (partitions {:?} unfinished); raise --timeout-seconds or check the brokers",
                timeout.as_secs(),
                ends.keys().collect::<Vec<_>>()
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // A transaction's markers take offsets no record is read at: ask where reading is.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let Offset::Offset(at) = e.offset() {
                        if ends.get(&e.partition()).is_some_and(|end| at >= *end) {
                            ends.remove(&e.partition());
                        }
                    }
                }
            }
            continue;
        };
        let m = message.map_err(|e| format!("cannot read {topic}: {e}"))?;
        let partition = m.partition();
        if ends.get(&partition).is_some_and(|end| m.offset() < *end) {
            letters.push(Letter {
                partition,
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        if ends
            .get(&partition)
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&partition);
        }
    }
    Ok(letters)
}
