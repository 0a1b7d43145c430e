//! Runs every scenario file in `tests/scenarios/` through the engine, and checks that the
//! `partner-sync test-scenarios` command reports mismatches the way integrators rely on.

use std::path::{Path, PathBuf};
use std::process::Command;

use partner_sync::scenario;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

#[test]
fn every_scenario_file_passes_against_the_default_configuration() {
    let files = scenario::discover(&scenario_dir()).unwrap();
    assert!(
        files.len() >= 20,
        "expected a scenario per edge case, found {}",
        files.len()
    );
    let mut report = Vec::new();
    for file in &files {
        let s = scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
        for failure in scenario::run_scenario(&s, &[]).unwrap_or_else(|e| panic!("{e}")) {
            report.push(format!("{}: {failure}", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "scenario mismatches:\n{}",
        report.join("\n")
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_partner-sync"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("partner-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const LOST: &str = r#"
name: lost opportunity
steps:
  - prospect: { op: CREATE, ProspectId: PR-9, ProspectName: Tailspin Toys, PrimaryEmailAddress: c@tailspin.example }
    expect: { commands: [ lead_upsert: {}, lead_note: {} ] }
  - opportunity: { opportunityid: o-9, originatingleadid: "@lead:usrt/PR-9", statecode: 2, statuscode: 5 }
    expect:
      commands:
        - prospect_status: { StatusReason: "Opportunity lost: REASON" }
        - rejection_email: {}
"#;

#[test]
fn test_scenarios_exits_zero_when_all_pass_and_one_with_a_readable_diff_on_a_mismatch() {
    let dir = temp_dir("cli");
    std::fs::write(dir.join("good.yaml"), LOST.replace("REASON", "Out-Sold")).unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");

    std::fs::write(dir.join("wrong.yaml"), LOST.replace("REASON", "Canceled")).unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("step 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-    StatusReason: 'Opportunity lost: Canceled'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+    StatusReason: 'Opportunity lost: Out-Sold'"),
        "{stdout}"
    );
}

#[test]
fn test_scenarios_uses_the_integrators_configuration() {
    let dir = temp_dir("config");
    std::fs::write(
        dir.join("s.yaml"),
        LOST.replace("REASON", "Lost to a competitor"),
    )
    .unwrap();
    let config = dir.join("mine.toml");
    std::fs::write(
        &config,
        "[value_maps.opportunity_lost_reason]\n\"5\" = \"Lost to a competitor\"\n",
    )
    .unwrap();
    let (code, stdout, _) = cli(&[
        "test-scenarios",
        dir.join("s.yaml").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn a_misspelt_field_in_a_scenario_is_an_error_that_names_it() {
    let dir = temp_dir("typo");
    std::fs::write(
        dir.join("typo.yaml"),
        LOST.replace("ProspectName", "ProspectNmae"),
    )
    .unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains("unknown field \"ProspectNmae\""),
        "{stdout}"
    );
}

#[test]
fn check_config_lists_every_problem_with_its_key() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[mapping.contact_to_person]\nPersonFirstName = \"first_name\"\n[lead]\nsubject = \"{Company}\"\n").unwrap();
    let (code, _, stderr) = cli(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("mapping.contact_to_person.PersonFirstName"),
        "{stderr}"
    );
    assert!(
        stderr.contains("lead.subject: unknown placeholder {Company}"),
        "{stderr}"
    );

    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[defaults]\ncompnay = \"usmf\"\n").unwrap();
    let (code, _, stderr) = cli(&["check-config", unknown.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("compnay"), "{stderr}");

    let good = dir.join("good.toml");
    std::fs::write(&good, "[defaults]\ncompany = \"usmf\"\n").unwrap();
    let (code, stdout, stderr) = cli(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
}
