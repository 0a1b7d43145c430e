//! The apply stage: a record of a cases partition, read back from the cases topic or routed here,
//! is decoded whole and run through the engine with its partition's state (restored first when
//! needed); its commands are sent (phase 1) and the state entries it touched wait for phase 2.

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

use super::{At, Pipeline, StateRecord};
use crate::engine::{Disposition, SourceRecord};
use crate::runtime::dead_letter::DeadLetter;
use crate::runtime::kafka::Token;
use crate::runtime::{now_ms, restore, trace, RuntimeError};

impl Pipeline {
    /// Makes sure the state of cases partition `partition` is in memory. When it is not, every owned
    /// cases partition not restored yet is restored with it (see [`crate::runtime::restore`]).
    pub(super) async fn ensure_state(&mut self, partition: i32) -> Result<(), RuntimeError> {
        if self.states.contains_key(&partition) {
            return Ok(());
        }
        let assignment = self.consumer.assignment().ok();
        self.restore_owned(assignment.as_ref(), Some(partition))
            .await
    }

    /// Restores every cases partition of `assignment` not restored yet, and `also` (a partition a
    /// record came from, should the assignment not list it).
    pub(super) async fn restore_owned(
        &mut self,
        assignment: Option<&TopicPartitionList>,
        also: Option<i32>,
    ) -> Result<(), RuntimeError> {
        let mut partitions: Vec<i32> = assignment
            .map(|a| {
                a.elements_for_topic(&self.topics.cases)
                    .iter()
                    .map(|e| e.partition())
                    .filter(|p| !self.states.contains_key(p))
                    .collect()
            })
            .unwrap_or_default();
        // Applied here without the hop only when the assignment says it is ours.
        let assigned = partitions.clone();
        if let Some(partition) = also.filter(|p| !partitions.contains(p)) {
            partitions.push(partition);
        }
        if partitions.is_empty() {
            return Ok(());
        }
        let spill = self.spill_for(self.states.len() + partitions.len());
        let restored = restore::restore_all(
            &self.settings.kafka,
            &self.fence_producer,
            &self.topics.state,
            &partitions,
            spill,
            &self.stats,
        )
        .await?;
        for (partition, state) in restored {
            self.stats.restored();
            self.stats.parked_moved(state.parked_count() as i64);
            self.states.insert(partition, state);
            if assigned.contains(&partition) {
                self.start_local(partition).await?;
            }
        }
        self.share_resident_cases();
        Ok(())
    }

    /// Where a state restored now spills, when `owned` cases partitions share the instance's
    /// `state.resident_cases`.
    fn spill_for(&self, owned: usize) -> Option<restore::Spill> {
        let s = &self.settings.state;
        s.resident_per_partition(owned)
            .map(|resident_cases| restore::Spill {
                dir: s.spill_dir.clone(),
                resident_cases,
            })
    }

    /// Divides `state.resident_cases` between the cases partitions owned now.
    pub(super) fn share_resident_cases(&mut self) {
        if let Some(each) = self
            .settings
            .state
            .resident_per_partition(self.states.len())
        {
            for state in self.states.values_mut() {
                state.set_resident_cases(each);
            }
        }
    }

    /// Sets the state gauges, and counts and warns each time the spill file refused values (they
    /// stay in memory: with a full or broken volume, memory grows with the cases again).
    pub(super) fn report_state(&mut self) {
        let (mut cases, mut links, mut requesters, mut refused) = ([0; 2], [0; 2], [0; 2], 0);
        let mut why = None;
        for state in self.states.values() {
            for (sum, places) in [
                (&mut cases, state.cases.places()),
                (&mut links, state.customers.places()),
                (&mut requesters, state.requesters.places()),
            ] {
                sum[0] += places[0];
                sum[1] += places[1];
            }
            let refusals = [
                state.cases.refused(),
                state.customers.refused(),
                state.requesters.refused(),
            ];
            for (n, last) in refusals {
                refused += n;
                why = why.or(last.map(str::to_string));
            }
        }
        self.stats.state_held(cases, links, requesters);
        if refused > self.spill_refusals_seen {
            self.stats.spill_refused(refused - self.spill_refusals_seen);
            tracing::warn!(
                refused,
                error = why.as_deref().unwrap_or(""),
                spill_dir = %self.settings.state.spill_dir.display(),
                "The state's spill file refused entries, which stay in memory. Free or enlarge the \
                 volume behind state.spill_dir; until then memory grows with the cases owned."
            );
        }
        self.spill_refusals_seen = refused;
    }

    /// Applies a record of cases partition `partition` (tracked there as `at`), whose `source` is
    /// the input record it was routed from (rebuilt by [`crate::runtime::kafka::incoming`] after the hop).
    pub(super) async fn apply(
        &mut self,
        tp: u32,
        partition: i32,
        at: At,
        source: SourceRecord,
    ) -> Result<(), RuntimeError> {
        self.ensure_state(partition).await?;
        self.stats.applied(matches!(at, At::Linked(_)));
        let seq = self.next_seq(tp);
        let Some(kind) = self.topics.kind_of(&source.topic) else {
            return self
                .dead_letter_input(tp, seq, at, DeadLetter::from_unknown_topic(source))
                .await;
        };
        let event = match self.decode(kind, &source).await {
            Ok(e) => e,
            Err(dl) => return self.dead_letter_input(tp, seq, at, dl).await,
        };
        let modified_on = event.header().modified_on;
        let change_id = event.header().change_id.clone();
        let now = now_ms();
        let state = self.states.get_mut(&partition).expect("restored above");
        let decision = self.engine.apply_from(state, event, Some(&source), now);
        let state_records: Vec<StateRecord> = decision
            .touched
            .iter()
            .map(|k| StateRecord {
                key: k.to_record_key(),
                value: state.entry_json(k),
                partition,
            })
            .collect();
        self.stats.decided(kind, &decision, modified_on, now);
        for r in &decision.released {
            tracing::debug!(change_id = %r.change_id, disposition = ?r.disposition, "A parked event was completed.");
        }
        // Parked events found invalid once their case is complete go to the dead letters with their
        // own original records, tied to this record's offset.
        let released_rejections: Vec<(String, DeadLetter)> = decision
            .released
            .iter()
            .filter_map(|r| match (&r.disposition, &r.source) {
                (Disposition::Rejected(rejection), Some(source)) => Some((
                    r.change_id.clone(),
                    DeadLetter::from_rejection(source.clone(), r.kind.as_str(), rejection),
                )),
                _ => None,
            })
            .collect();
        // Built only when there is something to write (most skips write nothing).
        let out_headers = if decision.commands.is_empty() {
            Vec::new()
        } else {
            trace::output_headers(&source.headers, &change_id).0
        };
        let mut sent = 0;
        let mut refused = None; // exactly-once: a command the client would not queue
        for command in &decision.commands {
            match self
                .send_command(command, &out_headers, Token::one(tp, seq))
                .await
            {
                Ok(()) => sent += 1,
                Err(RuntimeError::RecordRefused(message)) => refused = Some(message),
                Err(e) => return Err(e),
            }
        }
        // A copy of the record only for the rare rejection; the tracker keeps the record itself.
        let rejected = match &decision.disposition {
            Disposition::Rejected(rejection) => Some(DeadLetter::from_rejection(
                source.clone(),
                kind.as_str(),
                rejection,
            )),
            _ => None,
        };
        let refused = refused.map(|message| DeadLetter::from_produce(source.clone(), message));
        self.begin(tp, seq, at, sent, state_records, source).await?;
        if let Some(dl) = refused {
            self.add_dead_letter(tp, seq, dl, Some(&change_id)).await?;
        }
        if let Some(dl) = rejected {
            self.add_dead_letter(tp, seq, dl, Some(&change_id)).await?;
        }
        for (change_id, dl) in released_rejections {
            // Its warning names the released event's own change and trace.
            self.add_dead_letter(tp, seq, dl, Some(&change_id)).await?;
        }
        self.advance(tp).await
    }
}
