//! Scenario files: a readable story of change events in order, each with the commands it must produce.
//!
//! Integrators who customise the mapping tables run `partner-sync test-scenarios DIR --config FILE`
//! before they deploy, like `rpk connect test` or `vector test`. A scenario is YAML:
//!
//! ```yaml
//! name: A won opportunity approves the prospect
//! settings: |            # optional TOML layered over the defaults and --config
//!   [decisions]
//!   reapprove_after_rejection = true
//! steps:
//!   - at: 2026-03-02T09:00:00Z          # optional; defaults to one minute after the previous step
//!     prospect: { op: CREATE, ProspectId: PR-1, ProspectName: Contoso }
//!     expect:
//!       outcome: emitted                 # emitted | skipped: R | parked: R | rejected: R
//!       commands:                        # every command, in order; listed fields must match
//!         - lead_upsert: { companyname: Contoso, leadsourcecode: 8 }
//!         - lead_note: {}
//!   - tick: 2026-03-04T09:00:00Z         # advance time: expire parked events, raise due alerts
//!     expect: { expired: [lead_not_seen] }
//! totals:                                 # optional: commands across the whole scenario
//!   rejection_email: 0                    # a command kind, or an alert kind as alert/<kind>
//!   alert/email_taken: 1
//! ```
//!
//! An event step names its source (`prospect`, `lead`, `opportunity`, `contact`, `account`) and gives
//! the record's fields by their system names, plus optional header fields: `op` (default `UPDATE`),
//! `version` (default: the step number), `change_id`, `modified_by` (default: a person, not the
//! connector), `modified_on` and `company`. Field names are checked: a misspelt one fails the file.
//! Commands are compared in order and all must be listed; inside a command only the fields written in
//! the file are compared, so a scenario states what matters to it. A rejected step can also give
//! `reason:`, text its dead-letter sentence must contain. A tick step's `commands` are the alerts
//! that came due with the time (e.g. `qualified_without_opportunity` after its grace period).
//!
//! `partner-sync test-scenarios --show text|json` prints what each step produced, in full, so a
//! scenario can be written from what the connector does.
//!
//! Ids the engine derives can be written as references: `@lead:usrt/PR-1` (the lead id of prospect
//! PR-1 in legal entity usrt), `@customer:contact/<contactid>` (the CustomerAccount derived for a
//! contact or account without an integration key) and `@hierarchy:usrt/PR-1`.

mod run;
mod time;

pub use time::parse_rfc3339;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use run::{run_scenario, Run, StepFailure, StepTrace};

/// A parsed scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// TOML layered over the base settings for this scenario only.
    #[serde(default)]
    pub settings: Option<String>,
    pub steps: Vec<Step>,
    /// Commands across the whole scenario, by kind (`lead_upsert`, …, `alert`, or `alert/<kind>`):
    /// `rejection_email: 0` says that none is ever sent.
    #[serde(default)]
    pub totals: std::collections::BTreeMap<String, usize>,
    /// Set by the loader: where the file is, for messages.
    #[serde(skip)]
    pub path: PathBuf,
}

/// One step: an event with its expectation, or a clock tick.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub prospect: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub lead: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub opportunity: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub contact: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub account: Option<serde_yaml::Mapping>,
    /// Advance the clock to this time and expire what has waited too long.
    #[serde(default)]
    pub tick: Option<String>,
    #[serde(default)]
    pub expect: Expect,
}

/// What a step must produce.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `emitted`, `skipped: <reason>`, `parked: <reason>` or `rejected: <code>`.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Every command, in order (including those of parked events this step released).
    #[serde(default)]
    pub commands: Vec<serde_yaml::Value>,
    /// For `tick` steps: the park reasons of the events that expired, in order.
    #[serde(default)]
    pub expired: Vec<String>,
    /// For a rejected step: text the rejection's sentence (the dead letter's message) contains.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("scenario {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
}

/// Loads one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut scenario: Scenario =
        serde_yaml::from_str(&text).map_err(|e| ScenarioError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    scenario.path = path.to_path_buf();
    Ok(scenario)
}

/// The scenario files in a directory (`*.yaml`, `*.yml`), sorted by name.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScenarioError::Unreadable {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}
