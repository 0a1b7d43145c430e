//! Rebuilding the engine's state of the cases partitions this instance owns, from the state topic.
//!
//! Each partition's state is read from the beginning through a fence record this instance writes
//! first (see [`read_partition`]). All owned partitions not restored yet are restored together, when
//! the first record that needs one arrives: after an assignment, restoring one at a time made each
//! wait for the previous (on Tansu ~0.1–0.5 s each; on a cluster it grows with the state's size).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::quiet_producer::{send_awaiting, AwaitingCtx, QuietProducer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::spill::FileCold;
use super::stats::Stats;
use super::RuntimeError;
use crate::engine::state::{ColdStore, ColdStores};
use crate::engine::{EngineState, StateKey};
use crate::settings::{ClientRole, KafkaSettings};

/// How long one partition's restore may take before the connector stops with an error.
const BUDGET: Duration = Duration::from_secs(120);

/// Where a restored state keeps what it does not hold in memory: files under `dir`, at most
/// `resident_cases` cases in memory (`engine/state/resident.rs`).
#[derive(Debug, Clone)]
pub struct Spill {
    pub dir: PathBuf,
    pub resident_cases: usize,
}

/// Restores `partitions` of the state topic concurrently; returns each partition's state. Keeps the
/// liveness heartbeat going while it waits, on purpose.
pub async fn restore_all(
    kafka: &KafkaSettings,
    fence_producer: &QuietProducer<AwaitingCtx>,
    state_topic: &str,
    partitions: &[i32],
    spill: Option<Spill>,
    stats: &Stats,
) -> Result<Vec<(i32, EngineState)>, RuntimeError> {
    let fence_key = format!("fence/{}", kafka.client_id);
    // The payload says when it was written (milliseconds since the epoch), for people reading it.
    let stamp = super::now_ms().to_string();
    // A fence is a few bytes: its failure is the cluster's (unreachable, a leader moving), never
    // the record's, and a new run of the pipeline tries again; so does a read that failed.
    let fence_failed = |partition: i32, e: &dyn std::fmt::Display| {
        RuntimeError::Retriable(format!(
            "cannot write the restore fence to {state_topic} partition {partition}: {e}"
        ))
    };
    // Write every fence first (they travel together), then wait for their offsets.
    let mut fences = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        let delivery = send_awaiting(fence_producer, state_topic, partition, &fence_key, &stamp)
            .map_err(|e| fence_failed(partition, &e))?;
        fences.push((partition, delivery));
    }
    let started = Instant::now();
    let mut readers = Vec::with_capacity(fences.len());
    for (partition, delivery) in fences {
        let fence = match delivery.await {
            Ok(Ok((_, offset))) => offset,
            Ok(Err(e)) => return Err(fence_failed(partition, &e)),
            Err(_) => {
                return Err(RuntimeError::State(format!(
                    "the restore fence to {state_topic} partition {partition} was cancelled"
                )))
            }
        };
        let (kafka, topic, spill) = (kafka.clone(), state_topic.to_string(), spill.clone());
        readers.push((
            partition,
            tokio::task::spawn_blocking(move || {
                let read = read_partition(&kafka, &topic, partition, fence, spill, BUDGET);
                crate::alloc::give_back_freed_memory();
                read
            }),
        ));
    }
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut restored = Vec::with_capacity(readers.len());
    for (partition, mut reading) in readers {
        let result = loop {
            tokio::select! {
                r = &mut reading => break r,
                _ = beat.tick() => stats.beat(),
            }
        };
        let (state, records) = result
            .map_err(|e| RuntimeError::State(e.to_string()))?
            .map_err(RuntimeError::Retriable)?;
        tracing::info!(
            partition,
            records,
            cases = state.cases.len(),
            cases_in_memory = state.cases.resident_len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "State restored."
        );
        restored.push((partition, state));
    }
    crate::alloc::give_back_freed_memory();
    Ok(restored)
}

/// Closes a state reader on a thread of its own. Destroying a librdkafka consumer waits for its
/// broker threads to stop: ~100 ms per reader on Tansu, measured inside a restore of three empty
/// partitions (fence read after 20–69 ms, reader dropped after 121–170 ms), and the restored state
/// waited for it. Nothing depends on the close: the reader was only assigned, never in a group.
fn close_later(reader: BaseConsumer) {
    // If no thread can be started, the closure and the reader in it are dropped here: slower, not
    // wrong.
    let _ = std::thread::Builder::new()
        .name("state-reader-close".into())
        .spawn(move || drop(reader));
}

/// Reads state-topic partition `partition` from the beginning through offset `fence` (a record this
/// instance just wrote), into a fresh state. Reading to our own fence, not to the reported high
/// watermark, guarantees every state write acknowledged before the fence is seen.
fn read_partition(
    kafka: &KafkaSettings,
    topic: &str,
    partition: i32,
    fence: i64,
    spill: Option<Spill>,
    budget: Duration,
) -> Result<(EngineState, u64), String> {
    let reader: BaseConsumer = kafka
        .client_config(ClientRole::StateReader)?
        .create()
        .map_err(|e| format!("cannot create the state reader: {e}"))?;
    // Ask for the topic's metadata before assigning: measured on Tansu, the first message then
    // arrives after ~60 ms instead of ~510 ms (librdkafka otherwise waits for a later metadata
    // refresh before it knows the leader and starts fetching).
    let _ = reader.fetch_metadata(Some(topic), budget.min(Duration::from_secs(10)));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    reader
        .assign(&tpl)
        .map_err(|e| format!("cannot read state topic {topic}: {e}"))?;
    // The last value of each key, as compaction would keep it (offset for error messages). Only
    // these are decoded: decoding every record built and freed a parked event for each park and
    // release ever written, and the freed memory stayed resident between the live state's pieces.
    let mut latest = match &spill {
        Some(s) => Latest::File(FileCold::create(&s.dir, &format!("restore-{partition}"))?),
        None => Latest::Memory(HashMap::new()),
    };
    let mut records = 0;
    let deadline = Instant::now() + budget;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "restoring state partition {partition} of {topic} did not reach offset {fence} within {} s",
                budget.as_secs()
            ));
        }
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(|e| format!("reading state topic {topic}: {e}"))?;
        if let Some(key) = m.key() {
            latest.keep(key, m.offset(), m.payload())?;
            records += 1;
        }
        if m.offset() >= fence {
            break;
        }
    }
    close_later(reader);
    let mut state = EngineState::default();
    if let Some(spill) = spill {
        let file = |map: &str| -> Result<Box<dyn ColdStore>, String> {
            Ok(Box::new(FileCold::create(
                &spill.dir,
                &format!("{map}-{partition}"),
            )?))
        };
        let stores = ColdStores {
            cases: file("cases")?,
            customers: file("customers")?,
            requesters: file("requesters")?,
        };
        state.spill_to(stores, spill.resident_cases);
    }
    latest.each(|key, offset, value| {
        let Some(key) = std::str::from_utf8(key).ok().and_then(StateKey::parse) else {
            return Ok(()); // a fence, or a record that is not ours
        };
        state
            .restore_entry(&key, value)
            .map_err(|e| format!("state record at {topic}/{partition}@{offset} is not valid: {e}"))
    })?;
    Ok((state, records))
}

/// The last value of each key read so far: in memory, or, when the state spills, in a spill
/// file of its own (offset first, then the value), so that a restore holds only the file's index
/// in memory, however large the partition's state. Held whole, the entries of 66,000 cases are
/// ~80 MiB of JSON for the cases alone (1,273 bytes each), in memory until they are decoded.
enum Latest {
    Memory(HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>),
    File(FileCold),
}

impl Latest {
    fn keep(&mut self, key: &[u8], offset: i64, value: Option<&[u8]>) -> Result<(), String> {
        match self {
            Latest::Memory(m) => drop(m.insert(key.to_vec(), (offset, value.map(<[u8]>::to_vec)))),
            Latest::File(file) => {
                // A key that is not text is none of ours (it is skipped when decoding, too).
                let Ok(key) = std::str::from_utf8(key) else {
                    return Ok(());
                };
                match value {
                    // A tombstone: restoring into an empty state, nothing is the same as nothing.
                    None => drop(file.remove(key)?),
                    Some(value) => {
                        let mut stored = Vec::with_capacity(8 + value.len());
                        stored.extend_from_slice(&offset.to_le_bytes());
                        stored.extend_from_slice(value);
                        file.put(key, &stored)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `apply` with each key's last offset and value, one at a time.
    fn each(
        self,
        mut apply: impl FnMut(&[u8], i64, Option<&[u8]>) -> Result<(), String>,
    ) -> Result<(), String> {
        match self {
            Latest::Memory(m) => {
                for (key, (offset, value)) in m {
                    apply(&key, offset, value.as_deref())?;
                }
            }
            Latest::File(file) => {
                file.each(|key, stored| {
                    let (offset, value) = stored.split_at(8);
                    let offset = i64::from_le_bytes(offset.try_into().expect("8 bytes"));
                    apply(key.as_bytes(), offset, Some(value))
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same records through `latest`; what a restore into an empty state acts on (values of
    /// text keys: a tombstone there removes nothing), sorted.
    fn last_values(mut latest: Latest) -> Vec<(Vec<u8>, i64, Vec<u8>)> {
        latest.keep(b"case/a", 1, Some(b"first")).unwrap();
        latest.keep(b"case/b", 2, Some(b"b")).unwrap();
        latest.keep(b"case/a", 3, Some(b"second")).unwrap();
        latest.keep(b"case/b", 4, None).unwrap();
        latest.keep(&[0xff, 0xfe], 5, Some(b"not ours")).unwrap();
        let mut seen = Vec::new();
        latest
            .each(|key, offset, value| {
                if let (Ok(_), Some(value)) = (std::str::from_utf8(key), value) {
                    seen.push((key.to_vec(), offset, value.to_vec()));
                }
                Ok(())
            })
            .unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn a_restore_through_a_spill_file_keeps_the_last_value_of_each_key_as_one_in_memory_does() {
        let dir = std::env::temp_dir().join(format!("partner-sync-restore-{}", std::process::id()));
        let file = last_values(Latest::File(FileCold::create(&dir, "test").unwrap()));
        assert_eq!(file, last_values(Latest::Memory(HashMap::new())));
        assert_eq!(file, vec![(b"case/a".to_vec(), 3, b"second".to_vec())]);
        let _ = std::fs::remove_dir(&dir);
    }
}
