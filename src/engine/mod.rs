//! The sync engine: change events in, commands out, with no I/O.
//!
//! [`Engine::apply`] takes one [`ChangeEvent`], the [`EngineState`] and the current time, and returns a
//! [`Decision`]: the commands to send and what became of the event. Every event ends in exactly one
//! [`Disposition`] — commands emitted, skipped for a named reason, parked until what it refers to
//! arrives, or rejected (the runtime sends rejected events to the dead letters). Nothing panics on
//! input: bad input is a [`Rejection`] value.
//!
//! Why parking: the Sales and Commerce topics are independent streams, and Dataverse does not order
//! changes across records. A won opportunity can arrive before the account and contact that its
//! approval needs; a contact can arrive before its lead. Such an event waits in its case and is applied
//! when the missing piece arrives; after `parking.timeout_seconds` [`Engine::expire`] hands it back for
//! the dead letters, with the reason.
//!
//! The rules live in [`prospect`] (Commerce → Sales), [`sales`] (lead and opportunity outcomes →
//! Commerce) and [`customers`] (contacts and accounts → Commerce customers).

mod customers;
mod hex_bytes;
pub mod ids;
mod outcome;
mod prospect;
mod sales;
mod sorted;
mod source;
pub mod state;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::mapping::EngineConfig;
use crate::model::{Alert, AlertKind, ChangeEvent, ChangeHeader, Command, SourceKind};
pub use outcome::{
    Decision, Disposition, Expired, Overdue, ParkReason, Rejection, Released, SkipReason,
};
pub use state::{CaseState, EngineState, Outcome, SourceRecord, StateKey};

/// The engine: configuration plus the rules. State is passed in, never held.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    /// The mapping tables as field positions, resolved once (see [`crate::mapping::FieldMap::positions`]).
    maps: Maps,
}

#[derive(Debug, Clone)]
struct Maps {
    prospect_to_lead: Vec<(usize, usize)>,
    /// (target, source, last read of the source): see [`moves`].
    contact_to_person: Vec<(usize, usize, bool)>,
    account_to_organization: Vec<(usize, usize, bool)>,
    /// Positions of the integration keys among the text fields (`msdyn_contactpersonid`,
    /// `accountnumber`).
    contact_key_at: usize,
    account_key_at: usize,
}

/// A mapping table as (target, source, last): `last` when no later entry reads the same source, so
/// its value can be moved into the command instead of copied.
fn moves(pairs: Vec<(usize, usize)>) -> Vec<(usize, usize, bool)> {
    (0..pairs.len())
        .map(|i| {
            let (t, s) = pairs[i];
            (t, s, !pairs[i + 1..].iter().any(|&(_, later)| later == s))
        })
        .collect()
}

fn text_position(fields: &[&str], name: &str) -> usize {
    fields
        .iter()
        .position(|f| *f == name)
        .expect("the entity declares its integration key")
}

/// What applying events produced: commands in decision order, and the state entries changed.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// The time the decision is made at (epoch ms): when a park or a wait began.
    pub now_ms: i64,
    pub commands: Vec<Command>,
    /// Without repeats; sorted when the decision is made (a record touches one to three entries).
    pub touched: Vec<StateKey>,
}

impl Out {
    pub fn push(&mut self, command: impl Into<Command>) {
        self.commands.push(command.into());
    }

    pub fn touch(&mut self, key: StateKey) {
        if !self.touched.contains(&key) {
            self.touched.push(key);
        }
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        use crate::model::{Account, Contact, CustomerUpsert, LeadUpsert, Prospect};
        let maps = Maps {
            prospect_to_lead: cfg
                .prospect_to_lead
                .positions(LeadUpsert::TEXT_FIELDS, Prospect::TEXT_FIELDS),
            contact_to_person: moves(
                cfg.contact_to_person
                    .positions(CustomerUpsert::TEXT_FIELDS, Contact::TEXT_FIELDS),
            ),
            account_to_organization: moves(
                cfg.account_to_organization
                    .positions(CustomerUpsert::TEXT_FIELDS, Account::TEXT_FIELDS),
            ),
            contact_key_at: text_position(Contact::TEXT_FIELDS, "msdyn_contactpersonid"),
            account_key_at: text_position(Account::TEXT_FIELDS, "accountnumber"),
        };
        Engine { cfg, maps }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The partition key of an event: the case (lead id) it belongs to, computed from the event alone.
    /// Contacts and accounts without an originating lead are keyed by themselves.
    /// Borrowed from the event except for prospects, whose key is derived.
    pub fn case_key<'e>(&self, event: &'e ChangeEvent) -> Cow<'e, str> {
        let (header, id, originating_lead) = match event {
            ChangeEvent::Prospect(c) => (&c.header, &c.record.prospect_id, &None),
            ChangeEvent::Lead(c) => (&c.header, &c.record.leadid, &None),
            ChangeEvent::Opportunity(c) => (
                &c.header,
                &c.record.opportunityid,
                &c.record.originatingleadid,
            ),
            ChangeEvent::Contact(c) => {
                (&c.header, &c.record.contactid, &c.record.originatingleadid)
            }
            ChangeEvent::Account(c) => {
                (&c.header, &c.record.accountid, &c.record.originatingleadid)
            }
        };
        self.case_key_of(event.kind(), header, id, originating_lead)
    }

    /// [`Engine::case_key`] from the fields it reads (the route stage decodes only those, see
    /// [`crate::codec::Codec::decode_case_fields`]).
    pub fn case_key_of<'e>(
        &self,
        kind: SourceKind,
        header: &ChangeHeader,
        id: &'e str,
        originating_lead: &'e Option<String>,
    ) -> Cow<'e, str> {
        if kind == SourceKind::Prospect {
            return Cow::Owned(ids::lead_id(&self.company(header, None), id));
        }
        Cow::Borrowed(non_empty(originating_lead).unwrap_or(id))
    }

    /// Applies one event at time `now_ms` (epoch millis; used only for parking).
    pub fn apply(&self, state: &mut EngineState, event: ChangeEvent, now_ms: i64) -> Decision {
        self.apply_from(state, event, None, now_ms)
    }

    /// Like [`Engine::apply`], with the record the event was decoded from. The engine never reads
    /// `source`; it keeps a copy with the event if the event parks, so an event that expires can go to
    /// the dead letters with its original bytes.
    pub fn apply_from(
        &self,
        state: &mut EngineState,
        mut event: ChangeEvent,
        source: Option<&SourceRecord>,
        now_ms: i64,
    ) -> Decision {
        let mut out = Out {
            now_ms,
            ..Out::default()
        };
        let disposition = self.apply_one(state, &mut event, &mut out);
        // The customer rule marks its case itself, only when it changes it (see `customers`).
        let customer_rule = matches!(event.kind(), SourceKind::Contact | SourceKind::Account);
        let mut released = Vec::new();
        let disposition = match disposition {
            Disposition::Parked(reason) => {
                let case = self.case_key(&event).into_owned();
                let parked = state::Parked {
                    seq: 0, // numbered in its case by `park`
                    event: Box::new(event),
                    source: source.cloned(),
                    since_ms: now_ms,
                    reason,
                };
                // (A park marks its case.)
                self.park(state, &case, parked, &mut out)
            }
            other => {
                let case = self.case_key(&event);
                if !matches!(other, Disposition::Rejected(_)) {
                    self.release(state, &case, &mut out, &mut released);
                }
                if !customer_rule && state.cases.contains_key(case.as_ref()) {
                    out.touch(StateKey::Case(case.into_owned()));
                }
                other
            }
        };
        if !state.unwritten_parked.is_empty() {
            write_legacy_parked(state, &mut out);
        }
        state.settle(&out.touched);
        Decision {
            disposition,
            commands: out.commands,
            released,
            touched: {
                let mut touched = out.touched;
                touched.sort_unstable();
                touched
            },
        }
    }

    /// Removes and returns every parked event that has waited `parking.timeout_seconds` or longer, in
    /// case-key order and, within a case, in parking order.
    pub fn expire(&self, state: &mut EngineState, now_ms: i64) -> Vec<Expired> {
        let mut expired = Vec::new();
        for (key, case) in state.cases.resident_mut() {
            if case.parked.is_empty() {
                continue;
            }
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut case.parked)
                .into_iter()
                .partition(|p| now_ms - p.since_ms >= self.cfg.park_timeout_ms);
            case.parked = kept;
            expired.extend(gone.into_iter().map(|p| Expired {
                case: key.clone(),
                seq: p.seq,
                waited_ms: now_ms - p.since_ms,
                event: *p.event,
                source: p.source,
                reason: p.reason,
            }));
        }
        // Expiry changes no case's entry (parked events are entries of their own).
        state.settle(&[]);
        expired.sort_by(|a, b| (&a.case, a.seq).cmp(&(&b.case, b.seq)));
        expired
    }

    /// Raises `qualified_without_opportunity` for every lead qualified at least
    /// `decisions.opportunity_grace_seconds` ago whose opportunity has not arrived, and stops
    /// waiting for it. The runtime sends the alerts, then writes the cases touched.
    pub fn overdue(&self, state: &mut EngineState, now_ms: i64) -> Overdue {
        let mut out = Out {
            now_ms,
            ..Out::default()
        };
        let mut due: Vec<String> = state
            .cases
            .resident_mut()
            .filter(|(_, case)| {
                case.awaiting_opportunity
                    .as_ref()
                    .is_some_and(|a| now_ms - a.since_ms >= self.cfg.opportunity_grace_ms)
            })
            .map(|(key, _)| key.clone())
            .collect();
        due.sort();
        for key in due {
            let case = state.cases.get_mut(&key).expect("listed above");
            let Some(awaiting) = case.awaiting_opportunity.take() else {
                continue;
            };
            let company = case.company.clone();
            let prospect = case.prospect_id().map(str::to_string);
            out.touch(StateKey::Case(key.clone()));
            let minutes = (now_ms - awaiting.since_ms) / 60_000;
            out.push(self.alert(
                AlertKind::QualifiedWithoutOpportunity,
                &key,
                &awaiting.change_id,
                &company,
                prospect.as_deref(),
                format!(
                    "Lead {key} was qualified {minutes} minutes ago and no opportunity of it has arrived, so no win or loss \
                     will decide prospect {}. Create an opportunity from the lead and close it, or decide the prospect in Commerce.",
                    prospect.as_deref().unwrap_or("?")
                ),
            ));
        }
        state.settle(&out.touched);
        out.touched.sort_unstable();
        Overdue {
            commands: out.commands,
            touched: out.touched,
        }
    }

    fn park(
        &self,
        state: &mut EngineState,
        case: &str,
        mut parked: state::Parked,
        out: &mut Out,
    ) -> Disposition {
        let slot = state.cases.get_or_default(case);
        if slot.parked.len() >= self.cfg.max_parked_per_case {
            return Disposition::Rejected(Rejection::TooManyParked {
                case: case.to_string(),
                count: slot.parked.len(),
            });
        }
        parked.seq = slot.next_parked;
        slot.next_parked += 1;
        let reason = parked.reason;
        out.touch(StateKey::Case(case.to_string())); // its next_parked changed
        out.touch(StateKey::Parked(case.to_string(), parked.seq));
        slot.parked.push(parked);
        Disposition::Parked(reason)
    }

    /// Re-applies the case's parked events until a pass completes none of them.
    fn release(
        &self,
        state: &mut EngineState,
        case: &str,
        out: &mut Out,
        released: &mut Vec<Released>,
    ) {
        loop {
            let Some(slot) = state.cases.get_mut(case) else {
                return;
            };
            if slot.parked.is_empty() {
                return;
            }
            let waiting = std::mem::take(&mut slot.parked);
            let mut progressed = false;
            let mut still = Vec::new();
            for mut parked in waiting {
                if !matches!(
                    parked.event.kind(),
                    SourceKind::Contact | SourceKind::Account
                ) {
                    // Rules other than the customer rule do not mark the case they change.
                    out.touch(StateKey::Case(case.to_string()));
                }
                match self.apply_one(state, &mut parked.event, out) {
                    Disposition::Parked(reason) => {
                        if reason != parked.reason {
                            out.touch(StateKey::Parked(case.to_string(), parked.seq));
                        }
                        still.push(state::Parked { reason, ..parked })
                    }
                    disposition => {
                        progressed = true;
                        out.touch(StateKey::Parked(case.to_string(), parked.seq));
                        released.push(Released {
                            kind: parked.event.kind(),
                            change_id: parked.event.header().change_id.clone(),
                            disposition,
                            source: parked.source,
                        });
                    }
                }
            }
            // Events parked while re-applying (none today) would be in slot.parked; keep both.
            let slot = state.cases.get_or_default(case);
            still.append(&mut slot.parked);
            slot.parked = still;
            if !progressed {
                return;
            }
        }
    }

    /// Applies one event. A rule may move fields out of the event into its commands, but only once
    /// it will not park it: a parked event is kept whole.
    fn apply_one(
        &self,
        state: &mut EngineState,
        event: &mut ChangeEvent,
        out: &mut Out,
    ) -> Disposition {
        if let Some(rejection) = required_id(event) {
            return Disposition::Rejected(rejection);
        }
        let header = event.header();
        let own = if event.kind().is_commerce() {
            &self.cfg.commerce_user
        } else {
            &self.cfg.sales_user
        };
        if header.modified_by == *own {
            return Disposition::Skipped(SkipReason::Echo);
        }
        match event {
            ChangeEvent::Prospect(c) => self.on_prospect(state, c, out),
            ChangeEvent::Lead(c) => self.on_lead(state, c, out),
            ChangeEvent::Opportunity(c) => self.on_opportunity(state, c, out),
            ChangeEvent::Contact(c) => self.on_contact(state, c, out),
            ChangeEvent::Account(c) => self.on_account(state, c, out),
        }
    }

    /// The legal entity of an event: its own, else the case's, else the configured default.
    fn company(&self, header: &ChangeHeader, case: Option<&CaseState>) -> String {
        non_empty(&header.company)
            .map(str::to_lowercase)
            .or_else(|| case.map(|c| c.company.clone()).filter(|c| !c.is_empty()))
            .unwrap_or_else(|| self.cfg.default_company.clone())
    }

    fn alert(
        &self,
        kind: AlertKind,
        subject: &str,
        cause: &str,
        company: &str,
        prospect: Option<&str>,
        message: String,
    ) -> Command {
        Command::from(Alert {
            command_id: ids::command_id(kind.as_str(), subject, cause),
            caused_by: cause.to_string(),
            kind,
            data_area_id: company.to_string(),
            prospect_id: prospect.map(str::to_string),
            message,
        })
    }
}

/// A case restored from a record of an earlier build holds its parked events only in that record:
/// when the case is written again (without them), they are written as entries of their own.
fn write_legacy_parked(state: &mut EngineState, out: &mut Out) {
    let cases: Vec<String> = out
        .touched
        .iter()
        .filter_map(|k| match k {
            StateKey::Case(c) if state.unwritten_parked.contains(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    for case in cases {
        state.unwritten_parked.remove(&case);
        if let Some(c) = state.cases.get(&case) {
            for p in &c.parked {
                out.touch(StateKey::Parked(case.clone(), p.seq));
            }
        }
    }
}

/// `Some(s)` when the option holds a non-blank string.
pub(crate) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.trim().is_empty())
}

/// Compares a change's version with the last one applied.
pub(crate) fn version_check(last: Option<i64>, version: i64) -> Option<SkipReason> {
    match last {
        Some(last) if version == last => Some(SkipReason::Duplicate),
        Some(last) if version < last => Some(SkipReason::StaleVersion),
        _ => None,
    }
}

fn required_id(event: &ChangeEvent) -> Option<Rejection> {
    let (entity, field) = match event {
        ChangeEvent::Prospect(_) => ("prospect", "ProspectId"),
        ChangeEvent::Lead(_) => ("lead", "leadid"),
        ChangeEvent::Opportunity(_) => ("opportunity", "opportunityid"),
        ChangeEvent::Contact(_) => ("contact", "contactid"),
        ChangeEvent::Account(_) => ("account", "accountid"),
    };
    event
        .entity_id()
        .trim()
        .is_empty()
        .then(|| Rejection::MissingField {
            entity: entity.into(),
            field: field.into(),
        })
}

/// Checks an option-set value against its allowed range.
pub(crate) fn check_state(
    entity: &str,
    field: &str,
    value: i32,
    max: i32,
    expected: &str,
) -> Result<(), Disposition> {
    if (0..=max).contains(&value) {
        Ok(())
    } else {
        Err(Disposition::Rejected(Rejection::InvalidValue {
            entity: entity.into(),
            field: field.into(),
            value: value.into(),
            expected: expected.into(),
        }))
    }
}
