//! A macro that declares an entity record once and derives from it everything the mapping tables need.
//!
//! Dual-write table maps name fields by their system names (`firstname`, `PersonFirstName`). Our mapping
//! tables do the same, so every entity must answer two questions by field name: "which text fields do
//! you have?" (to validate a mapping table at start-up, with an error that names the bad key) and "what
//! is the value of field X?" / "set field X" (to apply it). Writing those by hand for each entity would
//! drift from the struct; this macro keeps the struct, the serde names and the name tables in one place.

/// Declares a serde record whose fields carry their system names.
///
/// `control` fields are typed (ids, option sets, flags) and read by rules directly; `text` fields are
/// `Option<String>`, listed by name in `TEXT_FIELDS` (mapping tables are checked against it and resolved
/// to positions in `TEXT_GETTERS`/`TEXT_SETTERS` at start-up) and readable by name through
/// `text_field` (templates).
macro_rules! entity {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            control {
                $( $(#[$cmeta:meta])* $cavro:literal => $cfield:ident : $cty:ty, )*
            }
            text {
                $( $(#[$tmeta:meta])* $tavro:literal => $tfield:ident, )*
            }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $( $(#[$cmeta])* #[serde(rename = $cavro)] pub $cfield: $cty, )*
            $( $(#[$tmeta])* #[serde(rename = $tavro)]
               pub $tfield: Option<String>, )*
        }

        impl $name {
            /// The system names of all fields, as in the Avro schema.
            pub const FIELDS: &'static [&'static str] = &[$($cavro,)* $($tavro),*];

            /// The system names of the text fields a mapping table may read or write.
            pub const TEXT_FIELDS: &'static [&'static str] = &[$($tavro),*];

            /// The value of the text field with this system name, if the field exists and is set.
            pub fn text_field(&self, name: &str) -> Option<&str> {
                match name {
                    $( $tavro => self.$tfield.as_deref(), )*
                    _ => None,
                }
            }

            /// Readers of the text fields, in `TEXT_FIELDS` order. A mapping table resolved to
            /// positions at start-up applies without comparing field names per record.
            pub const TEXT_GETTERS: &'static [fn(&Self) -> Option<&str>] =
                &[$( |s: &Self| s.$tfield.as_deref(), )*];

            /// Writers of the text fields, in `TEXT_FIELDS` order.
            pub const TEXT_SETTERS: &'static [fn(&mut Self, Option<String>)] =
                &[$( |s: &mut Self, v: Option<String>| s.$tfield = v, )*];

            /// How many text fields there are (the length of `TEXT_FIELDS`).
            pub const TEXT_COUNT: usize = [$($tavro),*].len();

            /// Moves every text field out, in `TEXT_FIELDS` order, leaving `None`: a rule that
            /// turns the fields into a command's takes them instead of copying each one.
            pub fn take_texts(&mut self) -> [Option<String>; Self::TEXT_COUNT] {
                [$( self.$tfield.take(), )*]
            }

            /// Puts text fields back, in `TEXT_FIELDS` order (the inverse of `take_texts`).
            pub fn put_texts(&mut self, texts: [Option<String>; Self::TEXT_COUNT]) {
                let [$( $tfield, )*] = texts;
                $( self.$tfield = $tfield; )*
            }

            /// Calls `f` with every text field's value, in declaration order (for digests).
            pub fn for_each_text(&self, mut f: impl FnMut(Option<&str>)) {
                $( f(self.$tfield.as_deref()); )*
            }
        }

        /// Every field in declaration order (see [`crate::model::ordered`]), read into a default
        /// record: a struct literal with a `?` per field decoded slower than serde's derive.
        impl crate::model::ordered::Field for $name {
            #[inline]
            fn read<R: crate::model::ordered::FieldReader>(r: &mut R) -> Result<Self, R::Error> {
                use crate::model::ordered::Field;
                let mut record = $name::default();
                $( record.$cfield = Field::read(r)?; )*
                $( record.$tfield = Field::read(r)?; )*
                Ok(record)
            }
            #[inline]
            fn write<W: crate::model::ordered::FieldWriter>(&self, w: &mut W) {
                $( crate::model::ordered::Field::write(&self.$cfield, w); )*
                $( crate::model::ordered::Field::write(&self.$tfield, w); )*
            }
        }
    };
}

pub(crate) use entity;
