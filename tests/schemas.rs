//! The Avro contract: schemas match the model, every record round-trips, and evolution is safe.

use apache_avro::schema::RecordSchema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use partner_sync::codec::{Codec, CodecError, COMMAND_SCHEMAS, EVENT_SCHEMAS};
use partner_sync::engine::{Engine, EngineState};
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{
    Account, Alert, ChangeEvent, CommandKind, Contact, CustomerHierarchyCreate, CustomerUpsert,
    Lead, LeadNote, LeadUpsert, NotificationRequest, Opportunity, Prospect, ProspectStatusUpdate,
    SourceKind,
};
use partner_sync::story;

fn record(schema: &Schema) -> &RecordSchema {
    match schema {
        Schema::Record(r) => r,
        other => panic!("expected a record schema, got {other:?}"),
    }
}

fn field_names(r: &RecordSchema) -> Vec<String> {
    r.fields.iter().map(|f| f.name.clone()).collect()
}

/// The entity inside an event schema (`{header, record}`).
fn entity_fields(schema: &Schema) -> Vec<String> {
    let outer = record(schema);
    assert_eq!(field_names(outer), ["header", "record"]);
    field_names(record(&outer.fields[1].schema))
}

/// Every field a plain command struct serializes.
fn serialized_keys<T: serde::Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()).unwrap() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not a struct: {other}"),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn names(fields: &[&str]) -> Vec<String> {
    sorted(fields.iter().map(|s| s.to_string()).collect())
}

#[test]
fn event_schemas_have_exactly_the_models_fields() {
    let codec = Codec::new();
    let expected: [(SourceKind, &[&str]); 5] = [
        (SourceKind::Prospect, Prospect::FIELDS),
        (SourceKind::Lead, Lead::FIELDS),
        (SourceKind::Opportunity, Opportunity::FIELDS),
        (SourceKind::Contact, Contact::FIELDS),
        (SourceKind::Account, Account::FIELDS),
    ];
    for (kind, fields) in expected {
        assert_eq!(
            sorted(entity_fields(codec.event_schema(kind))),
            names(fields),
            "{kind:?} schema drifted from the model"
        );
    }
}

#[test]
fn command_schemas_have_exactly_the_models_fields() {
    let codec = Codec::new();
    let fields = |k| sorted(field_names(record(codec.command_schema(k))));
    assert_eq!(fields(CommandKind::LeadUpsert), names(LeadUpsert::FIELDS));
    assert_eq!(
        fields(CommandKind::CustomerUpsert),
        names(CustomerUpsert::FIELDS)
    );
    assert_eq!(
        fields(CommandKind::LeadNote),
        sorted(serialized_keys::<LeadNote>())
    );
    assert_eq!(
        fields(CommandKind::ProspectStatus),
        sorted(serialized_keys::<ProspectStatusUpdate>())
    );
    assert_eq!(
        fields(CommandKind::CustomerHierarchy),
        sorted(serialized_keys::<CustomerHierarchyCreate>())
    );
    assert_eq!(
        fields(CommandKind::RejectionEmail),
        sorted(serialized_keys::<NotificationRequest>())
    );
    let alert = sorted(field_names(record(
        codec.command_schema(CommandKind::Alert),
    )));
    assert_eq!(
        alert,
        names(&[
            "command_id",
            "caused_by",
            "kind",
            "dataAreaId",
            "ProspectId",
            "message"
        ])
    );
    let _: Option<Alert> = None; // Alert has no Default; its fields are listed above.
}

#[test]
fn every_event_of_a_realistic_story_round_trips_through_avro() {
    let codec = Codec::new();
    let cfg = EngineConfig::defaults();
    let events = story::generate(11, 40, &cfg, 1_772_442_000_000).clean();
    let mut kinds = std::collections::BTreeSet::new();
    for event in events {
        let bytes = codec.encode_event(&event).unwrap();
        let schema = codec.event_schema(event.kind());
        let decoded = codec.decode_event(event.kind(), schema, &bytes).unwrap();
        assert_eq!(decoded, event);
        kinds.insert(event.kind());
    }
    assert_eq!(kinds.len(), 5, "the story must exercise every event schema");
}

#[test]
fn the_route_stage_reads_the_same_case_key_from_the_leading_fields_as_from_the_whole_event() {
    // The route stage decodes only the header and the leading ids: they must come first.
    let codec = Codec::new();
    for (kind, leading) in [
        (SourceKind::Prospect, &["ProspectId"][..]),
        (SourceKind::Lead, &["leadid"][..]),
        (
            SourceKind::Opportunity,
            &["opportunityid", "originatingleadid"][..],
        ),
        (SourceKind::Contact, &["contactid", "originatingleadid"][..]),
        (SourceKind::Account, &["accountid", "originatingleadid"][..]),
    ] {
        let fields = entity_fields(codec.event_schema(kind));
        assert_eq!(&fields[..leading.len()], leading, "{kind:?}");
    }
    let engine = Engine::new(EngineConfig::defaults());
    let mut events = story::generate(11, 40, engine.config(), 1_772_442_000_000).clean();
    // Records qualified from no lead are keyed by themselves.
    let unlinked: Vec<ChangeEvent> = events
        .iter()
        .filter_map(|e| match e {
            ChangeEvent::Contact(c) => {
                let mut c = c.clone();
                c.record.originatingleadid = None;
                Some(ChangeEvent::Contact(c))
            }
            ChangeEvent::Account(c) => {
                let mut c = c.clone();
                c.record.originatingleadid = Some(String::new());
                Some(ChangeEvent::Account(c))
            }
            _ => None,
        })
        .take(4)
        .collect();
    events.extend(unlinked);
    let mut keyed_by_self = 0;
    for event in &events {
        let kind = event.kind();
        let bytes = codec.encode_event(event).unwrap();
        let f = codec.decode_case_fields(kind, &bytes).unwrap();
        assert_eq!(&f.header, event.header());
        assert_eq!(f.id, event.entity_id());
        let key = engine.case_key_of(kind, &f.header, &f.id, &f.originating_lead);
        assert_eq!(key, engine.case_key(event), "{kind:?} {}", f.id);
        keyed_by_self += usize::from(kind != SourceKind::Lead && key == f.id);
    }
    assert!(
        keyed_by_self >= 4,
        "the unlinked records are keyed by themselves"
    );
}

#[test]
fn every_command_the_engine_emits_round_trips_through_avro() {
    let codec = Codec::new();
    let engine = Engine::new(EngineConfig::defaults());
    let mut state = EngineState::default();
    let mut kinds = std::collections::BTreeSet::new();
    // A story plus one of each alert-raising edge, so alerts are encoded too.
    let mut events = story::generate(3, 30, engine.config(), 1_772_442_000_000).clean();
    // A lead qualified without an opportunity raises an alert.
    let ChangeEvent::Prospect(mut prospect) = events[0].clone() else {
        panic!("a story starts with a prospect")
    };
    prospect.record.prospect_id = "PR-ALERT".into();
    prospect.header.change_id = "alert-1".into();
    let lead_id = partner_sync::engine::ids::lead_id("usrt", "PR-ALERT");
    let qualified = partner_sync::model::Lead {
        leadid: lead_id,
        statecode: 1,
        statuscode: 3,
        partnersync_prospectkey: Some("usrt/PR-ALERT".into()),
        ..partner_sync::model::Lead::default()
    };
    let mut header = prospect.header.clone();
    header.change_id = "alert-2".into();
    header.modified_by = story::SALES_PERSON.into();
    events.push(ChangeEvent::Prospect(prospect));
    events.push(ChangeEvent::Lead(partner_sync::model::Change {
        header,
        record: qualified,
    }));
    for event in events {
        for command in engine.apply(&mut state, event, 0).commands {
            let bytes = codec.encode_command(&command).unwrap();
            assert_eq!(
                codec.decode_command(command.kind(), &bytes).unwrap(),
                command
            );
            kinds.insert(command.kind());
        }
    }
    assert_eq!(
        kinds.len(),
        CommandKind::ALL.len(),
        "every command schema exercised: {kinds:?}"
    );
}

/// A newer producer added an optional field: our reader ignores it (BACKWARD for that writer, FORWARD
/// for us), and a registry-style compatibility check agrees.
#[test]
fn a_writer_with_a_new_optional_field_is_read_by_the_current_reader() {
    let codec = Codec::new();
    let ours = codec.event_schema(SourceKind::Lead);
    let newer_text = EVENT_SCHEMAS[1].1.replacen(
        r#""name": "firstname","#,
        r#""name": "partnersync_segment", "type": ["null", "string"], "default": null }, { "name": "firstname","#,
        1,
    );
    let newer = Schema::parse_str(&newer_text).unwrap();
    assert_ne!(&newer, ours);
    SchemaCompatibility::can_read(&newer, ours).expect("our reader can read the newer writer");
    SchemaCompatibility::can_read(ours, &newer).expect("the newer reader can read our writer");

    // Encode with the newer schema: the same record plus a value in the new field.
    let event = story::generate(5, 1, &EngineConfig::defaults(), 0)
        .clean()
        .into_iter()
        .nth(1)
        .unwrap();
    let ChangeEvent::Lead(change) = &event else {
        panic!("second event of a case is the lead echo")
    };
    let mut value = apache_avro::to_value(change).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        if let apache_avro::types::Value::Record(inner) = &mut fields[1].1 {
            let at = inner.iter().position(|(n, _)| n == "firstname").unwrap();
            let segment = apache_avro::types::Value::Union(
                1,
                Box::new(apache_avro::types::Value::String("retail".into())),
            );
            inner.insert(at, ("partnersync_segment".into(), segment));
        }
    }
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&newer)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    assert_eq!(
        codec
            .decode_event(SourceKind::Lead, &newer, &bytes)
            .unwrap(),
        event
    );
}

/// An older producer did not have an optional field yet: the reader fills its default.
#[test]
fn a_writer_without_an_optional_field_decodes_with_its_default() {
    let codec = Codec::new();
    let text = EVENT_SCHEMAS[2].1;
    let mut json: serde_json::Value = serde_json::from_str(text).unwrap();
    let inner = json["fields"][1]["type"]["fields"].as_array_mut().unwrap();
    inner.retain(|f| f["name"] != "parentcontactid");
    let older = Schema::parse_str(&json.to_string()).unwrap();
    SchemaCompatibility::can_read(&older, codec.event_schema(SourceKind::Opportunity))
        .expect("backward compatible");

    let mut record = Opportunity {
        opportunityid: "o-1".into(),
        statecode: 1,
        statuscode: 3,
        ..Opportunity::default()
    };
    record.originatingleadid = Some("l-1".into());
    let change = partner_sync::model::Change {
        header: partner_sync::model::ChangeHeader {
            op: partner_sync::model::Operation::Update,
            change_id: "c-1".into(),
            version: 7,
            modified_on: 1_772_442_000_000,
            modified_by: "u".into(),
            company: Some("usrt".into()),
        },
        record,
    };
    let mut value = apache_avro::to_value(&change).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        if let apache_avro::types::Value::Record(inner) = &mut fields[1].1 {
            inner.retain(|(name, _)| name != "parentcontactid");
        }
    }
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&older)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let decoded = codec
        .decode_event(SourceKind::Opportunity, &older, &bytes)
        .unwrap();
    assert_eq!(decoded, ChangeEvent::Opportunity(change));
}

/// Adding a field without a default breaks BACKWARD compatibility: the check must say so, and decoding
/// old data must fail as a value (for the dead letters), not panic.
#[test]
fn a_required_field_added_without_default_is_reported_incompatible() {
    let codec = Codec::new();
    let ours = codec.event_schema(SourceKind::Contact);
    let mut json: serde_json::Value = serde_json::from_str(EVENT_SCHEMAS[3].1).unwrap();
    json["fields"][1]["type"]["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "msdyn_required", "type": "string"}));
    let stricter = Schema::parse_str(&json.to_string()).unwrap();
    assert!(
        SchemaCompatibility::can_read(ours, &stricter).is_err(),
        "a new reader with a required field cannot read old data"
    );

    let event = story::generate(9, 3, &EngineConfig::defaults(), 0)
        .clean()
        .into_iter()
        .find(|e| e.kind() == SourceKind::Contact)
        .expect("the story has contacts");
    let bytes = codec.encode_event(&event).unwrap();
    // Reading our bytes as if written with the stricter schema runs out of input: a decode error value.
    let err = codec
        .decode_event(SourceKind::Contact, &stricter, &bytes)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Incompatible { .. } | CodecError::Decode { .. }
        ),
        "{err}"
    );
}

#[test]
fn garbage_bytes_are_a_decode_error_not_a_panic() {
    let codec = Codec::new();
    for kind in SourceKind::ALL {
        let schema = codec.event_schema(kind);
        for bytes in [
            &b""[..],
            &[0xff; 3][..],
            &b"\x02\x00\x00\x00\x01not avro at all"[..],
        ] {
            assert!(
                codec.decode_event(kind, schema, bytes).is_err(),
                "{kind:?} accepted {bytes:?}"
            );
        }
    }
}

#[test]
fn every_schema_file_parses_and_names_its_record() {
    let events = EVENT_SCHEMAS.iter().map(|(k, t)| (format!("{k:?}"), *t));
    let commands = COMMAND_SCHEMAS.iter().map(|(k, t)| (format!("{k:?}"), *t));
    for (kind, text) in events.chain(commands) {
        let schema = Schema::parse_str(text).unwrap();
        assert!(
            record(&schema)
                .name
                .fullname(None)
                .starts_with("partnersync."),
            "{kind}"
        );
    }
}

/// A JSON value of `schema` that sets every field to a value of its type, different per field
/// (`full`), or leaves every `["null", T]` union null (`!full`).
fn sample(schema: &Schema, full: bool, n: &mut i64) -> serde_json::Value {
    use serde_json::{json, Value};
    *n += 1;
    match schema {
        Schema::Record(r) => Value::Object(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, full, n)))
                .collect(),
        ),
        Schema::String => json!(format!("value {n} é")),
        Schema::Int => json!(*n * 37 - 500),
        Schema::Long | Schema::TimestampMillis => json!(*n * 1_000_003 - 70_000_000),
        Schema::Boolean => json!(*n % 2 == 1),
        Schema::Enum(e) => json!(e.symbols[(*n as usize) % e.symbols.len()]),
        Schema::Union(u) if full => sample(&u.variants()[1], full, n),
        Schema::Union(_) => Value::Null,
        other => panic!("the schemas use a type this test does not fill: {other:?}"),
    }
}

/// apache-avro's schema-aware encoding, which finds every field by name.
fn apache_avro_bytes<T: serde::Serialize>(schema: &Schema, value: &T) -> Vec<u8> {
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .unwrap();
    let mut out = Vec::new();
    writer.write_ser(&mut out, value).unwrap();
    out
}

/// Our codec writes and reads by declaration order; apache-avro by field name. Equal bytes for
/// values that set every field prove our types' field order, types and enum symbol order are the
/// schema's.
fn same_bytes_as_apache_avro<T>(
    schema: &Schema,
    what: &str,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> T,
) where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for full in [true, false] {
        let json = sample(schema, full, &mut 0);
        let value: T = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("{what}: the sample does not fit the type: {e}\n{json}"));
        assert_eq!(
            serde_json::to_value(&value).unwrap(),
            json,
            "{what}: every field of the schema is a field of the type"
        );
        let expected = apache_avro_bytes(schema, &value);
        assert_eq!(encode(&value), expected, "{what} (every field set: {full})");
        assert_eq!(decode(&expected), value, "{what} (every field set: {full})");
    }
}

#[test]
fn our_codec_writes_and_reads_exactly_apache_avros_bytes_for_every_field_of_every_schema() {
    use partner_sync::model::{Change, Command};
    let codec = Codec::new();
    for (kind, _) in EVENT_SCHEMAS {
        let schema = codec.event_schema(kind);
        let what = kind.as_str();
        macro_rules! check {
            ($variant:ident, $ty:ty) => {
                same_bytes_as_apache_avro::<Change<$ty>>(
                    schema,
                    what,
                    |v| {
                        codec
                            .encode_event(&ChangeEvent::$variant(v.clone()))
                            .unwrap()
                    },
                    |b| match codec.decode_event(kind, schema, b).unwrap() {
                        ChangeEvent::$variant(v) => v,
                        other => panic!("{other:?}"),
                    },
                )
            };
        }
        match kind {
            SourceKind::Prospect => check!(Prospect, Prospect),
            SourceKind::Lead => check!(Lead, Lead),
            SourceKind::Opportunity => check!(Opportunity, Opportunity),
            SourceKind::Contact => check!(Contact, Contact),
            SourceKind::Account => check!(Account, Account),
        }
    }
    for (kind, _) in COMMAND_SCHEMAS {
        let schema = codec.command_schema(kind);
        let what = kind.as_str();
        macro_rules! check {
            ($variant:ident, $ty:ty) => {
                same_bytes_as_apache_avro::<$ty>(
                    schema,
                    what,
                    |v| codec.encode_command(&Command::from(v.clone())).unwrap(),
                    |b| match codec.decode_command(kind, b).unwrap() {
                        Command::$variant(v) => *v,
                        other => panic!("{other:?}"),
                    },
                )
            };
        }
        match kind {
            CommandKind::LeadUpsert => check!(LeadUpsert, LeadUpsert),
            CommandKind::LeadNote => check!(LeadNote, LeadNote),
            CommandKind::CustomerUpsert => check!(CustomerUpsert, CustomerUpsert),
            CommandKind::ProspectStatus => check!(ProspectStatus, ProspectStatusUpdate),
            CommandKind::CustomerHierarchy => check!(CustomerHierarchy, CustomerHierarchyCreate),
            CommandKind::RejectionEmail => check!(RejectionEmail, NotificationRequest),
            CommandKind::Alert => check!(Alert, Alert),
        }
    }
}
