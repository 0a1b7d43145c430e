//! Runs a scenario through the real engine and compares each step with its expectation.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::{Mapping, Value};

use super::time::parse_rfc3339;
use super::{Scenario, ScenarioError, Step};
use crate::engine::{ids, Disposition, Engine, EngineState};
use crate::mapping::EngineConfig;
use crate::model::{
    Account, AlertKind, Change, ChangeEvent, ChangeHeader, CommandKind, Contact, Lead, Operation,
    Opportunity, Prospect,
};
use crate::settings::Settings;

/// The person who changes records in scenarios unless a step says otherwise: not the connector.
const PERSON_SALES: &str = "person:sales-rep";
const PERSON_COMMERCE: &str = "person:commerce-clerk";
/// Steps without `at` follow the previous one by a minute.
const STEP_GAP_MS: i64 = 60_000;

/// One step that did not do what the scenario says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub step: usize,
    pub what: String,
    pub message: String,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} ({}): {}", self.step, self.what, self.message)
    }
}

/// What one step produced, in full: what `test-scenarios --show` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTrace {
    pub step: usize,
    /// The event's kind and id (`prospect PR-1`), or `tick`.
    pub what: String,
    /// As scenario files write it (`emitted`, `skipped: echo`, …); none for a tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A rejected event's sentence, as its dead letter carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a tick: the park reasons of the events that expired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<String>,
    /// Every command, whole, as `{kind: {fields}}`.
    pub commands: Vec<serde_json::Value>,
}

/// A scenario's run: the steps that did not do what it says (none when it passes), and what
/// every step produced.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub failures: Vec<StepFailure>,
    pub steps: Vec<StepTrace>,
}

/// Runs `scenario` with settings = defaults + `base_layers` + the scenario's own `settings`.
pub fn run_scenario(scenario: &Scenario, base_layers: &[&str]) -> Result<Run, ScenarioError> {
    let invalid = |reason: String| ScenarioError::Invalid {
        path: scenario.path.display().to_string(),
        reason,
    };
    let mut layers: Vec<&str> = base_layers.to_vec();
    if let Some(extra) = &scenario.settings {
        layers.push(extra);
    }
    let settings = Settings::from_layers(&layers, false).map_err(|e| invalid(e.to_string()))?;
    let engine = Engine::new(EngineConfig::compile(&settings).map_err(|e| invalid(e.to_string()))?);
    let stem = scenario
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());

    let mut state = EngineState::default();
    let mut now = parse_rfc3339("2026-01-05T09:00:00Z").expect("valid constant");
    let mut failures = Vec::new();
    let mut steps = Vec::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        let number = index + 1;
        let at = step.at.as_deref().or(step.tick.as_deref());
        now = match at {
            Some(text) => {
                parse_rfc3339(text).map_err(|e| invalid(format!("step {number}: {e}")))?
            }
            None => now + STEP_GAP_MS,
        };
        if step.tick.is_some() {
            if step.expect.outcome.is_some() || step.expect.reason.is_some() {
                return Err(invalid(format!(
                    "step {number}: a tick has no outcome or reason; expect expired: [...] and the commands that came due"
                )));
            }
            let expired: Vec<String> = engine
                .expire(&mut state, now)
                .iter()
                .map(|e| e.reason.as_str().to_string())
                .collect();
            let due = engine.overdue(&mut state, now);
            let trace = StepTrace {
                step: number,
                what: "tick".into(),
                outcome: None,
                reason: None,
                expired,
                commands: due
                    .commands
                    .iter()
                    .map(command_json)
                    .collect::<Result<_, _>>()
                    .map_err(invalid)?,
            };
            let mut problems = Vec::new();
            if trace.expired != step.expect.expired {
                problems.push(format!(
                    "expected expired {:?}, got {:?}",
                    step.expect.expired, trace.expired
                ));
            }
            problems
                .extend(compare_commands(step, &trace.commands, engine.config()).map_err(invalid)?);
            if !problems.is_empty() {
                failures.push(StepFailure {
                    step: number,
                    what: "tick".into(),
                    message: problems.join("\n"),
                });
            }
            steps.push(trace);
            continue;
        }
        let event = build_event(step, number, now, &stem, engine.config())
            .map_err(|e| invalid(format!("step {number}: {e}")))?;
        let what = format!("{} {}", event.kind().as_str(), event.entity_id());
        let decision = engine.apply(&mut state, event, now);
        let trace = StepTrace {
            step: number,
            what: what.clone(),
            outcome: Some(outcome_text(&decision.disposition)),
            reason: match &decision.disposition {
                Disposition::Rejected(r) => Some(r.to_string()),
                _ => None,
            },
            expired: Vec::new(),
            commands: decision
                .commands
                .iter()
                .map(command_json)
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
        };
        if let Some(message) = compare(step, number, &trace, engine.config()).map_err(invalid)? {
            failures.push(StepFailure {
                step: number,
                what,
                message,
            });
        }
        steps.push(trace);
    }
    if let Some(message) = compare_totals(&scenario.totals, &steps).map_err(invalid)? {
        failures.push(StepFailure {
            step: scenario.steps.len(),
            what: "totals".into(),
            message,
        });
    }
    Ok(Run { failures, steps })
}

/// Checks the scenario's `totals` against the commands of every step.
fn compare_totals(
    totals: &std::collections::BTreeMap<String, usize>,
    steps: &[StepTrace],
) -> Result<Option<String>, String> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for command in steps.iter().flat_map(|s| &s.commands) {
        let Some((kind, fields)) = command.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        *counts.entry(kind.clone()).or_default() += 1;
        if let Some(alert) = fields.get("kind").and_then(|k| k.as_str()) {
            *counts.entry(format!("alert/{alert}")).or_default() += 1;
        }
    }
    let mut problems = Vec::new();
    for (key, expected) in totals {
        let known = match key.split_once('/') {
            Some(("alert", kind)) => AlertKind::ALL.iter().any(|k| k.as_str() == kind),
            Some(_) => false,
            None => CommandKind::ALL.iter().any(|k| k.as_str() == key),
        };
        if !known {
            return Err(format!(
                "totals: unknown kind \"{key}\"; use a command kind ({}) or alert/<kind> ({})",
                CommandKind::ALL.map(|k| k.as_str()).join(", "),
                AlertKind::ALL.map(|k| k.as_str()).join(", ")
            ));
        }
        let actual = counts.get(key).copied().unwrap_or(0);
        if actual != *expected {
            problems.push(format!(
                "expected {expected} {key} across the scenario, got {actual}"
            ));
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("\n")))
}

/// Renders a disposition the way scenario files write it.
pub fn outcome_text(d: &Disposition) -> String {
    match d {
        Disposition::Emitted => "emitted".into(),
        Disposition::Skipped(r) => format!("skipped: {}", r.as_str()),
        Disposition::Parked(r) => format!("parked: {}", r.as_str()),
        Disposition::Rejected(r) => format!("rejected: {}", r.code()),
    }
}

fn build_event(
    step: &Step,
    number: usize,
    now: i64,
    stem: &str,
    cfg: &EngineConfig,
) -> Result<ChangeEvent, String> {
    let sources = [
        ("prospect", &step.prospect),
        ("lead", &step.lead),
        ("opportunity", &step.opportunity),
        ("contact", &step.contact),
        ("account", &step.account),
    ];
    let mut given = sources
        .iter()
        .filter_map(|(name, m)| m.as_ref().map(|m| (*name, m)));
    let (kind, fields) = given.next().ok_or(
        "a step needs one event (prospect, lead, opportunity, contact, account) or a tick",
    )?;
    if let Some((other, _)) = given.next() {
        return Err(format!(
            "a step holds one event, but this one has both {kind} and {other}"
        ));
    }
    let mut record = match resolve(&Value::Mapping(fields.clone()), cfg)? {
        Value::Mapping(m) => m,
        _ => unreachable!("resolve keeps the shape"),
    };
    let mut take = |k: &str| record.remove(Value::String(k.to_string()));
    let op = match take("op") {
        Some(v) => serde_yaml::from_value::<Operation>(v)
            .map_err(|e| format!("op: {e} (use CREATE, UPDATE, DELETE or SNAPSHOT)"))?,
        None => Operation::Update,
    };
    let version = match take("version") {
        Some(v) => v.as_i64().ok_or("version must be a whole number")?,
        None => number as i64,
    };
    let change_id = take("change_id")
        .map(scalar)
        .unwrap_or_else(|| format!("{stem}#{number}"));
    let modified_by = take("modified_by").map(scalar).unwrap_or_else(|| {
        if kind == "prospect" {
            PERSON_COMMERCE
        } else {
            PERSON_SALES
        }
        .to_string()
    });
    let modified_on = match take("modified_on") {
        Some(Value::String(s)) => parse_rfc3339(&s)?,
        Some(v) => v.as_i64().ok_or("modified_on must be an RFC 3339 time")?,
        None => now,
    };
    let company = take("company").map(scalar);
    let header = ChangeHeader {
        op,
        change_id,
        version,
        modified_on,
        modified_by,
        company,
    };
    Ok(match kind {
        "prospect" => ChangeEvent::Prospect(change(header, record, Prospect::FIELDS)?),
        "lead" => ChangeEvent::Lead(change(header, record, Lead::FIELDS)?),
        "opportunity" => ChangeEvent::Opportunity(change(header, record, Opportunity::FIELDS)?),
        "contact" => ChangeEvent::Contact(change(header, record, Contact::FIELDS)?),
        _ => ChangeEvent::Account(change(header, record, Account::FIELDS)?),
    })
}

fn change<T: DeserializeOwned>(
    header: ChangeHeader,
    record: Mapping,
    fields: &[&str],
) -> Result<Change<T>, String> {
    for key in record.keys() {
        let name = scalar(key.clone());
        if !fields.contains(&name.as_str()) {
            return Err(format!(
                "unknown field \"{name}\"; the record has {}",
                fields.join(", ")
            ));
        }
    }
    let record = serde_yaml::from_value(Value::Mapping(record)).map_err(|e| e.to_string())?;
    Ok(Change { header, record })
}

fn scalar(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => serde_yaml::to_string(&other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Compares one event step; `Ok(Some(message))` on a mismatch, `Err` when the expectation is
/// malformed.
fn compare(
    step: &Step,
    number: usize,
    trace: &StepTrace,
    cfg: &EngineConfig,
) -> Result<Option<String>, String> {
    let expected_outcome = match (&step.expect.outcome, step.expect.commands.is_empty()) {
        (Some(o), _) => o.trim().to_string(),
        (None, false) => "emitted".to_string(),
        (None, true) => return Err(format!("step {number}: say what happens: expect.outcome (e.g. \"skipped: echo\") or expect.commands")),
    };
    let mut problems = Vec::new();
    let actual_outcome = trace.outcome.as_deref().unwrap_or_default();
    if actual_outcome != expected_outcome {
        problems.push(format!(
            "expected outcome \"{expected_outcome}\", got \"{actual_outcome}\""
        ));
    }
    if let Some(expected) = &step.expect.reason {
        match &trace.reason {
            Some(reason) if reason.contains(expected.as_str()) => {}
            Some(reason) => problems.push(format!(
                "expected a reason containing \"{expected}\", got \"{reason}\""
            )),
            None => problems.push(format!(
                "expected a rejection whose reason contains \"{expected}\", got outcome \"{actual_outcome}\""
            )),
        }
    }
    problems.extend(compare_commands(step, &trace.commands, cfg)?);
    Ok((!problems.is_empty()).then(|| problems.join("\n")))
}

/// Compares a step's commands with the ones it lists: `Some(diff)` on a mismatch.
fn compare_commands(
    step: &Step,
    commands: &[serde_json::Value],
    cfg: &EngineConfig,
) -> Result<Option<String>, String> {
    let expected_commands: Vec<Value> = step
        .expect
        .commands
        .iter()
        .map(|c| resolve(c, cfg))
        .collect::<Result<_, _>>()?;
    let actual: Vec<Value> = commands
        .iter()
        .map(|c| serde_yaml::to_value(c).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let projected: Vec<Value> = actual
        .iter()
        .enumerate()
        .map(|(i, a)| {
            expected_commands
                .get(i)
                .map_or_else(|| a.clone(), |e| project(a, e))
        })
        .collect();
    let same = projected.len() == expected_commands.len()
        && projected
            .iter()
            .zip(&expected_commands)
            .all(|(a, e)| normalize(a) == normalize(e));
    if !same {
        let expected_text = serde_yaml::to_string(&expected_commands).unwrap_or_default();
        let actual_text = serde_yaml::to_string(&projected).unwrap_or_default();
        let diff = similar::TextDiff::from_lines(&expected_text, &actual_text)
            .unified_diff()
            .header(
                "expected commands",
                "actual commands (fields the scenario lists)",
            )
            .to_string();
        return Ok(Some(format!(
            "expected {} command(s), got {}:\n{}",
            expected_commands.len(),
            projected.len(),
            diff.trim_end()
        )));
    }
    Ok(None)
}

/// The actual command restricted to the fields the expected one lists (when their kinds agree).
fn project(actual: &Value, expected: &Value) -> Value {
    let (Some(a), Some(e)) = (actual.as_mapping(), expected.as_mapping()) else {
        return actual.clone();
    };
    let (Some((a_kind, a_fields)), Some((e_kind, e_fields))) = (a.iter().next(), e.iter().next())
    else {
        return actual.clone();
    };
    if a_kind != e_kind {
        return actual.clone();
    }
    let (Some(a_fields), Some(e_fields)) = (a_fields.as_mapping(), e_fields.as_mapping()) else {
        return actual.clone();
    };
    let mut picked = Mapping::new();
    for key in e_fields.keys() {
        picked.insert(
            key.clone(),
            a_fields.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    let mut out = Mapping::new();
    out.insert(a_kind.clone(), Value::Mapping(picked));
    Value::Mapping(out)
}

/// Scalars compared by their text, so `CustomerGroupId: 30` in a file equals the string "30".
fn normalize(v: &Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.iter().map(normalize).collect()),
        Value::Null => Value::Null,
        Value::Tagged(t) => normalize(&t.value),
        other => Value::String(scalar(other.clone())),
    }
}

/// Replaces `@lead:company/ProspectId`, `@customer:contact/<id>` (or `account/<id>`) and
/// `@hierarchy:company/ProspectId` string values with the ids the engine derives for them.
fn resolve(v: &Value, cfg: &EngineConfig) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(resolve_reference(s, cfg)?),
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, cfg)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|v| resolve(v, cfg))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn resolve_reference(s: &str, cfg: &EngineConfig) -> Result<String, String> {
    let Some(reference) = s.strip_prefix('@') else {
        return Ok(s.to_string());
    };
    let (kind, rest) = reference.split_once(':').unwrap_or((reference, ""));
    let (left, right) = rest
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\": write @{kind}:<company or entity>/<id>"))?;
    match kind {
        "lead" => Ok(ids::lead_id(left, right)),
        "hierarchy" => Ok(ids::hierarchy_id(
            &cfg.hierarchy_id_prefix,
            &ids::lead_id(left, right),
        )),
        "customer" => Ok(ids::customer_account(
            &cfg.customer_account_prefix,
            left,
            right,
        )),
        _ => Err(format!(
            "\"{s}\": unknown reference @{kind}; use @lead:, @customer: or @hierarchy:"
        )),
    }
}

/// A command as `{kind: {fields}}` (serde_yaml alone would write enums as `!kind` tags).
fn command_json(c: &crate::model::Command) -> Result<serde_json::Value, String> {
    serde_json::to_value(c).map_err(|e| e.to_string())
}
