//! The engine's memory, as one plain serializable value.
//!
//! Why explicit: the runtime must persist this to a compacted Kafka topic and restore it on whichever
//! replica is assigned the partition next, so nothing may hide in closures or caches. The unit of state
//! is a [`CaseState`], one per B2B prospect, keyed by the case key (the lead id derived from the
//! prospect, see [`super::ids`]). Everything a decision needs about one prospect lives in its case, so
//! a case can be stored as one compacted record and partitioned by its key.
//!
//! A parked event is an entry of its own (`parked/<case>/<n>`), not part of its case's record: a case
//! whose early events wait for its lead would otherwise be rewritten whole, with every event parked so
//! far, at each new one (O(N²) bytes; on a backfill, most of the connector's CPU and peak memory went
//! into those writes). Now a park writes the event once and its release or expiry a tombstone.
//!
//! Two maps sit beside the cases: `customers` (the link from a Sales contact/account to the Commerce
//! customer it became, keyed `contact/<id>` / `account/<id>`) and `requesters` (which cases use a
//! requester email in a legal entity, for duplicate detection). `docs/ARCHITECTURE.md` explains how the
//! runtime partitions them.
//!
//! Entries are JSON, readable with any Kafka tool. Cases and customer links, written with nearly
//! every record, are written field by field (`state/json.rs`) to the bytes serde_json makes of them;
//! serde reads every entry back and writes the rarer ones.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use super::sorted::{CaseKeys, SortedMap};
pub use super::source::SourceRecord;
use crate::model::ChangeEvent;
pub use prospect_seen::ProspectSeen;
pub use requester::Requester;
pub use resident::{ColdStore, Detached, MemoryCold, ResidentMap, Spill, Taken};

mod cold;
mod json;
mod prospect_seen;
mod requester;
mod resident;

/// All state. It is persisted entry by entry ([`EngineState::keys`], [`EngineState::entry_json`]),
/// never as one value. Cases and customer links are hash maps: every record looks them up several
/// times, and ordered maps of some thousand UUID-keyed entries cost ~0.15 µs a lookup in string
/// comparisons. Whatever lists entries sorts them, so output stays deterministic. They hash with
/// foldhash (seeded per process) instead of SipHash: the contact edit path looks its case and
/// customer up five times, and SipHash of the ~40-byte keys was ~5% of its transform.
/// Keys are source-system ids, not text a stranger chooses freely.
///
/// Both may hold only their most recently used values in memory ([`EngineState::spill_to`],
/// `state/resident.rs`); every lookup reads a cold value back itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineState {
    pub cases: ResidentMap<CaseState>,
    pub customers: ResidentMap<CustomerLink>,
    /// `company/normalized-email` → the cases that use it and the Person customer that holds it (as
    /// many in memory as cases).
    pub requesters: ResidentMap<Requester>,
    /// Cases restored from a record written before parked events were entries of their own: their
    /// parked events are written as entries the next time the case is written (until then the old
    /// record still holds them). Empty once every such case was written again.
    pub unwritten_parked: BTreeSet<String>,
}

/// What we know about whether a lead is one of ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Only events that refer to this lead have been seen; they wait (are parked) here.
    #[default]
    Unknown,
    /// Created from a Commerce B2B prospect.
    B2b,
    /// A lead created in Sales by people; its contacts, accounts and opportunities are not synced
    /// (unless the customer filter says otherwise).
    Foreign,
}

/// The outcome of a prospect, decided once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Pending,
    /// Approved because this opportunity was won.
    Approved {
        opportunity: String,
    },
    Rejected {
        reason: String,
    },
    /// A win that could not be applied safely (duplicate requester); a person decides in Commerce.
    Held {
        reason: String,
    },
    /// Someone set Approved/Rejected directly in Commerce; the connector follows.
    DecidedInCommerce {
        status: String,
    },
}

impl Outcome {
    pub fn is_pending(&self) -> bool {
        matches!(self, Outcome::Pending)
    }
}

/// The lifecycle position of a Sales record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub version: i64,
    pub statecode: i32,
    pub deleted: bool,
}

/// `value`'s JSON by serde_json, as [`exact_json_bytes`] keeps it.
fn serde_json_bytes<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    exact_json_bytes(|out| serde_json::to_writer(out, value).ok())
}

/// What `write` appends, in a block of its own size: written into a buffer this thread keeps.
///
/// `serde_json::to_vec` starts at 128 bytes and doubles: a case entry (~630–1,100 bytes) was grown
/// three or four times, each a reallocation and a copy (2.8% of `entry_json`'s instructions in
/// `cargo bench --bench engine -- state-profile` under callgrind, and 1.9% of the pipeline
/// thread's samples in a drain). Here the buffer has grown once, and the entry is one exact
/// allocation and one copy: what the state write holds while it is in flight is no larger.
fn exact_json_bytes(write: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Option<Vec<u8>> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        // Borrowed only here, and writing does not come back to this function.
        let mut buf = scratch.borrow_mut();
        buf.clear();
        write(&mut buf)?;
        let json = buf.as_slice().to_vec();
        // A rare huge entry does not stay resident with the thread.
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        Some(json)
    })
}

/// An event waiting for something it refers to, stored as its own entry `parked/<case>/<seq>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    /// Its number within its case, in parking order (the order it is re-applied in).
    #[serde(default)]
    pub seq: u64,
    /// Boxed: a `ChangeEvent` is ~600 bytes, and a case's parked events are a `Vec` that grows
    /// (and copies itself) as a backfill parks more of them.
    pub event: Box<ChangeEvent>,
    #[serde(default)]
    pub source: Option<SourceRecord>,
    pub since_ms: i64,
    pub reason: super::ParkReason,
}

/// One B2B prospect and everything linked to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseState {
    pub origin: Origin,
    /// Legal entity of the prospect (lower case).
    pub company: String,
    pub prospect: Option<ProspectSeen>,
    pub lead: Option<Seen>,
    pub opportunities: SortedMap<Seen>,
    /// The Sales contact and account qualified from this lead (the first of each).
    pub contact: Option<String>,
    pub account: Option<String>,
    /// Later contacts/accounts qualified from the same lead, which stay unlinked.
    pub duplicates: BTreeSet<String>,
    pub outcome: Outcome,
    pub rejection_email_sent: bool,
    /// The number the next parked event gets.
    #[serde(default)]
    pub next_parked: u64,
    /// The email of this case's requester contact while another Person customer holds it: the
    /// contact is not sent and a win does not approve (see `state::Requester`). Written only when
    /// set, so other entries stay as earlier builds wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_taken: Option<String>,
    /// The lead was qualified without an opportunity and none has arrived yet: alert
    /// `qualified_without_opportunity` is due once `decisions.opportunity_grace_seconds` have
    /// passed ([`super::Engine::overdue`]). Written only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_opportunity: Option<Awaiting>,
    /// Events waiting in this case, in parking order. Not in the case's record: each is an entry of
    /// its own (see the module docs).
    #[serde(skip)]
    pub parked: Vec<Parked>,
    /// Parked events inside a case record written by an earlier build (read, never written).
    #[serde(default, rename = "parked", skip_serializing)]
    legacy_parked: Vec<Parked>,
}

impl CaseState {
    pub fn prospect_id(&self) -> Option<&str> {
        self.prospect.as_ref().map(ProspectSeen::prospect_id)
    }

    /// True once the lead is closed in Sales (qualified or disqualified leads are read-only there).
    pub fn lead_closed(&self) -> bool {
        self.lead.is_some_and(|l| l.statecode != 0 && !l.deleted)
    }
}

/// A qualification waiting for its opportunity: since when, and the lead change that qualified it
/// (the alert's cause, so a replayed alert has the same id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiting {
    pub since_ms: i64,
    pub change_id: String,
}

/// A Sales contact or account and the Commerce customer it became.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerLink {
    pub version: i64,
    pub company: String,
    /// The CustomerAccount in Commerce, fixed at the first sync: changing an integration key breaks the
    /// link, so later key changes raise an alert instead.
    pub customer_account: String,
    /// The integration key value last seen on the Sales record.
    pub last_key: Option<String>,
    /// Digest of the last customer fields sent, so an edit that changes no mapped field sends nothing.
    pub last_sent_digest: u64,
    pub email: Option<String>,
}

/// One entry of the state, as the runtime stores it (one compacted record each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    Case(String),
    Customer(String),
    Requester(String),
    /// A parked event: its case and its number there.
    Parked(String, u64),
}

impl StateKey {
    /// The record key: `case/<key>`, `customer/<entity>/<id>`, `requester/<company>/<email>`,
    /// `parked/<case>/<seq>`.
    pub fn to_record_key(&self) -> String {
        match self {
            StateKey::Case(k) => ["case/", k].concat(),
            StateKey::Customer(k) => ["customer/", k].concat(),
            StateKey::Requester(k) => ["requester/", k].concat(),
            StateKey::Parked(case, seq) => format!("parked/{case}/{seq}"),
        }
    }

    pub fn parse(record_key: &str) -> Option<StateKey> {
        let (kind, rest) = record_key.split_once('/')?;
        match kind {
            "case" => Some(StateKey::Case(rest.to_string())),
            "customer" => Some(StateKey::Customer(rest.to_string())),
            "requester" => Some(StateKey::Requester(rest.to_string())),
            "parked" => {
                let (case, seq) = rest.rsplit_once('/')?;
                Some(StateKey::Parked(case.to_string(), seq.parse().ok()?))
            }
            _ => None,
        }
    }
}

impl Spill for CaseState {
    /// A case with parked events stays in memory: they are entries of their own, read from it. So
    /// does one awaiting its opportunity: [`super::Engine::overdue`] walks the cases in memory.
    fn pinned(&self) -> bool {
        !self.parked.is_empty() || self.awaiting_opportunity.is_some()
    }
    fn to_json(&self) -> Vec<u8> {
        written(|out| json::write_case(out, self))
    }
    fn from_json(bytes: &[u8]) -> Result<CaseState, String> {
        read_back(bytes)
    }
    /// The prospect's JSON first, behind its length, then the entry with `"record":null`: read
    /// back, the record is taken as it lies, where reading it inside the entry scanned it whole
    /// (~6,000 of a read back's ~16,700 instructions in `spill-profile` under callgrind).
    fn to_cold(&self) -> Vec<u8> {
        let record = self.prospect.as_ref().map_or("", |p| p.record_json());
        let mut out = Vec::with_capacity(4 + record.len() + 320);
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record.as_bytes());
        json::write_case_without_record(&mut out, self);
        out
    }
    fn from_cold(bytes: &[u8]) -> Result<CaseState, String> {
        let short = "a spilled case shorter than its prospect's length";
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or(short)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (record, entry) = rest.split_at_checked(len).ok_or(short)?;
        let mut case: CaseState = read_back(entry)?;
        if let Some(p) = case.prospect.as_mut() {
            let record = std::str::from_utf8(record).map_err(|e| e.to_string())?;
            p.set_record(Box::from(record)).map_err(|e| e.to_string())?;
        }
        Ok(case)
    }
}

impl Spill for Requester {
    fn to_json(&self) -> Vec<u8> {
        serde_json_bytes(self).expect("a list of strings always serializes")
    }
    fn from_json(bytes: &[u8]) -> Result<Requester, String> {
        read_back(bytes)
    }
}

impl Spill for CustomerLink {
    fn to_json(&self) -> Vec<u8> {
        written(|out| json::write_customer(out, self))
    }
    fn from_json(bytes: &[u8]) -> Result<CustomerLink, String> {
        read_back(bytes)
    }
}

/// The entry a field-by-field writer (`state/json.rs`), which cannot fail, makes.
fn written(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    exact_json_bytes(|out| {
        write(out);
        Some(())
    })
    .expect("the writer always writes")
}

/// A value read back from its entry's JSON.
fn read_back<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The cold stores of [`EngineState::spill_to`], one per map.
pub struct ColdStores {
    pub cases: Box<dyn ColdStore>,
    pub customers: Box<dyn ColdStore>,
    pub requesters: Box<dyn ColdStore>,
}

impl EngineState {
    /// Holds at most `cases` cases, twice as many customer links and as many requesters in memory
    /// (pinned cases aside: those with parked events), the rest in the stores given.
    pub fn spill_to(&mut self, stores: ColdStores, resident_cases: usize) {
        self.cases.spill_to(stores.cases, resident_cases);
        self.customers
            .spill_to(stores.customers, resident_cases.saturating_mul(2));
        self.requesters.spill_to(stores.requesters, resident_cases);
    }

    /// Brings both maps back within their bounds (the engine calls it after each decision):
    /// within one, a case may leave memory only while no rule holds it, and one that was pinned
    /// by parked events leaves once they are released.
    ///
    /// `written` are the entries the decision touched: a value read back from the cold store and
    /// not among them is unchanged, and leaves memory again without being written.
    pub fn settle(&mut self, written: &[StateKey]) {
        for key in written {
            match key {
                StateKey::Case(k) => self.cases.changed(k),
                StateKey::Customer(k) => self.customers.changed(k),
                StateKey::Requester(k) => self.requesters.changed(k),
                StateKey::Parked(..) => {}
            }
        }
        self.cases.settle();
        self.customers.settle();
        self.requesters.settle();
    }

    /// A new bound for [`Self::spill_to`]'s stores.
    pub fn set_resident_cases(&mut self, resident_cases: usize) {
        self.cases.set_cap(resident_cases);
        self.customers.set_cap(resident_cases.saturating_mul(2));
        self.requesters.set_cap(resident_cases);
    }

    /// Gives back the table room of the maps in memory (after a burst; see
    /// [`ResidentMap::shrink_to_fit`]).
    pub fn shrink_to_fit(&mut self) {
        self.cases.shrink_to_fit();
        self.customers.shrink_to_fit();
        self.requesters.shrink_to_fit();
    }

    /// How many events wait in this state (for the parked-events gauge; walks the cases in memory,
    /// which are all that have parked events).
    pub fn parked_count(&self) -> usize {
        self.cases.resident_values().map(|c| c.parked.len()).sum()
    }

    /// Every entry's key, in a deterministic order: writing each with its [`Self::entry_json`] and
    /// restoring them rebuilds this state.
    pub fn keys(&self) -> Vec<StateKey> {
        let mut keys = Vec::new();
        for k in self.cases.keys() {
            if let Some(case) = self.cases.resident(&k) {
                keys.extend(
                    case.parked
                        .iter()
                        .map(|p| StateKey::Parked(k.clone(), p.seq)),
                );
            }
            keys.push(StateKey::Case(k));
        }
        keys.extend(self.customers.keys().into_iter().map(StateKey::Customer));
        keys.extend(self.requesters.keys().into_iter().map(StateKey::Requester));
        keys.sort();
        keys
    }

    /// The JSON value of one entry, or `None` if it does not exist (a tombstone).
    pub fn entry_json(&self, key: &StateKey) -> Option<Vec<u8>> {
        match key {
            StateKey::Case(k) => self.cases.json(k),
            StateKey::Customer(k) => self.customers.json(k),
            StateKey::Requester(k) => self.requesters.json(k),
            // A case with parked events is in memory (it is pinned there).
            StateKey::Parked(case, seq) => self
                .cases
                .resident(case)
                .and_then(|c| c.parked.iter().find(|p| p.seq == *seq))
                .and_then(serde_json_bytes),
        }
    }

    /// Restores one entry from its record (a `None` value removes it). Entries may come in any order:
    /// a case's record and its parked events' records are merged whichever comes first.
    pub fn restore_entry(
        &mut self,
        key: &StateKey,
        value: Option<&[u8]>,
    ) -> Result<(), serde_json::Error> {
        match (key, value) {
            (StateKey::Case(k), Some(v)) => {
                let mut case: CaseState = serde_json::from_slice(v)?;
                case.prospect = case.prospect.map(ProspectSeen::canonical).transpose()?;
                if let Some(old) = self.cases.get_mut(k) {
                    case.parked = std::mem::take(&mut old.parked);
                }
                let legacy = std::mem::take(&mut case.legacy_parked);
                if !legacy.is_empty() {
                    for mut p in legacy {
                        p.seq = case.next_parked;
                        case.next_parked += 1;
                        case.parked.push(p);
                    }
                    case.parked.sort_by_key(|p| p.seq);
                    self.unwritten_parked.insert(k.clone());
                }
                self.cases.insert(k.clone(), case);
            }
            (StateKey::Parked(k, seq), Some(v)) => {
                let mut parked: Parked = serde_json::from_slice(v)?;
                parked.seq = *seq;
                let list = &mut self.cases.get_or_default(k).parked;
                match list.binary_search_by_key(seq, |p| p.seq) {
                    Ok(i) => list[i] = parked,
                    Err(i) => list.insert(i, parked),
                }
            }
            (StateKey::Parked(k, seq), None) => {
                if let Some(case) = self.cases.get_mut(k) {
                    case.parked.retain(|p| p.seq != *seq);
                }
            }
            (StateKey::Customer(k), Some(v)) => {
                self.customers.insert(k.clone(), serde_json::from_slice(v)?)
            }
            (StateKey::Requester(k), Some(v)) => self
                .requesters
                .insert(k.clone(), serde_json::from_slice(v)?),
            (StateKey::Case(k), None) => drop(self.cases.remove(k)),
            (StateKey::Customer(k), None) => drop(self.customers.remove(k)),
            (StateKey::Requester(k), None) => drop(self.requesters.remove(k)),
        }
        Ok(())
    }
}
