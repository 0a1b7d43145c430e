//! `partner-sync replay` against a real Kafka-protocol broker (Tansu): dead letters made by a
//! configuration that was too tight, the configuration fixed, the dead letters replayed, and every
//! command of the story arrives once; a second replay sends nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{ChangeEvent, SourceKind};
use partner_sync::runtime::Topics;
use partner_sync::settings::Settings;
use partner_sync::story::{self, Path};
use tokio::task::block_in_place;

/// Runs `partner-sync replay` with `config` and `args`; returns (exit code, stdout, stderr).
fn replay(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_partner-sync"))
        .args(["replay", "--config", config.to_str().unwrap()])
        .args(args)
        .args(["--timeout-seconds", "30"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_after_a_fix_complete_the_story_once_and_a_second_replay_sends_nothing(
) {
    let broker = Broker::start();
    broker.create_pipeline_topics();
    let (registry, ids) = registry().await;
    let topics = Topics::new(&Settings::defaults().topics);
    let cfg = EngineConfig::defaults();
    // Three won cases, with one version of each contact, account and opportunity (the first
    // contact and account, the opportunity as won): a dead letter replayed after a later version
    // of its record was applied is rightly skipped as stale, which would make the story's end
    // depend on the order of the run.
    let mut events: Vec<ChangeEvent> = Vec::new();
    for index in 0..3 {
        let case =
            story::generate_case(9 + index as u64, index, Path::Won, &cfg, START_MS).causal();
        let last_of = |e: &ChangeEvent| {
            !case
                .iter()
                .skip_while(|x| !std::ptr::eq(*x, e))
                .skip(1)
                .any(|x| x.kind() == e.kind() && x.entity_id() == e.entity_id())
        };
        let mut seen = std::collections::BTreeSet::new();
        for e in &case {
            let keep = match e.kind() {
                SourceKind::Contact | SourceKind::Account => {
                    seen.insert((e.kind(), e.entity_id().to_string()))
                }
                SourceKind::Opportunity => last_of(e),
                _ => true,
            };
            if keep {
                events.push(e.clone());
            }
        }
    }
    let expected = expected_commands(&events);
    // The Sales side first: each case's contacts, accounts and opportunities arrive before its
    // prospect and lead. With parking.max_per_case = 1 only the first of them may wait; the rest
    // go to the dead letters as too_many_parked.
    let (sales, first): (Vec<ChangeEvent>, Vec<ChangeEvent>) =
        events.iter().cloned().partition(|e| {
            matches!(
                e.kind(),
                SourceKind::Contact | SourceKind::Account | SourceKind::Opportunity
            )
        });
    let p = producer(&broker.bootstrap());
    produce(&p, &ids, &sales).await;
    produce(&p, &ids, &first).await;

    let dir = std::env::temp_dir().join(format!("partner-sync-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = config_toml(&broker.bootstrap(), &registry.url(), "replay");
    let tight = format!("{base}\n[parking]\nmax_per_case = 1\n");
    let fixed = format!("{base}\n[parking]\nmax_per_case = 64\n");
    let fixed_file = dir.join("fixed.toml");
    std::fs::write(&fixed_file, &fixed).unwrap();

    let connector = InProcess::start(Settings::from_layers(&[&tight], false).unwrap());
    // Every dead letter is written once the prospects and leads have been read.
    let dead = block_in_place(|| {
        read_until(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(60),
            |r| r.len() >= 3,
        )
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = connector.stop().await.expect("the connector stops cleanly");
    let dead_letters = stats.value(
        partner_sync::runtime::stats::names::DEAD_LETTERS,
        &[("reason", "too_many_parked")],
    ) as usize;
    assert!(
        dead_letters >= 3 && dead.len() >= 3,
        "the tight bound sent records to the dead letters:\n{}",
        stats.summary()
    );

    // A dry run lists them and sends nothing.
    let (code, stdout, stderr) = replay(&fixed_file, &["--reason", "too_many_parked", "--dry-run"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("would replay {dead_letters} dead letter(s)")),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("would replay partnersync.dead-letters/")
            .count(),
        dead_letters,
        "{stdout}"
    );
    // Without a selection, nothing is replayed by accident.
    let (code, _, stderr) = replay(&fixed_file, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--all"), "{stderr}");

    // The fixed configuration runs; the replay sends the dead letters back.
    let connector = InProcess::start(Settings::from_layers(&[&fixed], false).unwrap());
    let (code, stdout, stderr) = replay(&fixed_file, &["--reason", "too_many_parked"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("replayed {dead_letters} dead letter(s)")),
        "{stdout}"
    );
    let (seen, _) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(90))
    });
    assert_same_commands(&expected, &seen);

    // A second replay finds every dead letter marked and sends nothing.
    let (code, stdout, stderr) = replay(&fixed_file, &["--all"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("replayed 0 dead letter(s)"), "{stdout}");
    assert!(
        stdout.contains(&format!("{dead_letters} already replayed")),
        "{stdout}"
    );
    // Every command topic read whole: the story's commands, each once across both runs and both
    // replays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, total) = block_in_place(|| {
        collect_commands(&broker.bootstrap(), &expected, Duration::from_secs(30))
    });
    assert_eq!(
        total,
        expected.len(),
        "each command once, none after the second replay"
    );
    let marks = block_in_place(|| {
        read_to_end(
            &broker.bootstrap(),
            &topics.dead_letters,
            Duration::from_secs(30),
        )
    })
    .iter()
    .filter(|r| r.header("partnersync.replay.of").is_some())
    .count();
    assert_eq!(marks, dead_letters, "one mark per dead letter replayed");
    connector.stop_expecting(&expected, &seen).await;
    drop(registry);
}
