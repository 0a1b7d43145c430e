//! The Kafka runtime: the engine on the bus.
//!
//! [`run`] checks what production needs before reading anything — every output schema registered
//! under its subject (or registers it, if asked), every topic present, the cases and state topics
//! with equal partition counts — then runs the [`pipeline`] until the shutdown future resolves, and
//! drains. Delivery guarantee: at-least-once by default (see [`tracker`]), or exactly-once with Kafka
//! transactions (`delivery.guarantee = "exactly_once"`); `docs/ARCHITECTURE.md` says what each
//! guarantees and what was verified.

pub mod dead_letter;
pub mod endpoints;
pub mod kafka;
pub mod local;
pub mod order;
pub mod partitioner;
pub mod pipeline;
pub mod quiet_producer;
pub mod restore;
pub mod spill;
pub mod stats;
pub mod trace;
pub mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::codec::COMMAND_SCHEMAS;
use crate::engine::Engine;
use crate::mapping::EngineConfig;
use crate::model::{CommandKind, SourceKind};
use crate::registry::RegistryClient;
use crate::settings::{ClientRole, Guarantee, Settings, TopicSettings};
use kafka::{ConsumerCtx, PipelineProducer, ProducerCtx, RebalanceLog};
use pipeline::Pipeline;
pub use stats::Stats;

/// The hash map of the pipeline's per-record lookups (partition indexes, trackers, states,
/// queues): foldhash, seeded per process, instead of SipHash. A profile of the drain had SipHash at
/// 3% of the pipeline thread; the keys are partition numbers and topic names, not attacker-chosen
/// in any way that matters to a map of a few dozen entries.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Queues that empty after a burst (the order window's per-partition queues, a partition's
/// tracker) keep a buffer this many entries long at most: a `VecDeque` never shrinks by itself,
/// and one that held a backfill kept its peak buffer for good. After the end-to-end benchmark's
/// larger backlog, with mimalloc purging freed pages after 10 ms, the drained instance's RSS was
/// 51 MiB with the buffers kept and 45 with them given back (a fresh instance: 32). In steady
/// state a queue holds a few records at a time and is not reallocated.
const KEEP_QUEUE_CAPACITY: usize = 1024;

/// Gives an empty queue's buffer back when it is larger than [`KEEP_QUEUE_CAPACITY`].
fn release_drained<T>(queue: &mut std::collections::VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > KEEP_QUEUE_CAPACITY {
        *queue = std::collections::VecDeque::new();
    }
}

/// Wall-clock time in milliseconds since the epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why the runtime stopped. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("Schema Registry: {0}")]
    Registry(String),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("producing failed: {0}. The records involved were not committed and will be processed again after restart.")]
    Produce(String),
    #[error("state: {0}")]
    State(String),
    #[error("encoding a command failed: {0}")]
    Encode(String),
    #[error("stopped on a bad record: {0}")]
    Tolerance(String),
    /// Exactly-once only: the open transaction must be aborted (handled inside the pipeline).
    #[error("the transaction was aborted: {0}")]
    Abort(String),
}

/// The topic names, resolved.
#[derive(Debug, Clone)]
pub struct Topics {
    inputs: Vec<(String, SourceKind)>,
    commands: BTreeMap<CommandKind, String>,
    pub dead_letters: String,
    pub cases: String,
    pub state: String,
    /// The names of the topics read (inputs, then cases), shared by every record read from them.
    read: Vec<Arc<str>>,
}

impl Topics {
    pub fn new(t: &TopicSettings) -> Topics {
        let mut topics = Topics {
            inputs: vec![
                (t.prospect_changes.clone(), SourceKind::Prospect),
                (t.lead_changes.clone(), SourceKind::Lead),
                (t.opportunity_changes.clone(), SourceKind::Opportunity),
                (t.contact_changes.clone(), SourceKind::Contact),
                (t.account_changes.clone(), SourceKind::Account),
            ],
            commands: [
                (CommandKind::LeadUpsert, &t.lead_commands),
                (CommandKind::LeadNote, &t.annotation_commands),
                (CommandKind::CustomerUpsert, &t.customer_commands),
                (CommandKind::ProspectStatus, &t.prospect_status_commands),
                (CommandKind::CustomerHierarchy, &t.hierarchy_commands),
                (CommandKind::RejectionEmail, &t.notification_commands),
                (CommandKind::Alert, &t.alerts),
            ]
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect(),
            dead_letters: t.dead_letters.clone(),
            cases: t.cases.clone(),
            state: t.state.clone(),
            read: Vec::new(),
        };
        topics.read = (topics.inputs.iter().map(|(name, _)| name))
            .chain([&topics.cases])
            .map(|name| Arc::from(name.as_str()))
            .collect();
        topics
    }

    /// `topic`'s name as the records read from it share it (a new one for a topic not read).
    pub fn shared(&self, topic: &str) -> Arc<str> {
        self.read
            .iter()
            .find(|name| ***name == *topic)
            .cloned()
            .unwrap_or_else(|| Arc::from(topic))
    }

    pub fn kind_of(&self, topic: &str) -> Option<SourceKind> {
        self.inputs
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, k)| *k)
    }

    /// The input topics' names.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|(t, _)| t.as_str())
    }

    pub fn input_topic(&self, kind: SourceKind) -> &str {
        self.inputs
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(t, _)| t.as_str())
            .expect("every kind has a topic")
    }

    pub fn command_topic(&self, kind: CommandKind) -> &str {
        &self.commands[&kind]
    }

    /// Every topic the pipeline reads or writes.
    pub fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.inputs.iter().map(|(t, _)| t.as_str()).collect();
        all.extend(self.commands.values().map(String::as_str));
        all.extend([
            self.dead_letters.as_str(),
            self.cases.as_str(),
            self.state.as_str(),
        ]);
        all
    }

    /// What the consumer subscribes to: the inputs and the cases topic.
    pub fn subscriptions(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.inputs.iter().map(|(t, _)| t.as_str()).collect();
        s.push(&self.cases);
        s
    }
}

/// Looks up (or registers) one output schema, retrying for up to a minute while the registry is
/// unavailable, so a connector started alongside its registry does not fail needlessly.
async fn output_schema_id(
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
            Err(e) => return Err(RuntimeError::Registry(e.to_string())),
        }
    }
}

/// Checks that every topic exists and that `cases` and `state` have the same number of partitions;
/// returns that number.
fn check_topics(
    consumer: &StreamConsumer<ConsumerCtx>,
    topics: &Topics,
) -> Result<i32, RuntimeError> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(15))
        .map_err(|e| {
            RuntimeError::Kafka(format!(
                "cannot read cluster metadata (is kafka.bootstrap_servers right?): {e}"
            ))
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
        return Err(RuntimeError::Kafka(format!(
            "these topics do not exist: {}. Create them (see README, \"Topics\"); partner-sync does not create topics.",
            missing.join(", ")
        )));
    }
    let (cases, state) = (
        partitions[topics.cases.as_str()],
        partitions[topics.state.as_str()],
    );
    if cases != state {
        return Err(RuntimeError::Kafka(format!(
            "topic {} has {cases} partitions but {} has {state}; they must be equal, because each case's state lives in the partition of the same number",
            topics.cases, topics.state
        )));
    }
    Ok(cases as i32)
}

/// Probes the registry every `telemetry.registry_probe_seconds` with one of our own output schema ids,
/// so readiness reflects an outage even while every schema in use is cached.
fn spawn_registry_probe(
    settings: &Settings,
    client: RegistryClient,
    schema_ids: &FastMap<CommandKind, u32>,
    stats: Arc<Stats>,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = settings.telemetry.registry_probe_seconds;
    let id = schema_ids.values().min().copied()?;
    if every == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            match client.probe(id).await {
                Ok(()) => stats.registry("ok"),
                Err(e) => {
                    stats.registry(e.outcome());
                    if e.is_retriable() {
                        tracing::warn!(error = %e, "The Schema Registry probe failed; not ready until it answers.");
                    }
                }
            }
        }
    }))
}

/// Runs the connector until `shutdown` resolves. Returns the counters of what it did.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<Stats>, RuntimeError> {
    run_with(settings, Arc::new(Stats::default()), shutdown).await
}

/// Like [`run`], counting into `stats` (which callers may watch while it runs).
pub async fn run_with(
    settings: Settings,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<Stats>, RuntimeError> {
    let cfg = EngineConfig::compile(&settings).map_err(|e| RuntimeError::Config(e.to_string()))?;
    settings
        .check_record_sizes()
        .map_err(RuntimeError::Config)?;
    let transactional = settings.delivery.guarantee == Guarantee::ExactlyOnce;
    if settings.state.resident_cases > 0 {
        spill::check_dir(&settings.state.spill_dir).map_err(RuntimeError::Config)?;
    }
    let engine = Engine::new(cfg);
    let topics = Topics::new(&settings.topics);
    // Built on another thread while the clients start: it loads the system's CA certificates
    // (~90 ms here), and the start-up waits for the slowest of these steps, not for their sum.
    let building = {
        let registry = settings.registry.clone();
        tokio::task::spawn_blocking(move || RegistryClient::new(&registry))
    };
    let (tx, mut deliveries) = tokio::sync::mpsc::unbounded_channel();
    let mut producer_config = settings
        .kafka
        .client_config(if transactional {
            ClientRole::TransactionalProducer
        } else {
            ClientRole::Producer
        })
        .map_err(RuntimeError::Config)?;
    if transactional {
        // One id per instance: a restarted instance reuses it and fences its zombie (KIP-447).
        let instance =
            std::env::var("HOSTNAME").unwrap_or_else(|_| settings.kafka.client_id.clone());
        producer_config.set(
            "transactional.id",
            format!("{}-{instance}", settings.kafka.group_id),
        );
    }
    let context = ProducerCtx {
        deliveries: tx,
        stats: stats.clone(),
    };
    let producer: Arc<PipelineProducer> = Arc::new(
        PipelineProducer::create(&producer_config, context, "producer events")
            .map_err(|e| RuntimeError::Kafka(format!("cannot create the producer: {e}")))?,
    );
    let log = Arc::new(Mutex::new(RebalanceLog::default()));
    let consumer: Arc<StreamConsumer<ConsumerCtx>> = Arc::new(
        settings
            .kafka
            .client_config(ClientRole::Consumer)
            .map_err(RuntimeError::Config)?
            .create_with_context(ConsumerCtx {
                transactional,
                log: log.clone(),
                producer: OnceLock::new(),
                stats: stats.clone(),
                fence_first: (!transactional && settings.delivery.local_apply)
                    .then(|| topics.cases.clone()),
            })
            .map_err(|e| RuntimeError::Kafka(format!("cannot create the consumer: {e}")))?,
    );
    let _ = consumer.context().producer.set(producer.clone());
    // The topics are checked while the output schemas are.
    let checking = {
        let consumer = consumer.clone();
        let topics = topics.clone();
        tokio::task::spawn_blocking(move || check_topics(&consumer, &topics))
    };
    let registry = building
        .await
        .map_err(|e| RuntimeError::Config(e.to_string()))?
        .map_err(RuntimeError::Config)?;

    // Output schemas: registered ahead (checked here) or registered now.
    let mut schema_ids = FastMap::default();
    for (kind, text) in COMMAND_SCHEMAS {
        let schema = Schema::parse_str(text).map_err(|e| RuntimeError::Encode(e.to_string()))?;
        let full_name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            _ => unreachable!("command schemas are records"),
        };
        let subject = settings
            .registry
            .subject_name_strategy
            .subject(topics.command_topic(kind), &full_name);
        let id =
            output_schema_id(&registry, &subject, text, settings.registry.auto_register).await?;
        schema_ids.insert(kind, id);
    }

    if transactional {
        let p = producer.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            p.init_transactions(Duration::from_secs(30))
        })
        .await
        .map_err(|e| RuntimeError::Kafka(e.to_string()))?
        .map_err(|e| {
            RuntimeError::Kafka(format!(
                "cannot initialise transactions (does the cluster support them?): {e}"
            ))
        })?;
    }
    let cases_partitions = checking
        .await
        .map_err(|e| RuntimeError::Kafka(e.to_string()))??;
    // Only once every check passed (topics, partition counts, output schemas), so a start-up
    // that cannot run writes nothing: the producer's warm-up writes a fence to the cases topic.
    // The broker's producer id (~0.5 s on Tansu) then arrives while the group is joined and the
    // owned state is restored.
    let warming = if !transactional && settings.delivery.local_apply {
        pipeline::warm_up(producer.clone(), &topics.cases).await
    } else {
        None
    };
    consumer
        .subscribe(&topics.subscriptions())
        .map_err(|e| RuntimeError::Kafka(format!("cannot subscribe: {e}")))?;
    // librdkafka joins the group meanwhile; the pipeline takes the assignment and restores while
    // the producer's id is on its way (`Pipeline::start_up`).
    tracing::info!(group = %settings.kafka.group_id, topics = ?topics.subscriptions(), "partner-sync is running.");

    let fence_config = settings
        .kafka
        .client_config(ClientRole::FenceWriter)
        .map_err(RuntimeError::Config)?;
    let fence_producer = quiet_producer::QuietProducer::create(
        &fence_config,
        quiet_producer::AwaitingCtx,
        "fence events",
    )
    .map_err(|e| RuntimeError::Kafka(format!("cannot create the fence producer: {e}")))?;
    let probe = spawn_registry_probe(&settings, registry.sibling(), &schema_ids, stats.clone());
    let pipeline = Pipeline::new(
        settings,
        engine,
        registry,
        topics,
        consumer.clone(),
        producer,
        schema_ids,
        log,
        stats.clone(),
        fence_producer,
        cases_partitions,
    );
    let pipeline = if transactional {
        pipeline.transactional()
    } else {
        pipeline
    };
    let result = pipeline.run(&mut deliveries, shutdown, warming).await;
    if let Some(probe) = probe {
        probe.abort();
    }
    stats.set_assigned(false);
    // Closing a consumer can block (rust-rdkafka #509, #611): do it off the async threads, bounded.
    let closing = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer);
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), closing).await;
    result.map(|()| stats)
}
