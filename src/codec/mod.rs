//! Avro: the schemas in `schemas/`, and typed encoding and decoding of events and commands.
//!
//! The schemas are compiled into the binary (they are the contract, and a connector that starts must
//! not depend on finding files). Decoding takes the *writer's* schema, as the Schema Registry id in
//! each message names it:
//!
//! - writer schema equal to ours (the usual case): decode straight into the typed struct with
//!   apache-avro's schema-aware serde deserializer, without building a generic `Value` tree;
//! - writer schema different (a producer on a newer or older version): decode to a `Value`, resolve it
//!   against our reader schema (Avro's rules: defaults for missing fields, dropped unknown fields,
//!   promotions), then deserialize. apache-avro 0.22's `read_deser` refuses a reader schema (it
//!   panics), which is why the two paths are explicit here.
//!
//! Errors are values ([`CodecError`]) naming the schema and what was wrong, never panics.

use std::collections::BTreeMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{
    Alert, Change, ChangeEvent, Command, CommandKind, CustomerHierarchyCreate, CustomerUpsert,
    LeadNote, LeadUpsert, NotificationRequest, ProspectStatusUpdate, SourceKind,
};

/// The schema files, by what they carry.
pub const EVENT_SCHEMAS: [(SourceKind, &str); 5] = [
    (
        SourceKind::Prospect,
        include_str!("../../schemas/commerce/b2b_prospect_change.avsc"),
    ),
    (
        SourceKind::Lead,
        include_str!("../../schemas/sales/lead_change.avsc"),
    ),
    (
        SourceKind::Opportunity,
        include_str!("../../schemas/sales/opportunity_change.avsc"),
    ),
    (
        SourceKind::Contact,
        include_str!("../../schemas/sales/contact_change.avsc"),
    ),
    (
        SourceKind::Account,
        include_str!("../../schemas/sales/account_change.avsc"),
    ),
];

pub const COMMAND_SCHEMAS: [(CommandKind, &str); 7] = [
    (
        CommandKind::LeadUpsert,
        include_str!("../../schemas/commands/lead_upsert.avsc"),
    ),
    (
        CommandKind::LeadNote,
        include_str!("../../schemas/commands/lead_note.avsc"),
    ),
    (
        CommandKind::CustomerUpsert,
        include_str!("../../schemas/commands/customer_upsert.avsc"),
    ),
    (
        CommandKind::ProspectStatus,
        include_str!("../../schemas/commands/prospect_status.avsc"),
    ),
    (
        CommandKind::CustomerHierarchy,
        include_str!("../../schemas/commands/customer_hierarchy.avsc"),
    ),
    (
        CommandKind::RejectionEmail,
        include_str!("../../schemas/commands/rejection_email.avsc"),
    ),
    (
        CommandKind::Alert,
        include_str!("../../schemas/commands/alert.avsc"),
    ),
];

/// Why a record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the {what} record does not match its Avro schema {schema}: {reason}")]
    Encode {
        what: String,
        schema: String,
        reason: String,
    },
    #[error("the bytes are not a valid {schema} Avro record: {reason}")]
    Decode { schema: String, reason: String },
    #[error("the writer's schema cannot be resolved to our {schema} schema: {reason}")]
    Incompatible { schema: String, reason: String },
}

/// Our (reader and writer) schemas, parsed once.
#[derive(Debug, Clone)]
pub struct Codec {
    events: BTreeMap<SourceKind, Schema>,
    commands: BTreeMap<CommandKind, Schema>,
}

fn full_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.fullname(None),
        other => format!("{other:?}"),
    }
}

impl Codec {
    /// Parses the embedded schemas. They are tested to parse, so this cannot fail in a release.
    pub fn new() -> Codec {
        let parse = |text: &str| {
            Schema::parse_str(text).expect("embedded schema parses; tests/schemas.rs checks it")
        };
        Codec {
            events: EVENT_SCHEMAS.iter().map(|(k, t)| (*k, parse(t))).collect(),
            commands: COMMAND_SCHEMAS
                .iter()
                .map(|(k, t)| (*k, parse(t)))
                .collect(),
        }
    }

    pub fn event_schema(&self, kind: SourceKind) -> &Schema {
        &self.events[&kind]
    }

    pub fn command_schema(&self, kind: CommandKind) -> &Schema {
        &self.commands[&kind]
    }

    /// Encodes an event's Avro body (no wire-format header) with our schema.
    pub fn encode_event(&self, event: &ChangeEvent) -> Result<Vec<u8>, CodecError> {
        let schema = self.event_schema(event.kind());
        match event {
            ChangeEvent::Prospect(c) => write(schema, c, "prospect"),
            ChangeEvent::Lead(c) => write(schema, c, "lead"),
            ChangeEvent::Opportunity(c) => write(schema, c, "opportunity"),
            ChangeEvent::Contact(c) => write(schema, c, "contact"),
            ChangeEvent::Account(c) => write(schema, c, "account"),
        }
    }

    /// Whether records written with `writer` decode straight into our types: the same fields and
    /// types in the same order (equal parsing canonical forms; docs, defaults and logical types do not
    /// change the binary encoding). Compute it once per writer schema id.
    pub fn reads_directly(&self, kind: SourceKind, writer: &Schema) -> bool {
        writer.canonical_form() == self.event_schema(kind).canonical_form()
    }

    /// Decodes an event body written with `writer` (the schema the registry id names).
    pub fn decode_event(
        &self,
        kind: SourceKind,
        writer: &Schema,
        bytes: &[u8],
    ) -> Result<ChangeEvent, CodecError> {
        self.decode_event_with(kind, writer, writer == self.event_schema(kind), bytes)
    }

    /// Like [`Codec::decode_event`], with [`Codec::reads_directly`] computed by the caller.
    pub fn decode_event_with(
        &self,
        kind: SourceKind,
        writer: &Schema,
        direct: bool,
        bytes: &[u8],
    ) -> Result<ChangeEvent, CodecError> {
        let reader = if direct {
            writer
        } else {
            self.event_schema(kind)
        };
        Ok(match kind {
            SourceKind::Prospect => {
                ChangeEvent::Prospect(read::<Change<_>>(writer, reader, bytes)?)
            }
            SourceKind::Lead => ChangeEvent::Lead(read::<Change<_>>(writer, reader, bytes)?),
            SourceKind::Opportunity => {
                ChangeEvent::Opportunity(read::<Change<_>>(writer, reader, bytes)?)
            }
            SourceKind::Contact => ChangeEvent::Contact(read::<Change<_>>(writer, reader, bytes)?),
            SourceKind::Account => ChangeEvent::Account(read::<Change<_>>(writer, reader, bytes)?),
        })
    }

    /// Encodes a command's Avro body with our schema for its kind.
    pub fn encode_command(&self, command: &Command) -> Result<Vec<u8>, CodecError> {
        let kind = command.kind();
        let schema = self.command_schema(kind);
        let what = kind.as_str();
        match command {
            Command::LeadUpsert(c) => write(schema, c, what),
            Command::LeadNote(c) => write(schema, c, what),
            Command::CustomerUpsert(c) => write(schema, c, what),
            Command::ProspectStatus(c) => write(schema, c, what),
            Command::CustomerHierarchy(c) => write(schema, c, what),
            Command::RejectionEmail(c) => write(schema, c, what),
            Command::Alert(c) => write(schema, c, what),
        }
    }

    /// Decodes a command body written with our schema (used by tests and by consumers of our topics).
    pub fn decode_command(&self, kind: CommandKind, bytes: &[u8]) -> Result<Command, CodecError> {
        let s = self.command_schema(kind);
        Ok(match kind {
            CommandKind::LeadUpsert => Command::LeadUpsert(read::<LeadUpsert>(s, s, bytes)?),
            CommandKind::LeadNote => Command::LeadNote(read::<LeadNote>(s, s, bytes)?),
            CommandKind::CustomerUpsert => {
                Command::CustomerUpsert(read::<CustomerUpsert>(s, s, bytes)?)
            }
            CommandKind::ProspectStatus => {
                Command::ProspectStatus(read::<ProspectStatusUpdate>(s, s, bytes)?)
            }
            CommandKind::CustomerHierarchy => {
                Command::CustomerHierarchy(read::<CustomerHierarchyCreate>(s, s, bytes)?)
            }
            CommandKind::RejectionEmail => {
                Command::RejectionEmail(read::<NotificationRequest>(s, s, bytes)?)
            }
            CommandKind::Alert => Command::Alert(read::<Alert>(s, s, bytes)?),
        })
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

fn write<T: Serialize>(schema: &Schema, value: &T, what: &str) -> Result<Vec<u8>, CodecError> {
    let encode_error = |e: apache_avro::Error| CodecError::Encode {
        what: what.to_string(),
        schema: full_name(schema),
        reason: e.to_string(),
    };
    let writer = GenericDatumWriter::builder(schema)
        .build()
        .map_err(encode_error)?;
    writer.write_ser_to_vec(value).map_err(encode_error)
}

fn read<T: DeserializeOwned>(
    writer: &Schema,
    reader: &Schema,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let schema = full_name(reader);
    let decode_error = |e: apache_avro::Error| CodecError::Decode {
        schema: schema.clone(),
        reason: e.to_string(),
    };
    let mut input = bytes;
    let value = if writer == reader {
        let typed = GenericDatumReader::builder(writer)
            .build()
            .map_err(decode_error)?;
        typed.read_deser::<T>(&mut input).map_err(decode_error)?
    } else {
        let resolving = GenericDatumReader::builder(writer)
            .reader_schema(reader)
            .build()
            .map_err(|e| CodecError::Incompatible {
                schema: schema.clone(),
                reason: e.to_string(),
            })?;
        let value = resolving
            .read_value(&mut input)
            .map_err(|e| CodecError::Incompatible {
                schema: schema.clone(),
                reason: e.to_string(),
            })?;
        apache_avro::from_value::<T>(&value).map_err(decode_error)?
    };
    if !input.is_empty() {
        return Err(CodecError::Decode {
            schema,
            reason: format!(
                "{} byte(s) left over after the record; the writer schema id is probably wrong",
                input.len()
            ),
        });
    }
    Ok(value)
}
