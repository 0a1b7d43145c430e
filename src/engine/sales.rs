//! Rules 3 and 4: Sales outcomes decide the prospect in Commerce.
//!
//! - Opportunity won → prospect Approved and the customer hierarchy (organization customer on top, the
//!   requester's Person customer as Admin, purpose "B2B organization").
//! - Lead disqualified (statuscode 4–7) or opportunity lost (4 Canceled, 5 Out-Sold) → prospect
//!   Rejected and one rejection email.
//!
//! A prospect is decided once. What happens after that is domain.md §5's list: a second win or a late
//! loss is ignored (several opportunities per lead: the first win wins); a win after a rejection raises
//! an alert, because the rejection email cannot be unsent (unless `reapprove_after_rejection`); a won
//! opportunity reopened raises an alert, because approval created customers that are never deleted.
//! A loss while another opportunity of the lead is still open waits for that one.

use super::state::{Awaiting, CaseState, Origin, Outcome, ProspectSeen, Seen};
use super::{
    check_state, ids, non_empty, version_check, Disposition, Engine, EngineState, Out, ParkReason,
    SkipReason,
};
use crate::model::{
    AlertKind, Change, ChangeEvent, CustomerHierarchyCreate, Lead, NotificationRequest, Operation,
    Opportunity, ProspectStatusUpdate,
};

const LEAD_STATES: &str = "0 Open, 1 Qualified, 2 Disqualified";
const OPPORTUNITY_STATES: &str = "0 Open, 1 Won, 2 Lost";

impl Engine {
    pub(super) fn on_lead(
        &self,
        state: &mut EngineState,
        c: &Change<Lead>,
        out: &mut Out,
    ) -> Disposition {
        let r = &c.record;
        let key = r.leadid.as_str();
        let cause = c.header.change_id.as_str();
        let case = state.cases.get_or_default(key);
        match case.origin {
            Origin::B2b => {}
            Origin::Foreign => return Disposition::Skipped(SkipReason::NotB2b),
            Origin::Unknown if non_empty(&r.partnersync_prospectkey).is_some() => {
                return Disposition::Parked(ParkReason::ProspectNotSeen)
            }
            Origin::Unknown => {
                // A lead people created in Sales. Remember that, so its contacts and opportunities are
                // recognised as not ours instead of waiting for a prospect that will never come.
                case.origin = Origin::Foreign;
                return Disposition::Skipped(SkipReason::NotB2b);
            }
        }
        if let Some(skip) = version_check(case.lead.map(|l| l.version), c.header.version) {
            return Disposition::Skipped(skip);
        }
        if let Err(rejected) = check_state("lead", "statecode", r.statecode, 2, LEAD_STATES) {
            return rejected;
        }
        let previous = case.lead;
        let deleted = c.header.op == Operation::Delete;
        case.lead = Some(Seen {
            version: c.header.version,
            statecode: r.statecode,
            deleted,
        });
        let company = case.company.clone();
        let prospect = case.prospect_id().map(str::to_string);

        if deleted {
            if !case.outcome.is_pending() {
                return Disposition::Skipped(SkipReason::Deleted);
            }
            out.push(self.alert(AlertKind::LeadDeletedWhilePending,
                key,
                cause,
                &company,
                prospect.as_deref(),
                format!(
                    "Lead {key} of prospect {} was deleted before a decision; the prospect stays pending in Commerce. \
                     Approve or reject it in Commerce, or re-send the prospect to create a new lead.",
                    prospect.as_deref().unwrap_or("?")
                ),
            ));
            return Disposition::Emitted;
        }
        if r.statecode != 1 {
            case.awaiting_opportunity = None;
        }
        match r.statecode {
            1 => {
                let newly_qualified = previous.is_none_or(|p| p.statecode != 1);
                let without_opportunity = newly_qualified
                    && non_empty(&r.qualifyingopportunityid).is_none()
                    && case.opportunities.is_empty();
                // Topics have no order between them: the opportunity may still come. Only a lead
                // change known to carry qualifyingopportunityid says it will not.
                if without_opportunity && !self.cfg.lead_carries_qualifying_opportunity {
                    case.awaiting_opportunity = Some(Awaiting {
                        since_ms: out.now_ms,
                        change_id: cause.to_string(),
                    });
                    return Disposition::Skipped(SkipReason::NothingToSend);
                }
                if without_opportunity {
                    out.push(self.alert(AlertKind::QualifiedWithoutOpportunity,
                        key,
                        cause,
                        &company,
                        prospect.as_deref(),
                        format!(
                            "Lead {key} was qualified without an opportunity, so no win or loss will decide prospect {}. \
                             Create an opportunity from the lead and close it, or decide the prospect in Commerce.",
                            prospect.as_deref().unwrap_or("?")
                        ),
                    ));
                    return Disposition::Emitted;
                }
                Disposition::Skipped(SkipReason::NothingToSend)
            }
            2 if case.outcome.is_pending() => {
                let label = self
                    .cfg
                    .lead_disqualified_reason
                    .get(&r.statuscode)
                    .cloned();
                let reason = format!(
                    "Lead disqualified: {}",
                    label.unwrap_or_else(|| format!("statuscode {}", r.statuscode))
                );
                self.reject(key, case, reason, cause, out);
                Disposition::Emitted
            }
            2 => Disposition::Skipped(SkipReason::AlreadyDecided),
            _ => Disposition::Skipped(SkipReason::NothingToSend),
        }
    }

    pub(super) fn on_opportunity(
        &self,
        state: &mut EngineState,
        c: &Change<Opportunity>,
        out: &mut Out,
    ) -> Disposition {
        let r = &c.record;
        let Some(key) = non_empty(&r.originatingleadid) else {
            return Disposition::Skipped(SkipReason::NotB2b);
        };
        let cause = c.header.change_id.as_str();
        let case = state.cases.get_or_default(key);
        match case.origin {
            Origin::B2b => {}
            Origin::Foreign => return Disposition::Skipped(SkipReason::NotB2b),
            Origin::Unknown => return Disposition::Parked(ParkReason::LeadNotSeen),
        }
        // The qualification's opportunity has come: no alert is due.
        case.awaiting_opportunity = None;
        let id = r.opportunityid.as_str();
        let previous = case.opportunities.get(id).copied();
        if let Some(skip) = version_check(previous.map(|o| o.version), c.header.version) {
            return Disposition::Skipped(skip);
        }
        if let Err(rejected) = check_state(
            "opportunity",
            "statecode",
            r.statecode,
            2,
            OPPORTUNITY_STATES,
        ) {
            return rejected;
        }
        let seen = Seen {
            version: c.header.version,
            statecode: r.statecode,
            deleted: c.header.op == Operation::Delete,
        };
        if seen.deleted {
            case.opportunities.insert(id.to_string(), seen);
            return Disposition::Skipped(SkipReason::Deleted);
        }
        let company = case.company.clone();
        let prospect = case.prospect_id().map(str::to_string);
        match r.statecode {
            1 => {
                let outcome = case.outcome.clone();
                let decision = match &outcome {
                    Outcome::Pending => self.approve(state, key, id, cause, out),
                    Outcome::Rejected { .. } if self.cfg.reapprove_after_rejection => {
                        self.approve(state, key, id, cause, out)
                    }
                    Outcome::Rejected { reason } => {
                        let message = format!(
                            "Opportunity {id} was won, but prospect {} was already rejected ({reason}) and the rejection email sent. \
                             Nothing was changed in Commerce: approve the prospect there if this partner is accepted.",
                            prospect.as_deref().unwrap_or("?")
                        );
                        out.push(self.alert(
                            AlertKind::WonAfterRejection,
                            id,
                            cause,
                            &company,
                            prospect.as_deref(),
                            message,
                        ));
                        Disposition::Emitted
                    }
                    _ => Disposition::Skipped(SkipReason::AlreadyDecided),
                };
                if !matches!(decision, Disposition::Parked(_)) {
                    if let Some(case) = state.cases.get_mut(key) {
                        case.opportunities.insert(id.to_string(), seen);
                    }
                }
                decision
            }
            2 => {
                case.opportunities.insert(id.to_string(), seen);
                if !case.outcome.is_pending() {
                    return Disposition::Skipped(SkipReason::AlreadyDecided);
                }
                let other_open = case
                    .opportunities
                    .iter()
                    .any(|(o, s)| o != id && s.statecode == 0 && !s.deleted);
                let win_waiting = case.parked.iter().any(
                    |p| matches!(p.event.as_ref(), ChangeEvent::Opportunity(o) if o.record.statecode == 1),
                );
                if other_open || win_waiting {
                    return Disposition::Skipped(SkipReason::OtherOpportunityOpen);
                }
                let label = self.cfg.opportunity_lost_reason.get(&r.statuscode).cloned();
                let reason = format!(
                    "Opportunity lost: {}",
                    label.unwrap_or_else(|| format!("statuscode {}", r.statuscode))
                );
                self.reject(key, case, reason, cause, out);
                Disposition::Emitted
            }
            _ => {
                case.opportunities.insert(id.to_string(), seen);
                let reopened_winner = previous.is_some_and(|p| p.statecode == 1)
                    && matches!(&case.outcome, Outcome::Approved { opportunity } if opportunity == id);
                if !reopened_winner {
                    return Disposition::Skipped(SkipReason::NothingToSend);
                }
                out.push(self.alert(AlertKind::ReopenedAfterWon,
                    id,
                    cause,
                    &company,
                    prospect.as_deref(),
                    format!(
                        "Opportunity {id} was reopened after it won, but prospect {} stays approved: its customers and hierarchy \
                         exist in Commerce and are never deleted. Block the customers in Commerce if the partner is no longer accepted.",
                        prospect.as_deref().unwrap_or("?")
                    ),
                ));
                Disposition::Emitted
            }
        }
    }

    /// Approves the case's prospect, or says why not yet.
    fn approve(
        &self,
        state: &mut EngineState,
        key: &str,
        opportunity: &str,
        cause: &str,
        out: &mut Out,
    ) -> Disposition {
        let Some(case) = state.cases.get(key) else {
            return Disposition::Parked(ParkReason::LeadNotSeen);
        };
        let Some(prospect) = case.prospect.as_ref() else {
            return Disposition::Parked(ParkReason::ProspectNotSeen);
        };
        let company = case.company.clone();
        let prospect_id = prospect.prospect_id().to_string();
        if prospect.deleted {
            out.push(self.alert(AlertKind::ProspectDeleted,
                key,
                cause,
                &company,
                Some(&prospect_id),
                format!("Opportunity {opportunity} was won, but prospect {prospect_id} was deleted in Commerce, so it cannot be approved. Re-create the prospect or onboard the partner in Commerce."),
            ));
            return Disposition::Emitted;
        }
        // The requester's contact was held back: its email is another Person customer's.
        if let Some(email) = case.email_taken.clone() {
            let contact = case.contact.clone().unwrap_or_default();
            let holder = state
                .requesters
                .get(&ids::requester_key(&company, &email))
                .and_then(|r| r.person.clone())
                .unwrap_or_default();
            let holder = holder.strip_prefix("contact/").unwrap_or(&holder);
            let reason = format!("requester email {email} is already the email of the Person customer of contact {holder}");
            out.push(self.alert(
                AlertKind::EmailTaken,
                key,
                cause,
                &company,
                Some(&prospect_id),
                format!(
                    "Opportunity {opportunity} was won, but prospect {prospect_id} was not approved: its requester, contact {contact}, \
                     was not sent to Commerce because {reason} in legal entity {company}, and two customers with one email cannot \
                     sign in. Decide the prospect in Commerce: add that customer to the partner's hierarchy, or approve once the \
                     contact has an email of its own."
                ),
            ));
            if let Some(case) = state.cases.get_mut(key) {
                case.outcome = Outcome::Held { reason };
            }
            return Disposition::Emitted;
        }
        // Each link read on its own: a lookup may read a cold one back, so it borrows the map whole.
        let mut link = |entity: &str, id: &Option<String>| {
            id.as_ref().and_then(|id| {
                state
                    .customers
                    .get(&format!("{entity}/{id}"))
                    .map(|l| l.customer_account.clone())
            })
        };
        let (Some(admin_account), Some(org_account)) = (
            link("contact", &case.contact),
            link("account", &case.account),
        ) else {
            return Disposition::Parked(ParkReason::CustomersNotSeen);
        };
        let record = prospect.record();
        let organization_name = record.prospect_name.clone().unwrap_or_default();

        // The same requester already approved under another prospect: a second Person customer with the
        // same email would break sign-in for both, so hold this one for a person to decide.
        let email = record.primary_email_address.as_deref().unwrap_or("");
        let approved_twin = state
            .requesters
            .get(&ids::requester_key(&company, email))
            .and_then(|requester| {
                requester.cases.iter().filter(|k| *k != key).find_map(|k| {
                    let other = state.cases.get(k)?;
                    matches!(other.outcome, Outcome::Approved { .. })
                        .then(|| other.prospect_id().unwrap_or("?").to_string())
                })
            });
        if let Some(twin) = approved_twin.filter(|_| !email.is_empty()) {
            let reason =
                format!("requester {email} is already the admin of approved prospect {twin}");
            out.push(self.alert(AlertKind::DuplicateRequester,
                key,
                cause,
                &company,
                Some(&prospect_id),
                format!(
                    "Opportunity {opportunity} was won, but prospect {prospect_id} was not approved: {reason} in legal entity {company}, \
                     and two customers with one email cannot sign in. Add the requester to the existing hierarchy in Commerce instead."
                ),
            ));
            if let Some(case) = state.cases.get_mut(key) {
                case.outcome = Outcome::Held { reason };
            }
            return Disposition::Emitted;
        }

        out.push(ProspectStatusUpdate {
            command_id: ids::command_id("prospect_status", key, &self.cfg.approved_status),
            caused_by: cause.to_string(),
            data_area_id: company.clone(),
            prospect_id: prospect_id.clone(),
            status: self.cfg.approved_status.clone(),
            reason: format!("Opportunity won: {opportunity}"),
        });
        out.push(CustomerHierarchyCreate {
            command_id: ids::command_id("customer_hierarchy", key, "approve"),
            caused_by: cause.to_string(),
            data_area_id: company,
            hierarchy_id: ids::hierarchy_id(&self.cfg.hierarchy_id_prefix, key),
            name: organization_name,
            purpose: self.cfg.hierarchy_purpose.clone(),
            organization_customer_account: org_account,
            admin_customer_account: admin_account,
            admin_role: self.cfg.admin_role.clone(),
            prospect_id,
        });
        if let Some(case) = state.cases.get_mut(key) {
            case.outcome = Outcome::Approved {
                opportunity: opportunity.to_string(),
            };
        }
        Disposition::Emitted
    }

    /// Rejects the case's prospect and requests the rejection email, at most once per prospect.
    fn reject(&self, key: &str, case: &mut CaseState, reason: String, cause: &str, out: &mut Out) {
        let record = case
            .prospect
            .as_ref()
            .map(ProspectSeen::record)
            .unwrap_or_default();
        out.push(ProspectStatusUpdate {
            command_id: ids::command_id("prospect_status", key, &self.cfg.rejected_status),
            caused_by: cause.to_string(),
            data_area_id: case.company.clone(),
            prospect_id: record.prospect_id.clone(),
            status: self.cfg.rejected_status.clone(),
            reason: reason.clone(),
        });
        let email = record.primary_email_address.clone().unwrap_or_default();
        if non_empty(&record.primary_email_address).is_none() {
            // Never a notification without a recipient (a prospect without an email is refused at
            // intake; this one came from state an earlier build wrote).
            if !case.rejection_email_sent {
                out.push(self.alert(
                    AlertKind::RejectionEmailNotSent,
                    key,
                    cause,
                    &case.company,
                    Some(&record.prospect_id),
                    format!(
                        "Prospect {} was rejected ({reason}), but it has no PrimaryEmailAddress, so no rejection email was \
                         requested. Tell the requester another way.",
                        record.prospect_id
                    ),
                ));
                case.rejection_email_sent = true;
            }
        } else if !case.rejection_email_sent {
            out.push(NotificationRequest {
                command_id: ids::command_id("rejection_email", key, "once"),
                caused_by: cause.to_string(),
                data_area_id: case.company.clone(),
                notification_type: self.cfg.rejection_notification.clone(),
                prospect_id: record.prospect_id.clone(),
                email,
                firstname: record.contact_first_name.unwrap_or_default(),
                lastname: record.contact_last_name.unwrap_or_default(),
                company: record.prospect_name.unwrap_or_default(),
            });
            case.rejection_email_sent = true;
        }
        case.outcome = Outcome::Rejected { reason };
    }
}
