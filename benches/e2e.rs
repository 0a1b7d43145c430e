//! End to end against a real broker (Tansu, started here), side by side with the raw-copy limit, in
//! one run: `cargo bench --bench e2e` (run `bash scripts/broker.sh install` first, or the test
//! command, which does). It prints a Markdown table; the README's performance table is that output.
//!
//! Workload: a realistic mix of change events — onboarding stories (prospects, leads, opportunities,
//! contacts, accounts moving through their lifecycle) plus, for every qualified case, repeated contact
//! edits (the bulk of a real feed). `E2E_PROSPECTS` sizes it (default 1,000 requests ≈ 15,000 events).
//!
//! Each of `E2E_ROUNDS` rounds (default 3) drains the same backlog three times, on fresh topics and
//! groups:
//! - raw copy: rdkafka BaseConsumer → BaseProducer in this process, bytes unchanged, the limit;
//! - the connector's writes copied: the same, but to the command and state topics the connector
//!   writes, as many records per input, committing as it does (`fan_out`): what the connector's
//!   traffic alone allows;
//! - partner-sync: the release binary as a child process (`partner-sync run`) with the full pipeline
//!   (route, engine with state in Kafka, commands, at-least-once commits), until its /metrics say every
//!   record was applied and acknowledged. Its CPU time and peak RSS come from /proc/<pid>.
//!
//! Both use the same client settings (fetch wait, linger, compression, idempotence), and both get
//! their producer id before they subscribe. How far each reads ahead is its own: the raw copy
//! fetches 64 MiB at a time into librdkafka's default 64 MiB queue (`READER_FETCH_BYTES`), the
//! connector as its defaults say (`kafka.prefetch_kib`, 1 MiB).
//!
//! Two drain rates are reported. "Including start-up" counts from subscribing (raw copy) or spawning
//! the process (connector). "Once running" counts from the first record taken in to the last one
//! finished: a backfill of millions of changes runs at that rate, and on this backlog (seconds
//! long) the fixed start-up (group join, process start) would otherwise weigh as much as the work.
//! The target applies to the second; the first stays in the table.
//!
//! Then a latency phase at fixed offered rates, each path on fresh topics of its own (Tansu 0.6's
//! fetch slows as a partition fills with batches, so topics that held the backlog would cost one
//! path more than the other): contact edits of known customers are produced at `rate` records/s,
//! and a reader measures, per edit, the time from handing the edit to the producer to reading its
//! result back (a copied record, or its customer command: one broker crossing inside, input →
//! commands, when the connector applies records where it routes them; two through the cases topic
//! otherwise). The connector of each rate is a fresh instance in a new group that restored the last
//! round's state; the 1,000 records/s one's resident memory at the end of its phase is the steady
//! memory.
//!
//! `E2E_ORDER_WINDOW_KIB` sets the connector's order window (default: the connector's, 16 MiB; 0
//! turns it off), `E2E_FETCH_KIB` its fetch sizes (see `connector_fetch_bytes`), and
//! `E2E_KAFKA_EXTRA="key=value,..."` any other librdkafka property of its clients. `E2E_LINGER_MS`
//! sets linger.ms for the drains' producers, the copies' and the connector's alike (default 5, the
//! connector's default).
//!
//! `E2E_TRACE=1` prints the connector's progress at every poll of each drain (see `trace_drain`).
//! `E2E_THREADS=1` prints the connector's CPU per record by thread name after each drain, with the
//! time each waited for a CPU and its context switches (see `thread_times`).
//!
//! `E2E_RESIDENT_CASES` sets the connector's `state.resident_cases` (0 holds every case in memory),
//! for an A/B of the spill file on one build.
//!
//! `E2E_CONNECTOR_BIN=/path/to/partner-sync` measures another build's connector on the same workload
//! (the raw copy and the load stay this build's), for an A/B of two commits run one after the other.
//!
//! It checks its own output: in every round, after its figures are taken, every command the pure
//! engine decides for the backlog is on Kafka, nothing else is on the command topics, and no two
//! different records share a command id; in the latency phase, every edit's command arrives. A
//! drain that does not finish within `E2E_DRAIN_TIMEOUT_S` (default 600 s) fails the run instead of
//! hanging.
//!
//! Tansu 0.6 holds every fetch for up to fetch.wait.max.ms even when it has data (it sleeps after
//! reading), so both sides use 10 ms; with Apache Kafka the default would do.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use partner_sync::codec::Codec;
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{Change, ChangeEvent, Command as Cmd, CommandKind, Contact, SourceKind};
use partner_sync::registry::wire;
use partner_sync::runtime::Topics;
use partner_sync::settings::Settings;
use partner_sync::story;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

/// The connector binary to measure: `E2E_CONNECTOR_BIN`, else the one this build made. Another
/// build's binary (say, the previous commit's, built in a worktree) gives an A/B on the same
/// workload: its config and flags must match this build's.
fn connector_bin() -> String {
    std::env::var("E2E_CONNECTOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_partner-sync").to_string())
}

/// linger.ms of the drains' producers, the copies' and the connector's alike (`E2E_LINGER_MS`,
/// default 5, the connector's own default).
fn linger_ms() -> u32 {
    env_usize("E2E_LINGER_MS", 5) as u32
}

/// fetch.wait.max.ms of every reader (`E2E_FETCH_WAIT_MS`, default 10).
fn fetch_wait_ms() -> usize {
    env_usize("E2E_FETCH_WAIT_MS", 10)
}
/// max.partition.fetch.bytes and fetch.max.bytes of the benchmark's own readers: the raw copy,
/// the copy of the connector's writes and the latency readers, whose prefetch queue stays at
/// librdkafka's default (64 MiB). Fetches larger than all the data here, as the limit in the
/// README's tables was measured.
const READER_FETCH_BYTES: u32 = 64 * 1024 * 1024;

/// The connector's fetch sizes, when `E2E_FETCH_KIB` sets them (max.partition.fetch.bytes and
/// fetch.max.bytes, under `[kafka.extra]`); otherwise its own defaults (`kafka.prefetch_kib`).
/// Builds before that setting read with 64 MiB fetches here, and a 64 MiB order window (see
/// `E2E_ORDER_WINDOW_KIB`): `E2E_FETCH_KIB=65536 E2E_ORDER_WINDOW_KIB=65536` measures as they did.
fn connector_fetch_bytes() -> Option<usize> {
    env_usize_set("E2E_FETCH_KIB").map(|kib| kib * 1024)
}
/// The connector's `delivery.commit_interval_ms` here, and how often the copy of its writes
/// commits.
const COMMIT_INTERVAL_MS: u64 = 200;

/// How long the drained connector idles before its RSS is read again (see the drain loop).
const AFTER_DRAIN: Duration = Duration::from_secs(2);
/// Where the load generator's warm-up record goes (see `warm_producer`).
const WARM_UP_TOPIC: &str = "bench.warm-up";
const EDITS_PER_CASE: usize = 12;
/// Offered rates of the latency phase, records/s, and how long each lasts.
const RATES: [(u32, u64); 2] = [(1_000, 10), (20_000, 3)];

fn env_usize(name: &str, default: usize) -> usize {
    env_usize_set(name).unwrap_or(default)
}

/// The number `name` holds, if it is set to one.
fn env_usize_set(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The backlog, and one contact change per qualified case (templates for latency edits).
fn workload() -> (Vec<ChangeEvent>, Vec<Change<Contact>>) {
    let cfg = EngineConfig::defaults();
    let mut events = Vec::new();
    let mut contacts = Vec::new();
    for case in story::generate(99, env_usize("E2E_PROSPECTS", 1_000), &cfg, START_MS).cases {
        let causal = case.causal();
        let contact: Option<Change<Contact>> = causal.iter().find_map(|e| match e {
            ChangeEvent::Contact(c) => Some(c.clone()),
            _ => None,
        });
        events.extend(causal);
        if let Some(c) = contact {
            for n in 0..EDITS_PER_CASE {
                events.push(ChangeEvent::Contact(edit(&c, n, "edit")));
            }
            contacts.push(c);
        }
    }
    (events, contacts)
}

fn edit(c: &Change<Contact>, n: usize, tag: &str) -> Change<Contact> {
    let mut e = c.clone();
    e.header.version += 100 + n as i64;
    e.header.change_id = format!("{}-{tag}-{n}", c.header.change_id);
    e.record.telephone1 = Some(format!("+1 206 {tag} {n:07}"));
    e
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn fast_producer(bootstrap: &str, linger_ms: u32) -> BaseProducer {
    client(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

/// A producer ready before the clock starts (the latency phase's load generator, the raw copy's
/// producer): an idempotent producer spends its first ~0.5 s on Tansu getting a producer id, and
/// records queued meanwhile waited that long. Measured per record, that start-up was the whole of
/// the old p99 (438 ms at 1,000/s for a raw copy whose steady p99 is a few ms), so a record to a
/// scratch topic is delivered first. (The connector does the same before it joins its group.)
fn warm_producer(bootstrap: &str, linger_ms: u32) -> BaseProducer {
    let producer = fast_producer(bootstrap, linger_ms);
    let mut record = BaseRecord::to(WARM_UP_TOPIC)
        .key("warm-up")
        .payload("warm-up");
    while let Err((_, back)) = producer.send(record) {
        producer.poll(Duration::from_millis(1));
        record = back;
    }
    finish(&producer);
    producer
}

/// Waits until everything `producer` queued is acknowledged (librdkafka's flush noticed the last
/// acknowledgement only at its next 100 ms or 1 s wake-up). A poll returns as soon as a delivery
/// report is served; 20 ms, not 1: rust-rdkafka 0.39 spins through the last millisecond of each
/// poll, so 1 ms polls spun a core (the raw copy's CPU per record read 38.9 µs instead of ~5).
fn finish(producer: &BaseProducer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.in_flight_count() > 0 {
        assert!(Instant::now() < deadline, "the producer reaches the broker");
        producer.poll(Duration::from_millis(20));
    }
}

/// Queues every event at once (ordered per partition by idempotence) and waits for all of them.
fn load(bootstrap: &str, ids: &BTreeMap<SourceKind, u32>, events: &[ChangeEvent]) {
    let codec = Codec::new();
    let topics = Topics::new(&Settings::defaults().topics);
    let producer = fast_producer(bootstrap, 5);
    for e in events {
        let value = wire::frame(ids[&e.kind()], &codec.encode_event(e).unwrap());
        // Stamped with the change's own time, as a change-data source stamps its records: the
        // connector routes a backlog in timestamp order across topics (`delivery.order_window_kib`).
        let mut record = BaseRecord::to(topics.input_topic(e.kind()))
            .key(e.entity_id())
            .payload(&value)
            .timestamp(e.header().modified_on);
        while let Err((_, back)) = producer.send(record) {
            producer.poll(Duration::from_millis(1));
            record = back;
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// CPU seconds (user + system) of a process so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of a process's main thread alone: the connector's pipeline loop runs there, and it
/// is the thread that bounds the drain.
fn main_thread_cpu_seconds(pid: &str) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/task/{pid}/stat"))
}

/// What one thread name's threads spent, summed: CPU seconds, seconds runnable but waiting for a
/// CPU (the scheduler's run delay, `/proc/<pid>/task/<tid>/schedstat`), and context switches,
/// voluntary (it waited for something) and not (it was preempted).
#[derive(Default)]
struct ThreadTimes {
    cpu: f64,
    run_delay: f64,
    voluntary: f64,
    preempted: f64,
}

/// [`ThreadTimes`] by thread name (librdkafka's and rust-rdkafka's threads are named), most CPU
/// first: printed after each drain with `E2E_THREADS=1`, to see where the connector's CPU goes and
/// whether its pipeline thread waited for a core.
fn thread_times(pid: &str) -> Vec<(String, ThreadTimes)> {
    let mut by_name: Vec<(String, ThreadTimes)> = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let path = task.path();
        let read = |file: &str| std::fs::read_to_string(path.join(file)).unwrap_or_default();
        let name = read("comm").trim().to_string();
        let cpu = stat_cpu_seconds(&path.join("stat").to_string_lossy());
        // schedstat: nanoseconds on a CPU, nanoseconds waiting on a run queue, time slices.
        let run_delay = read("schedstat")
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1e9;
        let status = read("status");
        let switches = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let times = ThreadTimes {
            cpu,
            run_delay,
            voluntary: switches("voluntary_ctxt_switches:"),
            preempted: switches("nonvoluntary_ctxt_switches:"),
        };
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => {
                total.cpu += times.cpu;
                total.run_delay += times.run_delay;
                total.voluntary += times.voluntary;
                total.preempted += times.preempted;
            }
            None => by_name.push((name, times)),
        }
    }
    by_name.sort_by(|a, b| b.1.cpu.total_cmp(&a.1.cpu));
    by_name
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command name start at "state" (field 3); utime is 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}

/// A /proc/<pid>/status figure in MiB (VmRSS, VmHWM).
fn memory_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Produces `m`'s key and value, unchanged, to `target`.
fn copy_to(producer: &BaseProducer, target: &str, m: &rdkafka::message::BorrowedMessage<'_>) {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(target);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(v) = m.payload() {
        record = record.payload(v);
    }
    while let Err((_, back)) = producer.send(record) {
        producer.poll(Duration::from_millis(1));
        record = back;
    }
}

/// How long a drain took: in all, and from the first record taken in to the last one finished.
struct Drain {
    total: Duration,
    running: Duration,
}

/// What a copy writes per record it reads: the plain copy's one record, or the connector's
/// writes without its work (`fan_out`).
type CopyWrite<'a> = dyn FnMut(&BaseProducer, &rdkafka::message::BorrowedMessage<'_>, usize) + 'a;

/// Drains `records` records of `inputs` through `write`, committing the group's offsets every
/// `commit_every` when given (as the connector does), else never (the limit).
fn raw_copy(
    bootstrap: &str,
    inputs: &[String],
    records: usize,
    group: &str,
    commit_every: Option<Duration>,
    write: &mut CopyWrite<'_>,
) -> Drain {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", fetch_wait_ms().to_string())
        .set("max.partition.fetch.bytes", READER_FETCH_BYTES.to_string())
        .set("fetch.max.bytes", READER_FETCH_BYTES.to_string())
        .create()
        .unwrap();
    let producer = warm_producer(bootstrap, linger_ms());
    let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&names).unwrap();
    let started = Instant::now();
    let mut first = None;
    let mut committed = Instant::now();
    let mut copied = 0;
    while copied < records {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            write(&producer, &m, copied);
            copied += 1;
        }
        producer.poll(Duration::ZERO);
        if commit_every.is_some_and(|every| committed.elapsed() >= every) {
            // Failures (none expected on loopback) would only repeat records on a restart.
            let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Async);
            committed = Instant::now();
        }
    }
    finish(&producer);
    Drain {
        total: started.elapsed(),
        running: first.expect("records copied").elapsed(),
    }
}

/// The connector's writes without its work: each input record, bytes unchanged, to the command
/// topic its kind mostly feeds (contacts and accounts to customers, prospects to leads, leads and
/// opportunities to prospect status; the connector writes 0.96 commands per input), and two in
/// five of them to the state topic as well (the connector writes 0.39–0.44 state entries per
/// input after coalescing). Offsets are committed every `COMMIT_INTERVAL_MS`, as the bench's
/// connector does.
/// What this reaches against the plain copy bounds what any connector writing these records can.
fn fan_out<'a>(inputs: &'a Topics, outputs: &'a Topics) -> Box<CopyWrite<'a>> {
    Box::new(move |producer, m, i| {
        let kind = inputs.kind_of(m.topic()).expect("an input topic");
        let command = match kind {
            SourceKind::Contact | SourceKind::Account => CommandKind::CustomerUpsert,
            SourceKind::Prospect => CommandKind::LeadUpsert,
            SourceKind::Lead | SourceKind::Opportunity => CommandKind::ProspectStatus,
        };
        copy_to(producer, outputs.command_topic(command), m);
        if i % 5 < 2 {
            copy_to(producer, &outputs.state, m);
        }
    })
}

/// The connector's configuration for one round: the round's topics (`suffix`), its metrics port,
/// and the group `bench<tag>`, read from the earliest offset. `own` names topics of its own, by
/// settings key (the latency phase's fresh inputs and customer commands, with the last round's
/// state).
fn connector_toml(
    bootstrap: &str,
    registry: &str,
    suffix: &str,
    port: u16,
    tag: &str,
    own: &[(&str, String)],
) -> (String, Topics) {
    let d = Settings::defaults().topics;
    let mut topics = String::from("[topics]\n");
    let mut put = |key: &str, name: String| {
        let name = own
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(name, |(_, n)| n.clone());
        topics.push_str(&format!("{key} = \"{name}\"\n"));
    };
    for (key, name) in [
        ("prospect_changes", &d.prospect_changes),
        ("lead_changes", &d.lead_changes),
        ("opportunity_changes", &d.opportunity_changes),
        ("contact_changes", &d.contact_changes),
        ("account_changes", &d.account_changes),
    ] {
        put(key, name.clone());
    }
    for (key, name) in [
        ("lead_commands", &d.lead_commands),
        ("annotation_commands", &d.annotation_commands),
        ("customer_commands", &d.customer_commands),
        ("prospect_status_commands", &d.prospect_status_commands),
        ("hierarchy_commands", &d.hierarchy_commands),
        ("notification_commands", &d.notification_commands),
        ("alerts", &d.alerts),
        ("dead_letters", &d.dead_letters),
        ("cases", &d.cases),
        ("state", &d.state),
    ] {
        put(key, format!("{name}{suffix}"));
    }
    let fetch_wait = fetch_wait_ms();
    let linger = linger_ms();
    let fetch = connector_fetch_bytes().map_or(String::new(), |b| {
        format!("\"max.partition.fetch.bytes\" = \"{b}\"\n\"fetch.max.bytes\" = \"{b}\"\n")
    });
    // `E2E_KAFKA_EXTRA="key=value,key=value"`: more librdkafka properties for the connector's
    // clients, for an A/B of a client setting on one build.
    let extra: String = std::env::var("E2E_KAFKA_EXTRA")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{}\" = \"{}\"\n", k.trim(), v.trim()))
        .collect();
    // `E2E_ORDER_WINDOW_KIB` sets delivery.order_window_kib (0 turns the window off); unset, the
    // build's default.
    let window = env_usize_set("E2E_ORDER_WINDOW_KIB")
        .map_or(String::new(), |kib| format!("order_window_kib = {kib}\n"));
    // `E2E_RESIDENT_CASES` sets state.resident_cases (0: every case in memory); unset, the
    // build's default, and no [state] section (which builds before it would refuse).
    let state = env_usize_set("E2E_RESIDENT_CASES").map_or(String::new(), |n| {
        format!("[state]\nresident_cases = {n}\n")
    });
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "bench{tag}"
auto_offset_reset = "earliest"
client_id = "bench{suffix}"
session_timeout_ms = 6000
fetch_wait_max_ms = {fetch_wait}
linger_ms = {linger}
statistics_interval_ms = 1000
[registry]
urls = ["{registry}"]
auto_register = true
[delivery]
commit_interval_ms = {COMMIT_INTERVAL_MS}
{window}{state}[telemetry]
listen = "127.0.0.1:{port}"
log_format = "json"
[kafka.extra]
{fetch}{extra}{topics}"#
    );
    let settings =
        Settings::from_layers(&[&text], false).expect("the bench configuration is valid");
    (text, Topics::new(&settings.topics))
}

/// One metric's value from the connector's /metrics (summed over the series matching `filter`);
/// `None` when the endpoint does not answer or no series matches.
fn scrape(port: u16, metric: &str, filter: &str) -> Option<f64> {
    sum_of(&metrics_text(port)?, metric, filter)
}

/// The connector's /metrics page.
fn metrics_text(port: u16) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The sum of the series of `metric` whose line contains `filter`, if any.
fn sum_of(body: &str, metric: &str, filter: &str) -> Option<f64> {
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Records that reached the apply stage, by either path (hop or local), in a /metrics page. A build
/// without that counter (compared through `E2E_CONNECTOR_BIN`) applied every record it read back
/// from the cases topic.
fn applied_in(body: &str, cases: &str) -> f64 {
    sum_of(body, "partnersync_records_applied_total", "")
        .or_else(|| {
            sum_of(
                body,
                "partnersync_records_consumed_total",
                &format!("topic=\"{cases}\""),
            )
        })
        .unwrap_or(0.0)
}

/// `E2E_TRACE=1`: one line per poll of the drain, from one scrape: what the connector took in
/// and applied, what is in flight and in the order window, whether intake is paused, how many
/// Schema Registry requests and state restores it made, and its RSS. How the drain's time was found
/// to go to a restore and to registry round trips in the middle of it.
fn trace_drain(port: u16, cases: &str, since: Instant) {
    if std::env::var_os("E2E_TRACE").is_none() {
        return;
    }
    let body = metrics_text(port).unwrap_or_default();
    let m = |metric: &str, filter: &str| sum_of(&body, metric, filter).unwrap_or(0.0);
    eprintln!(
        "trace {:6.2} s: consumed {} applied {} in flight {} window {} paused {} registry requests {} restores {} RSS {:.0} MiB",
        since.elapsed().as_secs_f64(),
        m("partnersync_records_consumed_total", ""),
        applied_in(&body, cases),
        m("partnersync_in_flight_records", ""),
        m("partnersync_order_window_records", ""),
        m("partnersync_intake_paused", ""),
        m("partnersync_registry_requests_total", ""),
        m("partnersync_state_restores_total", ""),
        m("process_resident_memory_bytes", "") / (1024.0 * 1024.0),
    );
}

struct Child {
    process: std::process::Child,
    pid: String,
    port: u16,
    log: std::path::PathBuf,
}

impl Child {
    fn spawn(config: &str, suffix: &str) -> Child {
        let dir =
            std::env::temp_dir().join(format!("partner-sync-bench{suffix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("connector.log");
        let port = config
            .lines()
            .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|p| p.trim_end_matches('"').parse().ok())
            .unwrap();
        let process = std::process::Command::new(connector_bin())
            .args(["run", "--config", path.to_str().unwrap()])
            // As in a cluster: JSON logs at info, so the per-record span is part of the cost.
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = process.id().to_string();
        Child {
            process,
            pid,
            port,
            log,
        }
    }

    fn applied(&self, cases: &str) -> f64 {
        applied_in(&metrics_text(self.port).unwrap_or_default(), cases)
    }

    /// Records taken in so far, from every topic.
    fn consumed(&self) -> f64 {
        scrape(self.port, "partnersync_records_consumed_total", "").unwrap_or(0.0)
    }

    fn in_flight(&self) -> f64 {
        scrape(self.port, "partnersync_in_flight_records", "").unwrap_or(f64::MAX)
    }

    /// Waits until `done` holds, at most `seconds`; fails naming what it waited for.
    fn wait_until(&mut self, what: &str, seconds: u64, done: impl Fn(&Child) -> bool) {
        let by = Instant::now() + Duration::from_secs(seconds);
        while !done(self) {
            self.assert_alive();
            assert!(
                Instant::now() < by,
                "waited {seconds} s in vain until {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.process.try_wait() {
            panic!(
                "the connector exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Child {
    /// SIGTERM and wait, also when the benchmark panics: no connector outlives it.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid])
            .status();
        let _ = self.process.wait();
    }
}

struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
    achieved: f64,
}

/// Offers contact edits at `rate`/s for `seconds` and measures each edit's command read back.
/// Where the latency phase reads results: the connector's customer commands, or the raw copy's topic.
#[derive(Clone, Copy)]
enum Path {
    Connector,
    RawCopy,
}

/// The change id a result record answers: a command's `caused_by`, or a copied event's own id.
fn answered(codec: &Codec, path: Path, payload: Option<&[u8]>) -> Option<String> {
    let (_, body) = wire::split(payload).ok()?;
    match path {
        Path::Connector => match codec.decode_command(CommandKind::CustomerUpsert, body) {
            Ok(Cmd::CustomerUpsert(c)) => Some(c.caused_by),
            _ => None,
        },
        Path::RawCopy => {
            let schema = codec.event_schema(SourceKind::Contact);
            let e = codec.decode_event(SourceKind::Contact, schema, body).ok()?;
            Some(e.header().change_id.clone())
        }
    }
}

/// The raw copy as a running service: forwards new contact changes to `target` until told to stop.
fn forwarder(
    bootstrap: &str,
    input: &str,
    target: &str,
    stop: Arc<Mutex<bool>>,
) -> std::thread::JoinHandle<()> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", format!("forward-{target}"))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms().to_string())
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer = fast_producer(bootstrap, 5);
    let target = target.to_string();
    std::thread::spawn(move || {
        while !*stop.lock().unwrap() {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
                copy_to(&producer, &target, &m);
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    })
}

#[allow(clippy::too_many_arguments)]
fn latency_phase(
    bootstrap: &str,
    ids: &BTreeMap<SourceKind, u32>,
    in_topic: &str,
    out_topic: &str,
    path: Path,
    contacts: &[Change<Contact>],
    rate: u32,
    seconds: u64,
    version_base: usize,
) -> Latencies {
    let codec = Codec::new();
    let total = rate as usize * seconds as usize;
    let tag = format!("lat{version_base}");
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let reader = {
        let (bootstrap, topic, received, tag) = (
            bootstrap.to_string(),
            out_topic.to_string(),
            received.clone(),
            tag.clone(),
        );
        std::thread::spawn(move || {
            let consumer: BaseConsumer = client(&bootstrap)
                .set("group.id", format!("latency-{tag}"))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", fetch_wait_ms().to_string())
                .set("fetch.queue.backoff.ms", "1")
                .set("max.partition.fetch.bytes", READER_FETCH_BYTES.to_string())
                .set("fetch.max.bytes", READER_FETCH_BYTES.to_string())
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let codec = Codec::new();
            let deadline = Instant::now() + Duration::from_secs(seconds + 60);
            while received.lock().unwrap().len() < total && Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let now = Instant::now();
                    if let Some(id) = answered(&codec, path, m.payload()) {
                        if id.contains(&tag) {
                            received.lock().unwrap().insert(id, now);
                        }
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2)); // the reader joins and reaches the end first
    let producer = warm_producer(bootstrap, 0);
    let started = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        while Instant::now() < due {
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(200));
        }
        let c = &contacts[i % contacts.len()];
        // Versions keep rising across phases (a lower one would be skipped as stale).
        let e = edit(c, version_base + i, &tag);
        let value = wire::frame(
            ids[&SourceKind::Contact],
            &codec
                .encode_event(&ChangeEvent::Contact(e.clone()))
                .unwrap(),
        );
        sent.lock()
            .unwrap()
            .insert(e.header.change_id.clone(), Instant::now());
        let mut record = BaseRecord::to(in_topic)
            .key(&e.record.contactid)
            .payload(&value);
        while let Err((_, back)) = producer.send(record) {
            producer.poll(Duration::from_millis(1));
            record = back;
        }
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60)).unwrap();
    reader.join().unwrap();
    let sent = sent.lock().unwrap();
    let received = received.lock().unwrap();
    assert_eq!(
        received.len(),
        total,
        "every edit at {rate}/s produced its command"
    );
    let mut ms: Vec<f64> = received
        .iter()
        .map(|(id, at)| at.duration_since(sent[id]).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    if std::env::var_os("E2E_TRACE").is_some() {
        // Whether the path kept up: answers arriving as fast as edits were offered, or behind.
        let last = |at: &HashMap<String, Instant>| {
            at.values()
                .max()
                .map_or(0.0, |t| t.duration_since(started).as_secs_f64())
        };
        eprintln!(
            "trace latency {tag} at {rate}/s: last edit sent at {:.2} s, last answer read at {:.2} s",
            last(&sent),
            last(&received)
        );
        // The median latency of the edits sent in each quarter second: a queue that builds and
        // drains shows as a rise and fall, a steady cost as a flat line.
        let mut slices: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for (id, at) in received.iter() {
            let sent_at = sent[id];
            let slice = sent_at.duration_since(started).as_millis() as u64 / 250;
            slices
                .entry(slice)
                .or_default()
                .push(at.duration_since(sent_at).as_secs_f64() * 1000.0);
        }
        let line: Vec<String> = slices
            .values_mut()
            .map(|v| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                format!("{:.0}", v[v.len() / 2])
            })
            .collect();
        eprintln!(
            "trace latency {tag} at {rate}/s: median ms by quarter second sent: {}",
            line.join(" ")
        );
    }
    Latencies {
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        achieved,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Creates every topic of `topics` that is not one of the backlog's `inputs`, with 3 partitions.
fn create_outputs(broker: &Broker, topics: &Topics, inputs: &[String]) {
    for t in topics
        .all()
        .into_iter()
        .filter(|t| !inputs.iter().any(|i| i == t))
    {
        broker.create_topic(t, 3);
    }
}

fn main() {
    // Huge pages off, as the connector runs (see `partner_sync::alloc`); the heap the measured
    // work allocates from is mimalloc's, which the glibc threshold the connector also fixes
    // does not touch.
    partner_sync::alloc::no_transparent_huge_pages();
    let rounds = env_usize("E2E_ROUNDS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let broker = Broker::start();
    let defaults = Topics::new(&Settings::defaults().topics);
    let inputs: Vec<String> = SourceKind::ALL
        .iter()
        .map(|k| defaults.input_topic(*k).to_string())
        .collect();
    for t in &inputs {
        broker.create_topic(t, 3);
    }
    broker.create_topic(WARM_UP_TOPIC, 1);
    let (registry, ids) = runtime.block_on(registry());
    let (events, contacts) = workload();
    let expected = expected_commands(&events);
    let loading = Instant::now();
    load(&broker.bootstrap(), &ids, &events);
    let n = events.len();
    eprintln!(
        "loaded {n} change events ({} commands expected) in {:.1} s",
        expected.len(),
        loading.elapsed().as_secs_f64()
    );

    let (mut raw, mut raw_cpu, mut full, mut full_cpu, mut rss) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut raw_running, mut full_running) = (vec![], vec![]);
    let (mut raw_broker, mut full_broker) = (vec![], vec![]);
    let mut full_main_cpu = vec![];
    let mut after_rss = vec![];
    let (mut fan_running, mut fan_cpu, mut fan_broker) = (vec![], vec![], vec![]);
    let broker_pid = broker.pid().to_string();
    let mut last = None;
    for round in 0..rounds {
        let copy_topic = format!("bench.copy.{round}");
        broker.create_topic(&copy_topic, 3);
        let me = std::process::id().to_string();
        let (cpu_before, broker_before) = (cpu_seconds(&me), cpu_seconds(&broker_pid));
        let took = raw_copy(
            &broker.bootstrap(),
            &inputs,
            n,
            &format!("raw-{round}"),
            None,
            &mut |producer, m, _| copy_to(producer, &copy_topic, m),
        );
        raw_cpu.push((cpu_seconds(&me) - cpu_before) / n as f64);
        raw_broker.push((cpu_seconds(&broker_pid) - broker_before) / n as f64);
        raw.push(n as f64 / took.total.as_secs_f64());
        raw_running.push(n as f64 / took.running.as_secs_f64());

        // The connector's writes and commits, bytes unchanged: the bound of its traffic shape.
        let (_, fan_topics) = connector_toml(
            &broker.bootstrap(),
            &registry.url(),
            &format!(".f{round}"),
            0,
            &format!(".f{round}"),
            &[],
        );
        create_outputs(&broker, &fan_topics, &inputs);
        let (cpu_before, broker_before) = (cpu_seconds(&me), cpu_seconds(&broker_pid));
        let took = raw_copy(
            &broker.bootstrap(),
            &inputs,
            n,
            &format!("fan-{round}"),
            Some(Duration::from_millis(COMMIT_INTERVAL_MS)),
            &mut *fan_out(&defaults, &fan_topics),
        );
        fan_cpu.push((cpu_seconds(&me) - cpu_before) / n as f64);
        fan_broker.push((cpu_seconds(&broker_pid) - broker_before) / n as f64);
        fan_running.push(n as f64 / took.running.as_secs_f64());

        let suffix = format!(".r{round}");
        let (config, topics) = connector_toml(
            &broker.bootstrap(),
            &registry.url(),
            &suffix,
            free_port(),
            &suffix,
            &[],
        );
        create_outputs(&broker, &topics, &inputs);
        let broker_before = cpu_seconds(&broker_pid);
        let started = Instant::now();
        let mut child = Child::spawn(&config, &suffix);
        let mut first = None;
        let drain_deadline =
            started + Duration::from_secs(env_usize("E2E_DRAIN_TIMEOUT_S", 600) as u64);
        while !(child.applied(&topics.cases) as usize >= n && child.in_flight() == 0.0) {
            child.assert_alive();
            assert!(
                Instant::now() < drain_deadline,
                "round {round}: the drain applied {} of {n} records and did not finish within E2E_DRAIN_TIMEOUT_S",
                child.applied(&topics.cases)
            );
            if first.is_none() && child.consumed() > 0.0 {
                first = Some(Instant::now());
            }
            trace_drain(child.port, &topics.cases, started);
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        full.push(n as f64 / took.as_secs_f64());
        let running = first.map_or(took, |f| f.elapsed());
        full_running.push(n as f64 / running.as_secs_f64());
        full_cpu.push(cpu_seconds(&child.pid) / n as f64);
        full_main_cpu.push(main_thread_cpu_seconds(&child.pid) / n as f64);
        full_broker.push((cpu_seconds(&broker_pid) - broker_before) / n as f64);
        rss.push(memory_mib(&child.pid, "VmHWM:"));
        // What the same instance keeps once the backfill is through: a connector runs on after
        // one, and what its buffers hold on to stays resident. Idle for longer than mimalloc's
        // purge delay first.
        std::thread::sleep(AFTER_DRAIN);
        after_rss.push(memory_mib(&child.pid, "VmRSS:"));
        if std::env::var_os("E2E_THREADS").is_some() {
            eprintln!(
                "  wall-clock time once running: {:.1} µs per record",
                running.as_secs_f64() * 1e6 / n as f64
            );
            for (name, t) in thread_times(&child.pid) {
                eprintln!(
                    "  thread {name:<16} {:>6.1} µs per record on a CPU, {:>5.1} waiting for one; {:>6.1} voluntary and {:>6.1} preempted switches per 1,000 records",
                    t.cpu * 1e6 / n as f64,
                    t.run_delay * 1e6 / n as f64,
                    t.voluntary * 1e3 / n as f64,
                    t.preempted * 1e3 / n as f64,
                );
            }
        }
        // What the broker took besides the commands: state entries after coalescing (absent from
        // builds before the metric, through E2E_CONNECTOR_BIN).
        let states = scrape(child.port, "partnersync_state_records_produced_total", "")
            .map_or("state entries not counted by this build".to_string(), |s| {
                format!("{s:.0} state entries ({:.2} per input)", s / n as f64)
            });
        // Events that waited for what they refer to: how far the order window put the backlog in
        // order (`E2E_ORDER_WINDOW_KIB`).
        let parked = scrape(child.port, "partnersync_parked_total", "")
            .map_or(String::new(), |p| format!(", {p:.0} events parked"));
        // Where its cases are once drained (absent from builds before state.resident_cases).
        let held = |place: &str| {
            scrape(
                child.port,
                "partnersync_state_entries",
                &format!("map=\"cases\",place=\"{place}\""),
            )
        };
        let cases = match (held("memory"), held("spilled")) {
            (Some(m), Some(s)) => format!(", cases {m:.0} in memory and {s:.0} spilled"),
            _ => String::new(),
        };
        eprintln!(
            "round {round}: raw copy {:.0} records/s ({:.0} once running), the connector's writes copied {:.0} once running, partner-sync {:.0} records/s ({:.0} once running), peak RSS {:.0} MiB ({:.0} MiB {} s after), {states}{parked}{cases}",
            raw[round], raw_running[round], fan_running[round], full[round], full_running[round], rss[round],
            after_rss[round], AFTER_DRAIN.as_secs()
        );
        // Checked after the figures are taken, so reading back costs them nothing.
        let seen = collect_commands_in(
            &broker.bootstrap(),
            &topics,
            &expected,
            Duration::from_secs(180),
        );
        assert_same_commands(&expected, &seen);
        eprintln!(
            "round {round}: all {} expected commands read back, nothing else, none different",
            expected.len()
        );
        if round + 1 < rounds {
            drop(child);
        } else {
            last = Some((child, topics));
        }
    }
    // Latency, side by side: first the raw copy as a forwarding service (nothing else running: the
    // last round's connector stops first), then the connector (below).
    let (last_child, _) = last.unwrap();
    drop(last_child); // one owner of the state partitions at a time
    let mut version_base = 1_000_000;
    let mut raw_latency = Vec::new();
    for (rate, seconds) in RATES {
        // The raw copy forwards its own topic, so the idle connector sees none of this traffic.
        let (raw_in, copy_topic) = (
            format!("bench.latency-in.{rate}"),
            format!("bench.latency-copy.{rate}"),
        );
        broker.create_topic(&raw_in, 3);
        broker.create_topic(&copy_topic, 3);
        let stop = Arc::new(Mutex::new(false));
        let copying = forwarder(&broker.bootstrap(), &raw_in, &copy_topic, stop.clone());
        std::thread::sleep(Duration::from_secs(3)); // the forwarder joins its group
        let l = latency_phase(
            &broker.bootstrap(),
            &ids,
            &raw_in,
            &copy_topic,
            Path::RawCopy,
            &contacts,
            rate,
            seconds,
            version_base,
        );
        *stop.lock().unwrap() = true;
        copying.join().unwrap();
        version_base += 1_000_000;
        eprintln!(
            "raw copy latency at {rate}/s: p50 {:.1} ms, p99 {:.1} ms",
            l.p50_ms, l.p99_ms
        );
        raw_latency.push(l);
    }
    // The connector's latency: for each rate a fresh connector in a new group restores the last
    // round's state (every customer known) and reads input topics of its own, fresh like the raw
    // copy's, writing its customer commands to a fresh topic. On the topics the drains and
    // earlier phases had filled, it waited ~250 ms at 20,000/s where the raw copy waited ~50: Tansu
    // 0.6's fetch lists every batch a partition holds (`tansu-storage` 0.6.0, `dynostore.rs`; its
    // CPU rose from 0.3 to 1.4 cores within one 10 s phase at 1,000/s, raw copy alone, on fresh
    // topics), so the paths must meet the broker alike.
    // The 1,000/s connector's resident memory at the end of its phase is the steady memory: what
    // steady traffic needs, not what a backlog drain left behind.
    let suffix = format!(".r{}", rounds - 1);
    let mut latency = Vec::new();
    let mut steady_rss = 0.0;
    for ((rate, seconds), raw_l) in RATES.into_iter().zip(raw_latency) {
        // Every input of its own (the others stay empty): a new group starting at the earliest
        // offset of the backlog's topics would first read the whole backlog again.
        let fresh = |key: &str| format!("bench.latency.{rate}.{key}");
        let own: Vec<(&str, String)> = [
            "prospect_changes",
            "lead_changes",
            "opportunity_changes",
            "contact_changes",
            "account_changes",
            "customer_commands",
        ]
        .into_iter()
        .map(|key| (key, fresh(key)))
        .collect();
        for (_, t) in &own {
            broker.create_topic(t, 3);
        }
        let (edits_in, customers) = (fresh("contact_changes"), fresh("customer_commands"));
        let tag = format!("{suffix}-lat{rate}");
        let (config, _) = connector_toml(
            &broker.bootstrap(),
            &registry.url(),
            &suffix,
            free_port(),
            &tag,
            &own,
        );
        let mut child = Child::spawn(&config, &tag);
        child.wait_until("the latency phase's connector is ready", 60, |c| {
            scrape(c.port, "partnersync_ready", "") == Some(1.0)
        });
        let l = latency_phase(
            &broker.bootstrap(),
            &ids,
            &edits_in,
            &customers,
            Path::Connector,
            &contacts,
            rate,
            seconds,
            version_base,
        );
        version_base += 1_000_000;
        eprintln!(
            "partner-sync latency at {rate}/s ({:.0}/s achieved): p50 {:.1} ms, p99 {:.1} ms",
            l.achieved, l.p50_ms, l.p99_ms
        );
        if rate == RATES[0].0 {
            steady_rss = memory_mib(&child.pid, "VmRSS:");
            // Its peak includes restoring the last round's state, before the edits began.
            let peak = memory_mib(&child.pid, "VmHWM:");
            eprintln!("fresh connector at {rate}/s for {seconds} s: RSS {steady_rss:.0} MiB (peak {peak:.0} MiB, its restore included)");
        }
        // Once the traffic stops, every record it took in must finish: a partition that never
        // completes stops committing and, at `max_in_flight`, stops intake for good. (It did:
        // Tansu's late end made a connector that started at the end take some offsets in twice;
        // see runtime/tracker.rs.)
        let log = child.log.display().to_string();
        child.wait_until(
            &format!("the latency phase's connector finished every record it took in (see {log})"),
            30,
            |c| c.in_flight() == 0.0,
        );
        drop(child);
        latency.push((rate, raw_l, l));
    }

    let (r, f) = (median(raw), median(full));
    println!("\npartner-sync end to end on Tansu (loopback, 2 cores), {n} change events, {rounds} rounds, medians:\n");
    println!("| Measure | raw copy | partner-sync | target |");
    println!("|---|---|---|---|");
    let (rr, fr) = (median(raw_running), median(full_running));
    println!(
        "| throughput draining, first record in to last out, records/s | {rr:.0} | {fr:.0} ({:.2}x) | ≥ 0.6x |",
        fr / rr
    );
    let ar = median(fan_running);
    println!(
        "| the connector's writes and commits, bytes unchanged, once running, records/s | {ar:.0} ({:.2}x) | | |",
        ar / rr
    );
    println!(
        "| backlog drain including start-up, records/s | {r:.0} | {f:.0} ({:.2}x) | |",
        f / r
    );
    println!(
        "| CPU per record, µs | {:.1} | {:.1} | |",
        median(raw_cpu) * 1e6,
        median(full_cpu) * 1e6
    );
    println!(
        "| of which the pipeline thread (the one that bounds the drain), µs | | {:.1} | |",
        median(full_main_cpu) * 1e6
    );
    println!(
        "| of the connector's writes copied, CPU and broker CPU per record, µs | {:.1} and {:.1} | | |",
        median(fan_cpu) * 1e6,
        median(fan_broker) * 1e6
    );
    println!(
        "| broker (Tansu) CPU per record, µs | {:.1} | {:.1} | |",
        median(raw_broker) * 1e6,
        median(full_broker) * 1e6
    );
    println!(
        "| peak RSS draining the backlog, MiB | | {:.0} | ≤ 128 |",
        median(rss)
    );
    println!(
        "| RSS of the same instance {} s after the drain, idle, MiB | | {:.0} | |",
        AFTER_DRAIN.as_secs(),
        median(after_rss)
    );
    println!("| RSS steady at 1,000 records/s, MiB | | {steady_rss:.0} | ≤ 64 |");
    for (rate, raw_l, l) in &latency {
        let target = if *rate == 20_000 { "p99 ≤ 25 ms" } else { "" };
        println!(
            "| latency at {rate} records/s offered, p50 / p99 ms | {:.1} / {:.1} | {:.1} / {:.1} | {target} |",
            raw_l.p50_ms, raw_l.p99_ms, l.p50_ms, l.p99_ms
        );
    }
    drop(registry);
}
