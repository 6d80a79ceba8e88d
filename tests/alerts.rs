//! Alerts end to end: events -> classify -> correlate -> alert -> a real Prometheus
//! Alertmanager (started here on loopback) and a webhook receiver that refuses at first.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::http_get;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Alertmanager binary: `$KOLLATE_ALERTMANAGER`, else the Debian package's.
fn alertmanager_binary() -> PathBuf {
    let candidates = std::env::var_os("KOLLATE_ALERTMANAGER")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/usr/bin/prometheus-alertmanager",
                "/usr/local/bin/alertmanager",
            ]
            .map(PathBuf::from),
        );
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("Prometheus Alertmanager is not installed: `apt-get install prometheus-alertmanager` (.ci/run does it)")
    })
}

struct Alertmanager {
    child: Child,
    port: u16,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_alertmanager(dir: &std::path::Path) -> Alertmanager {
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
    )
    .unwrap();
    let child = Command::new(alertmanager_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let am = Alertmanager { child, port };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || http_get(port, "/-/ready", None).0 != 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Alertmanager did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    am
}

/// A webhook receiver that answers 503 to the first `refuse` posts, then 200.
fn start_webhook(refuse: usize) -> (u16, Arc<Mutex<Vec<Value>>>, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let (got, refused) = (got.clone(), refused.clone());
                async move {
                    let mut n = refused.lock().unwrap();
                    if *n < refuse {
                        *n += 1;
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    got.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (port, got, runtime)
}

fn event(
    uid: &str,
    ns: &str,
    pod: &str,
    reason: &str,
    kind: &str,
    message: &str,
    minute: u32,
) -> Value {
    let t = format!("2026-03-01T12:{minute:02}:00Z");
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"uid": uid, "name": format!("{pod}.{uid}"), "namespace": ns},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": "kubelet", "host": "n-1"}, "count": 1,
        "firstTimestamp": t, "lastTimestamp": t})
}

#[test]
fn incidents_and_rules_reach_a_real_alertmanager_and_a_webhook_that_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let am = start_alertmanager(dir.path());
    let (hook_port, hook, _hook_runtime) = start_webhook(2);

    // A crash loop in shop/cart for 10 minutes, then 40 quiet minutes of healthy events
    // elsewhere: the incident opens, then resolves. An unrelated image pull keeps failing.
    let mut lines = Vec::new();
    for m in 0..10 {
        lines.push(event(
            &format!("b{m}"),
            "shop",
            "cart-7d9f8b6c5-x2x9z",
            "BackOff",
            "Warning",
            "Back-off restarting failed container cart",
            m,
        ));
    }
    for m in 10..50 {
        lines.push(event(
            &format!("n{m}"),
            "ops",
            &format!("job-{m}"),
            "Started",
            "Normal",
            "Started container",
            m,
        ));
    }
    for m in 45..50 {
        lines.push(event(
            &format!("p{m}"),
            "ops",
            "tool-8d7c6b5f4-zz9zz",
            "Failed",
            "Warning",
            "Failed to pull image \"ngnix\": pull access denied",
            m,
        ));
    }
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let config = dir.path().join("kollate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = {data:?}
[sources.replay]
type = "file"
paths = [{input:?}]

[transforms.classify]
type = "classify"
inputs = ["replay"]

[transforms.incidents]
type = "correlate"
inputs = ["classify"]

[transforms.alerts]
type = "alert"
inputs = ["incidents"]

[[transforms.alerts.rules]]
name = "KubernetesIncident"
on = "incident"
when = {{ min_severity = "error" }}
labels = {{ severity = "{{severity}}", namespace = "{{namespace}}" }}
annotations = {{ summary = "{{message}}" }}

[[transforms.alerts.rules]]
name = "ImagePullFailing"
when = {{ reason = "Failed", message = "pull" }}
group_by = ["namespace", "name"]
labels = {{ namespace = "{{namespace}}", pod = "{{name}}" }}

[sinks.alertmanager]
type = "alertmanager"
inputs = ["alerts"]
endpoint = "http://127.0.0.1:{am}"

[sinks.hook]
type = "webhook"
inputs = ["alerts"]
url = "http://127.0.0.1:{hook_port}/hook"
max_backoff = "1s"
"#,
            data = dir.path().join("data").display().to_string(),
            input = input.display().to_string(),
            am = am.port
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kollate"))
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "the webhook's 503s were retried: {stderr}"
    );

    // The webhook got the incident firing, then resolved, and the image alert once.
    let posted: Vec<Value> = hook
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b["alerts"].as_array().unwrap().clone())
        .collect();
    let statuses = |name: &str, namespace: &str| -> Vec<String> {
        posted
            .iter()
            .filter(|a| a["name"] == name && a["labels"]["namespace"] == namespace)
            .map(|a| a["status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        statuses("KubernetesIncident", "shop"),
        vec!["firing", "resolved"],
        "{posted:#?}"
    );
    // The image pull failures are an incident of their own, still open at the end.
    assert_eq!(
        statuses("KubernetesIncident", "ops"),
        vec!["firing"],
        "{posted:#?}"
    );
    assert_eq!(
        statuses("ImagePullFailing", "ops"),
        vec!["firing"],
        "one alert for five failures"
    );
    let incident = posted
        .iter()
        .find(|a| a["name"] == "KubernetesIncident" && a["labels"]["namespace"] == "shop")
        .unwrap();
    assert_eq!(incident["labels"]["namespace"], "shop");
    assert_eq!(incident["labels"]["severity"], "error");
    assert!(
        incident["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("deployment shop/cart restarting"),
        "{incident}"
    );

    // Alertmanager holds the open ones as active; the resolved incident is gone.
    let (status, body) = http_get(am.port, "/api/v2/alerts", None);
    assert_eq!(status, 200, "{body}");
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap();
    let mut active: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["labels"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    active.sort();
    assert_eq!(
        active,
        vec![
            ("ImagePullFailing".to_owned(), "ops".to_owned()),
            ("KubernetesIncident".to_owned(), "ops".to_owned())
        ],
        "{body}"
    );
    let image = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "ImagePullFailing")
        .unwrap();
    assert_eq!(image["labels"]["pod"], "tool-8d7c6b5f4-zz9zz");
    assert_eq!(image["status"]["state"], "active");
    assert!(
        image["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("pull access denied")
    );
}
