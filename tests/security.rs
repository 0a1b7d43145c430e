//! The connector over an authenticated connection: SASL SCRAM-SHA-256 against a real broker
//! (Tansu with `--authentication`).
//!
//! Tansu 0.6's own command-line client cannot log in, so users and topics are made, and the
//! inputs written, by a broker without authentication on a SQLite file; then a broker with
//! authentication takes over the same file on the same port, and the connector runs against it;
//! then a broker without authentication again, for the test's plaintext readers. TLS is not
//! exercised: Tansu 0.6.0 serves plain TCP only (its `--cert` and `--key` flags exclude each
//! other, so no TLS configuration can be given).

mod common;

use std::time::{Duration, Instant};

use common::*;
use partner_sync::mapping::EngineConfig;
use partner_sync::runtime::stats::names;
use partner_sync::runtime::Stats;
use partner_sync::settings::{SecurityProtocol, Settings};
use partner_sync::story;
use tokio::task::block_in_place;

fn scram(bootstrap: &str, registry_url: &str, password: &str) -> Settings {
    let mut settings = settings(bootstrap, registry_url, "scram");
    settings.kafka.security_protocol = SecurityProtocol::SaslPlaintext;
    settings.kafka.sasl_mechanism = "SCRAM-SHA-256".into();
    settings.kafka.sasl_username = "partner-sync".into();
    settings.kafka.sasl_password = partner_sync::settings::Secret::new(password);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_sasl_scram_and_a_wrong_password_stops_it_with_what_to_fix() {
    let dir = std::env::temp_dir().join(format!("partner-sync-scram-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let (registry, ids) = registry().await;
    let events = story::generate(81, 20, &EngineConfig::defaults(), START_MS).clean();
    let expected = expected_commands(&events);
    let bootstrap = {
        let open = Broker::start_persistent(&dir, port, &[]);
        open.create_user("partner-sync", "s3cret-Passw0rd");
        open.create_pipeline_topics();
        produce(&producer(&open.bootstrap()), &ids, &events).await;
        open.bootstrap()
    };

    let secured = Broker::start_persistent(&dir, port, &["--authentication"]);
    // A wrong password: the broker refuses the login, and start-up stops with a sentence.
    let refused = InProcess::start(scram(&bootstrap, &registry.url(), "wrong"));
    let error = refused
        .ends_by_itself(Duration::from_secs(60))
        .await
        .expect_err("a refused login stops the connector");
    let text = error.to_string();
    assert!(
        text.contains("sasl_password") || text.contains("sasl_username"),
        "the sentence says what to check: {text}"
    );
    // The right one: every command of the story is written.
    let stats = std::sync::Arc::new(Stats::default());
    let connector = InProcess::start_with(
        scram(&bootstrap, &registry.url(), "s3cret-Passw0rd"),
        stats.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.value(names::COMMANDS, &[]) < expected.len() as u64 {
        assert!(
            Instant::now() < deadline && !connector.is_finished(),
            "only {} of {} commands over SASL",
            stats.value(names::COMMANDS, &[]),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connector.stop().await.expect("the connector stops cleanly");
    drop(secured);

    // What it wrote, read back by the test's plaintext readers.
    let open = Broker::start_persistent(&dir, port, &[]);
    let (seen, _) =
        block_in_place(|| collect_commands(&open.bootstrap(), &expected, Duration::from_secs(60)));
    assert_same_commands(&expected, &seen);
    drop(open);
    let _ = std::fs::remove_dir_all(&dir);
}
