//! The one typed settings struct, loaded from `config/default.toml`, a user file and the environment.
//!
//! Why one struct with `deny_unknown_fields` at every level: a misspelt key in a connector config is
//! the classic silent failure (the default applies and nobody notices until data is wrong). Here it
//! stops start-up with the key's name. The defaults live in `config/default.toml`, compiled into the
//! binary, so the file that documents every key is also the one that supplies it.
//!
//! Loading is layered with the `config` crate: embedded defaults, then the user's file, then
//! `PARTNER_SYNC__SECTION__KEY` environment variables. Validation beyond types (mapping tables naming
//! real fields, templates naming real placeholders) is [`crate::mapping::EngineConfig::compile`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

mod runtime;

pub use runtime::*;

/// The defaults, with a comment on every key.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Everything partner-sync can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub identity: IdentitySettings,
    pub defaults: DefaultSettings,
    pub lead: LeadSettings,
    pub customers: CustomerSettings,
    pub decisions: DecisionSettings,
    pub parking: ParkingSettings,
    pub mapping: MappingTables,
    pub value_maps: ValueMaps,
    pub kafka: KafkaSettings,
    pub topics: TopicSettings,
    pub registry: RegistrySettings,
    pub delivery: DeliverySettings,
    pub state: StateSettings,
    pub telemetry: TelemetrySettings,
}

/// Who the connector is on each side, so its own writes can be recognised when they come back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    pub sales_user: String,
    pub commerce_user: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultSettings {
    pub company: String,
    pub customer_group: String,
    pub sales_currency: String,
    pub customer_account_prefix: String,
    pub hierarchy_id_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadSettings {
    pub prospect_type: String,
    pub owning_team: String,
    pub source_code: i32,
    pub origin_value: i32,
    pub subject: String,
    pub note_subject: String,
    pub note_text: String,
}

/// Which Sales contacts and accounts become Commerce customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerSync {
    B2bLeads,
    Sellable,
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerSettings {
    pub sync: CustomerSync,
    pub person_party_type: String,
    pub organization_party_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSettings {
    pub approved_status: String,
    pub rejected_status: String,
    pub hierarchy_purpose: String,
    pub admin_role: String,
    pub rejection_notification: String,
    pub reapprove_after_rejection: bool,
    /// How long after a lead's qualification an opportunity may take to arrive before
    /// `qualified_without_opportunity` is raised.
    pub opportunity_grace_seconds: u64,
    /// The lead changes carry `qualifyingopportunityid` on every qualification, so an empty one
    /// says exactly that no opportunity was created: the alert is raised at once.
    pub lead_carries_qualifying_opportunity: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkingSettings {
    pub timeout_seconds: u64,
    pub max_per_case: usize,
}

/// Field mapping tables: target field name = source field name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingTables {
    pub prospect_to_lead: BTreeMap<String, String>,
    pub contact_to_person: BTreeMap<String, String>,
    pub account_to_organization: BTreeMap<String, String>,
}

/// Value maps: option-set value (as a string key) = label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMaps {
    pub lead_disqualified_reason: BTreeMap<String, String>,
    pub opportunity_lost_reason: BTreeMap<String, String>,
}

/// Why settings could not be loaded; the message names the file or key and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "cannot read configuration file {path}: {reason}. Check the path and its permissions."
    )]
    Unreadable { path: String, reason: String },
    #[error("configuration is invalid: {0}. Fix or remove that key (see config/default.toml for every key and its meaning).")]
    Invalid(String),
}

impl Settings {
    /// The built-in defaults alone.
    pub fn defaults() -> Settings {
        Settings::from_layers(&[], false).expect("config/default.toml is valid; a test checks it")
    }

    /// Defaults, then the file at `path` if given, then `PARTNER_SYNC__…` environment variables.
    /// Checks that the input size bound leaves room under the producer's record size:
    /// every output and state entry is made from one input, and a dead letter carries an input
    /// with its headers and the error headers.
    pub fn check_record_sizes(&self) -> Result<(), String> {
        /// What a dead letter adds to its record: the input's headers and the error headers.
        const HEADROOM: usize = 64 * 1024;
        let key = "message.max.bytes";
        let (limit, whose) = match self.kafka.extra.get(key) {
            Some(v) => (
                v.parse::<usize>().map_err(|_| {
                    format!("kafka.extra.\"{key}\" = {v:?} is not a number of bytes")
                })?,
                format!("kafka.extra.\"{key}\" ({v})"),
            ),
            None => (
                1_000_000,
                format!("librdkafka's default {key} (1,000,000 bytes)"),
            ),
        };
        let bound = self.delivery.max_record_kib.saturating_mul(1024);
        if bound == 0 {
            return Err("delivery.max_record_kib must be at least 1".into());
        }
        if bound.saturating_add(HEADROOM) > limit {
            return Err(format!(
                "delivery.max_record_kib ({} KiB) leaves no room under {whose}: an input that size, or its dead letter, \
                 could not be written. Set delivery.max_record_kib to at most {} KiB, or raise {key}",
                self.delivery.max_record_kib,
                limit.saturating_sub(HEADROOM) / 1024
            ));
        }
        Ok(())
    }

    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let text = match path {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        Settings::from_layers(
            text.as_deref().into_iter().collect::<Vec<_>>().as_slice(),
            true,
        )
    }

    /// Defaults, then each TOML text in order, then (if `with_env`) the environment.
    pub fn from_layers(layers: &[&str], with_env: bool) -> Result<Settings, SettingsError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        for layer in layers {
            builder = builder.add_source(File::from_str(layer, FileFormat::Toml));
        }
        if with_env {
            builder = builder.add_source(
                Environment::with_prefix("PARTNER_SYNC")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let merged = builder
            .build()
            .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        merged
            .try_deserialize()
            .map_err(|e| SettingsError::Invalid(e.to_string()))
    }
}

/// Reads a configuration file, with an error that names it.
pub fn read_file(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|e| SettingsError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
