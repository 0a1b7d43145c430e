//! Applying without the cases hop: the route stage's choice for partitions this instance owns,
//! the fences that make an owned partition local, and the records held until then. The rules are
//! in [`crate::runtime::local`]; this is their I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use super::{At, Job, Pipeline, RuntimeError};
use crate::engine::SourceRecord;
use crate::runtime::kafka::{self, OutRecord, Phase, PipelineProducer, Token, H_FENCE};
use crate::runtime::local::Route;
use crate::runtime::tracker::Then;

/// An input record routed to a partition that awaits its fence: applied when the fence is read.
pub(crate) struct Held {
    tp: u32,
    seq: i64,
    source: SourceRecord,
}

/// What an input record's own tracker entry keeps when its record is applied in its cases
/// partition's tracker: nothing to copy (that entry keeps the record for its dead letters), only
/// the topic's shared name.
fn placeholder(topic: &std::sync::Arc<str>, partition: i32, offset: i64) -> SourceRecord {
    SourceRecord::new(topic.clone(), partition, offset, None, b"", Vec::new())
}

/// Before the consumer joins the group: writes one fence that no instance awaits (`start/<pid>`)
/// to cases partition 0; the returned task finishes when it is acknowledged (awaited in
/// [`Pipeline::start_up`]).
/// An idempotent producer sends nothing until the broker has given it a producer id; on the test
/// broker that took 1.0–1.8 s into a backlog's drain, while every partition's first fence waited
/// and the records routed meanwhile took the hop. Waited for while the group is joined and the
/// owned state is restored, that time overlaps the rest of the start-up instead, and [`nudge`]
/// shortens it.
pub(crate) async fn warm_up(
    producer: Arc<PipelineProducer>,
    cases: &str,
) -> Option<tokio::task::JoinHandle<(bool, Duration)>> {
    let started = Instant::now();
    let sent = send_fence_to(&producer, cases, 0, "start", std::process::id().into()).await;
    if let Err(e) = sent {
        tracing::warn!(error = %e.message, "Could not write the start-up fence; going on.");
        return None;
    }
    // Polled, not `flush`ed: librdkafka's flush noticed the acknowledgement only at its next
    // 100 ms or 1 s wake-up here.
    let topic = cases.to_string();
    Some(tokio::spawn(async move {
        let mut nudges = 0;
        while producer.in_flight_count() > 0 {
            if started.elapsed() > Duration::from_secs(30) {
                return (false, started.elapsed());
            }
            if nudges < NUDGES && started.elapsed() >= NUDGE_EVERY * (nudges + 1) {
                nudges += 1;
                nudge(&producer, &topic).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (true, started.elapsed())
    }))
}

/// How long [`Pipeline::start_up`] waits, once the producer is ready, for a first assignment
/// before the loop starts without one.
const IDLE_START: Duration = Duration::from_secs(3);

/// How often, and how many times, [`warm_up`] asks for metadata while it waits (see [`nudge`]).
const NUDGE_EVERY: Duration = Duration::from_millis(20);
const NUDGES: u32 = 10;

/// Asks the broker for `topic`'s metadata through the producer's own client.
///
/// Why: librdkafka's idempotent producer asks for its producer id when it is created, when a
/// metadata response arrives (`rdkafka_metadata.c` calls the id state machine after every
/// response), and on a 500 ms retry timer (`rdkafka_idempotence.c`); it asks only once a broker
/// connection is up. On Tansu the first record waited ~505 ms, the timer's interval, so neither
/// the creation nor the first record's metadata response found a connection up, as far as the
/// timing and librdkafka's source tell (its debug log did not reach us). In a probe against
/// Tansu, one metadata request 20 ms after the first record took that record's delivery from
/// 506–509 ms to 54 ms. Failing is harmless: the timer still fires.
async fn nudge(producer: &Arc<PipelineProducer>, topic: &str) {
    let (producer, topic) = (producer.clone(), topic.to_string());
    let _ = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(1))
    })
    .await;
}

/// Writes the fence `<writer>/<number>` to partition `partition` of `cases`: a record keyed by
/// `writer`, with no value and only an [`H_FENCE`] header. Its delivery report is a
/// [`Phase::Fence`] one, with `number` in the token's `seq`.
async fn send_fence_to(
    producer: &PipelineProducer,
    cases: &str,
    partition: i32,
    writer: &str,
    number: u64,
) -> Result<(), kafka::Refused> {
    let headers = [(
        H_FENCE.to_string(),
        format!("{writer}/{number}").into_bytes(),
    )];
    let out = OutRecord {
        topic: cases,
        partition: Some(partition),
        key: Some(writer.as_bytes()),
        value: None,
        headers: &headers,
    };
    let token = Token {
        tp: u32::MAX,
        seq: number as i64,
        phase: Phase::Fence,
    };
    kafka::send(producer, out, token).await
}

/// The warm-up's outcome, logged once.
fn log_ready(result: Result<(bool, Duration), tokio::task::JoinError>) {
    if let Ok((acknowledged, took)) = result {
        tracing::info!(
            took_ms = took.as_millis() as u64,
            acknowledged,
            "The producer is ready."
        );
    }
}

impl Pipeline {
    /// Start-up while the producer waits for its id (see [`warm_up`]): the assignment is taken and
    /// the owned state restored meanwhile, instead of after it, so the restore and librdkafka's
    /// first fetches overlap the wait. No record is routed before the id has come: routed, it
    /// would only be held or take the hop behind it. The first record that arrives is returned, to
    /// be processed first; so is a shutdown. Since the id comes sooner ([`nudge`]) it often comes
    /// before the assignment; start-up then goes on until the assignment is restored, so that the
    /// restore still runs before records arrive, not when the first one does.
    pub(super) async fn start_up(
        &mut self,
        mut warming: tokio::task::JoinHandle<(bool, Duration)>,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<Option<super::Event>, RuntimeError> {
        let consumer = self.consumer.clone();
        let topics = self.topics.clone();
        // The rebalance callback runs inside the consumer's poll; a tick looks at its log while
        // no record arrives.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut first = None;
        let (mut ready_at, mut assigned) = (None::<Instant>, false);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Ok(Some(super::Event::Shutdown)),
                ready = &mut warming, if ready_at.is_none() => {
                    log_ready(ready);
                    ready_at = Some(Instant::now());
                }
                m = consumer.recv(), if first.is_none() => {
                    first = Some(super::Event::read(m, &topics));
                }
                _ = tick.tick() => {}
            }
            self.stats.beat();
            assigned |= self.take_rebalances().await?;
            // Once the producer is ready, the loop starts when the first assignment has been
            // taken (and restored) or a record has come. An instance the group gives nothing to
            // starts after a while anyway; its loop takes later assignments itself.
            if ready_at.is_some_and(|at| assigned || first.is_some() || at.elapsed() > IDLE_START) {
                return Ok(first);
            }
        }
    }

    /// Whether records may be applied where they are routed: configured, at-least-once, and the
    /// cases topic's partition count known.
    fn local_apply(&self) -> bool {
        self.settings.delivery.local_apply && self.txn.is_none() && self.cases_partitions > 0
    }

    /// Record `seq` of input partition `tp`, whose case lies in cases partition `partition`: its
    /// apply stage when that partition is applied here, `None` when it is held for the partition's
    /// fence (taken in either way), or the record back when it takes the hop.
    pub(super) async fn route_here(
        &mut self,
        tp: u32,
        seq: i64,
        partition: i32,
        source: SourceRecord,
    ) -> Result<Result<Option<Job>, SourceRecord>, RuntimeError> {
        if !self.local_apply() {
            return Ok(Err(source));
        }
        let (topic, input_partition, offset) =
            (source.topic.clone(), source.partition, source.offset);
        let job = match self.local.route(partition, Held { tp, seq, source }) {
            Route::Hop(held) => return Ok(Err(held.source)),
            Route::Local(held) => Some(Job::Apply {
                partition,
                at: At::Linked(Then { tp, seq }),
                original: held.source,
            }),
            Route::Held { send_fence } => {
                if let Some(fence) = send_fence {
                    self.send_fence(partition, fence).await?;
                }
                None
            }
        };
        // Its one acknowledgement comes when its entry in the cases partition finishes.
        let place = placeholder(&topic, input_partition, offset);
        self.begin(tp, seq, At::Offset(offset), 1, Vec::new(), place)
            .await?;
        Ok(Ok(job))
    }

    /// Cases partition `partition` was restored: it awaits its fence before it applies here.
    pub(super) async fn start_local(&mut self, partition: i32) -> Result<(), RuntimeError> {
        if !self.local_apply() {
            return Ok(());
        }
        let fence = self.local.owned(partition);
        self.send_fence(partition, fence).await
    }

    /// Sends again each fence that has not come back within `delivery.commit_interval_ms` × 10
    /// (at least 5 s; see [`crate::runtime::local::LocalRoutes::overdue`]).
    pub(super) async fn resend_overdue_fences(&mut self) -> Result<(), RuntimeError> {
        let after = self.fence_patience();
        for (partition, fence) in self.local.overdue(Instant::now(), after) {
            tracing::info!(
                partition,
                "A fence written to cases partition {partition} has not come back yet; it is sent again."
            );
            self.send_fence(partition, fence).await?;
        }
        Ok(())
    }

    /// How long a fence may take to come back before it is sent again (and paused inputs are
    /// resumed without it): `delivery.commit_interval_ms` × 10, at least 5 s.
    pub(super) fn fence_patience(&self) -> Duration {
        Duration::from_millis(self.settings.delivery.commit_interval_ms.saturating_mul(10))
            .max(Duration::from_secs(5))
    }

    /// Writes fence `fence` to cases partition `partition`, through the producer every hop record
    /// takes (idempotent, so in order behind them).
    async fn send_fence(&mut self, partition: i32, fence: u64) -> Result<(), RuntimeError> {
        let (cases, writer) = (&self.topics.cases, &self.fence_tag);
        send_fence_to(&self.producer, cases, partition, writer, fence)
            .await
            .map_err(|e| self.send_error(e))
    }

    /// A fence was read from cases partition `partition` at `offset`. Its offset is done at once.
    /// When it is the one the partition awaits, the records held behind it are applied, in order.
    pub(super) async fn on_fence(
        &mut self,
        partition: i32,
        offset: i64,
        fence: &str,
    ) -> Result<(), RuntimeError> {
        self.ensure_txn()?;
        let tp = self.cases_tp(partition);
        let seq = self.next_seq(tp);
        let place = placeholder(&self.topics.shared(&self.topics.cases), partition, offset);
        self.begin(tp, seq, At::Offset(offset), 0, Vec::new(), place)
            .await?;
        self.advance(tp).await?;
        let ours = fence
            .rsplit_once('/')
            .filter(|(tag, _)| *tag == self.fence_tag)
            .and_then(|(_, n)| n.parse::<u64>().ok());
        let Some(n) = ours else {
            return Ok(()); // another instance's, or a malformed one: nothing waits for it here
        };
        let since = self.local.awaiting_since(partition);
        let held = self.local.fence_seen(partition, n);
        if let (true, Some(since)) = (self.local.is_local(partition), since) {
            self.stats
                .became_local(partition, since.elapsed(), held.len());
        }
        for Held { tp, seq, source } in held {
            self.process(Job::Apply {
                partition,
                at: At::Linked(Then { tp, seq }),
                original: source,
            })
            .await?;
        }
        self.resume_inputs(false);
        Ok(())
    }
}
