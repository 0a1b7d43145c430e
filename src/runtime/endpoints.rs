//! `/metrics`, `/health/live` and `/health/ready`, served from the pipeline's [`Stats`].
//!
//! Live means the processing loop turned within the liveness window: a loop stuck for longer is
//! worth a restart. Ready means partitions are assigned, the producer reaches a broker and the
//! registry answers; the body says which one is missing, in a sentence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::Stats;
use crate::http::{self, Request, Response};

fn handle(stats: &Stats, liveness: Duration, r: Request) -> Response {
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/metrics") => Response::new(200, "text/plain; version=0.0.4", stats.render()),
        ("GET", "/health/live") if stats.is_live(liveness) => {
            Response::new(200, "text/plain", "live\n")
        }
        ("GET", "/health/live") => Response::new(
            503,
            "text/plain",
            format!(
                "not live: the processing loop has not turned for more than {} s\n",
                liveness.as_secs()
            ),
        ),
        ("GET", "/health/ready") => match stats.not_ready() {
            None => Response::new(200, "text/plain", "ready\n"),
            Some(why) => Response::new(
                503,
                "text/plain",
                format!("not ready: {}\n", why.sentence()),
            ),
        },
        _ => Response::new(
            404,
            "text/plain",
            "not found; try /metrics, /health/live or /health/ready\n",
        ),
    }
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    liveness: Duration,
    shutdown: impl Future<Output = ()>,
) {
    http::serve(
        listener,
        Arc::new(move |r| handle(&stats, liveness, r)),
        shutdown,
    )
    .await
}

/// Binds `listen` and serves the endpoints until the returned sender is dropped; returns the bound
/// address (useful with port 0).
pub async fn start(
    listen: &str,
    stats: Arc<Stats>,
    liveness: Duration,
) -> Result<(tokio::sync::oneshot::Sender<()>, String), String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot serve /metrics on {listen}: {e}. Set telemetry.listen to a free address.")
    })?;
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%address, "Serving /metrics, /health/live and /health/ready.");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, stats, liveness, async move {
        let _ = stopped.await;
    }));
    Ok((stop, address))
}
