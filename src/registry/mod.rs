//! Schema Registry: the Confluent wire format, a caching client, and an in-process fake.
//!
//! The client wraps schema_registry_converter's async calls (several URLs, basic or bearer auth,
//! timeouts, TLS) with what a connector needs around them:
//!
//! - writer schemas are cached by id forever (an id's schema never changes); failures are never
//!   cached, so a registry that comes back is used at once (schema_registry_converter #171);
//! - errors are sorted into retriable (unreachable, timeout, any 5xx) and permanent (unknown id,
//!   unparsable schema), because the first must back off and retry while the second sends the record
//!   to the dead letters;
//! - at start-up our output schemas are looked up under their subjects (or registered, if
//!   `registry.auto_register`), with an error that says which subject and how to fix it.

pub mod fake;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, perform_sr_call, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SrCall, SuppliedSchema};

use crate::settings::RegistrySettings;

/// Why the registry could not give us a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Worth retrying: the registry is unreachable, timed out or answered 5xx.
    #[error("the Schema Registry is unavailable: {0}")]
    Unavailable(String),
    /// The id is not registered: the record cannot be decoded, now or later.
    #[error("schema id {0} is not registered in the Schema Registry")]
    UnknownId(u32),
    /// The registry answered, but the schema text is not valid Avro.
    #[error("schema id {id} from the Schema Registry is not valid Avro: {reason}")]
    Unparsable { id: u32, reason: String },
    /// Our schema is not registered under its subject, or the registry refused it.
    #[error("{0}")]
    Subject(String),
}

impl RegistryError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, RegistryError::Unavailable(_))
    }

    /// A bounded label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            RegistryError::Unavailable(_) => "unavailable",
            RegistryError::UnknownId(_) => "unknown_id",
            RegistryError::Unparsable { .. } => "invalid_schema",
            RegistryError::Subject(_) => "subject_error",
        }
    }
}

fn classify(id: u32, e: &SRCError) -> RegistryError {
    let text = format!("{} {}", e.error, e.cause.as_deref().unwrap_or(""));
    let server_error = text.contains("status 5");
    if e.retriable
        || server_error
        || text.contains("timed out")
        || text.contains("error sending request")
    {
        RegistryError::Unavailable(text.trim().to_string())
    } else if text.contains("40403") || text.contains("status 404") {
        RegistryError::UnknownId(id)
    } else {
        RegistryError::Unavailable(text.trim().to_string())
    }
}

/// A caching Schema Registry client.
pub struct RegistryClient {
    settings: SrSettings,
    cache: HashMap<u32, Arc<Schema>>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl RegistryClient {
    /// Another client to the same registry, sharing this one's connection pool and TLS setup but
    /// not its cache. (Building a client loads the system's CA certificates: ~0.1 s of CPU.)
    pub fn sibling(&self) -> RegistryClient {
        RegistryClient {
            settings: self.settings.clone(),
            cache: HashMap::new(),
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
        }
    }

    pub fn new(cfg: &RegistrySettings) -> Result<RegistryClient, String> {
        let first = cfg
            .urls
            .first()
            .ok_or("registry.urls is empty: give at least one Schema Registry URL")?;
        let mut builder = SrSettings::new_builder(first.clone());
        for url in &cfg.urls[1..] {
            builder.add_url(url.clone());
        }
        if !cfg.bearer_token.is_empty() {
            builder.set_token_authorization(cfg.bearer_token.expose());
        } else if !cfg.username.is_empty() {
            let password = (!cfg.password.is_empty()).then(|| cfg.password.expose());
            builder.set_basic_authorization(&cfg.username, password);
        }
        builder.set_timeout(Duration::from_millis(cfg.timeout_ms));
        let settings = if cfg.ca_location.is_empty() {
            builder.build()
        } else {
            let pem = std::fs::read(&cfg.ca_location)
                .map_err(|e| format!("registry.ca_location {}: {e}", cfg.ca_location))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                format!(
                    "registry.ca_location {} is not a PEM certificate: {e}",
                    cfg.ca_location
                )
            })?;
            builder.build_with(reqwest::Client::builder().add_root_certificate(cert))
        }
        .map_err(|e| format!("cannot build the Schema Registry client: {}", e.error))?;
        Ok(RegistryClient {
            settings,
            cache: HashMap::new(),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms.max(1)),
            retry_max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_initial_ms.max(1))),
        })
    }

    /// The cached writer schema for `id`, if it was fetched before.
    pub fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.cache.get(&id).cloned()
    }

    /// Fetches the writer schema for `id` once (no retry); successes are cached.
    pub async fn fetch(&mut self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self.cache.get(&id) {
            return Ok(schema.clone());
        }
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(|e| classify(id, &e))?;
        let schema =
            Schema::parse_str(&registered.schema).map_err(|e| RegistryError::Unparsable {
                id,
                reason: e.to_string(),
            })?;
        let schema = Arc::new(schema);
        self.cache.insert(id, schema.clone());
        Ok(schema)
    }

    /// Asks the registry for schema `id` without the cache: is it reachable and answering?
    pub async fn probe(&self, id: u32) -> Result<(), RegistryError> {
        get_schema_by_id(id, &self.settings)
            .await
            .map(|_| ())
            .map_err(|e| classify(id, &e))
    }

    /// Looks up (or, with `register`, registers) `schema` under `subject`; returns its id.
    ///
    /// `schema_text` is the full schema (with defaults and logical types), as Confluent serializers
    /// register it; Avro's parsing canonical form would drop the defaults that evolution relies on.
    pub async fn ensure(
        &self,
        subject: &str,
        schema_text: &str,
        register: bool,
    ) -> Result<u32, RegistryError> {
        let text = schema_text.to_string();
        if register {
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, text);
            return post_schema(&self.settings, subject.to_string(), supplied)
                .await
                .map(|r| r.id)
                .map_err(|e| match classify(0, &e) {
                    RegistryError::Unavailable(m) => RegistryError::Unavailable(m),
                    _ => RegistryError::Subject(format!(
                        "the Schema Registry refused our schema for subject {subject}: {} {}. Check the subject's compatibility level and its latest version.",
                        e.error,
                        e.cause.unwrap_or_default()
                    )),
                });
        }
        lookup(&self.settings, subject, &text).await
    }
}

/// `POST /subjects/{subject}`: looks a schema up under a subject (schema_registry_converter uses
/// this call for references; we call it through its public `perform_sr_call`).
async fn lookup(settings: &SrSettings, subject: &str, schema: &str) -> Result<u32, RegistryError> {
    let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" }).to_string();
    let escaped = subject.replace('/', "%2F");
    match perform_sr_call(settings, SrCall::PostForVersion(&escaped, &body)).await {
        Ok(raw) => raw.id.ok_or_else(|| RegistryError::Subject(format!("the registry answered the lookup of {subject} without an id"))),
        Err(e) => match classify(0, &e) {
            RegistryError::Unavailable(m) => Err(RegistryError::Unavailable(m)),
            _ => Err(RegistryError::Subject(format!(
                "our schema is not registered under subject {subject} ({} {}). Register schemas/ ahead of deployment \
                 (see schemas/README.md) or set registry.auto_register = true.",
                e.error,
                e.cause.unwrap_or_default()
            ))),
        },
    }
}
