//! `/metrics` (Prometheus text format) and `/health/live`, `/health/ready`, from the pipeline's [`Stats`].
//!
//! Metric names follow Prometheus conventions: one `partnersync_` prefix, base units, `_total` on
//! counters, and labels with bounded values (topics, source kinds, reason codes — never ids).

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::Stats;
use crate::http::{self, Request, Response};

/// Renders every counter in the Prometheus text exposition format.
pub fn render(stats: &Stats) -> String {
    let mut families: std::collections::BTreeMap<
        &'static str,
        (&'static str, &'static str, Vec<String>),
    > = Default::default();
    let mut add = |name: &'static str, kind: &'static str, help: &'static str, line: String| {
        families
            .entry(name)
            .or_insert((kind, help, Vec::new()))
            .2
            .push(line);
    };
    for (key, value) in stats.snapshot() {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["consumed", topic] => add(
                "partnersync_records_consumed_total",
                "counter",
                "Records read, by topic.",
                format!("{{topic=\"{topic}\"}} {value}"),
            ),
            ["produced", topic] => add(
                "partnersync_records_produced_total",
                "counter",
                "Command records written, by topic.",
                format!("{{topic=\"{topic}\"}} {value}"),
            ),
            ["decided", source, outcome] => add(
                "partnersync_events_total",
                "counter",
                "Events the engine decided, by source and outcome.",
                format!("{{source=\"{source}\",outcome=\"{outcome}\",reason=\"\"}} {value}"),
            ),
            ["decided", source, outcome, reason] => add(
                "partnersync_events_total",
                "counter",
                "Events the engine decided, by source and outcome.",
                format!(
                    "{{source=\"{source}\",outcome=\"{outcome}\",reason=\"{reason}\"}} {value}"
                ),
            ),
            ["command", kind] => add(
                "partnersync_commands_total",
                "counter",
                "Commands decided, by kind.",
                format!("{{kind=\"{kind}\"}} {value}"),
            ),
            ["dead_letter", stage, reason] => add(
                "partnersync_dead_letters_total",
                "counter",
                "Records sent to the dead-letter topic, by stage and reason.",
                format!("{{stage=\"{stage}\",reason=\"{reason}\"}} {value}"),
            ),
            ["registry", outcome] => add(
                "partnersync_registry_requests_total",
                "counter",
                "Schema Registry look-ups, by outcome.",
                format!("{{outcome=\"{outcome}\"}} {value}"),
            ),
            ["parked_expired"] => add(
                "partnersync_parked_expired_total",
                "counter",
                "Parked events that waited too long.",
                format!(" {value}"),
            ),
            ["intake_pauses"] => add(
                "partnersync_intake_pauses_total",
                "counter",
                "Times intake paused because too many records were in flight.",
                format!(" {value}"),
            ),
            ["commits"] => add(
                "partnersync_commits_total",
                "counter",
                "Offset (or transaction) commits.",
                format!(" {value}"),
            ),
            ["commit_failures"] => add(
                "partnersync_commit_failures_total",
                "counter",
                "Failed or aborted commits.",
                format!(" {value}"),
            ),
            _ => {}
        }
    }
    add(
        "partnersync_in_flight_records",
        "gauge",
        "Records whose outputs are not yet acknowledged.",
        format!(" {}", stats.in_flight()),
    );
    add(
        "partnersync_intake_paused",
        "gauge",
        "1 while intake is paused because too many records are in flight.",
        format!(" {}", u8::from(stats.is_paused())),
    );
    add(
        "partnersync_state_restores_total",
        "counter",
        "State partitions restored from Kafka.",
        format!(" {}", stats.restores()),
    );
    add(
        "partnersync_build_info",
        "gauge",
        "Build information.",
        format!("{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
    );
    let mut out = String::new();
    for (name, (kind, help, lines)) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for line in lines {
            let _ = writeln!(out, "{name}{line}");
        }
    }
    out
}

fn handle(stats: &Stats, r: Request) -> Response {
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/metrics") => Response::new(200, "text/plain; version=0.0.4", render(stats)),
        ("GET", "/health/live") => Response::new(200, "text/plain", "live\n"),
        ("GET", "/health/ready") if stats.is_ready() => Response::new(200, "text/plain", "ready\n"),
        ("GET", "/health/ready") => {
            Response::new(503, "text/plain", "not ready: no partitions assigned yet\n")
        }
        _ => Response::new(
            404,
            "text/plain",
            "not found; try /metrics, /health/live or /health/ready\n",
        ),
    }
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, shutdown: impl Future<Output = ()>) {
    http::serve(listener, Arc::new(move |r| handle(&stats, r)), shutdown).await
}
