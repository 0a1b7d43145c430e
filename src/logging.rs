//! Log output: JSON lines in a cluster (log collectors parse them), readable text on a terminal.
//!
//! The record span (`record{topic, partition, offset, change_id, trace_id}`, opened by the pipeline
//! for every record) is part of each JSON line as `span`, so a dead-letter warning can be found by
//! the change id a user quotes, and joined to a distributed trace by its trace id.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Whether `format` means JSON here (auto: JSON unless stderr is a terminal).
pub fn wants_json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

fn filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// The JSON subscriber, writing to `writer` (tests give it a buffer).
pub fn json_subscriber<W>(default_level: &str, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter(default_level))
        .with_writer(writer)
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .finish()
}

/// Installs the process-wide logger on stderr; `RUST_LOG` overrides `default_level`.
pub fn init(format: LogFormat, default_level: &str) {
    let result = if wants_json(format) {
        tracing::subscriber::set_global_default(json_subscriber(default_level, std::io::stderr))
    } else {
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter(filter(default_level))
                .with_writer(std::io::stderr)
                .finish(),
        )
    };
    // A second call (tests) keeps the first logger.
    let _ = result;
}
