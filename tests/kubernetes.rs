//! The `kubernetes_events` source against the project's fake API server (real HTTP, real
//! `kube` client): every event exactly once through disconnects, 410s and restarts.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::fake_apiserver::{FakeApiServer, core_event, events_v1_event};
use support::{http_get, read_lines};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

struct Harness {
    dir: tempfile::TempDir,
    server: FakeApiServer,
    /// Every kollate started, killed when the test ends (also when it fails).
    started: std::cell::RefCell<Vec<u32>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for pid in self.started.borrow().iter() {
            // SAFETY: signalling a child we started; harmless if it already exited.
            unsafe { libc_kill(*pid as i32, 9) };
        }
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let server = FakeApiServer::start();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
        Harness {
            dir,
            server,
            started: Default::default(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts kollate: kubernetes_events (with `extra` options) -> file sink `out.jsonl`.
    fn start(&self, extra: &str) -> Child {
        self.start_with(extra, "")
    }

    /// [`Harness::start`], with options for the file sink too.
    fn start_with(&self, extra: &str, sink_extra: &str) -> Child {
        self.start_instance("kollate", extra, sink_extra)
    }

    /// One of several instances: its own config, data directory and log (`<name>.log`),
    /// writing to the same `out.jsonl` (a shared volume).
    fn start_instance(&self, name: &str, extra: &str, sink_extra: &str) -> Child {
        let data = if name == "kollate" {
            "data".to_owned()
        } else {
            format!("data-{name}")
        };
        let config = self.path(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[sources.cluster]\ntype = \"kubernetes_events\"\nkubeconfig = {:?}\nwatch_timeout = \"5s\"\n{extra}\n\
                 [sinks.out]\ntype = \"file\"\ninputs = [\"cluster\"]\npath = {:?}\n{sink_extra}\n",
                self.path(&data).display().to_string(),
                self.path("kubeconfig").display().to_string(),
                self.path("out.jsonl").display().to_string(),
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kollate"))
            .args(["--log-level", "info", "run", "--no-progress", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.started.borrow_mut().push(child.id());
        child
    }

    fn received(&self) -> Vec<serde_json::Value> {
        read_lines(&self.path("out.jsonl"))
    }

    fn wait_for(&self, n: usize) {
        let start = Instant::now();
        while self.received().len() < n {
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self.path("kollate.log")).unwrap_or_default();
                panic!(
                    "only {} of {n} events arrived; kollate said:\n{log}",
                    self.received().len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Harness {
    /// Stops kollate with SIGTERM; returns what it logged.
    fn stop(&self, child: Child) -> String {
        self.stop_instance("kollate", child)
    }

    /// Stops instance `name` with SIGTERM; returns what it logged.
    fn stop_instance(&self, name: &str, mut child: Child) -> String {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc_kill(child.id() as i32, 15) };
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default();
        assert!(status.success(), "{log}");
        log
    }
}

/// (uid, resource_version) -> times received.
fn tally(events: &[serde_json::Value]) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for e in events {
        let key = (
            e["uid"].as_str().unwrap().to_owned(),
            e["resource_version"].as_str().unwrap().to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// uid -> the highest count received for it (an object's latest state).
fn latest_counts(events: &[serde_json::Value]) -> HashMap<String, u64> {
    let mut latest: HashMap<String, u64> = HashMap::new();
    for e in events {
        let n = latest
            .entry(e["uid"].as_str().unwrap().to_owned())
            .or_default();
        *n = (*n).max(e["count"].as_u64().unwrap());
    }
    latest
}

#[test]
fn every_change_arrives_exactly_once_through_dropped_connections_and_410s() {
    let h = Harness::new();
    // Events from before kollate started (an hour ago).
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for i in 0..50 {
        let mut old = core_event(&format!("old-{i}"), "shop", "Pulled", 1);
        old["firstTimestamp"] = hour_ago.clone().into();
        old["lastTimestamp"] = hour_ago.clone().into();
        h.server.apply(old);
    }
    let child = h.start("api = \"core/v1\"\nstart_at = \"now\"");
    // Let the source list (limit=1) and open its watch, then stream with faults.
    std::thread::sleep(Duration::from_millis(500));
    h.server.drop_watches_after(Some(150));
    let mut expected = 0;
    let mut changes: Vec<(String, u64)> = Vec::new();
    for round in 0..10 {
        for i in 0..1_000 {
            h.server.apply(core_event(
                &format!("e-{round}-{i}"),
                if i % 2 == 0 { "shop" } else { "ops" },
                "BackOff",
                1,
            ));
            changes.push((format!("e-{round}-{i}"), 1));
            expected += 1;
        }
        // A recurrence: the same event object comes back with a higher count.
        h.server
            .apply(core_event(&format!("e-{round}-0"), "shop", "BackOff", 2));
        changes.push((format!("e-{round}-0"), 2));
        expected += 1;
        // TTL expiry is not news.
        h.server.delete(&format!("old-{round}"));
        if round == 3 || round == 7 {
            // The source is behind (its watch drops at random): its next watch is from an
            // expired resourceVersion and gets a 410.
            h.server.compact();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every object arrives in its latest state; what was streamed arrives change by change.
    let final_counts: HashMap<String, u64> = changes.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let latest_arrived = |received: &[serde_json::Value]| latest_counts(received) == final_counts;
    while !latest_arrived(&h.received()) {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(h.path("kollate.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!(
                "not every object arrived in its latest state; kollate's last lines (newest first):\n{tail}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(700));
    h.stop(child);
    let received = h.received();
    let counts = tally(&received);
    assert!(
        counts.values().all(|n| *n == 1),
        "duplicates: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        latest_arrived(&received),
        "nothing arrived that did not happen"
    );
    // A relist after 410 shows only the latest version of an object, as the API does:
    // the intermediate versions of objects changed twice during a gap are not observable.
    assert!(
        received.len() <= expected && received.len() >= expected - 10,
        "{} of {expected}",
        received.len()
    );
    let recurrence = received
        .iter()
        .filter(|e| e["uid"] == "e-0-0")
        .map(|e| e["count"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        recurrence,
        vec![1, 2],
        "a streamed recurrence arrives as such"
    );
    let (lists, watches) = h.server.requests();
    assert!(
        watches >= 5,
        "connections were dropped and re-established ({watches} watches)"
    );
    assert!(lists >= 3, "two 410s caused relists ({lists} lists)");
}

#[test]
fn a_restart_resumes_from_the_checkpoint_with_no_gap_and_no_duplicate() {
    let h = Harness::new();
    let child = h.start("api = \"events.k8s.io/v1\"");
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..300 {
        h.server
            .apply(events_v1_event(&format!("a-{i}"), "shop", "Started"));
    }
    h.wait_for(300);
    // Idle for a while: bookmarks advance the checkpoint past what was delivered.
    std::thread::sleep(Duration::from_millis(1500));
    h.stop(child);
    for i in 0..200 {
        h.server
            .apply(events_v1_event(&format!("b-{i}"), "ops", "Started"));
    }
    let child = h.start("api = \"events.k8s.io/v1\"");
    h.wait_for(500);
    std::thread::sleep(Duration::from_millis(700));
    h.stop(child);
    let received = h.received();
    assert_eq!(received.len(), 500, "no duplicate across the restart");
    assert!(tally(&received).values().all(|n| *n == 1));
    assert!(
        received
            .iter()
            .all(|e| e["api_version"] == "events.k8s.io/v1"
                && e["message"].as_str().unwrap().starts_with("Started"))
    );
}

#[test]
fn start_at_beginning_pages_through_existing_events_and_errors_and_429s_are_retried() {
    let h = Harness::new();
    for i in 0..2_000 {
        h.server
            .apply(core_event(&format!("x-{i}"), "shop", "Pulled", 1));
    }
    for i in 0..100 {
        h.server
            .apply(core_event(&format!("sys-{i}"), "kube-system", "Pulled", 1));
    }
    h.server.fail_next(2);
    h.server.throttle_watches(2, 1);
    let watch_started = Instant::now();
    let child = h.start(
        "api = \"core/v1\"\nstart_at = \"beginning\"\npage_size = 250\nexclude_namespaces = [\"kube-*\"]",
    );
    h.wait_for(2_000);
    h.server.apply(core_event("after", "shop", "Pulled", 1));
    h.wait_for(2_001);
    let stderr = h.stop(child);
    assert!(
        stderr.contains("retrying"),
        "the injected 500s were retried: {stderr}"
    );
    assert_eq!(
        h.server.throttles_left(),
        0,
        "both watches were answered 429 first"
    );
    assert!(
        watch_started.elapsed() >= Duration::from_secs(2),
        "the event after the list came through a watch opened only after two Retry-After waits of 1 s"
    );
    let (lists, _) = h.server.requests();
    assert!(lists >= 8, "2,100 events in pages of 250 ({lists} lists)");
    assert_eq!(tally(&h.received()).len(), 2_001);
    assert!(
        h.received().iter().all(|e| e["namespace"] == "shop"),
        "kube-system is excluded"
    );
}

#[test]
fn a_paged_list_while_the_cluster_changes_misses_no_change() {
    let h = Harness::new();
    for i in 0..3_000 {
        h.server
            .apply(core_event(&format!("x-{i:04}"), "shop", "Pulled", 1));
    }
    let child = h.start("api = \"core/v1\"\nstart_at = \"beginning\"\npage_size = 20");
    // While kollate pages through the list, objects it has listed and objects it has not
    // listed yet recur, and history is compacted once (its continue token expires).
    let server = h.server.handle();
    let changer = std::thread::spawn(move || {
        for (n, i) in (0..3_000).step_by(7).enumerate() {
            server.apply(core_event(&format!("x-{i:04}"), "shop", "Pulled", 2));
            if n == 200 {
                server.compact();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    changer.join().unwrap();
    let expected: HashMap<String, u64> = (0..3_000)
        .map(|i| (format!("x-{i:04}"), if i % 7 == 0 { 2 } else { 1 }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest_counts(&h.received()) != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    h.stop(child);
    let received = h.received();
    let got = latest_counts(&received);
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(uid, count)| got.get(*uid) != Some(count))
        .collect();
    assert!(wrong.is_empty(), "not in their latest state: {wrong:?}");
    let counts = tally(&received);
    assert!(
        counts.values().all(|n| *n == 1),
        "duplicates: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
}

#[test]
fn health_checks_report_a_watch_that_stopped_making_progress() {
    let h = Harness::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = h.start(&format!("api = \"core/v1\"\nstall_timeout = \"1s\"\n[api]\nenabled = true\naddress = \"127.0.0.1:{port}\""));
    let readyz = || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http_get(port, "/readyz", None))
    };
    let wait_until = |want: u16| {
        let start = Instant::now();
        loop {
            if let Some((status, body)) = readyz()
                && status == want
            {
                return body;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "/readyz never answered {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_until(200);
    // The watch stays open but nothing arrives, not even bookmarks.
    h.server.silence_bookmarks(true);
    let body = wait_until(503);
    assert!(body.contains("source cluster: no progress"), "{body}");
    assert_eq!(http_get(port, "/healthz", None).0, 503);
    h.server.silence_bookmarks(false);
    wait_until(200);
    h.server
        .apply(core_event("after-stall", "shop", "BackOff", 1));
    h.wait_for(1);
    h.stop(child);
}

#[test]
fn kill_9_at_five_random_points_then_restart_every_event_exactly_once() {
    use rand::Rng;
    let h = Harness::new();
    let sink = "idempotent = true";
    let mut child = h.start_with("api = \"core/v1\"", sink);
    // "now" is once the source has its starting point (saved at once).
    let checkpoint = h.path("data/checkpoints/cluster.json");
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let producer = {
        let server = h.server.handle();
        std::thread::spawn(move || {
            for i in 0..10_000 {
                server.apply(core_event(&format!("k-{i}"), "shop", "BackOff", 1));
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let mut rng = rand::rng();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..900)));
        child.kill().unwrap();
        child.wait().unwrap();
        child = h.start_with("api = \"core/v1\"", sink);
    }
    producer.join().unwrap();
    h.wait_for(10_000);
    std::thread::sleep(Duration::from_millis(700));
    h.stop(child);
    let received = h.received();
    let counts = tally(&received);
    assert_eq!(counts.len(), 10_000, "nothing lost");
    assert!(
        counts.values().all(|n| *n == 1),
        "nothing repeated: {} lines for {} events",
        received.len(),
        counts.len()
    );
}

#[test]
fn two_replicas_with_leader_election_fail_over_with_every_event_exactly_once() {
    let h = Harness::new();
    let election = |id: &str| {
        format!(
            "api = \"core/v1\"\nleader_election = {{ namespace = \"kollate\", lease_name = \"events\", \
             lease_duration = \"3s\", renew_deadline = \"2s\", retry_period = \"300ms\", identity = \"{id}\" }}"
        )
    };
    let sink = "idempotent = true";
    let mut replicas = HashMap::new();
    replicas.insert("a", h.start_instance("a", &election("a"), sink));
    replicas.insert("b", h.start_instance("b", &election("b"), sink));
    let holder = || {
        h.server.lease("kollate", "events").and_then(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
    };
    let start = Instant::now();
    while holder().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nobody took the Lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the leader time to open its watch and share its starting point.
    std::thread::sleep(Duration::from_secs(1));
    let producer = {
        let server = h.server.handle();
        std::thread::spawn(move || {
            for i in 0..6_000 {
                server.apply(core_event(&format!("ha-{i}"), "shop", "BackOff", 1));
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    h.wait_for(1_500);
    let first = holder().unwrap();
    let mut leader = replicas.remove(first.as_str()).unwrap();
    leader.kill().unwrap();
    leader.wait().unwrap();
    let killed_at = Instant::now();
    let written = h.received().len();
    while h.received().len() == written {
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "the standby replica never took over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took_over = killed_at.elapsed();
    producer.join().unwrap();
    h.wait_for(6_000);
    std::thread::sleep(Duration::from_millis(700));
    let (survivor, child) = replicas.into_iter().next().unwrap();
    let log = h.stop_instance(survivor, child);
    assert_eq!(
        holder(),
        None,
        "the survivor released the Lease at shutdown: {log}"
    );
    let lease = h.server.lease("kollate", "events").unwrap();
    assert!(lease["spec"]["leaseTransitions"].as_u64().unwrap() >= 1);
    assert!(
        lease["metadata"]["annotations"]["kollate.dev/checkpoint"]
            .as_str()
            .is_some_and(|c| c.contains("resource_version")),
        "the checkpoint is shared on the Lease: {lease}"
    );
    let received = h.received();
    let counts = tally(&received);
    assert_eq!(counts.len(), 6_000, "nothing lost");
    assert!(
        counts.values().all(|n| *n == 1),
        "nothing repeated: {} lines for {} events",
        received.len(),
        counts.len()
    );
    assert!(
        took_over < Duration::from_secs(3 + 5),
        "{survivor} took over {took_over:?} after {first} was killed (lease 3s)\n{log}"
    );
}

#[test]
fn an_api_server_unreachable_for_a_minute_is_reported_then_the_watch_resumes() {
    let mut h = Harness::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = h.start(&format!(
        "api = \"core/v1\"\nstall_timeout = \"2s\"\n[api]\nenabled = true\naddress = \"127.0.0.1:{port}\""
    ));
    let probe = |path: &str| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http_get(port, path, None))
    };
    let wait_until = |path: &str, want: u16, within: Duration| {
        let start = Instant::now();
        loop {
            if let Some((status, body)) = probe(path)
                && status == want
            {
                return body;
            }
            assert!(start.elapsed() < within, "{path} never answered {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_until("/readyz", 200, Duration::from_secs(20));
    h.server.apply(core_event("before", "shop", "BackOff", 1));
    h.wait_for(1);
    h.server.go_down();
    let down = Instant::now();
    let body = wait_until("/readyz", 503, Duration::from_secs(20));
    assert!(
        body.contains("source cluster: API server unreachable"),
        "{body}"
    );
    // Restarting cannot fix an unreachable API server: liveness stays green meanwhile,
    // well past the stall timeout.
    while down.elapsed() < Duration::from_secs(60) {
        let (status, body) = probe("/healthz").unwrap();
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, body) = probe("/readyz").unwrap();
    let secs: u64 = body
        .split("unreachable for ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(secs >= 55, "a minute and counting: {body}");
    h.server
        .apply(core_event("while-down", "shop", "BackOff", 1));
    h.server.come_back();
    wait_until("/readyz", 200, Duration::from_secs(30));
    h.server.apply(core_event("after", "shop", "BackOff", 1));
    h.wait_for(3);
    let log = h.stop(child);
    assert!(log.contains("retrying"), "{log}");
    let received: Vec<String> = h
        .received()
        .iter()
        .map(|e| e["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, vec!["before", "while-down", "after"]);
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[test]
fn a_cluster_holding_500k_events_costs_no_memory_spike_at_start_up() {
    use std::io::BufRead;
    let h = Harness::new();
    let n = 500_000;
    let stamp = (chrono::Utc::now() - chrono::Duration::minutes(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    h.server.preload(n, |i| {
        let mut e = core_event(
            &format!("u{i:07}"),
            ["shop", "ops", "db"][i % 3],
            "Pulled",
            1,
        );
        e["firstTimestamp"] = stamp.clone().into();
        e["lastTimestamp"] = stamp.clone().into();
        e
    });
    // Console sink (JSON on stdout, read here): 500k events are counted, not stored.
    let run = |start_at: &str, expect: usize| {
        let config = h.path(&format!("{start_at}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[sources.cluster]\ntype = \"kubernetes_events\"\napi = \"core/v1\"\n\
                 kubeconfig = {:?}\nstart_at = \"{start_at}\"\npage_size = 1000\n\
                 [sinks.out]\ntype = \"console\"\ninputs = [\"cluster\"]\nformat = \"json\"\n",
                h.path(&format!("data-{start_at}")).display().to_string(),
                h.path("kubeconfig").display().to_string(),
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kollate"))
            .args(["run", "--no-progress", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        h.started.borrow_mut().push(child.id());
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut uids = std::collections::HashSet::new();
            let mut lines = 0;
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line.unwrap();
                lines += 1;
                let uid = line
                    .split("\"uid\":\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                uids.insert(uid.to_owned());
            }
            (lines, uids.len())
        });
        // Until everything expected has been listed (then the watch idles with bookmarks).
        let start = Instant::now();
        let checkpoint = h.path(&format!("data-{start_at}/checkpoints/cluster.json"));
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let (lists, _) = h.server.requests();
            let listed = checkpoint.exists() && (expect == 0 || lists >= expect / 1000);
            if listed {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "listing never finished"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
        let peak = peak_rss_mib(child.id());
        // SAFETY: signalling our own child.
        unsafe { libc_kill(child.id() as i32, 15) };
        assert!(child.wait().unwrap().success());
        let (lines, distinct) = reader.join().unwrap();
        eprintln!("start_at = {start_at}: {lines} events, peak RSS {peak} MiB");
        (lines, distinct, peak)
    };
    let (lines, _, peak) = run("now", 0);
    assert_eq!(lines, 0, "start_at = now emits none of the existing events");
    assert!(peak < 64, "start_at = now: peak RSS {peak} MiB");
    let (lines, distinct, peak) = run("beginning", n);
    assert_eq!((lines, distinct), (n, n), "every existing event, once");
    assert!(peak < 128, "start_at = beginning: peak RSS {peak} MiB");
}

#[test]
fn enrichment_adds_owner_chain_node_and_labels_with_one_lookup_per_object() {
    use serde_json::json;
    let h = Harness::new();
    let owner = |kind: &str, name: &str, uid: &str| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    h.server.put_object(
        "apps",
        "v1",
        "deployments",
        json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "d-1", "labels": {"app": "web"}},
        "spec": {"replicas": 1}}),
    );
    h.server.put_object(
        "apps",
        "v1",
        "replicasets",
        json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-7d9", "namespace": "shop", "uid": "rs-1",
                     "ownerReferences": owner("Deployment", "web", "d-1")}}),
    );
    h.server.put_object(
        "",
        "v1",
        "pods",
        json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pod-e1", "namespace": "shop", "uid": "p-1",
                     "labels": {"app": "web", "pod-template-hash": "7d9"},
                     "ownerReferences": owner("ReplicaSet", "web-7d9", "rs-1")},
        "spec": {"nodeName": "n-7"}}),
    );
    let child = h.start("api = \"core/v1\"\nenrich = [\"owner\", \"node\", \"labels\"]");
    std::thread::sleep(Duration::from_millis(700));
    // 100 events about the pod (core_event names the pod `pod-<uid>`), 50 about a pod
    // that is gone, one about a node.
    for i in 0..100 {
        let mut e = core_event(&format!("a-{i}"), "shop", "BackOff", 1);
        e["involvedObject"]["name"] = "pod-e1".into();
        h.server.apply(e);
    }
    for i in 0..50 {
        let mut e = core_event(&format!("g-{i}"), "shop", "BackOff", 1);
        e["involvedObject"]["name"] = "pod-gone".into();
        h.server.apply(e);
    }
    let mut node = core_event("node-1", "default", "NodeNotReady", 1);
    node["involvedObject"] = json!({"kind": "Node", "name": "n-7"});
    h.server.apply(node);
    h.wait_for(151);
    h.stop(child);
    let received = h.received();
    let about_pod: Vec<_> = received
        .iter()
        .filter(|e| e["object"]["name"] == "pod-e1")
        .collect();
    assert_eq!(about_pod.len(), 100);
    for e in &about_pod {
        assert_eq!(
            e["enrichment"],
            json!({"owners": [{"kind": "ReplicaSet", "name": "web-7d9"}, {"kind": "Deployment", "name": "web"}],
                   "node": "n-7", "labels": {"app": "web", "pod-template-hash": "7d9"}}),
        );
    }
    assert!(
        received
            .iter()
            .filter(|e| e["object"]["name"] == "pod-gone")
            .all(|e| e.get("enrichment").is_none()),
        "nothing made up for a pod that is gone"
    );
    let node = received.iter().find(|e| e["uid"] == "node-1").unwrap();
    assert_eq!(node["enrichment"], json!({"node": "n-7"}));
    // One read per object, however many events: the cache (negative entries included).
    assert_eq!(h.server.gets("pods", "shop", "pod-e1"), 1);
    assert_eq!(h.server.gets("pods", "shop", "pod-gone"), 1);
    assert_eq!(h.server.gets("replicasets", "shop", "web-7d9"), 1);
    assert_eq!(h.server.gets("deployments", "shop", "web"), 1);
}
