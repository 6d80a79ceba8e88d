//! The `otlp` sink against a real OTLP receiver (Python grpcio + the official
//! opentelemetry-proto classes, started here on loopback) over gRPC and HTTP/protobuf.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod support;
use support::peers::OtlpReceiver;
use support::read_lines;

#[test]
fn records_arrive_over_grpc_and_http_with_the_collector_attributes_after_503s() {
    let dir = tempfile::tempdir().unwrap();
    // Refuses everything for the first 3 seconds: UNAVAILABLE / 503.
    let receiver = OtlpReceiver::start(dir.path(), Duration::from_secs(3));
    const N: u64 = 3000;
    let input = support::generated_events(dir.path(), N, false);
    let config = dir.path().join("kollate.toml");
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

[sinks.grpc]
type = "otlp"
inputs = ["classify"]
endpoint = "http://127.0.0.1:{grpc}"
cluster_name = "prod-eu"
headers = {{ authorization = "Bearer s3cret" }}
batch_max_events = 500

[sinks.http]
type = "otlp"
inputs = ["classify"]
protocol = "http"
endpoint = "http://127.0.0.1:{http}"
cluster_name = "prod-eu"
headers = {{ authorization = "Bearer s3cret" }}
"#,
            data = dir.path().join("data").display(),
            input = input.display(),
            grpc = receiver.grpc_port,
            http = receiver.http_port,
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kollate"))
        .env_remove("KOLLATE_CONFIG")
        .args(["--log-level", "error", "run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kollate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(&receiver.stats).unwrap()).unwrap();
    assert!(
        stats["refused_requests"].as_u64().unwrap() >= 2,
        "both sinks met the outage: {stats}"
    );

    // The input, read independently: (uid, count) -> the Event object.
    let mut expected: BTreeMap<(String, i64), Value> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let key = (
            e["metadata"]["uid"].as_str().unwrap().to_owned(),
            e["count"].as_i64().unwrap(),
        );
        expected.insert(key, e);
    }
    assert_eq!(expected.len() as u64, N);

    let records = receiver.records();
    for transport in ["grpc", "http"] {
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| r["transport"] == transport)
            .collect();
        let seen: BTreeSet<(String, i64)> = mine
            .iter()
            .map(|r| {
                (
                    r["attributes"]["k8s.event.uid"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    r["attributes"]["k8s.event.count"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            expected.keys().cloned().collect(),
            "{transport}: every event arrived"
        );
        for r in mine {
            let key = (
                r["attributes"]["k8s.event.uid"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                r["attributes"]["k8s.event.count"].as_i64().unwrap(),
            );
            let e = &expected[&key];
            let object = &e["involvedObject"];
            let resource = &r["resource"];
            assert_eq!(resource["k8s.cluster.name"], "prod-eu");
            assert_eq!(resource["k8s.object.kind"], object["kind"]);
            assert_eq!(resource["k8s.object.name"], object["name"]);
            assert_eq!(resource["k8s.object.uid"], object["uid"]);
            assert_eq!(resource["k8s.object.api_version"], object["apiVersion"]);
            assert_eq!(
                resource["k8s.node.name"],
                e["source"]["host"].as_str().unwrap_or("")
            );
            let attrs = &r["attributes"];
            assert_eq!(attrs["k8s.event.reason"], e["reason"]);
            assert_eq!(attrs["k8s.event.name"], e["metadata"]["name"]);
            assert_eq!(
                attrs["k8s.namespace.name"],
                object["namespace"].as_str().unwrap_or("")
            );
            assert_eq!(attrs["k8s.event.type"], e["type"]);
            assert!(attrs["kollate.category"].is_string(), "classified: {attrs}");
            assert_eq!(r["body"], e["message"]);
            let severity = r["severity_number"].as_i64().unwrap();
            assert!([9, 13, 17, 21].contains(&severity), "{r}");
            if e["type"] == "Warning" {
                assert!(severity >= 13, "a Warning is never info: {r}");
            }
            let when =
                chrono::DateTime::parse_from_rfc3339(e["lastTimestamp"].as_str().unwrap()).unwrap();
            assert_eq!(
                r["time_unix_nano"].as_i64().unwrap(),
                when.timestamp_nanos_opt().unwrap()
            );
        }
    }
    let requests = read_lines(&receiver.headers_out);
    assert!(
        requests
            .iter()
            .filter(|r| r["refused"] == false)
            .all(|r| r["headers"]["authorization"] == "Bearer s3cret"),
        "the authorization header went with every request"
    );
}
