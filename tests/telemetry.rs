//! What operators see, against a running connector on a real broker (Tansu over TCP):
//!
//! - every metric the Grafana dashboard and the Prometheus alerts name is exported by `/metrics`
//!   after traffic (the dashboard and alerts are read from the Helm chart's files, so a renamed
//!   metric fails here, not in someone's empty panel);
//! - `/health/live` and `/health/ready` answer 200 while it runs, and ready says why not when no
//!   partitions are assigned;
//! - W3C `traceparent` continues from inputs to outputs (same trace, our own span id);
//! - a dead letter's JSON log line carries a span naming its record, change id and trace id.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use partner_sync::codec::Codec;
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{ChangeEvent, SourceKind};
use partner_sync::registry::wire;
use partner_sync::runtime::{endpoints, Stats, Topics};
use partner_sync::settings::Settings;
use partner_sync::story;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio::task::block_in_place;

const CHART_FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/partner-sync/files");
const INPUT_PARENT: &str = "00f067aa0ba902b7";

/// Log lines, captured from the process-wide JSON logger.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every `partnersync_*` or `process_*` metric name in `text` (PromQL or JSON).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("partnersync_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

fn trace_id(n: usize) -> String {
    format!("{:032x}", 0x4bf9_2f35_77b3_4da6_u128 << 16 | n as u128)
}

/// Produces `events` with a distinct W3C traceparent each (trace id from its position).
async fn produce_traced(
    p: &rdkafka::producer::FutureProducer,
    ids: &std::collections::BTreeMap<SourceKind, u32>,
    events: &[ChangeEvent],
) {
    let codec = Codec::new();
    let topics = Topics::new(&Settings::defaults().topics);
    for (n, e) in events.iter().enumerate() {
        let value = wire::frame(ids[&e.kind()], &codec.encode_event(e).unwrap());
        let traceparent = format!("00-{}-{INPUT_PARENT}-01", trace_id(n));
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(traceparent.as_str()),
        });
        let record = FutureRecord::to(topics.input_topic(e.kind()))
            .key(e.entity_id())
            .payload(&value)
            .headers(headers);
        p.send(record, Duration::from_secs(10)).await.unwrap();
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("the endpoint answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_connector_exports_every_metric_of_the_dashboard_and_alerts_and_propagates_traces(
) {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(partner_sync::logging::json_subscriber(
        "info",
        move || writer.clone(),
    ))
    .expect("the only logger of this test binary");

    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let mut events = story::generate(5, 12, &EngineConfig::defaults(), START_MS).clean();
    // One lead change the engine must reject (statecode 7 does not exist): a dead letter decided
    // inside the record's span, after its change id is known.
    // It follows the first lead change, while that lead is still open.
    let (at, mut bad) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            ChangeEvent::Lead(c) => Some((i, c.clone())),
            _ => None,
        })
        .expect("the story has leads");
    bad.header.change_id = "telemetry-invalid-lead".into();
    bad.header.modified_by = "a.sales.user@contoso.example".into();
    bad.header.version += 1;
    bad.record.statecode = 7;
    events.insert(at + 1, ChangeEvent::Lead(bad));
    let expected = expected_commands(&events);
    let p = producer(&broker.bootstrap());
    produce_traced(&p, &ids, &events).await;

    let mut settings = settings(&broker.bootstrap(), &registry.url(), "telemetry");
    settings.kafka.statistics_interval_ms = 300;
    let stats = Arc::new(Stats::new());
    let (_serving, address) =
        endpoints::start("127.0.0.1:0", stats.clone(), Duration::from_secs(60))
            .await
            .unwrap();
    let (status, body) = get(&format!("http://{address}/health/ready")).await;
    assert_eq!(status, 503, "not ready before partitions are assigned");
    assert!(body.contains("no partitions assigned"), "{body}");

    let connector = InProcess::start_with(settings, stats.clone());
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    assert_same_commands(&expected, &seen);

    // Metrics: wait (bounded) for a statistics report so the lag gauge has series, then compare.
    let mut wanted = BTreeSet::new();
    wanted.extend(metric_names(
        &std::fs::read_to_string(format!("{CHART_FILES}/dashboard.json")).unwrap(),
    ));
    let alerts: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{CHART_FILES}/alerts.yaml")).unwrap(),
    )
    .unwrap();
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            wanted.extend(metric_names(rule["expr"].as_str().unwrap()));
        }
    }
    assert!(
        wanted.len() > 15,
        "the dashboard and alerts name metrics: {wanted:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (exported, missing) = loop {
        let (status, scrape) = get(&format!("http://{address}/metrics")).await;
        assert_eq!(status, 200);
        let exported: BTreeSet<String> = scrape
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_string())
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (exported, missing.into_iter().cloned().collect::<Vec<_>>());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "named by the dashboard or alerts but not exported: {missing:?}\nexported: {exported:?}"
    );

    // Health while running.
    assert_eq!(get(&format!("http://{address}/health/live")).await.0, 200);
    let (status, body) = get(&format!("http://{address}/health/ready")).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // Trace context: every command continues its input's trace under a span of ours.
    let inputs: BTreeSet<String> = (0..events.len()).map(trace_id).collect();
    let topics = Topics::new(&Settings::defaults().topics);
    let leads = block_in_place(|| {
        read_until(
            &broker.bootstrap(),
            topics.command_topic(partner_sync::model::CommandKind::LeadUpsert),
            Duration::from_secs(30),
            |r| r.len() >= 3,
        )
    });
    assert!(!leads.is_empty());
    for r in &leads {
        let tp = r
            .header("traceparent")
            .expect("commands carry a traceparent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert!(
            inputs.contains(parts[1]),
            "the input's trace id continues: {tp}"
        );
        assert_ne!(parts[2], INPUT_PARENT, "our span, not the caller's: {tp}");
    }

    let stats = connector.stop().await.expect("clean stop");
    assert_eq!(
        stats.value(
            partner_sync::runtime::stats::names::DEAD_LETTERS,
            &[("stage", "TRANSFORMATION"), ("reason", "invalid_value")]
        ),
        1,
        "{}",
        stats.summary()
    );

    // JSON logs: the dead letter's warning carries a span naming its record and change id.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let dead_letter = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Record sent to the dead letters"))
        })
        .unwrap_or_else(|| panic!("a dead-letter warning was logged:\n{text}"));
    assert_eq!(dead_letter["level"], "WARN");
    // The same whether it was rejected on arrival or parked first (it may arrive before its lead's
    // prospect) and rejected once the case was complete: the span names the original record.
    assert_eq!(dead_letter["span"]["name"], "record", "{dead_letter}");
    assert_eq!(
        dead_letter["span"]["topic"],
        topics.input_topic(SourceKind::Lead),
        "{dead_letter}"
    );
    assert_eq!(dead_letter["span"]["change_id"], "telemetry-invalid-lead");
    assert!(
        inputs.contains(dead_letter["span"]["trace_id"].as_str().unwrap_or("")),
        "{dead_letter}"
    );
    drop(registry);
}
