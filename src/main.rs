//! The `partner-sync` command line. Thin on purpose: parse flags, load settings, call the library.
//!
//! Exit codes: 0 success; 1 a check failed (a scenario mismatch); 2 unusable input (bad flags,
//! configuration or scenario file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use partner_sync::mapping::EngineConfig;
use partner_sync::runtime::{endpoints, Stats};
use partner_sync::settings::{read_file, ClientRole, Settings};
use partner_sync::{replay, scenario};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "partner-sync",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PARTNER_SYNC_COMMIT"), ")"),
    about = "Syncs B2B partner onboarding between Dynamics 365 Commerce and Sales over Kafka."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// See it work: the real pipeline on an embedded Kafka cluster and Schema Registry, replaying a
    /// generated onboarding story, with a summary checked against the story's labels and, command by
    /// command, against the engine's decisions.
    Demo {
        /// How many partner requests the story has.
        #[arg(long, default_value_t = 300)]
        prospects: usize,
        /// Seed of the story (the same seed gives the same story).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Configuration file layered over the defaults, as for `run`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where /metrics and /health/* are served (overrides telemetry.listen).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
        /// Keep running after the summary, so /metrics can be browsed; stop with Ctrl-C.
        #[arg(long)]
        hold: bool,
    },
    /// Run the connector: consume the change topics, apply the mapping rules, produce the commands.
    Run {
        /// Configuration file layered over the defaults (environment variables override both).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run scenario files (events in order -> expected commands) against the mapping configuration.
    TestScenarios {
        /// A directory of *.yaml scenario files, or one file.
        path: PathBuf,
        /// Your configuration file, layered over the defaults (as `run` would load it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also print what every step produced, in full: `text` (readable) or `json` (one object
        /// per step on stdout; the pass/fail lines then go to stderr).
        #[arg(long, value_enum)]
        show: Option<Show>,
    },
    /// Send chosen dead letters back to their original topics (after fixing what made them fail).
    /// Each one sent is marked on the dead-letter topic, so running it again sends none twice.
    Replay {
        /// Configuration file layered over the defaults (environment variables override both).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only dead letters with this reason (partnersync.errors.reason, e.g. unknown_schema);
        /// may be given more than once.
        #[arg(long)]
        reason: Vec<String>,
        /// Only dead letters first read from this input topic; may be given more than once.
        #[arg(long)]
        topic: Vec<String>,
        /// Only dead letters written at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only dead letters written before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Every dead letter not yet replayed (needed when no other selection is given).
        #[arg(long)]
        all: bool,
        /// List what would be sent, and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long reading the dead-letter topic to its end and each send may take.
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
    /// Validate a configuration file and its mapping tables without connecting to anything.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
}

/// How `test-scenarios --show` prints each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Show {
    Text,
    Json,
}

fn main() -> ExitCode {
    partner_sync::alloc::no_transparent_huge_pages();
    partner_sync::alloc::give_back_memory_promptly();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            prospects,
            seed,
            config,
            listen,
            hold,
        } => demo(prospects, seed, config.as_deref(), listen, hold),
        Command::Run { config } => run(config.as_deref()),
        Command::TestScenarios { path, config, show } => {
            test_scenarios(&path, config.as_deref(), show)
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Replay {
            config,
            reason,
            topic,
            since,
            until,
            all,
            dry_run,
            timeout_seconds,
        } => {
            let time = |t: Option<String>, flag: &str| {
                t.map(|t| scenario::parse_rfc3339(&t).map_err(|e| format!("--{flag} {t}: {e}")))
                    .transpose()
            };
            let selection = match (time(since, "since"), time(until, "until")) {
                (Ok(since_ms), Ok(until_ms)) => replay::Selection {
                    reasons: reason,
                    topics: topic,
                    since_ms,
                    until_ms,
                    all,
                },
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            replay_dead_letters(
                config.as_deref(),
                &selection,
                dry_run,
                Duration::from_secs(timeout_seconds),
            )
        }
    }
}

fn replay_dead_letters(
    config: Option<&Path>,
    selection: &replay::Selection,
    dry_run: bool,
    timeout: Duration,
) -> ExitCode {
    if !selection.is_given() {
        eprintln!(
            "error: say which dead letters to replay: --reason, --topic, --since/--until, or --all"
        );
        return ExitCode::from(2);
    }
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    match runtime.block_on(replay::replay(&settings, selection, dry_run, timeout)) {
        Ok(report) => {
            for line in &report.lines {
                println!("{line}");
            }
            let verb = if dry_run { "would replay" } else { "replayed" };
            println!("{verb} {} dead letter(s):\n{report}", report.sent());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    let settings = match Settings::load(Some(file)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let kafka = [ClientRole::Consumer, ClientRole::Producer]
        .into_iter()
        .find_map(|role| settings.kafka.client_config(role).err());
    if let Some(problem) = kafka.or_else(|| settings.check_record_sizes().err()) {
        eprintln!("error: {}: {problem}", file.display());
        return ExitCode::from(2);
    }
    match EngineConfig::compile(&settings) {
        Ok(engine) => {
            for warning in &engine.warnings {
                eprintln!("warning: {}: {warning}", file.display());
            }
            println!("{}: configuration is valid.", file.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("error: {}: {problems}", file.display());
            ExitCode::from(2)
        }
    }
}

fn test_scenarios(path: &Path, config: Option<&Path>, show: Option<Show>) -> ExitCode {
    let base = match config.map(read_file).transpose() {
        Ok(base) => base,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let files = if path.is_dir() {
        match scenario::discover(path) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        eprintln!("error: no *.yaml scenario files in {}", path.display());
        return ExitCode::from(2);
    }
    let layers: Vec<&str> = base.as_deref().into_iter().collect();
    // With `--show json`, stdout carries only the steps' JSON; the report goes to stderr.
    let report = |line: String| {
        if show == Some(Show::Json) {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for file in &files {
        let outcome =
            scenario::load(file).and_then(|s| scenario::run_scenario(&s, &layers).map(|r| (s, r)));
        match outcome {
            Ok((s, run)) => {
                match show {
                    Some(Show::Text) => print_steps_text(file, &s.name, &run.steps),
                    Some(Show::Json) => print_steps_json(file, &run.steps),
                    None => {}
                }
                if run.failures.is_empty() {
                    passed += 1;
                    report(format!("ok   {} — {}", file.display(), s.name));
                } else {
                    failed += 1;
                    report(format!("FAIL {} — {}", file.display(), s.name));
                    for f in run.failures {
                        for line in f.to_string().lines() {
                            report(format!("     {line}"));
                        }
                    }
                }
            }
            Err(e) => {
                broken += 1;
                report(format!("ERR  {e}"));
            }
        }
    }
    report(format!(
        "\nscenarios: {passed} passed, {} failed",
        failed + broken
    ));
    if broken > 0 {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Every step's outcome and commands, as a reader would write them in a scenario file.
fn print_steps_text(file: &Path, name: &str, steps: &[scenario::StepTrace]) {
    println!("== {} — {name}", file.display());
    for step in steps {
        let outcome = step.outcome.as_deref().unwrap_or("");
        println!("step {} ({}): {outcome}", step.step, step.what);
        if let Some(reason) = &step.reason {
            println!("  reason: {reason}");
        }
        if !step.expired.is_empty() {
            println!("  expired: [{}]", step.expired.join(", "));
        }
        for command in &step.commands {
            let yaml = serde_yaml::to_string(command).unwrap_or_default();
            let mut lines = yaml.lines();
            if let Some(first) = lines.next() {
                println!("  - {first}");
            }
            for line in lines {
                println!("    {line}");
            }
        }
    }
    println!();
}

/// Every step as one JSON object per line, with its scenario file.
fn print_steps_json(file: &Path, steps: &[scenario::StepTrace]) {
    for step in steps {
        let mut value = serde_json::to_value(step).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "scenario".into(),
                serde_json::Value::String(file.display().to_string()),
            );
        }
        println!("{value}");
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled: a signal during start-up is a request to stop, not
/// the default action that kills the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received."),
            _ = interrupt.recv() => tracing::info!("SIGINT received."),
        }
    }
}

fn run(config: Option<&Path>) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    partner_sync::logging::init(settings.telemetry.log_format, "info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    let stats = Arc::new(Stats::default());
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        let _endpoints = endpoints::start(
            &settings.telemetry.listen,
            stats.clone(),
            Duration::from_secs(settings.telemetry.liveness_timeout_seconds),
        )
        .await
        .map_err(|e| (e, 1))?;
        partner_sync::runtime::run_with(settings, stats, shutdown)
            .await
            .map_err(|e| (e.to_string(), e.exit_code()))
    });
    // A start-up stopped by a signal may leave a blocking metadata request behind; it is not
    // waited for.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(stats) => {
            tracing::info!(counters = %stats.summary(), "partner-sync stopped.");
            ExitCode::SUCCESS
        }
        Err((e, code)) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

fn demo(
    prospects: usize,
    seed: u64,
    config: Option<&Path>,
    listen: String,
    hold: bool,
) -> ExitCode {
    let mut settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    partner_sync::logging::init(settings.telemetry.log_format, "warn");
    settings.telemetry.listen = listen;
    settings.kafka.group_id = "partner-sync-demo".into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    let stats = Arc::new(Stats::default());
    println!("partner-sync demo: {prospects} partner requests (seed {seed}) on an embedded Kafka cluster and Schema Registry.");
    let result = runtime.block_on(async {
        let (_endpoints, address) = endpoints::start(
            &settings.telemetry.listen,
            stats.clone(),
            Duration::from_secs(settings.telemetry.liveness_timeout_seconds),
        )
        .await?;
        eprintln!("Metrics: http://{address}/metrics   Health: http://{address}/health/ready");
        settings.telemetry.listen = address;
        partner_sync::demo::run(
            partner_sync::demo::DemoOptions {
                prospects,
                seed,
                settings,
                hold,
            },
            stats,
        )
        .await
    });
    match result {
        Ok(report) => {
            print!("{}", report.table());
            if report.all_match() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
