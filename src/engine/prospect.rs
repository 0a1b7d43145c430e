//! Rule 1: a Commerce B2B prospect becomes a Sales lead; its edits before a decision update the lead.
//!
//! The lead gets the requester as contact fields, the organization as company fields (both through
//! `mapping.prospect_to_lead`), lead source Web, the B2B origin value that the "All commerce B2B leads"
//! view filters on, and a team owner, so it shows up in no one's "My open leads". A timeline note says
//! the integration created it. The lead id is derived from the prospect, so re-sending is an upsert.

use super::state::{Origin, Outcome, ProspectSeen, StateKey};
use super::{ids, non_empty, version_check, Disposition, Engine, Out, Rejection, SkipReason};
use crate::model::{AlertKind, Change, LeadNote, LeadUpsert, Operation, Prospect};

impl Engine {
    pub(super) fn on_prospect(
        &self,
        state: &mut super::EngineState,
        c: &Change<Prospect>,
        out: &mut Out,
    ) -> Disposition {
        let r = &c.record;
        if r.relation_type_id
            .as_deref()
            .is_some_and(|t| t != self.cfg.prospect_type)
        {
            return Disposition::Skipped(SkipReason::NotB2b);
        }
        // The requester signs in with this email and is told of a rejection by it: without it the
        // prospect cannot go through onboarding, so it never becomes a lead.
        if c.header.op != Operation::Delete && non_empty(&r.primary_email_address).is_none() {
            return Disposition::Rejected(Rejection::MissingEmail {
                prospect_id: r.prospect_id.clone(),
            });
        }

        let company = self.company(&c.header, None);
        let key = ids::lead_id(&company, &r.prospect_id);
        let cause = c.header.change_id.as_str();
        let case = state.cases.get_or_default(&key);
        if let Some(skip) =
            version_check(case.prospect.as_ref().map(|p| p.version), c.header.version)
        {
            return Disposition::Skipped(skip);
        }
        case.origin = Origin::B2b;
        case.company = company.clone();

        if c.header.op == Operation::Delete {
            match case.prospect.as_mut() {
                Some(p) => {
                    p.version = c.header.version;
                    p.deleted = true;
                }
                None => case.prospect = Some(ProspectSeen::new(c.header.version, true, r)),
            }
            return Disposition::Skipped(SkipReason::Deleted);
        }

        let decided_here = r
            .status
            .as_deref()
            .filter(|s| *s == self.cfg.approved_status || *s == self.cfg.rejected_status)
            .map(str::to_string);
        let previous = case
            .prospect
            .replace(ProspectSeen::new(c.header.version, false, r))
            .map(|p| p.record());
        let old_email = previous
            .as_ref()
            .and_then(|p| p.primary_email_address.clone());
        if let Some(status) = decided_here {
            if case.outcome.is_pending() {
                case.outcome = Outcome::DecidedInCommerce { status };
                return Disposition::Skipped(SkipReason::DecidedInCommerce);
            }
        }

        let lead = self.lead_upsert(&key, &company, r, cause, previous.is_none());
        let disposition = match &previous {
            None => {
                out.push(lead);
                out.push(self.lead_note(&key, &company, r, cause));
                Disposition::Emitted
            }
            Some(prev) => {
                let before = self.lead_upsert(&key, &company, prev, cause, false);
                if before == lead {
                    Disposition::Skipped(SkipReason::NoMappedChange)
                } else if !case.outcome.is_pending() {
                    Disposition::Skipped(SkipReason::AlreadyDecided)
                } else if case.lead_closed() {
                    Disposition::Skipped(SkipReason::LeadClosed)
                } else {
                    out.push(lead);
                    Disposition::Emitted
                }
            }
        };

        // Keep the requester index in step with the prospect's email, and warn about a second prospect
        // with the same requester: approving both would give two customers one email, and Commerce
        // sign-in fails for both.
        let new_email = r.primary_email_address.clone();
        if new_email != old_email {
            if let Some(old) = old_email.as_deref().filter(|e| !e.trim().is_empty()) {
                let old_key = ids::requester_key(&company, old);
                out.touch(StateKey::Requester(old_key.clone()));
                if let Some(requester) = state.requesters.get_mut(&old_key) {
                    requester.cases.remove(&key);
                    if requester.is_empty() {
                        state.requesters.remove(&old_key);
                    }
                }
            }
            if let Some(email) = new_email.as_deref().filter(|e| !e.trim().is_empty()) {
                let new_key = ids::requester_key(&company, email);
                out.touch(StateKey::Requester(new_key.clone()));
                let cases = &mut state.requesters.get_or_default(&new_key).cases;
                let others: Vec<String> = cases.iter().filter(|k| **k != key).cloned().collect();
                cases.insert(key.clone());
                let other_prospects: Vec<String> = others
                    .iter()
                    .filter_map(|k| {
                        state
                            .cases
                            .get(k)
                            .and_then(|c| c.prospect_id().map(str::to_string))
                    })
                    .collect();
                if !other_prospects.is_empty() {
                    out.push(self.alert(AlertKind::DuplicateRequester,
                        &key,
                        cause,
                        &company,
                        Some(&r.prospect_id),
                        format!(
                            "Prospect {} uses requester email {email}, which prospect(s) {} in legal entity {company} already use. \
                             Only one can be approved: two customers with one email cannot sign in. Reject or merge one of them.",
                            r.prospect_id,
                            other_prospects.join(", ")
                        ),
                    ));
                    return Disposition::Emitted;
                }
            }
        }
        disposition
    }

    fn lead_upsert(
        &self,
        lead_id: &str,
        company: &str,
        r: &Prospect,
        cause: &str,
        is_create: bool,
    ) -> LeadUpsert {
        let mut lead = LeadUpsert {
            command_id: ids::command_id("lead_upsert", lead_id, cause),
            caused_by: cause.to_string(),
            leadid: lead_id.to_string(),
            is_create,
            ownerid: self.cfg.owning_team.clone(),
            owneridtype: "team".to_string(),
            leadsourcecode: self.cfg.lead_source_code,
            partnersync_origin: self.cfg.origin_value,
            partnersync_prospectkey: ids::prospect_key(company, &r.prospect_id),
            ..LeadUpsert::default()
        };
        for &(target, source) in &self.maps.prospect_to_lead {
            LeadUpsert::TEXT_SETTERS[target](
                &mut lead,
                Prospect::TEXT_GETTERS[source](r).map(str::to_string),
            );
        }
        lead.subject = Some(self.cfg.lead_subject.render(|f| placeholder(r, company, f)));
        lead
    }

    fn lead_note(&self, lead_id: &str, company: &str, r: &Prospect, cause: &str) -> LeadNote {
        let annotationid = ids::note_id(lead_id);
        LeadNote {
            command_id: ids::command_id("lead_note", &annotationid, cause),
            caused_by: cause.to_string(),
            annotationid,
            objectid: lead_id.to_string(),
            objecttypecode: "lead".to_string(),
            subject: self.cfg.note_subject.clone(),
            notetext: self.cfg.note_text.render(|f| placeholder(r, company, f)),
        }
    }
}

/// Values for `{Field}` placeholders in lead templates.
fn placeholder<'a>(r: &'a Prospect, company: &'a str, field: &str) -> Option<&'a str> {
    match field {
        "ProspectId" => Some(&r.prospect_id),
        "company" => Some(company),
        other => r.text_field(other),
    }
}
