//! The processing loop: one consumer over the input topics and the cases topic, one producer.
//!
//! - A record from an **input topic** is routed: wire header checked, writer schema fetched (cached),
//!   the Avro read as far as the case key needs, and the original bytes re-keyed by case onto the
//!   cases topic (phase 1). When this instance owns the case's partition and it is local, the
//!   record is applied at once instead ([`local`]). Bad records go to the dead letters instead.
//! - A record from the **cases topic** is applied: decoded whole, run through the engine with its
//!   partition's state, commands encoded and sent (phase 1), then the touched state entries are written
//!   to the same partition of the state topic (phase 2, see [`super::tracker`]).
//! - Offsets are stored when a record is fully acknowledged and committed every
//!   `delivery.commit_interval_ms`.
//!
//! This file holds the loop: intake, rebalances, commits and dispatch to a record's stage.
//! [`read`] reads a record's schema and Avro, [`route`] and [`apply`] are the two record paths,
//! [`acks`] the outputs and their acknowledgements, [`local`] applying without the hop and its
//! fences, [`expiry`] parked events that waited too long, [`transaction`] the exactly-once mode.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::Producer;
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

mod acks;
mod apply;
mod expiry;
mod intake;
mod local;
mod read;
mod route;
mod transaction;

use intake::Intake;
pub(crate) use local::warm_up;
use local::Held;
use transaction::Txn;

use super::kafka::{self, ConsumerCtx, Delivery, Incoming, PipelineProducer, RebalanceLog};
use super::local::LocalRoutes;
use super::stats::Stats;
use super::tracker::{PartitionTracker, Then};
use super::FastMap;
use super::{RuntimeError, Topics};
use crate::codec::Codec;
use crate::engine::{Engine, EngineState, SourceRecord};
use crate::model::SourceKind;
use crate::registry::RegistryClient;
use crate::settings::Settings;

/// Records taken after which an idle pipeline gives freed memory back (see
/// [`Pipeline::give_back_after_burst`]): a burst, not a trickle.
const GIVE_BACK_AFTER: u64 = 10_000;

/// Nanoseconds since the epoch (0 if the clock is before it).
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A state write waiting in phase 2.
pub struct StateRecord {
    key: String,
    value: Option<Vec<u8>>,
    partition: i32,
}

impl super::tracker::Keyed for StateRecord {
    type Key<'a> = &'a str;
    fn key(&self) -> &str {
        &self.key
    }
}

pub struct Pipeline {
    pub settings: Settings,
    pub engine: Engine,
    pub codec: Codec,
    pub registry: RegistryClient,
    pub topics: Topics,
    pub consumer: Arc<StreamConsumer<ConsumerCtx>>,
    pub producer: Arc<PipelineProducer>,
    pub schema_ids: FastMap<crate::model::CommandKind, u32>,
    pub rebalance: Arc<Mutex<RebalanceLog>>,
    pub stats: Arc<Stats>,
    direct: FastMap<(u32, SourceKind), bool>,
    tps: Vec<(String, i32)>,
    /// Topic → partition → index into `tps` (looked up per record with the borrowed topic name).
    tp_index: FastMap<String, FastMap<i32, u32>>,
    /// Records in flight per input partition, each with its original (for dead letters on failure).
    trackers: FastMap<u32, PartitionTracker<StateRecord, SourceRecord>>,
    states: FastMap<i32, EngineState>,
    expiry_batches: FastMap<i64, (usize, Vec<StateRecord>)>,
    /// Records whose dead letter the broker refused as too large, so it was sent again without its
    /// value (a second refusal stops: nothing smaller is left). Rare: one entry per such refusal.
    valueless: std::collections::HashSet<(u32, i64)>,
    next_batch: i64,
    fence_producer: super::quiet_producer::QuietProducer<super::quiet_producer::AwaitingCtx>,
    in_flight: usize,
    stored_since_commit: bool,
    /// Exactly-once: the open transaction, if the guarantee asks for one.
    txn: Option<Txn>,
    /// Input records waiting in the order window, and what it knows of the input partitions.
    intake: Intake,
    /// Owned cases partitions that apply records without the hop, and the records held for one
    /// (see [`super::local`]).
    local: LocalRoutes<Held>,
    /// The cases topic's partition count: the route stage picks each record's partition itself.
    cases_partitions: i32,
    /// Who this instance is, in the fences it writes: `<pid>-<start time in ns>`.
    fence_tag: String,
    /// Input partitions paused at their assignment until the owned cases partitions are local
    /// (see `ConsumerCtx::post_rebalance` in `kafka.rs`), and since when.
    paused_inputs: Vec<(String, i32)>,
    paused_since: Option<Instant>,
    /// Records taken since freed memory was last given back (see [`Pipeline::give_back_after_burst`]).
    taken_since_give_back: u64,
    /// Spill-file refusals already logged (`Pipeline::report_state`).
    spill_refusals_seen: u64,
}

/// Where a record sits in the tracker of the partition it is processed in.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    /// At this offset of that partition (an input record, or a cases record).
    Offset(i64),
    /// An input record applied without the hop: tracked in its cases partition with no offset of
    /// its own, then acknowledged in its input partition.
    Linked(Then),
}

/// A record for [`Pipeline::process`].
pub(super) enum Job {
    /// An input record, leaving the order window.
    Route(SourceRecord),
    /// A record of cases partition `partition` (read back from it at an offset, or routed to it
    /// and applied here), as the input record it was routed from.
    Apply {
        partition: i32,
        at: At,
        original: SourceRecord,
    },
}

enum Event {
    Shutdown,
    Delivery(Delivery),
    /// A record as read (see [`Incoming`]).
    Message(Result<Incoming, String>),
    Commit,
    Expire,
    /// The order window may let records out.
    Window,
}

impl Event {
    /// What the consumer handed over, converted to owned values once.
    fn read(
        m: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
        topics: &Topics,
    ) -> Event {
        Event::Message(
            m.map(|m| kafka::incoming(&m, topics))
                .map_err(|e| e.to_string()),
        )
    }
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        engine: Engine,
        registry: RegistryClient,
        topics: Topics,
        consumer: Arc<StreamConsumer<ConsumerCtx>>,
        producer: Arc<PipelineProducer>,
        schema_ids: FastMap<crate::model::CommandKind, u32>,
        rebalance: Arc<Mutex<RebalanceLog>>,
        stats: Arc<Stats>,
        fence_producer: super::quiet_producer::QuietProducer<super::quiet_producer::AwaitingCtx>,
        cases_partitions: i32,
    ) -> Pipeline {
        Pipeline {
            engine,
            codec: Codec::new(),
            registry,
            topics,
            consumer,
            producer,
            schema_ids,
            rebalance,
            stats,
            direct: FastMap::default(),
            tps: Vec::new(),
            tp_index: FastMap::default(),
            trackers: FastMap::default(),
            states: FastMap::default(),
            expiry_batches: FastMap::default(),
            valueless: Default::default(),
            next_batch: 0,
            fence_producer,
            in_flight: 0,
            stored_since_commit: false,
            txn: None,
            intake: Intake::new(
                settings.delivery.order_window_kib,
                settings.delivery.order_wait_ms,
            ),
            // A quarter of the in-flight limit: held records count as in flight, and the limit
            // must still be able to drain below half through the others.
            local: LocalRoutes::new(settings.delivery.max_in_flight / 4),
            cases_partitions,
            fence_tag: format!("{}-{}", std::process::id(), now_ns()),
            paused_inputs: Vec::new(),
            paused_since: None,
            taken_since_give_back: 0,
            spill_refusals_seen: 0,
            settings,
        }
    }

    /// Runs until `shutdown` resolves, then drains within the shutdown budget.
    /// `warming` is the producer's warm-up (see [`warm_up`]), awaited in [`Pipeline::start_up`].
    pub async fn run(
        mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
        shutdown: impl std::future::Future<Output = ()>,
        warming: Option<tokio::task::JoinHandle<(bool, Duration)>>,
    ) -> Result<(), RuntimeError> {
        tokio::pin!(shutdown);
        let mut pending = match warming {
            Some(warming) => self.start_up(warming, &mut shutdown).await?,
            None => None,
        };
        let mut commit = tokio::time::interval(Duration::from_millis(
            self.settings.delivery.commit_interval_ms.max(10),
        ));
        let mut expire = tokio::time::interval(Duration::from_secs(
            self.settings.delivery.expiry_interval_seconds.max(1),
        ));
        let consumer = self.consumer.clone();
        let topics = self.topics.clone();
        loop {
            let paused = self.intake.paused;
            let window_turn = !paused && !self.intake.window.is_empty();
            // Paused, the loop still takes records while the window has room: the cases records
            // among them are applied, and applying is what finishes records in flight. (Taking
            // nothing, a paused drain applied nothing until the route stage's own records were
            // acknowledged: 0.3 s of a 2.6 s drain in the benchmark.)
            let taking =
                !paused || !self.intake.window.is_over_limit() || self.only_reading_finishes();
            let hold = self.intake.hold_until;
            let event = if let Some(event) = pending.take() {
                event
            } else {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => Event::Shutdown,
                    Some(d) = deliveries.recv() => Event::Delivery(d),
                    // Backpressure: above `max_in_flight` the loop stops routing input records,
                    // and once the window is full stops taking records (librdkafka's own queue
                    // bound then stops its fetching), until half have drained.
                    m = consumer.recv(), if taking => Event::read(m, &topics),
                    _ = commit.tick() => Event::Commit,
                    _ = expire.tick() => Event::Expire,
                    // Only when the consumer has nothing ready (see `intake`).
                    _ = async {
                        if let Some(at) = hold {
                            tokio::time::sleep_until(at.into()).await;
                        }
                    }, if window_turn => Event::Window,
                }
            };
            self.stats.beat();
            if matches!(event, Event::Message(_)) {
                self.taken_since_give_back += 1;
            }
            let _ = self.take_rebalances().await?;
            match event {
                Event::Shutdown => break,
                Event::Delivery(d) => {
                    let result = self.on_deliveries(d, deliveries).await;
                    self.settle(result)?
                }
                Event::Message(Ok(Incoming::Input { record, timestamp })) => {
                    self.stats.consumed(&record.topic);
                    // Each record it routes is settled in `process`.
                    self.take_input(record, timestamp).await?
                }
                Event::Message(Ok(Incoming::Case {
                    partition,
                    offset,
                    original,
                })) => {
                    self.stats.consumed(&self.topics.cases);
                    self.process(Job::Apply {
                        partition,
                        at: At::Offset(offset),
                        original,
                    })
                    .await?
                }
                Event::Message(Ok(Incoming::Fence {
                    partition,
                    offset,
                    fence,
                })) => {
                    self.stats.consumed(&self.topics.cases);
                    let result = self.on_fence(partition, offset, &fence).await;
                    self.settle(result)?
                }
                Event::Message(Err(e)) => {
                    let now = Instant::now();
                    if let Some(left_out) = super::repeats::CLIENT_WARNINGS.admit(&e, now) {
                        tracing::warn!(error = %e, left_out, "The consumer reported an error; it keeps running.")
                    }
                }
                Event::Commit if self.txn.is_some() => {
                    self.commit_txn()?;
                    self.give_back_after_burst();
                }
                Event::Commit => {
                    self.commit(CommitMode::Async);
                    self.report_state();
                    self.give_back_after_burst();
                    let result = self.resend_overdue_fences().await;
                    self.settle(result)?;
                    if self
                        .paused_since
                        .is_some_and(|t| t.elapsed() > self.fence_patience())
                    {
                        self.resume_inputs(true);
                    }
                }
                Event::Expire => {
                    let result = self.expire().await;
                    self.settle(result)?
                }
                Event::Window => self.release_window().await?,
            }
            // Not consumer.pause(): librdkafka drops what it prefetched and, on resume, fetches
            // again from the next offset, inside a record batch (where Tansu 0.6 returns nothing:
            // a 45,000-event drain stalled for good after one pause).
            let limit = self.settings.delivery.max_in_flight.max(1);
            if !paused && self.in_flight > limit {
                self.intake.paused = true;
                self.stats.set_paused(true);
            } else if paused && self.in_flight <= limit / 2 {
                self.intake.paused = false;
                self.stats.set_paused(false);
            }
            self.stats.set_in_flight(self.in_flight);
        }
        self.drain(deliveries).await
    }

    /// Paused, with nothing the producer still owes a delivery report for: no acknowledgement can
    /// finish what is in flight, only records the consumer has yet to hand over can (a fence that
    /// releases held records, a cases record that finishes the entries behind it). The loop then
    /// takes records although the window is full, rather than wait for good: librdkafka queues
    /// the cases partitions' records behind every input record it fetched before them, and
    /// fetches nothing more while its queue is full. A 182,000-event backfill with 64 MiB fetches
    /// and a 16 MiB window stopped there for good. The window then grows past its bound by what
    /// librdkafka had queued ahead (at most its queue's bound and one fetch response).
    fn only_reading_finishes(&self) -> bool {
        self.in_flight > 0 && self.producer.in_flight_count() == 0
    }

    /// Once a burst is through (nothing in flight, nothing in the order window, at least
    /// [`GIVE_BACK_AFTER`] records taken since last time), gives the memory it freed back to the
    /// system. mimalloc returns freed pages only as its thread allocates again, after its 1 s
    /// purge delay, and a connector idle after a backfill allocates little: draining the
    /// end-to-end benchmark's larger backlog, the same instance stayed at 68 MiB 2 s later, where a
    /// fresh one with the same state runs at 32. The state's tables in memory are shrunk first: a
    /// map whose values came and went through its bound (a backfill over more cases than it holds)
    /// kept a table twice the size it needs (in the benchmark's million-change drain, 1.4 MB
    /// more for each of three cases partitions). At most once per commit interval, and only when
    /// idle, so a steady stream never pays for it.
    fn give_back_after_burst(&mut self) {
        if self.taken_since_give_back >= GIVE_BACK_AFTER
            && self.in_flight == 0
            && self.intake.window.is_empty()
        {
            for state in self.states.values_mut() {
                state.shrink_to_fit();
            }
            crate::alloc::give_back_freed_memory();
            self.taken_since_give_back = 0;
        }
    }

    /// Stop intake, finish what is in flight, flush, commit — within the shutdown budget.
    async fn drain(
        mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), RuntimeError> {
        let consumer = self.consumer.clone();
        let budget = Duration::from_secs(self.settings.delivery.shutdown_budget_seconds);
        let deadline = Instant::now() + budget;
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        tracing::info!(
            in_flight = self.in_flight,
            "Shutting down: intake stopped, finishing records in flight."
        );
        // Records held for a fence are not waited for: the fence is not read any more. They are
        // not committed, and are processed again after restart.
        while self.in_flight > self.local.held() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, deliveries.recv()).await {
                Ok(Some(d)) => self.on_deliveries(d, deliveries).await?,
                _ => break,
            }
        }
        let _ = self.producer.flush(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        if self.txn.is_some() {
            self.commit_txn()?;
        }
        self.commit(CommitMode::Sync);
        let held = self.local.held();
        if self.in_flight > held {
            for (tp, tracker) in &self.trackers {
                if let Some(head) = tracker.head() {
                    let (topic, partition) = &self.tps[*tp as usize];
                    tracing::warn!(topic = %topic, partition, unfinished = tracker.len(), "Unfinished at shutdown: {head}.");
                }
            }
            tracing::warn!(
                in_flight = self.in_flight,
                "Shutdown budget spent with records unfinished; they were not committed and will be processed again after restart."
            );
        } else if held > 0 {
            tracing::info!(
                held,
                "Shutdown complete: every record finished and committed, except those held for a cases partition's fence; they will be processed again after restart."
            );
        } else {
            tracing::info!("Shutdown complete: every record finished and committed.");
        }
        Ok(())
    }

    fn commit(&mut self, mode: CommitMode) {
        let consumer = self.consumer.clone();
        if !self.stored_since_commit && matches!(mode, CommitMode::Async) {
            return;
        }
        // An asynchronous commit is counted when the broker answers, by the consumer's commit
        // callback; librdkafka calls it for asynchronous commits only. What fails before a
        // request is sent, and a synchronous commit's answer, are counted here.
        match consumer.commit_consumer_state(mode) {
            Ok(()) if matches!(mode, CommitMode::Async) => {}
            result => kafka::commit_outcome(&self.stats, result),
        }
        self.stored_since_commit = false;
    }

    /// Acts on the rebalances the consumer's callback logged since the last turn. Partitions
    /// assigned are restored now, not at a cases partition's first record: librdkafka fetches the
    /// inputs while the state is read, instead of the cases records waiting for it. Returns
    /// whether partitions were assigned to this instance.
    async fn take_rebalances(&mut self) -> Result<bool, RuntimeError> {
        if let Some(assignment) = self.apply_rebalance_log() {
            let owned = assignment.count() > 0;
            let result = self.restore_owned(Some(&assignment), None).await;
            self.settle(result)?;
            // Nothing to await (no cases partition, or none applied here): at once.
            self.resume_inputs(false);
            return Ok(owned);
        }
        Ok(false)
    }

    /// Takes in what the rebalance callbacks logged; returns the new assignment when it changed.
    fn apply_rebalance_log(&mut self) -> Option<TopicPartitionList> {
        let (changed, revoked, paused) = {
            let mut log = self.rebalance.lock().expect("rebalance log");
            let changed = !log.assigned.is_empty() || !log.revoked.is_empty();
            log.assigned.clear();
            (
                changed,
                std::mem::take(&mut log.revoked),
                std::mem::take(&mut log.paused),
            )
        };
        self.paused_inputs.retain(|p| !revoked.contains(p));
        if !paused.is_empty() {
            self.paused_inputs.extend(paused);
            self.paused_since = Some(Instant::now());
        }
        let assignment = if changed {
            let assignment = self.consumer.assignment().ok();
            let owned = assignment.as_ref().map_or(0, |a| a.count());
            self.stats.set_assigned(owned > 0);
            assignment
        } else {
            None
        };
        if !revoked.is_empty() {
            if let Some(txn) = self.txn.as_mut() {
                // The open transaction holds records of revoked partitions: abort it; what it held is
                // processed again by the partitions' owners, from the committed offsets.
                if txn.open {
                    let _ = tokio::task::block_in_place(|| {
                        self.producer.abort_transaction(Duration::from_secs(30))
                    });
                }
                txn.open = false;
                txn.failed = None;
                txn.offsets.clear();
                self.drop_states(None);
            }
        }
        for (topic, partition) in revoked {
            if let Some(tp) = self.tp_index_of(&topic, partition) {
                // Records in the order window were never taken in: the next owner reads them.
                self.intake.forget(tp);
                // Forget its records but not its numbering: acknowledgements of them may still
                // come, and must not match a record taken in after the partition comes back.
                if let Some(t) = self.trackers.get_mut(&tp) {
                    self.in_flight -= t.len();
                    *t = PartitionTracker::starting_at(t.next_seq());
                }
            }
            if topic == self.topics.cases {
                self.drop_states(Some(partition));
                self.local.revoked(partition);
            }
        }
        if changed {
            self.reset_intake_partitions(assignment.as_ref());
            self.stats.set_order_window(self.intake.window.len());
        }
        assignment
    }

    /// Resumes the input partitions paused at their assignment once no owned cases partition
    /// awaits its fence, or when `force`d (a fence overdue: records are then held or take the hop,
    /// as without the pause).
    pub(super) fn resume_inputs(&mut self, force: bool) {
        if self.paused_inputs.is_empty() || (!force && self.local.any_awaiting()) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &self.paused_inputs {
            tpl.add_partition(topic, *partition);
        }
        let waited = self
            .paused_since
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        match self.consumer.resume(&tpl) {
            Ok(()) if force => tracing::warn!(
                partitions = tpl.count(),
                waited_ms = waited,
                "Input partitions resumed before every fence came back; records for the cases partitions still awaiting one are held or take the hop."
            ),
            Ok(()) => tracing::info!(
                partitions = tpl.count(),
                waited_ms = waited,
                "Input partitions resumed: the owned cases partitions have read their fences back."
            ),
            Err(e) => tracing::warn!(error = %e, "Could not resume the input partitions."),
        }
        self.paused_inputs.clear();
        self.paused_since = None;
        self.intake.inputs_started();
    }

    /// Forgets the state of one partition (or all): it is restored again from Kafka when next used.
    fn drop_states(&mut self, partition: Option<i32>) {
        let dropped: Vec<EngineState> = match partition {
            Some(p) => self.states.remove(&p).into_iter().collect(),
            None => {
                self.local.clear();
                self.states.drain().map(|(_, s)| s).collect()
            }
        };
        for state in dropped {
            self.stats.parked_moved(-(state.parked_count() as i64));
        }
        self.share_resident_cases();
    }

    fn tp(&mut self, topic: &str, partition: i32) -> u32 {
        if let Some(i) = self.tp_index_of(topic, partition) {
            return i;
        }
        let i = self.tps.len() as u32;
        self.tps.push((topic.to_string(), partition));
        self.tp_index
            .entry(topic.to_string())
            .or_default()
            .insert(partition, i);
        i
    }

    /// [`Self::tp`] of cases partition `partition` (the topic name is cloned only the first time,
    /// as `tp` borrows it while `self` is borrowed mutably).
    fn cases_tp(&mut self, partition: i32) -> u32 {
        match self.tp_index_of(&self.topics.cases, partition) {
            Some(tp) => tp,
            None => {
                let cases = self.topics.cases.clone();
                self.tp(&cases, partition)
            }
        }
    }

    fn tp_index_of(&self, topic: &str, partition: i32) -> Option<u32> {
        self.tp_index.get(topic)?.get(&partition).copied()
    }

    /// Runs one record through its stage (route for an input, apply for a cases record), in its
    /// span and timed; then the apply stage of an input record routed to a partition applied here.
    pub(super) async fn process(&mut self, job: Job) -> Result<(), RuntimeError> {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            // Named as read: a cases record by its cases coordinates, an input record by its own.
            let (stage, topic, partition, offset) = match &job {
                Job::Route(r) => ("route", &*r.topic, r.partition, r.offset),
                Job::Apply {
                    partition,
                    at: At::Offset(offset),
                    ..
                } => ("apply", self.topics.cases.as_str(), *partition, *offset),
                Job::Apply { original: r, .. } => ("apply", &*r.topic, r.partition, r.offset),
            };
            // A debug span: at info it costs nothing. (An info span per record cost ~8% of the
            // loop's CPU in the profile: the JSON layer formats its fields eagerly.) The lines a
            // record causes at info name their record themselves; see `add_dead_letter`.
            let span = tracing::debug_span!("record", topic = %topic, partition, offset);
            let started = Instant::now();
            let result = self.on_record(job).instrument(span).await;
            self.stats.processed(stage, started.elapsed());
            next = match result {
                Ok(next) => next,
                Err(e) => {
                    self.settle(Err(e))?;
                    None
                }
            };
        }
        Ok(())
    }

    async fn on_record(&mut self, job: Job) -> Result<Option<Job>, RuntimeError> {
        self.ensure_txn()?;
        match job {
            Job::Route(record) => {
                let tp = self.tp(&record.topic, record.partition);
                self.route(tp, record).await
            }
            Job::Apply {
                partition,
                at,
                original,
            } => {
                let tp = self.cases_tp(partition);
                self.apply(tp, partition, at, original).await?;
                Ok(None)
            }
        }
    }
}
