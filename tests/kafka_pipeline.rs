//! The pipeline against a real Kafka-protocol broker (Tansu) over TCP, with Avro in the Confluent
//! wire format and the in-process Schema Registry. The oracle for every test is the pure engine: the
//! commands it decides for the same story are what must come out of Kafka.

mod common;

use std::time::Duration;

use common::*;
use partner_sync::codec::Codec;
use partner_sync::engine::ids;
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{ChangeEvent, SourceKind};
use partner_sync::registry::wire;
use partner_sync::runtime::stats::names;
use partner_sync::runtime::Topics;
use partner_sync::settings::Settings;
use partner_sync::story;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_flows_through_kafka_and_every_command_arrives_once() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(21, 40, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &events).await;

    let settings = settings(&broker.bootstrap(), &registry.url(), "lifecycle");
    let connector = InProcess::start(settings);
    let (seen, total) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    let stats = connector.stop_expecting(&expected, &seen).await;
    assert_eq!(
        total,
        expected.len(),
        "without failures, no command is sent twice"
    );
    // Every kind of outcome of the story is there: leads, customers of both party types, approvals,
    // hierarchies, rejections and one email per rejection.
    let count = |k: &str| expected.values().filter(|c| c.kind().as_str() == k).count();
    assert!(
        count("customer_hierarchy") > 0
            && count("rejection_email") > 0
            && count("customer_upsert") > 0
    );
    assert!(
        stats.value(
            names::SKIPPED,
            &[("rule", "lead_decision"), ("reason", "echo")]
        ) > 0,
        "our own lead writes came back as echoes:\n{}",
        stats.summary()
    );
    assert_eq!(
        stats.value(names::DEAD_LETTERS, &[]),
        0,
        "{}",
        stats.summary()
    );
    // One instance owns every cases partition: every record is applied where it is routed, none
    // read back from the cases topic (the records routed before a partition's fence came back
    // were held for it, then applied here too).
    let applied = stats.value(names::APPLIED, &[]);
    assert_eq!(applied, events.len() as u64, "{}", stats.summary());
    // The state-entries counter counts what reached the state topic: a dashboard reading it sees
    // the broker's real write load.
    let state_records = stats.value(names::STATE_RECORDS, &[]) as usize;
    assert!(state_records > 0, "{}", stats.summary());
    let state_topic = Topics::new(&Settings::defaults().topics).state;
    let on_topic =
        block_in_place(|| read_to_end(&broker.bootstrap(), &state_topic, Duration::from_secs(30)));
    // Read whole, the topic also holds the restore fences, one per state partition per restore
    // (keyed fence/<client id>), which are not state entries.
    let is_fence = |r: &Read| r.key.as_deref().is_some_and(|k| k.starts_with(b"fence/"));
    let fences = on_topic.iter().filter(|r| is_fence(r)).count();
    assert_eq!(
        fences as u64,
        stats.value(names::STATE_RESTORES, &[]),
        "one fence per restore"
    );
    assert_eq!(
        on_topic.len() - fences,
        state_records,
        "{}",
        stats.summary()
    );
    assert_eq!(
        stats.value(names::APPLIED, &[("path", "local")]),
        applied,
        "{}",
        stats.summary()
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_apply_off_every_record_takes_the_cases_hop_and_the_commands_are_the_same() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(22, 25, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &events).await;

    let mut settings = settings(&broker.bootstrap(), &registry.url(), "hop-only");
    settings.delivery.local_apply = false;
    let connector = InProcess::start(settings);
    let (seen, total) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    let stats = connector.stop_expecting(&expected, &seen).await;
    assert_eq!(total, expected.len());
    let topics =
        partner_sync::runtime::Topics::new(&partner_sync::settings::Settings::defaults().topics);
    assert_eq!(
        stats.value(names::APPLIED, &[("path", "hop")]),
        events.len() as u64,
        "{}",
        stats.summary()
    );
    assert_eq!(
        stats.value(names::CONSUMED, &[("topic", &topics.cases)]),
        events.len() as u64,
        "every record read back from the cases topic, and no fence written:\n{}",
        stats.summary()
    );
    drop(registry);
}

/// With `state.resident_cases` far below the cases owned, most cases wait in the spill file and
/// are read back as their events come; a restart restores the state topic into a new file. The
/// commands are the pure engine's all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_few_cases_in_memory_the_rest_spill_to_a_file_and_the_commands_are_the_same_across_a_restart(
) {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(23, 40, &EngineConfig::defaults(), START_MS).clean();
    let (half1, half2) = events.split_at(events.len() / 2);
    let p = producer(&broker.bootstrap());
    let spill_dir = std::env::temp_dir().join(format!("partner-sync-spill-{}", std::process::id()));
    let settings = || {
        let mut s = settings(&broker.bootstrap(), &registry.url(), "spill");
        s.state.resident_cases = 4;
        s.state.spill_dir = spill_dir.clone();
        s
    };
    let held = |stats: &partner_sync::runtime::Stats, map: &str, place: &str| {
        stats.value(
            "partnersync_state_entries",
            &[("map", map), ("place", place)],
        )
    };
    let cases = |stats: &partner_sync::runtime::Stats, place: &str| held(stats, "cases", place);

    produce(&p, &ids, half1).await;
    let first_expected = expected_commands(half1);
    let stats = std::sync::Arc::new(partner_sync::runtime::Stats::new());
    let first = InProcess::start_with(settings(), stats.clone());
    let (seen, _) = block_in_place(|| {
        collect_commands(
            &broker.bootstrap(),
            &first_expected,
            Duration::from_secs(90),
        )
    });
    // The gauges are set at each commit (every 200 ms here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spilled_while_running = cases(&stats, "spilled");
    first.stop_expecting(&first_expected, &seen).await;
    assert!(
        spilled_while_running > 0,
        "cases beyond the bound left memory:\n{}",
        stats.summary()
    );

    produce(&p, &ids, half2).await;
    let expected = expected_commands(&events);
    let stats = std::sync::Arc::new(partner_sync::runtime::Stats::new());
    let second = InProcess::start_with(settings(), stats.clone());
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (in_memory, spilled_now) = (cases(&stats, "memory"), cases(&stats, "spilled"));
    let requesters = [
        held(&stats, "requesters", "memory"),
        held(&stats, "requesters", "spilled"),
    ];
    second.stop_expecting(&expected, &seen).await;
    assert!(
        spilled_now > 0 && in_memory <= 4,
        "after the restore, {in_memory} cases in memory (bound 4: 1 per partition) and \
         {spilled_now} spilled:\n{}",
        stats.summary()
    );
    assert!(
        requesters[1] > 0 && requesters[0] <= 4,
        "after the restore, requesters {requesters:?} in memory and spilled (bound 4)"
    );
    let left = std::fs::read_dir(&spill_dir).map_or(0, |d| d.count());
    assert_eq!(left, 0, "spill files are unlinked once opened");
    let _ = std::fs::remove_dir(&spill_dir);
    drop(registry);
}

/// The route stage picks a case's partition itself (to know whether it applies the record here);
/// an instance of an earlier build leaves the choice to librdkafka. Both must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_stage_picks_the_cases_partition_librdkafkas_default_partitioner_picks() {
    use rdkafka::producer::FutureRecord;
    let broker = Broker::start();
    let topic = "partitioner-check";
    broker.create_topic(topic, 7);
    let p = producer(&broker.bootstrap());
    let keys: Vec<String> = (0..40)
        .map(|n| ids::lead_id("usmf", &format!("prospect-{n}")))
        .chain(["a", "lead-1", "0"].map(String::from))
        .collect();
    for key in &keys {
        let delivery = p
            .send(
                FutureRecord::to(topic).key(key.as_str()).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        assert_eq!(
            delivery.partition,
            partner_sync::runtime::partitioner::partition_of(key.as_bytes(), 7),
            "key {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letters_with_their_bytes_and_the_partition_keeps_flowing() {
    poison_records(true).await
}

/// The same, with every record read back from the cases topic: a record bad past its leading ids
/// reaches the dead letters from there with the original topic, bytes, key and headers rebuilt
/// from the cases record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_read_back_from_the_cases_topic_reach_the_dead_letters_as_they_were_written()
{
    poison_records(false).await
}

async fn poison_records(local_apply: bool) {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let p = producer(&broker.bootstrap());
    let topics =
        partner_sync::runtime::Topics::new(&partner_sync::settings::Settings::defaults().topics);
    let lead_topic = topics
        .input_topic(partner_sync::model::SourceKind::Lead)
        .to_string();
    // The same key as a real lead, so the poison sits in the same partition, before real records.
    let key = ids::lead_id("usrt", "PR-100000");
    produce_raw(&p, &lead_topic, &key, b"{\"leadid\": \"not avro\"}").await;
    produce_raw(&p, &lead_topic, &key, &[0, 0, 0, 0x30, 0x39, 1, 2, 3]).await; // schema id 12345: unknown
    let events = story::generate(4, 6, &EngineConfig::defaults(), START_MS).clean();
    // A lead whose header and leadid are whole but whose record is cut short: the route stage reads
    // only as far as the case key, so this one goes to the dead letters from the apply stage.
    let lead = events
        .iter()
        .find(|e| e.kind() == SourceKind::Lead)
        .expect("the story has a lead");
    let body = partner_sync::codec::Codec::new()
        .encode_event(lead)
        .unwrap();
    let cut = partner_sync::registry::wire::frame(ids[&SourceKind::Lead], &body[..body.len() - 3]);
    produce_raw(&p, &lead_topic, &key, &cut).await;
    produce(&p, &ids, &events).await;
    let expected = expected_commands(&events);

    let mut settings = settings(&broker.bootstrap(), &registry.url(), "poison");
    settings.delivery.local_apply = local_apply;
    let connector = InProcess::start(settings);
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(60))
    });
    assert_same_commands(&expected, &seen);
    block_in_place(|| {
        read_until(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(30),
            |r| r.len() >= 3,
        )
    });
    // Read whole once the three are there: a fourth would be seen.
    let dead = block_in_place(|| {
        read_to_end(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(30),
        )
    });
    assert_eq!(dead.len(), 3, "exactly the three poison records");
    let by_reason = |reason: &str| {
        dead.iter()
            .find(|d| d.header("partnersync.errors.reason").as_deref() == Some(reason))
            .cloned()
    };
    let json = by_reason("bad_wire_format").expect("the JSON record");
    assert_eq!(
        json.value, b"{\"leadid\": \"not avro\"}",
        "original bytes kept"
    );
    assert_eq!(
        json.key.as_deref(),
        Some(key.as_bytes()),
        "original key kept"
    );
    assert_eq!(
        json.header("traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        json.header("__connect.errors.topic").as_deref(),
        Some(lead_topic.as_str())
    );
    assert_eq!(
        json.header("__connect.errors.stage").as_deref(),
        Some("VALUE_CONVERTER")
    );
    assert!(
        json.header("__connect.errors.offset").is_some()
            && json.header("__connect.errors.partition").is_some()
    );
    let cut_short = by_reason("undecodable").expect("the lead cut short");
    assert_eq!(cut_short.value, cut, "original bytes kept");
    assert_eq!(cut_short.key.as_deref(), Some(key.as_bytes()));
    assert_eq!(
        cut_short.header("__connect.errors.topic").as_deref(),
        Some(lead_topic.as_str()),
        "the input topic it came from, not the cases topic"
    );
    assert_eq!(
        cut_short.header("traceparent"),
        json.header("traceparent"),
        "its own headers kept through the cases topic"
    );
    assert!(cut_short
        .header("__connect.errors.exception.message")
        .unwrap()
        .contains("not a valid"));
    let unknown = by_reason("unknown_schema").expect("the record with an unknown schema id");
    assert!(unknown
        .header("__connect.errors.exception.message")
        .unwrap()
        .contains("12345"));
    connector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_errors_tolerance_none_the_first_bad_record_stops_the_connector_with_a_clear_error() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, _ids) = registry().await;
    let p = producer(&broker.bootstrap());
    let topics =
        partner_sync::runtime::Topics::new(&partner_sync::settings::Settings::defaults().topics);
    produce_raw(
        &p,
        topics.input_topic(partner_sync::model::SourceKind::Contact),
        "c-1",
        b"not avro",
    )
    .await;
    let mut settings = settings(&broker.bootstrap(), &registry.url(), "tolerance-none");
    settings.delivery.errors_tolerance = partner_sync::settings::ErrorsTolerance::None;
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        partner_sync::runtime::run(settings, std::future::pending()),
    )
    .await;
    let error = result
        .expect("the connector stops by itself")
        .expect_err("it stops with an error");
    let text = error.to_string();
    assert!(
        text.contains("errors_tolerance") && text.contains("sales.contact.changes"),
        "{text}"
    );
    let dead = block_in_place(|| {
        read_until(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(3),
            |r| !r.is_empty(),
        )
    });
    assert!(
        dead.is_empty(),
        "with tolerance none nothing goes to the dead letters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_outputs_pause_intake_instead_of_buffering_and_nothing_is_lost() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(23, 8, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    produce(&producer(&broker.bootstrap()), &ids, &events).await;
    let mut settings = settings(&broker.bootstrap(), &registry.url(), "backpressure");
    // At most four records in flight: intake pauses again and again while outputs are acknowledged.
    settings.delivery.max_in_flight = 4;
    let connector = InProcess::start(settings);
    let (seen, total) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(120))
    });
    let stats = connector.stop_expecting(&expected, &seen).await;
    assert_eq!(total, expected.len());
    // With four in flight at most, one record may be held for a fence at a time: the others take
    // the hop behind it and new fences follow, again and again. The first record routed to each
    // partition is always held, and then applied here.
    assert_paused_and_applied_all(&stats, events.len());
    assert!(
        stats.value(names::APPLIED, &[("path", "local")]) > 0,
        "{}",
        stats.summary()
    );
}

/// A backfill read topic by topic hands the connector whole partitions of contacts before the
/// leads they belong to. Routed in timestamp order (the order window), nothing has to wait parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_loaded_topic_by_topic_is_routed_in_timestamp_order_and_nothing_parks() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(33, 30, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    // Later records first: every contact, account and opportunity is on Kafka before any lead or
    // prospect, each stamped with its change time.
    let p = producer(&broker.bootstrap());
    for kind in [
        SourceKind::Contact,
        SourceKind::Account,
        SourceKind::Opportunity,
        SourceKind::Lead,
        SourceKind::Prospect,
    ] {
        let of_kind: Vec<ChangeEvent> = events
            .iter()
            .filter(|e| e.kind() == kind)
            .cloned()
            .collect();
        produce_stamped(&p, &ids, &of_kind).await;
    }
    let waiting_for_leads = events
        .iter()
        .filter(|e| matches!(e.kind(), SourceKind::Contact | SourceKind::Account))
        .count();
    assert!(waiting_for_leads > 0, "the story has contacts and accounts");

    let mut settings = settings(&broker.bootstrap(), &registry.url(), "backfill-order");
    // A loaded machine may take longer than the default 200 ms for the first fetch of a partition.
    settings.delivery.order_wait_ms = 5_000;
    let connector = InProcess::start(settings);
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    let stats = connector.stop_expecting(&expected, &seen).await;
    assert_eq!(
        stats.value(names::PARKED, &[]),
        0,
        "no event waited for its lead:\n{}",
        stats.summary()
    );
    drop(registry);
}

/// A backlog larger than the order window, that one fetch would return whole, with few records
/// allowed in flight. The input partitions wait, paused, until the fences written at the
/// assignment are back, so no record is held or takes the hop: every one is applied here.
/// Unpaused, the fences were queued behind the whole backlog; the records routed meanwhile were
/// held, intake paused with the window full, and the connector stopped for good (3 of 9 runs of
/// this test before ecdd2e0; a 182,000-event drain in the end-to-end benchmark, with 64 MiB
/// fetches and a 16 MiB window, waited on its fences for 15 minutes). With ecdd2e0 and no pause it
/// completed with 20 of its 197 records applied here, the rest through the hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_wait_for_the_fences_so_a_backlog_behind_a_full_window_is_applied_here_whole() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let events = story::generate(41, 30, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    produce_batched(&broker.bootstrap(), &ids, &events).await;
    let mut settings = settings(&broker.bootstrap(), &registry.url(), "held-behind-window");
    // The window is over its bound at its first record; intake pauses past 40 in flight (10 of
    // them held at most).
    settings.delivery.order_window_kib = 1;
    settings.delivery.max_in_flight = 40;
    // One fetch returns every input partition whole, and librdkafka fetches nothing more (the
    // fences included) until its queue is nearly empty: as in the benchmark's 182,000-event
    // drain, where the first response held ~55 MB and the queue's bound was 16 MiB (1 MiB since
    // af19515, `kafka.prefetch_kib`).
    let extra = &mut settings.kafka.extra;
    for key in ["max.partition.fetch.bytes", "fetch.max.bytes"] {
        extra.insert(key.to_string(), (64 << 20).to_string());
    }
    extra.insert("queued.max.messages.kbytes".to_string(), "16".to_string());
    let connector = InProcess::start(settings);
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(60))
    });
    let stats = connector.stop_expecting(&expected, &seen).await;
    assert_paused_and_applied_all(&stats, events.len());
    assert_eq!(
        stats.value(names::APPLIED, &[("path", "local")]),
        events.len() as u64,
        "no record waited for a fence or took the hop: {}",
        stats.summary()
    );
    drop(registry);
}

/// Intake paused at least once, and every one of the `events` input records was applied once.
fn assert_paused_and_applied_all(stats: &partner_sync::runtime::stats::Stats, events: usize) {
    assert!(
        stats.value(names::INTAKE_PAUSES, &[]) > 0,
        "intake paused: {}",
        stats.summary()
    );
    assert_eq!(
        stats.value(names::APPLIED, &[]),
        events as u64,
        "{}",
        stats.summary()
    );
}

/// Produces `events` stamped, all queued at once so that they leave in large batches, as a bulk
/// load does: one fetch then returns a partition whole. (The connector here never fetches from
/// inside a batch: a new group starts at the earliest offset.)
async fn produce_batched(
    bootstrap: &str,
    ids: &std::collections::BTreeMap<SourceKind, u32>,
    events: &[ChangeEvent],
) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .create()
        .unwrap();
    let (codec, topics) = (Codec::new(), Topics::new(&Settings::defaults().topics));
    let mut queued = Vec::new();
    for e in events {
        let value = wire::frame(ids[&e.kind()], &codec.encode_event(e).unwrap());
        let record = FutureRecord::to(topics.input_topic(e.kind()))
            .key(e.entity_id())
            .payload(&value)
            .timestamp(e.header().modified_on);
        queued.push(p.send_result(record).map_err(|(e, _)| e).expect("queued"));
    }
    for delivery in queued {
        delivery.await.unwrap().expect("produce an input");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_comes_due_with_time_is_written_by_the_running_connector_once() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let cfg = EngineConfig::defaults();
    // A prospect and its lead, qualified without an opportunity; none ever arrives.
    let events: Vec<ChangeEvent> = story::generate_case(31, 0, story::Path::Won, &cfg, START_MS)
        .causal()
        .into_iter()
        .filter_map(|e| match e {
            ChangeEvent::Lead(mut c) => {
                c.record.qualifyingopportunityid = None;
                Some(ChangeEvent::Lead(c))
            }
            e @ ChangeEvent::Prospect(_) => Some(e),
            _ => None,
        })
        .collect();
    // The oracle: the engine's commands, then the alert that comes due once the grace is over.
    let engine = partner_sync::engine::Engine::new(cfg.clone());
    let mut state = partner_sync::engine::EngineState::default();
    for e in &events {
        engine.apply(&mut state, e.clone(), START_MS);
    }
    let due = engine.overdue(&mut state, START_MS + 86_400_000).commands;
    assert_eq!(due.len(), 1, "{due:?}");
    let mut expected = expected_commands(&events);
    assert!(
        !expected.values().any(|c| c.kind().as_str() == "alert"),
        "no alert at once"
    );
    let alert_id = due[0].command_id().to_string();
    expected.insert(alert_id.clone(), due[0].clone());

    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &events).await;
    let mut overdue = settings(&broker.bootstrap(), &registry.url(), "overdue");
    overdue.decisions.opportunity_grace_seconds = 1;
    let connector = InProcess::start(overdue.clone());
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(60))
    });
    // The message says how long it waited (wall-clock here): compare the rest.
    let (Some(partner_sync::model::Command::Alert(got)), partner_sync::model::Command::Alert(want)) =
        (seen.get(&alert_id), &due[0])
    else {
        panic!("the alert {alert_id} did not arrive: {seen:?}");
    };
    assert_eq!(
        (&got.kind, &got.prospect_id, &got.caused_by),
        (&want.kind, &want.prospect_id, &want.caused_by)
    );
    let stats = connector.stop().await.expect("the connector stops cleanly");
    assert_eq!(
        stats.value(names::ALERTS, &[("kind", "qualified_without_opportunity")]),
        1,
        "{}",
        stats.summary()
    );
    // Its case was written without the wait: a restarted connector raises the alert no more.
    let connector = InProcess::start(overdue);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = connector.stop().await.expect("the connector stops cleanly");
    assert_eq!(stats.value(names::ALERTS, &[]), 0, "{}", stats.summary());
    let alerts = Topics::new(&Settings::defaults().topics)
        .command_topic(partner_sync::model::CommandKind::Alert)
        .to_string();
    let written =
        block_in_place(|| read_to_end(&broker.bootstrap(), &alerts, Duration::from_secs(30)));
    assert_eq!(written.len(), 1, "one alert, once");
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_that_waits_too_long_reaches_the_dead_letter_topic_with_its_bytes() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let topics = Topics::new(&Settings::defaults().topics);
    let cfg = EngineConfig::defaults();
    // A contact whose lead never arrives: it parks (lead_not_seen) and expires after 1 s.
    let contact = story::generate_case(41, 0, story::Path::Won, &cfg, START_MS)
        .causal()
        .into_iter()
        .find(|e| e.kind() == SourceKind::Contact)
        .expect("a won case has a contact");
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, std::slice::from_ref(&contact)).await;
    let mut expiring = settings(&broker.bootstrap(), &registry.url(), "expiry");
    expiring.parking.timeout_seconds = 1;
    let connector = InProcess::start(expiring);
    block_in_place(|| {
        read_until(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(60),
            |r| !r.is_empty(),
        )
    });
    let stats = connector.stop().await.expect("the connector stops cleanly");
    let dead = block_in_place(|| {
        read_to_end(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(30),
        )
    });
    assert_eq!(dead.len(), 1, "the one expired event");
    let dl = &dead[0];
    let original = wire::frame(
        ids[&SourceKind::Contact],
        &Codec::new().encode_event(&contact).unwrap(),
    );
    assert_eq!(dl.value, original, "its original bytes");
    assert_eq!(dl.key.as_deref(), Some(contact.entity_id().as_bytes()));
    assert_eq!(
        dl.header("partnersync.errors.reason").as_deref(),
        Some("parking_expired")
    );
    assert_eq!(
        dl.header("__connect.errors.topic").as_deref(),
        Some(topics.input_topic(SourceKind::Contact))
    );
    assert!(
        dl.header("__connect.errors.exception.message")
            .unwrap()
            .contains("the lead it was qualified from (originatingleadid) never arrived"),
        "{:?}",
        dl.header("__connect.errors.exception.message")
    );
    assert_eq!(
        stats.value(names::PARKED_EXPIRED, &[("reason", "lead_not_seen")]),
        1,
        "{}",
        stats.summary()
    );
    // Its parked entry was deleted: the state topic's last record for it is a tombstone.
    let state =
        block_in_place(|| read_to_end(&broker.bootstrap(), &topics.state, Duration::from_secs(30)));
    let parked: Vec<&Read> = state
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"parked/")))
        .collect();
    assert_eq!(parked.len(), 2, "written when it parked, then a tombstone");
    assert!(parked[1].value.is_empty(), "the last one is a tombstone");
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_input_goes_to_the_dead_letters_without_its_value_and_the_records_behind_it_flow(
) {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let topics = Topics::new(&Settings::defaults().topics);
    let cfg = EngineConfig::defaults();
    let events = story::generate(43, 6, &cfg, START_MS).clean();
    let expected = expected_commands(&events);
    let big = large_record_producer(&broker.bootstrap());
    let prospect_topic = topics.input_topic(SourceKind::Prospect).to_string();
    // 5 MiB of noise, and a valid prospect whose comments are 5 MiB, ahead of the story.
    let noise = noise(5 * 1024 * 1024);
    let mut long = events
        .iter()
        .find_map(|e| match e {
            ChangeEvent::Prospect(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    long.record.prospect_id = "PR-BIG".into();
    long.record.comments = Some("x".repeat(5 * 1024 * 1024));
    let long_value = wire::frame(
        ids[&SourceKind::Prospect],
        &Codec::new()
            .encode_event(&ChangeEvent::Prospect(long))
            .unwrap(),
    );
    for value in [&noise, &long_value] {
        big.send(
            FutureRecord::to(&prospect_topic)
                .key("big")
                .payload(value.as_slice()),
            Duration::from_secs(30),
        )
        .await
        .expect("the broker takes a 5 MiB record");
    }
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &events).await;

    let settings = settings(&broker.bootstrap(), &registry.url(), "oversized");
    let connector = InProcess::start(settings.clone());
    let (seen, total) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    assert_eq!(total, expected.len(), "every command of the story, once");
    connector.stop_expecting(&expected, &seen).await;
    let dead = block_in_place(|| {
        read_to_end(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(30),
        )
    });
    assert_eq!(dead.len(), 2, "the two oversized records");
    for (dl, original) in dead.iter().zip([&noise, &long_value]) {
        assert!(dl.value.is_empty(), "the value is left out");
        assert_eq!(dl.key.as_deref(), Some(b"big".as_slice()));
        assert_eq!(
            dl.header("partnersync.errors.reason").as_deref(),
            Some("oversized_input")
        );
        assert_eq!(
            dl.header("partnersync.errors.value.size"),
            Some(original.len().to_string())
        );
        assert_eq!(
            dl.header("partnersync.errors.value.sha1").map(|s| s.len()),
            Some(40)
        );
        assert_eq!(
            dl.header("__connect.errors.topic").as_deref(),
            Some(prospect_topic.as_str())
        );
        assert!(dl.header("__connect.errors.offset").is_some());
    }
    assert_ne!(
        dead[0].header("partnersync.errors.value.sha1"),
        dead[1].header("partnersync.errors.value.sha1")
    );
    // A restart reads on from the committed offsets: nothing stops on the oversized records.
    assert_a_restart_runs(settings).await;
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_that_cannot_run_writes_nothing_before_it_stops() {
    let broker = Broker::start();
    let topics = Topics::new(&Settings::defaults().topics);
    let missing = topics
        .command_topic(partner_sync::model::CommandKind::CustomerHierarchy)
        .to_string();
    for t in topics.all() {
        if t != missing {
            let partitions = pipeline_partitions(&topics, t);
            broker.create_topic(t, partitions);
        }
    }
    let (registry, _) = registry().await;
    let connector = InProcess::start(settings(&broker.bootstrap(), &registry.url(), "nothing"));
    let error = connector
        .ends_by_itself(Duration::from_secs(60))
        .await
        .expect_err("a start-up with a topic missing stops");
    assert_eq!(error.exit_code(), 2, "a setup fault: {error}");
    assert!(
        error.to_string().contains(&missing),
        "the sentence names the missing topic: {error}"
    );
    for topic in [&topics.cases, &topics.state, &topics.dead_letters] {
        let written =
            block_in_place(|| read_to_end(&broker.bootstrap(), topic, Duration::from_secs(30)));
        assert!(
            written.is_empty(),
            "nothing written to {topic}: {} records",
            written.len()
        );
    }
    drop(registry);
}
