//! Unit tests of the transform: snapshots, bounds, the reorder and hold buffers, counts.

use super::*;
use crate::event::{ObjectRef, Severity, parse_time};

fn backoff(uid: &str, pod: &str, at: &str) -> Event {
    Event {
        uid: uid.into(),
        namespace: "shop".into(),
        event_type: "Warning".into(),
        reason: "BackOff".into(),
        message: "Back-off restarting failed container".into(),
        object: ObjectRef {
            kind: "Pod".into(),
            namespace: "shop".into(),
            name: pod.into(),
            ..ObjectRef::default()
        },
        count: 1,
        severity: Some(Severity::Error),
        timestamp: parse_time(at),
        ..Event::default()
    }
}

/// A config that correlates in arrival order and lets events go at once.
fn immediate(extra: &str) -> CorrelateTransformConfig {
    let json = format!(r#"{{"reorder_window": "0s", "hold": "0s" {extra}}}"#);
    serde_json::from_str(&json).unwrap()
}

fn run(t: &mut CorrelateTransform, events: Vec<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    t.process(Batch::new(events), &mut out);
    out.into_iter().flat_map(|b| b.events).collect()
}

fn flush(t: &mut CorrelateTransform) -> Vec<Event> {
    let mut out = Vec::new();
    t.flush(&mut out);
    out.into_iter().flat_map(|b| b.events).collect()
}

#[test]
fn a_restart_continues_the_same_incident_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/correlate.json");
    let config = immediate("");
    let mut first = config.build(Some(path.clone()), Arc::default());
    let out = run(
        &mut first,
        vec![
            backoff("a", "cart-7d9f8b6c5-x2x9z", "2026-01-01T10:00:00Z"),
            backoff("b", "cart-7d9f8b6c5-x2x9z", "2026-01-01T10:01:00Z"),
        ],
    );
    let opened = out
        .iter()
        .find(|e| e.reason == "IncidentOpened")
        .expect("reported");
    let id = opened.correlation_id.clone().unwrap();
    flush(&mut first);
    assert!(path.exists(), "state saved at shutdown");

    let mut second = config.build(Some(path), Arc::default());
    // Another pod of the same deployment, five minutes later: the same incident.
    let out = run(
        &mut second,
        vec![backoff("c", "cart-7d9f8b6c5-k8k8k", "2026-01-01T10:05:00Z")],
    );
    let c = out.iter().find(|e| e.uid == "c").unwrap();
    assert_eq!(c.correlation_id.as_ref(), Some(&id));
    // An hour of silence later: resolved, and a new failure is a new incident.
    let out = run(
        &mut second,
        vec![
            backoff("d", "cart-7d9f8b6c5-k8k8k", "2026-01-01T11:30:00Z"),
            backoff("e", "cart-7d9f8b6c5-k8k8k", "2026-01-01T11:31:00Z"),
        ],
    );
    assert!(
        out.iter()
            .any(|e| e.reason == "IncidentResolved" && e.correlation_id.as_ref() == Some(&id)),
        "{out:#?}"
    );
    let newest = out.iter().find(|e| e.uid == "e").unwrap();
    assert!(newest.correlation_id.is_some());
    assert_ne!(newest.correlation_id.as_ref(), Some(&id));
}

#[test]
fn open_incidents_stay_bounded() {
    let mut t = immediate(r#", "max_open_incidents": 3"#).build(None, Arc::default());
    let events = (0..20)
        .map(|i| {
            backoff(
                &format!("u{i}"),
                &format!("app{i}-7d9f8b6c5-x2x9z"),
                "2026-01-01T10:00:00Z",
            )
        })
        .collect();
    run(&mut t, events);
    assert!(t.engines.values().all(|e| e.incidents.len() <= 3));
}

#[test]
fn events_arriving_out_of_order_are_correlated_in_event_time_order() {
    // Held until flush (no wall-clock time passes in the test): the whole input is sorted.
    let mut t = CorrelateTransformConfig::default().build(None, Arc::default());
    let mut events = vec![
        backoff("b", "cart-7d9f8b6c5-x2x9z", "2026-01-01T10:01:00Z"),
        backoff("a", "cart-7d9f8b6c5-x2x9z", "2026-01-01T10:00:00Z"),
    ];
    events[0].count = 3;
    assert!(run(&mut t, events).is_empty(), "held");
    let out = flush(&mut t);
    let records: Vec<&Event> = out.iter().filter(|e| e.incident.is_some()).collect();
    let last = records.last().unwrap().incident.as_ref().unwrap();
    assert_eq!(
        last.first_seen,
        parse_time("2026-01-01T10:00:00Z"),
        "{records:#?}"
    );
    // Every event of a reported incident leaves stamped, in event-time order.
    let members: Vec<&str> = out
        .iter()
        .filter(|e| e.incident.is_none())
        .map(|e| e.uid.as_str())
        .collect();
    assert_eq!(members, ["a", "b"]);
    assert!(
        out.iter()
            .filter(|e| e.incident.is_none())
            .all(|e| e.correlation_id.as_deref() == Some(last.id.as_str()))
    );
}

#[test]
fn repeats_of_one_event_count_once_as_a_member_and_add_only_their_new_occurrences() {
    let mut t = immediate("").build(None, Arc::default());
    let mut events = Vec::new();
    for (count, at) in [(1, "10:00:00"), (2, "10:00:40"), (5, "10:03:00")] {
        let mut e = backoff("same", "cart-7d9f8b6c5-x2x9z", &format!("2026-01-01T{at}Z"));
        e.count = count;
        e.first_timestamp = parse_time("2026-01-01T10:00:00Z");
        events.push(e);
    }
    let mut out = run(&mut t, events);
    out.extend(flush(&mut t));
    let incident = out
        .iter()
        .rev()
        .find_map(|e| e.incident.as_ref())
        .expect("reported");
    assert_eq!(incident.members, 1);
    assert_eq!(incident.reasons["BackOff"], 5);
}

#[test]
fn events_of_incidents_never_reported_carry_no_correlation_id() {
    let mut t = immediate("").build(None, Arc::default());
    let mut out = run(
        &mut t,
        vec![backoff(
            "once",
            "cart-7d9f8b6c5-x2x9z",
            "2026-01-01T10:00:00Z",
        )],
    );
    out.extend(flush(&mut t));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].correlation_id, None);
}

#[test]
fn the_same_names_in_two_clusters_are_two_incidents() {
    let mut t = immediate("").build(None, Arc::default());
    let mut events = Vec::new();
    for (uid, at, cluster) in [
        ("a1", "10:00:00", "east"),
        ("b1", "10:00:05", "west"),
        ("a2", "10:01:00", "east"),
        ("b2", "10:01:05", "west"),
    ] {
        let mut e = backoff(uid, "cart-7d9f8b6c5-x2x9z", &format!("2026-01-01T{at}Z"));
        e.labels.insert("cluster".into(), cluster.into());
        events.push(e);
    }
    let mut out = run(&mut t, events);
    out.extend(flush(&mut t));
    let id = |uid: &str| {
        out.iter()
            .find(|e| e.uid == uid)
            .and_then(|e| e.correlation_id.clone())
            .expect("stamped")
    };
    assert_eq!(id("a1"), id("a2"));
    assert_eq!(id("b1"), id("b2"));
    assert_ne!(id("a1"), id("b1"), "one incident per cluster");
}
