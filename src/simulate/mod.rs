//! A Kubernetes incident-stream simulator with ground truth, and a scorer for correlators.
//!
//! Judging a correlation engine needs streams whose right answer is known, and those
//! streams must look like what a watch on a real cluster delivers, or the score measures the
//! engine against its author's assumptions. So this module is an independent model of how
//! Kubernetes writes Events, built from the real dumps in `shared/data/events` and the
//! recorders' code, not from any engine: a 12-node cluster with ~480 pods doing routine work
//! (rollouts, CronJobs, HPA scaling, cert renewals, benign start-up warnings) and, overlapping
//! in time, incidents picked and varied by the seed: crash-looping rollouts, volumes that never
//! attach, lost nodes, image typos, OOM kills, missing Secrets, plain crash loops, capacity
//! shortages the autoscaler fixes, DNS outages, expired webhook certificates, drains blocked by
//! PodDisruptionBudgets, failed Jobs and exhausted quotas.
//!
//! `world` is the cluster, its pods' lifecycles and its routine noise; `scenarios` the
//! incidents and the plan of a window; `cluster` turns what components report into written
//! Event objects the way client-go's recorders and the API server do (updates of one object,
//! spam filter, aggregation, series, asynchronous writes, exporter jitter); [`score`] compares
//! an engine's grouping and root causes with the truth recorded at generation time.

mod catalogue;
mod cluster;
mod scenarios;
mod score;
mod world;

use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use score::{Bcubed, Score, score};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Random seed: the same options give the same bytes.
    pub seed: u64,
    /// Worker nodes at the start (the autoscaler may add more).
    pub nodes: u32,
    /// Pods running before the window opens, DaemonSet pods included.
    pub healthy_pods: u32,
    /// Length of the recorded window.
    pub duration: Duration,
    /// Largest extra delay between a write and its line reaching the exporter.
    pub jitter: Duration,
    /// Start of the window.
    pub start: DateTime<Utc>,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            seed: 1,
            nodes: 12,
            healthy_pods: 480,
            duration: Duration::hours(2),
            jitter: Duration::zero(),
            start: DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
                .expect("valid")
                .with_timezone(&Utc),
        }
    }
}

/// What an event is to its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An acceptable answer to "what caused this".
    RootCause,
    /// A failure signal the cause produced.
    Symptom,
    /// The story around it: the change, progress of failing pods, replacements, recovery.
    /// Also the role of every noise event.
    Context,
}

/// The truth about one Event object (all its updates share it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// `metadata.uid` of the Event object.
    pub uid: String,
    /// The incident label; `None` for routine cluster activity.
    pub incident: Option<String>,
    /// The event's part in its incident.
    pub role: Role,
}

/// One incident that really happened in the simulated window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrueIncident {
    /// Unique label, `<kind>-<n>`.
    pub label: String,
    /// What kind of incident, e.g. `node-lost`.
    pub kind: String,
    /// Event uids any of which is a correct root cause.
    pub accepted_root_causes: Vec<String>,
}

/// A simulated stream and its ground truth.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// One Event object JSON per line, in arrival order, as a watch-based exporter writes it.
    pub lines: Vec<String>,
    /// One entry per Event uid in `lines`.
    pub truth: Vec<Truth>,
    /// The incidents with at least one event in `lines`.
    pub incidents: Vec<TrueIncident>,
}

/// Every incident kind the simulator can produce.
pub const KINDS: &[&str] = &[
    "crashloop-rollout",
    "volume-attach",
    "node-lost",
    "image-typo",
    "oom-kill",
    "missing-secret",
    "crash-loop",
    "unschedulable-autoscale",
    "dns-failure",
    "cert-expired",
    "drain-blocked",
    "job-failed",
    "quota-exceeded",
];

/// Simulates `opts.duration` of a cluster's Event stream.
pub fn simulate(opts: &SimulateOptions) -> Simulation {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let world = scenarios::run(opts, &mut rng);
    let end = opts.start + opts.duration;
    let rv_base = world.rv_base;
    let start = opts.start;
    let rv_at = move |t: DateTime<Utc>| rv_base + (t - start).num_seconds().max(0) as u64 * 40;
    let rec = cluster::record(world.occs, end, opts.jitter, rv_at, &mut rng);
    let label = |i: u16| world.labels[i as usize].0.clone();
    let truth: Vec<Truth> = rec
        .objects
        .iter()
        .map(|(uid, tag)| Truth {
            uid: uid.clone(),
            incident: tag.inc.map(label),
            role: tag.role,
        })
        .collect();
    let incidents = world
        .labels
        .iter()
        .enumerate()
        .filter_map(|(i, (label, kind))| {
            let mine = || rec.objects.iter().filter(|(_, t)| t.inc == Some(i as u16));
            mine().next()?;
            Some(TrueIncident {
                label: label.clone(),
                kind: (*kind).into(),
                accepted_root_causes: mine()
                    .filter(|(_, t)| t.accept || t.role == Role::RootCause)
                    .map(|(uid, _)| uid.clone())
                    .collect(),
            })
        })
        .collect();
    Simulation {
        lines: rec.lines,
        truth,
        incidents,
    }
}

/// Writes `events.jsonl`, `truth.jsonl` and `incidents.jsonl` into `dir` (created if needed).
///
/// # Errors
/// File system errors.
pub fn write(sim: &Simulation, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut events = io::BufWriter::new(std::fs::File::create(dir.join("events.jsonl"))?);
    for line in &sim.lines {
        writeln!(events, "{line}")?;
    }
    events.flush()?;
    fn jsonl<T: Serialize>(path: &Path, items: &[T]) -> io::Result<()> {
        let mut out = io::BufWriter::new(std::fs::File::create(path)?);
        for item in items {
            serde_json::to_writer(&mut out, item)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
    jsonl(&dir.join("truth.jsonl"), &sim.truth)?;
    jsonl(&dir.join("incidents.jsonl"), &sim.incidents)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn sim(seed: u64, jitter: i64) -> Simulation {
        let jitter = Duration::seconds(jitter);
        simulate(&SimulateOptions {
            seed,
            jitter,
            ..SimulateOptions::default()
        })
    }

    fn uid_and_rv(line: &str) -> (String, u64) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        (v["metadata"]["uid"].as_str().unwrap().to_string(), rv)
    }

    #[test]
    fn same_seed_same_lines_every_line_decodes_and_has_truth() {
        let a = sim(3, 0);
        assert_eq!(a.lines, sim(3, 0).lines);
        assert_ne!(a.lines, sim(4, 0).lines);
        let truth: HashSet<&str> = a.truth.iter().map(|t| t.uid.as_str()).collect();
        assert_eq!(truth.len(), a.truth.len(), "one truth per uid");
        let (mut counts, mut last, mut inversions) = (HashMap::new(), None, 0);
        for line in &a.lines {
            let e = crate::event::decode_json(line.as_bytes()).expect(line);
            let (uid, _) = uid_and_rv(line);
            assert!(truth.contains(uid.as_str()), "no truth for {line}");
            // Updates of one Event object arrive in order: counts never go back.
            let prev = counts.insert(uid, e.occurrences()).unwrap_or(0);
            assert!(e.occurrences() >= prev, "{line}");
            // Components write asynchronously: a little out of time order, never much (but
            // a scheduler series is only written when it is refreshed or finished).
            if let (Some(l), Some(t), None) = (last, e.timestamp, &e.series) {
                assert!(l - t < Duration::seconds(10), "{line}");
                inversions += usize::from(t < l);
            }
            last = last.max(e.timestamp);
        }
        assert_eq!(counts.len(), a.truth.len(), "truth only for streamed uids");
        assert!(
            inversions > 0 && a.lines.len() > 2_000,
            "{inversions} {}",
            a.lines.len()
        );
    }

    #[test]
    fn jitter_keeps_each_objects_updates_in_order() {
        let mut rv: HashMap<String, u64> = HashMap::new();
        for line in &sim(5, 30).lines {
            let (uid, this) = uid_and_rv(line);
            assert!(rv.insert(uid, this).is_none_or(|p| p < this), "{line}");
        }
    }

    #[test]
    fn every_kind_appears_across_a_few_seeds_with_root_causes() {
        let mut kinds = HashSet::new();
        for seed in 0..6 {
            for i in sim(seed, 0).incidents {
                assert!(!i.accepted_root_causes.is_empty(), "{}", i.label);
                kinds.insert(i.kind);
            }
        }
        for k in KINDS {
            assert!(kinds.contains(*k), "{k} never appears");
        }
    }

    #[test]
    fn recorder_behaviour_shows_and_the_truth_scores_perfectly() {
        let s = sim(2, 0);
        let all = s.lines.join("\n");
        assert!(all.contains("\"apiVersion\":\"events.k8s.io/v1\""));
        assert!(all.contains("\"series\":{\"count\":2"));
        assert!(all.contains("(combined from similar events): "));
        assert!(!all.contains("deprecatedFirstTimestamp"));
        // The spam filter drops writes, not counts: some update skips counts.
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut skipped = false;
        for line in &s.lines {
            let n = crate::event::decode_json(line.as_bytes())
                .unwrap()
                .occurrences();
            skipped |= counts
                .insert(uid_and_rv(line).0, n)
                .is_some_and(|p| n > p + 1);
        }
        assert!(skipped);
        let label = |t: &Truth| Some((t.uid.clone(), t.incident.clone()?));
        let predicted: HashMap<String, String> = s.truth.iter().filter_map(label).collect();
        let root = |i: &TrueIncident| (i.label.clone(), i.accepted_root_causes[0].clone());
        let roots: HashMap<String, String> = s.incidents.iter().map(root).collect();
        let score = score(
            &s.truth,
            &s.incidents,
            &predicted,
            &roots,
            s.incidents.len(),
        );
        assert_eq!((score.signals.f1, score.with_context.f1), (1.0, 1.0));
        assert_eq!(
            (score.root_cause_top1, score.false_incident_rate),
            (1.0, 0.0)
        );
    }
}
