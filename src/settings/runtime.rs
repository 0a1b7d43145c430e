//! Runtime settings: Kafka, topics, Schema Registry and delivery, and the one place that knows
//! librdkafka's property names ([`KafkaSettings::client_config`]).

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// A secret value: deserialized like a string, never shown by `Debug` or `Display`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// librdkafka's `security.protocol`, in any case: `sasl_ssl` as here, or `SASL_SSL` as Kafka's own
/// clients and documents write it. Read from a string, so a wrong value is refused with the
/// choices, not with the configuration library's words for a Rust enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl TryFrom<String> for SecurityProtocol {
    type Error = String;

    fn try_from(text: String) -> Result<SecurityProtocol, String> {
        match text.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(SecurityProtocol::Plaintext),
            "ssl" => Ok(SecurityProtocol::Ssl),
            "sasl_plaintext" => Ok(SecurityProtocol::SaslPlaintext),
            "sasl_ssl" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!(
                "\"{text}\" is not a security protocol; use plaintext, ssl, sasl_plaintext or sasl_ssl"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub client_id: String,
    pub security_protocol: SecurityProtocol,
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: Secret,
    pub ssl_ca_location: String,
    pub ssl_certificate_location: String,
    pub ssl_key_location: String,
    pub ssl_key_password: Secret,
    pub session_timeout_ms: u32,
    pub fetch_queue_backoff_ms: u32,
    /// fetch.wait.max.ms of the pipeline's consumer.
    pub fetch_wait_max_ms: u32,
    /// queued.max.messages.kbytes of the pipeline's consumer and of each state reader: how much
    /// librdkafka fetches ahead. librdkafka also caps a fetch response at it (fetch.max.bytes,
    /// unless set in `extra`). Each compressed record batch fetched is inflated into a buffer freed
    /// only once its last record has been taken, so what this lets in costs several times its size
    /// (see config/default.toml).
    pub prefetch_kib: u32,
    /// statistics.interval.ms: how often librdkafka reports consumer lag and broker state (0 = never,
    /// which leaves the lag metric empty and readiness blind to a lost producer connection).
    pub statistics_interval_ms: u32,
    pub message_timeout_ms: u32,
    pub linger_ms: u32,
    pub auto_offset_reset: String,
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// What a client is for; each gets the common settings plus its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// The pipeline's consumer: manual offset store, commits only what is done.
    Consumer,
    /// Reads the state topic from the beginning on assignment; no group, no commits.
    StateReader,
    /// Idempotent producer for commands, state, cases and dead letters.
    Producer,
    /// Transactional producer (exactly-once); the caller adds `transactional.id`.
    TransactionalProducer,
    /// Writes the restore fences: a restore sends one record to each of its state partitions and
    /// awaits them all before it reads, so idempotence would guard nothing (a retried duplicate lies
    /// after the first fence, where the reader has already stopped). An idempotent producer holds
    /// its first record until the broker gave it a producer id: the first restore's fences took
    /// ~0.9 s on Tansu.
    FenceWriter,
    /// Reads topic configurations at start-up (the state topic's `cleanup.policy`).
    Admin,
}

impl KafkaSettings {
    /// Every librdkafka property partner-sync sets, for `role`. Refuses conflicting settings with a
    /// sentence saying what to change.
    pub fn client_config(&self, role: ClientRole) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", &self.client_id);
        let protocol = match self.security_protocol {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if matches!(
            self.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&self.sasl_mechanism.as_str())
            {
                return Err(format!(
                    "kafka.sasl_mechanism \"{}\" is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    self.sasl_mechanism
                ));
            }
            if self.sasl_username.is_empty() || self.sasl_password.is_empty() {
                return Err(format!(
                    "kafka.security_protocol = \"{protocol}\" needs kafka.sasl_username and kafka.sasl_password \
                     (set the password with PARTNER_SYNC__KAFKA__SASL_PASSWORD)"
                ));
            }
            c.set("sasl.mechanism", &self.sasl_mechanism);
            c.set("sasl.username", &self.sasl_username);
            c.set("sasl.password", self.sasl_password.expose());
        } else if !self.sasl_username.is_empty() {
            return Err(format!(
                "kafka.sasl_username is set but kafka.security_protocol is \"{protocol}\"; use sasl_plaintext or sasl_ssl, or remove the username"
            ));
        }
        let tls = matches!(
            self.security_protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        );
        for (key, value) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if !value.is_empty() {
                if !tls {
                    return Err(format!("{key} is set but kafka.security_protocol is \"{protocol}\"; use ssl or sasl_ssl"));
                }
                c.set(key, value);
            }
        }
        if self.ssl_certificate_location.is_empty() != self.ssl_key_location.is_empty() {
            return Err(
                "mTLS needs both kafka.ssl_certificate_location and kafka.ssl_key_location".into(),
            );
        }
        if !self.ssl_key_password.is_empty() {
            c.set("ssl.key.password", self.ssl_key_password.expose());
        }
        if !matches!(role, ClientRole::StateReader | ClientRole::Admin) {
            // Lag and broker state for the metrics and readiness; the short-lived state reader has none.
            c.set(
                "statistics.interval.ms",
                self.statistics_interval_ms.to_string(),
            );
        }
        match role {
            ClientRole::Consumer | ClientRole::StateReader => {
                c.set(
                    "fetch.queue.backoff.ms",
                    self.fetch_queue_backoff_ms.to_string(),
                );
                c.set("enable.partition.eof", "false");
                c.set("isolation.level", "read_committed");
                // The pipeline's consumer and each state reader alike (librdkafka's default is
                // 64 MiB each). It also bounds fetch.max.bytes (50 MiB by default) unless that is
                // set: librdkafka lowers it to this, though never below message.max.bytes.
                if !(1..=2_097_151).contains(&self.prefetch_kib) {
                    return Err(format!(
                        "kafka.prefetch_kib = {} is outside librdkafka's range for \
                         queued.max.messages.kbytes; set it between 1 and 2097151 (KiB), \
                         or remove it for the default of 1024",
                        self.prefetch_kib
                    ));
                }
                c.set("queued.max.messages.kbytes", self.prefetch_kib.to_string());
                if role == ClientRole::Consumer {
                    c.set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
                    c.set("group.id", &self.group_id);
                    c.set("session.timeout.ms", self.session_timeout_ms.to_string());
                    c.set("auto.offset.reset", &self.auto_offset_reset);
                    // Offsets are stored by the pipeline only once a record's outputs are acknowledged.
                    c.set("enable.auto.commit", "false");
                    c.set("enable.auto.offset.store", "false");
                    c.set("partition.assignment.strategy", "range");
                } else {
                    c.set("group.id", format!("{}-state-reader", self.group_id));
                    // A restore reads to a known offset and waits for nothing else: ask the broker
                    // not to hold fetches (default 500 ms), so each round trip is as short as it can be.
                    c.set("fetch.wait.max.ms", "10");
                    c.set("fetch.error.backoff.ms", "10");
                    c.set("enable.auto.commit", "false");
                    c.set("auto.offset.reset", "earliest");
                }
            }
            ClientRole::Admin => {}
            ClientRole::FenceWriter => {
                c.set("enable.idempotence", "false");
                c.set("acks", "all");
                c.set("message.timeout.ms", self.message_timeout_ms.to_string());
                c.set("linger.ms", "0");
            }
            ClientRole::Producer | ClientRole::TransactionalProducer => {
                c.set("enable.idempotence", "true");
                c.set("acks", "all");
                c.set("message.timeout.ms", self.message_timeout_ms.to_string());
                c.set("linger.ms", self.linger_ms.to_string());
                c.set("compression.type", "lz4");
                if role == ClientRole::TransactionalProducer {
                    // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
                    c.set(
                        "transaction.timeout.ms",
                        self.message_timeout_ms.max(60_000).to_string(),
                    );
                }
            }
        }
        for (key, value) in &self.extra {
            c.set(key, value);
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    pub prospect_changes: String,
    pub lead_changes: String,
    pub opportunity_changes: String,
    pub contact_changes: String,
    pub account_changes: String,
    pub lead_commands: String,
    pub annotation_commands: String,
    pub customer_commands: String,
    pub prospect_status_commands: String,
    pub hierarchy_commands: String,
    pub notification_commands: String,
    pub alerts: String,
    pub dead_letters: String,
    pub cases: String,
    pub state: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    Topic,
    Record,
    TopicRecord,
}

impl SubjectNameStrategy {
    /// The subject of a value schema written to `topic` with record `full_name`.
    pub fn subject(self, topic: &str, full_name: &str) -> String {
        match self {
            SubjectNameStrategy::Topic => format!("{topic}-value"),
            SubjectNameStrategy::Record => full_name.to_string(),
            SubjectNameStrategy::TopicRecord => format!("{topic}-{full_name}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    pub urls: Vec<String>,
    pub subject_name_strategy: SubjectNameStrategy,
    pub auto_register: bool,
    pub username: String,
    pub password: Secret,
    pub bearer_token: Secret,
    pub ca_location: String,
    pub timeout_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorsTolerance {
    None,
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub guarantee: Guarantee,
    pub errors_tolerance: ErrorsTolerance,
    pub max_in_flight: usize,
    pub commit_interval_ms: u64,
    pub shutdown_budget_seconds: u64,
    pub expiry_interval_seconds: u64,
    /// Input records are routed in timestamp order across partitions within a window of this many
    /// KiB (0: in the order they are read). See `runtime::order`.
    pub order_window_kib: usize,
    /// How long the order window waits for an input partition that still has records to hand over
    /// (0: never waits).
    pub order_wait_ms: u64,
    /// Apply a record where it is routed when this instance owns its case's partition, without the
    /// cases-topic hop (at-least-once only). See `runtime::local`.
    pub local_apply: bool,
    /// An input record whose value is larger than this many KiB is not processed: it goes to the
    /// dead letters without its value (its size and digest in headers), so neither it nor what
    /// would be made of it can be refused by a client or broker limit and stop the pipeline.
    pub max_record_kib: usize,
}

/// How much of the engine's state an instance holds in memory (see `engine/state/resident.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// Cases held in memory per instance, shared by the cases partitions it owns; customer links,
    /// twice as many. The least recently used beyond it wait in a file under `spill_dir`. 0 holds
    /// every case in memory.
    pub resident_cases: usize,
    /// Where those files are made (an emptyDir in Kubernetes). Each is unlinked once opened.
    pub spill_dir: std::path::PathBuf,
    /// Whether start-up checks that the state topic's `cleanup.policy` is `compact`.
    pub check_compaction: bool,
}

impl StateSettings {
    /// The cases each of `partitions` owned cases partitions may hold in memory, or `None` for
    /// all of them.
    pub fn resident_per_partition(&self, partitions: usize) -> Option<usize> {
        (self.resident_cases > 0).then(|| self.resident_cases.div_ceil(partitions.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn the_security_protocol_is_taken_as_kafka_writes_it_too() {
        for (written, meant) in [
            ("SASL_SSL", SecurityProtocol::SaslSsl),
            ("sasl_ssl", SecurityProtocol::SaslSsl),
            ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
            ("SSL", SecurityProtocol::Ssl),
            ("PLAINTEXT", SecurityProtocol::Plaintext),
        ] {
            let text = format!("[kafka]\nsecurity_protocol = \"{written}\"\n");
            let settings = Settings::from_layers(&[&text], false).expect(written);
            assert_eq!(settings.kafka.security_protocol, meant, "{written}");
        }
        let refused = Settings::from_layers(&["[kafka]\nsecurity_protocol = \"TLS\"\n"], false)
            .expect_err("an unknown protocol is refused")
            .to_string();
        assert!(
            refused.contains("\"TLS\" is not a security protocol; use plaintext, ssl, sasl_plaintext or sasl_ssl")
                && !refused.contains("enum"),
            "the error lists the choices: {refused}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut s = Settings::defaults();
        s.kafka.sasl_password = Secret::new("hunter2");
        s.registry.bearer_token = Secret::new("eyJhbGciOi");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("eyJhbGciOi"),
            "{shown}"
        );
        assert!(shown.contains("\"***\""));
    }

    #[test]
    fn sasl_scram_over_tls_sets_the_librdkafka_properties() {
        let mut k = Settings::defaults().kafka;
        k.security_protocol = SecurityProtocol::SaslSsl;
        k.sasl_mechanism = "SCRAM-SHA-512".into();
        k.sasl_username = "svc-partner-sync".into();
        k.sasl_password = Secret::new("s3cret");
        k.ssl_ca_location = "/etc/kafka/ca.pem".into();
        let c = k.client_config(ClientRole::Producer).unwrap();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn conflicting_security_settings_are_refused_with_what_to_change() {
        let mut k = Settings::defaults().kafka;
        k.sasl_username = "user".into();
        let err = k.client_config(ClientRole::Consumer).unwrap_err();
        assert!(err.contains("sasl_plaintext or sasl_ssl"), "{err}");
        let mut k = Settings::defaults().kafka;
        k.security_protocol = SecurityProtocol::SaslSsl;
        k.sasl_username = "user".into();
        let err = k.client_config(ClientRole::Consumer).unwrap_err();
        assert!(err.contains("PARTNER_SYNC__KAFKA__SASL_PASSWORD"), "{err}");
        let mut k = Settings::defaults().kafka;
        k.security_protocol = SecurityProtocol::Ssl;
        k.ssl_certificate_location = "/c.pem".into();
        assert!(k
            .client_config(ClientRole::Consumer)
            .unwrap_err()
            .contains("mTLS"));
    }

    #[test]
    fn the_consumer_stores_offsets_only_when_told_and_keeps_the_fetch_queue_fed() {
        let c = Settings::defaults()
            .kafka
            .client_config(ClientRole::Consumer)
            .unwrap();
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("1024"));
    }

    #[test]
    fn the_prefetch_bounds_the_consumer_and_the_state_readers_and_is_refused_outside_librdkafkas_range(
    ) {
        let mut k = Settings::defaults().kafka;
        k.prefetch_kib = 0;
        let err = k.client_config(ClientRole::Consumer).unwrap_err();
        assert!(err.contains("between 1 and 2097151"), "{err}");
        k.prefetch_kib = 4096;
        for role in [ClientRole::Consumer, ClientRole::StateReader] {
            let c = k.client_config(role).unwrap();
            assert_eq!(c.get("queued.max.messages.kbytes"), Some("4096"));
        }
    }

    #[test]
    fn the_fence_writer_sends_at_once_without_waiting_for_a_producer_id() {
        let c = Settings::defaults()
            .kafka
            .client_config(ClientRole::FenceWriter)
            .unwrap();
        assert_eq!(c.get("enable.idempotence"), Some("false"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("linger.ms"), Some("0"));
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Address of /metrics, /health/live and /health/ready.
    pub listen: String,
    /// `json` (one object per line, for log collectors), `text` (for people), or `auto`: text on a
    /// terminal, JSON otherwise.
    pub log_format: LogFormat,
    /// /health/live fails when the processing loop has not turned for this long.
    pub liveness_timeout_seconds: u64,
    /// How often the Schema Registry is probed while every schema is cached, so readiness notices
    /// an outage before the next new schema id does (0 = never).
    pub registry_probe_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}
