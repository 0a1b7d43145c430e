//! The Avro binary encoding behind [`crate::model::ordered`]: the records of the hot path read and
//! written field by field, without serde's visitors (see that module for why).
//!
//! It shares [`super::binary`]'s reader and writer, so a number, a string or a union branch is read
//! with the same checks and fails with the same sentence either way.

use super::binary::{write_long, Error, Reader, Writer};
use crate::model::ordered::{Field, FieldReader, FieldWriter};

/// Decodes one `T` from the start of `bytes`; returns it and how many bytes were left over.
pub fn from_slice<T: Field>(bytes: &[u8]) -> Result<(T, usize), Error> {
    let mut r = Reader { input: bytes };
    let value = T::read(&mut r)?;
    Ok((value, r.input.len()))
}

/// `prefix`, then `value`'s fields, in one buffer.
pub fn to_vec_after<T: Field>(prefix: &[u8], value: &T) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.extend_from_slice(prefix);
    value.write(&mut w);
    w.0
}

impl FieldReader for Reader<'_> {
    type Error = Error;

    #[inline]
    fn string(&mut self) -> Result<String, Error> {
        self.str().map(String::from)
    }
    #[inline]
    fn long(&mut self) -> Result<i64, Error> {
        Reader::long(self)
    }
    #[inline]
    fn int(&mut self) -> Result<i32, Error> {
        let n = Reader::long(self)?;
        i32::try_from(n).map_err(|_| Error::new(format!("{n} does not fit a i32")))
    }
    #[inline]
    fn boolean(&mut self) -> Result<bool, Error> {
        Reader::boolean(self)
    }
    #[inline]
    fn present(&mut self) -> Result<bool, Error> {
        Reader::present(self)
    }
    fn symbol(&mut self, symbols: &'static [&'static str]) -> Result<usize, Error> {
        let n = Reader::long(self)?;
        usize::try_from(n)
            .ok()
            .filter(|&i| i < symbols.len())
            .ok_or_else(|| {
                Error::new(format!(
                    "an enum index is {n}, where the symbols are {}",
                    symbols.join(", ")
                ))
            })
    }
}

impl FieldWriter for Writer {
    #[inline]
    fn string(&mut self, value: &str) {
        write_long(&mut self.0, value.len() as i64);
        self.0.extend_from_slice(value.as_bytes());
    }
    #[inline]
    fn long(&mut self, value: i64) {
        write_long(&mut self.0, value);
    }
    #[inline]
    fn boolean(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }
    #[inline]
    fn present(&mut self, present: bool) {
        self.0.push(u8::from(present) << 1);
    }
    #[inline]
    fn symbol(&mut self, index: usize) {
        write_long(&mut self.0, index as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeHeader, Operation};

    fn header(op: Operation) -> ChangeHeader {
        ChangeHeader {
            op,
            change_id: "c-1".into(),
            version: -3,
            modified_on: 1_772_442_000_000,
            modified_by: "u".into(),
            company: None,
        }
    }

    #[test]
    fn field_by_field_bytes_equal_the_serde_codecs_and_read_back() {
        for op in [Operation::Create, Operation::Snapshot] {
            for company in [None, Some("usmf".to_string())] {
                let h = ChangeHeader {
                    company,
                    ..header(op)
                };
                let bytes = to_vec_after(&[9], &h);
                assert_eq!(bytes, super::super::binary::to_vec_after(&[9], &h).unwrap());
                assert_eq!(from_slice::<ChangeHeader>(&bytes[1..]).unwrap(), (h, 0));
            }
        }
    }

    fn text() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        // Up to 200 characters of any script: lengths past 63 bytes take a multi-byte varint.
        proptest::option::of(".{0,200}")
    }

    proptest::proptest! {
        /// Arbitrary values, not only the schema samples of `tests/schemas.rs`: negative and
        /// multi-byte numbers, empty and long strings, non-ASCII text, any mix of absent fields.
        #[test]
        fn any_contact_change_encodes_as_the_serde_codec_does_and_reads_back(
            op in 0usize..4,
            version in proptest::num::i64::ANY,
            change_id in ".{0,80}",
            company in text(),
            contactid in ".{0,80}",
            originatingleadid in text(),
            sellable in proptest::option::of(proptest::bool::ANY),
            names in proptest::collection::vec(text(), 4),
        ) {
            use crate::model::{Change, Contact};
            let change = Change {
                header: ChangeHeader {
                    op: Operation::ALL[op],
                    change_id,
                    version,
                    modified_on: version.wrapping_mul(3),
                    modified_by: "u".into(),
                    company,
                },
                record: Contact {
                    contactid,
                    originatingleadid,
                    msdyn_sellable: sellable,
                    firstname: names[0].clone(),
                    lastname: names[1].clone(),
                    emailaddress1: names[2].clone(),
                    address1_line1: names[3].clone(),
                    ..Contact::default()
                },
            };
            let bytes = to_vec_after(&[], &change);
            proptest::prop_assert_eq!(&bytes, &super::super::binary::to_vec_after(&[], &change).unwrap());
            proptest::prop_assert_eq!(from_slice::<Change<Contact>>(&bytes).unwrap(), (change, 0));
        }
    }

    #[test]
    fn an_enum_index_past_the_symbols_or_a_bad_union_branch_is_an_error_that_says_so() {
        let mut bytes = to_vec_after(&[], &header(Operation::Create));
        bytes[0] = 8; // index 4 of four symbols
        let e = from_slice::<ChangeHeader>(&bytes).unwrap_err().to_string();
        assert!(e.contains("an enum index is 4"), "{e}");
        assert!(e.contains("CREATE, UPDATE, DELETE, SNAPSHOT"), "{e}");

        let mut bytes = to_vec_after(&[], &header(Operation::Create));
        *bytes.last_mut().unwrap() = 4; // the company's branch 2
        let e = from_slice::<ChangeHeader>(&bytes).unwrap_err().to_string();
        assert!(e.contains("a union branch is 2"), "{e}");
    }
}
