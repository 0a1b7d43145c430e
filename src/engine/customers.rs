//! Rule 2: Sales contacts become Commerce customers of party type Person, accounts of party type
//! Organization (CustomersV3 fields through `mapping.contact_to_person` / `account_to_organization`).
//!
//! Which records sync is `customers.sync`; by default only those qualified from a B2B lead. The first
//! contact and the first account qualified from a lead are linked to its case: they are the requester
//! and the organization the approval's hierarchy is built from. Later edits are plain customer updates
//! and never touch the prospect. The Commerce `CustomerAccount` is fixed at the first sync (the Sales
//! integration key if set, else one derived from the Sales id), because changing an integration key
//! breaks the dual-write link; a later change of the key raises an alert instead of moving the customer.
//! Deletes are not propagated: Commerce customers are never deleted by the connector.

use super::state::{CustomerLink, Origin, StateKey};
use super::{
    ids, non_empty, version_check, Disposition, Engine, EngineState, Out, ParkReason, SkipReason,
};
use crate::model::{Account, AlertKind, Change, ChangeHeader, Contact, CustomerUpsert, Operation};
use crate::settings::CustomerSync;

/// What the customer rule needs to know about a contact or an account.
struct Candidate<'a> {
    entity: &'static str,
    id: &'a str,
    header: &'a ChangeHeader,
    originating_lead: Option<&'a str>,
    /// Whether the `sellable` filter selects it on its own (msdyn_sellable / customertypecode = 3).
    sellable: bool,
    party_type: &'a str,
    /// (CustomerUpsert field, source field, last read of that source) positions.
    map: &'a [(usize, usize, bool)],
    /// The source's text fields, moved out of the record (`TEXT_FIELDS` order): the fields a
    /// customer upsert is built from are moved into it, not copied. What is left is put back.
    texts: &'a mut [Option<String>],
    /// The position of the integration key (`msdyn_contactpersonid` / `accountnumber`) in `texts`.
    key_at: usize,
}

impl Engine {
    /// Keeps the requester table's Person claims in step with a contact about to be sent with
    /// `email`: claims a free email, gives up the claim of the email it was last sent with
    /// (`sent`: that email, and whether it was sent at all) when it changed, and returns the
    /// disposition of a contact that must be held back because another Person customer holds
    /// `email` (an alert the first time its case meets the hold, a skip after that). Only a
    /// contact never sent holds its case's approval: one sent before has a customer of its own,
    /// which keeps its old email.
    #[allow(clippy::too_many_arguments)]
    fn claim_email(
        &self,
        state: &mut EngineState,
        link_key: &str,
        lead: Option<&str>,
        company: &str,
        sent: (Option<&str>, bool),
        email: Option<&str>,
        cause: &str,
        out: &mut Out,
    ) -> Option<Disposition> {
        let (old_email, sent_before) = sent;
        let blank = |e: &&str| e.trim().is_empty();
        let key = email
            .filter(|e| !blank(e))
            .map(|e| ids::requester_key(company, e));
        let owner = key
            .as_ref()
            .and_then(|k| state.requesters.get(k))
            .and_then(|r| r.person.clone());
        // The case this contact is the requester of, if it is one.
        let contact_id = link_key.strip_prefix("contact/").unwrap_or(link_key);
        let own_case = lead.filter(|_| !sent_before).filter(|lead| {
            state
                .cases
                .get(lead)
                .is_some_and(|case| case.contact.as_deref() == Some(contact_id))
        });
        if let (Some(owner), Some(email)) = (owner.filter(|o| o != link_key), email) {
            let email = email.trim().to_lowercase();
            let email = email.as_str();
            let mut first_time = true;
            let mut prospect = None;
            if let Some(lead) = own_case {
                let case = state.cases.get_mut(lead).expect("found above");
                first_time = case.email_taken.as_deref() != Some(email);
                prospect = case.prospect_id().map(str::to_string);
                if first_time {
                    case.email_taken = Some(email.to_string());
                    out.touch(StateKey::Case(lead.to_string()));
                }
            }
            if !first_time {
                return Some(Disposition::Skipped(SkipReason::EmailTaken));
            }
            let owner_id = owner.strip_prefix("contact/").unwrap_or(&owner);
            let account = state
                .customers
                .get(&owner)
                .map(|l| l.customer_account.clone())
                .unwrap_or_default();
            out.push(self.alert(
                AlertKind::EmailTaken,
                link_key,
                cause,
                company,
                prospect.as_deref(),
                format!(
                    "Contact {contact_id} was not sent to Commerce: its email {email} is already the primary email of Person \
                     customer {account} (contact {owner_id}) in legal entity {company}, and two customers with one email cannot \
                     sign in.{} Change the contact's email in Sales if it is a different person; if it is the same person, add \
                     customer {account} to the partner's hierarchy in Commerce and decide the prospect there.",
                    match &prospect {
                        Some(p) => format!(" Prospect {p} will not be approved by a win."),
                        None => String::new(),
                    }
                ),
            ));
            return Some(Disposition::Emitted);
        }
        // Not held: this contact's email (if any) is its own from now on.
        if let Some(lead) = own_case {
            let case = state.cases.get_mut(lead).expect("found above");
            if case.email_taken.take().is_some() {
                out.touch(StateKey::Case(lead.to_string()));
            }
        }
        let old_key = old_email
            .filter(|e| !blank(e))
            .map(|e| ids::requester_key(company, e));
        if let Some(old_key) = old_key.filter(|old| Some(old) != key.as_ref()) {
            if let Some(r) = state.requesters.get_mut(&old_key) {
                if r.person.as_deref() == Some(link_key) {
                    r.person = None;
                    if r.is_empty() {
                        state.requesters.remove(&old_key);
                    }
                    out.touch(StateKey::Requester(old_key));
                }
            }
        }
        if let Some(key) = key {
            let r = state.requesters.get_or_default(&key);
            if r.person.is_none() {
                r.person = Some(link_key.to_string());
                out.touch(StateKey::Requester(key));
            }
        }
        None
    }

    /// A contact's text fields are taken out for the rule and put back afterwards, less those moved
    /// into a command. The rule moves fields only after it has decided not to park the event, so a
    /// parked event keeps all of them (it is applied again later).
    pub(super) fn on_contact(
        &self,
        state: &mut EngineState,
        c: &mut Change<Contact>,
        out: &mut Out,
    ) -> Disposition {
        let mut texts = c.record.take_texts();
        let r = &c.record;
        let disposition = self.on_customer(
            state,
            Candidate {
                entity: "contact",
                id: &r.contactid,
                header: &c.header,
                originating_lead: non_empty(&r.originatingleadid),
                sellable: r.msdyn_sellable == Some(true),
                party_type: &self.cfg.person_party_type,
                map: &self.maps.contact_to_person,
                texts: &mut texts,
                key_at: self.maps.contact_key_at,
            },
            out,
        );
        c.record.put_texts(texts);
        disposition
    }

    /// As [`Engine::on_contact`], for an account.
    pub(super) fn on_account(
        &self,
        state: &mut EngineState,
        c: &mut Change<Account>,
        out: &mut Out,
    ) -> Disposition {
        let mut texts = c.record.take_texts();
        let r = &c.record;
        let disposition = self.on_customer(
            state,
            Candidate {
                entity: "account",
                id: &r.accountid,
                header: &c.header,
                originating_lead: non_empty(&r.originatingleadid),
                sellable: r.customertypecode == Some(3),
                party_type: &self.cfg.organization_party_type,
                map: &self.maps.account_to_organization,
                texts: &mut texts,
                key_at: self.maps.account_key_at,
            },
            out,
        );
        c.record.put_texts(texts);
        disposition
    }

    fn on_customer(&self, state: &mut EngineState, c: Candidate<'_>, out: &mut Out) -> Disposition {
        let selected_alone = match self.cfg.customer_sync {
            CustomerSync::B2bLeads => false,
            CustomerSync::Sellable => c.sellable,
            CustomerSync::All => true,
        };
        let cause = c.header.change_id.as_str();
        let link_key = [c.entity, "/", c.id].concat();

        // Find the case, and whether this record is the case's requester/organization. Unlike the
        // other rules, this one marks its case written only when it changes it: most records are
        // edits of customers already linked, and rewriting their case each time doubled their
        // state writes.
        if let Some(lead) = c.originating_lead {
            // One lookup where the case exists, as it does for every edit after the first.
            let case = match state.cases.get_mut(lead) {
                Some(case) => case,
                None => {
                    out.touch(StateKey::Case(lead.to_string()));
                    state.cases.get_or_default(lead)
                }
            };
            match case.origin {
                Origin::Unknown if !selected_alone => {
                    return Disposition::Parked(ParkReason::LeadNotSeen)
                }
                Origin::Foreign if !selected_alone => {
                    return Disposition::Skipped(SkipReason::NotB2b)
                }
                Origin::Foreign => {}
                Origin::B2b | Origin::Unknown => {
                    if case.duplicates.contains(c.id) {
                        return Disposition::Skipped(SkipReason::RequalifiedDuplicate);
                    }
                    let slot = if c.entity == "contact" {
                        &mut case.contact
                    } else {
                        &mut case.account
                    };
                    match slot {
                        None => {
                            *slot = Some(c.id.to_string());
                            out.touch(StateKey::Case(lead.to_string()));
                        }
                        Some(first) if first == c.id => {}
                        Some(first) => {
                            let first = first.clone();
                            case.duplicates.insert(c.id.to_string());
                            out.touch(StateKey::Case(lead.to_string()));
                            let company = case.company.clone();
                            let prospect = case.prospect_id().map(str::to_string);
                            out.push(self.alert(AlertKind::RequalifiedDuplicate,
                                &link_key,
                                cause,
                                &company,
                                prospect.as_deref(),
                                format!(
                                    "A second {} {} was qualified from lead {lead}; {first} is already linked to prospect {} and stays the \
                                     one synced. Merge the two in Sales, or qualify the lead once.",
                                    c.entity,
                                    c.id,
                                    prospect.as_deref().unwrap_or("?")
                                ),
                            ));
                            return Disposition::Emitted;
                        }
                    }
                }
            }
        } else if !selected_alone {
            return Disposition::Skipped(SkipReason::NotB2b);
        }

        // Looked up once: the link is read here and updated in place at the end.
        let existing = state.customers.get_mut(&link_key);
        if let Some(skip) = version_check(existing.as_deref().map(|l| l.version), c.header.version)
        {
            return Disposition::Skipped(skip);
        }
        if c.header.op == Operation::Delete {
            if let Some(link) = existing {
                link.version = c.header.version;
                out.touch(StateKey::Customer(link_key));
            }
            return Disposition::Skipped(SkipReason::Deleted);
        }

        // No park from here on: fields may move. The integration key is held aside meanwhile (a
        // mapping that reads it gets a copy) and put back at the end.
        let key = c.texts[c.key_at].take();
        let integration_key = non_empty(&key);

        // Fixed at the first sync: a linked customer keeps its legal entity and CustomerAccount.
        let (company, customer_account) = match existing.as_deref() {
            Some(l) => (l.company.clone(), l.customer_account.clone()),
            None => {
                let case_company = c
                    .originating_lead
                    .and_then(|lead| state.cases.get(lead))
                    .map(|case| case.company.as_str())
                    .filter(|s| !s.is_empty());
                let company = non_empty(&c.header.company)
                    .map(str::to_lowercase)
                    .or_else(|| case_company.map(str::to_string))
                    .unwrap_or_else(|| self.cfg.default_company.clone());
                let account = integration_key.map(str::to_string).unwrap_or_else(|| {
                    ids::customer_account(&self.cfg.customer_account_prefix, c.entity, c.id)
                });
                (company, account)
            }
        };
        // Built in its box: a `CustomerUpsert` is 720 bytes, and building it on the stack copied
        // them into the command's box.
        let mut customer = Box::<CustomerUpsert>::default();
        customer.data_area_id = company;
        customer.customer_account = customer_account;
        customer.party_type = c.party_type.to_string();
        for &(target, source, last) in c.map {
            let value = if source == c.key_at {
                key.clone()
            } else if last {
                c.texts[source].take()
            } else {
                c.texts[source].clone()
            };
            CustomerUpsert::TEXT_SETTERS[target](&mut customer, value);
        }
        customer
            .customer_group_id
            .get_or_insert_with(|| self.cfg.customer_group.clone());
        customer
            .sales_currency_code
            .get_or_insert_with(|| self.cfg.sales_currency.clone());
        let digest = digest(&customer);

        // Never two Person customers with one primary email in one legal entity (see
        // `state::Requester`): a contact whose email another Person customer holds is held back.
        // A contact already sent with this very email holds its claim already (it was sent only
        // once it did): most edits take that path, with no lookup of the requester table.
        let unchanged_email = existing
            .as_deref()
            .is_some_and(|l| l.email == customer.primary_contact_email);
        let existing = if c.entity == "contact" && !unchanged_email {
            let old_email = existing.as_deref().and_then(|l| l.email.clone());
            let sent_before = existing.is_some();
            let email = customer.primary_contact_email.clone();
            if let Some(hold) = self.claim_email(
                state,
                &link_key,
                c.originating_lead,
                &customer.data_area_id,
                (old_email.as_deref(), sent_before),
                email.as_deref(),
                cause,
                out,
            ) {
                c.texts[c.key_at] = key;
                return hold;
            }
            state.customers.get_mut(&link_key)
        } else {
            existing
        };

        let mut emitted = false;
        let key_moved = existing.as_deref().is_some_and(|l| {
            integration_key.is_some_and(|k| k != l.customer_account)
                && l.last_key.as_deref() != integration_key
        });
        if key_moved {
            let new_key = integration_key.unwrap_or_default();
            let (company, customer_account) = (&customer.data_area_id, &customer.customer_account);
            out.push(self.alert(AlertKind::IntegrationKeyChanged,
                &link_key,
                cause,
                company,
                None,
                format!(
                    "The integration key of {} {} changed to {new_key}, but it is linked to Commerce customer {customer_account} \
                     in {company}; updates keep going to {customer_account}. Changing an integration key breaks the link: \
                     restore it in Sales.",
                    c.entity, c.id
                ),
            ));
            emitted = true;
        }
        let unchanged = existing
            .as_deref()
            .is_some_and(|l| l.last_sent_digest == digest);
        if !unchanged {
            // Ids only for what is sent: an unchanged edit needs no command id.
            customer.command_id =
                ids::customer_command_id(&customer.data_area_id, &customer.customer_account, cause);
            customer.caused_by = cause.to_string();
        }
        // The link is updated in place: only what changed is copied.
        let email = customer.primary_contact_email.as_deref();
        match existing {
            Some(link) => {
                link.version = c.header.version;
                link.last_sent_digest = digest;
                if link.last_key.as_deref() != integration_key {
                    link.last_key = integration_key.map(str::to_string);
                }
                if link.email.as_deref() != email {
                    link.email = email.map(str::to_string);
                }
                out.touch(StateKey::Customer(link_key));
            }
            None => {
                let link = CustomerLink {
                    version: c.header.version,
                    company: customer.data_area_id.clone(),
                    customer_account: customer.customer_account.clone(),
                    last_key: integration_key.map(str::to_string),
                    last_sent_digest: digest,
                    email: email.map(str::to_string),
                };
                out.touch(StateKey::Customer(link_key.clone()));
                state.customers.insert(link_key, link);
            }
        }
        if !unchanged {
            out.push(customer);
            emitted = true;
        }
        c.texts[c.key_at] = key;
        if emitted {
            Disposition::Emitted
        } else {
            Disposition::Skipped(SkipReason::NoMappedChange)
        }
    }
}

/// A stable 64-bit digest of the customer's fields (not of ids that vary per change). Stable across
/// builds and Rust versions, unlike `DefaultHasher`, because it is persisted in state.
///
/// Each field is fed as one word (0 when absent, else 1 + its length) and then its bytes, eight at a
/// time, zero-padded, in declaration order: no two different customers share an encoding. Each step
/// `h = (rotl(h, 5) ^ word) * K` is a bijection of `h` for a given word, so two customers that differ
/// in one word never collide. (Byte-at-a-time FNV-1a was ~8% of the contact → customer transform;
/// JSON text before it, ~7%. A state written before hashes differently once: that customer's next
/// edit is sent even if unchanged, which its upsert absorbs.)
fn digest(customer: &CustomerUpsert) -> u64 {
    struct Words(u64);
    impl Words {
        fn word(&mut self, w: u64) {
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        fn field(&mut self, value: Option<&str>) {
            let Some(v) = value else {
                return self.word(0);
            };
            self.word(1 + v.len() as u64);
            let mut chunks = v.as_bytes().chunks_exact(8);
            for c in &mut chunks {
                self.word(u64::from_le_bytes(c.try_into().expect("eight bytes")));
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                // The zero-padded little-endian word, built in a register: copying the tail into
                // an array called memcpy for every field.
                let last = rest
                    .iter()
                    .rev()
                    .fold(0u64, |w, &b| (w << 8) | u64::from(b));
                self.word(last);
            }
        }
    }
    let mut h = Words(0xcbf2_9ce4_8422_2325);
    h.field(Some(&customer.data_area_id));
    h.field(Some(&customer.customer_account));
    h.field(Some(&customer.party_type));
    customer.for_each_text(|v| h.field(v));
    h.0
}

#[cfg(test)]
mod digest_tests {
    use super::digest;
    use crate::model::CustomerUpsert;

    /// The digest as first written (each tail copied into a zero-padded array): digests are
    /// persisted, so a faster way to compute them must give the same values.
    fn digest_as_first_written(customer: &CustomerUpsert) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut word = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        let mut field = |value: Option<&str>| {
            let Some(v) = value else { return word(0) };
            word(1 + v.len() as u64);
            for chunk in v.as_bytes().chunks(8) {
                let mut padded = [0u8; 8];
                padded[..chunk.len()].copy_from_slice(chunk);
                word(u64::from_le_bytes(padded));
            }
        };
        field(Some(&customer.data_area_id));
        field(Some(&customer.customer_account));
        field(Some(&customer.party_type));
        customer.for_each_text(field);
        h
    }

    #[test]
    fn the_digest_keeps_the_values_persisted_by_earlier_builds() {
        let text = "Anastasia Lindqvist-Öberg";
        for len in 0..=text.len() {
            let Some(name) = text.get(..len) else {
                continue;
            };
            let customer = CustomerUpsert {
                data_area_id: "usmf".into(),
                customer_account: "PS-1".into(),
                party_type: "Person".into(),
                person_first_name: Some(name.into()),
                primary_contact_phone: Some(format!("+1 206 555 {len:04}")),
                ..CustomerUpsert::default()
            };
            assert_eq!(
                digest(&customer),
                digest_as_first_written(&customer),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_digest_tells_apart_absent_empty_and_shifted_values_and_ignores_ids() {
        let base = CustomerUpsert {
            data_area_id: "usmf".into(),
            customer_account: "PS-1".into(),
            party_type: "Person".into(),
            person_first_name: Some("Ana".into()),
            ..CustomerUpsert::default()
        };
        let empty = CustomerUpsert {
            person_middle_name: Some(String::new()),
            ..base.clone()
        };
        let shifted = CustomerUpsert {
            person_first_name: None,
            person_middle_name: Some("Ana".into()),
            ..base.clone()
        };
        let joined = CustomerUpsert {
            data_area_id: "usmfPS-1".into(),
            customer_account: String::new(),
            ..base.clone()
        };
        let other_ids = CustomerUpsert {
            command_id: "another".into(),
            caused_by: "another change".into(),
            ..base.clone()
        };
        let with_name = |name: &str| {
            digest(&CustomerUpsert {
                person_first_name: Some(name.into()),
                ..base.clone()
            })
        };
        let d = digest(&base);
        assert_ne!(
            with_name("Anastasia"),
            with_name("Anastasio"),
            "a change past the first eight bytes"
        );
        assert_ne!(
            with_name("Ana"),
            with_name("Ana\0"),
            "zero padding is not a value"
        );
        assert_ne!(d, digest(&empty), "absent is not empty");
        assert_ne!(d, digest(&shifted), "the same value in another field");
        assert_ne!(d, digest(&joined), "field boundaries count");
        assert_eq!(
            d,
            digest(&other_ids),
            "ids vary per change and are not digested"
        );
        assert_eq!(d, digest(&base.clone()), "deterministic");
    }
}
