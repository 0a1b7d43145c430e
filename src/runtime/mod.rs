//! The Kafka runtime: the engine on the bus.
//!
//! [`run`] checks what production needs before reading anything — every output schema registered
//! under its subject (or registers it, if asked), every topic present, the cases and state topics
//! with equal partition counts — then runs the [`pipeline`] until the shutdown future resolves, and
//! drains. Delivery guarantee: at-least-once by default (see [`tracker`]), or exactly-once with Kafka
//! transactions (`delivery.guarantee = "exactly_once"`); `docs/ARCHITECTURE.md` says what each
//! guarantees and what was verified.

pub mod checks;
pub mod client_error;
pub mod dead_letter;
pub mod endpoints;
pub mod kafka;
pub mod local;
pub mod order;
pub mod partitioner;
pub mod pipeline;
pub mod quiet_producer;
pub mod repeats;
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
    /// The cluster is not what the configuration needs (a topic missing, partition counts that
    /// differ, a state topic that is not compacted, an output schema not registered): a person
    /// must change one or the other.
    #[error("cannot start: {0}")]
    Setup(String),
    /// A fault that passes (a broker down, a delivery timed out): [`run_with`] starts the pipeline
    /// again after a back-off instead of stopping.
    #[error("{0}")]
    Retriable(String),
    /// Exactly-once only: the client refused to queue a command as the record's own fault (too
    /// large); the transaction is still good, and the record becomes a dead letter in it
    /// (handled where commands are sent).
    #[error("{0}")]
    RecordRefused(String),
}

impl RuntimeError {
    /// The error for a Kafka client's refusal with `code`, by its class
    /// ([`client_error::classify`]). A record's own fault is handled where it happens and never
    /// reaches here; should one, it ends the run like a retriable error.
    pub fn from_client(code: rdkafka::types::RDKafkaErrorCode, message: String) -> RuntimeError {
        match client_error::classify(code) {
            client_error::ErrorClass::Fatal => {
                RuntimeError::Kafka(format!("{message}. {}", client_error::what_to_fix(code)))
            }
            _ => RuntimeError::Retriable(message),
        }
    }

    /// The process's exit code for this error: 2 when a person must change the configuration or
    /// the cluster's setup before a restart can help, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RuntimeError::Config(_) | RuntimeError::Setup(_) => 2,
            _ => 1,
        }
    }
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
///
/// A retriable fault ([`RuntimeError::Retriable`]: a broker down longer than
/// `kafka.message_timeout_ms`, say) ends one run of the pipeline, and the next starts after a
/// back-off, as a restarted process would: new clients, the group joined again, state restored
/// from the state topic, records read again from the committed offsets (their outputs repeated,
/// byte for byte). Any other error stops. `shutdown` is watched from the first step, so a stop
/// during a start-up that cannot finish is a clean one.
pub async fn run_with(
    settings: Settings,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<Stats>, RuntimeError> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
        std::future::pending::<()>().await
    };
    tokio::select! {
        result = recovering(settings, stats, stopping) => result,
        _ = signal => unreachable!("the signal future never completes"),
    }
}

/// The first back-off after a retriable fault; it doubles up to [`RECOVERY_MAX`], and starts over
/// after a run that lasted [`RECOVERY_RESET`].
const RECOVERY_FIRST: Duration = Duration::from_secs(1);
const RECOVERY_MAX: Duration = Duration::from_secs(30);
const RECOVERY_RESET: Duration = Duration::from_secs(120);

/// Runs the pipeline until it stops for good: again after each retriable fault.
async fn recovering(
    settings: Settings,
    stats: Arc<Stats>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Stats>, RuntimeError> {
    let mut backoff = RECOVERY_FIRST;
    loop {
        let began = Instant::now();
        match run_once(settings.clone(), stats.clone(), stopping.clone()).await {
            Err(RuntimeError::Retriable(reason)) if *stopping.borrow() => {
                tracing::warn!("Stopped during a fault ({reason}); records not finished were not committed and are processed again after restart.");
                return Ok(stats);
            }
            Err(RuntimeError::Retriable(reason)) => {
                if began.elapsed() > RECOVERY_RESET {
                    backoff = RECOVERY_FIRST;
                }
                stats.recovered();
                tracing::warn!(
                    retry_in_ms = backoff.as_millis() as u64,
                    "{reason}. Starting the pipeline again from the committed offsets and the state topic."
                );
                if !wait_unless_stopped(backoff, &stats, stopping.clone()).await {
                    return Ok(stats);
                }
                backoff = (backoff * 2).min(RECOVERY_MAX);
            }
            other => return other.map(|()| stats),
        }
    }
}

/// Resolves once a stop was asked for.
async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Waits `pause` (alive for the liveness probe meanwhile); false if a stop came first.
async fn wait_unless_stopped(
    pause: Duration,
    stats: &Stats,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let until = Instant::now() + pause;
    let beating = async {
        while Instant::now() < until {
            stats.beat();
            tokio::time::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
            )
            .await;
        }
    };
    tokio::select! {
        _ = beating => true,
        _ = stopped(stopping) => false,
    }
}

/// A pipeline ready to run and what must be closed after it.
struct Started {
    pipeline: Pipeline,
    deliveries: tokio::sync::mpsc::UnboundedReceiver<kafka::Delivery>,
    warming: Option<tokio::task::JoinHandle<(bool, Duration)>>,
    consumer: Arc<StreamConsumer<ConsumerCtx>>,
    probe: Option<tokio::task::JoinHandle<()>>,
}

/// One run: start-up (given up at once on a stop), then the pipeline until a stop or an error.
async fn run_once(
    settings: Settings,
    stats: Arc<Stats>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), RuntimeError> {
    let started = tokio::select! {
        started = start(settings, stats.clone()) => started?,
        _ = stopped(stopping.clone()) => {
            tracing::info!("Stopped during start-up, before reading anything.");
            return Ok(());
        }
    };
    let Started {
        pipeline,
        mut deliveries,
        warming,
        consumer,
        probe,
    } = started;
    let producer = pipeline.producer.clone();
    let result = pipeline
        .run(&mut deliveries, stopped(stopping), warming)
        .await;
    // What the producer still holds belongs to records not committed, which the next run (or
    // process) writes again. Dropped now, not retried later: the consumer's context holds the
    // producer too, and its close may outlast the bound below, so a retry could otherwise land
    // after the next run's writes (an older state entry over a newer one).
    {
        use rdkafka::producer::{Producer, PurgeConfig};
        producer.purge(PurgeConfig::default().queue().inflight());
    }
    drop(producer);
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
    result
}

/// Checks what production needs and builds the clients and the pipeline; writes nothing before
/// every check passed.
async fn start(settings: Settings, stats: Arc<Stats>) -> Result<Started, RuntimeError> {
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
    let (tx, deliveries) = tokio::sync::mpsc::unbounded_channel();
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
    let refused_login = Arc::new(kafka::RefusedLogin::default());
    let context = ProducerCtx {
        deliveries: tx,
        stats: stats.clone(),
        refused_login: refused_login.clone(),
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
                refused_login: refused_login.clone(),
            })
            .map_err(|e| RuntimeError::Kafka(format!("cannot create the consumer: {e}")))?,
    );
    let _ = consumer.context().producer.set(producer.clone());
    // The topics are checked while the output schemas are.
    let checking = {
        let consumer = consumer.clone();
        let topics = topics.clone();
        let bootstrap = settings.kafka.bootstrap_servers.clone();
        let refused_login = refused_login.clone();
        tokio::task::spawn_blocking(move || {
            checks::check_topics(&consumer, &topics, &bootstrap, &refused_login)
        })
    };
    // And the state topic's cleanup policy (its answer is awaited after the topics', whose
    // sentence comes first when the topic is missing).
    let compaction = settings.state.check_compaction.then(|| {
        let (kafka, state) = (settings.kafka.clone(), topics.state.clone());
        tokio::spawn(async move { checks::check_state_compacted(&kafka, &state).await })
    });
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
            checks::output_schema_id(&registry, &subject, text, settings.registry.auto_register)
                .await?;
        schema_ids.insert(kind, id);
    }

    let cases_partitions = checking
        .await
        .map_err(|e| RuntimeError::Kafka(e.to_string()))??;
    if let Some(compaction) = compaction {
        compaction
            .await
            .map_err(|e| RuntimeError::Kafka(e.to_string()))??;
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
    // Only once every check passed (topics, partition counts, compaction, output schemas), so a start-up
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
    Ok(Started {
        pipeline,
        deliveries,
        warming,
        consumer,
        probe,
    })
}
