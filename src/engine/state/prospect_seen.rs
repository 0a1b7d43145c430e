//! A case's prospect as last applied, held as the JSON its state entry carries
//! ([`ProspectSeen`]), and how that JSON is read and written.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::Prospect;

/// The prospect as last applied, held as the JSON its case's state entry carries.
///
/// Why JSON, not the record: the record is read-only once seen and is read only by a case's own
/// prospect events and its outcome (approval, rejection), while it is written with every state
/// write of its case. Serializing it each time was 63% of `entry_json` on the full story mix
/// (`cargo bench --bench engine -- state-profile` under callgrind), so its JSON was kept beside
/// it; holding both cost ~1,300 bytes per case, plus the record's 472 bytes inline in the cases
/// table. Now the JSON is made once, when the prospect is applied (or restored), and a reader gets
/// the record parsed from it ([`ProspectSeen::record`]); its id, read on more paths, is kept apart.
/// The entry written is byte for byte what serde_json makes of the record.
///
/// The JSON is held as text, not as serde_json's `RawValue`: a `RawValue` can only be made by
/// scanning the text, and a case read back from the spill file takes its prospect's JSON from a
/// place of its own there ([`Spill::to_cold`](super::Spill::to_cold)), which this build wrote,
/// without that scan.
#[derive(Debug, Clone)]
pub struct ProspectSeen {
    pub version: i64,
    pub deleted: bool,
    prospect_id: String,
    /// JSON that serde_json wrote, or that was checked when read.
    record: Box<str>,
}

impl ProspectSeen {
    pub fn new(version: i64, deleted: bool, record: &Prospect) -> ProspectSeen {
        ProspectSeen {
            version,
            deleted,
            prospect_id: record.prospect_id.clone(),
            record: exact_json(record),
        }
    }

    /// The record, parsed from the JSON made of it (see the type's docs: not for a hot path).
    pub fn record(&self) -> Prospect {
        serde_json::from_str(&self.record).expect("JSON made of a prospect reads back")
    }

    /// The record's JSON, as its case's entry carries it.
    pub fn record_json(&self) -> &str {
        &self.record
    }

    pub fn prospect_id(&self) -> &str {
        &self.prospect_id
    }

    /// Takes `record` (JSON) as the prospect's, and its id out of it: this build writes the id
    /// first, so that string alone is read; otherwise the object is.
    pub(super) fn set_record(&mut self, record: Box<str>) -> Result<(), serde_json::Error> {
        #[derive(Deserialize)]
        struct Id {
            #[serde(rename = "ProspectId")]
            prospect_id: String,
        }
        let first = record.strip_prefix(r#"{"ProspectId":"#).and_then(|rest| {
            String::deserialize(&mut serde_json::Deserializer::from_str(rest)).ok()
        });
        self.prospect_id = match first {
            Some(id) => id,
            None => serde_json::from_str::<Id>(&record)?.prospect_id,
        };
        self.record = record;
        Ok(())
    }

    /// The same prospect with its record as this build writes it (read whole and written again):
    /// for entries from the state topic, which an earlier build may have written otherwise.
    pub fn canonical(self) -> Result<ProspectSeen, serde_json::Error> {
        let record: Prospect = serde_json::from_str(&self.record)?;
        Ok(ProspectSeen::new(self.version, self.deleted, &record))
    }
}

/// A record's JSON in a block of its own size. Shrinking the buffer serde_json grew by doubling
/// would not do: mimalloc keeps a block that shrinks by less than half where it is (a ~700-byte
/// prospect held a 1,024-byte block), so the text is copied into an exact one; it runs once per
/// prospect event.
fn exact_json(record: &Prospect) -> Box<str> {
    // A struct of strings, numbers and options always serializes.
    let json = serde_json::to_string(record).expect("a prospect serializes to JSON");
    Box::from(json.as_str())
}

impl PartialEq for ProspectSeen {
    fn eq(&self, other: &ProspectSeen) -> bool {
        self.version == other.version
            && self.deleted == other.deleted
            && self.record == other.record
    }
}

impl Serialize for ProspectSeen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let mut out = s.serialize_struct("ProspectSeen", 3)?;
        out.serialize_field("version", &self.version)?;
        out.serialize_field("deleted", &self.deleted)?;
        // Not on a hot path (entries are written by `state/json.rs`): checked here to be JSON.
        let raw = RawValue::from_string(self.record.to_string()).map_err(S::Error::custom)?;
        out.serialize_field("record", &raw)?;
        out.end()
    }
}

impl<'de> Deserialize<'de> for ProspectSeen {
    /// Read as written: the record kept as its JSON, only its id parsed out of it. A case read back
    /// from the spill file (`state/resident.rs`) is read on the hot path, in the bytes this build
    /// wrote; parsing the record whole and writing it again was ~70% of such a read. A record an
    /// earlier build wrote (fields since added, another order) is made canonical by
    /// [`ProspectSeen::canonical`], which the restore calls.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ProspectSeen, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Stored {
            version: i64,
            deleted: bool,
            /// `null` only in a case read back from the spill file, whose record is kept apart.
            record: Option<Box<RawValue>>,
        }
        let s = Stored::deserialize(d)?;
        let mut seen = ProspectSeen {
            version: s.version,
            deleted: s.deleted,
            prospect_id: String::new(),
            record: Box::from(""),
        };
        if let Some(record) = s.record {
            seen.set_record(record.into()).map_err(D::Error::custom)?;
        }
        Ok(seen)
    }
}
