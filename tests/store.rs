//! The embedded store: ingestion through the pipeline, queries and aggregations compared
//! with counts computed here from the input, retention with a simulated clock, bad files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kollate::event::{Event, ObjectRef, Severity};
use kollate::store::{Filter, Retention, Store};
use serde_json::Value;

fn kollate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kollate"))
}

/// Runs file source -> store sink over `inputs` into `db`.
fn ingest(dir: &Path, inputs: &[PathBuf], db: &Path) -> std::process::Output {
    let config = dir.join("ingest.toml");
    let paths: Vec<String> = inputs
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[sources.in]\ntype = \"file\"\npaths = [{}]\n\
             [sinks.store]\ntype = \"store\"\ninputs = [\"in\"]\npath = {:?}\n",
            dir.join("data").display().to_string(),
            paths.join(", "),
            db.display().to_string()
        ),
    )
    .unwrap();
    kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .unwrap()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events/generated-cluster.jsonl")
}

fn json_out(args: &[&str], db: &Path) -> Vec<Value> {
    let out = kollate()
        .args(args)
        .arg("--db")
        .arg(db)
        .args(["-o", "jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn stored_events_answer_queries_and_aggregations_as_counted_from_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let out = ingest(dir.path(), &[example()], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ingesting the same stream again stores nothing twice.
    let out = ingest(dir.path(), &[example()], &db);
    assert!(out.status.success());

    // Counted here, from the raw JSON, not through kollate's decoder.
    let raw: Vec<Value> = std::fs::read_to_string(example())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut identities = HashSet::new();
    for e in &raw {
        let id = (
            e["metadata"]["uid"].as_str().unwrap().to_owned(),
            e["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        if !identities.insert(id) {
            continue;
        }
        let object = if e["involvedObject"].is_object() {
            &e["involvedObject"]
        } else {
            &e["regarding"]
        };
        let ns = object["namespace"]
            .as_str()
            .or(e["metadata"]["namespace"].as_str())
            .unwrap_or("")
            .to_owned();
        *expected
            .entry((ns, e["reason"].as_str().unwrap().to_owned()))
            .or_default() += 1;
    }
    let rows = json_out(
        &[
            "aggregate",
            "--group-by",
            "namespace,reason",
            "--limit",
            "100000",
        ],
        &db,
    );
    let found: BTreeMap<(String, String), u64> = rows
        .iter()
        .map(|r| {
            let g = r["group"].as_array().unwrap();
            (
                (
                    g[0].as_str().unwrap().to_owned(),
                    g[1].as_str().unwrap().to_owned(),
                ),
                r["events"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, expected);

    // A filtered query: one namespace, one reason.
    let ((ns, reason), n) = expected.iter().max_by_key(|(_, n)| **n).unwrap();
    let events = json_out(
        &[
            "query",
            "--namespace",
            ns,
            "--reason",
            reason,
            "--limit",
            "100000",
        ],
        &db,
    );
    assert_eq!(events.len() as u64, *n);
    assert!(events.iter().all(|e| e["reason"] == reason.as_str()));
    // Newest first, and a time range cuts it.
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    let middle = times[times.len() / 2];
    let since = json_out(
        &[
            "query",
            "--namespace",
            ns,
            "--reason",
            reason,
            "--since",
            middle,
            "--limit",
            "100000",
        ],
        &db,
    );
    assert_eq!(since.len(), times.iter().filter(|t| **t >= middle).count());
    // Free text.
    let text = json_out(
        &["query", "--search", "out of memory", "--limit", "100000"],
        &db,
    );
    let expected_text = raw
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .or(e["note"].as_str())
                .unwrap_or("")
                .to_lowercase()
                .contains("out of memory")
        })
        .count();
    assert_eq!(text.len(), expected_text);
    assert!(expected_text > 0);
}

#[test]
fn the_real_dumps_are_stored_and_counted() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let pattern = format!("{}/**/*", fixtures.display());
    let files: Vec<PathBuf> = glob::glob(&pattern)
        .unwrap()
        .flatten()
        .filter(|p| p.is_file() && kollate::incidents::is_dump(p))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let out = ingest(dir.path(), &files, &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Independently: every item of every dump, identified by uid + resourceVersion; the
    // dumps hold some events twice (both API shapes, same identity).
    let (events, _) = kollate::incidents::read_events(&files).unwrap();
    let store = Store::open(&db).unwrap();
    let total: u64 = store
        .aggregate(&Filter::default(), &[], None, 10)
        .unwrap()
        .iter()
        .map(|r| r.events)
        .sum();
    assert!(
        total as usize >= events.len(),
        "{total} stored, {} distinct uids",
        events.len()
    );
    let failed_mounts = store
        .query(
            &Filter {
                reason: Some("FailedMount".into()),
                ..Filter::default()
            },
            100_000,
        )
        .unwrap();
    assert!(failed_mounts.iter().all(|e| e.reason == "FailedMount"));
    assert!(!failed_mounts.is_empty());
}

fn event(i: usize, age_days: i64, severity: Severity, now: chrono::DateTime<chrono::Utc>) -> Event {
    let t = now - chrono::Duration::days(age_days) - chrono::Duration::seconds(i as i64);
    Event {
        uid: format!("u{i}").into(),
        resource_version: "1".into(),
        namespace: "shop".into(),
        reason: "BackOff".into(),
        message: format!("{} {}", "x".repeat(400), i),
        object: ObjectRef {
            kind: "Pod".into(),
            name: format!("p{i}").into(),
            ..ObjectRef::default()
        },
        count: 1,
        timestamp: Some(t),
        severity: Some(severity),
        ..Event::default()
    }
}

#[test]
fn retention_drops_what_is_too_old_by_age_and_severity_and_gives_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("events.db")).unwrap();
    // What the store takes on disk: the database file and its WAL.
    let on_disk = || -> u64 {
        ["events.db", "events.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum()
    };
    let now = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut events = Vec::new();
    for i in 0..6_000 {
        // 0..2000: 40 days old; 2000..4000: 5 days old info; 4000..6000: 5 days old errors.
        let (age, severity) = match i / 2_000 {
            0 => (40, Severity::Error),
            1 => (5, Severity::Info),
            _ => (5, Severity::Error),
        };
        events.push(event(i, age, severity, now));
    }
    store.insert(&events).unwrap();
    let before = store.size().unwrap();
    let disk_before = on_disk();
    let retention = Retention {
        max_age: Some(std::time::Duration::from_secs(30 * 86_400)),
        by_severity: vec![(Severity::Info, std::time::Duration::from_secs(3 * 86_400))],
        max_size: None,
    };
    while store.enforce(&retention, now).unwrap() > 0 {}
    let left = store.query(&Filter::default(), 100_000).unwrap();
    assert_eq!(left.len(), 2_000, "only the recent errors stay");
    assert!(left.iter().all(|e| e.severity == Some(Severity::Error)));
    let after = store.size().unwrap();
    assert!(
        after < before * 2 / 3,
        "space given back: {before} -> {after} bytes"
    );
    assert!(
        on_disk() < disk_before * 2 / 3,
        "the files shrink: {disk_before} -> {} bytes",
        on_disk()
    );
    // A size bound drops the oldest until under it.
    let bounded = Retention {
        max_size: Some(after / 2),
        ..Retention::default()
    };
    while store.enforce(&bounded, now).unwrap() > 0 {}
    assert!(store.size().unwrap() <= after / 2 + 64 * 1024);
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let out = ingest(dir.path(), &[example()], &db);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("events.db") && stderr.contains("not a database"),
        "{stderr}"
    );
    // Bad query arguments are usage errors.
    let out = kollate()
        .args(["query", "--since", "last tuesday", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = kollate()
        .args(["aggregate", "--group-by", "colour", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--group-by: unknown field `colour`"));
}

mod support;

#[test]
fn the_http_api_answers_from_the_store_with_the_same_filters() {
    use support::http_get;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("api.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[api]\nenabled = true\naddress = \"127.0.0.1:{port}\"\ntoken = \"s3cret\"\n\
             [sources.in]\ntype = \"file\"\npaths = [{:?}]\nfollow = true\n\
             [transforms.classify]\ntype = \"classify\"\ninputs = [\"in\"]\n\
             [transforms.incidents]\ntype = \"correlate\"\ninputs = [\"classify\"]\n\
             reorder_window = \"1s\"\nhold = \"1s\"\n\
             [sinks.store]\ntype = \"store\"\ninputs = [\"incidents\"]\n",
            dir.path().join("data").display().to_string(),
            example().display().to_string()
        ),
    )
    .unwrap();
    let mut child = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let token = Some("s3cret");
    let get = |path: &str| http_get(port, path, token);
    let start = std::time::Instant::now();
    let total = |body: &str| -> u64 {
        serde_json::from_str::<Vec<Value>>(body)
            .map(|rows| rows.iter().map(|r| r["events"].as_u64().unwrap()).sum())
            .unwrap_or(0)
    };
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && total(&get("/api/v1/aggregate?group_by=type").1) >= 4_000;
        if ready {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the store never filled"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        http_get(port, "/api/v1/events", None).0,
        401,
        "the token is required"
    );
    let (status, body) = get("/api/v1/events?namespace=shop&severity=error&limit=5");
    assert_eq!(status, 200, "{body}");
    let events: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e["namespace"] == "shop"));
    let (status, body) = get("/api/v1/events?since=yesterday");
    assert_eq!(status, 400);
    assert!(body.contains("invalid time `yesterday`"), "{body}");
    assert_eq!(get("/api/v1/aggregate?group_by=colour").0, 400);
    assert_eq!(get("/api/v1/events?colour=red").0, 400);
    let (status, body) = get("/api/v1/incidents");
    assert_eq!(status, 200);
    let incidents: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(!incidents.is_empty());
    let id = incidents[0]["id"].as_str().unwrap();
    let (status, body) = get(&format!("/api/v1/incidents/{id}"));
    assert_eq!(status, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["incident"]["id"], id);
    assert!(
        one["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["correlation_id"] == id)
    );
    assert_eq!(get("/api/v1/incidents/inc-nope").0, 404);
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    assert!(child.wait().unwrap().success());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Chromium for the report test: `$KOLLATE_CHROMIUM`, else the Debian package's.
fn chromium() -> PathBuf {
    std::env::var_os("KOLLATE_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Chromium is not installed: `apt-get install chromium` (.ci/run does it)")
        })
}

#[test]
fn the_html_report_renders_in_a_real_browser_with_the_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let config = dir.path().join("incidents.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[sources.in]\ntype = \"file\"\npaths = [{:?}]\n\
             [transforms.classify]\ntype = \"classify\"\ninputs = [\"in\"]\n\
             [transforms.incidents]\ntype = \"correlate\"\ninputs = [\"classify\"]\n\
             [sinks.store]\ntype = \"store\"\ninputs = [\"incidents\"]\npath = {:?}\n",
            dir.path().join("data").display().to_string(),
            example().display().to_string(),
            db.display().to_string()
        ),
    )
    .unwrap();
    let out = kollate()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = dir.path().join("report.html");
    let out = kollate()
        .args([
            "report",
            "--since",
            "2026-03-01T00:00:00Z",
            "--until",
            "2026-03-03T00:00:00Z",
            "--db",
        ])
        .arg(&db)
        .arg("-o")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    for reference in ["src=", "href=", "url(", "@import", "<link", "<script"] {
        assert!(
            !html.contains(reference),
            "self-contained: no `{reference}` in the page"
        );
    }
    let stored = Store::open(&db).unwrap().incidents(None).unwrap();
    assert!(stored.len() >= 10);

    let browser = |args: &[&str]| {
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("chromium").display()
            ))
            .args(args)
            .arg(format!("file://{}", report.display()))
            .output()
            .unwrap()
    };
    let dom = browser(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for incident in &stored {
        assert!(
            dom.contains(&format!("data-incident=\"{}\"", incident.id)),
            "{} is on the page",
            incident.id
        );
    }
    assert!(dom.contains("id=\"timeline\"") && dom.contains("id=\"categories\""));
    let shot = dir.path().join("report.png");
    let out = browser(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,1800",
    ]);
    assert!(shot.is_file(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 30_000,
        "a page with content, not a blank one: {} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("KOLLATE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// Events spread over three hours at uneven instants.
fn varied_events(n: usize, start: chrono::DateTime<chrono::Utc>) -> Vec<Event> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let severities = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];
    (0..n)
        .map(|i| {
            let ns = ["shop", "payments", "kube-system"][next(3) as usize];
            Event {
                uid: format!("u{i}").into(),
                resource_version: "1".into(),
                namespace: ns.into(),
                reason: [
                    "BackOff",
                    "Pulled",
                    "FailedMount",
                    "Killing",
                    "NodeNotReady",
                ][next(5) as usize]
                    .into(),
                event_type: ["Normal", "Warning"][next(2) as usize].into(),
                host: format!("n-{}", next(4)).into(),
                message: format!("event {i}"),
                object: ObjectRef {
                    kind: ["Pod", "Node"][next(2) as usize].into(),
                    namespace: ns.into(),
                    name: format!("p{}", next(7)).into(),
                    ..ObjectRef::default()
                },
                count: 1 + next(5),
                timestamp: Some(start + chrono::Duration::milliseconds(next(3 * 3_600_000) as i64)),
                severity: Some(severities[next(4) as usize]),
                ..Event::default()
            }
        })
        .collect()
}

/// What `aggregate` must answer, counted here over `events` (distinct identities).
fn counted(
    events: &[&Event],
    filter: &Filter,
    key: impl Fn(&Event) -> Vec<String>,
) -> BTreeMap<Vec<String>, (u64, u64)> {
    let mut out: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    for e in events {
        let t = e.timestamp.unwrap();
        let keep = filter.since.is_none_or(|s| t >= s)
            && filter.until.is_none_or(|u| t < u)
            && filter.namespace.as_deref().is_none_or(|n| e.namespace == n)
            && filter.min_severity.is_none_or(|m| e.severity.unwrap() >= m);
        if keep {
            let entry = out.entry(key(e)).or_default();
            entry.0 += 1;
            entry.1 += e.count;
        }
    }
    out
}

fn aggregated(
    store: &Store,
    filter: &Filter,
    group_by: &[&str],
    window: Option<std::time::Duration>,
) -> BTreeMap<Vec<String>, (u64, u64)> {
    let columns = kollate::store::GroupColumn::parse_list(
        &group_by.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
    .unwrap();
    store
        .aggregate(filter, &columns, window, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|r| {
            let mut key = r.group;
            if let Some(w) = r.window_start {
                key.insert(0, w.to_rfc3339());
            }
            (key, (r.events, r.occurrences))
        })
        .collect()
}

#[test]
fn aggregations_agree_with_a_count_over_the_events_whatever_the_range_window_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("events.db")).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:17.250Z")
        .unwrap()
        .to_utc();
    let events = varied_events(6_000, start);
    // Some arrive twice, in the same batch and in later ones.
    let mut arriving = events.clone();
    arriving.extend(events.iter().step_by(7).cloned());
    arriving.rotate_left(500);
    for chunk in arriving.chunks(700) {
        store.insert(chunk).unwrap();
    }
    // A replay stores nothing twice.
    assert_eq!(store.insert(&events[..1_000]).unwrap(), 0);

    let check = |store: &Store, kept: &[&Event]| {
        let window_of = |e: &Event, ms: i64| {
            let t = e.timestamp.unwrap().timestamp_millis();
            chrono::DateTime::from_timestamp_millis(t / ms * ms)
                .unwrap()
                .to_rfc3339()
        };
        let ranges = [
            Filter::default(),
            Filter {
                // Neither end on a minute boundary.
                since: Some(
                    start + chrono::Duration::seconds(4_000) + chrono::Duration::milliseconds(333),
                ),
                until: Some(start + chrono::Duration::seconds(7_777)),
                ..Filter::default()
            },
            Filter {
                since: Some(start + chrono::Duration::seconds(100)),
                namespace: Some("shop".into()),
                min_severity: Some(Severity::Error),
                ..Filter::default()
            },
            Filter {
                // Within one minute.
                since: Some(start + chrono::Duration::seconds(50)),
                until: Some(start + chrono::Duration::seconds(80)),
                ..Filter::default()
            },
        ];
        for filter in &ranges {
            assert_eq!(
                aggregated(store, filter, &["reason", "namespace"], None),
                counted(kept, filter, |e| vec![
                    e.reason.to_string(),
                    e.namespace.to_string()
                ]),
                "{filter:?}"
            );
            assert_eq!(
                aggregated(
                    store,
                    filter,
                    &["severity"],
                    Some(std::time::Duration::from_secs(300))
                ),
                counted(kept, filter, |e| vec![
                    window_of(e, 300_000),
                    e.severity.unwrap().as_str().to_owned()
                ]),
                "{filter:?} in 5 minute windows"
            );
            // Not whole minutes, and a field the rollup does not keep: read from the events.
            assert_eq!(
                aggregated(
                    store,
                    filter,
                    &["node"],
                    Some(std::time::Duration::from_secs(90))
                ),
                counted(kept, filter, |e| vec![
                    window_of(e, 90_000),
                    e.host.to_string()
                ]),
                "{filter:?} in 90 s windows"
            );
            assert_eq!(
                aggregated(store, filter, &["name"], None),
                counted(kept, filter, |e| vec![e.object.name.to_string()]),
                "{filter:?} by name"
            );
            assert_eq!(
                aggregated(store, filter, &[], None)
                    .values()
                    .map(|v| v.0)
                    .sum::<u64>(),
                counted(kept, filter, |_| Vec::new())
                    .values()
                    .map(|v| v.0)
                    .sum::<u64>(),
            );
        }
    };
    let distinct: Vec<&Event> = events.iter().collect();
    check(&store, &distinct);

    // Retention takes events out of the rollup too.
    let now = start + chrono::Duration::hours(3);
    let retention = Retention {
        max_age: Some(std::time::Duration::from_secs(7_200)),
        by_severity: vec![(Severity::Info, std::time::Duration::from_secs(5_000))],
        max_size: None,
    };
    while store.enforce(&retention, now).unwrap() > 0 {}
    let kept: Vec<&Event> = distinct
        .iter()
        .copied()
        .filter(|e| {
            let age = now - e.timestamp.unwrap();
            age <= chrono::Duration::seconds(7_200)
                && (e.severity != Some(Severity::Info) || age <= chrono::Duration::seconds(5_000))
        })
        .collect();
    assert!(kept.len() < distinct.len() && !kept.is_empty());
    check(&store, &kept);
    // And the events that stay still read back whole.
    let back = store.query(&Filter::default(), 100_000).unwrap();
    assert_eq!(back.len(), kept.len());
    let messages: HashSet<&str> = kept.iter().map(|e| e.message.as_str()).collect();
    assert!(back.iter().all(|e| messages.contains(e.message.as_str())));
}

/// The first store layout (kollate before layout 2), as it was created.
const LAYOUT1: &str = "
CREATE TABLE events (id INTEGER PRIMARY KEY, uid TEXT NOT NULL, resource_version TEXT NOT NULL,
    ts INTEGER NOT NULL, namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    node TEXT NOT NULL, reason TEXT NOT NULL, type TEXT NOT NULL, severity TEXT NOT NULL,
    category TEXT NOT NULL, correlation_id TEXT, count INTEGER NOT NULL, message TEXT NOT NULL,
    json TEXT NOT NULL);
CREATE UNIQUE INDEX events_identity ON events(uid, resource_version) WHERE uid <> '';
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_namespace_ts ON events(namespace, ts);
CREATE INDEX events_object ON events(kind, name);
CREATE INDEX events_node ON events(node, ts);
CREATE INDEX events_reason ON events(reason, ts);
CREATE INDEX events_severity ON events(severity, ts);
CREATE INDEX events_category ON events(category, ts);
CREATE INDEX events_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL;
CREATE TABLE incidents (id TEXT PRIMARY KEY, status TEXT NOT NULL, severity TEXT NOT NULL,
    summary TEXT NOT NULL, first_seen INTEGER, last_seen INTEGER, json TEXT NOT NULL);
CREATE INDEX incidents_last_seen ON incidents(last_seen);
";

#[test]
fn a_store_of_the_first_layout_is_converted_once_and_answers_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let events: Vec<Event> = (0..12_345)
        .map(|i| {
            let severity = [Severity::Info, Severity::Error][i % 2];
            event(i, (i % 3) as i64, severity, now)
        })
        .collect();
    {
        let mut old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(LAYOUT1).unwrap();
        let old = old.transaction().unwrap();
        let mut insert = old
            .prepare(
                "INSERT INTO events (uid, resource_version, ts, namespace, kind, name, node, reason, type, severity, category, correlation_id, count, message, json)
                 VALUES (?1, '1', ?2, 'shop', 'Pod', ?3, '', 'BackOff', '', ?4, '', NULL, 1, ?5, ?6)",
            )
            .unwrap();
        for e in &events {
            insert
                .execute(rusqlite::params![
                    e.uid.as_str(),
                    e.timestamp.unwrap().timestamp_millis(),
                    e.object.name.as_str(),
                    e.severity.unwrap().as_str(),
                    e.message,
                    serde_json::to_string(e).unwrap(),
                ])
                .unwrap();
        }
        drop(insert);
        old.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let back = store.query(&Filter::default(), 100_000).unwrap();
    assert_eq!(back.len(), events.len());
    let mut expected: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let mut found: Vec<&str> = back.iter().map(|e| e.message.as_str()).collect();
    expected.sort_unstable();
    found.sort_unstable();
    assert_eq!(found, expected);
    let by_severity = aggregated(&store, &Filter::default(), &["severity"], None);
    assert_eq!(by_severity[&vec!["error".to_owned()]].0, 6_172);
    assert_eq!(by_severity[&vec!["info".to_owned()]].0, 6_173);
    drop(store);
    // Once: opening again finds layout 2 and changes nothing.
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.query(&Filter::default(), 100_000).unwrap().len(),
        events.len()
    );
}
