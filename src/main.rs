//! The `kollate` command line: run a pipeline, or validate its config.
//!
//! Exit codes: 0 success; 1 the pipeline failed while running; 2 bad command line;
//! 78 the config is invalid (every problem is printed, with file:line:column and key).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kollate::api::Api;
use kollate::config::{Config, DEFAULT_CONFIG_PATH};
use kollate::generate::{GenerateOptions, generate};
use kollate::metrics::Registry;
use kollate::query::FilterParams;
use kollate::topology::Running;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid config (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// kollate: classify, aggregate, correlate, keep and ship Kubernetes Events.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter such as `kollate=debug`.
    #[arg(long, default_value = "info", env = "KOLLATE_LOG", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where the default pipeline keeps its store.
const DEFAULT_DB: &str = "kollate-data/store/events.db";

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Jsonl,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until its inputs end or it is told to stop (SIGINT/SIGTERM).
    Run {
        /// The pipeline file.
        #[arg(short, long, default_value = DEFAULT_CONFIG_PATH, env = "KOLLATE_CONFIG")]
        config: PathBuf,
        /// Do not show the progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Write a deterministic, realistic stream of core/v1 Events as JSON Lines to stdout.
    Generate {
        /// Number of events.
        #[arg(long, default_value_t = 5_000)]
        events: u64,
        /// Random seed (the same seed gives the same bytes).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Average events per second of event time.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Deployments the workload is spread over (more gives more distinct objects).
        #[arg(long, default_value_t = 40)]
        deployments: u32,
        /// Only core/v1 Events (by default a fifth are events.k8s.io/v1).
        #[arg(long)]
        core_only: bool,
    },
    /// Correlate recorded dumps into incidents and print them as a timeline (post-mortems
    /// on events the cluster has already deleted).
    Incidents {
        /// Dump files (any format the file source reads) or directories holding them;
        /// without any, the incidents in the store are listed.
        #[arg(short, long = "input", num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// The event store (when no input is given).
        #[arg(long, default_value = DEFAULT_DB, env = "KOLLATE_DB")]
        db: PathBuf,
        /// Only incidents seen since (RFC 3339 or an age: 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Longest time between two linked events.
        #[arg(long, default_value = "10m")]
        window: humantime::Duration,
        /// Print the incidents as JSON Lines instead.
        #[arg(long)]
        json: bool,
    },
    /// One incident from the store, with its member events.
    Incident {
        /// The incident id (`inc-...`).
        id: String,
        /// The event store.
        #[arg(long, default_value = DEFAULT_DB, env = "KOLLATE_DB")]
        db: PathBuf,
    },
    /// Events from the store, newest first.
    Query {
        /// The event store.
        #[arg(long, default_value = DEFAULT_DB, env = "KOLLATE_DB")]
        db: PathBuf,
        #[command(flatten)]
        filter: FilterParams,
        /// Most events shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// `table`, `json` or `jsonl`.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Counts from the store, grouped by fields and time windows.
    Aggregate {
        /// The event store.
        #[arg(long, default_value = DEFAULT_DB, env = "KOLLATE_DB")]
        db: PathBuf,
        #[command(flatten)]
        filter: FilterParams,
        /// Fields to group by: namespace, kind, name, node, reason, type, severity, category.
        #[arg(long, value_delimiter = ',', default_value = "reason")]
        group_by: Vec<String>,
        /// Also group by time windows of this length (e.g. 1h).
        #[arg(long)]
        window: Option<humantime::Duration>,
        /// `count` (event records and occurrences).
        #[arg(long, default_value = "count")]
        metric: String,
        /// Most rows shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// `table`, `json` or `jsonl`.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Write a self-contained HTML report: incident timeline, events per category over
    /// time, top recurring patterns, noisiest objects.
    Report {
        /// The event store.
        #[arg(long, default_value = DEFAULT_DB, env = "KOLLATE_DB")]
        db: PathBuf,
        /// From (RFC 3339 or an age: 24h, 7d).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Until (RFC 3339 or an age; default now).
        #[arg(long)]
        until: Option<String>,
        /// The HTML file to write.
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
    },
    /// Check a pipeline file and report every problem in it.
    Validate {
        /// The pipeline file.
        #[arg(short, long, default_value = DEFAULT_CONFIG_PATH, env = "KOLLATE_CONFIG")]
        config: PathBuf,
    },
    /// Run the unit tests declared in the pipeline file (`[[tests]]`): feed events into
    /// named transforms (built-in or WASM) and check what comes out.
    Test {
        /// The pipeline file.
        #[arg(short, long, default_value = DEFAULT_CONFIG_PATH, env = "KOLLATE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    let command = cli.command.unwrap_or(Command::Run {
        config: DEFAULT_CONFIG_PATH.into(),
        no_progress: false,
    });
    match command {
        Command::Validate { config } => validate(&config),
        Command::Test { config } => unit_tests(&config),
        Command::Incidents {
            inputs,
            db,
            since,
            json,
            ..
        } if inputs.is_empty() => stored_incidents(&db, since.as_deref(), json),
        Command::Incidents {
            inputs,
            window,
            json,
            ..
        } => incidents(&inputs, *window, json),
        Command::Incident { id, db } => stored_incident(&db, &id),
        Command::Report {
            db,
            since,
            until,
            output,
        } => report(&db, &since, until.as_deref(), &output),
        Command::Query {
            db,
            filter,
            limit,
            output,
        } => query(&db, &filter, limit, output),
        Command::Aggregate {
            db,
            filter,
            group_by,
            window,
            metric,
            limit,
            output,
        } => aggregate(
            &db,
            &filter,
            &group_by,
            window.map(|w| *w),
            &metric,
            limit,
            output,
        ),
        Command::Generate {
            events,
            seed,
            rate,
            deployments,
            core_only,
        } => {
            let opts = GenerateOptions {
                events,
                seed,
                rate,
                deployments,
                mixed_apis: !core_only,
                ..GenerateOptions::default()
            };
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            match generate(&opts, &mut out).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write events: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            no_progress,
        } => match run(&config, no_progress) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn incidents(inputs: &[PathBuf], window: Duration, json: bool) -> ExitCode {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let pattern = format!("{}/**/*", glob::Pattern::escape(&input.to_string_lossy()));
            let mut found: Vec<PathBuf> = glob::glob(&pattern)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|p| p.is_file() && kollate::incidents::is_dump(p))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    let (events, problems) = match kollate::incidents::read_events(&files) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for p in &problems {
        eprintln!("warning: {p}");
    }
    let mut config = kollate::transforms::correlate::CorrelateTransformConfig::default();
    config.window = kollate::config::DurationValue(window);
    let found = kollate::incidents::analyse(events, &config).incidents;
    let mut out = std::io::stdout().lock();
    let written = if json {
        found
            .iter()
            .try_for_each(|i| {
                serde_json::to_writer(&mut out, i)?;
                writeln!(out).map_err(serde_json::Error::io)
            })
            .map_err(std::io::Error::from)
    } else {
        out.write_all(kollate::incidents::timeline(&found).as_bytes())
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `error: ...` and fails (bad arguments exit 2, like clap's own).
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn open_store(path: &std::path::Path) -> Result<kollate::store::Store, ExitCode> {
    kollate::store::Store::open_existing(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// Writes `items` as a JSON array or JSON Lines, or `table` as it is.
fn emit<T: serde::Serialize>(
    items: &[T],
    output: Output,
    table: impl FnOnce() -> String,
) -> ExitCode {
    let text = match output {
        Output::Table => table(),
        Output::Json => serde_json::to_string_pretty(items).unwrap_or_default() + "\n",
        Output::Jsonl => items
            .iter()
            .map(|i| serde_json::to_string(i).unwrap_or_default() + "\n")
            .collect(),
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}

fn query(db: &std::path::Path, args: &FilterParams, limit: usize, output: Output) -> ExitCode {
    let filter = match args.filter(chrono::Utc::now()) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let store = match open_store(db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.query(&filter, limit) {
        Ok(events) => emit(&events, output, || kollate::query::events_table(&events)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn aggregate(
    db: &std::path::Path,
    args: &FilterParams,
    group_by: &[String],
    window: Option<Duration>,
    metric: &str,
    limit: usize,
    output: Output,
) -> ExitCode {
    if metric != "count" {
        return usage_error(&format!("unknown --metric `{metric}`: expected count"));
    }
    let columns = match kollate::store::GroupColumn::parse_list(group_by) {
        Ok(c) => c,
        Err(e) => return usage_error(&format!("--group-by: {e}")),
    };
    let filter = match args.filter(chrono::Utc::now()) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let store = match open_store(db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.aggregate(&filter, &columns, window, limit) {
        Ok(rows) => {
            let names: Vec<&str> = columns.iter().map(|c| c.column()).collect();
            emit(&rows, output, || {
                kollate::query::aggregate_table(&rows, &names)
            })
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn stored_incidents(db: &std::path::Path, since: Option<&str>, json: bool) -> ExitCode {
    let since = match since.map(|s| kollate::query::parse_time_arg(s, chrono::Utc::now())) {
        Some(Err(e)) => return usage_error(&e),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let store = match open_store(db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.incidents(since) {
        Ok(found) => emit(
            &found,
            if json { Output::Jsonl } else { Output::Table },
            || kollate::incidents::timeline(&found),
        ),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    db: &std::path::Path,
    since: &str,
    until: Option<&str>,
    output: &std::path::Path,
) -> ExitCode {
    let now = chrono::Utc::now();
    let since = match kollate::query::parse_time_arg(since, now) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let until = match until.map(|u| kollate::query::parse_time_arg(u, now)) {
        Some(Err(e)) => return usage_error(&e),
        Some(Ok(t)) => t,
        None => now,
    };
    let store = match open_store(db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let html = match kollate::report::render(&store, since, until) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::fs::write(output, html) {
        Ok(()) => {
            eprintln!("wrote {}", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", output.display());
            ExitCode::FAILURE
        }
    }
}

fn stored_incident(db: &std::path::Path, id: &str) -> ExitCode {
    let store = match open_store(db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let filter = kollate::store::Filter {
        correlation_id: Some(id.to_owned()),
        ..Default::default()
    };
    match (store.incident(id), store.query(&filter, 10_000)) {
        (Ok(Some(incident)), Ok(members)) => {
            let text = kollate::query::incident_timeline(&incident, &members);
            emit(&[incident], Output::Table, || text)
        }
        (Ok(None), _) => {
            eprintln!("error: no incident {id} in {}", db.display());
            ExitCode::FAILURE
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("warning: invalid --log-level `{level}` ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        eprintln!("{} error(s) in {}", errors.0.len(), path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn validate(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: OK ({} sources, {} transforms, {} sinks)",
                path.display(),
                config.sources.len(),
                config.transforms.len(),
                config.sinks.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn unit_tests(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let outcomes = match kollate::unit_test::run_all(&config) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let failed = outcomes.iter().filter(|o| !o.failures.is_empty()).count();
    for o in &outcomes {
        if o.failures.is_empty() {
            println!("test {} ... ok", o.name);
        } else {
            println!("test {} ... FAILED", o.name);
            for f in &o.failures {
                println!("    {f}");
            }
        }
    }
    println!(
        "\n{}: {} passed, {failed} failed",
        path.display(),
        outcomes.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(path: &std::path::Path, no_progress: bool) -> anyhow::Result<ExitCode> {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    for w in &config.warnings {
        tracing::warn!(warning = %w, "Config warning.");
    }
    let replay_bytes: Option<u64> = config.sources.values().all(|s| s.is_replay()).then(|| {
        config
            .sources
            .values()
            .filter_map(|s| s.input_bytes())
            .sum()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let started = Instant::now();
        let api_options = config.global.api.enabled.then(|| config.global.api.clone());
        let store_path = config.store_path();
        let running = Running::start(config)?;
        let metrics = running.metrics.clone();
        let shutdown = running.shutdown_token();
        let api = match api_options {
            Some(options) => {
                match Api::start(&options, metrics.clone(), shutdown.clone(), store_path).await {
                    Ok(api) => Some(api),
                    Err(e) => {
                        // Nothing has been read yet: stop the pipeline before it starts work.
                        shutdown.cancel();
                        let _ = running.wait().await;
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        tokio::spawn(handle_signals(shutdown));
        let progress = (!no_progress && std::io::stderr().is_terminal())
            .then_some(replay_bytes)
            .flatten()
            .map(|total| {
                let stop = CancellationToken::new();
                (
                    stop.clone(),
                    tokio::spawn(show_progress(metrics.clone(), total, stop)),
                )
            });
        let result = running.wait().await;
        if let Some(api) = api {
            api.stop().await;
        }
        if let Some((stop, task)) = progress {
            stop.cancel();
            let _ = task.await;
        }
        eprint!("{}", metrics.summary());
        let secs = started.elapsed().as_secs_f64();
        let events = metrics.total("source", |c| &c.events_out);
        eprintln!(
            "{events} events in {secs:.2}s ({:.0} events/s)",
            events as f64 / secs.max(1e-9)
        );
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("error: pipeline failed: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// First SIGINT/SIGTERM: drain and stop. Second: stop now.
async fn handle_signals(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let next = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { term.as_mut().expect("guarded").recv().await }, if term.is_some() => {}
        }
    };
    next.await;
    tracing::info!("Shutting down: draining the pipeline (signal again to stop at once).");
    shutdown.cancel();
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("Stopped without draining.");
    std::process::exit(130);
}

/// A progress bar over the bytes of the files being replayed, with events per second.
async fn show_progress(metrics: Arc<Registry>, total: u64, stop: CancellationToken) {
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => break,
        }
        let events = metrics.total("source", |c| &c.events_out);
        let bytes = metrics.total("source", |c| &c.bytes);
        let now = Instant::now();
        let rate = (events - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, events);
        bar.set_position(bytes);
        bar.set_message(format!("{events} events, {rate:.0}/s"));
    }
    bar.finish_and_clear();
}
