//! One test per rule and per engine mechanism, with plain values. The scenario files under
//! `tests/scenarios/` cover the edge cases end to end; these pin the rules' outputs field by field.

use super::*;
use crate::model::{
    Account, Change, ChangeHeader, Contact, Lead, Operation, Opportunity, Prospect,
};

const PERSON: &str = "person";

fn engine() -> Engine {
    Engine::new(EngineConfig::defaults())
}

fn header(change: &str, version: i64) -> ChangeHeader {
    ChangeHeader {
        op: Operation::Update,
        change_id: change.into(),
        version,
        modified_on: 0,
        modified_by: PERSON.into(),
        company: None,
    }
}

fn prospect(id: &str, email: &str) -> ChangeEvent {
    ChangeEvent::Prospect(Change {
        header: header(&format!("{id}-p"), 1),
        record: Prospect {
            prospect_id: id.into(),
            prospect_name: Some("Fabrikam".into()),
            contact_first_name: Some("Marta".into()),
            contact_last_name: Some("Lindqvist".into()),
            primary_email_address: Some(email.into()),
            ..Prospect::default()
        },
    })
}

fn lead(id: &str, state: i32, status: i32, version: i64) -> ChangeEvent {
    ChangeEvent::Lead(Change {
        header: header(&format!("{id}-l{version}"), version),
        record: Lead {
            leadid: ids::lead_id("usrt", id),
            statecode: state,
            statuscode: status,
            partnersync_prospectkey: Some(format!("usrt/{id}")),
            qualifyingopportunityid: Some("opp".into()),
            ..Lead::default()
        },
    })
}

fn opportunity(id: &str, opp: &str, state: i32, status: i32, version: i64) -> ChangeEvent {
    ChangeEvent::Opportunity(Change {
        header: header(&format!("{opp}-{version}"), version),
        record: Opportunity {
            opportunityid: opp.into(),
            originatingleadid: Some(ids::lead_id("usrt", id)),
            statecode: state,
            statuscode: status,
            ..Opportunity::default()
        },
    })
}

fn contact(id: &str, contact_id: &str) -> ChangeEvent {
    ChangeEvent::Contact(Change {
        header: header(&format!("{contact_id}-c"), 1),
        record: Contact {
            contactid: contact_id.into(),
            originatingleadid: Some(ids::lead_id("usrt", id)),
            firstname: Some("Marta".into()),
            lastname: Some("Lindqvist".into()),
            jobtitle: Some("Buyer".into()),
            ..Contact::default()
        },
    })
}

fn account(id: &str, account_id: &str) -> ChangeEvent {
    ChangeEvent::Account(Change {
        header: header(&format!("{account_id}-a"), 1),
        record: Account {
            accountid: account_id.into(),
            originatingleadid: Some(ids::lead_id("usrt", id)),
            name: Some("Fabrikam".into()),
            address2_city: Some("Seattle".into()),
            ..Account::default()
        },
    })
}

/// Applies events in order and returns the last decision.
fn run(engine: &Engine, state: &mut EngineState, events: Vec<ChangeEvent>) -> Decision {
    let mut last = None;
    for e in events {
        last = Some(engine.apply(state, e, 0));
    }
    last.expect("at least one event")
}

#[test]
fn rule1_prospect_creates_a_team_owned_web_lead_with_the_b2b_origin_and_a_note() {
    let d = engine().apply(
        &mut EngineState::default(),
        prospect("P1", "m@f.example"),
        0,
    );
    assert_eq!(d.disposition, Disposition::Emitted);
    let [Command::LeadUpsert(lead), Command::LeadNote(note)] = d.commands.as_slice() else {
        panic!("{:?}", d.commands)
    };
    assert_eq!(lead.leadid, ids::lead_id("usrt", "P1"));
    assert!(lead.is_create);
    assert_eq!(
        (lead.leadsourcecode, lead.partnersync_origin),
        (8, 100_000_000)
    );
    assert_eq!(
        (lead.owneridtype.as_str(), lead.ownerid.as_str()),
        ("team", "5d2f8a31-0c4e-4e8b-a1f7-3b9c6d2e7f10")
    );
    assert_eq!(lead.firstname.as_deref(), Some("Marta"));
    assert_eq!(lead.companyname.as_deref(), Some("Fabrikam"));
    assert_eq!(lead.partnersync_prospectkey, "usrt/P1");
    assert_eq!(note.objectid, lead.leadid);
    assert!(
        note.notetext.contains("P1") && note.notetext.contains("All commerce B2B leads"),
        "{}",
        note.notetext
    );
}

#[test]
fn rule2_contact_becomes_a_person_customer_and_account_an_organization_customer() {
    let e = engine();
    let mut s = EngineState::default();
    e.apply(&mut s, prospect("P2", "m@f.example"), 0);
    let person = e.apply(&mut s, contact("P2", "c2"), 0);
    let [Command::CustomerUpsert(p)] = person.commands.as_slice() else {
        panic!("{:?}", person.commands)
    };
    assert_eq!(
        (p.party_type.as_str(), p.data_area_id.as_str()),
        ("Person", "usrt")
    );
    assert_eq!(
        p.customer_account,
        ids::customer_account("PS-", "contact", "c2")
    );
    assert_eq!(p.person_professional_title.as_deref(), Some("Buyer"));
    assert_eq!(p.organization_name, None);
    assert_eq!(
        (
            p.customer_group_id.as_deref(),
            p.sales_currency_code.as_deref()
        ),
        (Some("30"), Some("USD"))
    );
    let org = e.apply(&mut s, account("P2", "a2"), 0);
    let [Command::CustomerUpsert(o)] = org.commands.as_slice() else {
        panic!("{:?}", org.commands)
    };
    assert_eq!(o.party_type, "Organization");
    assert_eq!(o.organization_name.as_deref(), Some("Fabrikam"));
    assert_eq!(
        o.invoice_address_city.as_deref(),
        Some("Seattle"),
        "address2 is the invoice address"
    );
    assert_eq!(o.person_first_name, None);
}

#[test]
fn rule3_won_opportunity_approves_and_builds_the_hierarchy_with_the_requester_as_admin() {
    let e = engine();
    let mut s = EngineState::default();
    let d = run(
        &e,
        &mut s,
        vec![
            prospect("P3", "m@f.example"),
            contact("P3", "c3"),
            account("P3", "a3"),
            opportunity("P3", "o3", 1, 3, 5),
        ],
    );
    let [Command::ProspectStatus(status), Command::CustomerHierarchy(h)] = d.commands.as_slice()
    else {
        panic!("{:?}", d.commands)
    };
    assert_eq!(
        (status.prospect_id.as_str(), status.status.as_str()),
        ("P3", "Approved")
    );
    assert_eq!(
        h.organization_customer_account,
        ids::customer_account("PS-", "account", "a3")
    );
    assert_eq!(
        h.admin_customer_account,
        ids::customer_account("PS-", "contact", "c3")
    );
    assert_eq!(
        (h.admin_role.as_str(), h.purpose.as_str(), h.name.as_str()),
        ("Admin", "B2B organization", "Fabrikam")
    );
    assert_eq!(
        s.cases
            .resident(&ids::lead_id("usrt", "P3"))
            .unwrap()
            .outcome,
        Outcome::Approved {
            opportunity: "o3".into()
        }
    );
}

#[test]
fn rule4_disqualified_lead_rejects_and_requests_the_email_once() {
    let e = engine();
    let mut s = EngineState::default();
    let d = run(
        &e,
        &mut s,
        vec![prospect("P4", "j@l.example"), lead("P4", 2, 6, 2)],
    );
    let [Command::ProspectStatus(status), Command::RejectionEmail(mail)] = d.commands.as_slice()
    else {
        panic!("{:?}", d.commands)
    };
    assert_eq!(status.status, "Rejected");
    assert_eq!(status.reason, "Lead disqualified: No Longer Interested");
    assert_eq!(
        (
            mail.email.as_str(),
            mail.firstname.as_str(),
            mail.lastname.as_str(),
            mail.company.as_str()
        ),
        ("j@l.example", "Marta", "Lindqvist", "Fabrikam")
    );
    assert_eq!(mail.notification_type, "B2B prospect rejected");
    let again = run(&e, &mut s, vec![lead("P4", 0, 1, 3), lead("P4", 2, 4, 4)]);
    assert!(again.commands.is_empty(), "{:?}", again.commands);
    assert_eq!(
        again.disposition,
        Disposition::Skipped(SkipReason::AlreadyDecided)
    );
}

#[test]
fn rule4_lost_opportunity_rejects_with_the_loss_reason() {
    let e = engine();
    let mut s = EngineState::default();
    let d = run(
        &e,
        &mut s,
        vec![
            prospect("P5", "c@t.example"),
            opportunity("P5", "o5", 2, 4, 3),
        ],
    );
    let [Command::ProspectStatus(status), Command::RejectionEmail(_)] = d.commands.as_slice()
    else {
        panic!("{:?}", d.commands)
    };
    assert_eq!(status.reason, "Opportunity lost: Canceled");
}

#[test]
fn echoes_of_the_connectors_own_writes_are_skipped_on_both_sides() {
    let e = engine();
    let mut s = EngineState::default();
    let ChangeEvent::Prospect(mut own) = prospect("P6", "x@y.example") else {
        unreachable!()
    };
    own.header.modified_by = e.config().commerce_user.clone();
    assert_eq!(
        e.apply(&mut s, ChangeEvent::Prospect(own), 0).disposition,
        Disposition::Skipped(SkipReason::Echo)
    );
    let ChangeEvent::Lead(mut own_lead) = lead("P6", 0, 1, 1) else {
        unreachable!()
    };
    own_lead.header.modified_by = e.config().sales_user.clone();
    assert_eq!(
        e.apply(&mut s, ChangeEvent::Lead(own_lead), 0).disposition,
        Disposition::Skipped(SkipReason::Echo)
    );
}

#[test]
fn an_older_version_is_stale_and_the_same_version_a_duplicate() {
    let e = engine();
    let mut s = EngineState::default();
    run(
        &e,
        &mut s,
        vec![prospect("P7", "a@b.example"), lead("P7", 0, 2, 10)],
    );
    assert_eq!(
        e.apply(&mut s, lead("P7", 0, 2, 10), 0).disposition,
        Disposition::Skipped(SkipReason::Duplicate)
    );
    assert_eq!(
        e.apply(&mut s, lead("P7", 2, 4, 9), 0).disposition,
        Disposition::Skipped(SkipReason::StaleVersion)
    );
    assert!(
        s.cases
            .resident(&ids::lead_id("usrt", "P7"))
            .unwrap()
            .outcome
            .is_pending(),
        "a stale disqualify must not reject"
    );
}

#[test]
fn a_parked_event_is_completed_by_its_missing_piece_and_expires_after_the_timeout() {
    let e = engine();
    let mut s = EngineState::default();
    let parked = e.apply(&mut s, contact("P8", "c8"), 1_000);
    assert_eq!(
        parked.disposition,
        Disposition::Parked(ParkReason::LeadNotSeen)
    );
    let released = e.apply(&mut s, prospect("P8", "a@b.example"), 2_000);
    assert_eq!(released.released.len(), 1);
    assert_eq!(released.released[0].disposition, Disposition::Emitted);
    assert!(
        matches!(released.commands.last(), Some(Command::CustomerUpsert(c)) if c.caused_by == "c8-c")
    );

    assert_eq!(
        e.apply(&mut s, opportunity("P9", "o9", 1, 3, 1), 1_000)
            .disposition,
        Disposition::Parked(ParkReason::LeadNotSeen)
    );
    let timeout = e.config().park_timeout_ms;
    assert!(e.expire(&mut s, 1_000 + timeout - 1).is_empty());
    let expired = e.expire(&mut s, 1_000 + timeout);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].reason, ParkReason::LeadNotSeen);
    let gone = StateKey::Parked(expired[0].case.clone(), expired[0].seq);
    assert_eq!(s.entry_json(&gone), None, "its entry is deleted");
    assert!(
        expired[0].message().contains("originatingleadid"),
        "{}",
        expired[0].message()
    );
}

#[test]
fn too_many_parked_events_for_one_lead_are_rejected_instead_of_growing_state() {
    let e = engine();
    let mut s = EngineState::default();
    let max = e.config().max_parked_per_case;
    for i in 0..max {
        assert!(matches!(
            e.apply(&mut s, opportunity("P10", &format!("o{i}"), 0, 1, 1), 0)
                .disposition,
            Disposition::Parked(_)
        ));
    }
    let d = e.apply(&mut s, opportunity("P10", "one-too-many", 0, 1, 1), 0);
    assert!(
        matches!(
            d.disposition,
            Disposition::Rejected(Rejection::TooManyParked { .. })
        ),
        "{:?}",
        d.disposition
    );
}

#[test]
fn a_record_without_its_id_is_rejected_with_the_field_named() {
    let ChangeEvent::Contact(mut c) = contact("P11", "c11") else {
        unreachable!()
    };
    c.record.contactid = " ".into();
    let d = engine().apply(&mut EngineState::default(), ChangeEvent::Contact(c), 0);
    let Disposition::Rejected(r) = d.disposition else {
        panic!("{:?}", d.disposition)
    };
    assert_eq!(
        r.to_string(),
        "the contact record has no contactid; every contact change must carry its id"
    );
}

#[test]
fn case_keys_are_computable_from_every_event_alone() {
    let e = engine();
    let key = ids::lead_id("usrt", "P12");
    for event in [
        prospect("P12", "a@b.example"),
        lead("P12", 0, 1, 1),
        opportunity("P12", "o", 0, 1, 1),
        contact("P12", "c"),
        account("P12", "a"),
    ] {
        assert_eq!(e.case_key(&event), key, "{:?}", event.kind());
    }
}

#[test]
fn a_parked_event_found_invalid_on_release_is_rejected_with_its_original_record() {
    let e = engine();
    let mut s = EngineState::default();
    let source = SourceRecord::new(
        "sales.lead.changes",
        2,
        41,
        Some(b"lead-key"),
        &[0, 0, 0, 0, 7, 1, 2, 3],
        vec![],
    );
    // A lead with a status that does not exist, arriving before its prospect: it parks first.
    let parked = e.apply_from(&mut s, lead("P7", 7, 1, 2), Some(&source), 1_000);
    assert_eq!(
        parked.disposition,
        Disposition::Parked(ParkReason::ProspectNotSeen)
    );
    let completed = e.apply(&mut s, prospect("P7", "a@b.example"), 2_000);
    assert_eq!(completed.released.len(), 1);
    let released = &completed.released[0];
    assert!(
        matches!(
            released.disposition,
            Disposition::Rejected(Rejection::InvalidValue { .. })
        ),
        "{:?}",
        released.disposition
    );
    // The runtime sends it to the dead letters with these bytes; without them it would vanish.
    assert_eq!(released.source.as_ref(), Some(&source));
    assert!(s.parked_count() == 0, "it no longer waits");
}

#[test]
fn a_park_writes_only_the_new_event_and_a_release_deletes_each_parked_entry() {
    let e = engine();
    let mut s = EngineState::default();
    let case = e.case_key(&contact("P6", "c6")).into_owned();
    let mut written: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
    let mut write = |s: &EngineState, touched: Vec<StateKey>| {
        for key in touched {
            written.insert(key.to_record_key(), s.entry_json(&key));
        }
    };
    let first = e.apply(&mut s, contact("P6", "c6"), 1_000).touched;
    assert_eq!(
        first,
        vec![
            StateKey::Case(case.clone()),
            StateKey::Parked(case.clone(), 0)
        ]
    );
    write(&s, first);
    let second = e.apply(&mut s, contact("P6", "c6b"), 1_001).touched;
    assert!(
        !second.contains(&StateKey::Parked(case.clone(), 0)),
        "the first parked event is not written again: {second:?}"
    );
    assert!(
        second.contains(&StateKey::Case(case.clone())),
        "the case is written: the number of its next parked event changed"
    );
    write(&s, second);
    let case_record = s.entry_json(&StateKey::Case(case.clone())).unwrap();
    assert!(
        !String::from_utf8_lossy(&case_record).contains("c6b"),
        "the case record holds no parked event"
    );

    // Restored from its entries in any order, the state is the same, parked events included.
    let mut restored = EngineState::default();
    for (key, value) in written.iter().rev() {
        restored
            .restore_entry(&StateKey::parse(key).unwrap(), value.as_deref())
            .unwrap();
    }
    assert_eq!(restored, s);
    assert_eq!(restored.parked_count(), 2);

    // The prospect completes the case: both events are released and their entries deleted.
    let released = e.apply(&mut s, prospect("P6", "p6@example.com"), 2_000);
    assert_eq!(released.released.len(), 2);
    for seq in [0, 1] {
        let key = StateKey::Parked(case.clone(), seq);
        assert!(released.touched.contains(&key), "{key:?} is written");
        assert_eq!(s.entry_json(&key), None, "{key:?} is a tombstone");
    }
}

#[test]
fn an_edit_of_a_linked_contact_writes_its_customer_link_and_not_its_case() {
    let e = engine();
    let mut s = EngineState::default();
    e.apply(&mut s, prospect("P5", "p5@example.com"), 1_000);
    let first = e.apply(&mut s, contact("P5", "c5"), 1_001);
    let case = StateKey::Case(e.case_key(&contact("P5", "c5")).into_owned());
    assert!(
        first.touched.contains(&case),
        "the first contact is linked to its case: {:?}",
        first.touched
    );
    let ChangeEvent::Contact(mut edit) = contact("P5", "c5") else {
        unreachable!()
    };
    edit.header = header("c5-edit", 2);
    edit.record.jobtitle = Some("Head of purchasing".into());
    let edited = e.apply(&mut s, ChangeEvent::Contact(edit), 1_002);
    assert_eq!(edited.disposition, Disposition::Emitted);
    assert_eq!(
        edited.touched,
        vec![StateKey::Customer("contact/c5".into())],
        "the case did not change"
    );
}

#[test]
fn parked_events_in_a_case_record_of_an_earlier_build_are_restored_and_written_as_entries() {
    let e = engine();
    let mut s = EngineState::default();
    e.apply(&mut s, contact("P4", "c4"), 1_000);
    e.apply(&mut s, contact("P4", "c4b"), 1_001);
    let case = e.case_key(&contact("P4", "c4")).into_owned();
    // The case record as an earlier build wrote it: its parked events inside, without numbers.
    let mut old: serde_json::Value =
        serde_json::from_slice(&s.entry_json(&StateKey::Case(case.clone())).unwrap()).unwrap();
    let parked: Vec<serde_json::Value> = s
        .cases
        .resident(&case)
        .unwrap()
        .parked
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap();
            v.as_object_mut().unwrap().remove("seq");
            v
        })
        .collect();
    old["parked"] = parked.into();
    old.as_object_mut().unwrap().remove("next_parked");

    let mut restored = EngineState::default();
    restored
        .restore_entry(
            &StateKey::Case(case.clone()),
            Some(&serde_json::to_vec(&old).unwrap()),
        )
        .unwrap();
    assert_eq!(restored.parked_count(), 2, "not dropped");
    assert_eq!(restored.cases.resident(&case).unwrap().next_parked, 2);

    // The next write of the case writes them too, as entries of their own.
    let third = e.apply(&mut restored, contact("P4", "c4c"), 1_002);
    for seq in [0, 1, 2] {
        assert!(
            third.touched.contains(&StateKey::Parked(case.clone(), seq)),
            "parked/{case}/{seq} is written: {:?}",
            third.touched
        );
    }
    assert!(restored.unwritten_parked.is_empty());
    let released = e.apply(&mut restored, prospect("P4", "p4@example.com"), 2_000);
    assert_eq!(released.released.len(), 3, "all three complete");
}

#[test]
fn fields_move_into_the_customer_only_after_the_rule_will_not_park_and_a_source_read_twice_is_copied(
) {
    // The job title feeds two customer fields: the first read must copy it, the last may move it.
    let mut cfg = EngineConfig::defaults();
    cfg.contact_to_person.0.retain(|(t, _)| t != "PartyNumber");
    cfg.contact_to_person
        .0
        .push(("PartyNumber".into(), "jobtitle".into()));
    let e = Engine::new(cfg);
    let mut s = EngineState::default();
    let mut early = contact("P30", "c30");
    if let ChangeEvent::Contact(c) = &mut early {
        c.record.msdyn_contactpersonid = Some("CUST-30".into());
    }
    assert_eq!(
        e.apply(&mut s, early, 0).disposition,
        Disposition::Parked(ParkReason::LeadNotSeen)
    );
    let parked = &s
        .cases
        .resident(&ids::lead_id("usrt", "P30"))
        .unwrap()
        .parked[0];
    let ChangeEvent::Contact(kept) = parked.event.as_ref() else {
        panic!("{:?}", parked.event)
    };
    assert_eq!(
        (
            kept.record.firstname.as_deref(),
            kept.record.jobtitle.as_deref()
        ),
        (Some("Marta"), Some("Buyer")),
        "a parked event keeps every field"
    );
    assert_eq!(
        kept.record.msdyn_contactpersonid.as_deref(),
        Some("CUST-30")
    );

    let released = e.apply(&mut s, prospect("P30", "m@f.example"), 0);
    let Some(Command::CustomerUpsert(p)) = released.commands.last() else {
        panic!("{:?}", released.commands)
    };
    assert_eq!(p.customer_account, "CUST-30", "the integration key is kept");
    assert_eq!(
        (
            p.person_first_name.as_deref(),
            p.person_last_name.as_deref(),
            p.person_professional_title.as_deref(),
            p.party_number.as_deref(),
        ),
        (
            Some("Marta"),
            Some("Lindqvist"),
            Some("Buyer"),
            Some("Buyer")
        )
    );
}

/// A state that applied one prospect: its engine, the state, the case key, the case's entry key
/// and the entry's first JSON.
fn one_prospect(id: &str, email: &str) -> (Engine, EngineState, String, StateKey, Vec<u8>) {
    let e = engine();
    let mut s = EngineState::default();
    let first = prospect(id, email);
    let key = e.case_key(&first).into_owned();
    let case = StateKey::Case(key.clone());
    e.apply(&mut s, first, 1_000);
    let written = s.entry_json(&case).unwrap();
    (e, s, key, case, written)
}

#[test]
fn a_case_entry_writes_its_latest_prospect_as_plain_json_and_restores_to_the_same_bytes() {
    let (e, mut s, id, case, written) = one_prospect("P9", "marta@fabrikam.example");
    // The prospect's JSON is made once; a second write is the same bytes, and both are what plain
    // serde_json makes of the record.
    assert_eq!(s.entry_json(&case).unwrap(), written);
    let value: serde_json::Value = serde_json::from_slice(&written).unwrap();
    let plain = serde_json::to_value(
        s.cases
            .resident(&id)
            .unwrap()
            .prospect
            .as_ref()
            .unwrap()
            .record(),
    )
    .unwrap();
    assert_eq!(value["prospect"]["record"], plain);

    // An edited prospect replaces the record, and its case entry carries the edit, not the first.
    let ChangeEvent::Prospect(mut edit) = prospect("P9", "marta@fabrikam.example") else {
        unreachable!()
    };
    edit.header.version = 2;
    edit.header.change_id = "P9-p2".into();
    edit.record.prospect_name = Some("Fabrikam Nordic".into());
    e.apply(&mut s, ChangeEvent::Prospect(edit), 1_001);
    let edited = s.entry_json(&case).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&edited).unwrap();
    assert_eq!(
        value["prospect"]["record"]["ProspectName"],
        "Fabrikam Nordic"
    );
    assert_eq!(value["prospect"]["version"], 2);

    // Restored elsewhere (nothing kept yet), the case writes the same bytes.
    let mut restored = EngineState::default();
    restored.restore_entry(&case, Some(&edited)).unwrap();
    assert_eq!(restored.entry_json(&case).unwrap(), edited);
    assert_eq!(restored.cases, s.cases);
}

#[test]
fn a_case_whose_prospect_an_earlier_build_wrote_otherwise_restores_and_is_written_as_this_build_writes_it(
) {
    let (_, s, id, case, written) = one_prospect("P10", "ines@fabrikam.example");
    // The same case as another writer might have stored it: the record's fields in reverse order,
    // its null fields left out.
    let mut value: serde_json::Value = serde_json::from_slice(&written).unwrap();
    let record = value["prospect"]["record"].as_object().unwrap().clone();
    let reordered: serde_json::Map<String, serde_json::Value> = record
        .into_iter()
        .rev()
        .filter(|(_, v)| !v.is_null())
        .collect();
    value["prospect"]["record"] = serde_json::Value::Object(reordered);
    let other = serde_json::to_vec(&value).unwrap();
    assert_ne!(other, written, "the rewritten record differs as bytes");

    let mut restored = EngineState::default();
    restored.restore_entry(&case, Some(&other)).unwrap();
    assert_eq!(restored.entry_json(&case).unwrap(), written);
    assert_eq!(
        restored.cases.resident(&id).unwrap().prospect,
        s.cases.resident(&id).unwrap().prospect
    );
    assert_eq!(
        restored
            .cases
            .resident(&id)
            .unwrap()
            .prospect
            .as_ref()
            .unwrap()
            .prospect_id(),
        "P10"
    );
}

#[test]
fn a_prospect_read_back_takes_its_id_from_the_record_whether_written_first_escaped_or_elsewhere() {
    use crate::engine::state::ProspectSeen;
    let read = |record: &str| {
        let text = format!(r#"{{"version":3,"deleted":false,"record":{record}}}"#);
        serde_json::from_str::<ProspectSeen>(&text).unwrap()
    };
    // As this build writes it: the id first, escapes included.
    let first = read(r#"{"ProspectId":"P\"1\u00e9","ProspectName":"Fabrikam"}"#);
    assert_eq!((first.prospect_id(), first.version), ("P\"1é", 3));
    // As another writer may have: the id elsewhere, or spaced.
    assert_eq!(
        read(r#"{"ProspectName":"Fabrikam","ProspectId":"P2"}"#).prospect_id(),
        "P2"
    );
    assert_eq!(read(r#"{ "ProspectId" : "P3" }"#).prospect_id(), "P3");
    let text = r#"{"version":1,"deleted":false,"record":{"ProspectName":"no id"}}"#;
    assert!(serde_json::from_str::<ProspectSeen>(text).is_err());
}

#[test]
fn a_requester_read_back_from_the_cold_store_and_changed_is_written_there_changed() {
    use crate::engine::state::{ColdStores, MemoryCold};
    let engine = engine();
    let mut state = EngineState::default();
    let cold = || Box::new(MemoryCold::default());
    let stores = ColdStores {
        cases: cold(),
        customers: cold(),
        requesters: cold(),
    };
    state.spill_to(stores, 1);
    engine.apply(&mut state, prospect("P1", "marta@fabrikam.com"), 0);
    // Other requesters push this one out of memory.
    engine.apply(&mut state, prospect("P2", "ana@contoso.com"), 0);
    engine.apply(&mut state, prospect("P3", "li@litware.com"), 0);
    let key = ids::requester_key("usrt", "marta@fabrikam.com");
    assert!(state.requesters.resident(&key).is_none(), "spilled");
    // The same requester again: read back, the second case added, flagged.
    let second = engine.apply(&mut state, prospect("P4", "marta@fabrikam.com"), 0);
    assert!(second.touched.contains(&StateKey::Requester(key.clone())));
    engine.apply(&mut state, prospect("P5", "jo@tailspin.com"), 0);
    assert!(state.requesters.resident(&key).is_none(), "spilled again");
    let entry = String::from_utf8(state.entry_json(&StateKey::Requester(key)).unwrap()).unwrap();
    let (p1, p4) = (ids::lead_id("usrt", "P1"), ids::lead_id("usrt", "P4"));
    assert!(entry.contains(&p1) && entry.contains(&p4), "{entry}");
}

#[test]
fn a_case_laid_out_for_the_spill_file_reads_back_equal_and_writes_the_same_entry() {
    use crate::engine::state::Spill;
    let engine = engine();
    let mut state = EngineState::default();
    // A record whose JSON needs escapes, and a case with no prospect (an early contact's).
    let mut event = prospect("P\"1", "marta@fabrikam.com");
    if let ChangeEvent::Prospect(c) = &mut event {
        c.record.prospect_name = Some("Fabrikam \u{e9}\\ \"B2B\"".into());
    }
    engine.apply(&mut state, event, 0);
    let key = ids::lead_id("usrt", "P\"1");
    let case = state.cases.resident(&key).unwrap().clone();
    let empty = CaseState::default();
    for case in [case, empty] {
        let cold = case.to_cold();
        let back = CaseState::from_cold(&cold).unwrap();
        assert_eq!(back, case);
        assert_eq!(back.prospect_id(), case.prospect_id());
        assert_eq!(back.to_json(), case.to_json(), "the same entry");
    }
    // Cut short, it is refused with a sentence, not read as a case.
    let cold = state.cases.resident(&key).unwrap().to_cold();
    let err = CaseState::from_cold(&cold[..10]).unwrap_err();
    assert!(err.contains("shorter"), "{err}");
}
