//! A record's fields read and written one after the other, in declaration order, without serde.
//!
//! Why: the records of the hot path (every change event, and the lead and customer upserts) are
//! encoded as their fields in schema order with nothing between them, and our types declare their
//! fields in that order (`tests/schemas.rs` proves it byte for byte against apache-avro). serde's
//! derive reads a struct through a visitor: a temporary per field, a default value of the whole
//! struct for fields that never come, then the struct moved out (a contact's event is 536 bytes).
//! Through [`Field`], the `entity!` macro reads each field in turn into a default record and writes
//! each one straight from the struct: the contact edit took 914–936 ns per record against
//! 1,009–1,019 through serde (`cargo bench --bench engine -- summary`, alternating builds).
//! serde stays for everything else: JSON state, the other commands, the route stage's leading
//! fields, and records of another writer schema, which apache-avro resolves.
//!
//! This module knows only the order. The codec implements [`FieldReader`] and [`FieldWriter`] for
//! the Avro binary encoding (`src/codec/ordered.rs`).

use super::{Change, ChangeHeader, Operation};

/// Reads the values of one record's fields, one after the other.
pub trait FieldReader {
    type Error;
    fn string(&mut self) -> Result<String, Self::Error>;
    fn long(&mut self) -> Result<i64, Self::Error>;
    fn int(&mut self) -> Result<i32, Self::Error>;
    fn boolean(&mut self) -> Result<bool, Self::Error>;
    /// Whether an optional value follows.
    fn present(&mut self) -> Result<bool, Self::Error>;
    /// An enum's symbol, as its position in `symbols` (which the error names if it is out of range).
    fn symbol(&mut self, symbols: &'static [&'static str]) -> Result<usize, Self::Error>;
}

/// Writes the values of one record's fields, one after the other.
pub trait FieldWriter {
    fn string(&mut self, value: &str);
    fn long(&mut self, value: i64);
    fn boolean(&mut self, value: bool);
    /// Whether an optional value follows.
    fn present(&mut self, present: bool);
    fn symbol(&mut self, index: usize);
}

/// A value that is read and written as one field (or, for a record, as its fields in order).
pub trait Field: Sized {
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error>;
    fn write<W: FieldWriter>(&self, w: &mut W);
}

impl Field for String {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        r.string()
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        w.string(self)
    }
}

impl Field for i64 {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        r.long()
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        w.long(*self)
    }
}

impl Field for i32 {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        r.int()
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        w.long(i64::from(*self))
    }
}

impl Field for bool {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        r.boolean()
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        w.boolean(*self)
    }
}

impl<T: Field> Field for Option<T> {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        Ok(if r.present()? {
            Some(T::read(r)?)
        } else {
            None
        })
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        w.present(self.is_some());
        if let Some(v) = self {
            v.write(w);
        }
    }
}

impl Operation {
    /// The symbols in declaration order, which is the schema's symbol order.
    const SYMBOLS: &'static [&'static str] = &["CREATE", "UPDATE", "DELETE", "SNAPSHOT"];
    pub(crate) const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Update,
        Operation::Delete,
        Operation::Snapshot,
    ];
}

impl Field for Operation {
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        Ok(Operation::ALL[r.symbol(Operation::SYMBOLS)?])
    }
    fn write<W: FieldWriter>(&self, w: &mut W) {
        w.symbol(*self as usize)
    }
}

impl Field for ChangeHeader {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        Ok(ChangeHeader {
            op: Field::read(r)?,
            change_id: Field::read(r)?,
            version: Field::read(r)?,
            modified_on: Field::read(r)?,
            modified_by: Field::read(r)?,
            company: Field::read(r)?,
        })
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        self.op.write(w);
        self.change_id.write(w);
        self.version.write(w);
        self.modified_on.write(w);
        self.modified_by.write(w);
        self.company.write(w);
    }
}

impl<T: Field> Field for Change<T> {
    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Self, R::Error> {
        Ok(Change {
            header: Field::read(r)?,
            record: Field::read(r)?,
        })
    }
    #[inline]
    fn write<W: FieldWriter>(&self, w: &mut W) {
        self.header.write(w);
        self.record.write(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_symbols_follow_the_declaration_order_serde_numbers_variants_by() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
            assert_eq!(
                serde_json::to_value(op).unwrap(),
                serde_json::json!(Operation::SYMBOLS[i])
            );
        }
    }
}
