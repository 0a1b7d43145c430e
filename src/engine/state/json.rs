//! The two state entries written with nearly every record, a case and a customer link, as JSON
//! written field by field: byte for byte what serde_json makes of them (a test compares the two on
//! every entry of the story mix and on strings that need escaping).
//!
//! Why: serde_json escapes every string it writes one byte at a time, field names included
//! (`format_escaped_str` was 60% of `entry_json`'s instructions in
//! `cargo bench --bench engine -- state-profile` under callgrind). Here a field name is a constant
//! written whole, and a string value is checked for a byte that needs escaping first: the usual
//! value has none and is copied whole; one that has is handed to serde_json, so its escapes are
//! serde_json's. Other entries (requesters, parked events) are rarer and stay with serde.
//!
//! The fields are taken apart exhaustively: a field added to either struct does not compile until
//! it is written here (or skipped, as serde skips it).

use super::{Awaiting, CaseState, CustomerLink, Origin, Outcome, ProspectSeen, Seen};

/// Appends `case` as serde_json writes a `CaseState`.
pub(super) fn write_case(out: &mut Vec<u8>, case: &CaseState) {
    write_case_with(out, case, true);
}

/// Appends `case` as [`write_case`] does, but its prospect's record as `null` (the spill file
/// keeps the record apart: `Spill::to_cold`).
pub(super) fn write_case_without_record(out: &mut Vec<u8>, case: &CaseState) {
    write_case_with(out, case, false);
}

fn write_case_with(out: &mut Vec<u8>, case: &CaseState, record: bool) {
    let CaseState {
        origin,
        company,
        prospect,
        lead,
        opportunities,
        contact,
        account,
        duplicates,
        outcome,
        rejection_email_sent,
        next_parked,
        email_taken,
        awaiting_opportunity,
        // `#[serde(skip)]` and `skip_serializing`: not in the case's record.
        parked: _,
        legacy_parked: _,
    } = case;
    out.extend_from_slice(b"{\"origin\":");
    out.extend_from_slice(match origin {
        Origin::Unknown => b"\"unknown\"".as_slice(),
        Origin::B2b => b"\"b2b\"",
        Origin::Foreign => b"\"foreign\"",
    });
    out.extend_from_slice(b",\"company\":");
    string(out, company);
    out.extend_from_slice(b",\"prospect\":");
    match prospect {
        None => out.extend_from_slice(b"null"),
        Some(p) => prospect_seen(out, p, record),
    }
    out.extend_from_slice(b",\"lead\":");
    match lead {
        None => out.extend_from_slice(b"null"),
        Some(seen) => write_seen(out, seen),
    }
    out.extend_from_slice(b",\"opportunities\":{");
    separated(out, opportunities.iter(), |out, (id, seen)| {
        string(out, id);
        out.push(b':');
        write_seen(out, seen);
    });
    out.extend_from_slice(b"},\"contact\":");
    optional_string(out, contact.as_deref());
    out.extend_from_slice(b",\"account\":");
    optional_string(out, account.as_deref());
    out.extend_from_slice(b",\"duplicates\":[");
    separated(out, duplicates.iter(), |out, d| string(out, d));
    out.extend_from_slice(b"],\"outcome\":");
    match outcome {
        Outcome::Pending => out.extend_from_slice(b"\"pending\""),
        Outcome::Approved { opportunity } => tagged(out, "approved", "opportunity", opportunity),
        Outcome::Rejected { reason } => tagged(out, "rejected", "reason", reason),
        Outcome::Held { reason } => tagged(out, "held", "reason", reason),
        Outcome::DecidedInCommerce { status } => {
            tagged(out, "decided_in_commerce", "status", status)
        }
    }
    out.extend_from_slice(b",\"rejection_email_sent\":");
    boolean(out, *rejection_email_sent);
    out.extend_from_slice(b",\"next_parked\":");
    integer(out, *next_parked);
    if let Some(email) = email_taken {
        out.extend_from_slice(b",\"email_taken\":");
        string(out, email);
    }
    if let Some(Awaiting {
        since_ms,
        change_id,
    }) = awaiting_opportunity
    {
        out.extend_from_slice(b",\"awaiting_opportunity\":{\"since_ms\":");
        integer(out, *since_ms);
        out.extend_from_slice(b",\"change_id\":");
        string(out, change_id);
        out.push(b'}');
    }
    out.push(b'}');
}

/// Appends `link` as serde_json writes a `CustomerLink`.
pub(super) fn write_customer(out: &mut Vec<u8>, link: &CustomerLink) {
    let CustomerLink {
        version,
        company,
        customer_account,
        last_key,
        last_sent_digest,
        email,
    } = link;
    out.extend_from_slice(b"{\"version\":");
    integer(out, *version);
    out.extend_from_slice(b",\"company\":");
    string(out, company);
    out.extend_from_slice(b",\"customer_account\":");
    string(out, customer_account);
    out.extend_from_slice(b",\"last_key\":");
    optional_string(out, last_key.as_deref());
    out.extend_from_slice(b",\"last_sent_digest\":");
    integer(out, *last_sent_digest);
    out.extend_from_slice(b",\"email\":");
    optional_string(out, email.as_deref());
    out.push(b'}');
}

/// As [`ProspectSeen`]'s own `Serialize` writes it: its record is JSON already (or `null`).
fn prospect_seen(out: &mut Vec<u8>, p: &ProspectSeen, record: bool) {
    out.extend_from_slice(b"{\"version\":");
    integer(out, p.version);
    out.extend_from_slice(b",\"deleted\":");
    boolean(out, p.deleted);
    out.extend_from_slice(b",\"record\":");
    match record {
        true => out.extend_from_slice(p.record_json().as_bytes()),
        false => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn write_seen(out: &mut Vec<u8>, seen: &Seen) {
    let Seen {
        version,
        statecode,
        deleted,
    } = seen;
    out.extend_from_slice(b"{\"version\":");
    integer(out, *version);
    out.extend_from_slice(b",\"statecode\":");
    integer(out, *statecode);
    out.extend_from_slice(b",\"deleted\":");
    boolean(out, *deleted);
    out.push(b'}');
}

/// The items `write` appends, separated by commas (the brackets are the caller's).
fn separated<T>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

/// A struct variant of one string field, externally tagged as serde writes it:
/// `{"variant":{"field":value}}`.
fn tagged(out: &mut Vec<u8>, variant: &str, field: &str, value: &str) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(variant.as_bytes());
    out.extend_from_slice(b"\":{\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    string(out, value);
    out.extend_from_slice(b"}}");
}

fn optional_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"null"),
        Some(s) => string(out, s),
    }
}

/// A JSON string: copied whole when no byte needs escaping (a quote, a backslash, a control
/// character: what serde_json escapes), else written by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true".as_slice() } else { b"false" });
}

fn integer(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sorted::SortedMap;
    use crate::engine::{Engine, EngineState};
    use crate::mapping::EngineConfig;
    use crate::story;

    /// What `write` makes of `value` is what serde_json makes of it.
    fn same_as_serde<T: serde::Serialize>(value: &T, write: fn(&mut Vec<u8>, &T)) {
        let mut ours = Vec::new();
        write(&mut ours, value);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(value).unwrap()
        );
    }

    fn same_as_serde_case(case: &CaseState) {
        same_as_serde(case, write_case)
    }

    fn same_as_serde_customer(link: &CustomerLink) {
        same_as_serde(link, write_customer)
    }

    #[test]
    fn every_case_and_customer_of_the_story_mix_is_written_as_serde_json_writes_it() {
        let engine = Engine::new(EngineConfig::defaults());
        let mut state = EngineState::default();
        let (mut cases, mut customers) = (0, 0);
        for e in story::generate(5, 200, engine.config(), 1_772_442_000_000).clean() {
            let decision = engine.apply(&mut state, e, 0);
            // Each entry as it is at every step of its life, not only at the end.
            for key in &decision.touched {
                match key {
                    super::super::StateKey::Case(k) => {
                        same_as_serde_case(state.cases.resident(k).unwrap());
                        cases += 1;
                    }
                    super::super::StateKey::Customer(k) => {
                        same_as_serde_customer(state.customers.resident(k).unwrap());
                        customers += 1;
                    }
                    _ => {}
                }
            }
        }
        let outcomes: std::collections::BTreeSet<&str> = state
            .cases
            .resident_values()
            .map(|c| match c.outcome {
                Outcome::Pending => "pending",
                Outcome::Approved { .. } => "approved",
                Outcome::Rejected { .. } => "rejected",
                Outcome::Held { .. } => "held",
                Outcome::DecidedInCommerce { .. } => "decided",
            })
            .collect();
        assert!(
            cases > 500 && customers > 100,
            "{cases} cases, {customers} customers"
        );
        assert!(
            outcomes.contains("approved") && outcomes.contains("rejected"),
            "{outcomes:?}"
        );
    }

    #[test]
    fn strings_that_need_escaping_and_every_variant_are_written_as_serde_json_writes_them() {
        let odd = "a \"quoted\" \\ back\tslash\nline\u{1}\u{7f} é 😀";
        let mut opportunities = SortedMap::default();
        opportunities.insert(
            odd.to_string(),
            Seen {
                version: -3,
                statecode: 2,
                deleted: true,
            },
        );
        opportunities.insert(
            "opp-2".to_string(),
            Seen {
                version: i64::MAX,
                statecode: 0,
                deleted: false,
            },
        );
        let outcomes = [
            Outcome::Pending,
            Outcome::Approved {
                opportunity: odd.into(),
            },
            Outcome::Rejected {
                reason: "lost".into(),
            },
            Outcome::Held { reason: odd.into() },
            Outcome::DecidedInCommerce {
                status: "Approved".into(),
            },
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let case = CaseState {
                origin: [Origin::Unknown, Origin::B2b, Origin::Foreign][i % 3],
                company: odd.into(),
                lead: Some(Seen {
                    version: 7,
                    statecode: 1,
                    deleted: false,
                }),
                opportunities: opportunities.clone(),
                contact: Some(odd.into()),
                account: (i % 2 == 0).then(|| "acc".to_string()),
                duplicates: [odd.to_string(), "x".to_string()].into(),
                outcome,
                rejection_email_sent: i % 2 == 1,
                next_parked: u64::MAX - i as u64,
                ..CaseState::default()
            };
            same_as_serde_case(&case);
        }
        same_as_serde_case(&CaseState::default());
        same_as_serde_customer(&CustomerLink {
            version: i64::MIN,
            company: odd.into(),
            customer_account: "PS-1".into(),
            last_key: Some(odd.into()),
            last_sent_digest: u64::MAX,
            email: None,
        });
        same_as_serde_customer(&CustomerLink::default());
        // Each byte that needs escaping alone in its string, so none is caught by another.
        for single in [
            "back\\slash",
            "a \"quote",
            "tab\there",
            "\u{1f}unit",
            "nul\u{0}",
            "del\u{7f}",
        ] {
            same_as_serde_customer(&CustomerLink {
                company: single.into(),
                ..CustomerLink::default()
            });
        }
    }
}
