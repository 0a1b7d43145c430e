//! Input records through the order window (see [`crate::runtime::order`]) to the route stage.
//!
//! An input record is not routed when it is taken from the consumer: it waits in the window, and
//! leaves it (the head with the smallest timestamp first) when
//! - the window holds `delivery.order_window_kib` or more, or
//! - the consumer has nothing ready and no input partition is still owed: one whose last known end
//!   offset lies past the records it handed over, or (in the first `delivery.order_wait_ms` after an
//!   assignment, or after the inputs resume from waiting for their fences) one that handed over
//!   nothing yet. A partition is waited for at most
//!   `delivery.order_wait_ms`; then the window goes on without it.
//!
//! Nothing leaves while intake is paused (more than `delivery.max_in_flight` records in flight):
//! the loop goes on taking records, applying the cases records among them, until the window is full
//! (and past it while no acknowledgement can finish anything: `Pipeline::only_reading_finishes`).
//!
//! In steady state every idle partition is caught up, so records pass at once. During a backfill
//! the window fills while librdkafka hands over one partition after another, and leads, prospects
//! and opportunities go out before the later contacts fetched ahead of them.

use crate::runtime::FastMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

use super::{Pipeline, RuntimeError};
use crate::engine::SourceRecord;
use crate::runtime::order::OrderWindow;

/// Records routed per turn of the loop while nothing else is ready: checking who is owed costs a
/// call into librdkafka per input partition, so it is paid once per batch, not per record.
const POP_BATCH: usize = 64;

/// What the pipeline knows about its input partitions, for the window's decisions.
pub(super) struct Intake {
    pub(super) window: OrderWindow<SourceRecord>,
    wait: Duration,
    /// Assigned input partitions: index, topic (as librdkafka wants it), partition.
    inputs: Vec<(u32, CString, i32)>,
    /// Per input partition: the offset after the last record handed over since the assignment.
    next_offset: FastMap<u32, i64>,
    assigned_at: Instant,
    /// Since when the window has waited for an owed partition.
    waiting_since: Option<Instant>,
    /// While waiting: when the window's next turn is due (the loop sleeps until then instead of
    /// asking again at every turn).
    pub(super) hold_until: Option<Instant>,
    /// Partitions waited out, with the end offset they had then: not waited for again until it
    /// moves. (A transactional input ends with a commit marker the consumer never hands over, so
    /// its end stays one past the last record for good.)
    excused: FastMap<u32, i64>,
    /// Above `delivery.max_in_flight`: nothing leaves the window until half have finished.
    pub(super) paused: bool,
}

impl Intake {
    pub(super) fn new(window_kib: usize, wait_ms: u64) -> Intake {
        Intake {
            window: OrderWindow::new(window_kib.saturating_mul(1024)),
            excused: FastMap::default(),
            wait: Duration::from_millis(wait_ms),
            inputs: Vec::new(),
            next_offset: FastMap::default(),
            assigned_at: Instant::now(),
            waiting_since: None,
            hold_until: None,
            paused: false,
        }
    }

    pub(super) fn took(&mut self, tp: u32, offset: i64) {
        self.next_offset.insert(tp, offset + 1);
        self.excused.remove(&tp);
        // What was owed may have come: the window's next turn asks again.
        self.hold_until = None;
    }

    /// Forgets a revoked partition: its records in the window and what was known of it.
    pub(super) fn forget(&mut self, tp: u32) {
        self.window.drop_partition(tp);
        self.next_offset.remove(&tp);
        self.excused.remove(&tp);
    }

    /// The input partitions start handing over records only now (resumed after their fences):
    /// the first `delivery.order_wait_ms` of waiting for each of them start again.
    pub(super) fn inputs_started(&mut self) {
        self.assigned_at = Instant::now();
        self.waiting_since = None;
        self.hold_until = None;
    }

    /// Forgets every record in the window (an aborted transaction: they are read again).
    pub(super) fn clear(&mut self) {
        self.window.clear();
        self.waiting_since = None;
        self.hold_until = None;
    }
}

impl Pipeline {
    /// Input partitions were assigned or revoked: the window's view of them starts afresh.
    pub(super) fn reset_intake_partitions(&mut self, assignment: Option<&TopicPartitionList>) {
        let mut inputs = Vec::new();
        for e in assignment.iter().flat_map(|a| a.elements()) {
            if e.topic() == self.topics.cases {
                continue;
            }
            let tp = self.tp(e.topic(), e.partition());
            if let Ok(topic) = CString::new(e.topic()) {
                inputs.push((tp, topic, e.partition()));
            }
        }
        let intake = &mut self.intake;
        intake.inputs = inputs;
        intake.assigned_at = Instant::now();
        intake.waiting_since = None;
        intake.hold_until = None;
    }

    /// Takes an input record into the window, and routes what the bound lets out (nothing while
    /// intake is paused: the loop then stops taking records once the window is full).
    pub(super) async fn take_input(
        &mut self,
        record: SourceRecord,
        timestamp: i64,
    ) -> Result<(), RuntimeError> {
        let tp = self.tp(&record.topic, record.partition);
        self.intake.took(tp, record.offset);
        let size = record.held_bytes();
        self.intake.window.push(tp, timestamp, size, record);
        while !self.intake.paused && self.intake.window.is_over_limit() {
            self.route_next().await?;
        }
        self.stats.set_order_window(self.intake.window.len());
        Ok(())
    }

    /// The window's turn: the consumer has nothing ready. Routes a batch of records, unless an
    /// input partition is still owed records and has not been waited for long enough; then the
    /// window holds until that wait ends ([`Intake::hold_until`]).
    pub(super) async fn release_window(&mut self) -> Result<(), RuntimeError> {
        if let Some(at) = self.window_holds_until() {
            self.intake.hold_until = Some(at);
            return Ok(());
        }
        self.intake.hold_until = None;
        self.intake.waiting_since = None;
        for _ in 0..POP_BATCH {
            if self.intake.window.is_empty() {
                break;
            }
            self.route_next().await?;
        }
        self.stats.set_order_window(self.intake.window.len());
        Ok(())
    }

    /// Until when the window waits for an owed partition, or `None` to let records out now.
    fn window_holds_until(&mut self) -> Option<Instant> {
        if self.intake.wait.is_zero() {
            return None;
        }
        let owed = self.owed_partitions();
        if owed.is_empty() {
            return None;
        }
        let since = *self.intake.waiting_since.get_or_insert_with(Instant::now);
        let at = since + self.intake.wait;
        if at > Instant::now() {
            return Some(at);
        }
        self.intake.excused.extend(owed);
        None
    }

    async fn route_next(&mut self) -> Result<(), RuntimeError> {
        let Some((_, record)) = self.intake.window.pop() else {
            return Ok(());
        };
        self.process(super::Job::Route(record)).await
    }

    /// The input partitions with nothing in the window that may still have records to hand over,
    /// each with its last known end offset.
    fn owed_partitions(&self) -> Vec<(u32, i64)> {
        let intake = &self.intake;
        let early = intake.assigned_at.elapsed() < intake.wait;
        let client = self.consumer.client().native_ptr();
        let mut owed = Vec::new();
        for (tp, topic, partition) in &intake.inputs {
            if intake.window.holds(*tp) {
                continue;
            }
            let (mut low, mut high) = (0i64, 0i64);
            // SAFETY: `client` is the live consumer's handle and `topic` a NUL-terminated string
            // that outlives the call; librdkafka only copies its cached offsets into the two slots.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    client,
                    topic.as_ptr(),
                    *partition,
                    &mut low,
                    &mut high,
                )
            };
            let known = err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
            let is_owed = match (known, intake.next_offset.get(tp)) {
                (false, _) => early,
                // Handed over records: owed while its end lies past them.
                (true, Some(next)) => high > *next,
                // Nothing handed over yet: its start is the committed offset, unknown here, so it
                // is waited for only in the first moments after the assignment.
                (true, None) => early && (high < 0 || high > low),
            };
            if is_owed && intake.excused.get(tp) != Some(&high) {
                owed.push((*tp, high));
            }
        }
        owed
    }
}
