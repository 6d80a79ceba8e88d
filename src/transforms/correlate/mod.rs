//! The `correlate` transform: related trouble becomes one incident with a probable root
//! cause, the change that triggered it, and the story around it.
//!
//! Events pass through two bounded holds:
//!
//! 1. **Reorder**: arrival order is not event order (the API server's writes are
//!    asynchronous, a Kafka backlog interleaves partitions, a dump is sorted by name). Events
//!    wait up to `reorder_window` (wall clock, at most `max_reorder_events`) and are
//!    correlated in event-time order (first occurrence; a Node's events before its pods' in
//!    the same instant), so a jittered stream gives the same incidents, and a replay of a
//!    file is sorted before it is correlated, as `kollate incidents` does.
//! 2. **Hold**: correlated events wait up to `hold` (at most `max_held_events`) before they
//!    leave, so membership found later (an incident that opens a minute after the rollout
//!    that caused it, two incidents merged) is stamped on them as `correlation_id`.
//!    Incident records leave at once.
//!
//! The engine ([`engine`]) links events by evidence (same object, workload, node, claim,
//! simultaneity), keeps a bounded history ([`history`]) for context, ranks root causes by
//! causal rules ([`rules`]), learns ownership and placement from the events
//! ([`ownership`]), and phrases the summary ([`summary`]).
//!
//! An incident is **reported** (an incident record with status `opened`) once it is more than
//! a blip: `min_occurrences` occurrences over at least `min_duration`, or anything critical;
//! readiness failures alone only when they persist. Records follow with status `updated` (at
//! most every `update_interval` of event time, or when the severity rises) and `resolved`
//! once nothing joined for `resolve_after` (event time, or wall-clock time when the input
//! goes quiet). Records are events with reason `IncidentOpened`/`IncidentUpdated`/
//! `IncidentResolved`, the summary as message and the full [`crate::event::Incident`] in
//! `incident`. Only members of reported incidents carry a `correlation_id`.
//!
//! State is bounded (`max_open_incidents`: the stalest is resolved early;
//! `max_tracked_objects`: LRUs; the history by [`history::HISTORY_KEYS`] and
//! [`history::HISTORY_PER_KEY`]) and saved to `<data_dir>/state/<name>.json` every 30 s and
//! at shutdown, so a restart continues the same incidents.

mod engine;
mod history;
mod ownership;
pub mod rules;
mod snapshot;
mod summary;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::batch::{Batch, BatchNotifier, push_notifier};
use crate::config::DurationValue;
use crate::event::{Event, Str, Timestamp};
use crate::metrics::ComponentMetrics;
use crate::topology::Transform;
use engine::{Engine, Settings, span};

pub use rules::{CausalRule, Scope, builtin_rules};

/// Default bound on the time between linked events.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Default quiet time after which an incident is resolved: longer than the 1,000 s a
/// Kubernetes controller waits at most between retries (a ReplicaSet refused by a quota
/// fails again every 16 minutes and 40 seconds).
pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(1200);
/// Default minimum event time between `updated` records of one incident.
pub const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on open incidents.
pub const DEFAULT_MAX_OPEN_INCIDENTS: usize = 10_000;
/// Default bound on tracked objects (and event identities, owner links).
pub const DEFAULT_MAX_TRACKED_OBJECTS: usize = 100_000;
/// Default occurrences before an incident is reported.
pub const DEFAULT_MIN_OCCURRENCES: u64 = 2;
/// Default span before an incident is reported.
pub const DEFAULT_MIN_DURATION: Duration = Duration::from_secs(30);
/// Default wait for late events before correlating.
pub const DEFAULT_REORDER_WINDOW: Duration = Duration::from_secs(30);
/// Default bound on events waiting to be ordered.
pub const DEFAULT_MAX_REORDER_EVENTS: usize = 5_000;
/// Default hold of correlated events before they leave.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);
/// Default bound on correlated events held.
pub const DEFAULT_MAX_HELD_EVENTS: usize = 10_000;
/// Default label whose value names the cluster an event comes from.
pub const DEFAULT_CLUSTER_LABEL: &str = "cluster";
/// Clusters correlated apart; events of further ones share the unnamed cluster's engine.
pub const MAX_CLUSTERS: usize = 1_000;
/// How often wall-clock release, resolution and snapshots run.
const TICK: Duration = Duration::from_secs(5);
/// How often the state is saved.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

fn default_window() -> DurationValue {
    DurationValue(DEFAULT_WINDOW)
}
fn default_resolve_after() -> DurationValue {
    DurationValue(DEFAULT_RESOLVE_AFTER)
}
fn default_update_interval() -> DurationValue {
    DurationValue(DEFAULT_UPDATE_INTERVAL)
}
fn default_max_open_incidents() -> usize {
    DEFAULT_MAX_OPEN_INCIDENTS
}
fn default_max_tracked_objects() -> usize {
    DEFAULT_MAX_TRACKED_OBJECTS
}
fn default_min_occurrences() -> u64 {
    DEFAULT_MIN_OCCURRENCES
}
fn default_min_duration() -> DurationValue {
    DurationValue(DEFAULT_MIN_DURATION)
}
fn default_reorder_window() -> DurationValue {
    DurationValue(DEFAULT_REORDER_WINDOW)
}
fn default_max_reorder_events() -> usize {
    DEFAULT_MAX_REORDER_EVENTS
}
fn default_hold() -> DurationValue {
    DurationValue(DEFAULT_HOLD)
}
fn default_max_held_events() -> usize {
    DEFAULT_MAX_HELD_EVENTS
}
fn yes() -> bool {
    true
}
fn default_cluster_label() -> String {
    DEFAULT_CLUSTER_LABEL.to_owned()
}

/// `type = "correlate"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateTransformConfig {
    /// Longest time between two linked events (default 10m).
    #[serde(default = "default_window")]
    pub window: DurationValue,
    /// An incident nothing joined for this long is resolved (default 20m).
    #[serde(default = "default_resolve_after")]
    pub resolve_after: DurationValue,
    /// Least event time between two `updated` records of an incident (default 1m).
    #[serde(default = "default_update_interval")]
    pub update_interval: DurationValue,
    /// Occurrences an incident needs before it is reported (default 2).
    #[serde(default = "default_min_occurrences")]
    pub min_occurrences: u64,
    /// Span an incident needs before it is reported (default 30s); critical trouble is
    /// reported at once.
    #[serde(default = "default_min_duration")]
    pub min_duration: DurationValue,
    /// Bound on open incidents (default 10,000).
    #[serde(default = "default_max_open_incidents")]
    pub max_open_incidents: usize,
    /// Bound on objects, event identities and owner links tracked (default 100,000 each).
    #[serde(default = "default_max_tracked_objects")]
    pub max_tracked_objects: usize,
    /// How long events wait (wall clock) for late ones before they are correlated in
    /// event-time order (default 30s; 0s correlates in arrival order).
    #[serde(default = "default_reorder_window")]
    pub reorder_window: DurationValue,
    /// Bound on events waiting to be ordered (default 5,000): beyond it the earliest go
    /// on at once.
    #[serde(default = "default_max_reorder_events")]
    pub max_reorder_events: usize,
    /// How long correlated events are held (wall clock) before they leave, so that an
    /// incident opening later still stamps them (default 30s; 0s sends them on at once).
    #[serde(default = "default_hold")]
    pub hold: DurationValue,
    /// Bound on correlated events held (default 10,000): beyond it the oldest leave.
    #[serde(default = "default_max_held_events")]
    pub max_held_events: usize,
    /// Use kollate's built-in causal rules (default true); `rules` come first either way.
    #[serde(default = "yes")]
    pub builtin_rules: bool,
    /// Extra causal rules.
    #[serde(default)]
    pub rules: Vec<CausalRule>,
    /// Save state to the data directory and continue from it after a restart (default true).
    #[serde(default = "yes")]
    pub snapshot: bool,
    /// The label naming the cluster an event comes from (default `cluster`, as the
    /// scale-out agents set it): names repeat across clusters and incidents never span two,
    /// so each cluster is correlated apart.
    #[serde(default = "default_cluster_label")]
    pub cluster_label: String,
}

impl Default for CorrelateTransformConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl CorrelateTransformConfig {
    /// Builds the transform; `state` is where its snapshot lives (none: no snapshot).
    pub fn build(
        &self,
        state: Option<PathBuf>,
        metrics: Arc<ComponentMetrics>,
    ) -> CorrelateTransform {
        let mut rules = self.rules.clone();
        if self.builtin_rules {
            rules.extend(builtin_rules());
        }
        let chrono =
            |d: &DurationValue| chrono::Duration::from_std(d.0).unwrap_or(chrono::Duration::MAX);
        let settings = Settings {
            window: chrono(&self.window),
            resolve_after: chrono(&self.resolve_after),
            resolve_after_wall: self.resolve_after.0,
            update_interval: chrono(&self.update_interval),
            min_occurrences: self.min_occurrences.max(1),
            min_duration: chrono(&self.min_duration),
            max_open: self.max_open_incidents.max(1),
            max_tracked: NonZeroUsize::new(self.max_tracked_objects.max(1)).expect("non-zero"),
            rules,
        };
        let path = state.filter(|_| self.snapshot);
        let mut engines = BTreeMap::new();
        for (cluster, saved) in path.as_deref().map(snapshot::load).unwrap_or_default() {
            let mut engine = Engine::new(settings.clone());
            engine.restore(saved);
            engines.insert(cluster, engine);
        }
        let max_held = self.max_reorder_events.max(1) + self.max_held_events.max(1);
        metrics
            .buffer_max_events
            .store(max_held as u64, std::sync::atomic::Ordering::Relaxed);
        CorrelateTransform {
            engines,
            settings,
            cluster_label: self.cluster_label.as_str().into(),
            metrics,
            path,
            last_snapshot: Instant::now(),
            reorder: BinaryHeap::new(),
            held: VecDeque::new(),
            reorder_window: self.reorder_window.0,
            max_reorder: self.max_reorder_events.max(1),
            hold: self.hold.0,
            max_held: self.max_held_events.max(1),
            seq: 0,
        }
    }
}

/// Where an event goes in event-time order: first occurrence, then Nodes before other
/// objects (a node's NotReady before its pods'), then last occurrence, then identity, then
/// arrival.
type OrderKey = (Option<Timestamp>, bool, Option<Timestamp>, u64, u64);

/// An event waiting to be correlated (boxed: the heap moves only the key and pointers).
struct Pending {
    key: OrderKey,
    arrived: Instant,
    event: Box<Event>,
    notifiers: Arc<[BatchNotifier]>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// A correlated event on hold.
struct Held {
    since: Instant,
    identity: u64,
    event: Box<Event>,
    notifiers: Arc<[BatchNotifier]>,
}

/// The running transform.
pub struct CorrelateTransform {
    /// One engine per cluster.
    engines: BTreeMap<Str, Engine>,
    settings: Settings,
    cluster_label: Str,
    metrics: Arc<ComponentMetrics>,
    path: Option<PathBuf>,
    last_snapshot: Instant,
    /// By [`OrderKey`], earliest on top.
    reorder: BinaryHeap<Reverse<Pending>>,
    held: VecDeque<Held>,
    reorder_window: Duration,
    max_reorder: usize,
    hold: Duration,
    max_held: usize,
    seq: u64,
}

impl CorrelateTransform {
    fn save(&mut self) {
        self.last_snapshot = Instant::now();
        let Some(path) = &self.path else {
            return;
        };
        let saved = snapshot::Saved {
            clusters: self
                .engines
                .iter()
                .map(|(cluster, engine)| (cluster.clone(), engine.snapshot()))
                .collect(),
        };
        if let Err(error) = crate::sources::write_checkpoint(path, &saved) {
            ComponentMetrics::add(&self.metrics.errors, 1);
            tracing::error!(file = %path.display(), %error, "Failed to save the correlation state.");
        }
    }

    /// The engine of the event's cluster.
    fn engine(&mut self, e: &Event) -> &mut Engine {
        let mut cluster = e
            .labels
            .get(self.cluster_label.as_str())
            .cloned()
            .unwrap_or_default();
        if !self.engines.contains_key(&cluster) && self.engines.len() >= MAX_CLUSTERS {
            cluster = Str::default();
        }
        let settings = &self.settings;
        self.engines
            .entry(cluster)
            .or_insert_with(|| Engine::new(settings.clone()))
    }

    /// Correlates the events whose wait is over (all of them with `all`), in event-time
    /// order, then lets go of the held events whose hold is over; records and events
    /// leave in one batch.
    fn release(&mut self, all: bool, out: &mut Vec<Batch>) {
        let mut records = Vec::new();
        let now = Instant::now();
        while let Some(Reverse(front)) = self.reorder.peek() {
            let due = all
                || self.reorder.len() > self.max_reorder
                || now.duration_since(front.arrived) >= self.reorder_window;
            if !due {
                break;
            }
            let Reverse(p) = self.reorder.pop().expect("peeked");
            let identity = p.key.3;
            self.engine(&p.event)
                .process(&p.event, identity, &mut records);
            self.held.push_back(Held {
                since: now,
                identity: p.key.3,
                event: p.event,
                notifiers: p.notifiers,
            });
        }
        for engine in self.engines.values_mut() {
            engine.expire(false, &mut records);
            if all {
                engine.final_updates(&mut records);
            }
        }
        // Held events leave in the order they were correlated (their holds end in order).
        let leaving = if all {
            self.held.len()
        } else {
            let by_time = self
                .held
                .partition_point(|h| now.duration_since(h.since) >= self.hold);
            by_time.max(self.held.len().saturating_sub(self.max_held))
        };
        let mut events = Vec::with_capacity(records.len() + leaving);
        events.append(&mut records);
        let mut batch = Batch::new(events);
        while let Some(front) = self.held.front() {
            let due = all
                || self.held.len() > self.max_held
                || now.duration_since(front.since) >= self.hold;
            if !due {
                break;
            }
            let Held {
                mut event,
                notifiers,
                identity,
                ..
            } = self.held.pop_front().expect("peeked");
            event.correlation_id = self.engine(&event).correlation_id(identity);
            for n in notifiers.iter() {
                push_notifier(&mut batch.notifiers, n);
            }
            batch.events.push(*event);
        }
        self.metrics.buffer_events.store(
            (self.reorder.len() + self.held.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if !batch.events.is_empty() || !batch.notifiers.is_empty() {
            out.push(batch);
        }
    }
}

impl Transform for CorrelateTransform {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let notifiers: Arc<[BatchNotifier]> = batch.notifiers.into();
        let arrived = Instant::now();
        for event in batch.events {
            let (start, end) = span(&event);
            self.seq += 1;
            let key = (
                start,
                event.object.kind != "Node",
                end,
                engine::identity(&event),
                self.seq,
            );
            self.reorder.push(Reverse(Pending {
                key,
                arrived,
                event: Box::new(event),
                notifiers: notifiers.clone(),
            }));
        }
        self.release(false, out);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self, out: &mut Vec<Batch>) {
        self.release(false, out);
        let mut records = Vec::new();
        for engine in self.engines.values_mut() {
            engine.expire(true, &mut records);
        }
        if !records.is_empty() {
            out.push(Batch::new(records));
        }
        if self.last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            self.save();
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) -> bool {
        self.release(true, out);
        self.save();
        false
    }
}

#[cfg(test)]
mod tests;
