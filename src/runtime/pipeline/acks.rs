//! A record's outputs and their acknowledgements: registering a record with its partition's
//! tracker, sending outputs with tokens, dead letters, delivery reports, and storing the offsets
//! of records finished (at-least-once; see [`crate::runtime::tracker`]).

use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{At, Pipeline, RuntimeError, StateRecord};
use crate::engine::SourceRecord;
use crate::model::Command;
use crate::registry::wire;
use crate::runtime::client_error::{self, ErrorClass};
use crate::runtime::dead_letter::DeadLetter;
use crate::runtime::kafka::{self, Delivery, OutRecord, Phase, Token};
use crate::runtime::trace;
use crate::settings::ErrorsTolerance;

impl Pipeline {
    /// The intake sequence number of the next record of `tp`: its outputs' tokens carry it.
    pub(super) fn next_seq(&self, tp: u32) -> i64 {
        self.trackers.get(&tp).map_or(0, |t| t.next_seq())
    }

    /// Registers record `seq` of `tp` whose phase-1 outputs were sent. At-least-once: tracked
    /// until acknowledged. Exactly-once: its state is sent at once into the same transaction, and its
    /// offset committed with it.
    pub(super) async fn begin(
        &mut self,
        tp: u32,
        seq: i64,
        at: At,
        phase1: usize,
        phase2: Vec<StateRecord>,
        source: SourceRecord,
    ) -> Result<(), RuntimeError> {
        if self.txn.is_some() {
            self.send_states(tp, seq, phase2).await?;
            let (topic, partition) = self.tps[tp as usize].clone();
            if let (Some(txn), At::Offset(offset)) = (self.txn.as_mut(), at) {
                txn.offsets.insert((topic, partition), offset + 1);
            }
            return Ok(());
        }
        let tracker = self.trackers.entry(tp).or_default();
        match at {
            At::Offset(offset) => tracker.begin(seq, offset, phase1, phase2, source),
            At::Linked(then) => tracker.begin_linked(seq, then, phase1, phase2, source),
        }
        self.in_flight += 1;
        Ok(())
    }

    /// The record's only output is its dead letter (or, with errors.tolerance = none, the pipeline stops).
    pub(super) async fn dead_letter_input(
        &mut self,
        tp: u32,
        seq: i64,
        at: At,
        dl: DeadLetter,
    ) -> Result<(), RuntimeError> {
        self.begin(tp, seq, at, 0, Vec::new(), dl.source.clone())
            .await?;
        self.add_dead_letter(tp, seq, dl, None).await?;
        self.advance(tp).await
    }

    /// Sends a dead letter for record `seq`. Its warning is logged in a `record` span naming the
    /// original record, its change id (when it was decoded) and its W3C trace id: built here, for the
    /// few records that need it, rather than for every record.
    pub(super) async fn add_dead_letter(
        &mut self,
        tp: u32,
        seq: i64,
        dl: DeadLetter,
        change_id: Option<&str>,
    ) -> Result<(), RuntimeError> {
        if self.settings.delivery.errors_tolerance == ErrorsTolerance::None {
            return Err(RuntimeError::Tolerance(format!(
                "{} (record {}/{}@{}). errors_tolerance = \"none\" stops here; set delivery.errors_tolerance = \"all\" to route such records to {}",
                dl.message, dl.source.topic, dl.source.partition, dl.source.offset, self.topics.dead_letters
            )));
        }
        let caller = trace::incoming(&dl.source.headers);
        tracing::info_span!(
            "record",
            topic = %dl.source.topic,
            partition = dl.source.partition,
            offset = dl.source.offset,
            change_id,
            trace_id = caller.as_ref().map(|t| t.trace_id.as_str()),
        )
        .in_scope(|| {
            tracing::warn!(
                stage = dl.stage,
                reason = dl.reason,
                "Record sent to the dead letters: {}",
                dl.message
            )
        });
        self.stats.dead_letter(dl.stage, dl.reason);
        if let Some(t) = self.trackers.get_mut(&tp) {
            t.add_phase1(seq, 1);
        }
        self.send_dead_letter(&dl, Token::dead_letter(tp, seq))
            .await
    }

    /// Sends `dl`'s original bytes to the dead-letter topic with its error headers.
    pub(super) async fn send_dead_letter(
        &self,
        dl: &DeadLetter,
        token: Token,
    ) -> Result<(), RuntimeError> {
        let headers = dl.headers(&self.settings.kafka.group_id);
        let out = OutRecord {
            topic: &self.topics.dead_letters,
            partition: None,
            key: dl.source.key(),
            // Left out when too large to carry (its size and digest are in the headers).
            value: match dl.dropped_value {
                None => dl.source.value_or_null(),
                Some(_) => None,
            },
            headers: &headers,
        };
        self.send_out(out, token).await
    }

    /// Encodes `command` and queues it to its topic, keyed by its target record.
    pub(super) async fn send_command(
        &self,
        command: &Command,
        headers: &[(String, Vec<u8>)],
        token: Token,
    ) -> Result<(), RuntimeError> {
        let kind = command.kind();
        let framed = self
            .codec
            .encode_command_after(&wire::header(self.schema_ids[&kind]), command)
            .map_err(|e| RuntimeError::Encode(e.to_string()))?;
        let topic = self.topics.command_topic(kind);
        let key = command.key();
        let out = OutRecord {
            topic,
            partition: None,
            key: Some(key.as_bytes()),
            value: Some(&framed),
            headers,
        };
        self.send_out_explained(out, token, || too_large(command, framed.len()))
            .await?;
        self.stats.produced(topic);
        Ok(())
    }

    /// Queues one output record; a refused record is a [`Pipeline::send_error`].
    pub(super) async fn send_out(
        &self,
        out: OutRecord<'_>,
        token: Token,
    ) -> Result<(), RuntimeError> {
        self.send_out_explained(out, token, String::new).await
    }

    /// [`Self::send_out`]; a record refused as the record's own fault has `explain()` added to
    /// the refusal's message (what the record is, what made it large).
    async fn send_out_explained(
        &self,
        out: OutRecord<'_>,
        token: Token,
        explain: impl FnOnce() -> String,
    ) -> Result<(), RuntimeError> {
        match kafka::send(&self.producer, out, token).await {
            Ok(()) => Ok(()),
            // The record itself can never be written (too large for `message.max.bytes`).
            // At-least-once: its refusal is handled as a broker's would be, through the delivery
            // reports, so the tracker sees one path for both. Exactly-once: nothing entered the
            // transaction, which stays good; the caller dead-letters the record in it.
            Err(refused) if client_error::classify(refused.code) == ErrorClass::Record => {
                let explained = explain();
                let message = if explained.is_empty() {
                    refused.message
                } else {
                    format!("{}: {explained}", refused.message)
                };
                if self.txn.is_some() {
                    return Err(RuntimeError::RecordRefused(message));
                }
                let refusal = Delivery {
                    token,
                    error: Some((refused.code, message)),
                    partition: -1,
                    offset: -1,
                };
                let _ = self.producer.context().deliveries.send(refusal);
                Ok(())
            }
            Err(refused) => Err(self.send_error(refused)),
        }
    }

    /// Handles `first` and every delivery report already waiting (up to a bound), then moves each
    /// partition they touched forward once: one pass over many acknowledgements releases the state
    /// writes of many records together, and the tracker coalesces those that write the same key.
    pub(super) async fn on_deliveries(
        &mut self,
        first: Delivery,
        more: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), RuntimeError> {
        const BATCH: usize = 4096;
        let mut touched: Vec<u32> = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(d) = next {
            if let Some(tp) = self.acknowledge(d).await? {
                if !touched.contains(&tp) {
                    touched.push(tp);
                }
            }
            n += 1;
            next = if n < BATCH {
                more.try_recv().ok()
            } else {
                None
            };
        }
        for tp in touched {
            self.advance(tp).await?;
        }
        Ok(())
    }

    /// Records one delivery report; returns the input partition to move forward, if any. A
    /// failed delivery takes the path of its class ([`client_error`]): the record's own fault
    /// makes it a dead letter, anything else ends this run of the pipeline (to start again, or to
    /// stop with what to fix).
    async fn acknowledge(&mut self, d: Delivery) -> Result<Option<u32>, RuntimeError> {
        let Token { tp, seq, phase } = d.token;
        match phase {
            Phase::ExpiryOutput | Phase::ExpiryState => {
                if let Some((code, msg)) = d.error {
                    return Err(RuntimeError::from_client(code, format!(
                        "writing an expired event's dead letter, an alert that came due, or their state failed: {msg}"
                    )));
                }
                if phase == Phase::ExpiryOutput {
                    self.expiry_acked(seq).await?;
                }
                return Ok(None);
            }
            Phase::Fence => {
                if let Some((code, msg)) = d.error {
                    return Err(RuntimeError::from_client(code, format!(
                        "writing a fence to cases partition {} failed, so records held for it cannot be applied: {msg}",
                        d.partition
                    )));
                }
                return Ok(None);
            }
            Phase::One | Phase::Two | Phase::DeadLetter => {}
        }
        if let Some(txn) = self.txn.as_mut() {
            if let Some((code, msg)) = d.error {
                // Purged records belong to a transaction already aborted.
                if !matches!(
                    code,
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                ) {
                    txn.failed.get_or_insert(msg);
                }
            }
            return Ok(None);
        }
        if !self.trackers.get(&tp).is_some_and(|t| t.holds(seq)) {
            // A record of a revoked partition: it will be processed again by the partition's owner.
            return Ok(None);
        }
        if let Some((code, msg)) = d.error {
            if client_error::classify(code) != ErrorClass::Record {
                return Err(RuntimeError::from_client(
                    code,
                    format!("an output could not be delivered: {msg}"),
                ));
            }
            let Some(source) = self.trackers.get(&tp).and_then(|t| t.source(seq)).cloned() else {
                return Err(RuntimeError::Produce(format!(
                    "an output was refused and its record is no longer known: {msg}"
                )));
            };
            match phase {
                // A command refused: the record that made it becomes a dead letter. A state entry
                // refused: the record is dead-lettered too, so replaying it after the cause is
                // fixed writes the entry; this run keeps the state in memory.
                Phase::One | Phase::Two => {
                    let dl = DeadLetter::from_produce(source, msg);
                    self.add_dead_letter(tp, seq, dl, None).await?;
                }
                // The dead letter itself was too large for the dead-letter topic: once more,
                // without the value (its size and digest in headers).
                Phase::DeadLetter if self.valueless.insert((tp, seq)) => {
                    let dl = DeadLetter::from_produce(source, msg).without_value();
                    self.add_dead_letter(tp, seq, dl, None).await?;
                }
                // Refused again without its value: nothing smaller is left to write, and the
                // dead-letter topic refusing a few hundred bytes of headers is a setup fault.
                _ => {
                    return Err(RuntimeError::Kafka(format!(
                        "the dead-letter topic {} refused a dead letter without its value: {msg}. Check the topic's max.message.bytes and its policies",
                        self.topics.dead_letters
                    )))
                }
            }
        }
        if let Some(t) = self.trackers.get_mut(&tp) {
            t.ack(seq, if phase == Phase::Two { 2 } else { 1 });
        }
        Ok(Some(tp))
    }

    /// Sends record `seq`'s state writes (its phase 2), in order.
    pub(super) async fn send_states(
        &self,
        tp: u32,
        seq: i64,
        records: Vec<StateRecord>,
    ) -> Result<(), RuntimeError> {
        let token = Token {
            tp,
            seq,
            phase: Phase::Two,
        };
        for r in &records {
            self.send_state(r, token).await?;
        }
        Ok(())
    }

    /// Sends one state record to its partition of the state topic.
    pub(super) async fn send_state(
        &self,
        r: &StateRecord,
        token: Token,
    ) -> Result<(), RuntimeError> {
        let out = OutRecord {
            topic: &self.topics.state,
            partition: Some(r.partition),
            key: Some(r.key.as_bytes()),
            value: r.value.as_deref(),
            headers: &[],
        };
        self.send_out(out, token).await?;
        self.stats.state_record_sent();
        Ok(())
    }

    /// Moves partition `tp` forward: sends the state writes now due, stores how far it is done, and
    /// acknowledges the input records of locally applied ones that finished (moving their
    /// partitions forward too).
    pub(super) async fn advance(&mut self, tp: u32) -> Result<(), RuntimeError> {
        let mut linked = Vec::new(); // allocates only when a local record finished
        self.advance_one(tp, &mut linked).await?;
        while let Some(tp) = linked.pop() {
            self.advance_one(tp, &mut linked).await?;
        }
        Ok(())
    }

    /// [`Self::advance`] of one partition; adds the input partitions it acknowledged to `linked`.
    async fn advance_one(&mut self, tp: u32, linked: &mut Vec<u32>) -> Result<(), RuntimeError> {
        let Some(tracker) = self.trackers.get_mut(&tp) else {
            return Ok(());
        };
        let before = tracker.len();
        let ready = tracker.advance();
        let after = tracker.len();
        self.in_flight -= before - after;
        for then in ready.then {
            if let Some(input) = self.trackers.get_mut(&then.tp) {
                input.ack(then.seq, 1);
                if !linked.contains(&then.tp) {
                    linked.push(then.tp);
                }
            }
        }
        for (seq, records) in ready.send {
            self.send_states(tp, seq, records).await?;
        }
        if let Some(done) = ready.done_through {
            let (topic, partition) = self.tps[tp as usize].clone();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(done + 1))
                .map_err(|e| RuntimeError::Kafka(e.to_string()))?;
            // Storing may fail right after a revoke; the next owner processes the record again.
            if self.store(&tpl) {
                self.stored_since_commit = true;
            }
        }
        Ok(())
    }

    pub(super) fn store(&self, tpl: &TopicPartitionList) -> bool {
        self.consumer.store_offsets(tpl).is_ok()
    }
}

/// What a person needs to know about a command too large to write: which command, how large, and
/// the field that made it so.
fn too_large(command: &Command, size: usize) -> String {
    let largest = serde_json::to_value(command).ok().and_then(|value| {
        let fields = value
            .as_object()?
            .values()
            .find_map(|v| v.as_object())?
            .clone();
        fields
            .into_iter()
            .filter_map(|(name, v)| Some((v.as_str()?.len(), name)))
            .max()
    });
    let kind = command.kind().as_str();
    match largest {
        Some((bytes, field)) => format!(
            "the {kind} command {} is {size} bytes encoded; its largest field, {field}, is {bytes} bytes. \
             Shorten the template or mapping that fills {field}, or raise message.max.bytes (kafka.extra) and the topic's max.message.bytes",
            command.command_id()
        ),
        None => format!(
            "the {kind} command {} is {size} bytes encoded. Raise message.max.bytes (kafka.extra) and the topic's max.message.bytes",
            command.command_id()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::too_large;
    use crate::model::{Command, LeadNote, LeadUpsert};

    #[test]
    fn a_command_too_large_is_named_with_its_largest_field() {
        let note = Command::LeadNote(Box::new(LeadNote {
            command_id: "note-1".into(),
            notetext: "x".repeat(2_000),
            ..LeadNote::default()
        }));
        let said = too_large(&note, 2_100);
        assert!(
            said.contains("lead_note command note-1 is 2100 bytes")
                && said.contains("its largest field, notetext, is 2000 bytes"),
            "{said}"
        );
        let lead = LeadUpsert {
            command_id: "lead-1".into(),
            description: Some("y".repeat(3_000)),
            ..LeadUpsert::default()
        };
        let said = too_large(&Command::LeadUpsert(Box::new(lead)), 3_100);
        assert!(said.contains("description, is 3000 bytes"), "{said}");
    }
}
