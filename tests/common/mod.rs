//! Shared helpers for tests against a real Kafka-protocol broker (Tansu) over TCP on loopback.
//!
//! Each test starts its own broker process on a free port with in-memory storage and kills it when
//! done, so tests are isolated and leave nothing behind. The broker binary is installed by
//! `scripts/broker.sh install` (which `scripts/test.sh` runs); `TANSU_BIN` overrides its path.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use partner_sync::codec::{Codec, EVENT_SCHEMAS};
use partner_sync::engine::{Engine, EngineState};
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{ChangeEvent, Command as Cmd, CommandKind, SourceKind};
use partner_sync::registry::fake::{FakeRegistry, RunningRegistry};
use partner_sync::registry::wire;
use partner_sync::runtime::Topics;
use partner_sync::settings::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

pub const START_MS: i64 = 1_772_442_000_000;

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/partner-sync/tansu-0.6.0/bin/tansu")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Tansu broker process; killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    /// The broker's process id (benchmarks read its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> Broker {
        let port = free_port();
        Broker::start_advertising(port, port)
    }

    /// A broker behind a [`Relay`]: it advertises the relay's address, so every client connects
    /// through it once it has read the metadata, and the relay can cut them all off.
    pub fn start_behind_relay() -> (Broker, Relay) {
        let (port, relay_port) = (free_port(), free_port());
        let broker = Broker::start_advertising(port, relay_port);
        let relay = Relay::start(relay_port, port);
        (broker, relay)
    }

    fn start_advertising(port: u16, advertised: u16) -> Broker {
        Broker::spawn(port, advertised, "memory://tansu/", None, &[])
    }

    /// A broker on `port` whose storage is a SQLite file in `dir`, so a later broker on the same
    /// port and directory (with other flags, such as `--authentication`) carries on with the same
    /// topics, records and users.
    pub fn start_persistent(dir: &std::path::Path, port: u16, flags: &[&str]) -> Broker {
        Broker::spawn(port, port, "sqlite://tansu.db", Some(dir), flags)
    }

    fn spawn(
        port: u16,
        advertised: u16,
        storage: &str,
        dir: Option<&std::path::Path>,
        flags: &[&str],
    ) -> Broker {
        let bin = tansu_bin();
        assert!(bin.exists(), "the Tansu broker is not installed at {}; run `bash scripts/broker.sh install` (scripts/test.sh does)", bin.display());
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let mut command = Command::new(&bin);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                storage,
            ])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let child = command.spawn().expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, partitions, &[])
    }

    /// Creates a SCRAM-SHA-256 user (before `--authentication` is on: Tansu 0.6's own client
    /// cannot log in).
    pub fn create_user(&self, name: &str, password: &str) {
        let out = Command::new(tansu_bin())
            .args([
                "user",
                "create",
                "--mechanism",
                "scram256",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
                name,
                password,
            ])
            .output()
            .expect("run tansu user create");
        assert!(
            out.status.success(),
            "creating user {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a topic with topic configurations (`cleanup.policy`, …).
    pub fn create_topic_with(&self, name: &str, partitions: u32, configs: &[(&str, &str)]) {
        let mut args = vec![
            "topic".to_string(),
            "create".into(),
            name.into(),
            "--partitions".into(),
            partitions.to_string(),
            "--broker".into(),
            format!("tcp://127.0.0.1:{}", self.port),
        ];
        for (key, value) in configs {
            args.extend(["--config".into(), format!("{key}={value}")]);
        }
        let out = Command::new(tansu_bin())
            .args(&args)
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates every topic of the default configuration: inputs with 3 partitions, cases and state
    /// with 4, the state topic compacted (start-up checks it).
    pub fn create_pipeline_topics(&self) {
        let topics = Topics::new(&Settings::defaults().topics);
        for t in topics.all() {
            let partitions = pipeline_partitions(&topics, t);
            if t == topics.state {
                self.create_topic_with(t, partitions, &[("cleanup.policy", "compact")]);
            } else {
                self.create_topic(t, partitions);
            }
        }
    }
}

/// How many partitions the tests give a topic of the default configuration: the inputs 3, the
/// cases and state topics 4.
pub fn pipeline_partitions(topics: &Topics, topic: &str) -> u32 {
    if topic == topics.cases || topic == topics.state {
        4
    } else {
        3
    }
}

/// A TCP relay on loopback in front of a broker. [`Relay::cut`] is an outage as clients meet a
/// broker restart or a network partition: every connection closed, requests in flight lost, new
/// connections closed at once; [`Relay::restore`] ends it. (Stopping the broker process instead
/// leaves the requests sent meanwhile in its socket buffers, and it answers them when it goes on:
/// a consumer closed during the outage then heartbeats after its death.)
pub struct Relay {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(port: u16, to: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the relay");
        listener.set_nonblocking(true).unwrap();
        let relay = Relay {
            port,
            down: Default::default(),
            stop: Default::default(),
            open: Default::default(),
        };
        let (down, stop, open) = (relay.down.clone(), relay.stop.clone(), relay.open.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if down.load(Ordering::Relaxed) {
                    continue; // dropped: closed at once
                }
                let _ = client.set_nonblocking(false);
                let Ok(broker) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut streams = open.lock().unwrap();
                streams.push(client.try_clone().unwrap());
                streams.push(broker.try_clone().unwrap());
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), broker.try_clone().unwrap()),
                    (broker, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        relay
    }

    /// Closes every connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::Relaxed);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry with our input schemas registered under `<topic>-value`; returns their ids.
pub async fn registry() -> (RunningRegistry, BTreeMap<SourceKind, u32>) {
    let running = FakeRegistry::start(0).await.unwrap();
    let topics = Topics::new(&Settings::defaults().topics);
    let mut ids = BTreeMap::new();
    for (kind, text) in EVENT_SCHEMAS {
        let id = running
            .registry
            .register(&format!("{}-value", topics.input_topic(kind)), text)
            .unwrap();
        ids.insert(kind, id);
    }
    (running, ids)
}

/// A connector configuration for this broker and registry.
pub fn config_toml(bootstrap: &str, registry_url: &str, group: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
client_id = "{group}-{}"
session_timeout_ms = 6000
[registry]
urls = ["{registry_url}"]
auto_register = true
retry_initial_ms = 50
retry_max_ms = 500
[delivery]
commit_interval_ms = 200
shutdown_budget_seconds = 10
expiry_interval_seconds = 1
# Several instances run side by side in tests: each serves /metrics on a free port.
[telemetry]
listen = "127.0.0.1:0"
# Tansu cannot serve fetches that start inside a batch (tests/broker_quirks.rs).
[kafka.extra]
"batch.num.messages" = "1"
"#,
        bootstrap,
        std::process::id()
    )
}

pub fn settings(bootstrap: &str, registry_url: &str, group: &str) -> Settings {
    Settings::from_layers(&[&config_toml(bootstrap, registry_url, group)], false).unwrap()
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        // One-record batches: Tansu cannot serve fetches that start inside a batch (tests/broker_quirks.rs).
        .set("batch.num.messages", "1")
        .create()
        .unwrap()
}

/// Produces events in order to their input topics, Avro in the Confluent wire format, keyed by
/// record id (as a Dataverse or F&O bridge would).
pub async fn produce(p: &FutureProducer, ids: &BTreeMap<SourceKind, u32>, events: &[ChangeEvent]) {
    produce_events(p, ids, events, false).await
}

/// Like [`produce`], each record stamped with its change's time (`modified_on`), as a change-data
/// source stamps its records.
pub async fn produce_stamped(
    p: &FutureProducer,
    ids: &BTreeMap<SourceKind, u32>,
    events: &[ChangeEvent],
) {
    produce_events(p, ids, events, true).await
}

async fn produce_events(
    p: &FutureProducer,
    ids: &BTreeMap<SourceKind, u32>,
    events: &[ChangeEvent],
    stamped: bool,
) {
    let codec = Codec::new();
    let topics = Topics::new(&Settings::defaults().topics);
    for e in events {
        let value = wire::frame(ids[&e.kind()], &codec.encode_event(e).unwrap());
        let mut record = FutureRecord::to(topics.input_topic(e.kind()))
            .key(e.entity_id())
            .payload(&value);
        if stamped {
            record = record.timestamp(e.header().modified_on);
        }
        p.send(record, Duration::from_secs(10))
            .await
            .expect("produce an input");
    }
}

pub async fn produce_raw(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "traceparent",
        value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    });
    p.send(
        FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

/// A consumer that reads committed records, assigned by hand (outside any group).
fn reader(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // librdkafka wants a group id even to assign; it joins nothing and commits nothing.
        .set("group.id", "test-reader")
        // Whole batches per fetch: Tansu returns nothing for a fetch starting inside a batch.
        .set("max.partition.fetch.bytes", "67108864")
        .set("fetch.max.bytes", "67108864")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The record had no value at all (a tombstone), not an empty one.
    pub null_value: bool,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Read {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Read {
        Read {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            null_value: m.payload().is_none(),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads a topic from the beginning until `done` says enough, or `timeout` passes (counting by
/// consuming, because Tansu's reported high watermark can lag).
///
/// Every partition is assigned, outside any consumer group: a test's reader then depends on no
/// group coordinator. (Subscribed, each reader joined a group of its own; the coordinator is where
/// Tansu 0.6 has known defects, see `tests/kafka_faults.rs`, and a stuck join would look like
/// missing output.)
pub fn read_until(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Read]) -> bool,
) -> Vec<Read> {
    let deadline = Instant::now() + timeout;
    let consumer = reader(bootstrap);
    // Asked again (bounded by the deadline) while the broker does not report the topic yet.
    let partitions = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = consumer
            .fetch_metadata(Some(topic), left.max(Duration::from_millis(100)))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0);
        if n > 0 || Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        partitions > 0,
        "the broker reports no partitions of topic {topic}: create it before reading it"
    );
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while Instant::now() < deadline && !done(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(Read::of(&m));
        }
    }
    out
}

/// Every record of `topic` up to its end: read until the end offsets reported when called are
/// reached and no record has come for 500 ms, then until a second reading of the end offsets is
/// reached too. Tansu's reported end can trail what its fetches serve (on topics of thousands of
/// records, by hundreds), so reaching the reported end alone is not enough. Call it once the
/// writer has acknowledged everything it will write. Panics if not done within `timeout`.
pub fn read_to_end(bootstrap: &str, topic: &str, timeout: Duration) -> Vec<Read> {
    let deadline = Instant::now() + timeout;
    let consumer = reader(bootstrap);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(
        partitions > 0,
        "the broker reports no partitions of {topic}"
    );
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let ends = || -> Vec<i64> {
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .collect()
    };
    // Where reading is, per partition: the next offset to read.
    let mut next = vec![0i64; partitions as usize];
    let mut end = ends();
    let mut out = Vec::new();
    let mut last_record = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end {end:?} (at {next:?}) within {timeout:?}"
        );
        let reached = |end: &[i64], next: &[i64]| next.iter().zip(end).all(|(n, e)| n >= e);
        if reached(&end, &next) && last_record.elapsed() >= Duration::from_millis(500) {
            end = ends();
            if reached(&end, &next) {
                return out;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next[m.partition() as usize] = m.offset() + 1;
                out.push(Read::of(&m));
                last_record = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                // Transaction markers take offsets no record is read at: the position says.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let rdkafka::Offset::Offset(at) = e.offset() {
                            let n = &mut next[e.partition() as usize];
                            *n = (*n).max(at);
                        }
                    }
                }
            }
        }
    }
}

/// The commands the pure engine decides for `events`, by command id: what the pipeline must emit.
pub fn expected_commands(events: &[ChangeEvent]) -> BTreeMap<String, Cmd> {
    expected_commands_with(EngineConfig::defaults(), events)
}

/// Like [`expected_commands`], under `config`.
pub fn expected_commands_with(
    config: EngineConfig,
    events: &[ChangeEvent],
) -> BTreeMap<String, Cmd> {
    let engine = Engine::new(config);
    let mut state = EngineState::default();
    let mut out = BTreeMap::new();
    for e in events {
        for c in engine.apply(&mut state, e.clone(), START_MS).commands {
            out.insert(c.command_id().to_string(), c);
        }
    }
    out
}

/// Waits until every expected command id is on its topic (or time runs out), then reads every
/// command topic, alerts included, to its end ([`read_to_end`]): whatever else is there, extras or
/// repeats, is seen too. Checks that each id appears only as byte-identical records. Returns (seen
/// ids → command, total records on the command topics).
pub fn collect_commands(
    bootstrap: &str,
    expected: &BTreeMap<String, Cmd>,
    timeout: Duration,
) -> (BTreeMap<String, Cmd>, usize) {
    collect_commands_from(
        bootstrap,
        &Topics::new(&Settings::defaults().topics),
        expected,
        timeout,
    )
}

/// Like [`collect_commands`], from the given topic names; returns only the commands seen.
pub fn collect_commands_in(
    bootstrap: &str,
    topics: &Topics,
    expected: &BTreeMap<String, Cmd>,
    timeout: Duration,
) -> BTreeMap<String, Cmd> {
    collect_commands_from(bootstrap, topics, expected, timeout).0
}

fn collect_commands_from(
    bootstrap: &str,
    topics: &Topics,
    expected: &BTreeMap<String, Cmd>,
    timeout: Duration,
) -> (BTreeMap<String, Cmd>, usize) {
    let codec = Codec::new();
    let deadline = Instant::now() + timeout;
    let mut seen: BTreeMap<String, Cmd> = BTreeMap::new();
    let mut total = 0;
    for kind in CommandKind::ALL {
        let want: std::collections::BTreeSet<&String> = expected
            .iter()
            .filter(|(_, c)| c.kind() == kind)
            .map(|(id, _)| id)
            .collect();
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(500));
        // Incremental: each call looks only at the records read since the last one (checking the
        // whole prefix every poll made large topics quadratic and time out).
        let mut missing: std::collections::BTreeSet<String> =
            want.iter().map(|w| w.to_string()).collect();
        let mut checked = 0;
        if !missing.is_empty() {
            read_until(bootstrap, topics.command_topic(kind), left, |r| {
                for x in &r[checked..] {
                    missing.remove(decode_command(&codec, kind, &x.value).command_id());
                }
                checked = r.len();
                missing.is_empty()
            });
        }
    }
    // Every expected command has landed (or time ran out): what the topics hold now is read whole.
    for kind in CommandKind::ALL {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(30));
        let records = read_to_end(bootstrap, topics.command_topic(kind), left);
        total += records.len();
        for r in records {
            let command = decode_command(&codec, kind, &r.value);
            let id = command.command_id().to_string();
            if let Some(previous) = seen.get(&id) {
                assert_eq!(
                    previous, &command,
                    "two different records for one command id {id}"
                );
            }
            seen.insert(id, command);
        }
    }
    (seen, total)
}

fn decode_command(codec: &Codec, kind: CommandKind, value: &[u8]) -> Cmd {
    let (_, body) = wire::split(Some(value)).expect("commands are in the wire format");
    codec.decode_command(kind, body).expect("commands decode")
}

/// Asserts every expected command arrived with identical content, and nothing unexpected did.
pub fn assert_same_commands(expected: &BTreeMap<String, Cmd>, seen: &BTreeMap<String, Cmd>) {
    assert_same_commands_given(expected, seen, "")
}

/// Like [`assert_same_commands`]; a failure also prints `context` (what the connector reported).
pub fn assert_same_commands_given(
    expected: &BTreeMap<String, Cmd>,
    seen: &BTreeMap<String, Cmd>,
    context: &str,
) {
    let missing: Vec<&String> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
    let extra: Vec<&String> = seen.keys().filter(|k| !expected.contains_key(*k)).collect();
    let count = |ids: &[&String], of: &BTreeMap<String, Cmd>| {
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for id in ids {
            *by_kind.entry(of[*id].kind().as_str()).or_default() += 1;
        }
        by_kind
    };
    assert!(
        missing.is_empty(),
        "{} of {} expected command(s) missing ({:?}), e.g. {:?}\n{context}",
        missing.len(),
        expected.len(),
        count(&missing, expected),
        missing.first().map(|k| &expected[*k])
    );
    assert!(
        extra.is_empty(),
        "{} unexpected command(s) ({:?}), e.g. {:?}\n{context}",
        extra.len(),
        count(&extra, seen),
        extra.first().map(|k| &seen[*k])
    );
    for (id, c) in expected {
        assert_eq!(
            &seen[id], c,
            "command {id} differs from the engine's decision"
        );
    }
}

/// The connector binary as a child process (for kill -9 and multi-instance tests).
pub struct Connector {
    pub child: Child,
    pub config: PathBuf,
}

impl Connector {
    pub fn spawn(config_text: &str, name: &str) -> Connector {
        let dir =
            std::env::temp_dir().join(format!("partner-sync-it-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text).unwrap();
        let log = std::fs::File::create(dir.join("connector.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_partner-sync"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env(
                "RUST_LOG",
                std::env::var("CONNECTOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the connector");
        Connector { child, config }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("connector.log")).unwrap_or_default()
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The connector running in-process (the runtime's `run`), stopped on demand.
/// Sends the connector's log lines (`RUST_LOG`, or `partner_sync=info`) to the output libtest
/// captures: it shows them for a failing test only. Threads the test's runtime starts inherit the
/// capture, so each test gets its own connector's lines. A test binary that installs a logger of
/// its own first keeps it.
fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("partner_sync=info"));
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .finish(),
    );
}

pub struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<
        Result<std::sync::Arc<partner_sync::runtime::Stats>, partner_sync::runtime::RuntimeError>,
    >,
}

impl InProcess {
    pub fn start(settings: Settings) -> InProcess {
        InProcess::start_with(settings, Default::default())
    }

    /// Like `start`, counting into `stats` (which the test may watch or serve while it runs).
    pub fn start_with(
        settings: Settings,
        stats: std::sync::Arc<partner_sync::runtime::Stats>,
    ) -> InProcess {
        log_to_test_output();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(partner_sync::runtime::run_with(
            settings,
            stats,
            async move {
                let _ = stopped.await;
            },
        ));
        InProcess { stop, handle }
    }

    /// True if it stopped by itself (an error, since only `stop` ends it cleanly).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops it, then asserts that the commands `seen` are the `expected` ones. Stopped first so a
    /// failure says how the connector ended (its error, or its counters), and its shutdown lines
    /// (what was unfinished) are in the test's output with the rest of its log.
    pub async fn stop_expecting(
        self,
        expected: &BTreeMap<String, Cmd>,
        seen: &BTreeMap<String, Cmd>,
    ) -> std::sync::Arc<partner_sync::runtime::Stats> {
        let ended_by_itself = self.is_finished();
        let outcome = self.stop().await;
        let context = match &outcome {
            Ok(stats) => format!("The connector's counters:\n{}", stats.summary()),
            Err(e) => format!(
                "The connector {} with an error: {e}",
                if ended_by_itself {
                    "had stopped by itself"
                } else {
                    "stopped"
                }
            ),
        };
        assert_same_commands_given(expected, seen, &context);
        outcome.expect("the connector stops cleanly")
    }

    /// Waits up to `within` for it to stop by itself (panics if it does not) and returns how it
    /// ended.
    pub async fn ends_by_itself(
        self,
        within: Duration,
    ) -> Result<std::sync::Arc<partner_sync::runtime::Stats>, partner_sync::runtime::RuntimeError>
    {
        let deadline = Instant::now() + within;
        while !self.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the connector was still running after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.handle.await.expect("the connector task panicked")
    }

    /// Asks it to shut down (if still running) and returns how it ended.
    pub async fn stop(
        self,
    ) -> Result<std::sync::Arc<partner_sync::runtime::Stats>, partner_sync::runtime::RuntimeError>
    {
        let _ = self.stop.send(());
        self.handle.await.expect("the connector task panicked")
    }
}

/// Every record of the default dead-letter topic ([`read_to_end`]).
pub fn dead_letters(bootstrap: &str) -> Vec<Read> {
    let topics = Topics::new(&Settings::defaults().topics);
    read_to_end(bootstrap, &topics.dead_letters, Duration::from_secs(30))
}

/// Starts the connector again and checks it is still running after 4 s, then stops it: a restart
/// reads on from the committed offsets and does not stop on a record already handled.
pub async fn assert_a_restart_runs(settings: Settings) {
    let again = InProcess::start(settings);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!again.is_finished(), "the restarted connector runs");
    again
        .stop()
        .await
        .expect("the restarted connector stops cleanly");
}

/// librdkafka's mock cluster of `brokers` brokers with every topic of the default configuration
/// (inputs with 3 partitions, cases and state with 4), for the faults only it can inject.
pub fn mock_cluster(
    brokers: i32,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = rdkafka::mocking::MockCluster::new(brokers).expect("a mock cluster");
    let topics = Topics::new(&Settings::defaults().topics);
    for t in topics.all() {
        let partitions = pipeline_partitions(&topics, t);
        cluster.create_topic(t, partitions as i32, 1).unwrap();
    }
    cluster
}

/// A producer that may send records of several MiB (librdkafka's own bound is 1,000,000 bytes).
pub fn large_record_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "16000000")
        .set("batch.num.messages", "1")
        .create()
        .unwrap()
}

/// `len` bytes of noise (not Avro, not anything).
pub fn noise(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A note template that repeats the prospect's comments: a prospect with 600 KiB of comments
/// (under the 768 KiB input bound) makes a note over librdkafka's 1,000,000-byte
/// `message.max.bytes`, an output too large to write.
pub const REPEATED_COMMENTS: &str = "[lead]\nnote_text = \"{Comments} / {Comments}\"\n";

/// The first prospect of `events`, renamed `id`, with `comments` of `size` bytes and a requester
/// of its own (sharing one would make two prospects a duplicate pair, decided by which of them,
/// on different partitions, is read first).
pub fn prospect_with_comments(events: &[ChangeEvent], id: &str, size: usize) -> ChangeEvent {
    let mut change = events
        .iter()
        .find_map(|e| match e {
            ChangeEvent::Prospect(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the story has a prospect");
    change.record.prospect_id = id.into();
    change.header.change_id = format!("{id}-created");
    change.record.comments = Some("x".repeat(size));
    change.record.primary_email_address = Some(format!("{}@large.example", id.to_lowercase()));
    ChangeEvent::Prospect(change)
}

/// The commands of `decided` that can be written: all but the notes over 1,000,000 bytes.
pub fn writable(decided: BTreeMap<String, Cmd>) -> BTreeMap<String, Cmd> {
    decided
        .into_iter()
        .filter(|(_, c)| !matches!(c, Cmd::LeadNote(n) if n.notetext.len() > 1_000_000))
        .collect()
}
