//! `partner-sync demo` end to end: the binary starts the embedded cluster and registry, runs the real
//! pipeline over a generated story and prints a summary whose every checked count must match.

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_story_and_every_count_matches() {
    let out = Command::new(env!("CARGO_BIN_EXE_partner-sync"))
        .args([
            "demo",
            "--prospects",
            "80",
            "--seed",
            "11",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("Every count matches: the story's outcomes, and the engine's decisions command by command."),
        "{stdout}"
    );
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    for row in [
        "story: a lead per case",
        "story: won cases approved",
        "story: a hierarchy per approval",
        "story: disqualified or lost cases rejected",
        "story: one rejection email per rejected case",
        "engine: commands written identical to its decision",
        "engine: commands it did not decide",
        "command ids written with two different contents",
        "leads created",
        "customer upserts: Person",
        "customer upserts: Organization",
        "customer hierarchy",
        "prospects approved",
        "rejection email",
        "alerts: duplicate_requester",
        "dead letters: not in the wire format",
        "skipped: echo",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no summary row {row}:\n{stdout}"));
        assert!(line.trim_end().ends_with("ok"), "{line}");
    }
    // Not on a terminal: plain progress lines, and the metrics address.
    assert!(
        stderr.contains("progress:") && stderr.contains("/metrics"),
        "{stderr}"
    );
}

#[test]
fn the_demo_reports_a_configuration_error_with_exit_code_two() {
    let dir = std::env::temp_dir().join(format!("partner-sync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[lead]\nsource_code = \"web\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_partner-sync"))
        .args(["demo", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lead.source_code"));
}
