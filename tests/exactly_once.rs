//! The exactly-once mode (Kafka transactions) on librdkafka's mock cluster.
//!
//! Tansu, the broker the other integration tests use, does not implement transactions (EndTxn), so
//! these run against the mock cluster inside librdkafka, in-process. What this verifies: the
//! transactional pipeline (init, begin, send_offsets_to_transaction, commit) produces every expected
//! command exactly once in a clean run, and after an abortable error it aborts, rewinds and still
//! produces every command. What it cannot verify: that read_committed consumers never see aborted
//! records — the mock broker does not filter them — so after an abort, duplicates (identical) may be
//! visible here that a real Kafka cluster would hide.

mod common;

use std::time::Duration;

use common::*;
use partner_sync::mapping::EngineConfig;
use partner_sync::runtime::stats::names;
use partner_sync::settings::Settings;
use partner_sync::story;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::task::block_in_place;

fn cluster() -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    mock_cluster(3)
}

/// Stops `connector` once every expected command arrived, and checks each arrived once.
async fn each_once(
    connector: InProcess,
    bootstrap: &str,
    expected: &std::collections::BTreeMap<String, partner_sync::model::Command>,
) -> std::sync::Arc<partner_sync::runtime::Stats> {
    let (seen, total) =
        block_in_place(|| collect_commands(bootstrap, expected, Duration::from_secs(90)));
    let stats = connector.stop_expecting(expected, &seen).await;
    assert_eq!(
        total,
        expected.len(),
        "exactly once: no command record twice"
    );
    stats
}

fn eos_settings(bootstrap: &str, registry_url: &str, group: &str) -> Settings {
    // The mock cluster does not answer DescribeConfigs (its state topic is made here).
    let eos = "[delivery]\nguarantee = \"exactly_once\"\ncommit_interval_ms = 100\n[state]\ncheck_compaction = false\n";
    Settings::from_layers(&[&config_toml(bootstrap, registry_url, group), eos], false).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_deliver_every_command_exactly_once_in_a_clean_run() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let (registry, ids) = registry().await;
    let events = story::generate(71, 40, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    produce(&producer(&bootstrap), &ids, &events).await;
    let connector = InProcess::start(eos_settings(&bootstrap, &registry.url(), "eos"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    if connector.is_finished() {
        panic!(
            "the connector stopped early: {:?}",
            connector.stop().await.err()
        );
    }
    let stats = each_once(connector, &bootstrap, &expected).await;
    assert!(
        stats.value(names::COMMITS, &[]) > 0,
        "transactions were committed: {}",
        stats.summary()
    );
}

/// Liveness only: after an abortable error the connector aborts, rejoins, keeps processing and
/// commits later transactions. Whether every command still arrives after an abort cannot be checked
/// on the mock: it does not filter aborted records for read_committed readers, so the state restored
/// after the abort includes the aborted transaction's state writes and replayed inputs look like
/// duplicates. A real cluster filters them; that path is unverified here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abortable_transaction_error_aborts_and_the_connector_keeps_committing() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let (registry, ids) = registry().await;
    let events = story::generate(72, 25, &EngineConfig::defaults(), START_MS).clean();
    let (first, second) = events.split_at(events.len() / 2);
    let p = producer(&bootstrap);
    produce(&p, &ids, first).await;
    // The first transactional offset commit fails with an error librdkafka reports as abortable.
    cluster.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID],
    );
    let connector = InProcess::start(eos_settings(&bootstrap, &registry.url(), "eos-abort"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    produce(&p, &ids, second).await;
    // Records produced after the abort are processed and committed in new transactions.
    let after = expected_commands(second);
    let lead_notes: std::collections::BTreeMap<_, _> = after
        .into_iter()
        .filter(|(_, c)| c.kind() == partner_sync::model::CommandKind::LeadNote)
        .collect();
    let (seen, _) =
        block_in_place(|| collect_commands(&bootstrap, &lead_notes, Duration::from_secs(60)));
    assert!(
        lead_notes.keys().all(|k| seen.contains_key(k)),
        "prospects produced after the abort got their leads' notes"
    );
    assert!(!connector.is_finished(), "the connector survived the abort");
    let stats = connector.stop().await.expect("clean stop");
    assert!(
        stats.value(names::COMMIT_FAILURES, &[]) > 0,
        "the injected error aborted a transaction: {}",
        stats.summary()
    );
    assert!(
        stats.value(names::COMMITS, &[]) > 0,
        "later transactions committed: {}",
        stats.summary()
    );
}

/// An output the client refuses to queue (too large) does not abort the transaction: nothing of
/// it entered the transaction, so its record becomes a dead letter inside it and the rest
/// commits. (Aborting would process the record again and be refused again, for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_becomes_a_dead_letter_inside_the_transaction() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let (registry, ids) = registry().await;
    let settings = Settings::from_layers(
        &[
            &config_toml(&bootstrap, &registry.url(), "eos-large"),
            "[delivery]\nguarantee = \"exactly_once\"\ncommit_interval_ms = 100\n[state]\ncheck_compaction = false\n",
            REPEATED_COMMENTS,
        ],
        false,
    )
    .unwrap();
    let config = EngineConfig::compile(&settings).unwrap();
    let story = story::generate(73, 6, &config, START_MS).clean();
    let events: Vec<_> =
        std::iter::once(prospect_with_comments(&story, "PR-LARGE-NOTE", 600 * 1024))
            .chain(story)
            .collect();
    let expected = writable(expected_commands_with(config, &events));
    produce(&producer(&bootstrap), &ids, &events).await;
    let connector = InProcess::start(settings);
    let stats = each_once(connector, &bootstrap, &expected).await;
    let dead = block_in_place(|| dead_letters(&bootstrap));
    assert_eq!(dead.len(), 1, "the prospect whose note is too large");
    assert_eq!(dead[0].key.as_deref(), Some(b"PR-LARGE-NOTE".as_slice()));
    assert_eq!(
        dead[0].header("partnersync.errors.reason").as_deref(),
        Some("output_rejected")
    );
    assert_eq!(
        stats.value(names::COMMIT_FAILURES, &[]),
        0,
        "no transaction was aborted for it"
    );
}
