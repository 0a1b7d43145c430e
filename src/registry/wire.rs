//! The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

/// Why bytes are not in the wire format; the record goes to the dead letters with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the value is {0} byte(s), shorter than the 5-byte Confluent header (magic byte and schema id)")]
    TooShort(usize),
    #[error("the first byte is {0}, not the Confluent magic byte 0: the value was not written with a Schema Registry serializer")]
    BadMagic(u8),
    #[error("the record has no value (a tombstone); change events must carry the row")]
    Empty,
}

/// Splits a value into its schema id and Avro body.
pub fn split(value: Option<&[u8]>) -> Result<(u32, &[u8]), WireError> {
    let value = value.ok_or(WireError::Empty)?;
    if value.len() < 5 {
        return Err(if value.is_empty() {
            WireError::Empty
        } else {
            WireError::TooShort(value.len())
        });
    }
    if value[0] != 0 {
        return Err(WireError::BadMagic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

/// The five bytes before an Avro body: magic byte 0, then the schema id (big-endian).
pub fn header(id: u32) -> [u8; 5] {
    let [a, b, c, d] = id.to_be_bytes();
    [0, a, b, c, d]
}

/// Frames an Avro body with its schema id.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&header(id));
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_splits_round_trip() {
        let framed = frame(258, b"avro");
        assert_eq!(framed, [0, 0, 0, 1, 2, b'a', b'v', b'r', b'o']);
        assert_eq!(header(258), framed[..5]);
        assert_eq!(split(Some(&framed)), Ok((258, &b"avro"[..])));
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        assert_eq!(split(None), Err(WireError::Empty));
        assert_eq!(split(Some(b"\x00\x01")), Err(WireError::TooShort(2)));
        assert_eq!(
            split(Some(b"{\"json\": true}")),
            Err(WireError::BadMagic(b'{'))
        );
    }
}
