//! The rdkafka edge: client contexts and the producer with delivery tokens.
//!
//! Records are converted to owned [`SourceRecord`]s as soon as they are read; nothing past this module
//! sees an rdkafka message.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;

use super::client_error;
use super::Stats;
use crate::engine::SourceRecord;

/// Identifies one produced record: which input record it belongs to and in which phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Index of the input topic-partition in the pipeline's table; `u32::MAX` for records not tied to
    /// an input (expiry, fences).
    pub tp: u32,
    /// The input record's intake sequence number in its partition (see [`super::tracker`]); the
    /// batch id for expiry records.
    pub seq: i64,
    pub phase: Phase,
}

impl Token {
    /// A dead letter of record `seq` of `tp` (a phase-1 output of its own phase, so a dead letter
    /// the broker refuses is told apart from a refused command).
    pub fn dead_letter(tp: u32, seq: i64) -> Token {
        Token {
            tp,
            seq,
            phase: Phase::DeadLetter,
        }
    }

    /// A phase-1 output (command, case record or dead letter) of record `seq` of `tp`.
    pub fn one(tp: u32, seq: i64) -> Token {
        Token {
            tp,
            seq,
            phase: Phase::One,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Commands, or the case record.
    One,
    /// The record's dead letter (counted with phase 1).
    DeadLetter,
    /// State writes.
    Two,
    /// A dead letter for an expired parked event, or an alert that came due with time (batch id
    /// in `seq`).
    ExpiryOutput,
    /// A state write after an expiry.
    ExpiryState,
    /// A fence written to a cases partition (see [`super::local`]); the fence's number in `seq`.
    Fence,
}

/// A delivery report, as the pipeline consumes it.
#[derive(Debug)]
pub struct Delivery {
    pub token: Token,
    pub error: Option<(RDKafkaErrorCode, String)>,
    /// Where the record landed (used by restore fences).
    pub partition: i32,
    pub offset: i64,
}

/// The producer's context: forwards delivery reports to the pipeline; tells readiness whether a
/// broker is reachable.
pub struct ProducerCtx {
    pub deliveries: UnboundedSender<Delivery>,
    pub stats: Arc<Stats>,
    pub refused_login: Arc<RefusedLogin>,
}

impl ClientContext for ProducerCtx {
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.stats.set_producer_up(up);
    }

    /// "All brokers down" makes the connector not ready until a broker answers again.
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.stats.set_producer_up(false);
        }
        self.refused_login.note(&error, reason);
        log_client_error("producer", error, reason);
    }
}

/// librdkafka reports most errors as transient and recovers by itself; they are logged as
/// warnings, each condition (client and code) at most once per
/// [`super::repeats::CLIENT_WARNINGS_EVERY`].
fn log_client_error(client: &str, error: KafkaError, reason: &str) {
    let key = format!("{client}/{:?}", client_error::code_of(&error));
    if let Some(left_out) = super::repeats::CLIENT_WARNINGS.admit(&key, std::time::Instant::now()) {
        tracing::warn!(client, error = %error, reason, left_out, "librdkafka reported an error; it keeps retrying.");
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        let delivery = match result {
            Ok(m) => Delivery {
                token: *token,
                error: None,
                partition: m.partition(),
                offset: m.offset(),
            },
            Err((e, m)) => Delivery {
                token: *token,
                error: Some((
                    client_error::code_of(e),
                    format!("{e} (writing to {})", m.topic()),
                )),
                partition: m.partition(),
                offset: m.offset(),
            },
        };
        let _ = self.deliveries.send(delivery);
    }
}

/// Served by a thread that sleeps while there are no events (`runtime/quiet_producer.rs`).
pub type PipelineProducer = super::quiet_producer::QuietProducer<ProducerCtx>;

/// One record to produce.
pub struct OutRecord<'a> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Vec<u8>)],
}

/// A record the producer would not queue: librdkafka's code (see [`super::client_error`]) and a
/// sentence naming the topic.
#[derive(Debug)]
pub struct Refused {
    pub code: RDKafkaErrorCode,
    pub message: String,
}

/// Sends a record, waiting politely while the local queue is full.
pub async fn send(
    producer: &PipelineProducer,
    out: OutRecord<'_>,
    token: Token,
) -> Result<(), Refused> {
    let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
        BaseRecord::with_opaque_to(out.topic, Box::new(token));
    // No header list for a record without headers (the state writes): librdkafka allocates one
    // for every list it is given, empty or not.
    if !out.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
        for (k, v) in out.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        record = record.headers(headers);
    }
    if let Some(k) = out.key {
        record = record.key(k);
    }
    if let Some(v) = out.value {
        record = record.payload(v);
    }
    if let Some(p) = out.partition {
        record = record.partition(p);
    }
    let mut waited = Duration::ZERO;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                    && waited < Duration::from_secs(60) =>
            {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
                waited += Duration::from_millis(5);
            }
            Err((e, _)) => {
                return Err(Refused {
                    code: client_error::code_of(&e),
                    message: format!("cannot queue a record for {}: {e}", out.topic),
                })
            }
        }
    }
}

/// Partitions assigned and revoked by rebalances, for the pipeline to act on.
#[derive(Debug, Default)]
pub struct RebalanceLog {
    pub revoked: Vec<(String, i32)>,
    pub assigned: Vec<(String, i32)>,
    /// Input partitions paused at their assignment, for the pipeline to resume.
    pub paused: Vec<(String, i32)>,
    pub count: u64,
}

/// The consumer's context: on revoke, flushes the producer and commits what is done, so the next owner
/// of a partition starts from durable outputs; records every change for the pipeline.
pub struct ConsumerCtx {
    /// Exactly-once: on revoke, leave the transaction to the pipeline instead of flushing and committing.
    pub transactional: bool,
    pub log: Arc<Mutex<RebalanceLog>>,
    pub producer: OnceLock<Arc<PipelineProducer>>,
    pub stats: Arc<Stats>,
    /// With records applied where they are routed: the cases topic. An assignment that brings
    /// cases partitions pauses its input partitions until their fences are back (see
    /// [`ConsumerCtx::post_rebalance`]).
    pub fence_first: Option<String>,
    pub refused_login: Arc<RefusedLogin>,
}

/// The last login the brokers refused (SASL or TLS), as librdkafka reported it to a client's error
/// callback: a metadata request that fails meanwhile only says "transport failure" or "timed
/// out". Shared by the clients of one run; the producer's callbacks are served at once by its own
/// thread, the consumer's only while it is polled.
#[derive(Debug, Default)]
pub struct RefusedLogin(Mutex<Option<(RDKafkaErrorCode, String)>>);

impl RefusedLogin {
    /// Keeps `error` if it is a refused login.
    fn note(&self, error: &KafkaError, reason: &str) {
        if let Some(
            code @ (RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL),
        ) = error.rdkafka_error_code()
        {
            *self.0.lock().expect("refused login") = Some((code, reason.to_string()));
        }
    }

    /// The last login refused, if any.
    pub fn last(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.0.lock().expect("refused login").clone()
    }
}

impl ClientContext for ConsumerCtx {
    /// Consumer lag per assigned partition, from librdkafka's own figures (-1 means unknown yet).
    fn stats(&self, statistics: Statistics) {
        let mut lags = Vec::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    lags.push((topic.clone(), *partition, p.consumer_lag));
                }
            }
        }
        self.stats.set_consumer_lag(&lags);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.refused_login.note(&error, reason);
        log_client_error("consumer", error, reason);
    }
}

fn pairs(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Exactly-once: the pipeline aborts its own open transaction at its next step; this callback
            // may run while the pipeline is producing, so it must not touch transaction state.
            if !self.transactional {
                let flushed = match self.producer.get() {
                    Some(producer) => producer.flush(Duration::from_secs(10)),
                    None => Ok(()),
                };
                // A synchronous commit: counted here (librdkafka calls `commit_callback` only for
                // asynchronous ones); its failure is in the line below.
                let committed = count_commit(
                    &self.stats,
                    consumer.commit_consumer_state(CommitMode::Sync),
                );
                match (flushed, committed) {
                    (Ok(()), Ok(())) => tracing::info!(
                        partitions = tpl.count(),
                        "Partitions revoked; outputs flushed and done offsets committed."
                    ),
                    (flushed, committed) => tracing::warn!(
                        partitions = tpl.count(),
                        flush_error = flushed.err().map(|e| e.to_string()),
                        commit_error = committed.err().map(|e| e.to_string()),
                        "Partitions revoked, but their outputs could not all be flushed or their offsets committed; the next owner processes those records again."
                    ),
                }
            } else {
                tracing::info!(partitions = tpl.count(), "Partitions revoked.");
            }
            self.stats.rebalanced("revoke");
            let mut log = self.log.lock().expect("rebalance log");
            log.revoked.extend(pairs(tpl));
            log.count += 1;
        }
    }

    /// The outcome of an asynchronous offset commit (librdkafka calls this for those only): the
    /// commit returned before the broker answered, so its failure (a broker down) is known only
    /// here.
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        commit_outcome(&self.stats, result);
    }

    /// Logs an assignment for the pipeline. When it brings cases partitions and records are
    /// applied where they are routed, its input partitions are paused here, right after the
    /// assignment and before librdkafka has fetched them (it first asks the group coordinator for
    /// their committed offsets), and the pipeline resumes them once every owned cases partition
    /// has read its fence back. Unpaused, librdkafka queued the fences behind every input record
    /// it had fetched, and records routed meanwhile were held or took the hop; on a backlog larger
    /// than the order window, every fence waited for the whole queue (2,444 records/s).
    /// Why only here: librdkafka keeps a never-consumed partition's fetch position when it is
    /// paused (`rd_kafka_toppar_pause_resume`) and drops what it had prefetched, so a pause after
    /// the first fetch would skip records.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.stats.rebalanced("assign");
            let mut paused = Vec::new();
            if let Some(cases) = &self.fence_first {
                let elements = tpl.elements();
                let mut inputs = TopicPartitionList::new();
                for e in elements.iter().filter(|e| e.topic() != cases) {
                    inputs.add_partition(e.topic(), e.partition());
                }
                if inputs.count() > 0 {
                    if elements.iter().any(|e| e.topic() == cases) {
                        if consumer.pause(&inputs).is_ok() {
                            paused = pairs(&inputs);
                        }
                    } else {
                        // No fence to wait for: none of them stays paused from an earlier
                        // assignment (a no-op for a partition that is not paused).
                        let _ = consumer.resume(&inputs);
                    }
                }
            }
            let inputs_paused = paused.len();
            let mut log = self.log.lock().expect("rebalance log");
            log.assigned.extend(pairs(tpl));
            log.paused.extend(paused);
            tracing::info!(
                partitions = tpl.count(),
                inputs_paused_until_fenced = inputs_paused,
                "Partitions assigned."
            );
        }
    }
}

/// Counts a commit's outcome, as the broker answered it; returns the failure, if any. "No offset"
/// (nothing stored since the last commit) is neither a commit nor a failure.
pub fn count_commit(stats: &Stats, result: KafkaResult<()>) -> KafkaResult<()> {
    match result {
        Ok(()) => {
            stats.committed(true);
            Ok(())
        }
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => Ok(()),
        Err(e) => {
            stats.committed(false);
            Err(e)
        }
    }
}

/// [`count_commit`], with a failure logged.
pub fn commit_outcome(stats: &Stats, result: KafkaResult<()>) {
    if let Err(e) = count_commit(stats, result) {
        tracing::warn!(error = %e, "Committing offsets failed; the next commit includes them.");
    }
}

/// A message's timestamp in epoch milliseconds, `i64::MIN` when it has none.
pub fn timestamp_of(m: &BorrowedMessage<'_>) -> i64 {
    m.timestamp().to_millis().unwrap_or(i64::MIN)
}

/// Headers that carry an input record's origin through the cases topic.
pub const H_TOPIC: &str = "partnersync.source.topic";
pub const H_PARTITION: &str = "partnersync.source.partition";
pub const H_OFFSET: &str = "partnersync.source.offset";
pub const H_KEY: &str = "partnersync.source.key";
/// The only header of a fence record on the cases topic (which has no value): who wrote it and its
/// number, `<instance>/<n>` (see [`super::local`]).
pub const H_FENCE: &str = "partnersync.fence";

/// A record the consumer handed over, converted once.
pub enum Incoming {
    /// An input record and its timestamp (`i64::MIN` when it has none).
    Input {
        record: SourceRecord,
        timestamp: i64,
    },
    /// A cases record at `partition`/`offset`, as the input record it was routed from.
    Case {
        partition: i32,
        offset: i64,
        original: SourceRecord,
    },
    /// A fence at `partition`/`offset` of the cases topic, with its [`H_FENCE`] header's text.
    Fence {
        partition: i32,
        offset: i64,
        fence: String,
    },
}

/// Converts a message read from the cases topic or an input topic. A cases record becomes its
/// original straight from librdkafka's headers: copying our origin headers into owned strings
/// first, to parse and drop them afterwards, cost ~8 allocations a record.
pub fn incoming(m: &BorrowedMessage<'_>, topics: &super::Topics) -> Incoming {
    if m.topic() != topics.cases {
        return Incoming::Input {
            record: to_source(m, topics),
            timestamp: timestamp_of(m),
        };
    }
    let headers = m.headers();
    if m.payload().is_none() {
        let fence = headers
            .iter()
            .flat_map(|hs| hs.iter())
            .find(|h| h.key == H_FENCE)
            .and_then(|h| std::str::from_utf8(h.value?).ok());
        if let Some(fence) = fence {
            return Incoming::Fence {
                partition: m.partition(),
                offset: m.offset(),
                fence: fence.to_string(),
            };
        }
    }
    let pairs = headers
        .iter()
        .flat_map(|hs| hs.iter())
        .map(|h| (h.key, h.value));
    Incoming::Case {
        partition: m.partition(),
        offset: m.offset(),
        original: original_from(
            topics,
            m.partition(),
            m.offset(),
            m.payload().unwrap_or_default(),
            pairs,
        ),
    }
}

/// The input record a cases record at `partition`/`offset` was routed from: its origin headers
/// say where it came from and its key; its other headers and `value` are the input's own. When
/// an origin header is missing, the cases record's own coordinates stay.
pub fn original_from<'h>(
    topics: &super::Topics,
    mut partition: i32,
    mut offset: i64,
    value: &[u8],
    headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
) -> SourceRecord {
    let (mut key, mut own_headers) = (None, Vec::new());
    let mut origin_topic = None;
    for (name, value) in headers {
        let text = || value.and_then(|v| std::str::from_utf8(v).ok());
        match name {
            // An input that itself carried one of our names: ours come last and win.
            H_TOPIC => origin_topic = text().or(origin_topic),
            H_PARTITION => {
                if let Some(p) = text().and_then(|t| t.parse().ok()) {
                    partition = p;
                }
            }
            H_OFFSET => {
                if let Some(o) = text().and_then(|t| t.parse().ok()) {
                    offset = o;
                }
            }
            H_KEY => key = Some(value.unwrap_or_default()),
            n if n.starts_with("partnersync.source.") => {}
            _ => own_headers.push(owned_header(name, value)),
        }
    }
    let topic = topics.shared(origin_topic.unwrap_or(&topics.cases));
    SourceRecord::new(topic, partition, offset, key, value, own_headers)
}

/// A header as a [`SourceRecord`] holds it (a header without a value becomes an empty one).
fn owned_header(name: &str, value: Option<&[u8]>) -> (String, Vec<u8>) {
    (
        name.to_string(),
        value.map(<[u8]>::to_vec).unwrap_or_default(),
    )
}

/// Copies a message into an owned record (its topic's name shared, from `topics`).
pub fn to_source(m: &BorrowedMessage<'_>, topics: &super::Topics) -> SourceRecord {
    let headers = m
        .headers()
        .map(|hs| hs.iter().map(|h| owned_header(h.key, h.value)).collect())
        .unwrap_or_default();
    let record = SourceRecord::new(
        topics.shared(m.topic()),
        m.partition(),
        m.offset(),
        m.key(),
        m.payload().unwrap_or_default(),
        headers,
    );
    match m.payload() {
        Some(_) => record,
        None => record.with_null_value(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default topics: cases `partnersync.cases`, contacts `sales.contact.changes`.
    fn topics() -> super::super::Topics {
        super::super::Topics::new(&crate::settings::Settings::defaults().topics)
    }

    #[test]
    fn the_original_record_comes_back_from_a_cases_record_without_our_headers() {
        let header = |n: &'static str, v: &'static str| (n, Some(v.as_bytes()));
        let headers = [
            header("traceparent", "00-abc-def-01"),
            // An input that itself carried one of our header names: ours, added last, wins.
            header(H_TOPIC, "someone.else"),
            header(H_TOPIC, "sales.contact.changes"),
            header(H_PARTITION, "1"),
            header(H_OFFSET, "12345"),
            header(H_KEY, "contact-1"),
        ];
        let original = original_from(&topics(), 2, 77, b"avro", headers.into_iter());
        assert_eq!(&*original.topic, "sales.contact.changes");
        assert_eq!((original.partition, original.offset), (1, 12345));
        assert_eq!(original.key(), Some(&b"contact-1"[..]));
        assert_eq!(original.value(), b"avro");
        assert_eq!(
            original.headers,
            vec![("traceparent".to_string(), b"00-abc-def-01".to_vec())]
        );
    }

    #[test]
    fn a_cases_record_without_origin_headers_keeps_its_own_coordinates() {
        let original = original_from(&topics(), 2, 77, b"", std::iter::empty());
        assert_eq!(&*original.topic, "partnersync.cases");
        assert_eq!((original.partition, original.offset), (2, 77));
        assert_eq!(original.key(), None);
    }
}
