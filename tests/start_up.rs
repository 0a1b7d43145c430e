//! Start-up as an operator meets it, with the connector binary against a real broker (Tansu):
//! a cluster set up wrong stops it with exit code 2 and a sentence, before it writes anything;
//! a stop asked for while start-up cannot finish is a clean exit, not death by signal.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use partner_sync::runtime::Topics;
use partner_sync::settings::Settings;
use tokio::task::block_in_place;

/// Waits up to `within` for the connector process to exit; its status.
fn exit_of(connector: &mut Connector, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = connector.child.try_wait().expect("poll the connector") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the connector was still running after {within:?}:\n{}",
            connector.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_topic_that_is_not_compacted_stops_start_up_with_exit_code_2_before_anything_is_written(
) {
    let broker = Broker::start();
    let topics = Topics::new(&Settings::defaults().topics);
    for t in topics.all() {
        let partitions = pipeline_partitions(&topics, t);
        let policy = if t == topics.state {
            "delete"
        } else {
            "compact"
        };
        broker.create_topic_with(t, partitions, &[("cleanup.policy", policy)]);
    }
    let (registry, _) = registry().await;
    let mut connector = Connector::spawn(
        &config_toml(&broker.bootstrap(), &registry.url(), "not-compacted"),
        "not-compacted",
    );
    let status = block_in_place(|| exit_of(&mut connector, Duration::from_secs(60)));
    let log = connector.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&topics.state)
            && log.contains("cleanup.policy=delete")
            && log.contains("compact"),
        "the sentence names the topic, its policy and the fix:\n{log}"
    );
    for topic in [&topics.cases, &topics.state, &topics.dead_letters] {
        let written =
            block_in_place(|| read_to_end(&broker.bootstrap(), topic, Duration::from_secs(10)));
        assert!(written.is_empty(), "nothing written to {topic}");
    }
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_missing_stops_start_up_with_exit_code_2_and_names_it() {
    let broker = Broker::start();
    let topics = Topics::new(&Settings::defaults().topics);
    for t in topics
        .all()
        .into_iter()
        .filter(|t| *t != topics.dead_letters)
    {
        let partitions = pipeline_partitions(&topics, t);
        broker.create_topic(t, partitions);
    }
    let (registry, _) = registry().await;
    let mut connector = Connector::spawn(
        &config_toml(&broker.bootstrap(), &registry.url(), "missing"),
        "missing",
    );
    let status = block_in_place(|| exit_of(&mut connector, Duration::from_secs(60)));
    let log = connector.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "these topics do not exist: {}",
            topics.dead_letters
        )),
        "{log}"
    );
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_start_up_that_cannot_finish_exits_cleanly() {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    // A registry that does not answer: start-up retries its output schemas for a minute.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut connector = Connector::spawn(
        &config_toml(&broker.bootstrap(), &nowhere, "stuck"),
        "stuck",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        connector.child.try_wait().unwrap().is_none(),
        "start-up is still waiting for the registry:\n{}",
        connector.log()
    );
    let status = connector
        .terminate(Duration::from_secs(10))
        .expect("the connector exits within 10 s of SIGTERM");
    let log = connector.log();
    assert_eq!(status.signal(), None, "not killed by the signal:\n{log}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("Stopped during start-up"), "{log}");
    let cases = Topics::new(&Settings::defaults().topics).cases;
    let written =
        block_in_place(|| read_to_end(&broker.bootstrap(), &cases, Duration::from_secs(10)));
    assert!(written.is_empty(), "nothing written to {cases}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_no_broker_answers_each_client_condition_is_logged_once_per_interval() {
    let (registry, _) = registry().await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut connector = Connector::spawn(
        &config_toml(&nowhere, &registry.url(), "unreachable"),
        "unreachable",
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let status = connector
        .terminate(Duration::from_secs(10))
        .expect("the connector exits within 10 s of SIGTERM");
    let log = connector.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let mut conditions = std::collections::BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains("librdkafka reported an error"))
    {
        let line: serde_json::Value = serde_json::from_str(line).expect("JSON log lines");
        let key = format!(
            "{}/{}",
            line["fields"]["client"],
            line["fields"]["error"]
                .as_str()
                .unwrap_or_default()
                .split(" (")
                .next()
                .unwrap_or_default()
        );
        *conditions.entry(key).or_insert(0) += 1;
    }
    assert!(
        !conditions.is_empty(),
        "the clients' errors are logged:\n{log}"
    );
    for (condition, lines) in &conditions {
        assert_eq!(
            *lines, 1,
            "{condition} logged {lines} times in 8 s, not once per 30 s:\n{log}"
        );
    }
    drop(registry);
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_partner-sync"))
        .arg("--version")
        .output()
        .expect("run --version");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .expect("git: the tests run in a checkout");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "git names HEAD");
    assert!(
        version.starts_with(&format!(
            "partner-sync {} (commit {head}",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
}
