//! Faults against a real broker: the connector killed with SIGKILL mid-stream, a second instance
//! joining mid-stream (rebalance), the Schema Registry down, and SIGTERM. In every case every expected
//! command arrives, and a command id only ever appears as byte-identical records.

mod common;

use std::time::{Duration, Instant};

use common::*;
use partner_sync::mapping::EngineConfig;
use partner_sync::model::ChangeEvent;
use partner_sync::runtime::stats::names;
use partner_sync::story;
use tokio::task::block_in_place;

fn story_events(seed: u64, prospects: usize) -> Vec<ChangeEvent> {
    story::generate(seed, prospects, &EngineConfig::defaults(), START_MS).clean()
}

/// Waits until at least `n` records of any command topic exist (so a fault hits mid-stream).
fn wait_for_some_output(broker: &Broker, n: usize) {
    let topics =
        partner_sync::runtime::Topics::new(&partner_sync::settings::Settings::defaults().topics);
    let topic = topics
        .command_topic(partner_sync::model::CommandKind::LeadUpsert)
        .to_string();
    let got = read_until(&broker.bootstrap(), &topic, Duration::from_secs(60), |r| {
        r.len() >= n
    });
    assert!(
        got.len() >= n,
        "the connector produced only {} lead upserts",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_killed_with_sigkill_mid_stream_loses_nothing_after_restart() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story_events(31, 150);
    let expected = expected_commands(&events);
    let (half1, half2) = events.split_at(events.len() / 2);
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, half1).await;
    let config = config_toml(&broker.bootstrap(), &registry.url(), "kill9");

    // Killed while it is working through the first half, before the second half exists.
    let mut first = Connector::spawn(&config, "kill9-a");
    block_in_place(|| wait_for_some_output(&broker, 3));
    first.kill_9();
    produce(&p, &ids, half2).await;
    // Restart after the killed member's session (6 s) has expired. Tansu 0.6.0 does not tell a member
    // that joined while the dead one still counted as alive about the later rebalance, so an early
    // restart can sit with no partitions (a broker defect; Apache Kafka signals it on heartbeat).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let second = Connector::spawn(&config, "kill9-b");
    let (seen, total) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(120))
    });
    assert_same_commands_given(&expected, &seen, &second.log());
    // Repeats are byte-identical (collect_commands checks it), and the restart resumed from the
    // offsets committed before the kill: at most the first half's commands can come twice.
    let first_half = expected_commands(half1).len();
    assert!(
        total - expected.len() <= first_half,
        "{} repeated records, more than the {first_half} commands of the records read before the kill",
        total - expected.len()
    );
    eprintln!(
        "kill -9: {} commands expected, {total} records read (duplicates are identical)",
        expected.len()
    );
    // Off a terminal the connector logs JSON lines (telemetry.log_format = "auto").
    let restored_something = second.log().lines().any(|l| {
        let line: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"));
        line["fields"]["message"] == "State restored."
            && line["fields"]["records"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        restored_something,
        "the restarted connector restores the first one's state from Kafka:\n{}",
        second.log()
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_with_a_rebalance_mid_stream_give_the_same_outputs_as_one() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story_events(41, 120);
    let expected = expected_commands(&events);
    let (half1, half2) = events.split_at(events.len() / 2);
    let p = producer(&broker.bootstrap());
    let config = config_toml(&broker.bootstrap(), &registry.url(), "pair");

    let a = Connector::spawn(&config, "pair-a");
    produce(&p, &ids, half1).await;
    block_in_place(|| wait_for_some_output(&broker, 5));
    let b = Connector::spawn(&config, "pair-b");
    produce(&p, &ids, half2).await;
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(120))
    });
    let logs = format!("{}\n{}", a.log(), b.log());
    assert_same_commands_given(&expected, &seen, &logs);
    assert!(
        b.log().contains("Partitions assigned"),
        "the second instance got partitions:\n{logs}"
    );
    assert!(
        a.log().contains("Partitions revoked"),
        "the first instance gave some up:\n{logs}"
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_registry_outage_loses_nothing_and_processing_recovers() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story_events(51, 20);
    let expected = expected_commands(&events);
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &events).await;
    // Registered output schemas first (start-up needs them), then the outage before any input schema
    // was fetched: nothing can be decoded until the registry is back.
    let settings = settings(&broker.bootstrap(), &registry.url(), "outage");
    let running = registry.registry.clone();
    let outage = tokio::spawn(async move {
        // Let start-up pass, then fail every call for three seconds.
        while running.request_count() < 7 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running.set_unavailable(true);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let failed_during_outage = running.request_count();
        running.set_unavailable(false);
        failed_during_outage
    });
    let connector = InProcess::start(settings);
    let calls = outage.await.unwrap();
    assert!(
        calls > 8,
        "the connector kept retrying during the outage ({calls} calls)"
    );
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(60))
    });
    let stats = connector.stop_expecting(&expected, &seen).await;
    assert!(
        stats.value(names::REGISTRY_REQUESTS, &[("outcome", "unavailable")]) > 0,
        "{}",
        stats.summary()
    );
    assert_eq!(
        stats.value(names::DEAD_LETTERS, &[]),
        0,
        "an outage is not a bad record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_records_and_exits_cleanly_within_the_budget() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story_events(61, 80);
    let expected = expected_commands(&events);
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &events).await;
    let config = config_toml(&broker.bootstrap(), &registry.url(), "sigterm");
    let mut c = Connector::spawn(&config, "sigterm");
    block_in_place(|| wait_for_some_output(&broker, 5));
    let asked = Instant::now();
    let status = c
        .terminate(Duration::from_secs(15))
        .expect("the connector exits within the shutdown budget");
    assert!(status.success(), "exit status {status:?}\n{}", c.log());
    assert!(
        asked.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        asked.elapsed()
    );
    assert!(
        c.log().contains("SIGTERM received") && c.log().contains("Shutdown complete"),
        "{}",
        c.log()
    );
    // What was not finished before the stop is finished by the next start.
    let next = Connector::spawn(&config, "sigterm-next");
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    assert_same_commands_given(&expected, &seen, &next.log());
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kills_over_a_backlog_mixed_with_oversized_and_poison_records_lose_no_command_and_stop_for_none(
) {
    use partner_sync::model::SourceKind;
    use partner_sync::runtime::Topics;
    use partner_sync::settings::Settings;
    use rdkafka::producer::FutureRecord;

    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let topics = Topics::new(&Settings::defaults().topics);
    let config = format!(
        "{}\n{REPEATED_COMMENTS}",
        config_toml(&broker.bootstrap(), &registry.url(), "mixed")
    );
    let settings = Settings::from_layers(&[&config], false).unwrap();
    let engine_config = EngineConfig::compile(&settings).unwrap();
    let story = story::generate(71, 120, &engine_config, START_MS).clean();
    let mut events = story.clone();
    events.insert(
        events.len() / 3,
        prospect_with_comments(&story, "PR-LARGE-NOTE", 600 * 1024),
    );
    let expected = writable(expected_commands_with(engine_config, &events));

    // The bad records, keyed by what each is: 2 MiB of noise (an oversized input), a
    // tombstone, and bytes that are not Avro, spread through the backlog.
    let big = large_record_producer(&broker.bootstrap());
    let noise = noise(2 * 1024 * 1024);
    let p = producer(&broker.bootstrap());
    let chunks: Vec<&[ChangeEvent]> = events.chunks(events.len() / 4 + 1).collect();
    let mut bad_keys = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        produce(&p, &ids, chunk).await;
        let topic = topics.input_topic(if i % 2 == 0 {
            SourceKind::Prospect
        } else {
            SourceKind::Contact
        });
        let (oversized, tombstone, poison) = (
            format!("oversized-{i}"),
            format!("tombstone-{i}"),
            format!("poison-{i}"),
        );
        big.send(
            FutureRecord::to(topic)
                .key(&oversized)
                .payload(noise.as_slice()),
            Duration::from_secs(30),
        )
        .await
        .expect("the broker takes a 2 MiB record");
        p.send(
            FutureRecord::<str, [u8]>::to(topic).key(&tombstone),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        produce_raw(&p, topic, &poison, b"\x07not avro").await;
        bad_keys.extend([oversized, tombstone, poison]);
    }
    bad_keys.push("PR-LARGE-NOTE".into());

    // Killed three times mid-stream, each restart after the killed member's session expired
    // (see the first test of this file).
    let lead_topic = topics
        .command_topic(partner_sync::model::CommandKind::LeadUpsert)
        .to_string();
    let mut logs = String::new();
    for (round, after) in [10usize, 40, 80].into_iter().enumerate() {
        let mut c = Connector::spawn(&config, &format!("mixed-{round}"));
        let got = block_in_place(|| {
            read_until(
                &broker.bootstrap(),
                &lead_topic,
                Duration::from_secs(90),
                |r| r.len() >= after,
            )
        });
        assert!(
            got.len() >= after,
            "round {round}: only {} lead upserts; the connector stopped?\n{}",
            got.len(),
            c.log()
        );
        assert!(
            c.child.try_wait().unwrap().is_none(),
            "round {round}: the connector exited by itself:\n{}",
            c.log()
        );
        c.kill_9();
        logs.push_str(&c.log());
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    let last = Connector::spawn(&config, "mixed-last");
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(180))
    });
    assert_same_commands_given(&expected, &seen, &last.log());
    let dead = block_in_place(|| dead_letters(&broker.bootstrap()));
    let mut dead_keys: Vec<String> = dead
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    dead_keys.sort();
    dead_keys.dedup();
    bad_keys.sort();
    assert_eq!(
        dead_keys, bad_keys,
        "every bad record, and only those, reached the dead letters (repeats after a kill aside)"
    );
    drop(last);
    drop(registry);
}
