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
        let run = scenario::run_scenario(&s, &[]).unwrap_or_else(|e| panic!("{e}"));
        for failure in run.failures {
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

#[test]
fn show_prints_every_steps_outcome_and_commands_whole_as_text_and_as_json() {
    let dir = temp_dir("show");
    // A scenario that states only outcomes: --show is how an integrator learns the commands.
    let file = dir.join("learn.yaml");
    std::fs::write(
        &file,
        r#"
name: learn
steps:
  - prospect: { op: CREATE, ProspectId: PR-7, ProspectName: Contoso, PrimaryEmailAddress: a@contoso.example }
    expect: { outcome: emitted }
  - prospect: { op: CREATE, ProspectId: PR-8 }
    expect: { outcome: "rejected: missing_email" }
"#,
    )
    .unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", file.to_str().unwrap(), "--show", "text"]);
    // The first step lists no commands, so it fails: and the text shows what it produced.
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("step 1 (prospect PR-7): emitted"),
        "{stdout}"
    );
    assert!(stdout.contains("  - lead_upsert:"), "{stdout}");
    assert!(stdout.contains("companyname: Contoso"), "{stdout}");
    assert!(stdout.contains("  - lead_note:"), "{stdout}");
    assert!(
        stdout.contains("reason: B2B prospect PR-8 has no PrimaryEmailAddress"),
        "{stdout}"
    );

    let (code, stdout, stderr) = cli(&["test-scenarios", file.to_str().unwrap(), "--show", "json"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("FAIL"),
        "the report goes to stderr: {stderr}"
    );
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(steps.len(), 2, "{stdout}");
    assert_eq!(steps[0]["outcome"], "emitted");
    assert_eq!(
        steps[0]["commands"][0]["lead_upsert"]["companyname"],
        "Contoso"
    );
    assert_eq!(
        steps[0]["commands"][1]["lead_note"]["objecttypecode"],
        "lead"
    );
    assert_eq!(steps[1]["outcome"], "rejected: missing_email");
    assert!(steps[1]["commands"].as_array().unwrap().is_empty());
    assert!(steps[1]["scenario"]
        .as_str()
        .unwrap()
        .ends_with("learn.yaml"));
}

#[test]
fn totals_count_commands_across_a_scenario_and_reasons_match_the_sentence() {
    let dir = temp_dir("totals");
    let file = dir.join("t.yaml");
    let scenario = |totals: &str, reason: &str| {
        format!(
            r#"
name: totals
steps:
  - prospect: {{ op: CREATE, ProspectId: PR-9, ProspectName: Tailspin Toys, PrimaryEmailAddress: c@tailspin.example }}
    expect: {{ commands: [ lead_upsert: {{}}, lead_note: {{}} ] }}
  - prospect: {{ op: CREATE, ProspectId: PR-10 }}
    expect: {{ outcome: "rejected: missing_email", reason: "{reason}" }}
  - opportunity: {{ opportunityid: o-9, originatingleadid: "@lead:usrt/PR-9", statecode: 2, statuscode: 5 }}
    expect: {{ commands: [ prospect_status: {{}}, rejection_email: {{}} ] }}
totals:
{totals}
"#
        )
    };
    let good = "  lead_upsert: 1\n  rejection_email: 1\n  alert: 0\n  alert/email_taken: 0";
    std::fs::write(&file, scenario(good, "has no PrimaryEmailAddress")).unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");

    std::fs::write(
        &file,
        scenario("  rejection_email: 0", "has no PrimaryEmailAddress"),
    )
    .unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("expected 0 rejection_email across the scenario, got 1"),
        "{stdout}"
    );

    std::fs::write(&file, scenario(good, "has no ContactPersonFirstName")).unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("expected a reason containing \"has no ContactPersonFirstName\", got \"B2B prospect PR-10 has no PrimaryEmailAddress"),
        "{stdout}"
    );

    std::fs::write(&file, scenario("  rejection_emails: 0", "x")).unwrap();
    let (code, stdout, _) = cli(&["test-scenarios", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains("unknown kind \"rejection_emails\""),
        "{stdout}"
    );
}

#[test]
fn check_config_warns_about_a_template_gap_and_still_accepts_the_file() {
    let dir = temp_dir("gap");
    let file = dir.join("gap.toml");
    std::fs::write(
        &file,
        "[lead]\nnote_text = \"From {ProspectId}, submitted on {StoreName}.\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = cli(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("lead.note_text: {StoreName} is an optional prospect field"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        "[lead]\nnote_text = \"From {ProspectId}[, submitted on {StoreName}].\"\n",
    )
    .unwrap();
    let (code, _, stderr) = cli(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn check_config_refuses_an_input_bound_the_producer_could_not_write() {
    let dir = temp_dir("sizes");
    let file = dir.join("sizes.toml");
    std::fs::write(&file, "[delivery]\nmax_record_kib = 2048\n").unwrap();
    let (code, _, stderr) = cli(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("delivery.max_record_kib (2048 KiB) leaves no room")
            && stderr.contains("at most 912 KiB"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        "[delivery]\nmax_record_kib = 2048\n[kafka.extra]\n\"message.max.bytes\" = \"4000000\"\n",
    )
    .unwrap();
    let (code, _, stderr) = cli(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}
