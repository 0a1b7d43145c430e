//! What the connector did and how it is doing: the one place every outcome is counted.
//!
//! Each method is named for what happened, so call sites read as sentences, and each updates the
//! Prometheus metric behind it — there is no second set of counters. `/metrics` renders this
//! registry; the `run` summary, the demo's report and the tests read the same values through
//! [`Stats::value`], so what a test asserts is what an operator scrapes.
//!
//! Conventions: one `partnersync_` prefix, base units (seconds), `_total` on counters, and labels
//! with bounded values only — topics, partitions, rule names and reason codes, never ids.
//!
//! Health lives here too: the processing loop beats a heartbeat ([`Stats::beat`]) that
//! `/health/live` checks, and readiness is the conjunction of partitions assigned, producer connected
//! and registry reachable, each set by the part of the runtime that knows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::now_ms;
use by_topic::ByTopic;

mod by_topic;
use crate::engine::{Decision, Disposition, ParkReason, SkipReason};
use crate::model::{AlertKind, Command, CommandKind, SourceKind};

/// Names of the metrics other code reads back through [`Stats::value`].
pub mod names {
    pub const CONSUMED: &str = "partnersync_records_consumed_total";
    pub const PRODUCED: &str = "partnersync_records_produced_total";
    pub const RULE_OUTCOMES: &str = "partnersync_rule_outcomes_total";
    pub const SKIPPED: &str = "partnersync_skipped_total";
    pub const COMMANDS: &str = "partnersync_commands_total";
    pub const ALERTS: &str = "partnersync_alerts_total";
    pub const DEAD_LETTERS: &str = "partnersync_dead_letters_total";
    pub const REGISTRY_REQUESTS: &str = "partnersync_registry_requests_total";
    pub const COMMITS: &str = "partnersync_commits_total";
    pub const COMMIT_FAILURES: &str = "partnersync_commit_failures_total";
    pub const RECOVERIES: &str = "partnersync_recoveries_total";
    pub const INTAKE_PAUSES: &str = "partnersync_intake_pauses_total";
    pub const REBALANCES: &str = "partnersync_rebalances_total";
    pub const PARKED_EXPIRED: &str = "partnersync_parked_expired_total";
    pub const PARKED: &str = "partnersync_parked_total";
    pub const APPLIED: &str = "partnersync_records_applied_total";
    pub const STATE_RECORDS: &str = "partnersync_state_records_produced_total";
    pub const SPILL_REFUSALS: &str = "partnersync_state_spill_refusals_total";
    pub const STATE_RESTORES: &str = "partnersync_state_restores_total";
}

/// The mapping rule each source kind drives: the `rule` label of the outcome metrics.
pub fn rule_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Prospect => "prospect_to_lead",
        SourceKind::Lead => "lead_decision",
        SourceKind::Opportunity => "opportunity_close",
        SourceKind::Contact => "contact_to_customer",
        SourceKind::Account => "account_to_customer",
    }
}

/// The `outcome` label values of `partnersync_rule_outcomes_total`.
const OUTCOMES: [&str; 4] = ["emitted", "skipped", "parked", "rejected"];

/// Dead-letter stages (Kafka Connect's names) and reasons, pre-created so alerts see zeros, not gaps.
const DEAD_LETTER_SERIES: [(&str, &str); 13] = [
    ("KAFKA_CONSUME", "oversized_input"),
    ("VALUE_CONVERTER", "bad_wire_format"),
    ("VALUE_CONVERTER", "unknown_schema"),
    ("VALUE_CONVERTER", "invalid_schema"),
    ("VALUE_CONVERTER", "incompatible_schema"),
    ("VALUE_CONVERTER", "undecodable"),
    ("VALUE_CONVERTER", "unknown_source"),
    ("TRANSFORMATION", "missing_field"),
    ("TRANSFORMATION", "invalid_value"),
    ("TRANSFORMATION", "too_many_parked"),
    ("TRANSFORMATION", "missing_email"),
    ("TRANSFORMATION", "parking_expired"),
    ("KAFKA_PRODUCE", "output_rejected"),
];

const PARK_REASONS: [ParkReason; 3] = [
    ParkReason::ProspectNotSeen,
    ParkReason::LeadNotSeen,
    ParkReason::CustomersNotSeen,
];

/// Why the connector is not ready, or `None` when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    NoPartitions,
    ProducerDisconnected,
    RegistryUnreachable,
}

impl NotReady {
    pub fn sentence(self) -> &'static str {
        match self {
            NotReady::NoPartitions => "no partitions assigned yet (the consumer group is joining or rebalancing)",
            NotReady::ProducerDisconnected => "the producer cannot reach any Kafka broker; check kafka.bootstrap_servers and the network policy",
            NotReady::RegistryUnreachable => "the Schema Registry is unreachable; check registry.urls and its credentials",
        }
    }
}

/// Every metric of the connector, registered in its own registry.
pub struct Stats {
    registry: Registry,
    consumed: ByTopic,
    produced: ByTopic,
    skipped: IntCounterVec,
    dead_letters: IntCounterVec,
    parked: IntCounterVec,
    parked_events: IntGauge,
    parked_expired: IntCounterVec,
    processing: HistogramVec,
    /// Children of the series touched for every record, resolved once: `with_label_values`
    /// hashes its labels and takes a lock each time (~2% of the pipeline thread on a backfill).
    processing_route: Histogram,
    processing_apply: Histogram,
    /// Records that reached the apply stage: through the cases topic (`hop`) or at once (`local`).
    applied_hop: IntCounter,
    applied_local: IntCounter,
    /// `rule_outcomes` by source kind and outcome (`OUTCOMES` order).
    outcome_of: Vec<[IntCounter; 4]>,
    /// `commands` by command kind (`CommandKind::ALL` order).
    command_of: Vec<IntCounter>,
    /// `partnersync_alerts_total` by kind, indexed by `AlertKind as usize`.
    alert_of: Vec<IntCounter>,
    end_to_end: Histogram,
    consumer_lag: IntGaugeVec,
    commits: IntCounter,
    commit_failures: IntCounter,
    recoveries: IntCounter,
    rebalances: IntCounterVec,
    registry_requests: IntCounterVec,
    in_flight: IntGauge,
    intake_paused: IntGauge,
    order_window: IntGauge,
    intake_pauses: IntCounter,
    restores: IntCounter,
    state_records: IntCounter,
    spill_refusals: IntCounter,
    /// `partnersync_state_entries` by map and place: cases, customer links, requesters; in memory,
    /// spilled.
    state_entries: [IntGauge; 6],
    ready_gauge: IntGauge,
    assigned: AtomicBool,
    producer_up: AtomicBool,
    registry_up: AtomicBool,
    last_beat_ms: AtomicI64,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let m = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Stats {
    pub fn new() -> Stats {
        let r = Registry::new();
        let processing = HistogramVec::new(
            HistogramOpts::new(
                "partnersync_processing_duration_seconds",
                "Time to handle one record, from reading it to handing its outputs to the producer, by stage (route: input to cases topic; apply: cases topic to commands).",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["stage"],
        )
        .expect("valid metric");
        r.register(Box::new(processing.clone()))
            .expect("unique metric");
        let end_to_end = Histogram::with_opts(
            HistogramOpts::new(
                "partnersync_end_to_end_latency_seconds",
                "Time from the source change (modifiedon) to its decision, per applied event. Large during backfills by nature.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                900.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(end_to_end.clone()))
            .expect("unique metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "partnersync_consumer_lag_records",
                "Records between the committed offset and the end of each assigned partition, from librdkafka statistics.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        r.register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let rule_outcomes = counter_vec(
            &r,
            names::RULE_OUTCOMES,
            "Events each mapping rule decided, by outcome (emitted, skipped, parked, rejected).",
            &["rule", "outcome"],
        );
        let commands = counter_vec(&r, names::COMMANDS, "Commands decided, by kind.", &["kind"]);
        let applied = counter_vec(
            &r,
            names::APPLIED,
            "Records that reached the apply stage, by path: read back from the cases topic (hop) or applied where they were routed (local).",
            &["path"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "partnersync_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version", "commit"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("PARTNER_SYNC_COMMIT")])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");

        let outcome_of = SourceKind::ALL
            .iter()
            .map(|&kind| {
                OUTCOMES.map(|outcome| rule_outcomes.with_label_values(&[rule_name(kind), outcome]))
            })
            .collect();
        let command_of = CommandKind::ALL
            .iter()
            .map(|kind| commands.with_label_values(&[kind.as_str()]))
            .collect();
        let alerts = counter_vec(
            &r,
            names::ALERTS,
            "Alerts for people written to the alerts topic, by kind (email_taken: a contact held back and its prospect's approval held).",
            &["kind"],
        );
        let alert_of = AlertKind::ALL
            .iter()
            .map(|kind| alerts.with_label_values(&[kind.as_str()]))
            .collect();
        let s = Stats {
            consumed: ByTopic::new(counter_vec(&r, names::CONSUMED, "Records read, by topic (inputs and the internal cases topic).", &["topic"])),
            produced: ByTopic::new(counter_vec(&r, names::PRODUCED, "Command records handed to the producer, by topic.", &["topic"])),
            skipped: counter_vec(&r, names::SKIPPED, "Events that produced no command on purpose, by rule and reason.", &["rule", "reason"]),
            dead_letters: counter_vec(&r, names::DEAD_LETTERS, "Records sent to the dead-letter topic, by stage and reason.", &["stage", "reason"]),
            parked: counter_vec(&r, names::PARKED, "Events parked to wait for a related record, by reason.", &["reason"]),
            parked_events: gauge(&r, "partnersync_parked_events", "Events waiting in this instance's partitions for a related record."),
            parked_expired: counter_vec(&r, names::PARKED_EXPIRED, "Parked events that waited too long and went to the dead letters, by reason.", &["reason"]),
            processing_route: processing.with_label_values(&["route"]),
            processing_apply: processing.with_label_values(&["apply"]),
            applied_hop: applied.with_label_values(&["hop"]),
            applied_local: applied.with_label_values(&["local"]),
            processing,
            outcome_of,
            command_of,
            alert_of,
            end_to_end,
            consumer_lag,
            commits: counter(&r, names::COMMITS, "Offset (or transaction) commits."),
            commit_failures: counter(&r, names::COMMIT_FAILURES, "Failed or aborted commits."),
            recoveries: counter(&r, names::RECOVERIES, "Times the pipeline was started again in-process after a retriable fault (a broker down, a delivery timed out)."),
            rebalances: counter_vec(&r, names::REBALANCES, "Consumer group rebalances seen, by what happened to this instance's partitions.", &["kind"]),
            registry_requests: counter_vec(&r, names::REGISTRY_REQUESTS, "Schema Registry requests (cache misses and probes), by outcome.", &["outcome"]),
            in_flight: gauge(&r, "partnersync_in_flight_records", "Records whose outputs are not yet acknowledged."),
            intake_paused: gauge(&r, "partnersync_intake_paused", "1 while intake is paused because too many records are in flight."),
            order_window: gauge(&r, "partnersync_order_window_records", "Input records waiting in the order window to be routed in timestamp order."),
            intake_pauses: counter(&r, names::INTAKE_PAUSES, "Times intake paused because too many records were in flight."),
            restores: counter(&r, names::STATE_RESTORES, "State partitions restored from the state topic."),
            state_records: counter(&r, names::STATE_RECORDS, "State entries handed to the producer for the state topic, after same-key writes released together were coalesced."),
            spill_refusals: counter(&r, names::SPILL_REFUSALS, "State entries the spill file under state.spill_dir refused (they stayed in memory)."),
            state_entries: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "partnersync_state_entries",
                        "Cases, customer links and requesters of this instance's partitions, by where they are: in memory, or in the spill file (state.resident_cases).",
                    ),
                    &["map", "place"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                [("cases", "memory"), ("cases", "spilled"), ("customer_links", "memory"), ("customer_links", "spilled"), ("requesters", "memory"), ("requesters", "spilled")]
                    .map(|(map, place)| g.with_label_values(&[map, place]))
            },
            ready_gauge: gauge(&r, "partnersync_ready", "1 when partitions are assigned, the producer is connected and the registry is reachable."),
            registry: r,
            assigned: AtomicBool::new(false),
            producer_up: AtomicBool::new(true),
            registry_up: AtomicBool::new(true),
            last_beat_ms: AtomicI64::new(now_ms()),
        };
        for (stage, reason) in DEAD_LETTER_SERIES {
            s.dead_letters.with_label_values(&[stage, reason]);
        }
        for reason in PARK_REASONS {
            s.parked.with_label_values(&[reason.as_str()]);
            s.parked_expired.with_label_values(&[reason.as_str()]);
        }
        for kind in SourceKind::ALL {
            for reason in [
                SkipReason::Echo,
                SkipReason::Duplicate,
                SkipReason::StaleVersion,
            ] {
                s.skipped
                    .with_label_values(&[rule_name(kind), reason.as_str()]);
            }
        }
        for kind in ["assign", "revoke"] {
            s.rebalances.with_label_values(&[kind]);
        }
        for outcome in ["ok", "unavailable", "unknown_id", "invalid_schema"] {
            s.registry_requests.with_label_values(&[outcome]);
        }
        s
    }

    // --- what happened to records -------------------------------------------------------------

    pub fn consumed(&self, topic: &str) {
        self.consumed.inc(topic);
    }

    /// Cases partition `partition` is applied here from now on: its fence came back after
    /// `waited`, and `held` records waited for it. Once per partition and assignment.
    pub fn became_local(&self, partition: i32, waited: Duration, held: usize) {
        tracing::info!(
            partition,
            waited_ms = waited.as_millis() as u64,
            held,
            "Cases partition {partition} is applied here from now on, without the cases hop; its fence came back after {} ms.",
            waited.as_millis()
        );
    }

    /// A record reached the apply stage, read back from the cases topic or routed here.
    pub fn applied(&self, local: bool) {
        if local {
            self.applied_local.inc()
        } else {
            self.applied_hop.inc()
        }
    }

    pub fn produced(&self, topic: &str) {
        self.produced.inc(topic);
    }

    /// One record handled by `stage` (route or apply) in `took`.
    pub fn processed(&self, stage: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        match stage {
            "route" => self.processing_route.observe(seconds),
            "apply" => self.processing_apply.observe(seconds),
            other => self.processing.with_label_values(&[other]).observe(seconds),
        }
    }

    /// The engine decided an event whose source change happened at `modified_on` (epoch ms). Parked
    /// events it released are counted again under their final outcome.
    pub fn decided(&self, kind: SourceKind, d: &Decision, modified_on: i64, now_ms: i64) {
        self.outcome(kind, &d.disposition);
        for r in &d.released {
            self.outcome(r.kind, &r.disposition);
        }
        // Released parked events are no longer waiting.
        self.parked_events.sub(d.released.len() as i64);
        self.count_commands(&d.commands);
        if modified_on > 0 {
            self.end_to_end
                .observe((now_ms - modified_on).max(0) as f64 / 1000.0);
        }
    }

    /// Commands that came due with time alone (alerts of waits that ran out).
    pub fn came_due(&self, commands: &[Command]) {
        self.count_commands(commands);
    }

    fn count_commands(&self, commands: &[Command]) {
        for c in commands {
            self.command_of[c.kind() as usize].inc();
            if let Command::Alert(alert) = c {
                self.alert_of[alert.kind as usize].inc();
            }
        }
    }

    fn outcome(&self, kind: SourceKind, disposition: &Disposition) {
        let rule = rule_name(kind);
        // Indexes into `OUTCOMES`.
        let outcome = match disposition {
            Disposition::Emitted => 0,
            Disposition::Skipped(r) => {
                self.skipped.with_label_values(&[rule, r.as_str()]).inc();
                1
            }
            Disposition::Parked(r) => {
                self.parked.with_label_values(&[r.as_str()]).inc();
                self.parked_events.inc();
                2
            }
            Disposition::Rejected(_) => 3,
        };
        self.outcome_of[kind as usize][outcome].inc();
    }

    pub fn dead_letter(&self, stage: &str, reason: &str) {
        self.dead_letters.with_label_values(&[stage, reason]).inc();
    }

    pub fn expired(&self, reason: ParkReason) {
        self.parked_expired
            .with_label_values(&[reason.as_str()])
            .inc();
        self.parked_events.dec();
    }

    /// Where the owned partitions' cases, customer links and requesters are now: `[in memory,
    /// spilled]` each.
    pub fn state_held(
        &self,
        cases: [usize; 2],
        customer_links: [usize; 2],
        requesters: [usize; 2],
    ) {
        let all = [
            cases[0],
            cases[1],
            customer_links[0],
            customer_links[1],
            requesters[0],
            requesters[1],
        ];
        for (gauge, n) in self.state_entries.iter().zip(all) {
            gauge.set(n as i64);
        }
    }

    /// The spill file refused `n` more state entries (they stayed in memory).
    pub fn spill_refused(&self, n: u64) {
        self.spill_refusals.inc_by(n);
    }

    /// A partition's state arrived (restored) or left (revoked) with `parked` events waiting in it.
    pub fn parked_moved(&self, parked: i64) {
        self.parked_events.add(parked);
    }

    pub fn registry(&self, outcome: &str) {
        self.registry_requests.with_label_values(&[outcome]).inc();
        match outcome {
            "unavailable" => self.set_registry_up(false),
            _ => self.set_registry_up(true),
        }
    }

    pub fn committed(&self, ok: bool) {
        if ok {
            self.commits.inc()
        } else {
            self.commit_failures.inc()
        }
    }

    /// The pipeline starts again after a retriable fault.
    pub fn recovered(&self) {
        self.recoveries.inc()
    }

    pub fn rebalanced(&self, kind: &str) {
        self.rebalances.with_label_values(&[kind]).inc();
    }

    pub fn restored(&self) {
        self.restores.inc();
    }

    pub fn state_record_sent(&self) {
        self.state_records.inc();
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    pub fn set_order_window(&self, n: usize) {
        self.order_window.set(n as i64);
    }

    pub fn set_paused(&self, paused: bool) {
        if paused && self.intake_paused.get() == 0 {
            self.intake_pauses.inc();
        }
        self.intake_paused.set(i64::from(paused));
    }

    /// Replaces the consumer lag figures with one statistics report's (partitions absent from it are
    /// no longer ours).
    pub fn set_consumer_lag(&self, lags: &[(String, i32, i64)]) {
        self.consumer_lag.reset();
        for (topic, partition, lag) in lags {
            self.consumer_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set(*lag);
        }
    }

    // --- health -------------------------------------------------------------------------------

    /// The processing loop is alive (called every loop turn and while waiting on purpose).
    pub fn beat(&self) {
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Live: the loop beat within `window`.
    pub fn is_live(&self, window: Duration) -> bool {
        now_ms() - self.last_beat_ms.load(Ordering::Relaxed) <= window.as_millis() as i64
    }

    pub fn set_assigned(&self, assigned: bool) {
        self.assigned.store(assigned, Ordering::Relaxed);
        self.update_ready();
    }

    pub fn set_producer_up(&self, up: bool) {
        self.producer_up.store(up, Ordering::Relaxed);
        self.update_ready();
    }

    pub fn set_registry_up(&self, up: bool) {
        self.registry_up.store(up, Ordering::Relaxed);
        self.update_ready();
    }

    /// The first reason the connector is not ready, if any.
    pub fn not_ready(&self) -> Option<NotReady> {
        if !self.assigned.load(Ordering::Relaxed) {
            Some(NotReady::NoPartitions)
        } else if !self.producer_up.load(Ordering::Relaxed) {
            Some(NotReady::ProducerDisconnected)
        } else if !self.registry_up.load(Ordering::Relaxed) {
            Some(NotReady::RegistryUnreachable)
        } else {
            None
        }
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    fn update_ready(&self) {
        self.ready_gauge.set(i64::from(self.is_ready()));
    }

    // --- reading ------------------------------------------------------------------------------

    pub fn in_flight(&self) -> usize {
        self.in_flight.get().max(0) as usize
    }

    pub fn is_paused(&self) -> bool {
        self.intake_paused.get() != 0
    }

    /// Every series of `metric`: its labels and value (a histogram's value is its sample count).
    pub fn series(&self, metric: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut out = Vec::new();
        for family in self.registry.gather() {
            if family.name() != metric {
                continue;
            }
            for m in family.get_metric() {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                let value = match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                    prometheus::proto::MetricType::HISTOGRAM => {
                        m.get_histogram().get_sample_count() as f64
                    }
                    _ => 0.0,
                };
                out.push((labels, value));
            }
        }
        out
    }

    /// The sum of `metric` over the series whose labels include every pair of `labels`.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.series(metric)
            .into_iter()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum::<f64>() as u64
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// Non-zero counters as `name{labels} value` lines, for the exit log line.
    pub fn summary(&self) -> String {
        self.render()
            .lines()
            .filter(|l| l.starts_with("partnersync_") && l.contains("_total") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_info_names_the_version_and_the_commit() {
        let line = Stats::new()
            .render()
            .lines()
            .find(|l| l.starts_with("partnersync_build_info{"))
            .map(str::to_string)
            .expect("partnersync_build_info");
        assert!(
            line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && line.contains(&format!("commit=\"{}\"", env!("PARTNER_SYNC_COMMIT")))
                && line.ends_with(" 1"),
            "{line}"
        );
    }

    #[test]
    fn readiness_names_the_first_missing_piece_and_the_gauge_follows() {
        let s = Stats::new();
        assert_eq!(s.not_ready(), Some(NotReady::NoPartitions));
        s.set_assigned(true);
        assert!(s.is_ready());
        assert!(s.render().contains("partnersync_ready 1"));
        s.set_producer_up(false);
        assert_eq!(s.not_ready(), Some(NotReady::ProducerDisconnected));
        s.set_producer_up(true);
        s.registry("unavailable");
        assert_eq!(s.not_ready(), Some(NotReady::RegistryUnreachable));
        assert!(s.render().contains("partnersync_ready 0"));
        s.registry("ok");
        assert!(s.is_ready());
    }

    #[test]
    fn each_decision_counts_under_its_own_rule_and_outcome() {
        // The resolved children are indexed by declaration order; `ALL` must follow it.
        assert!(SourceKind::ALL
            .iter()
            .enumerate()
            .all(|(i, k)| *k as usize == i));
        assert!(CommandKind::ALL
            .iter()
            .enumerate()
            .all(|(i, k)| *k as usize == i));
        let s = Stats::new();
        let decision = |disposition| Decision {
            disposition,
            commands: Vec::new(),
            released: Vec::new(),
            touched: Vec::new(),
        };
        for (n, kind) in SourceKind::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                s.decided(kind, &decision(Disposition::Emitted), 0, 0);
            }
            s.decided(
                kind,
                &decision(Disposition::Skipped(SkipReason::Duplicate)),
                0,
                0,
            );
            for _ in 0..2 {
                let missing = crate::engine::Rejection::MissingField {
                    entity: "lead".into(),
                    field: "leadid".into(),
                };
                s.decided(kind, &decision(Disposition::Rejected(missing)), 0, 0);
            }
        }
        for (n, kind) in SourceKind::ALL.into_iter().enumerate() {
            let count = |outcome| {
                s.value(
                    names::RULE_OUTCOMES,
                    &[("rule", rule_name(kind)), ("outcome", outcome)],
                )
            };
            assert_eq!(count("emitted"), n as u64 + 1, "{kind:?}");
            assert_eq!(count("skipped"), 1, "{kind:?}");
            assert_eq!(count("parked"), 0, "{kind:?}");
            assert_eq!(count("rejected"), 2, "{kind:?}");
        }
    }

    #[test]
    fn liveness_fails_once_the_loop_stops_beating_for_the_window() {
        let s = Stats::new();
        s.beat();
        assert!(s.is_live(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!s.is_live(Duration::from_millis(5)));
        s.beat();
        assert!(s.is_live(Duration::from_millis(5)));
    }

    #[test]
    fn a_parked_event_counts_until_released_or_expired() {
        let s = Stats::new();
        s.parked_moved(3);
        s.expired(ParkReason::LeadNotSeen);
        assert_eq!(s.value("partnersync_parked_events", &[]), 2);
        assert_eq!(
            s.value(names::PARKED_EXPIRED, &[("reason", "lead_not_seen")]),
            1
        );
    }
}
