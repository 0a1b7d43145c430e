//! Mapping as configuration: field tables, value maps, templates and defaults, checked once at start.
//!
//! Like dual-write's table maps, what goes where is data in `config/`, not code. [`EngineConfig::compile`]
//! turns [`Settings`] into the form the engine uses and refuses, with every problem listed, a table that
//! names a field that does not exist on either side, a template placeholder that cannot be filled, a
//! value-map key that is not an option-set number, or an empty identity. The engine then never meets an
//! unknown name at run time.

use std::collections::BTreeMap;

use crate::model::{Account, Contact, CustomerUpsert, LeadUpsert, Prospect};
use crate::settings::{CustomerSync, Settings};

/// One problem in the configuration, with the key it concerns and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found, so a user fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

/// A checked field table: (target field, source field) pairs, in target-name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap(pub Vec<(String, String)>);

impl FieldMap {
    /// The table as (target, source) positions in the two entities' `TEXT_FIELDS` (the names were
    /// checked against those lists when the table was loaded; a name not found is left out).
    pub fn positions(&self, targets: &[&str], sources: &[&str]) -> Vec<(usize, usize)> {
        self.0
            .iter()
            .filter_map(|(t, s)| {
                let t = targets.iter().position(|n| n == t)?;
                let s = sources.iter().position(|n| n == s)?;
                Some((t, s))
            })
            .collect()
    }
}

/// A text template with `{Field}` placeholders, checked against the fields that can fill it.
///
/// So that a text reads well when an optional field is absent, a placeholder may give a fallback,
/// `{StoreName|the B2B site}`, and a part of the text may be optional, `[, submitted on
/// {StoreName}]`: it is left out unless every placeholder in it without a fallback has a value.
/// `[[` and `]]` write a bracket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field {
        name: String,
        fallback: Option<String>,
    },
    /// Rendered only when every placeholder in it without a fallback has a value.
    Optional(Vec<Piece>),
}

impl Template {
    fn parse(text: &str, known: &[&str]) -> Result<Template, String> {
        let mut top = Vec::new();
        // The optional segment being read, if any (segments do not nest).
        let mut segment: Option<Vec<Piece>> = None;
        let mut literal = String::new();
        let mut rest = text;
        fn flush(literal: &mut String, into: &mut Vec<Piece>) {
            if !literal.is_empty() {
                into.push(Piece::Literal(std::mem::take(literal)));
            }
        }
        while let Some(c) = rest.chars().next() {
            let in_segment = segment.is_some();
            let pieces = segment.as_mut().unwrap_or(&mut top);
            if rest.starts_with("[[") || rest.starts_with("]]") {
                literal.push(c);
                rest = &rest[2..];
                continue;
            }
            match c {
                '[' => {
                    if in_segment {
                        return Err(format!(
                            "optional segments do not nest: the '[' at \"{rest}\" is inside another; write [[ for a bracket"
                        ));
                    }
                    flush(&mut literal, pieces);
                    segment = Some(Vec::new());
                    rest = &rest[1..];
                }
                ']' => {
                    let Some(mut inner) = segment.take() else {
                        return Err(format!(
                            "the ']' at \"{rest}\" closes no optional segment; write ]] for a bracket"
                        ));
                    };
                    flush(&mut literal, &mut inner);
                    top.push(Piece::Optional(inner));
                    rest = &rest[1..];
                }
                '{' => {
                    flush(&mut literal, pieces);
                    let close = rest.find('}').ok_or_else(|| {
                        format!("the '{{' at \"{rest}\" is never closed; write {{Field}}")
                    })?;
                    let inside = &rest[1..close];
                    let (name, fallback) = match inside.split_once('|') {
                        Some((name, fallback)) => (name, Some(fallback.to_string())),
                        None => (inside, None),
                    };
                    if !known.contains(&name) {
                        return Err(format!(
                            "unknown placeholder {{{name}}}; use one of {}",
                            known
                                .iter()
                                .map(|k| format!("{{{k}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    pieces.push(Piece::Field {
                        name: name.to_string(),
                        fallback,
                    });
                    rest = &rest[close + 1..];
                }
                _ => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if segment.is_some() {
            return Err("an optional segment '[' is never closed with ']'".into());
        }
        flush(&mut literal, &mut top);
        Ok(Template(top))
    }

    /// Fills the template; `value` answers each placeholder (a blank value counts as none: the
    /// placeholder's fallback is written, or nothing).
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> String {
        let value = |name: &str| value(name).filter(|v| !v.trim().is_empty());
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Optional(inner) => {
                    let complete = inner.iter().all(|p| match p {
                        Piece::Field {
                            name,
                            fallback: None,
                        } => value(name).is_some(),
                        _ => true,
                    });
                    if complete {
                        render_pieces(inner, &value, &mut out);
                    }
                }
                other => render_pieces(std::slice::from_ref(other), &value, &mut out),
            }
        }
        out
    }

    /// The placeholders that can render empty: outside every optional segment, without a
    /// fallback, and not in `always` (fields every accepted prospect has).
    fn bare_placeholders<'t>(&'t self, always: &[&str]) -> Vec<&'t str> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Piece::Field {
                    name,
                    fallback: None,
                } if !always.contains(&name.as_str()) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn render_pieces<'a>(pieces: &[Piece], value: &impl Fn(&str) -> Option<&'a str>, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Literal(s) => out.push_str(s),
            Piece::Field { name, fallback } => match value(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(fallback.as_deref().unwrap_or("")),
            },
            Piece::Optional(_) => {}
        }
    }
}

/// The engine's configuration: validated, with names resolved.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub sales_user: String,
    pub commerce_user: String,
    pub default_company: String,
    pub customer_group: String,
    pub sales_currency: String,
    pub customer_account_prefix: String,
    pub hierarchy_id_prefix: String,
    pub prospect_type: String,
    pub owning_team: String,
    pub lead_source_code: i32,
    pub origin_value: i32,
    pub lead_subject: Template,
    pub note_subject: String,
    pub note_text: Template,
    pub customer_sync: CustomerSync,
    pub person_party_type: String,
    pub organization_party_type: String,
    pub approved_status: String,
    pub rejected_status: String,
    pub hierarchy_purpose: String,
    pub admin_role: String,
    pub rejection_notification: String,
    pub reapprove_after_rejection: bool,
    pub opportunity_grace_ms: i64,
    pub lead_carries_qualifying_opportunity: bool,
    pub park_timeout_ms: i64,
    pub max_parked_per_case: usize,
    pub prospect_to_lead: FieldMap,
    pub contact_to_person: FieldMap,
    pub account_to_organization: FieldMap,
    pub lead_disqualified_reason: BTreeMap<i32, String>,
    pub opportunity_lost_reason: BTreeMap<i32, String>,
    /// What is valid but likely wrong (`check-config` prints it; nothing refuses it).
    pub warnings: Vec<ConfigProblem>,
}

/// Placeholders a prospect template may use besides the prospect's text fields.
const PROSPECT_EXTRA_PLACEHOLDERS: &[&str] = &["ProspectId", "company"];

/// Placeholders every prospect that becomes a lead fills: its id, its legal entity, and its
/// requester email (a prospect without one is refused).
const PROSPECT_ALWAYS_FILLED: &[&str] = &["ProspectId", "company", "PrimaryEmailAddress"];

/// A warning for each placeholder of `template` (at `key`) that renders empty when a prospect
/// lacks that optional field.
fn bare_placeholder_warnings(key: &str, template: &Template) -> Vec<ConfigProblem> {
    template
        .bare_placeholders(PROSPECT_ALWAYS_FILLED)
        .into_iter()
        .map(|name| ConfigProblem {
            key: key.to_string(),
            message: format!(
                "{{{name}}} is an optional prospect field: a prospect without it leaves a gap in the text. \
                 Put it in an optional segment, [ … {{{name}}} … ], or give it a fallback, {{{name}|…}}"
            ),
        })
        .collect()
}

fn field_map(
    problems: &mut Vec<ConfigProblem>,
    table: &str,
    entries: &BTreeMap<String, String>,
    targets: &[&str],
    sources: &[&str],
) -> FieldMap {
    let mut out = Vec::new();
    for (target, source) in entries {
        let key = format!("mapping.{table}.{target}");
        if !targets.contains(&target.as_str()) {
            problems.push(ConfigProblem {
                key,
                message: format!(
                    "\"{target}\" is not a field of the target; use one of {}",
                    targets.join(", ")
                ),
            });
            continue;
        }
        if source.is_empty() {
            continue; // explicitly unmapped
        }
        if !sources.contains(&source.as_str()) {
            problems.push(ConfigProblem {
                key,
                message: format!(
                    "\"{source}\" is not a field of the source; use one of {} (or \"\" to leave {target} unmapped)",
                    sources.join(", ")
                ),
            });
            continue;
        }
        out.push((target.clone(), source.clone()));
    }
    FieldMap(out)
}

fn value_map(
    problems: &mut Vec<ConfigProblem>,
    name: &str,
    entries: &BTreeMap<String, String>,
) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        match k.parse::<i32>() {
            Ok(n) => {
                out.insert(n, v.clone());
            }
            Err(_) => problems.push(ConfigProblem {
                key: format!("value_maps.{name}.{k}"),
                message: "the key must be an option-set number such as \"4\"".to_string(),
            }),
        }
    }
    out
}

fn non_empty(problems: &mut Vec<ConfigProblem>, key: &str, value: &str, what: &str) {
    if value.trim().is_empty() {
        problems.push(ConfigProblem {
            key: key.to_string(),
            message: format!("must not be empty: set {what}"),
        });
    }
}

impl EngineConfig {
    /// The built-in defaults, compiled. They are valid (a test checks it), so this cannot fail.
    pub fn defaults() -> EngineConfig {
        EngineConfig::compile(&Settings::defaults()).expect("default configuration compiles")
    }

    /// Checks `settings` and resolves it, or lists every problem found.
    pub fn compile(s: &Settings) -> Result<EngineConfig, ConfigProblems> {
        let mut p = Vec::new();
        non_empty(
            &mut p,
            "identity.sales_user",
            &s.identity.sales_user,
            "the Dataverse systemuser id the connector writes as",
        );
        non_empty(
            &mut p,
            "identity.commerce_user",
            &s.identity.commerce_user,
            "the Commerce user the connector writes as",
        );
        non_empty(
            &mut p,
            "defaults.company",
            &s.defaults.company,
            "the default legal entity (dataAreaId)",
        );
        non_empty(
            &mut p,
            "lead.owning_team",
            &s.lead.owning_team,
            "the Dataverse team id that owns B2B leads",
        );
        non_empty(
            &mut p,
            "lead.prospect_type",
            &s.lead.prospect_type,
            "the ProspectRelationTypeId of B2B prospects",
        );
        let prefix_len = s.defaults.customer_account_prefix.chars().count();
        if prefix_len > 8 {
            p.push(ConfigProblem {
                key: "defaults.customer_account_prefix".into(),
                message: format!(
                    "is {prefix_len} characters; at most 8 fit, because CustomerAccount holds 20 and the derived part takes 12"
                ),
            });
        }
        if s.parking.timeout_seconds == 0 {
            p.push(ConfigProblem {
                key: "parking.timeout_seconds".into(),
                message: "must be at least 1; events that wait for a missing record need time for it to arrive".into(),
            });
        }
        if s.parking.max_per_case == 0 {
            p.push(ConfigProblem {
                key: "parking.max_per_case".into(),
                message: "must be at least 1".into(),
            });
        }
        let prospect_placeholders: Vec<&str> = Prospect::TEXT_FIELDS
            .iter()
            .chain(PROSPECT_EXTRA_PLACEHOLDERS)
            .copied()
            .collect();
        let mut template =
            |key: &str, text: &str| match Template::parse(text, &prospect_placeholders) {
                Ok(t) => t,
                Err(message) => {
                    p.push(ConfigProblem {
                        key: key.to_string(),
                        message,
                    });
                    Template(Vec::new())
                }
            };
        let lead_subject = template("lead.subject", &s.lead.subject);
        let note_text = template("lead.note_text", &s.lead.note_text);

        let prospect_to_lead = field_map(
            &mut p,
            "prospect_to_lead",
            &s.mapping.prospect_to_lead,
            LeadUpsert::TEXT_FIELDS,
            Prospect::TEXT_FIELDS,
        );
        let contact_to_person = field_map(
            &mut p,
            "contact_to_person",
            &s.mapping.contact_to_person,
            CustomerUpsert::TEXT_FIELDS,
            Contact::TEXT_FIELDS,
        );
        let account_to_organization = field_map(
            &mut p,
            "account_to_organization",
            &s.mapping.account_to_organization,
            CustomerUpsert::TEXT_FIELDS,
            Account::TEXT_FIELDS,
        );
        let lead_disqualified_reason = value_map(
            &mut p,
            "lead_disqualified_reason",
            &s.value_maps.lead_disqualified_reason,
        );
        let opportunity_lost_reason = value_map(
            &mut p,
            "opportunity_lost_reason",
            &s.value_maps.opportunity_lost_reason,
        );

        if !p.is_empty() {
            return Err(ConfigProblems(p));
        }
        let warnings = [
            bare_placeholder_warnings("lead.subject", &lead_subject),
            bare_placeholder_warnings("lead.note_text", &note_text),
        ]
        .concat();
        Ok(EngineConfig {
            warnings,
            sales_user: s.identity.sales_user.clone(),
            commerce_user: s.identity.commerce_user.clone(),
            default_company: s.defaults.company.to_lowercase(),
            customer_group: s.defaults.customer_group.clone(),
            sales_currency: s.defaults.sales_currency.clone(),
            customer_account_prefix: s.defaults.customer_account_prefix.clone(),
            hierarchy_id_prefix: s.defaults.hierarchy_id_prefix.clone(),
            prospect_type: s.lead.prospect_type.clone(),
            owning_team: s.lead.owning_team.clone(),
            lead_source_code: s.lead.source_code,
            origin_value: s.lead.origin_value,
            lead_subject,
            note_subject: s.lead.note_subject.clone(),
            note_text,
            customer_sync: s.customers.sync,
            person_party_type: s.customers.person_party_type.clone(),
            organization_party_type: s.customers.organization_party_type.clone(),
            approved_status: s.decisions.approved_status.clone(),
            rejected_status: s.decisions.rejected_status.clone(),
            hierarchy_purpose: s.decisions.hierarchy_purpose.clone(),
            admin_role: s.decisions.admin_role.clone(),
            rejection_notification: s.decisions.rejection_notification.clone(),
            reapprove_after_rejection: s.decisions.reapprove_after_rejection,
            opportunity_grace_ms: i64::try_from(
                s.decisions.opportunity_grace_seconds.saturating_mul(1000),
            )
            .unwrap_or(i64::MAX),
            lead_carries_qualifying_opportunity: s.decisions.lead_carries_qualifying_opportunity,
            park_timeout_ms: i64::try_from(s.parking.timeout_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            max_parked_per_case: s.parking.max_per_case,
            prospect_to_lead,
            contact_to_person,
            account_to_organization,
            lead_disqualified_reason,
            opportunity_lost_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configuration_compiles() {
        let cfg = EngineConfig::compile(&Settings::defaults()).unwrap();
        assert_eq!(cfg.lead_source_code, 8, "B2B leads come from the Web");
        assert!(cfg
            .contact_to_person
            .0
            .contains(&("PersonFirstName".into(), "firstname".into())));
    }

    #[test]
    fn unknown_fields_and_placeholders_are_all_reported_with_their_keys() {
        let mut s = Settings::defaults();
        s.mapping
            .contact_to_person
            .insert("PersonFirstName".into(), "first_name".into());
        s.mapping
            .account_to_organization
            .insert("CreditLimitt".into(), "creditlimit".into());
        s.lead.subject = "Request from {Company}".into();
        s.value_maps
            .opportunity_lost_reason
            .insert("Out-Sold".into(), "Out-Sold".into());
        let problems = EngineConfig::compile(&s).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lead.subject",
                "mapping.contact_to_person.PersonFirstName",
                "mapping.account_to_organization.CreditLimitt",
                "value_maps.opportunity_lost_reason.Out-Sold",
            ]
        );
        assert!(
            problems[0].message.contains("{ProspectName}"),
            "{}",
            problems[0].message
        );
        assert!(problems[1]
            .message
            .contains("\"first_name\" is not a field of the source"));
    }

    #[test]
    fn an_empty_source_unmaps_a_field() {
        let mut s = Settings::defaults();
        s.mapping
            .contact_to_person
            .insert("PersonMiddleName".into(), String::new());
        let cfg = EngineConfig::compile(&s).unwrap();
        assert!(!cfg
            .contact_to_person
            .0
            .iter()
            .any(|(t, _)| t == "PersonMiddleName"));
    }

    #[test]
    fn templates_render_fields_and_leave_unset_ones_empty() {
        let t = Template::parse(
            "Request {ProspectId} from {ProspectName}.",
            &["ProspectId", "ProspectName"],
        )
        .unwrap();
        let rendered = t.render(|f| if f == "ProspectId" { Some("P-1") } else { None });
        assert_eq!(rendered, "Request P-1 from .");
    }

    #[test]
    fn optional_segments_and_fallbacks_read_well_when_a_field_is_absent() {
        let fields = &["ProspectId", "StoreName", "ProspectName"];
        let t = Template::parse(
            "Prospect {ProspectId}[, submitted on {StoreName}]. From {ProspectName|an unnamed organization}. [[{ProspectId}]]",
            fields,
        )
        .unwrap();
        let with = |store: Option<&'static str>, name: Option<&'static str>| {
            t.render(move |f| match f {
                "ProspectId" => Some("P-1"),
                "StoreName" => store,
                _ => name,
            })
        };
        assert_eq!(
            with(Some("Fabrikam B2B"), Some("Contoso")),
            "Prospect P-1, submitted on Fabrikam B2B. From Contoso. [P-1]"
        );
        assert_eq!(
            with(None, None),
            "Prospect P-1. From an unnamed organization. [P-1]"
        );
        assert_eq!(
            with(Some("  "), Some("")),
            "Prospect P-1. From an unnamed organization. [P-1]",
            "a blank value is no value"
        );
        assert_eq!(t.bare_placeholders(&["ProspectId"]), Vec::<&str>::new());
        let bare = Template::parse("On {StoreName} by {ProspectId}", fields).unwrap();
        assert_eq!(bare.bare_placeholders(&["ProspectId"]), vec!["StoreName"]);
    }

    #[test]
    fn brackets_that_do_not_pair_are_problems() {
        for (text, says) in [
            ("a [b [c] d]", "do not nest"),
            ("a ] b", "closes no optional segment"),
            ("a [b", "never closed"),
        ] {
            let e = Template::parse(text, &["x"]).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_default_templates_have_no_gap_for_an_absent_field() {
        assert_eq!(EngineConfig::defaults().warnings, vec![]);
    }

    #[test]
    fn an_unclosed_placeholder_is_a_problem() {
        assert!(Template::parse("Hello {name", &["name"])
            .unwrap_err()
            .contains("never closed"));
    }
}
