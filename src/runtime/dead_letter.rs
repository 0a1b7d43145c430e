//! Dead letters: a record that cannot be processed, with its original key, value and headers, and
//! error headers that Kafka Connect tooling reads.
//!
//! One constructor per failure stage, so every dead letter says where it failed in the same words:
//! the wire format, the registry, Avro decoding (Connect's `VALUE_CONVERTER` stage), the engine
//! (`TRANSFORMATION`), or producing its outputs (`KAFKA_PRODUCE`). `reason` is a bounded code for
//! metrics; `message` is a sentence for people.

use crate::codec::CodecError;
use crate::engine::{Expired, Rejection, SourceRecord};
use crate::registry::wire::WireError;
use crate::registry::RegistryError;

/// A record on its way to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub source: SourceRecord,
    /// Kafka Connect's stage name.
    pub stage: &'static str,
    /// Stands in for Connect's exception class: which error type.
    pub class: &'static str,
    /// A bounded code for metrics (`bad_wire_format`, `unknown_schema`, …).
    pub reason: &'static str,
    pub message: String,
    /// The engine rule involved, when there is one.
    pub rule: Option<&'static str>,
    pub retriable: bool,
    /// The value was left out (too large to carry): its size in bytes and SHA-1 (hex).
    pub dropped_value: Option<(usize, String)>,
}

impl DeadLetter {
    pub fn from_wire(source: SourceRecord, e: &WireError) -> DeadLetter {
        DeadLetter::new(
            source,
            "VALUE_CONVERTER",
            "partnersync.WireFormatError",
            "bad_wire_format",
            e.to_string(),
            None,
        )
    }

    pub fn from_registry(source: SourceRecord, e: &RegistryError) -> DeadLetter {
        let reason = match e {
            RegistryError::UnknownId(_) => "unknown_schema",
            _ => "invalid_schema",
        };
        DeadLetter::new(
            source,
            "VALUE_CONVERTER",
            "partnersync.SchemaRegistryError",
            reason,
            e.to_string(),
            None,
        )
    }

    pub fn from_decode(source: SourceRecord, e: &CodecError) -> DeadLetter {
        let reason = match e {
            CodecError::Incompatible { .. } => "incompatible_schema",
            _ => "undecodable",
        };
        DeadLetter::new(
            source,
            "VALUE_CONVERTER",
            "partnersync.AvroDecodeError",
            reason,
            e.to_string(),
            None,
        )
    }

    pub fn from_unknown_topic(source: SourceRecord) -> DeadLetter {
        let message = format!(
            "records from topic {} have no known source kind; check the [topics] settings",
            source.topic
        );
        DeadLetter::new(
            source,
            "VALUE_CONVERTER",
            "partnersync.UnknownSource",
            "unknown_source",
            message,
            None,
        )
    }

    pub fn from_rejection(source: SourceRecord, rule: &'static str, e: &Rejection) -> DeadLetter {
        DeadLetter::new(
            source,
            "TRANSFORMATION",
            "partnersync.EngineRejection",
            e.code(),
            e.to_string(),
            Some(rule),
        )
    }

    pub fn from_expired(source: SourceRecord, rule: &'static str, e: &Expired) -> DeadLetter {
        DeadLetter::new(
            source,
            "TRANSFORMATION",
            "partnersync.ParkingExpired",
            "parking_expired",
            e.message(),
            Some(rule),
        )
    }

    /// An input record too large to process: its dead letter carries the key, headers and
    /// coordinates, but not the value, whose size and SHA-1 go in headers instead.
    pub fn from_oversized(source: SourceRecord, limit_kib: usize) -> DeadLetter {
        let size = source.value().len();
        let message = format!(
            "the record's value is {size} bytes, over delivery.max_record_kib ({limit_kib} KiB), so it was not processed \
             and this dead letter does not carry it (its size and SHA-1 are in headers). Fetch it from {}/{}@{} if it is needed; \
             raise delivery.max_record_kib only if every output topic and broker accepts records that large",
            source.topic, source.partition, source.offset
        );
        DeadLetter::new(
            source,
            "KAFKA_CONSUME",
            "partnersync.RecordTooLarge",
            "oversized_input",
            message,
            None,
        )
        .without_value()
    }

    /// The same dead letter without the record's value: its size and SHA-1 (hex) go in headers
    /// (`partnersync.errors.value.size`, `.sha1`), its coordinates stay in Connect's.
    pub fn without_value(self) -> DeadLetter {
        use sha1::{Digest, Sha1};
        let source = &self.source;
        let size = source.value().len();
        let sha1: String = Sha1::digest(source.value())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let without = SourceRecord::new(
            source.topic.clone(),
            source.partition,
            source.offset,
            source.key(),
            &[],
            source.headers.clone(),
        );
        DeadLetter {
            source: without,
            dropped_value: Some((size, sha1)),
            ..self
        }
    }

    pub fn from_produce(source: SourceRecord, error: String) -> DeadLetter {
        let message = format!("an output of this record could not be written: {error}");
        DeadLetter::new(
            source,
            "KAFKA_PRODUCE",
            "partnersync.ProduceError",
            "output_rejected",
            message,
            None,
        )
    }

    fn new(
        source: SourceRecord,
        stage: &'static str,
        class: &'static str,
        reason: &'static str,
        message: String,
        rule: Option<&'static str>,
    ) -> DeadLetter {
        DeadLetter {
            source,
            stage,
            class,
            reason,
            message,
            rule,
            retriable: false,
            dropped_value: None,
        }
    }

    /// The original headers followed by Connect's error headers and ours.
    pub fn headers(&self, connector: &str) -> Vec<(String, Vec<u8>)> {
        let mut h = self.source.headers.clone();
        let mut put = |k: &str, v: String| h.push((k.to_string(), v.into_bytes()));
        put("__connect.errors.topic", self.source.topic.to_string());
        put(
            "__connect.errors.partition",
            self.source.partition.to_string(),
        );
        put("__connect.errors.offset", self.source.offset.to_string());
        put("__connect.errors.connector.name", connector.to_string());
        put("__connect.errors.task.id", "0".into());
        put("__connect.errors.stage", self.stage.to_string());
        put("__connect.errors.class.name", "partnersync.Pipeline".into());
        put(
            "__connect.errors.exception.class.name",
            self.class.to_string(),
        );
        put("__connect.errors.exception.message", self.message.clone());
        put("partnersync.errors.reason", self.reason.to_string());
        put(
            "partnersync.errors.rule",
            self.rule.unwrap_or("").to_string(),
        );
        put("partnersync.errors.retriable", self.retriable.to_string());
        if let Some((size, sha1)) = &self.dropped_value {
            put("partnersync.errors.value.size", size.to_string());
            put("partnersync.errors.value.sha1", sha1.clone());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceRecord {
        SourceRecord::new(
            "sales.lead.changes",
            2,
            41,
            Some(b"lead-1"),
            b"\x07garbage",
            vec![("traceparent".into(), b"00-abc-def-01".to_vec())],
        )
    }

    /// The value of header `name`, as text.
    fn header(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    const SHA1_OF_SOURCE: &str = "81648889982899e901e128420c671c50774834f6";

    #[test]
    fn a_dead_letter_without_its_value_keeps_key_headers_and_coordinates_and_says_size_and_digest()
    {
        let dl = DeadLetter::from_produce(source(), "too large".into()).without_value();
        assert!(dl.source.value().is_empty());
        assert_eq!(dl.source.key(), Some(b"lead-1".as_slice()));
        assert_eq!((dl.source.partition, dl.source.offset), (2, 41));
        let h = dl.headers("partner-sync");
        let get = |k: &str| header(&h, k);
        assert_eq!(get("partnersync.errors.value.size").as_deref(), Some("8"));
        // SHA-1 of b"\x07garbage", computed apart (Python's hashlib).
        assert_eq!(
            get("partnersync.errors.value.sha1").as_deref(),
            Some(SHA1_OF_SOURCE)
        );
        assert_eq!(get("traceparent").as_deref(), Some("00-abc-def-01"));
        assert_eq!(
            get("partnersync.errors.reason").as_deref(),
            Some("output_rejected")
        );
    }

    #[test]
    fn headers_keep_the_originals_and_add_connects_error_context() {
        let dl = DeadLetter::from_wire(source(), &WireError::BadMagic(7));
        let h = dl.headers("partner-sync");
        let get = |k: &str| header(&h, k);
        assert_eq!(get("traceparent").as_deref(), Some("00-abc-def-01"));
        assert_eq!(
            get("__connect.errors.topic").as_deref(),
            Some("sales.lead.changes")
        );
        assert_eq!(get("__connect.errors.partition").as_deref(), Some("2"));
        assert_eq!(get("__connect.errors.offset").as_deref(), Some("41"));
        assert_eq!(
            get("__connect.errors.stage").as_deref(),
            Some("VALUE_CONVERTER")
        );
        assert!(get("__connect.errors.exception.message")
            .unwrap()
            .contains("not the Confluent magic byte 0"));
        assert_eq!(
            get("partnersync.errors.reason").as_deref(),
            Some("bad_wire_format")
        );
        assert_eq!(
            get("partnersync.errors.retriable").as_deref(),
            Some("false")
        );
    }
}
