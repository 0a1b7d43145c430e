//! Rebuilding the engine's state of the cases partitions this instance owns, from the state topic.
//!
//! Each partition's state is read from the beginning through a fence record this instance writes
//! first (see [`read_partition`]). All owned partitions not restored yet are restored together, when
//! the first record that needs one arrives: after an assignment, restoring one at a time made each
//! wait for the previous (on Tansu ~0.1–0.5 s each; on a cluster it grows with the state's size).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::spill::FileCold;
use super::stats::Stats;
use super::RuntimeError;
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
    fence_producer: &FutureProducer,
    state_topic: &str,
    partitions: &[i32],
    spill: Option<Spill>,
    stats: &Stats,
) -> Result<Vec<(i32, EngineState)>, RuntimeError> {
    let fence_key = format!("fence/{}", kafka.client_id);
    // The payload says when it was written (milliseconds since the epoch), for people reading it.
    let stamp = super::now_ms().to_string();
    let fence_failed = |partition: i32, e: &dyn std::fmt::Display| {
        RuntimeError::State(format!(
            "cannot write the restore fence to {state_topic} partition {partition}: {e}"
        ))
    };
    // Write every fence first (they travel together), then wait for their offsets.
    let mut fences = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        let record = rdkafka::producer::FutureRecord::to(state_topic)
            .partition(partition)
            .key(&fence_key)
            .payload(&stamp);
        let delivery = fence_producer
            .send_result(record)
            .map_err(|(e, _)| fence_failed(partition, &e))?;
        fences.push((partition, delivery));
    }
    let started = Instant::now();
    let mut readers = Vec::with_capacity(fences.len());
    for (partition, delivery) in fences {
        let fence = match delivery.await {
            Ok(Ok(delivery)) => delivery.offset,
            Ok(Err((e, _))) => return Err(fence_failed(partition, &e)),
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
                crate::alloc::collect_this_threads_garbage();
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
            .map_err(RuntimeError::State)?;
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
    let mut latest: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)> = HashMap::new();
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
            latest.insert(key.to_vec(), (m.offset(), m.payload().map(<[u8]>::to_vec)));
            records += 1;
        }
        if m.offset() >= fence {
            break;
        }
    }
    close_later(reader);
    let mut state = EngineState::default();
    if let Some(spill) = spill {
        state.spill_to(
            Box::new(FileCold::create(&spill.dir, &format!("cases-{partition}"))?),
            Box::new(FileCold::create(
                &spill.dir,
                &format!("customers-{partition}"),
            )?),
            spill.resident_cases,
        );
    }
    for (key, (offset, value)) in latest {
        let Some(key) = std::str::from_utf8(&key).ok().and_then(StateKey::parse) else {
            continue; // a fence, or a record that is not ours
        };
        state.restore_entry(&key, value.as_deref()).map_err(|e| {
            format!("state record at {topic}/{partition}@{offset} is not valid: {e}")
        })?;
    }
    Ok((state, records))
}
