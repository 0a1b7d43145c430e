//! Bytes in the JSON state as lowercase hex strings.
//!
//! serde_json writes a `Vec<u8>` as an array of numbers (up to four characters per byte, each
//! formatted on its own); parked events carry their source record's key, value and headers, so every
//! state write of a case with parked events paid for that — the largest item in a profile of the
//! connector draining a backlog. Hex is two characters per byte from a table. Reading accepts both
//! forms, so state written before this change still restores.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", c as char)),
    };
    let t = text.as_bytes();
    if t.len() % 2 != 0 {
        return Err("hex text has an odd length".into());
    }
    t.chunks(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a hex string or an array of bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        decode(v).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// `#[serde(with = "hex_bytes")]` for `Vec<u8>`.
pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(BytesVisitor)
}

/// For `Option<Vec<u8>>` (and, to write, any optional bytes).
pub mod option {
    use super::*;
    use serde::Deserialize;

    pub fn serialize<S: Serializer, B: AsRef<[u8]>>(
        bytes: &Option<B>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&encode(b.as_ref())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wrapped(#[serde(with = "super")] Vec<u8>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// For header lists, `Vec<(String, Vec<u8>)>`.
pub mod headers {
    use super::*;
    use serde::Deserialize;

    pub fn serialize<S: Serializer>(h: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(h.len()))?;
        for (k, v) in h {
            seq.serialize_element(&(k, encode(v)))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Pair(String, #[serde(with = "super")] Vec<u8>);
        Ok(Vec::<Pair>::deserialize(d)?
            .into_iter()
            .map(|p| (p.0, p.1))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        #[serde(with = "crate::engine::hex_bytes::option")]
        key: Option<Vec<u8>>,
        #[serde(with = "crate::engine::hex_bytes")]
        value: Vec<u8>,
        #[serde(with = "crate::engine::hex_bytes::headers")]
        headers: Vec<(String, Vec<u8>)>,
    }

    #[test]
    fn bytes_round_trip_as_hex_and_the_old_array_form_still_reads() {
        let r = R {
            key: Some(vec![0, 255, 16]),
            value: vec![0, 0, 0, 0, 7, 0xab],
            headers: vec![("traceparent".into(), b"00-ab".to_vec())],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"key":"00ff10","value":"0000000007ab","headers":[["traceparent","30302d6162"]]}"#
        );
        assert_eq!(serde_json::from_str::<R>(&text).unwrap(), r);
        let old = r#"{"key":[0,255,16],"value":[0,0,0,0,7,171],"headers":[["traceparent",[48,48,45,97,98]]]}"#;
        assert_eq!(serde_json::from_str::<R>(old).unwrap(), r);
        let none = r#"{"key":null,"value":"","headers":[]}"#;
        assert_eq!(serde_json::from_str::<R>(none).unwrap().key, None);
        assert!(serde_json::from_str::<R>(r#"{"key":null,"value":"0g","headers":[]}"#).is_err());
    }
}
