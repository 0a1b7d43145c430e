//! `partner-sync demo`: the whole story on an embedded cluster, in one command.
//!
//! It starts librdkafka's in-process mock Kafka cluster and the in-process Schema Registry, then runs
//! the real connector — [`crate::runtime::run_with`], with the same settings loading as `run` (your
//! `--config` file and `PARTNER_SYNC__…` variables apply) — and replays a seeded onboarding story:
//! partner requests, leads qualified and won, disqualified for every reason, opportunities lost, a
//! requester who applies twice, re-delivered and early-arriving events, the connector's own writes
//! coming back, and one record that is not Avro at all. At the end it prints what happened and
//! checks it two ways: the outcomes against the story's own labels (which cases were won,
//! disqualified or lost: an oracle apart from the engine), and every command, whole, against what
//! the pure engine decides for the same deliveries, with any command id written with two
//! different contents counted.
//!
//! The demo is one instance: its cases and state topics have one partition.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::codec::{Codec, EVENT_SCHEMAS};
use crate::engine::{Disposition, Engine, EngineState};
use crate::mapping::EngineConfig;
use crate::model::{ChangeEvent, Command, CommandKind, SourceKind};
use crate::registry::fake::FakeRegistry;
use crate::registry::wire;
use crate::runtime::stats::names;
use crate::runtime::{Stats, Topics};
use crate::settings::Settings;
use crate::story::{self, Path, Rng};

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub prospects: usize,
    pub seed: u64,
    pub settings: Settings,
    pub hold: bool,
}

/// One row of the summary: what the story implies and what the connector did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub label: String,
    /// What the story implies; `None` for figures shown for information (skips depend on arrival order).
    pub expected: Option<u64>,
    pub actual: u64,
}

/// The demo's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
    pub elapsed: Duration,
    pub records: usize,
}

impl Report {
    pub fn all_match(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.expected.is_none_or(|e| e == r.actual))
    }

    /// The summary table, for stdout.
    pub fn table(&self) -> String {
        let mut out = format!("\n{:<58} {:>9} {:>9}\n", "", "expected", "actual");
        for r in &self.rows {
            let (expected, mark) = match r.expected {
                Some(e) if e == r.actual => (e.to_string(), "ok"),
                Some(e) => (e.to_string(), "MISMATCH"),
                None => ("-".to_string(), ""),
            };
            out.push_str(&format!(
                "{:<58} {:>9} {:>9}  {mark}\n",
                r.label, expected, r.actual
            ));
        }
        out.push_str(&format!(
            "\n{} input records in {:.1} s. {}\n",
            self.records,
            self.elapsed.as_secs_f64(),
            if self.all_match() {
                "Every count matches: the story's outcomes, and the engine's decisions command by command."
            } else {
                "Some counts do not match."
            }
        ));
        out
    }
}

/// What the story's own labels say must happen, apart from any rule the engine applies.
#[derive(Debug, Clone, Copy, Default)]
struct Labels {
    cases: u64,
    won: u64,
    /// Disqualified or lost: each a rejection and one email.
    rejected: u64,
    /// Won cases whose requester already is another won case's: held, not approved.
    repeat_requesters: u64,
}

/// The records to deliver, in order, with the undecodable one marked as `None`; how many were
/// re-delivered; and what the story's labels say.
fn deliveries(opts: &DemoOptions, cfg: &EngineConfig) -> (Vec<Option<ChangeEvent>>, usize, Labels) {
    let start = 1_772_442_000_000;
    let mut story = story::generate(opts.seed, opts.prospects, cfg, start);
    // A requester who applies twice: a second prospect, won as well, with the first one's email.
    if let Some(first_won) = story.cases.iter().position(|c| c.path == Path::Won) {
        let mut twin = story::generate_case(
            opts.seed ^ 0x5eed,
            opts.prospects,
            Path::Won,
            cfg,
            start + 3_600_000,
        );
        let email = match &story.cases[first_won].streams[0][0] {
            ChangeEvent::Prospect(p) => p.record.primary_email_address.clone(),
            _ => None,
        };
        if let ChangeEvent::Prospect(p) = &mut twin.streams[0][0] {
            p.record.primary_email_address = email;
        }
        story.cases.push(twin);
    }
    let won = story.cases.iter().filter(|c| c.path == Path::Won).count() as u64;
    let labels = Labels {
        cases: story.cases.len() as u64,
        won,
        rejected: story.cases.len() as u64 - won,
        // The twin is its requester's second won case (it starts an hour after the first).
        repeat_requesters: u64::from(story.cases.len() > opts.prospects),
    };
    let mut rng = Rng::new(opts.seed.wrapping_add(1));
    let mut out: Vec<Option<ChangeEvent>> = Vec::new();
    for case in &story.cases {
        let mut events = case.causal();
        // About one case in ten: Sales events arrive before the prospect they belong to.
        if rng.below(10) == 0 && events.len() > 2 {
            let prospect = events.remove(0);
            events.push(prospect);
        }
        out.extend(events.into_iter().map(Some));
    }
    // About one event in thirty is delivered twice, later.
    let redeliveries: Vec<Option<ChangeEvent>> =
        out.iter().filter(|_| rng.below(30) == 0).cloned().collect();
    let redelivered = redeliveries.len();
    for (i, e) in redeliveries.into_iter().enumerate() {
        let at = (out.len() / 2 + i * 7).min(out.len());
        out.insert(at, e);
    }
    out.insert(out.len() / 3, None);
    (out, redelivered, labels)
}

/// What the pure engine decides for the same deliveries: its commands by id, and how many events
/// it rejects.
fn expected(
    cfg: &EngineConfig,
    events: &[Option<ChangeEvent>],
) -> (BTreeMap<String, Command>, u64) {
    let engine = Engine::new(cfg.clone());
    let mut state = EngineState::default();
    let mut decided = BTreeMap::new();
    let mut rejected = 0;
    for e in events.iter().flatten() {
        let d = engine.apply(&mut state, e.clone(), 0);
        // Rejected on arrival, or parked and found invalid once released: both are dead letters.
        let released = d.released.iter().map(|r| &r.disposition);
        rejected += std::iter::once(&d.disposition)
            .chain(released)
            .filter(|d| matches!(d, Disposition::Rejected(_)))
            .count() as u64;
        for c in d.commands {
            decided.insert(c.command_id().to_string(), c);
        }
    }
    (decided, rejected)
}

fn count_commands<'c>(
    counts: &mut BTreeMap<String, u64>,
    commands: impl IntoIterator<Item = &'c Command>,
) {
    for c in commands {
        let key = match c {
            Command::LeadUpsert(l) if l.is_create => "leads created".to_string(),
            Command::LeadUpsert(_) => "leads updated".to_string(),
            Command::CustomerUpsert(u) => format!("customer upserts: {}", u.party_type),
            Command::ProspectStatus(s) if s.status == "Approved" => {
                "prospects approved".to_string()
            }
            Command::ProspectStatus(s) => format!("prospects rejected: {}", s.reason),
            Command::Alert(a) => format!("alerts: {}", a.kind.as_str()),
            other => other.kind().as_str().replace('_', " "),
        };
        *counts.entry(key).or_default() += 1;
    }
}

/// Runs the demo. Progress goes to stderr; the returned report is for stdout.
pub async fn run(opts: DemoOptions, stats: Arc<Stats>) -> Result<Report, String> {
    let started = Instant::now();
    let cluster =
        MockCluster::new(1).map_err(|e| format!("cannot start the embedded Kafka cluster: {e}"))?;
    let topics = Topics::new(&opts.settings.topics);
    for t in topics.all() {
        let partitions = if t == topics.cases || t == topics.state {
            1
        } else {
            3
        };
        cluster
            .create_topic(t, partitions, 1)
            .map_err(|e| format!("cannot create topic {t}: {e}"))?;
    }
    let registry = FakeRegistry::start(0)
        .await
        .map_err(|e| format!("cannot start the embedded Schema Registry: {e}"))?;
    let mut ids = BTreeMap::new();
    for (kind, text) in EVENT_SCHEMAS {
        ids.insert(
            kind,
            registry
                .registry
                .register(&format!("{}-value", topics.input_topic(kind)), text)?,
        );
    }

    let mut settings = opts.settings.clone();
    settings.kafka.bootstrap_servers = cluster.bootstrap_servers();
    settings.registry.urls = vec![registry.url()];
    settings.registry.auto_register = true;
    // The embedded cluster does not answer DescribeConfigs; the demo made its state topic itself.
    settings.state.check_compaction = false;
    let cfg = EngineConfig::compile(&settings).map_err(|e| e.to_string())?;
    let (events, redelivered, labels) = deliveries(&opts, &cfg);
    let (engine_decided, expected_rejected) = expected(&cfg, &events);
    let mut expected_counts = BTreeMap::new();
    count_commands(&mut expected_counts, engine_decided.values());
    let prospects = events
        .iter()
        .flatten()
        .filter(|e| e.kind() == SourceKind::Prospect)
        .map(|e| e.entity_id().to_string());
    let requests = prospects.collect::<std::collections::BTreeSet<_>>().len() as u64;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let connector = tokio::spawn(crate::runtime::run_with(
        settings.clone(),
        stats.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "5")
        .create()
        .map_err(|e| e.to_string())?;
    let codec = Codec::new();
    for e in &events {
        let (topic, key, value) = match e {
            Some(e) => (
                topics.input_topic(e.kind()),
                e.entity_id().to_string(),
                wire::frame(
                    ids[&e.kind()],
                    &codec.encode_event(e).map_err(|x| x.to_string())?,
                ),
            ),
            None => (
                topics.input_topic(SourceKind::Lead),
                "not-avro".to_string(),
                b"{\"leadid\": \"this is JSON, not Avro\"}".to_vec(),
            ),
        };
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| format!("cannot write the story to {topic}: {e}"))?;
    }
    // Every record is acknowledged: the story's producer is done. Dropped now, its polling thread
    // (rust-rdkafka's, which spins through the end of each poll) does not idle on through `--hold`.
    drop(producer);

    // Wait until every record was routed and applied and nothing is in flight.
    let inputs = events.len() as u64;
    let routed_total = inputs - 1;
    let terminal = std::io::stderr().is_terminal();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        let applied = stats.value(names::APPLIED, &[]);
        // The cases topic's count first: the total, read after it, already includes at least
        // that many (read the other way round, a cases record consumed in between made the
        // difference negative, and the demo panicked).
        let hops = stats.value(names::CONSUMED, &[("topic", &topics.cases)]);
        let consumed = stats.value(names::CONSUMED, &[]) - hops;
        let commands = stats.value(names::COMMANDS, &[]);
        let done = consumed >= inputs && applied >= routed_total && stats.in_flight() == 0;
        if terminal {
            let width = 30;
            let filled = ((applied as f64 / routed_total.max(1) as f64) * width as f64) as usize;
            eprint!(
                "\r[{}{}] {applied}/{routed_total} events applied, {commands} commands",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width))
            );
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= Duration::from_secs(2) || done {
            eprintln!("progress: {consumed}/{inputs} records read, {applied}/{routed_total} events applied, {commands} commands");
            last_line = Instant::now();
        }
        if done {
            break;
        }
        if connector.is_finished() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if terminal {
        eprintln!();
    }
    if connector.is_finished() {
        return Err(format!(
            "the connector stopped: {:?}",
            connector.await.map_err(|e| e.to_string())?.err()
        ));
    }

    let (decided, conflicting) = read_commands(&cluster.bootstrap_servers(), &topics).await?;
    let mut actual_counts = BTreeMap::new();
    count_commands(&mut actual_counts, decided.values());
    let identical = engine_decided
        .iter()
        .filter(|(id, c)| decided.get(*id) == Some(c))
        .count() as u64;
    let undecided = decided
        .keys()
        .filter(|id| !engine_decided.contains_key(*id))
        .count() as u64;
    let actual = |label: &str| actual_counts.get(label).copied().unwrap_or(0);
    let rejections: u64 = actual_counts
        .iter()
        .filter(|(label, _)| label.starts_with("prospects rejected"))
        .map(|(_, n)| n)
        .sum();

    let prospect_records = events
        .iter()
        .flatten()
        .filter(|e| e.kind() == SourceKind::Prospect)
        .count() as u64;
    let echoes = events
        .iter()
        .flatten()
        .filter(|e| {
            e.header().modified_by == cfg.sales_user || e.header().modified_by == cfg.commerce_user
        })
        .count() as u64;
    let mut rows = vec![
        // The story's own labels, apart from the engine.
        Row {
            label: "story: a lead per case".into(),
            expected: Some(labels.cases),
            actual: actual("leads created"),
        },
        Row {
            label: "story: won cases approved (a repeat requester held)".into(),
            expected: Some(labels.won - labels.repeat_requesters),
            actual: actual("prospects approved"),
        },
        Row {
            label: "story: a hierarchy per approval".into(),
            expected: Some(labels.won - labels.repeat_requesters),
            actual: actual("customer hierarchy"),
        },
        Row {
            label: "story: disqualified or lost cases rejected".into(),
            expected: Some(labels.rejected),
            actual: rejections,
        },
        Row {
            label: "story: one rejection email per rejected case".into(),
            expected: Some(labels.rejected),
            actual: actual("rejection email"),
        },
        // Every command, whole, against the engine's decisions for the same deliveries.
        Row {
            label: "engine: commands written identical to its decision".into(),
            expected: Some(engine_decided.len() as u64),
            actual: identical,
        },
        Row {
            label: "engine: commands it did not decide".into(),
            expected: Some(0),
            actual: undecided,
        },
        Row {
            label: "command ids written with two different contents".into(),
            expected: Some(0),
            actual: conflicting,
        },
        Row {
            label: "partner requests (prospect records read)".into(),
            expected: Some(prospect_records),
            actual: stats.value(
                names::CONSUMED,
                &[("topic", topics.input_topic(SourceKind::Prospect))],
            ),
        },
        Row {
            label: "distinct prospects".into(),
            expected: Some(requests),
            actual: actual_counts.get("leads created").copied().unwrap_or(0),
        },
    ];
    let mut labels: Vec<&String> = expected_counts.keys().chain(actual_counts.keys()).collect();
    labels.sort();
    labels.dedup();
    for label in labels {
        rows.push(Row {
            label: label.clone(),
            expected: Some(expected_counts.get(label).copied().unwrap_or(0)),
            actual: actual_counts.get(label).copied().unwrap_or(0),
        });
    }
    rows.push(Row {
        label: "skipped: echo (our own writes back)".into(),
        expected: Some(echoes),
        actual: stats.value(names::SKIPPED, &[("reason", "echo")]),
    });
    rows.push(Row {
        label: "dead letters: not in the wire format".into(),
        expected: Some(1),
        actual: stats.value(
            names::DEAD_LETTERS,
            &[("stage", "VALUE_CONVERTER"), ("reason", "bad_wire_format")],
        ),
    });
    rows.push(Row {
        label: "dead letters: rejected by the engine".into(),
        expected: Some(expected_rejected),
        actual: stats.value(names::DEAD_LETTERS, &[("stage", "TRANSFORMATION")]),
    });
    for (labels, value) in stats.series(names::SKIPPED) {
        let (rule, reason) = (&labels["rule"], &labels["reason"]);
        if reason != "echo" && value > 0.0 {
            rows.push(Row {
                label: format!("skipped: {reason} ({rule})"),
                expected: None,
                actual: value as u64,
            });
        }
    }
    rows.push(Row {
        label: "re-delivered records in the story".into(),
        expected: None,
        actual: redelivered as u64,
    });
    for (path, label) in [
        ("local", "applied where routed (no cases hop)"),
        ("hop", "applied through the cases topic"),
    ] {
        rows.push(Row {
            label: label.into(),
            expected: None,
            actual: stats.value(names::APPLIED, &[("path", path)]),
        });
    }

    if opts.hold {
        eprintln!(
            "Holding: the connector keeps running; browse /metrics at {}. Press Ctrl-C to stop.",
            opts.settings.telemetry.listen
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = connector.await;
    drop(registry);
    drop(cluster);
    Ok(Report {
        rows,
        elapsed: started.elapsed(),
        records: events.len(),
    })
}

/// Reads every command the connector wrote, by command id, with one consumer assigned to every
/// partition of every command topic (no group join to wait for); also returns how many ids were
/// written with two different contents (a repeat of the same bytes is at-least-once, not a
/// conflict).
async fn read_commands(
    bootstrap: &str,
    topics: &Topics,
) -> Result<(BTreeMap<String, Command>, u64), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let bootstrap = bootstrap.to_string();
    let kinds: BTreeMap<String, CommandKind> = CommandKind::ALL
        .iter()
        .map(|k| (topics.command_topic(*k).to_string(), *k))
        .collect();
    tokio::task::spawn_blocking(move || {
        let codec = Codec::new();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "partner-sync-demo-reader")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for topic in kinds.keys() {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut seen: BTreeMap<String, Command> = BTreeMap::new();
        let mut conflicting = std::collections::BTreeSet::new();
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(1500) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                quiet = Instant::now();
                let kind = kinds[m.topic()];
                let (_, body) = wire::split(m.payload()).map_err(|e| e.to_string())?;
                let c = codec
                    .decode_command(kind, body)
                    .map_err(|e| e.to_string())?;
                let id = c.command_id().to_string();
                if seen.get(&id).is_some_and(|first| *first != c) {
                    conflicting.insert(id.clone());
                }
                seen.entry(id).or_insert(c);
            }
        }
        Ok((seen, conflicting.len() as u64))
    })
    .await
    .map_err(|e| e.to_string())?
}
