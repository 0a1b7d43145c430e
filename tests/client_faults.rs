//! What a Kafka client's refusal or an outage does to the running pipeline, on a real broker
//! (Tansu) over TCP, and on librdkafka's mock cluster where only it can inject the refusal: a
//! record's own fault becomes a dead letter and the records behind it flow; a passing fault
//! (the broker stopped longer than `message_timeout_ms`) starts the pipeline again in-process and
//! loses nothing; a fault a person must fix stops with a sentence saying what to fix.

mod common;

use std::time::{Duration, Instant};

use common::*;
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{ChangeEvent, SourceKind};
use partner_sync::runtime::stats::names;
use partner_sync::runtime::{Stats, Topics};
use partner_sync::settings::Settings;
use partner_sync::story;
use rdkafka::producer::FutureRecord;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_for_its_topic_becomes_a_dead_letter_naming_it_and_the_records_behind_it_flow(
) {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let topics = Topics::new(&Settings::defaults().topics);
    let settings = Settings::from_layers(
        &[
            &config_toml(&broker.bootstrap(), &registry.url(), "large-output"),
            REPEATED_COMMENTS,
        ],
        false,
    )
    .unwrap();
    let config = EngineConfig::compile(&settings).unwrap();
    let story = story::generate(47, 6, &config, START_MS).clean();
    let big = prospect_with_comments(&story, "PR-LARGE-NOTE", 600 * 1024);
    let events: Vec<ChangeEvent> = std::iter::once(big).chain(story).collect();
    let decided = expected_commands_with(config, &events);
    let expected = writable(decided.clone());
    assert_eq!(
        decided.len() - expected.len(),
        1,
        "the story makes one note too large"
    );
    produce(&producer(&broker.bootstrap()), &ids, &events).await;

    let connector = InProcess::start(settings.clone());
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    connector.stop_expecting(&expected, &seen).await;
    let dead = block_in_place(|| dead_letters(&broker.bootstrap()));
    assert_eq!(
        dead.len(),
        1,
        "one dead letter: the prospect whose note is too large"
    );
    let dl = &dead[0];
    assert_eq!(
        dl.header("partnersync.errors.reason").as_deref(),
        Some("output_rejected")
    );
    let message = dl
        .header("__connect.errors.exception.message")
        .unwrap_or_default();
    assert!(
        message.contains("lead_note") && message.contains("notetext"),
        "the dead letter names the command and the field that made it large: {message}"
    );
    assert_eq!(
        dl.header("__connect.errors.topic").as_deref(),
        Some(topics.input_topic(SourceKind::Prospect))
    );
    assert!(dl.value.len() > 600 * 1024, "the input's bytes are kept");
    assert_a_restart_runs(settings).await;
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_longer_than_the_message_timeout_restarts_the_pipeline_in_process_and_loses_nothing(
) {
    let (broker, relay) = Broker::start_behind_relay();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(53, 150, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    produce(&producer(&broker.bootstrap()), &ids, &events).await;

    // Every connection of the connector's goes through the relay, its bootstrap too.
    let through_relay = format!("127.0.0.1:{}", relay.port);
    let mut settings = settings(&through_relay, &registry.url(), "outage");
    settings.kafka.message_timeout_ms = 4_000;
    let stats = std::sync::Arc::new(Stats::default());
    let connector = InProcess::start_with(settings, stats.clone());
    // The outage starts as the backlog starts to flow: outputs are queued and in flight when the
    // broker goes away, and those not yet sent time out (librdkafka's idempotent producer waits
    // for those in flight instead).
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.value(names::COMMANDS, &[]) < 1 {
        assert!(Instant::now() < deadline, "the connector never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.cut();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let finished_during_outage = connector.is_finished();
    relay.restore();
    assert!(
        !finished_during_outage,
        "the connector rides out the outage instead of stopping"
    );
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(120))
    });
    let (recoveries, commit_failures) = (
        stats.value(names::RECOVERIES, &[]),
        stats.value(names::COMMIT_FAILURES, &[]),
    );
    connector.stop_expecting(&expected, &seen).await;
    assert!(
        recoveries >= 1,
        "a fault during the outage (a delivery timed out, a fence refused) restarted the pipeline in-process"
    );
    assert!(
        commit_failures >= 1,
        "commits tried while the broker was unreachable are counted as failed"
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_a_value_is_dead_lettered_without_one() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let topics = Topics::new(&Settings::defaults().topics);
    let events = story::generate(59, 3, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    let p = producer(&broker.bootstrap());
    let contacts = topics.input_topic(SourceKind::Contact);
    // A tombstone and an empty value: two different records, each dead-lettered as it was.
    p.send(
        FutureRecord::<str, [u8]>::to(contacts).key("c-tombstone"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    produce_raw(&p, contacts, "c-empty", b"").await;
    produce(&p, &ids, &events).await;

    let connector = InProcess::start(settings(&broker.bootstrap(), &registry.url(), "null"));
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    connector.stop_expecting(&expected, &seen).await;
    let dead = block_in_place(|| dead_letters(&broker.bootstrap()));
    let by_key = |key: &str| {
        dead.iter()
            .find(|r| r.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("a dead letter for {key}"))
    };
    assert_eq!(dead.len(), 2);
    assert!(by_key("c-tombstone").null_value, "a tombstone stays null");
    let empty = by_key("c-empty");
    assert!(
        !empty.null_value && empty.value.is_empty(),
        "an empty value stays empty"
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_a_person_must_fix_stops_the_connector_with_what_to_fix() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock_cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let (registry, ids) = registry().await;
    let events = story::generate(61, 3, &EngineConfig::defaults(), START_MS).clean();
    produce(&producer(&bootstrap), &ids, &events).await;
    // From now on the cluster refuses every write of the connector's: its principal lacks the ACL.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
    );
    let mut settings = settings(&bootstrap, &registry.url(), "refused");
    // The mock cluster does not answer DescribeConfigs (its state topic is made here).
    settings.state.check_compaction = false;
    let connector = InProcess::start(settings);
    let error = connector
        .ends_by_itself(Duration::from_secs(60))
        .await
        .expect_err("a refused write stops the connector");
    let text = error.to_string();
    assert!(
        text.contains("authoriz") && text.contains("ACL"),
        "the sentence says what happened and what to fix: {text}"
    );
    assert_eq!(error.exit_code(), 1);
    drop(registry);
}
