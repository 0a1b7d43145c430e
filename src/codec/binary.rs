//! Avro binary encoding of our own types, field by field in declaration order, without a schema.
//!
//! Why: the hot path decodes events written with exactly our schema and encodes commands with our
//! schema. apache-avro's schema-aware serde looks every field up by name (a map of strings) and
//! allocates on the way: in `cargo bench --bench engine` decoding and encoding were ~45% of the
//! per-record transform. Our types mirror the schemas field for field, in order, and
//! `tests/schemas.rs` proves it for every event and command: for values that set every field (and
//! for values that set none) the bytes written here equal apache-avro's, and read back equal. So the
//! encoding can follow the Rust declaration order directly.
//!
//! Only what our schemas use is supported: records, `boolean`, `int`, `long`, `string`, enums and
//! unions `["null", T]`. Anything else is an error naming what was met, never a guess. Records from
//! a writer schema that is not ours still go through apache-avro's resolution (see [`super`]).

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{self, Impossible, Serialize};

/// What went wrong, as a sentence fragment for [`super::CodecError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(super) fn new(sentence: String) -> Error {
        Error(sentence)
    }
}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn unsupported(what: &str) -> Error {
    Error(format!(
        "{what} is not used by our schemas, so this codec does not write or read it"
    ))
}

/// Encodes `value` as the Avro binary body of its schema.
#[cfg(test)]
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    to_vec_after(&[], value)
}

/// `prefix`, then `value` encoded as by `to_vec` (tests), in one buffer (a framed record in one
/// allocation).
pub fn to_vec_after<T: Serialize + ?Sized>(prefix: &[u8], value: &T) -> Result<Vec<u8>, Error> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.extend_from_slice(prefix);
    value.serialize(&mut w)?;
    Ok(w.0)
}

/// Decodes one `T` from the start of `bytes`; returns it and how many bytes were left over.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), Error> {
    let mut r = Reader { input: bytes };
    let value = T::deserialize(&mut r)?;
    Ok((value, r.input.len()))
}

/// Avro `long`/`int`: zig-zag, then variable length, 7 bits a byte, low bits first.
pub(super) fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    fn long(&mut self, n: i64) -> Result<(), Error> {
        write_long(&mut self.0, n);
        Ok(())
    }
}

impl ser::Serializer for &mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.long(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.long(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.long(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.long(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.long(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.long(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.long(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        let v = i64::try_from(v).map_err(|_| Error(format!("{v} does not fit an Avro long")))?;
        self.long(v)
    }
    fn serialize_f32(self, _: f32) -> Result<(), Error> {
        Err(unsupported("float"))
    }
    fn serialize_f64(self, _: f64) -> Result<(), Error> {
        Err(unsupported("double"))
    }
    fn serialize_char(self, _: char) -> Result<(), Error> {
        Err(unsupported("a char"))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        write_long(&mut self.0, v.len() as i64);
        self.0.extend_from_slice(v);
        Ok(())
    }
    /// Union `["null", T]`: branch 0.
    fn serialize_none(self) -> Result<(), Error> {
        self.long(0)
    }
    /// Union `["null", T]`: branch 1, then the value.
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.long(1)?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    /// Avro enum: the symbol's index (declaration order is symbol order).
    fn serialize_unit_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<(), Error> {
        self.long(index.into())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(unsupported("an enum variant with data"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(unsupported("an array"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(unsupported("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(unsupported("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(unsupported("a tuple variant"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported("a map"))
    }
    /// Avro record: its fields one after the other, nothing around them.
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(unsupported("a struct variant"))
    }
}

impl ser::SerializeStruct for &mut Writer {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

pub(super) struct Reader<'de> {
    pub(super) input: &'de [u8],
}

impl<'de> Reader<'de> {
    fn byte(&mut self, what: &str) -> Result<u8, Error> {
        let (&b, rest) = self
            .input
            .split_first()
            .ok_or_else(|| Error(format!("the bytes end in the middle of {what}")))?;
        self.input = rest;
        Ok(b)
    }

    /// One byte holds every union branch, enum index and string length below 64: read it
    /// without the loop.
    #[inline]
    pub(super) fn long(&mut self) -> Result<i64, Error> {
        if let Some((&b, rest)) = self.input.split_first() {
            if b < 0x80 {
                self.input = rest;
                return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
            }
        }
        self.long_multi_byte()
    }

    #[inline(never)]
    fn long_multi_byte(&mut self) -> Result<i64, Error> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte("a number")?;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(Error("a number is longer than ten bytes".into()));
            }
        }
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'de [u8], Error> {
        let n = self.long()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.input.len())
            .ok_or_else(|| {
                Error(format!(
                    "a string of {n} bytes is announced but {} are left",
                    self.input.len()
                ))
            })?;
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    pub(super) fn boolean(&mut self) -> Result<bool, Error> {
        match self.byte("a boolean")? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error(format!("a boolean byte is {b}; Avro writes 0 or 1"))),
        }
    }

    /// A union `["null", T]`'s branch: whether a value follows.
    #[inline]
    pub(super) fn present(&mut self) -> Result<bool, Error> {
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(Error(format!(
                "a union branch is {n}; our unions are [\"null\", T], so 0 or 1"
            ))),
        }
    }

    /// A string, checked as UTF-8. Most of our strings are ASCII (ids, codes, phone numbers), and
    /// `is_ascii` checks a word at a time where `from_utf8` walks the bytes of a short string one by
    /// one: under callgrind, `from_utf8` was ~96 instructions per field of the contact edit.
    #[inline]
    pub(super) fn str(&mut self) -> Result<&'de str, Error> {
        let bytes = self.bytes()?;
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|e| Error(format!("a string is not valid UTF-8: {e}")))
    }
}

macro_rules! integer {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n = self.long()?;
            let v = <$ty>::try_from(n)
                .map_err(|_| Error(format!("{n} does not fit a {}", stringify!($ty))))?;
            visitor.$visit(v)
        }
    };
}

macro_rules! refuse {
    ($($method:ident: $what:literal),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(unsupported($what))
        })*
    };
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error(
            "Avro binary carries no types; a field's type must be known to read it".into(),
        ))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(self.boolean()?)
    }
    integer!(deserialize_i8, visit_i8, i8);
    integer!(deserialize_i16, visit_i16, i16);
    integer!(deserialize_i32, visit_i32, i32);
    integer!(deserialize_i64, visit_i64, i64);
    integer!(deserialize_u8, visit_u8, u8);
    integer!(deserialize_u16, visit_u16, u16);
    integer!(deserialize_u32, visit_u32, u32);
    integer!(deserialize_u64, visit_u64, u64);
    refuse!(
        deserialize_f32: "float",
        deserialize_f64: "double",
        deserialize_char: "a char",
        deserialize_seq: "an array",
        deserialize_map: "a map",
        deserialize_identifier: "a field name",
        deserialize_ignored_any: "a skipped value",
    );
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.str()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.str()?)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.present()? {
            visitor.visit_some(self)
        } else {
            visitor.visit_none()
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
        Err(unsupported("a tuple"))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Error> {
        Err(unsupported("a tuple struct"))
    }
    /// Avro record: the fields in order, as a sequence (serde's derive reads structs from one).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_seq(Fields {
            reader: self,
            left: fields.len(),
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(Symbol { reader: self })
    }
}

struct Fields<'a, 'de> {
    reader: &'a mut Reader<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Fields<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An Avro enum: the symbol's index.
struct Symbol<'a, 'de> {
    reader: &'a mut Reader<'de>,
}

impl<'de> de::EnumAccess<'de> for Symbol<'_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let n = self.reader.long()?;
        let index = u32::try_from(n).map_err(|_| Error(format!("an enum index is {n}")))?;
        let value = seed.deserialize(index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Symbol<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, Error> {
        Err(unsupported("an enum variant with data"))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
        Err(unsupported("an enum variant with data"))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Error> {
        Err(unsupported("an enum variant with data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints_as_in_the_avro_specification() {
        // The specification's examples: 0 -> 00, -1 -> 01, 1 -> 02, -2 -> 03, 2 -> 04, -64 -> 7f, 64 -> 80 01.
        for (n, bytes) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (2, vec![0x04]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            assert_eq!(to_vec(&n).unwrap(), bytes, "{n}");
            assert_eq!(from_slice::<i64>(&bytes).unwrap(), (n, 0));
        }
        for n in [i64::MIN, i64::MAX, i32::MIN.into(), i32::MAX.into()] {
            assert_eq!(from_slice::<i64>(&to_vec(&n).unwrap()).unwrap(), (n, 0));
        }
    }

    #[test]
    fn strings_read_back_whether_ascii_or_not_and_invalid_utf8_is_an_error() {
        for text in [
            "",
            "PR-000501",
            "Chloé Dubois",
            "Zürich",
            "東京",
            "a\u{0}b",
            "x".repeat(100).as_str(),
        ] {
            let bytes = to_vec(&text).unwrap();
            assert_eq!(from_slice::<String>(&bytes).unwrap(), (text.to_string(), 0));
        }
        // A lone continuation byte, and a truncated two-byte sequence after ASCII.
        for body in [&[0x80][..], b"abcdefgh\xc3"] {
            let mut bytes = Vec::new();
            write_long(&mut bytes, body.len() as i64);
            bytes.extend_from_slice(body);
            let err = from_slice::<String>(&bytes).unwrap_err();
            assert!(err.0.contains("not valid UTF-8"), "{err}");
        }
    }

    #[test]
    fn truncated_or_malformed_bytes_are_errors_that_say_what_was_wrong() {
        let cut = from_slice::<String>(&[0x0a, b'a']).unwrap_err();
        assert!(
            cut.0.contains("5 bytes is announced but 1 are left"),
            "{cut}"
        );
        let branch = from_slice::<Option<String>>(&[0x04]).unwrap_err();
        assert!(branch.0.contains("union branch is 2"), "{branch}");
        let boolean = from_slice::<bool>(&[0x07]).unwrap_err();
        assert!(boolean.0.contains("0 or 1"), "{boolean}");
        let long = from_slice::<i64>(&[0xff; 11]).unwrap_err();
        assert!(long.0.contains("longer than ten bytes"), "{long}");
        let int = from_slice::<i32>(&to_vec(&(1i64 << 40)).unwrap()).unwrap_err();
        assert!(int.0.contains("does not fit a i32"), "{int}");
        assert!(to_vec(&1.5f64).unwrap_err().0.contains("double"));
    }
}
