//! The `wasm` transform with real plugins, built from source by `plugins/build.sh` (Rust
//! through the SDK, and Python through componentize-py), run through the real host.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use support::plugins;

use kollate::batch::Batch;
use kollate::event::{Event, ObjectRef, Severity};
use kollate::metrics::{ComponentMetrics, PluginMetrics};
use kollate::topology::Transform;
use kollate::transforms::wasm::{self, DEAD_LETTER_REASON, WasmTransform, WasmTransformConfig};

fn plugin(name: &str) -> PathBuf {
    plugins().join(format!("{name}.wasm"))
}

/// A transform over `plugin` with extra TOML options, and its metrics.
fn build(
    name: &str,
    options: &str,
    data_dir: &Path,
) -> Result<(WasmTransform, Arc<ComponentMetrics>), String> {
    let text = format!("path = {:?}\n{options}", plugin(name).display().to_string());
    let config: WasmTransformConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
    let metrics = Arc::new(ComponentMetrics::default());
    let t = config
        .build("plugin", metrics.clone(), data_dir)
        .map_err(|e| e.to_string())?;
    Ok((t, metrics))
}

/// Builds with a data directory shared by the tests, so each plugin compiles once.
fn must_build(name: &str, options: &str) -> (WasmTransform, Arc<ComponentMetrics>) {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-tests");
    build(name, options, &shared).unwrap_or_else(|e| panic!("{e}"))
}

fn event(i: usize, namespace: &str, reason: &str, message: &str) -> Event {
    Event {
        uid: format!("uid-{i}").into(),
        name: format!("ev-{i}").into(),
        namespace: namespace.into(),
        event_type: "Normal".into(),
        reason: reason.into(),
        message: message.into(),
        count: 1,
        object: ObjectRef {
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: format!("pod-{i}").into(),
            ..ObjectRef::default()
        },
        ..Event::default()
    }
}

/// Runs one batch; returns the main output events and the dead letters.
fn run(t: &mut WasmTransform, events: Vec<Event>) -> (Vec<Event>, Vec<Event>) {
    let mut out = Vec::new();
    t.process(Batch::new(events), &mut out);
    let main = out.into_iter().flat_map(|b| b.events).collect();
    let dead = t.take_dead_letters().map(|b| b.events).unwrap_or_default();
    (main, dead)
}

fn plugin_metrics(m: &ComponentMetrics) -> &PluginMetrics {
    m.plugin.get().expect("plugin metrics")
}

fn label<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    e.labels.get(key).map(|v| v.as_str())
}

/// Every field of kollate's event model crosses to a plugin and back unchanged: the host
/// lays the batch out, the SDK reads it through its views and copies it (`replace`), the
/// host lifts the copies.
#[test]
fn every_field_survives_the_round_trip_through_a_plugin() {
    let rich: Event = serde_json::from_str(
        r#"{"uid":"u1","name":"n","namespace":"shop","resource_version":"7","api_version":"v1","type":"Warning","reason":"BackOff","message":"Back-off restarting failed container ünïcödé ✓","combined":true,"action":"Restarting","object":{"kind":"Pod","namespace":"shop","name":"cart-1","uid":"p1","api_version":"v1","resource_version":"99","field_path":"spec.containers{cart}"},"related":{"kind":"Node","name":"n-7"},"reporting_controller":"kubelet","reporting_instance":"kubelet-n-7","host":"n-7","count":12,"first_timestamp":"2026-03-02T08:00:02Z","last_timestamp":"2026-03-02T08:05:32Z","event_time":"2026-03-02T08:00:02.123456Z","series":{"count":3,"last_observed":"2026-03-02T08:05:32Z"},"timestamp":"2026-03-02T08:05:32Z","severity":"error","category":"lifecycle","correlation_id":"inc-1","labels":{"a":"1","team":"x"},"enrichment":{"owners":[{"kind":"ReplicaSet","name":"cart-7d"},{"kind":"Deployment","name":"cart"}],"node":"n-7","labels":{"app":"cart"}},"aggregation":{"key":"k","count":2,"events":1,"samples":["m"]}}"#,
    )
    .expect("test event");
    let plain = Event {
        uid: "u2".into(),
        count: 1,
        ..Event::default()
    };
    // More than one call's worth (batch_size 256), each event different.
    let mut events = vec![rich.clone(), plain];
    for i in 0..300 {
        let mut e = if i % 2 == 0 {
            rich.clone()
        } else {
            event(i, "payments", "Pulled", "Successfully pulled image")
        };
        e.uid = format!("copy-{i}").into();
        e.count = i as u64 + 1;
        e.labels.insert(format!("k{i}").into(), "v".into());
        events.push(e);
    }
    let (mut t, _) = must_build("identity", "config = { copy = true }");
    let (out, dead) = run(&mut t, events.clone());
    assert!(dead.is_empty());
    assert_eq!(out.len(), events.len());
    for (got, want) in out.iter().zip(&events) {
        assert_eq!(got, want, "event {} changed on the way", want.uid);
    }
}

#[test]
fn team_router_adds_team_and_oncall_labels() {
    let (mut t, _) = must_build(
        "team_router",
        r#"config = { teams = { shop = "checkout", "pay-*" = "payments" }, oncall = { checkout = "@alice" }, default_team = "platform" }"#,
    );
    let (out, dead) = run(
        &mut t,
        vec![
            event(1, "shop", "BackOff", "m"),
            event(2, "pay-eu", "BackOff", "m"),
            event(3, "other", "BackOff", "m"),
        ],
    );
    assert!(dead.is_empty());
    let teams: Vec<_> = out.iter().map(|e| label(e, "team")).collect();
    assert_eq!(
        teams,
        [Some("checkout"), Some("payments"), Some("platform")]
    );
    assert_eq!(label(&out[0], "oncall"), Some("@alice"));
    assert_eq!(label(&out[1], "oncall"), None);
    // Everything else survives the round trip through the plugin.
    assert_eq!(out[0].uid, "uid-1");
    assert_eq!(out[0].object.name, "pod-1");
}

#[test]
fn redact_masks_secrets_and_passes_clean_messages_untouched() {
    let (mut t, metrics) = must_build("redact", "");
    let clean = event(
        1,
        "shop",
        "Pulled",
        "Successfully pulled image \"nginx:1.25\"",
    );
    let (out, _) = run(
        &mut t,
        vec![
            clean.clone(),
            event(
                2,
                "shop",
                "Failed",
                "login failed: password=hunter2 for bob@example.com",
            ),
            event(
                3,
                "shop",
                "Failed",
                "dial tcp 10.0.12.7:5432: connection refused",
            ),
            event(
                4,
                "shop",
                "Failed",
                "Authorization: Bearer abc.def-ghi rejected",
            ),
        ],
    );
    assert_eq!(out[0], clean, "a clean event passes unchanged");
    assert!(!out[1].message.contains("hunter2"), "{}", out[1].message);
    assert!(
        !out[1].message.contains("bob@example.com"),
        "{}",
        out[1].message
    );
    assert!(
        out[1].message.contains("[REDACTED:secret]"),
        "{}",
        out[1].message
    );
    assert!(
        out[1].message.contains("[REDACTED:email]"),
        "{}",
        out[1].message
    );
    assert_eq!(label(&out[1], "redacted"), Some("secret,email"));
    assert_eq!(
        out[2].message,
        "dial tcp [REDACTED:ip]:5432: connection refused"
    );
    assert!(
        !out[3].message.contains("abc.def-ghi"),
        "{}",
        out[3].message
    );
    let counters = plugin_metrics(&metrics).counters.lock().unwrap().clone();
    assert_eq!(counters.get("masked.ip"), Some(&1));
    assert_eq!(counters.get("masked.email"), Some(&1));
}

#[test]
fn noise_filter_drops_listed_reasons_and_counts_them() {
    let (mut t, metrics) = must_build(
        "noise_filter",
        r#"config = { drop = { "kube-system" = ["Pulled", "Created"], "*" = ["SandboxChanged"] } }"#,
    );
    let mut warning = event(4, "kube-system", "Pulled", "m");
    warning.event_type = "Warning".into();
    let (out, _) = run(
        &mut t,
        vec![
            event(1, "kube-system", "Pulled", "m"),
            event(2, "shop", "Pulled", "m"),
            event(3, "shop", "SandboxChanged", "m"),
            warning,
            event(5, "kube-system", "Created", "m"),
        ],
    );
    let kept: Vec<_> = out.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(kept, ["uid-2", "uid-4"]);
    assert_eq!(ComponentMetrics::get(&metrics.discarded), 3);
    let counters = plugin_metrics(&metrics).counters.lock().unwrap().clone();
    assert_eq!(counters.get("dropped.Pulled"), Some(&1));
    assert_eq!(counters.get("dropped.SandboxChanged"), Some(&1));
    assert_eq!(counters.get("dropped.Created"), Some(&1));
}

#[test]
fn a_python_plugin_runs_through_the_same_contract() {
    let (mut t, _) = must_build(
        "priority_py",
        r#"config = { urgent_namespaces = ["prod-*"] }"#,
    );
    let mut events = vec![
        event(1, "shop", "BackOff", "m"),
        event(2, "prod-eu", "BackOff", "m"),
        event(3, "shop", "Pulled", "m"),
    ];
    events[0].severity = Some(Severity::Error);
    events[1].severity = Some(Severity::Error);
    let (out, _) = run(&mut t, events);
    let priorities: Vec<_> = out.iter().map(|e| label(e, "priority")).collect();
    assert_eq!(priorities, [Some("P2"), Some("P1"), Some("P4")]);
    assert_eq!(out[1].severity, Some(Severity::Error));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline_and_only_its_event_is_affected() {
    let (mut t, metrics) = must_build("hostile", "timeout = \"50ms\"\non_error = \"dead_letter\"");
    let mut events: Vec<Event> = (0..20).map(|i| event(i, "shop", "BackOff", "m")).collect();
    events[13].message = "LOOP".into();
    let (out, dead) = run(&mut t, events);
    assert_eq!(out.len(), 19);
    assert!(out.iter().all(|e| e.uid != "uid-13"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].uid, "uid-13");
    assert_eq!(
        label(&dead[0], DEAD_LETTER_REASON),
        Some("deadline exceeded")
    );
    assert!(plugin_metrics(&metrics).timeouts.load(Ordering::Relaxed) >= 1);
    // The plugin was re-instantiated and goes on working.
    let (out, _) = run(&mut t, vec![event(100, "shop", "BackOff", "m")]);
    assert_eq!(out.len(), 1);
}

#[test]
fn a_memory_bomb_is_stopped_at_max_memory() {
    let (mut t, metrics) = must_build("hostile", "max_memory = \"16MiB\"\non_error = \"drop\"");
    let mut events: Vec<Event> = (0..8).map(|i| event(i, "shop", "BackOff", "m")).collect();
    events[2].message = "BOMB".into();
    let (out, _) = run(&mut t, events);
    assert_eq!(out.len(), 7);
    let pm = plugin_metrics(&metrics);
    assert!(pm.traps.load(Ordering::Relaxed) >= 1);
    assert!(pm.memory_bytes.load(Ordering::Relaxed) <= 16 << 20);
    assert_eq!(ComponentMetrics::get(&metrics.errors), 1);
}

#[test]
fn a_trap_on_one_event_in_256_affects_only_that_event() {
    let (mut t, metrics) = must_build("hostile", "batch_size = 256\non_error = \"dead_letter\"");
    let mut events: Vec<Event> = (0..256).map(|i| event(i, "shop", "BackOff", "m")).collect();
    events[201].reason = "Poison".into();
    let (out, dead) = run(&mut t, events);
    assert_eq!(out.len(), 255);
    let uids: Vec<String> = out.iter().map(|e| e.uid.to_string()).collect();
    let expected: Vec<String> = (0..256)
        .filter(|i| *i != 201)
        .map(|i| format!("uid-{i}"))
        .collect();
    assert_eq!(uids, expected, "order kept");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].uid, "uid-201");
    assert!(
        label(&dead[0], DEAD_LETTER_REASON)
            .unwrap()
            .starts_with("trapped")
    );
    assert_eq!(
        plugin_metrics(&metrics)
            .failed_events
            .load(Ordering::Relaxed),
        1
    );
}

#[test]
fn wrong_disposition_counts_are_failures_and_the_breaker_opens() {
    let (mut t, metrics) = must_build("hostile", "config = { miscount = true }");
    for round in 0..6 {
        let (out, _) = run(
            &mut t,
            (0..4)
                .map(|i| event(round * 10 + i, "shop", "BackOff", "m"))
                .collect(),
        );
        // on_error = "pass" (the default): nothing lost.
        assert_eq!(out.len(), 4);
    }
    let pm = plugin_metrics(&metrics);
    assert!(pm.errors.load(Ordering::Relaxed) >= 5);
    assert_eq!(pm.circuit_opened.load(Ordering::Relaxed), 1);
    assert_eq!(pm.circuit_open.load(Ordering::Relaxed), 1);
    assert_eq!(ComponentMetrics::get(&metrics.errors), 24);
}

#[test]
fn rejects_go_to_the_dead_letter_output_and_fan_out_multiplies() {
    let (mut t, _) = must_build("hostile", "");
    // A full event: every field must survive the trip into the plugin (as a view) and
    // back (as the copies the SDK makes).
    let twice: Event = serde_json::from_value(serde_json::json!({
        "uid": "uid-2", "name": "n", "namespace": "shop", "resource_version": "7",
        "api_version": "v1", "type": "Warning", "reason": "Twice", "message": "Back-off ünïcode",
        "combined": true, "action": "Pulling",
        "object": {"kind": "Pod", "namespace": "shop", "name": "cart-1", "uid": "p1", "field_path": "spec.containers{cart}"},
        "related": {"kind": "Node", "name": "n-7"}, "host": "n-7", "reporting_controller": "kubelet",
        "reporting_instance": "kubelet-n-7",
        "count": 12, "first_timestamp": "2026-03-02T08:00:02Z", "last_timestamp": "2026-03-02T08:05:31Z", "event_time": "2026-03-02T08:00:02.123456Z",
        "series": {"count": 3, "last_observed": "2026-03-02T08:05:32Z"}, "timestamp": "2026-03-02T08:05:32Z",
        "severity": "error", "category": "lifecycle", "correlation_id": "inc-1",
        "labels": {"a": "1", "team": "x"},
        "enrichment": {"owners": [{"kind": "ReplicaSet", "name": "cart-7d"}, {"kind": "Deployment", "name": "cart"}], "node": "n-7", "labels": {"app": "cart"}},
        "aggregation": {"key": "k", "count": 2, "events": 1, "samples": ["m"]}
    }))
    .unwrap();
    // And a bare one: every optional field absent.
    let bare = event(4, "", "Twice", "");
    let (out, dead) = run(
        &mut t,
        vec![
            event(1, "shop", "Reject", "m"),
            twice.clone(),
            event(3, "shop", "BackOff", "m"),
            bare.clone(),
        ],
    );
    let uids: Vec<_> = out.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(uids, ["uid-2", "uid-2", "uid-3", "uid-4", "uid-4"]);
    assert_eq!(out[0], twice);
    assert_eq!(out[1], twice);
    assert_eq!(out[3], bare);
    assert_eq!(out[4], bare);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        label(&dead[0], DEAD_LETTER_REASON),
        Some("rejected by the test plugin")
    );
}

#[test]
fn a_batch_level_error_is_narrowed_to_its_event() {
    let (mut t, _) = must_build("hostile", "on_error = \"drop\"");
    let mut events: Vec<Event> = (0..32).map(|i| event(i, "shop", "BackOff", "m")).collect();
    events[5].message = "ERROR".into();
    let (out, _) = run(&mut t, events);
    assert_eq!(out.len(), 31);
    assert!(out.iter().all(|e| e.uid != "uid-5"));
}

#[test]
fn on_error_fail_reports_a_fatal_error() {
    let (mut t, _) = must_build("hostile", "on_error = \"fail\"");
    run(&mut t, vec![event(7, "shop", "Poison", "m")]);
    let fatal = t.take_fatal().expect("fatal");
    assert!(
        fatal.contains("uid-7") && fatal.contains("trapped"),
        "{fatal}"
    );
}

#[test]
fn parallel_instances_keep_the_order() {
    let (mut t, metrics) = must_build(
        "team_router",
        "instances = 3\nbatch_size = 16\nconfig = { default_team = \"x\" }",
    );
    let events: Vec<Event> = (0..1000)
        .map(|i| event(i, "shop", "BackOff", "m"))
        .collect();
    let (out, _) = run(&mut t, events);
    let uids: Vec<String> = out.iter().map(|e| e.uid.to_string()).collect();
    let expected: Vec<String> = (0..1000).map(|i| format!("uid-{i}")).collect();
    assert_eq!(uids, expected);
    assert!(out.iter().all(|e| label(e, "team") == Some("x")));
    assert_eq!(plugin_metrics(&metrics).calls.load(Ordering::Relaxed), 63);
}

#[test]
fn the_final_tick_emits_what_the_plugin_holds() {
    let (mut t, _) = must_build("hostile", "");
    run(
        &mut t,
        (0..5).map(|i| event(i, "shop", "BackOff", "m")).collect(),
    );
    let mut out = Vec::new();
    assert!(!t.flush(&mut out));
    let seen: Vec<&Event> = out.iter().flat_map(|b| &b.events).collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].reason, "Seen");
    assert_eq!(seen[0].count, 5);
}

#[test]
fn bad_plugins_are_refused_at_start_up_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = build("future_version", "", dir.path()).err().unwrap();
    assert!(
        err.contains("future_version.wasm")
            && err.contains("kollate:plugin/transform@0.2.0")
            && err.contains("kollate:plugin/transform@0.1.0"),
        "{err}"
    );
    let err = build("hostile", "config = { refuse = true }", dir.path())
        .err()
        .unwrap();
    assert!(err.contains("refusing on purpose"), "{err}");
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "not wasm").unwrap();
    let config: WasmTransformConfig =
        toml::from_str(&format!("path = {:?}", text.display().to_string())).unwrap();
    let err = config
        .build("plugin", Arc::new(ComponentMetrics::default()), dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("text.wasm") && err.contains("not a WebAssembly component"),
        "{err}"
    );
}

#[test]
fn compiled_plugins_are_cached_and_a_corrupted_cache_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = wasm::load(&plugin("identity"), Some(&cache)).unwrap();
    assert!(!first.from_cache);
    let second = wasm::load(&plugin("identity"), Some(&cache)).unwrap();
    assert!(second.from_cache);
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = wasm::load(&plugin("identity"), Some(&cache)).unwrap();
    assert!(!third.from_cache, "a corrupted entry is not loaded");
}
