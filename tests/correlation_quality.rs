//! Correlation quality on simulated clusters whose ground truth was written when they were
//! generated (`kollate::simulate`: an independent model of how Kubernetes writes Events,
//! not of how the engine reads them).
//!
//! Each stream is decoded line by line in arrival order, exactly as the file source reads a
//! JSON Lines file, then classified and correlated through `kollate::incidents::analyse`,
//! the code path `kollate incidents` and the pipeline share. Scores: B-cubed precision,
//! recall and F1 over the events of the true incidents (failure signals only, and with their
//! context), root cause top-1, incidents reported against true ones.
//!
//! The engine was tuned on seeds 1-4; the assertions run on seeds it was not tuned on.
//! `cargo test --test correlation_quality -- --nocapture` prints the table in the README.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;

use kollate::event::Event;
use kollate::format::{Decoded, Limits, Reader};
use kollate::incidents::analyse;
use kollate::simulate::{Score, SimulateOptions, Simulation, score, simulate};
use kollate::transforms::correlate::CorrelateTransformConfig;

const LIMITS: Limits = Limits {
    max_document_bytes: 1 << 20,
    max_message_bytes: 64 << 10,
};

/// The stream's events in arrival order.
fn decode(sim: &Simulation) -> Vec<Event> {
    let text = sim.lines.join("\n") + "\n";
    let mut reader = Reader::new(Cursor::new(text.into_bytes()), LIMITS);
    let mut events = Vec::new();
    let mut take = |d: Decoded| {
        if let Decoded::Event(e, _) = d {
            events.push(e);
        }
    };
    reader.read_to_end(&mut take).expect("in memory");
    assert_eq!(events.len(), sim.lines.len(), "every line decodes");
    events
}

/// What the engine made of a stream: each event's incident, each incident's root cause,
/// and each incident's members (for comparing two runs).
struct Outcome {
    score: Score,
    incidents: BTreeSet<(String, BTreeSet<String>)>,
}

fn evaluate(sim: &Simulation) -> Outcome {
    let analysis = analyse(decode(sim), &CorrelateTransformConfig::default());
    let mut predicted: HashMap<String, String> = HashMap::new();
    for e in &analysis.events {
        if let Some(id) = &e.correlation_id {
            predicted.insert(e.uid.to_string(), id.to_string());
        }
    }
    let root_causes: HashMap<String, String> = analysis
        .incidents
        .iter()
        .filter_map(|i| {
            let root = i.root_cause.as_ref()?;
            Some((i.id.to_string(), root.uid.to_string()))
        })
        .collect();
    let mut members: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for (uid, id) in &predicted {
        members.entry(id.as_str()).or_default().insert(uid.clone());
    }
    let incidents = analysis
        .incidents
        .iter()
        .map(|i| {
            let root = i.root_cause.as_ref().map(|r| r.uid.to_string());
            (
                root.unwrap_or_default(),
                members.get(i.id.as_str()).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let score = score(
        &sim.truth,
        &sim.incidents,
        &predicted,
        &root_causes,
        analysis.incidents.len(),
    );
    Outcome { score, incidents }
}

fn stream(seed: u64, jitter_secs: i64) -> Simulation {
    simulate(&SimulateOptions {
        seed,
        jitter: chrono::Duration::seconds(jitter_secs),
        ..SimulateOptions::default()
    })
}

fn table(rows: &[(u64, Score)]) -> String {
    let mut out = format!("| seed {}\n", Score::header().trim_start_matches('|'));
    for (seed, s) in rows {
        out.push_str(&format!("| {seed} {s}\n"));
    }
    out
}

#[test]
fn incidents_on_seeds_it_was_not_tuned_on_meet_the_quality_bar() {
    let rows: Vec<(u64, Score)> = [101, 102, 103, 104]
        .into_iter()
        .map(|seed| (seed, evaluate(&stream(seed, 0)).score))
        .collect();
    eprintln!("{}", table(&rows));
    // Floors under what the engine reaches on these seeds (README: the table and the
    // issue's targets, 0.95 / 0.85 / 0.95, which root causes and context still miss).
    for (seed, s) in &rows {
        assert!(s.signals.precision >= 0.90, "seed {seed}: {s}");
        assert!(s.signals.f1 >= 0.85, "seed {seed}: {s}");
        assert!(s.with_context.f1 >= 0.70, "seed {seed}: {s}");
        assert!(s.root_cause_top1 >= 0.40, "seed {seed}: {s}");
        assert!(
            s.reported <= s.true_incidents * 2,
            "seed {seed}: {} incidents for {} true ones",
            s.reported,
            s.true_incidents
        );
    }
}

#[test]
fn thirty_seconds_of_arrival_jitter_changes_no_incident() {
    for seed in [105, 106] {
        let calm = evaluate(&stream(seed, 0));
        let jittered = evaluate(&stream(seed, 30));
        assert_eq!(
            calm.incidents, jittered.incidents,
            "seed {seed}: the same events arriving up to 30 s apart give other incidents"
        );
    }
}

/// Where each true incident went, for tuning on seeds 1-4 (`KOLLATE_SEEDS=1,2 cargo test
/// --test correlation_quality explain -- --ignored --nocapture`).
#[test]
#[ignore = "a diagnostic, not a check"]
fn explain() {
    // KOLLATE_LOG=kollate=debug shows each merge and the event that caused it.
    if let Ok(filter) = std::env::var("KOLLATE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let seeds = std::env::var("KOLLATE_SEEDS").unwrap_or_else(|_| "1,2,3,4".into());
    for seed in seeds.split(',').filter_map(|s| s.trim().parse().ok()) {
        let sim = stream(seed, 0);
        let analysis = analyse(decode(&sim), &CorrelateTransformConfig::default());
        let by_uid: HashMap<&str, &Event> = analysis
            .events
            .iter()
            .map(|e| (e.uid.as_str(), e))
            .collect();
        eprintln!("=== seed {seed}: {}", evaluate(&sim).score);
        for inc in &sim.incidents {
            eprintln!("--- {} ({}): accepted roots {:?}", inc.label, inc.kind, {
                inc.accepted_root_causes
                    .iter()
                    .filter_map(|u| by_uid.get(u.as_str()))
                    .map(|e| format!("{} {}/{}", e.reason, e.object.kind, e.object.name))
                    .collect::<Vec<_>>()
            });
            let mut places: HashMap<String, Vec<String>> = HashMap::new();
            for t in sim
                .truth
                .iter()
                .filter(|t| t.incident.as_deref() == Some(&inc.label))
            {
                let Some(e) = by_uid.get(t.uid.as_str()) else {
                    continue;
                };
                let id = e.correlation_id.as_deref().unwrap_or("-").to_owned();
                places.entry(id).or_default().push(format!(
                    "{:?}:{} {}/{}",
                    t.role, e.reason, e.object.kind, e.object.name
                ));
            }
            for (id, members) in places {
                let summary = analysis
                    .incidents
                    .iter()
                    .find(|i| i.id == id)
                    .map(|i| {
                        let root = i.root_cause.as_ref().map(|r| {
                            format!(
                                "{} {}/{} ({})",
                                r.reason, r.object.kind, r.object.name, r.rule
                            )
                        });
                        format!("{} | root {root:?}", i.summary)
                    })
                    .unwrap_or_default();
                eprintln!("  {id} [{}] {summary}", members.len());
                for m in members.iter().take(12) {
                    eprintln!("      {m}");
                }
            }
        }
        for i in &analysis.incidents {
            let truths: BTreeSet<&str> = analysis
                .events
                .iter()
                .filter(|e| e.correlation_id.as_deref() == Some(i.id.as_str()))
                .filter_map(|e| sim.truth.iter().find(|t| t.uid == e.uid.as_str()))
                .map(|t| t.incident.as_deref().unwrap_or("noise"))
                .collect();
            eprintln!("predicted {} {} <- {truths:?}", i.id, i.summary);
            if truths.len() > 2 {
                for e in analysis
                    .events
                    .iter()
                    .filter(|e| e.correlation_id.as_deref() == Some(i.id.as_str()))
                    .filter(|e| e.event_type == "Warning")
                    .take(40)
                {
                    let truth = sim.truth.iter().find(|t| t.uid == e.uid.as_str());
                    eprintln!(
                        "    {:?} {} {}/{} {:?} | {}",
                        e.timestamp,
                        e.reason,
                        e.object.kind,
                        e.object.name,
                        truth.and_then(|t| t.incident.as_deref()),
                        e.message.chars().take(70).collect::<String>()
                    );
                }
            }
        }
    }
}
