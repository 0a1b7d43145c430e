//! The route stage: an input record is keyed by its case and either applied here at once (its
//! cases partition is local, see [`super::local`]) or written, bytes unchanged, to the cases topic
//! with its origin in headers (phase 1 of its tracker entry).

use super::{At, Job, Pipeline};
use crate::engine::SourceRecord;
use crate::runtime::dead_letter::DeadLetter;
use crate::runtime::kafka::{OutRecord, Token, H_KEY, H_OFFSET, H_PARTITION, H_TOPIC};
use crate::runtime::{partitioner, RuntimeError};

impl Pipeline {
    /// Routes an input record by its case: onto the cases topic, or, when its partition is applied
    /// here, returns its apply stage (or holds it for that partition's fence).
    pub(super) async fn route(
        &mut self,
        tp: u32,
        source: SourceRecord,
    ) -> Result<Option<Job>, RuntimeError> {
        let offset = source.offset;
        let seq = self.next_seq(tp);
        let at = At::Offset(offset);
        // Too large to process: neither it nor what would be made of it could be written.
        let limit_kib = self.settings.delivery.max_record_kib;
        if source.value().len() > limit_kib.saturating_mul(1024) {
            let dl = DeadLetter::from_oversized(source, limit_kib);
            self.dead_letter_input(tp, seq, at, dl).await?;
            return Ok(None);
        }
        let Some(kind) = self.topics.kind_of(&source.topic) else {
            self.dead_letter_input(tp, seq, at, DeadLetter::from_unknown_topic(source))
                .await?;
            return Ok(None);
        };
        let case = match self.case_key_of(kind, &source).await {
            Ok(case) => case,
            Err(dl) => {
                self.dead_letter_input(tp, seq, at, dl).await?;
                return Ok(None);
            }
        };
        let partition = partitioner::partition_of(case.as_bytes(), self.cases_partitions);
        let source = match self.route_here(tp, seq, partition, source).await? {
            Ok(job) => return Ok(job),
            Err(source) => source,
        };
        let mut headers = source.headers.clone();
        headers.push((H_TOPIC.into(), source.topic.as_bytes().to_vec()));
        headers.push((
            H_PARTITION.into(),
            source.partition.to_string().into_bytes(),
        ));
        headers.push((H_OFFSET.into(), source.offset.to_string().into_bytes()));
        if let Some(k) = source.key() {
            headers.push((H_KEY.into(), k.to_vec()));
        }
        let out = OutRecord {
            topic: &self.topics.cases,
            partition: Some(partition),
            key: Some(case.as_bytes()),
            value: Some(source.value()),
            headers: &headers,
        };
        self.send_out(out, Token::one(tp, seq)).await?;
        self.begin(tp, seq, at, 1, Vec::new(), source).await?;
        Ok(None)
    }
}
