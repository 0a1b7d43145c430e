//! What comes due with time alone: parked events that waited too long, handed to the dead letters
//! (their state entries deleted by tombstones), and alerts the engine raises when a wait ran out
//! ([`crate::engine::Engine::overdue`]). A partition's batch writes its state only once every dead
//! letter and alert of it is acknowledged.

use super::{Pipeline, RuntimeError, StateRecord};
use crate::engine::SourceRecord;
use crate::runtime::dead_letter::DeadLetter;
use crate::runtime::kafka::{Phase, Token};
use crate::runtime::now_ms;
use crate::runtime::tracker::PartitionTracker;

impl Pipeline {
    /// Hands parked events that waited too long to the dead letters. Only partitions with nothing in
    /// flight are expired, so an expiry's state write can never overtake an earlier record's.
    pub(super) async fn expire(&mut self) -> Result<(), RuntimeError> {
        let now = now_ms();
        let idle: Vec<i32> = self
            .states
            .keys()
            .copied()
            .filter(|p| {
                let tp = self.tp_index_of(&self.topics.cases, *p);
                tp.is_none_or(|tp| {
                    self.trackers
                        .get(&tp)
                        .is_none_or(PartitionTracker::is_empty)
                })
            })
            .collect();
        for partition in idle {
            let state = self.states.get_mut(&partition).expect("listed above");
            let expired = self.engine.expire(state, now);
            let overdue = self.engine.overdue(state, now);
            if expired.is_empty() && overdue.commands.is_empty() {
                continue;
            }
            let records: Vec<StateRecord> = expired
                .iter()
                .map(|e| crate::engine::StateKey::Parked(e.case.clone(), e.seq))
                .chain(overdue.touched.iter().cloned())
                .map(|key| StateRecord {
                    key: key.to_record_key(),
                    value: state.entry_json(&key),
                    partition,
                })
                .collect();
            let batch = self.next_batch;
            self.next_batch += 1;
            let outputs = expired.len() + overdue.commands.len();
            self.expiry_batches.insert(batch, (outputs, records));
            self.ensure_txn()?;
            let token = Token {
                tp: u32::MAX,
                seq: batch,
                phase: Phase::ExpiryOutput,
            };
            for command in &overdue.commands {
                self.send_command(command, &[], token).await?;
            }
            self.stats.came_due(&overdue.commands);
            for e in expired {
                let source = e.source.clone().unwrap_or_else(|| {
                    SourceRecord::new(
                        self.topics.cases.as_str(),
                        partition,
                        -1,
                        None,
                        &self.codec.encode_event(&e.event).unwrap_or_default(),
                        vec![],
                    )
                });
                let dl = DeadLetter::from_expired(source, e.event.kind().as_str(), &e);
                tracing::warn!(
                    reason = e.reason.as_str(),
                    waited_s = e.waited_ms / 1000,
                    "A parked event expired and goes to the dead letters."
                );
                self.stats.dead_letter(dl.stage, dl.reason);
                self.stats.expired(e.reason);
                self.send_dead_letter(&dl, token).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn expiry_acked(&mut self, batch: i64) -> Result<(), RuntimeError> {
        let Some((left, _)) = self.expiry_batches.get_mut(&batch) else {
            return Ok(());
        };
        *left -= 1;
        if *left > 0 {
            return Ok(());
        }
        let (_, records) = self.expiry_batches.remove(&batch).expect("present");
        for r in records {
            self.send_state(
                &r,
                Token {
                    tp: u32::MAX,
                    seq: batch,
                    phase: Phase::ExpiryState,
                },
            )
            .await?;
        }
        Ok(())
    }
}
