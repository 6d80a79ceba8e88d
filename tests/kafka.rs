//! The `kafka` sink and source against a real Kafka-protocol broker (tansu, started here on
//! loopback), checked by an independent consumer (Python confluent-kafka).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::peers::{Broker, Proxy};

fn kollate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kollate"));
    cmd.env_remove("KOLLATE_CONFIG")
        .args(["--log-level", "warn"]);
    cmd
}

fn run(config: &Path) -> Output {
    kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .output()
        .expect("kollate runs")
}

/// (uid, resourceVersion) of an input Event object, and the key kollate's default gives
/// it without correlation: the involved object's uid, else namespace/kind/name.
fn identity_and_key(event: &Value) -> ((String, String), String) {
    let meta = &event["metadata"];
    let id = (
        meta["uid"].as_str().unwrap().to_owned(),
        meta["resourceVersion"].as_str().unwrap().to_owned(),
    );
    let object = if event["involvedObject"].is_object() {
        &event["involvedObject"]
    } else {
        &event["regarding"]
    };
    let key = match object["uid"].as_str() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => format!(
            "{}/{}/{}",
            object["namespace"]
                .as_str()
                .or(meta["namespace"].as_str())
                .unwrap_or(""),
            object["kind"].as_str().unwrap_or(""),
            object["name"].as_str().unwrap_or("")
        ),
    };
    (id, key)
}

#[test]
fn kafka_sink_delivers_every_event_keeping_order_per_key() {
    let _serial = serial();
    let broker = Broker::start();
    broker.create_topic("k8s-events", 4);
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 100_000;
    let input = support::generated_events(dir.path(), N as u64, true);
    let config = agent_config(
        &broker,
        dir.path(),
        &input,
        "k8s-events",
        "",
        r#"compression = "lz4"
headers = { "kollate-reason" = "{reason}" }"#,
    );
    let out = run(&config);
    assert!(
        out.status.success(),
        "kollate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let messages = broker.consume(&["k8s-events"], N, 20);
    assert_eq!(messages.len(), N, "every event arrives once");

    // Expected, computed from the input file alone.
    let mut expected_by_key: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let (id, key) = identity_and_key(&serde_json::from_str(line).unwrap());
        expected_by_key.entry(key).or_default().push(id);
    }

    // What arrived, per key, in partition order.
    let mut sorted = messages.clone();
    sorted.sort_by_key(|m| (m["partition"].as_i64(), m["offset"].as_i64()));
    let mut got_by_key: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i64> = BTreeMap::new();
    for m in &sorted {
        let key = m["key"]
            .as_str()
            .expect("every message has a key")
            .to_owned();
        let value = &m["value"];
        assert_eq!(
            m["headers"]["kollate-reason"], value["reason"],
            "templated header"
        );
        let partition = m["partition"].as_i64().unwrap();
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(partition),
            partition,
            "one key, one partition"
        );
        got_by_key.entry(key).or_default().push((
            value["uid"].as_str().unwrap().to_owned(),
            value["resource_version"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(got_by_key.len(), expected_by_key.len(), "same keys");
    for (key, expected) in &expected_by_key {
        assert_eq!(
            got_by_key.get(key),
            Some(expected),
            "events of key {key} arrive complete and in input order"
        );
    }
    assert!(
        partition_of
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "keys spread over partitions"
    );
}

#[test]
fn a_message_kafka_can_never_take_is_dead_lettered_and_the_rest_delivered() {
    let _serial = serial();
    let broker = Broker::start();
    broker.create_topic("k8s-events", 1);
    let dir = tempfile::tempdir().unwrap();
    let input = support::generated_events(dir.path(), 1_000, false);
    // One event far over the producer's message size limit, in the middle of the stream.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut huge: Value = serde_json::from_str(&lines[500]).unwrap();
    huge["metadata"]["uid"] = "huge-one".into();
    huge["message"] = "x".repeat(20_000).into();
    lines.insert(500, huge.to_string());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let dead = dir.path().join("dead.jsonl");
    let config = agent_config(
        &broker,
        dir.path(),
        &input,
        "k8s-events",
        "",
        &format!(
            "dead_letter = {:?}\nlibrdkafka_options = {{ \"message.max.bytes\" = \"10000\" }}",
            dead.display().to_string()
        ),
    );
    let mut child = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("kollate did not finish: the refused message held the pipeline");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Kafka refused an event"), "{stderr}");
    let messages = broker.consume(&["k8s-events"], 1_000, 20);
    assert_eq!(messages.len(), 1_000, "every other event arrives");
    assert!(messages.iter().all(|m| m["value"]["uid"] != "huge-one"));
    let dead: Vec<Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"]["uid"], "huge-one");
}

/// (uid, resource_version) of a line kollate wrote (its schema).
fn written_identity(v: &Value) -> (String, String) {
    (
        v["uid"].as_str().unwrap().to_owned(),
        v["resource_version"].as_str().unwrap().to_owned(),
    )
}

/// (uid, resourceVersion) of every input line.
fn input_identities(input: &Path) -> BTreeSet<(String, String)> {
    std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .map(|l| identity_and_key(&serde_json::from_str(l).unwrap()).0)
        .collect()
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line a kill cut short is not an event the sink acknowledged.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A config that reads `input` (the file source, plus `source_options`) into a kafka sink
/// on `topic` (plus `sink_options`), with its data under `dir/data`.
fn agent_config(
    broker: &Broker,
    dir: &Path,
    input: &Path,
    topic: &str,
    source_options: &str,
    sink_options: &str,
) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[sources.recorded]
type = "file"
paths = ["{input}"]
{source_options}
[sinks.kafka]
type = "kafka"
inputs = ["recorded"]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
{sink_options}
"#,
            data = dir.join("data").display(),
            input = input.display(),
            bootstrap = broker.bootstrap(),
        ),
    )
    .unwrap();
    config
}

/// Fills `topic` with the events of `input` through kollate's kafka sink.
fn publish(broker: &Broker, dir: &Path, input: &Path, topic: &str) {
    let config = agent_config(broker, dir, input, topic, "", "");
    let out = run(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts kollate in the background; its log goes next to the config (`NAME.log`).
fn spawn(config: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The last lines kollate logged for `config`, for failure messages.
fn log_tail(config: &Path) -> String {
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One test at a time: they start brokers and pipelines that would otherwise compete for
/// the machine's two cores (and consumer group sessions time out under that load).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Waits until `out` holds every identity of `expected`; on time-out names the missing
/// events and where the independent consumer finds them in `topic`.
fn await_all(
    broker: &Broker,
    topic: &str,
    out: &Path,
    expected: &BTreeSet<(String, String)>,
    config: &Path,
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got: BTreeSet<_> = lines_of(out).iter().map(written_identity).collect();
        if expected.is_subset(&got) {
            return;
        }
        if Instant::now() >= deadline {
            let missing: BTreeSet<_> = expected.difference(&got).collect();
            let placed: Vec<String> = broker
                .consume(&[topic], usize::MAX, 5)
                .iter()
                .filter(|m| missing.contains(&written_identity(&m["value"])))
                .map(|m| format!("partition {} offset {}", m["partition"], m["offset"]))
                .collect();
            panic!(
                "{} of {} events missing: {missing:?}, in the topic at {placed:?}; kollate's log:\n{}",
                missing.len(),
                expected.len(),
                log_tail(config)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kafka_source_commits_only_acknowledged_offsets_and_loses_nothing_to_kill_9() {
    let _serial = serial();
    let broker = Broker::start();
    broker.create_topic("agents", 3);
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 20_000;
    const LATER: usize = 2_000;
    // The input in two parts: the second is published after a clean stop.
    let all = support::generated_events(dir.path(), N as u64, true);
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let parts: Vec<PathBuf> = [&lines[..N - LATER], &lines[N - LATER..]]
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let sub = dir.path().join(format!("part{i}"));
            std::fs::create_dir(&sub).unwrap();
            let path = sub.join("events.jsonl");
            std::fs::write(&path, part.join("\n") + "\n").unwrap();
            path
        })
        .collect();
    publish(&broker, parts[0].parent().unwrap(), &parts[0], "agents");

    let out = dir.path().join("aggregated.jsonl");
    let config = dir.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[sources.agents]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["agents"]
group_id = "aggregators"
commit_interval = "200ms"
batch_size = 200
librdkafka_options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
[sinks.archive]
type = "file"
inputs = ["agents"]
path = "{out}"
"#,
            data = dir.path().join("aggregator-data").display(),
            bootstrap = broker.bootstrap(),
            out = out.display(),
        ),
    )
    .unwrap();

    // 1. Killed part-way: what was written but not committed comes again, nothing is skipped.
    let mut child = spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines_of(&out).len() < N / 4 {
        assert!(Instant::now() < deadline, "the aggregator never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before_kill = lines_of(&out).len();
    let mut child = spawn(&config);
    await_all(
        &broker,
        "agents",
        &out,
        &input_identities(&parts[0]),
        &config,
    );
    terminate(&mut child);
    let after_restart = lines_of(&out).len();
    assert!(
        after_restart - (N - LATER) < before_kill,
        "committed offsets were used: {after_restart} lines for {} events, {before_kill} before the kill",
        N - LATER
    );

    // 2. Stopped cleanly, everything committed: a restart reads exactly the new messages
    // (an offset off by one either way skips or repeats one per partition).
    publish(&broker, parts[1].parent().unwrap(), &parts[1], "agents");
    let mut child = spawn(&config);
    await_all(&broker, "agents", &out, &input_identities(&all), &config);
    std::thread::sleep(Duration::from_secs(1));
    terminate(&mut child);
    assert_eq!(
        lines_of(&out).len() - after_restart,
        LATER,
        "after a clean stop the restart reads each new message once and nothing else"
    );
}

/// Peak resident memory (kB) of a process so far.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_30_second_broker_outage_loses_nothing_and_the_disk_buffer_drains() {
    let _serial = serial();
    let broker_port = support::peers::free_port();
    let proxy = Proxy::start(0, broker_port);
    let broker = Broker::start_advertising(broker_port, proxy.port);
    broker.create_topic("outage", 4);
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 100_000;
    let input = support::generated_events(dir.path(), N as u64, true);
    let data = dir.path().join("data");
    let config = agent_config(
        &broker,
        dir.path(),
        &input,
        "outage",
        "",
        r#"buffer = { type = "disk", max_size = "512MiB" }"#,
    );
    let mut child = spawn(&config);
    let pid = child.id();
    // Let some events through, then cut the network for 30 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.consume(&["outage"], 1, 1).is_empty() {
        assert!(Instant::now() < deadline, "nothing reached the broker");
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.cut();
    let mut peak = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "kollate kept running through the outage"
    );
    let buffered: u64 = std::fs::read_dir(data.join("buffers/kafka"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(buffered > 0, "events waited in the disk buffer");
    proxy.restore();
    let status = child.wait().unwrap();
    assert!(status.success(), "kollate drained and exited cleanly");
    peak = peak.max(peak_rss_kb(pid).unwrap_or(0));

    let messages = broker.consume(&["outage"], N + 1, 15);
    let got: BTreeSet<_> = messages
        .iter()
        .map(|m| written_identity(&m["value"]))
        .collect();
    assert_eq!(got, input_identities(&input), "nothing lost");
    assert_eq!(
        messages.len(),
        N,
        "the idempotent producer wrote no duplicates"
    );
    // Drained: what remains on disk is at most the last, fully acknowledged segment.
    let left: Vec<_> = std::fs::read_dir(data.join("buffers/kafka"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .collect();
    assert!(left.len() <= 1, "segments left behind: {left:?}");
    // Memory stayed bounded while 100k events waited (they waited on disk).
    eprintln!("peak RSS during the outage: {} MiB", peak / 1024);
    assert!(peak > 0 && peak < 200 * 1024, "peak RSS {peak} kB");
}

#[test]
fn kill_9_at_random_points_with_a_disk_buffer_loses_nothing() {
    let _serial = serial();
    let broker = Broker::start();
    broker.create_topic("crashy", 2);
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 30_000;
    let input = support::generated_events(dir.path(), N as u64, true);
    let config = agent_config(
        &broker,
        dir.path(),
        &input,
        "crashy",
        "checkpoint = true\nbatch_size = 100",
        r#"buffer = { type = "disk", max_size = "64MiB", sync_interval = "50ms" }"#,
    );
    // Kill it three times at random moments, then let it finish.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
    for _ in 0..3 {
        let mut child = spawn(&config);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1500));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let out = run(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = broker.consume(&["crashy"], usize::MAX, 10);
    let got: BTreeSet<_> = messages
        .iter()
        .map(|m| written_identity(&m["value"]))
        .collect();
    assert_eq!(
        got,
        input_identities(&input),
        "nothing lost across three kill -9"
    );
    eprintln!("{} messages for {N} events", messages.len());
}

/// The incidents in kollate's output: the sets of event uids sharing a correlation id
/// (ids differ between processes; what they group must not).
fn incident_groups(paths: &[PathBuf]) -> BTreeSet<BTreeSet<String>> {
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in paths {
        for e in lines_of(path) {
            if e.get("incident").is_some() {
                continue;
            }
            if let (Some(id), Some(uid)) = (e["correlation_id"].as_str(), e["uid"].as_str()) {
                groups
                    .entry(id.to_owned())
                    .or_default()
                    .insert(uid.to_owned());
            }
        }
    }
    groups.into_values().collect()
}

/// The correlate settings both sides use: short holds, so the aggregators' output is
/// complete seconds after the broker delivered everything.
const CORRELATE: &str = r#"
[transforms.incidents]
type = "correlate"
reorder_window = "5s"
hold = "5s"
snapshot = false
"#;

/// Two simulated clusters' streams, each in its own file.
fn two_clusters(dir: &Path) -> Vec<(&'static str, PathBuf, usize)> {
    [("east", 21), ("west", 22)]
        .into_iter()
        .map(|(cluster, seed)| {
            let sim = kollate::simulate::simulate(&kollate::simulate::SimulateOptions {
                seed,
                ..Default::default()
            });
            let path = dir.join(format!("{cluster}.jsonl"));
            std::fs::write(&path, sim.lines.join("\n") + "\n").unwrap();
            (cluster, path, sim.lines.len())
        })
        .collect()
}

/// An agent of `cluster`: its file, labelled with the cluster, into `topic` keyed as the
/// scale-out example keys it.
fn cluster_agent(broker: &Broker, dir: &Path, cluster: &str, input: &Path, topic: &str) -> PathBuf {
    let config = dir.join(format!("agent-{cluster}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[sources.recorded]
type = "file"
paths = ["{input}"]
[transforms.classify]
type = "classify"
inputs = ["recorded"]
[[transforms.classify.rules]]
labels = {{ cluster = "{cluster}" }}
[sinks.kafka]
type = "kafka"
inputs = ["classify"]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
key = "{{label.cluster}}"
"#,
            data = dir.join(format!("agent-{cluster}-data")).display(),
            input = input.display(),
            bootstrap = broker.bootstrap(),
        ),
    )
    .unwrap();
    config
}

/// An aggregator of the `group`, writing every event it correlated to `out`.
fn aggregator(
    broker: &Broker,
    dir: &Path,
    name: &str,
    topic: &str,
    group: &str,
) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[sources.agents]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
commit_interval = "200ms"
librdkafka_options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{CORRELATE}inputs = ["agents"]
[sinks.out]
type = "file"
inputs = ["incidents"]
path = "{out}"
"#,
            data = dir.join(format!("{name}-data")).display(),
            bootstrap = broker.bootstrap(),
            out = out.display(),
        ),
    )
    .unwrap();
    (config, out)
}

/// Waits until the files hold `n` events (incident records aside).
fn await_events(outs: &[PathBuf], n: usize, configs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got: usize = outs
            .iter()
            .map(|p| {
                lines_of(p)
                    .iter()
                    .filter(|e| e.get("incident").is_none())
                    .count()
            })
            .sum();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {n} events came out; logs:\n{}",
            configs
                .iter()
                .map(|c| log_tail(c))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn two_aggregators_report_the_incidents_one_process_does_live_and_from_a_backlog() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let clusters = two_clusters(dir.path());
    let total: usize = clusters.iter().map(|(_, _, n)| n).sum();

    // One process over both clusters' streams.
    let single_out = dir.path().join("single.jsonl");
    let mut single = format!(
        "data_dir = \"{}\"\n",
        dir.path().join("single-data").display()
    );
    let mut labelled = Vec::new();
    for (cluster, path, _) in &clusters {
        single.push_str(&format!(
            "[sources.{cluster}]\ntype = \"file\"\npaths = [\"{}\"]\n\
             [transforms.label_{cluster}]\ntype = \"classify\"\ninputs = [\"{cluster}\"]\n\
             [[transforms.label_{cluster}.rules]]\nlabels = {{ cluster = \"{cluster}\" }}\n",
            path.display()
        ));
        labelled.push(format!("\"label_{cluster}\""));
    }
    single.push_str(CORRELATE);
    single.push_str(&format!(
        "inputs = [{}]\n[sinks.out]\ntype = \"file\"\ninputs = [\"incidents\"]\npath = \"{}\"\n",
        labelled.join(", "),
        single_out.display()
    ));
    let single_config = dir.path().join("single.toml");
    std::fs::write(&single_config, single).unwrap();
    let out = run(&single_config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = incident_groups(&[single_out]);
    assert!(expected.len() >= 8, "{} incidents", expected.len());

    let broker = Broker::start();
    for (mode, topic) in [("backlog", "events-backlog"), ("live", "events-live")] {
        broker.create_topic(topic, 8);
        let publish = |dir: &Path| {
            for (cluster, path, _) in &clusters {
                let out = run(&cluster_agent(&broker, dir, cluster, path, topic));
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        if mode == "backlog" {
            publish(dir.path());
        }
        let group = format!("aggregators-{mode}");
        let aggregators: Vec<(PathBuf, PathBuf)> = (1..=2)
            .map(|i| aggregator(&broker, dir.path(), &format!("{mode}-{i}"), topic, &group))
            .collect();
        let mut children: Vec<_> = aggregators.iter().map(|(c, _)| spawn(c)).collect();
        if mode == "live" {
            // Both have joined the group before the agents write.
            std::thread::sleep(Duration::from_secs(8));
            publish(dir.path());
        }
        let outs: Vec<PathBuf> = aggregators.iter().map(|(_, o)| o.clone()).collect();
        let configs: Vec<PathBuf> = aggregators.iter().map(|(c, _)| c.clone()).collect();
        await_events(&outs, total, &configs);
        for child in &mut children {
            terminate(child);
        }
        assert_eq!(
            incident_groups(&outs),
            expected,
            "{mode}: two aggregators group the events as one process does"
        );
    }
}
