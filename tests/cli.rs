//! Black-box tests: the `kollate` binary run on real files, as a user runs it.

mod support;

use support::{http_get, plugins};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kollate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kollate"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("KOLLATE_CONFIG")
        .arg("--log-level")
        .arg("warn");
    cmd
}

fn run(config: &Path) -> Output {
    kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .output()
        .expect("kollate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// A row of the run summary: (in, out, discarded, errors, warnings).
fn summary_row(stderr: &str, component: &str) -> (u64, u64, u64, u64, u64) {
    let row = stderr
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(component))
        .unwrap_or_else(|| panic!("no summary row for {component} in:\n{stderr}"));
    let n: Vec<u64> = row
        .split_whitespace()
        .skip(3)
        .map(|v| v.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3], n[4])
}

fn event_line(uid: &str, reason: &str, message: &str, at: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("p.{uid}"), "namespace": "shop", "uid": uid},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "p"},
        "reason": reason, "message": message, "type": "Warning", "count": 1,
        "firstTimestamp": at, "lastTimestamp": at,
    })
    .to_string()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
    /// A config reading `inputs` (globs) through classify into `out.jsonl`.
    fn pipeline(&self, source_extra: &str, inputs: &[&str]) -> PathBuf {
        let paths: Vec<String> = inputs
            .iter()
            .map(|i| format!("{:?}", self.path(i).display().to_string()))
            .collect();
        self.write(
            "kollate.toml",
            format!(
                "data_dir = {:?}\n[sources.in]\ntype = \"file\"\npaths = [{}]\n{source_extra}\n\
                 [transforms.classify]\ntype = \"classify\"\ninputs = [\"in\"]\n\
                 [sinks.out]\ntype = \"file\"\ninputs = [\"classify\"]\npath = {:?}\n",
                self.path("data").display().to_string(),
                paths.join(", "),
                self.path("out.jsonl").display().to_string(),
            ),
        )
    }
}

#[test]
fn the_default_config_replays_the_example_stream() {
    let dir = Dir::new();
    let out = kollate()
        .arg("run")
        .arg("--no-progress")
        .env("KOLLATE_OUT", dir.path("out"))
        .env("KOLLATE_DATA_DIR", dir.path("data"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events/generated-cluster.jsonl"),
    )
    .unwrap();
    let expected = shipped.lines().count();
    let files_named = |prefix: &str| -> Vec<serde_json::Value> {
        std::fs::read_dir(dir.path("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .flat_map(|p| lines(&p))
            .collect()
    };
    let archive = files_named("events-");
    let (records, archived): (Vec<_>, Vec<_>) =
        archive.iter().partition(|e| e.get("incident").is_some());
    assert_eq!(archived.len(), expected, "every event archived");
    // The example stream's incidents: each reported, with its members tagged.
    let incidents = files_named("incidents-");
    assert_eq!(
        incidents.len(),
        records.len(),
        "incident records in both files"
    );
    let opened: Vec<_> = incidents
        .iter()
        .filter(|r| r["reason"] == "IncidentOpened")
        .collect();
    assert!(opened.len() >= 10, "{} incidents", opened.len());
    // Members carry the id of the incident they ended in: one merged into another later
    // (its last record names `merged_into`) leaves its members to that one.
    let merged: Vec<&str> = incidents
        .iter()
        .filter_map(|r| {
            r["incident"]["merged_into"]
                .as_str()
                .map(|_| r["incident"]["id"].as_str().unwrap())
        })
        .collect();
    for r in &opened {
        let id = r["incident"]["id"].as_str().unwrap();
        if merged.contains(&id) {
            continue;
        }
        assert!(
            archived.iter().any(|e| e["correlation_id"] == id),
            "members of {id} carry its id"
        );
    }
    let (_, out_events, _, errors, _) = summary_row(&stderr, "replay");
    assert_eq!((out_events as usize, errors), (expected, 0));
    let (agg_in, agg_out, ..) = summary_row(&stderr, "aggregate");
    assert!(
        agg_out < agg_in,
        "aggregation merged repeats: {agg_out} of {agg_in}"
    );
    assert!(
        !text(&out.stdout).is_empty(),
        "the console shows what needs attention"
    );
}

#[test]
fn bad_input_is_reported_with_file_and_line_counted_and_skipped() {
    let dir = Dir::new();
    let t = "2024-05-01T10:00:00Z";
    dir.write(
        "a-good.jsonl",
        format!(
            "{}\n{}\n",
            event_line("a1", "BackOff", "x", t),
            event_line("a2", "Pulled", "y", t)
        ),
    );
    dir.write(
        "b-malformed.jsonl",
        format!(
            "{}\n{{\"reason\": oops\n{}\n",
            event_line("b1", "A", "m", t),
            event_line("b3", "C", "m", t)
        ),
    );
    dir.write(
        "c-truncated.json",
        format!(
            "[{},\n{},\n{{\"reason\": \"Tru",
            event_line("c1", "A", "m", t),
            event_line("c2", "B", "m", t)
        ),
    );
    let mut utf8 = event_line("d1", "A", "caf_", t).into_bytes();
    let at = utf8.windows(4).position(|w| w == b"caf_").unwrap() + 3;
    utf8[at] = 0xE9;
    utf8.push(b'\n');
    dir.write("d-latin1.jsonl", utf8);
    dir.write(
        "e-apiversion.jsonl",
        format!(
            "{}\n{}\n",
            event_line("e1", "A", "m", t).replace("\"v1\"", "\"example.com/v9\""),
            event_line("e2", "B", "m", t)
        ),
    );
    dir.write(
        "f-huge.jsonl",
        format!("{}\n", event_line("f1", "Huge", &"z".repeat(10 << 20), t)),
    );
    dir.write("g-empty.json", "");
    let config = dir.pipeline(
        "",
        &[
            "a-good.jsonl",
            "b-malformed.jsonl",
            "c-truncated.json",
            "d-latin1.jsonl",
            "e-apiversion.jsonl",
            "f-huge.jsonl",
            "g-empty.json",
            "h-missing.json",
        ],
    );
    let out = run(&config);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let written = lines(&dir.path("out.jsonl"));
    let uids: Vec<&str> = written.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(
        uids,
        vec!["a1", "a2", "b1", "b3", "c1", "c2", "d1", "e2", "f1"]
    );
    assert!(
        written[6]["message"].as_str().unwrap().contains('\u{FFFD}'),
        "invalid byte replaced"
    );
    assert!(
        written[8]["message"].as_str().unwrap().len() < 100_000,
        "10 MB message truncated"
    );
    for needle in [
        "b-malformed.jsonl line=2",
        "c-truncated.json line=3",
        "d-latin1.jsonl line=1",
        "e-apiversion.jsonl line=1",
        "example.com/v9",
        "f-huge.jsonl line=1",
        "h-missing.json",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    // Errors: malformed line, truncated array, unknown apiVersion, missing file.
    // Warnings: invalid UTF-8 replaced, message truncated, empty file.
    let (_, out_events, _, errors, warnings) = summary_row(&stderr, "in");
    assert_eq!((out_events, errors, warnings), (9, 4, 3), "{stderr}");
}

#[test]
fn on_error_fail_stops_the_pipeline_naming_the_file_and_line() {
    let dir = Dir::new();
    dir.write(
        "bad.jsonl",
        format!(
            "{}\nnot json\n",
            event_line("a", "A", "m", "2024-05-01T10:00:00Z")
        ),
    );
    let config = dir.pipeline("on_error = \"fail\"", &["bad.jsonl"]);
    let out = run(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.jsonl:2:"), "{stderr}");
}

#[test]
fn validate_reports_every_error_with_file_line_and_column() {
    let dir = Dir::new();
    let config = dir.write(
        "broken.toml",
        "[sources.in]\ntype = \"file\"\npaths = [\"x\"]\nreplay = \"sometimes\"\n\n[transforms.t]\ntype = \"classify\"\ninputs = [\"nowhere\"]\n\n[sinks.s]\ntype = \"kafkaa\"\ninputs = [\"t\"]\n",
    );
    let out = kollate()
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let name = config.display().to_string();
    assert!(
        stderr.contains(&format!("{name}:4:10: sources.in.replay")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{name}:8:11: transforms.t.inputs: unknown input `nowhere`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{name}:11:8: sinks.s.type: unknown sink type `kafkaa`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 error(s)"), "{stderr}");

    let ok = kollate()
        .args(["validate", "--config", "config/kollate.toml"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}

#[test]
fn the_reference_config_documents_every_component_and_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/reference.toml");
    let config = kollate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let reference = std::fs::read_to_string(&path).unwrap();
    for ty in kollate::sources::SourceConfig::TYPES
        .iter()
        .chain(kollate::transforms::TransformConfig::TYPES)
        .chain(kollate::sinks::SinkConfig::TYPES)
    {
        assert!(
            reference.contains(&format!("type = \"{ty}\"")),
            "reference.toml lacks type {ty}"
        );
    }
    assert!(!config.sinks.is_empty());
}

#[test]
fn checkpoints_resume_after_what_the_sinks_acknowledged() {
    let dir = Dir::new();
    let t = "2024-05-01T10:00:00Z";
    let input = dir.write(
        "in.jsonl",
        format!(
            "{}\n{}\n{}\n",
            event_line("1", "A", "m", t),
            event_line("2", "B", "m", t),
            event_line("3", "C", "m", t)
        ),
    );
    let config = dir.pipeline("checkpoint = true", &["in.jsonl"]);
    assert!(run(&config).status.success());
    assert_eq!(lines(&dir.path("out.jsonl")).len(), 3);
    let saved = std::fs::read_to_string(dir.path("data/checkpoints/in.json")).unwrap();
    assert!(
        saved.contains(&format!(
            "\"offset\": {}",
            std::fs::metadata(&input).unwrap().len()
        )),
        "{saved}"
    );

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    writeln!(
        f,
        "{}\n{}",
        event_line("4", "D", "m", t),
        event_line("5", "E", "m", t)
    )
    .unwrap();
    // A write that a kill -9 cut short: the sink cuts it off instead of gluing the next
    // event to it.
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path("out.jsonl"))
        .unwrap();
    write!(out, "{{\"uid\":\"4\",\"rea").unwrap();
    let out = run(&config);
    let stderr = text(&out.stderr);
    let uids: Vec<String> = lines(&dir.path("out.jsonl"))
        .iter()
        .map(|e| e["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        uids,
        ["1", "2", "3", "4", "5"],
        "no gap, no duplicate:\n{stderr}"
    );
    assert_eq!(summary_row(&stderr, "in").1, 2);

    // A replaced file (different first bytes) is read from the start.
    std::fs::write(
        &input,
        format!("{}\n", event_line("6", "F", "other start", t)),
    )
    .unwrap();
    let out = run(&config);
    assert_eq!(summary_row(&text(&out.stderr), "in").1, 1);
}

#[test]
fn follow_tails_a_growing_file_and_sigterm_drains_everything() {
    let dir = Dir::new();
    let t = "2024-05-01T10:00:00Z";
    let input = dir.write("in.jsonl", format!("{}\n", event_line("1", "A", "m", t)));
    let config = dir.pipeline("follow = true\npoll_interval = \"50ms\"", &["in.jsonl"]);
    let mut child = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |n: usize| {
        let start = Instant::now();
        while lines(&dir.path("out.jsonl")).len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {n} events"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(1);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    for i in 2..=50 {
        writeln!(f, "{}", event_line(&i.to_string(), "B", "m", t)).unwrap();
    }
    f.flush().unwrap();
    wait_for(50);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {stderr}");
    assert_eq!(lines(&dir.path("out.jsonl")).len(), 50);
    assert_eq!(summary_row(&stderr, "out").1, 50);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn a_blocked_sink_backpressures_the_source_and_memory_stays_bounded() {
    let dir = Dir::new();
    // ~75 MB of events: far more than the pipeline may hold while its sink is blocked.
    let input = dir.path("big.jsonl");
    let status = kollate()
        .args(["generate", "--events", "100000", "--rate", "100"])
        .stdout(std::fs::File::create(&input).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let fifo = dir.path("sink.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let config = dir.write(
        "kollate.toml",
        format!(
            "data_dir = {:?}\n[sources.in]\ntype = \"file\"\npaths = [{:?}]\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = {:?}\n",
            dir.path("data").display().to_string(),
            input.display().to_string(),
            fifo.display().to_string()
        ),
    );
    let mut child = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rss_kb < 60_000,
        "blocked pipeline holds {rss_kb} kB: it is buffering instead of pushing back"
    );
    // Now read: every event arrives.
    let mut received = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::open(&fifo).unwrap(), &mut received).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(received.lines().count(), 100_000);
}

#[test]
fn stdin_reads_yaml_lists_and_the_console_writes_json() {
    let dir = Dir::new();
    let config = dir.write(
        "kollate.toml",
        format!(
            "data_dir = {:?}\n[sources.in]\ntype = \"stdin\"\n[transforms.c]\ntype = \"classify\"\ninputs = [\"in\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"c\"]\nformat = \"json\"\n",
            dir.path("data").display().to_string()
        ),
    );
    let yaml = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events/jgyy-ckad/default/events.events.k8s.io.yaml"),
    )
    .unwrap();
    let mut child = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(&yaml));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 488);
    assert!(
        events
            .iter()
            .all(|e| e["severity"].is_string() && e["category"].is_string())
    );
    let image_backoff = events
        .iter()
        .find(|e| {
            e["reason"] == "BackOff" && e["message"].as_str().unwrap().contains("pulling image")
        })
        .unwrap();
    assert_eq!(
        (
            image_backoff["type"].as_str(),
            image_backoff["category"].as_str()
        ),
        (Some("Normal"), Some("image"))
    );
}

#[test]
fn fan_out_to_templated_and_rotated_files() {
    let dir = Dir::new();
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events/generated-cluster.jsonl");
    let out = dir.path("out");
    let config = dir.write(
        "kollate.toml",
        format!(
            "data_dir = {:?}\n[sources.in]\ntype = \"file\"\npaths = [{:?}]\n\
             [sinks.by_ns]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/ns/{{namespace}}.jsonl\"\n\
             [sinks.rotated]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/all.jsonl\"\nrotate_size = \"256KiB\"\n",
            dir.path("data").display().to_string(),
            input.display().to_string(),
            out.display(),
            out.display()
        ),
    );
    let result = run(&config);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let total = std::fs::read_to_string(&input).unwrap().lines().count();
    let count_in = |d: &Path, prefix: &str| -> (usize, usize) {
        let files: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        (files.len(), files.iter().map(|p| lines(p).len()).sum())
    };
    let (ns_files, ns_events) = count_in(&out.join("ns"), "");
    assert_eq!(ns_events, total);
    assert!(ns_files >= 5, "one file per namespace");
    for f in std::fs::read_dir(out.join("ns")).unwrap() {
        let f = f.unwrap().path();
        let ns = f.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            lines(&f)
                .iter()
                .all(|e| e["object"]["namespace"].as_str().unwrap_or("_") == ns || ns == "_")
        );
    }
    let (rotated_files, rotated_events) = count_in(&out, "all");
    assert_eq!(rotated_events, total);
    assert!(
        rotated_files > 5,
        "rotated by size into {rotated_files} files"
    );
}

#[test]
fn a_sink_that_cannot_write_stops_the_pipeline_with_a_clear_error() {
    let dir = Dir::new();
    dir.write(
        "in.jsonl",
        format!("{}\n", event_line("1", "A", "m", "2024-05-01T10:00:00Z")),
    );
    dir.write("blocker", "a file where a directory should be");
    let config = dir.write(
        "kollate.toml",
        format!(
            "data_dir = {:?}\n[sources.in]\ntype = \"file\"\npaths = [{:?}]\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = {:?}\n",
            dir.path("data").display().to_string(),
            dir.path("in.jsonl").display().to_string(),
            dir.path("blocker/out.jsonl").display().to_string()
        ),
    );
    let out = run(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open") && stderr.contains("blocker/out.jsonl"),
        "{stderr}"
    );
}

#[test]
fn replay_paces_events_by_their_own_timestamps() {
    let dir = Dir::new();
    let input: String = (0..3)
        .map(|i| {
            event_line(
                &i.to_string(),
                "A",
                "m",
                &format!("2024-05-01T10:00:{:02}Z", i * 10),
            ) + "\n"
        })
        .collect();
    dir.write("in.jsonl", input);
    // 20 s of event time at 20x: at least a second of wall time.
    let config = dir.pipeline("replay = 20", &["in.jsonl"]);
    let start = Instant::now();
    assert!(run(&config).status.success());
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "replayed in {:?}",
        start.elapsed()
    );
    assert_eq!(lines(&dir.path("out.jsonl")).len(), 3);
}

#[test]
fn the_http_api_serves_health_and_prometheus_metrics() {
    let dir = Dir::new();
    let t = "2024-05-01T10:00:00Z";
    let lines: String = (0..7)
        .map(|i| event_line(&i.to_string(), "BackOff", "m", t) + "\n")
        .collect();
    dir.write("in.jsonl", lines);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.pipeline(
        &format!("follow = true\npoll_interval = \"50ms\"\n[api]\nenabled = true\naddress = \"127.0.0.1:{port}\"\ntoken = \"s3cret\""),
        &["in.jsonl"],
    );
    let mut child = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let metrics = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the API never answered"
        );
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(stream);
            let (status, body) = http_get(port, "/metrics", Some("s3cret"));
            if status == 200 && body.contains(r#"kollate_component_sent_events_total{component_id="out",component_kind="sink",component_type="file"} 7"#) {
                break body;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains("# TYPE kollate_component_received_events_total counter"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kollate_component_received_events_total{component_id="classify",component_kind="transform",component_type="classify"} 7"#), "{metrics}");
    assert_eq!(
        http_get(port, "/metrics", None).0,
        401,
        "the token is required"
    );
    assert_eq!(http_get(port, "/metrics", Some("wrong")).0, 401);
    assert_eq!(
        http_get(port, "/healthz", None),
        (200, "ok\n".to_owned()),
        "probes need no token"
    );
    assert_eq!(http_get(port, "/readyz", None).0, 200);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc_kill(child.id() as i32, 15) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_api_address_in_use_is_a_clear_start_up_error() {
    let dir = Dir::new();
    dir.write(
        "in.jsonl",
        format!("{}\n", event_line("1", "A", "m", "2024-05-01T10:00:00Z")),
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.pipeline(
        &format!("[api]\nenabled = true\naddress = \"127.0.0.1:{port}\""),
        &["in.jsonl"],
    );
    let out = run(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn kollate_test_runs_the_unit_tests_declared_in_the_config() {
    plugins();
    let ok = kollate()
        .args(["test", "--config", "examples/plugins/kollate.toml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}{}",
        text(&ok.stdout),
        text(&ok.stderr)
    );
    assert!(
        text(&ok.stdout).contains("3 passed, 0 failed"),
        "{}",
        text(&ok.stdout)
    );

    // The same file with a wrong expectation fails, naming the check.
    let dir = Dir::new();
    let example = std::fs::read_to_string("examples/plugins/kollate.toml").unwrap();
    let broken = example.replace(
        "\"labels.team\" = \"checkout\"",
        "\"labels.team\" = \"nobody\"",
    );
    assert_ne!(broken, example);
    let config = dir.write("kollate.toml", broken);
    let failed = kollate()
        .args(["test", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let out = text(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    assert!(out.contains("2 passed, 1 failed"), "{out}");
    assert!(
        out.contains(r#"events[0].labels.team: expected "nobody", got "checkout""#),
        "{out}"
    );
}

#[test]
fn rejected_events_reach_the_dead_letter_output() {
    let dir = Dir::new();
    let t = "2024-05-01T10:00:00Z";
    dir.write(
        "in.jsonl",
        format!(
            "{}\n{}\n{}\n",
            event_line("1", "BackOff", "m", t),
            event_line("2", "Reject", "m", t),
            event_line("3", "Poison", "m", t)
        ),
    );
    let config = dir.write(
        "kollate.toml",
        format!(
            "data_dir = {data:?}\n[sources.in]\ntype = \"file\"\npaths = [{input:?}]\n\
             [transforms.plugin]\ntype = \"wasm\"\ninputs = [\"in\"]\npath = {wasm:?}\n\
             on_error = \"dead_letter\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"plugin\"]\npath = {out:?}\n\
             [sinks.dead]\ntype = \"file\"\ninputs = [\"plugin.dead_letter\"]\npath = {dead:?}\n",
            data = dir.path("data").display().to_string(),
            input = dir.path("in.jsonl").display().to_string(),
            wasm = plugins().join("hostile.wasm").display().to_string(),
            out = dir.path("out.jsonl").display().to_string(),
            dead = dir.path("dead.jsonl").display().to_string(),
        ),
    );
    let output = run(&config);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = lines(&dir.path("out.jsonl"));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["uid"], "1");
    // What the plugin's final tick emitted at shutdown reaches the sink too.
    assert_eq!(out[1]["reason"], "Seen");
    let dead = lines(&dir.path("dead.jsonl"));
    let reasons: Vec<_> = dead
        .iter()
        .map(|e| {
            (
                e["uid"].as_str().unwrap().to_owned(),
                e["labels"]["kollate.dead_letter.reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        reasons[0],
        ("2".into(), "rejected by the test plugin".into())
    );
    assert!(
        reasons[1].0 == "3" && reasons[1].1.starts_with("trapped"),
        "{reasons:?}"
    );
    let stderr = text(&output.stderr);
    assert_eq!(
        summary_row(&stderr, "plugin").3,
        1,
        "the trap is counted as an error"
    );

    // A dead-letter input naming no transform is a config error with its place.
    let bad = dir.write(
        "bad.toml",
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("plugin.dead_letter", "nothing.dead_letter"),
    );
    let v = kollate()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!v.status.success());
    assert!(
        text(&v.stderr).contains("sinks.dead.inputs: unknown input `nothing.dead_letter`"),
        "{}",
        text(&v.stderr)
    );
}

#[test]
fn the_scale_out_example_pair_is_valid_and_buffer_mistakes_name_their_key() {
    for name in ["agent", "aggregator"] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/scale-out/{name}.toml"));
        kollate::config::Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let dir = Dir::new();
    let config = dir.write(
        "bad.toml",
        r#"
[sources.in]
type = "stdin"
[sinks.out]
type = "console"
inputs = ["in"]
buffer = { type = "disk", when_full = "sometimes" }
"#,
    );
    let out = kollate()
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sinks.out.buffer"), "{stderr}");
    assert!(stderr.contains("bad.toml:7:"), "{stderr}");
}
