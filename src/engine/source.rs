//! [`SourceRecord`]: an input record as the runtime read it, held while it waits and while it is
//! in flight.
//!
//! Why its layout: during a backfill the order window holds up to `delivery.order_window_kib` of
//! these (tens of thousands) and each record in flight keeps one for its dead letter. A record
//! held as a topic `String`, a key `Vec` and a value `Vec` took 112 bytes inline and three
//! allocations; at the peak of a 182,569-event drain the window held ~160,000 of them and
//! mimalloc's arena ~100 MiB. Here the topic is shared by every record of it ([`Arc<str>`]) and the
//! key and value sit in one block, one allocation per record. Its JSON (in parked state entries)
//! is what it was: the fields by name, the bytes in hex.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `key_len` of a record without a key.
const NO_KEY: u32 = u32::MAX;

/// Where an event came from, as the runtime read it. Opaque to the engine, kept with parked events so
/// an expired one reaches the dead letters with its original key, value and headers.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The key's bytes (if any), then the value's.
    bytes: Box<[u8]>,
    /// How many of `bytes` are the key; [`NO_KEY`] when there is none.
    key_len: u32,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record had no value at all (a tombstone), which is not the same as an empty one.
    null_value: bool,
}

impl SourceRecord {
    /// A record of `topic` with its key, value and headers copied into it.
    pub fn new(
        topic: impl Into<Arc<str>>,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Vec<(String, Vec<u8>)>,
    ) -> SourceRecord {
        let (bytes, key_len) = match key {
            // Kafka caps a record far below 4 GiB (message.max.bytes), so a key's length fits.
            Some(k) => ([k, value].concat().into_boxed_slice(), k.len() as u32),
            None => (Box::from(value), NO_KEY),
        };
        SourceRecord {
            topic: topic.into(),
            partition,
            offset,
            bytes,
            key_len,
            headers,
            null_value: false,
        }
    }

    /// The same record, marked as having had no value (a tombstone): [`Self::value`] is empty,
    /// [`Self::value_or_null`] says none.
    pub fn with_null_value(mut self) -> SourceRecord {
        self.null_value = true;
        self
    }

    /// The value as the record had it: `None` for a tombstone.
    pub fn value_or_null(&self) -> Option<&[u8]> {
        (!self.null_value).then(|| self.value())
    }

    /// The record's key, if it has one.
    pub fn key(&self) -> Option<&[u8]> {
        (self.key_len != NO_KEY).then(|| &self.bytes[..self.key_len as usize])
    }

    /// The record's value (empty for a record without one).
    pub fn value(&self) -> &[u8] {
        let start = if self.key_len == NO_KEY {
            0
        } else {
            self.key_len as usize
        };
        &self.bytes[start..]
    }

    /// About what holding the record costs: its bytes and a fixed allowance for the rest (the
    /// order window's bound counts records by it; `cargo bench --bench engine -- summary` weighs
    /// both).
    pub fn held_bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        128 + self.bytes.len() + headers
    }
}

impl std::fmt::Debug for SourceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key())
            .field("value", &self.value())
            .field("headers", &self.headers)
            .finish()
    }
}

/// The JSON form, as written by earlier builds (field by field, bytes in hex).
#[derive(Serialize)]
struct Written<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    #[serde(serialize_with = "super::hex_bytes::option::serialize")]
    key: Option<&'a [u8]>,
    #[serde(serialize_with = "super::hex_bytes::serialize")]
    value: &'a [u8],
    #[serde(serialize_with = "super::hex_bytes::headers::serialize")]
    headers: &'a [(String, Vec<u8>)],
}

#[derive(Deserialize)]
struct Read {
    topic: String,
    partition: i32,
    offset: i64,
    #[serde(with = "super::hex_bytes::option")]
    key: Option<Vec<u8>>,
    #[serde(with = "super::hex_bytes")]
    value: Vec<u8>,
    #[serde(with = "super::hex_bytes::headers")]
    headers: Vec<(String, Vec<u8>)>,
}

impl Serialize for SourceRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Written {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key(),
            value: self.value(),
            headers: &self.headers,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SourceRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SourceRecord, D::Error> {
        let r = Read::deserialize(d)?;
        Ok(SourceRecord::new(
            r.topic,
            r.partition,
            r.offset,
            r.key.as_deref(),
            &r.value,
            r.headers,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_come_back_apart_with_or_without_a_key() {
        let keyed = SourceRecord::new("t", 1, 2, Some(b"k-1"), b"value", vec![]);
        assert_eq!(keyed.key(), Some(&b"k-1"[..]));
        assert_eq!(keyed.value(), b"value");
        let empty_key = SourceRecord::new("t", 1, 2, Some(b""), b"value", vec![]);
        assert_eq!(empty_key.key(), Some(&b""[..]));
        assert_eq!(empty_key.value(), b"value");
        let unkeyed = SourceRecord::new("t", 1, 2, None, b"", vec![]);
        assert_eq!((unkeyed.key(), unkeyed.value()), (None, &b""[..]));
        assert_ne!(
            empty_key,
            SourceRecord::new("t", 1, 2, None, b"value", vec![])
        );
    }

    #[test]
    fn the_json_is_the_one_earlier_builds_wrote_and_reads_back() {
        let record = SourceRecord::new(
            "sales.contact.changes",
            3,
            42,
            Some(b"c-1"),
            &[0, 1, 0xff],
            vec![("traceparent".into(), b"00-ab".to_vec())],
        );
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"topic":"sales.contact.changes","partition":3,"offset":42,"key":"632d31","value":"0001ff","headers":[["traceparent","30302d6162"]]}"#
        );
        assert_eq!(serde_json::from_str::<SourceRecord>(&json).unwrap(), record);
        let unkeyed = SourceRecord::new("t", 0, 0, None, b"", vec![]);
        let json = serde_json::to_string(&unkeyed).unwrap();
        assert!(json.contains(r#""key":null"#), "{json}");
        assert_eq!(
            serde_json::from_str::<SourceRecord>(&json).unwrap(),
            unkeyed
        );
    }
}
