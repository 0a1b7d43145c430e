//! Reading an input record: its wire header, its writer schema (fetched once, retried while the
//! registry is down), and its Avro, either whole or only as far as the case key needs. Every
//! failure is a [`DeadLetter`] value naming its stage.

use std::sync::Arc;

use apache_avro::Schema;

use super::Pipeline;
use crate::engine::SourceRecord;
use crate::model::{ChangeEvent, SourceKind};
use crate::registry::{wire, RegistryError};
use crate::runtime::dead_letter::DeadLetter;

impl Pipeline {
    /// Fetches the writer schema, retrying while the registry is unavailable (never caching failures).
    pub(super) async fn writer_schema(&mut self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self.registry.cached(id) {
            return Ok(schema);
        }
        let mut backoff = self.registry.retry_initial;
        loop {
            match self.registry.fetch(id).await {
                Ok(s) => {
                    self.stats.registry("ok");
                    return Ok(s);
                }
                Err(e) if e.is_retriable() => {
                    self.stats.registry(e.outcome());
                    tracing::warn!(schema_id = id, error = %e, retry_in_ms = backoff.as_millis() as u64, "Schema Registry unavailable; retrying.");
                    tokio::time::sleep(backoff).await;
                    self.stats.beat();
                    backoff = (backoff * 2).min(self.registry.retry_max);
                }
                Err(e) => {
                    self.stats.registry(e.outcome());
                    return Err(e);
                }
            }
        }
    }

    /// A record's writer schema, whether it reads directly as ours ([`crate::codec::Codec::reads_directly`],
    /// cached per schema id), and where its Avro body starts; or which dead letter it deserves.
    pub(super) async fn writer_of(
        &mut self,
        kind: SourceKind,
        source: &SourceRecord,
    ) -> Result<(Arc<Schema>, bool, usize), DeadLetter> {
        let (id, body) = match wire::split(Some(source.value())) {
            Ok(v) => v,
            Err(e) => return Err(DeadLetter::from_wire(source.clone(), &e)),
        };
        let start = source.value().len() - body.len();
        let writer = self
            .writer_schema(id)
            .await
            .map_err(|e| DeadLetter::from_registry(source.clone(), &e))?;
        let direct = *self
            .direct
            .entry((id, kind))
            .or_insert_with(|| self.codec.reads_directly(kind, &writer));
        Ok((writer, direct, start))
    }

    /// Decodes a record's value as `kind`, or says which dead letter it deserves.
    pub(super) async fn decode(
        &mut self,
        kind: SourceKind,
        source: &SourceRecord,
    ) -> Result<ChangeEvent, DeadLetter> {
        let (writer, direct, start) = self.writer_of(kind, source).await?;
        self.decode_body(kind, source, &writer, direct, start)
    }

    /// The whole event of a record whose writer schema is known ([`Pipeline::writer_of`]).
    // The event (592 bytes) is larger than the dead letter (168): boxing the error would not make
    // this `Result` smaller, only add an allocation to every bad record.
    #[allow(clippy::result_large_err)]
    pub(super) fn decode_body(
        &self,
        kind: SourceKind,
        source: &SourceRecord,
        writer: &Schema,
        direct: bool,
        start: usize,
    ) -> Result<ChangeEvent, DeadLetter> {
        self.codec
            .decode_event_with(kind, writer, direct, &source.value()[start..])
            .map_err(|e| DeadLetter::from_decode(source.clone(), &e))
    }

    /// The case key of an input record. A record written with our schema is read only as far as
    /// the ids the key is computed from; the apply stage decodes and checks the rest (a record bad
    /// further on goes to the dead letters from there, with the same original bytes). A record of
    /// another writer schema is resolved whole, as its fields may be anywhere.
    pub(super) async fn case_key_of(
        &mut self,
        kind: SourceKind,
        source: &SourceRecord,
    ) -> Result<String, DeadLetter> {
        let (writer, direct, start) = self.writer_of(kind, source).await?;
        if !direct {
            let event = self.decode_body(kind, source, &writer, direct, start)?;
            return Ok(self.engine.case_key(&event).into_owned());
        }
        let f = self
            .codec
            .decode_case_fields(kind, &source.value()[start..])
            .map_err(|e| DeadLetter::from_decode(source.clone(), &e))?;
        Ok(self
            .engine
            .case_key_of(kind, &f.header, &f.id, &f.originating_lead)
            .into_owned())
    }
}
