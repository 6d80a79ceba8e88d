//! The `kafka` sink and source against a real Kafka-protocol broker (tansu, started here on
//! loopback), checked by an independent consumer (Python confluent-kafka).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod support;
use support::peers::Broker;

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

/// `n` generated events (both Event APIs) in a JSON Lines file.
fn generated(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("events.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let opts = kollate::generate::GenerateOptions {
        events: n,
        ..Default::default()
    };
    kollate::generate::generate(&opts, &mut out).unwrap();
    out.flush().unwrap();
    path
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
    let broker = Broker::start();
    broker.create_topic("k8s-events", 4);
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 100_000;
    let input = generated(dir.path(), N as u64);
    let config = dir.path().join("kollate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"

[sources.recorded]
type = "file"
paths = ["{input}"]

[sinks.kafka]
type = "kafka"
inputs = ["recorded"]
bootstrap_servers = "{bootstrap}"
topic = "k8s-events"
compression = "lz4"
headers = {{ "kollate-reason" = "{{reason}}" }}
"#,
            data = dir.path().join("data").display(),
            input = input.display(),
            bootstrap = broker.bootstrap(),
        ),
    )
    .unwrap();
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
