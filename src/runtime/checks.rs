//! What start-up checks before it writes anything: every topic present, the cases and state topics
//! with equal partition counts, the state topic compacted, every output schema registered.
//!
//! A check a person must act on is a [`RuntimeError::Setup`] (exit code 2); a cluster or registry
//! that does not answer yet is waited for ([`RuntimeError::Retriable`], or the registry's own
//! minute of retries), so a connector started alongside its cluster does not fail needlessly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};

use super::client_error::{self, ErrorClass};
use super::kafka::{ConsumerCtx, RefusedLogin};
use super::{RuntimeError, Topics};
use crate::registry::RegistryClient;
use crate::settings::{ClientRole, KafkaSettings};

/// Looks up (or registers) one output schema, retrying for up to a minute while the registry is
/// unavailable. A subject missing or a schema refused is a setup fault.
pub(super) async fn output_schema_id(
    registry: &RegistryClient,
    subject: &str,
    text: &str,
    register: bool,
) -> Result<u32, RuntimeError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut backoff = Duration::from_millis(200);
    loop {
        match registry.ensure(subject, text, register).await {
            Ok(id) => return Ok(id),
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tracing::warn!(error = %e, subject, "Checking an output schema: the Schema Registry is unavailable; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) if e.is_retriable() => return Err(RuntimeError::Registry(e.to_string())),
            Err(e) => return Err(RuntimeError::Setup(format!("Schema Registry: {e}"))),
        }
    }
}

/// Checks that every topic exists and that `cases` and `state` have the same number of partitions;
/// returns that number. A cluster that does not answer is retriable: start-up waits for it.
pub(super) fn check_topics(
    consumer: &StreamConsumer<ConsumerCtx>,
    topics: &Topics,
    bootstrap: &str,
    refused_login: &RefusedLogin,
) -> Result<i32, RuntimeError> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(15))
        .map_err(|e| {
            // A refused login makes the request fail as a transport failure or a timeout; the
            // clients' error callbacks saw the reason.
            if let Some((code, reason)) = refused_login.last() {
                return RuntimeError::from_client(
                    code,
                    format!("the brokers at {bootstrap} refused the login: {reason}"),
                );
            }
            let code = client_error::code_of(&e);
            let message = format!(
                "cannot read the cluster's metadata from {bootstrap} (is kafka.bootstrap_servers right, and the cluster up?): {e}"
            );
            RuntimeError::from_client(code, message)
        })?;
    let partitions: HashMap<&str, usize> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    let missing: Vec<&str> = topics
        .all()
        .into_iter()
        .filter(|t| !partitions.contains_key(t))
        .collect();
    if !missing.is_empty() {
        return Err(RuntimeError::Setup(format!(
            "these topics do not exist: {}. Create them (see README, \"Topics\"); partner-sync does not create topics.",
            missing.join(", ")
        )));
    }
    let (cases, state) = (
        partitions[topics.cases.as_str()],
        partitions[topics.state.as_str()],
    );
    if cases != state {
        return Err(RuntimeError::Setup(format!(
            "topic {} has {cases} partitions but {} has {state}; they must be equal, because each case's state lives in the partition of the same number",
            topics.cases, topics.state
        )));
    }
    Ok(cases as i32)
}

/// Checks that the state topic is compacted: with `cleanup.policy=delete` the broker deletes every
/// case's state after the topic's retention, and a restore then starts those cases from nothing.
/// A cluster that cannot describe topic configurations (an older or partial Kafka API) is let
/// through with a warning: the check is a safeguard, not something the pipeline needs.
pub(super) async fn check_state_compacted(
    kafka: &KafkaSettings,
    state: &str,
) -> Result<(), RuntimeError> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config(ClientRole::Admin)
        .map_err(RuntimeError::Config)?
        .create()
        .map_err(|e| RuntimeError::Kafka(format!("cannot create the admin client: {e}")))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(state)], &options)
        .await;
    let unchecked = |why: String| {
        tracing::warn!(
            topic = state,
            "Cannot read the state topic's configuration ({why}); make sure its cleanup.policy is compact."
        );
        Ok(())
    };
    let config = match described.map(|mut all| all.pop()) {
        Ok(Some(Ok(config))) => config,
        Ok(Some(Err(e))) => return unchecked(e.to_string()),
        Ok(None) => return unchecked("no answer for the topic".into()),
        Err(e) => {
            let code = client_error::code_of(&e);
            return match client_error::classify(code) {
                ErrorClass::Fatal => Err(RuntimeError::from_client(code, e.to_string())),
                _ => unchecked(e.to_string()),
            };
        }
    };
    match config.get("cleanup.policy").and_then(|e| e.value.as_deref()) {
        Some(policy) if compacts(policy) => Ok(()),
        Some(policy) => Err(RuntimeError::Setup(format!(
            "the state topic {state} has cleanup.policy={policy}: the broker would delete every case's state after the topic's retention. \
             Set it to compact (kafka-configs.sh --alter --entity-type topics --entity-name {state} --add-config cleanup.policy=compact)"
        ))),
        None => unchecked("the broker did not report cleanup.policy".into()),
    }
}

/// Whether a `cleanup.policy` keeps the latest record of every key for good: `compact` does;
/// `compact,delete` also deletes segments older than the retention, the latest entry of a case
/// untouched since among them.
fn compacts(policy: &str) -> bool {
    let parts: Vec<&str> = policy.split(',').map(str::trim).collect();
    parts.contains(&"compact") && !parts.contains(&"delete")
}

#[cfg(test)]
mod tests {
    use super::compacts;

    #[test]
    fn only_a_policy_that_compacts_and_never_deletes_keeps_every_case() {
        assert!(compacts("compact"));
        assert!(compacts(" compact "));
        assert!(!compacts("delete"));
        assert!(!compacts("compact,delete"));
        assert!(!compacts(""));
    }
}
