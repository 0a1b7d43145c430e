//! What became of an event: the engine's outcome vocabulary.
//!
//! Every event ends in exactly one [`Disposition`]. The reasons are closed enums with stable
//! snake_case names because they are metric labels and appear in scenario files and dead-letter
//! headers: a new reason is a deliberate change, not a formatted string.

use serde::{Deserialize, Serialize};

use super::state::{SourceRecord, StateKey};
use crate::model::{ChangeEvent, Command, SourceKind};

/// Why an event produced no command. Bounded: these are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Written by the connector's own integration identity: our write coming back.
    Echo,
    /// The same version of the record was already applied.
    Duplicate,
    /// An older version than one already applied; it must not overwrite the newer one.
    StaleVersion,
    /// Not part of B2B onboarding (another prospect type, a lead created in Sales, …).
    NotB2b,
    /// A change that touches no mapped field.
    NoMappedChange,
    /// The lead is already qualified or disqualified; Sales keeps it read-only.
    LeadClosed,
    /// The prospect is already approved or rejected; only the first decision counts.
    AlreadyDecided,
    /// An opportunity was lost while another one of the same lead is still open (or won and waiting).
    OtherOpportunityOpen,
    /// The change was recorded; it needs no command (e.g. an opportunity opened).
    NothingToSend,
    /// A delete was recorded; nothing is deleted on the other side.
    Deleted,
    /// A second account or contact qualified from the same lead; the first stays linked.
    RequalifiedDuplicate,
    /// The prospect was approved or rejected directly in Commerce.
    DecidedInCommerce,
    /// A contact whose email another Person customer holds, already alerted: it stays held back.
    EmailTaken,
}

impl SkipReason {
    pub const ALL: [SkipReason; 13] = [
        SkipReason::Echo,
        SkipReason::Duplicate,
        SkipReason::StaleVersion,
        SkipReason::NotB2b,
        SkipReason::NoMappedChange,
        SkipReason::LeadClosed,
        SkipReason::AlreadyDecided,
        SkipReason::OtherOpportunityOpen,
        SkipReason::NothingToSend,
        SkipReason::Deleted,
        SkipReason::RequalifiedDuplicate,
        SkipReason::DecidedInCommerce,
        SkipReason::EmailTaken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Echo => "echo",
            SkipReason::Duplicate => "duplicate",
            SkipReason::StaleVersion => "stale_version",
            SkipReason::NotB2b => "not_b2b",
            SkipReason::NoMappedChange => "no_mapped_change",
            SkipReason::LeadClosed => "lead_closed",
            SkipReason::AlreadyDecided => "already_decided",
            SkipReason::OtherOpportunityOpen => "other_opportunity_open",
            SkipReason::NothingToSend => "nothing_to_send",
            SkipReason::Deleted => "deleted",
            SkipReason::RequalifiedDuplicate => "requalified_duplicate",
            SkipReason::DecidedInCommerce => "decided_in_commerce",
            SkipReason::EmailTaken => "email_taken",
        }
    }
}

/// What a parked event is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkReason {
    /// A lead that carries a prospect key, but the prospect has not been seen.
    ProspectNotSeen,
    /// An opportunity, contact or account whose originating lead has not been seen.
    LeadNotSeen,
    /// A won opportunity whose qualified account and contact have not both been synced yet.
    CustomersNotSeen,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::ProspectNotSeen => "prospect_not_seen",
            ParkReason::LeadNotSeen => "lead_not_seen",
            ParkReason::CustomersNotSeen => "customers_not_seen",
        }
    }

    /// What the missing piece is, as a sentence fragment for dead-letter messages.
    pub(super) fn explain(self) -> &'static str {
        match self {
            ParkReason::ProspectNotSeen => "the Commerce prospect this lead was created from never arrived",
            ParkReason::LeadNotSeen => "the lead it was qualified from (originatingleadid) never arrived",
            ParkReason::CustomersNotSeen => {
                "the account and contact qualified from the lead did not both arrive, so the customer hierarchy cannot be built"
            }
        }
    }
}

/// Why the engine refused an event. The runtime sends it to the dead letters with this reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    #[error("the {entity} record has no {field}; every {entity} change must carry its id")]
    MissingField { entity: String, field: String },
    #[error("{field} = {value} is not a valid {entity} value (expected {expected})")]
    InvalidValue {
        entity: String,
        field: String,
        value: i64,
        expected: String,
    },
    #[error("{count} events already wait for lead {case}; this one is not parked (raise parking.max_per_case if this is legitimate)")]
    TooManyParked { case: String, count: usize },
    /// A B2B prospect without a requester email: the requester signs in with it and is told of a
    /// rejection by it, so such a prospect cannot go through onboarding.
    #[error("B2B prospect {prospect_id} has no PrimaryEmailAddress; the requester signs in and is notified with it, so no lead is created. Add the requester's email to the prospect in Commerce: its next change creates the lead")]
    MissingEmail { prospect_id: String },
}

impl Rejection {
    /// A bounded label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingField { .. } => "missing_field",
            Rejection::InvalidValue { .. } => "invalid_value",
            Rejection::TooManyParked { .. } => "too_many_parked",
            Rejection::MissingEmail { .. } => "missing_email",
        }
    }
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// The event produced at least one command.
    Emitted,
    Skipped(SkipReason),
    Parked(ParkReason),
    Rejected(Rejection),
}

/// A parked event that a later event completed (or, once complete, found invalid: then it is
/// `Rejected` and belongs in the dead letters like any rejected event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub kind: SourceKind,
    pub change_id: String,
    pub disposition: Disposition,
    /// The record it was decoded from, if the runtime supplied it when it parked.
    pub source: Option<SourceRecord>,
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub disposition: Disposition,
    /// Commands of this event and of any parked events it released, in order.
    pub commands: Vec<Command>,
    pub released: Vec<Released>,
    /// The state entries this event changed (the runtime persists exactly these).
    pub touched: Vec<StateKey>,
}

/// What came due with time alone ([`super::Engine::overdue`]): alerts to send, then the state
/// entries to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overdue {
    pub commands: Vec<Command>,
    pub touched: Vec<StateKey>,
}

/// A parked event whose wait ran out; it belongs in the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    /// The case it waited in, and its number there: its entry `parked/<case>/<seq>` is now gone.
    pub case: String,
    pub seq: u64,
    pub event: ChangeEvent,
    /// The record it was decoded from, if the runtime supplied it.
    pub source: Option<SourceRecord>,
    pub reason: ParkReason,
    pub waited_ms: i64,
}

impl Expired {
    /// A sentence for the dead-letter message.
    pub fn message(&self) -> String {
        format!(
            "waited {} s and gave up: {}. Check that the source topic carries it, then replay this record.",
            self.waited_ms / 1000,
            self.reason.explain()
        )
    }
}
