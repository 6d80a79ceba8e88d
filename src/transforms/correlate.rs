//! The `correlate` transform: related trouble becomes one incident with a probable root cause.
//!
//! Every event that signals trouble (severity warning or worse from `classify`, else type
//! `Warning`) joins an open incident it is linked to, or opens one. Links, all bounded in
//! time by `window`:
//!
//! - **same object**: its uid (namespace/kind/name when there is none);
//! - **same workload**: the object's top-level owner, from enrichment's owner chain when
//!   present, else learnt from the events themselves (`SuccessfulCreate` "Created pod: X" on
//!   a ReplicaSet/Job/DaemonSet, "create Pod X in StatefulSet Y", `ScalingReplicaSet`
//!   "Scaled up replica set X" on a Deployment, "Created job X" on a CronJob), else guessed
//!   from generated names (`cart-7d9f8b6c5-x2x9z` is Deployment `cart`);
//! - **same node**, for effects that node trouble explains (the node-scoped causal rules):
//!   a pod's node is learnt from `Scheduled` ("assigned ns/pod to node"), the kubelet that
//!   reported it, or enrichment.
//!
//! Incidents that become linked are merged. Events about an object already in an open
//! incident join it too (a crash-looping container's `Pulled`/`Started`), without keeping it
//! open. Every member gets the incident's id as `correlation_id`.
//!
//! The **root cause** is found with causal rules (`cause -> effect` within `window`, on the
//! same object, workload or node; built in and configurable): the earliest member that a
//! rule places upstream of another member and that no rule places downstream; without one,
//! the member that happened most (a persistent failure rather than a blip before it; rule
//! `"most-frequent"`).
//!
//! An incident is **reported** (an incident record with status `opened`) once it is more than
//! a blip: `min_occurrences` occurrences over at least `min_duration`, or anything critical.
//! Transient noise (a mount that fails twice in a second and then works) never becomes an
//! incident. Records follow with status `updated` (at most every `update_interval` of event
//! time, or when the severity rises) and `resolved` once nothing joined for `resolve_after`
//! (event time, or wall-clock time when the input goes quiet). Records are events with
//! reason `IncidentOpened`/`IncidentUpdated`/`IncidentResolved`, the summary as message and
//! the full [`Incident`] in `incident`.
//!
//! State is bounded (`max_open_incidents`: the stalest is resolved early;
//! `max_tracked_objects`: an LRU) and saved to `<data_dir>/state/<name>.json` every 30 s and
//! at shutdown, so a restart continues the same incidents.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use lru::LruCache;
use regex::Regex;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::batch::Batch;
use crate::condition::Pattern;
use crate::config::DurationValue;
use crate::event::{
    AffectedObject, Event, Incident, IncidentStatus, ObjectRef, RootCause, Severity, Str, Timestamp,
};
use crate::metrics::ComponentMetrics;
use crate::topology::Transform;

/// Default bound on the time between linked events.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Default quiet time after which an incident is resolved.
pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(900);
/// Default minimum event time between `updated` records of one incident.
pub const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on open incidents.
pub const DEFAULT_MAX_OPEN_INCIDENTS: usize = 10_000;
/// Default bound on tracked objects.
pub const DEFAULT_MAX_TRACKED_OBJECTS: usize = 100_000;
/// Default occurrences before an incident is reported.
pub const DEFAULT_MIN_OCCURRENCES: u64 = 2;
/// Default span before an incident is reported.
pub const DEFAULT_MIN_DURATION: Duration = Duration::from_secs(30);
/// Affected objects listed per incident.
const MAX_OBJECTS: usize = 50;
/// Distinct (reason, object) pairs kept per incident for root-cause analysis.
const MAX_NOTABLE: usize = 64;
/// Owner links followed upwards.
const MAX_OWNER_DEPTH: usize = 5;
/// How often wall-clock resolution and snapshots run.
const TICK: Duration = Duration::from_secs(5);
/// How often the state is saved.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// Where a causal rule looks for the cause of an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The same object.
    Object,
    /// The same object or the same workload (top-level owner).
    Owner,
    /// The node the effect's object is on.
    Node,
}

/// `[[transforms.NAME.rules]]`: `cause -> effect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CausalRule {
    /// Shown as the root cause's `rule`.
    pub name: String,
    /// Reasons of the cause.
    pub cause: Vec<String>,
    /// Reasons of the effect.
    pub effect: Vec<String>,
    /// Where the cause must be.
    pub scope: Scope,
    /// The cause's message must match this too.
    #[serde(default)]
    pub cause_message: Option<Pattern>,
    /// The effect's message must match this too.
    #[serde(default)]
    pub effect_message: Option<Pattern>,
}

fn rule(
    name: &str,
    cause: &[&str],
    effect: &[&str],
    scope: Scope,
    cause_message: Option<&str>,
    effect_message: Option<&str>,
) -> CausalRule {
    let pattern = |p: Option<&str>| p.map(|p| Pattern(Regex::new(p).expect("built-in pattern")));
    CausalRule {
        name: name.into(),
        cause: cause.iter().map(|s| s.to_string()).collect(),
        effect: effect.iter().map(|s| s.to_string()).collect(),
        scope,
        cause_message: pattern(cause_message),
        effect_message: pattern(effect_message),
    }
}

/// Node conditions and node-level failures.
const NODE_TROUBLE: &[&str] = &[
    "NodeNotReady",
    "NodeHasDiskPressure",
    "NodeHasMemoryPressure",
    "NodeHasPIDPressure",
    "NodeHasInsufficientMemory",
    "NodeHasInsufficientPID",
    "EvictionThresholdMet",
    "Rebooted",
    "KernelDeadlock",
    "SystemOOM",
    "OOMKilling",
    "DeletingAllPods",
    "ContainerGCFailed",
    "ImageGCFailed",
    "KubeletSetupFailed",
    "NodeNotSchedulable",
];

/// The causal rules kollate knows.
pub fn builtin_rules() -> Vec<CausalRule> {
    use Scope::*;
    vec![
        rule(
            "node-trouble-evicts-and-breaks-pods",
            NODE_TROUBLE,
            &[
                "NodeControllerEviction",
                "TaintManagerEviction",
                "Evicted",
                "Killing",
                "NodeNotReady",
                "FailedMount",
                "BackOff",
                "Unhealthy",
                "FailedCreatePodSandBox",
                "SandboxChanged",
                "FailedKillPod",
                "Preempting",
                "FailedSync",
                "DeletingAllPods",
            ],
            Node,
            None,
            None,
        ),
        rule(
            "oom-kills-restart-containers",
            &["OOMKilling", "SystemOOM"],
            &["BackOff", "Killing", "Evicted", "Unhealthy"],
            Node,
            None,
            None,
        ),
        rule(
            "volume-failure-keeps-containers-from-starting",
            &["FailedMount", "FailedAttachVolume", "FailedMapVolume"],
            &[
                "BackOff",
                "Failed",
                "FailedCreatePodContainer",
                "Unhealthy",
                "FailedSync",
                "Killing",
            ],
            Owner,
            None,
            // Not image pulls: a pod whose volumes mounted late and then fails to pull
            // its image has an image problem.
            Some(
                "(?i)restarting|mount|volume|create ?container|failed to start|start container|timed out",
            ),
        ),
        rule(
            "liveness-failure-restarts-container",
            &["Unhealthy"],
            &["Killing", "BackOff"],
            Object,
            Some("(?i)liveness|startup"),
            None,
        ),
        rule(
            "killed-container-backs-off",
            &["Killing"],
            &["BackOff"],
            Object,
            Some("(?i)liveness|startup|probe"),
            None,
        ),
        rule(
            "image-pull-failure-backs-off",
            &["Failed", "ErrImagePull"],
            &["BackOff", "Failed", "ImagePullBackOff"],
            Object,
            Some("(?i)pull|ErrImagePull|manifest unknown|not found"),
            Some("(?i)back-?off|ImagePullBackOff"),
        ),
        rule(
            "unschedulable-pod-scales-cluster",
            &["FailedScheduling"],
            &["TriggeredScaleUp", "NotTriggerScaleUp"],
            Object,
            None,
            None,
        ),
        rule(
            "unschedulable-pod-then-crashes",
            &["FailedScheduling"],
            &["Unhealthy", "BackOff", "Killing"],
            Object,
            None,
            None,
        ),
    ]
}

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
fn yes() -> bool {
    true
}

/// `type = "correlate"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateTransformConfig {
    /// Longest time between two linked events (default 10m).
    #[serde(default = "default_window")]
    pub window: DurationValue,
    /// An incident nothing joined for this long is resolved (default 15m).
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
    /// Bound on objects tracked (default 100,000).
    #[serde(default = "default_max_tracked_objects")]
    pub max_tracked_objects: usize,
    /// Use kollate's built-in causal rules (default true); `rules` come first either way.
    #[serde(default = "yes")]
    pub builtin_rules: bool,
    /// Extra causal rules.
    #[serde(default)]
    pub rules: Vec<CausalRule>,
    /// Save state to the data directory and continue from it after a restart (default true).
    #[serde(default = "yes")]
    pub snapshot: bool,
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
        let settings = Settings {
            window: chrono::Duration::from_std(self.window.0).unwrap_or(chrono::Duration::MAX),
            resolve_after: chrono::Duration::from_std(self.resolve_after.0)
                .unwrap_or(chrono::Duration::MAX),
            resolve_after_wall: self.resolve_after.0,
            update_interval: chrono::Duration::from_std(self.update_interval.0)
                .unwrap_or(chrono::Duration::MAX),
            min_occurrences: self.min_occurrences.max(1),
            min_duration: chrono::Duration::from_std(self.min_duration.0)
                .unwrap_or(chrono::Duration::MAX),
            max_open: self.max_open_incidents.max(1),
            rules,
        };
        let capacity = NonZeroUsize::new(self.max_tracked_objects.max(1)).expect("non-zero");
        let path = state.filter(|_| self.snapshot);
        let mut engine = Engine {
            settings,
            incidents: HashMap::new(),
            alias: HashMap::new(),
            objects: LruCache::new(capacity),
            parents: LruCache::new(capacity),
            workloads: HashMap::new(),
            nodes: HashMap::new(),
            scheduling: HashMap::new(),
            watermark: None,
            next: 0,
        };
        if let Some(path) = &path {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
                    Ok(snapshot) => engine.restore(snapshot),
                    Err(error) => {
                        tracing::warn!(file = %path.display(), %error, "Ignored an unreadable correlation snapshot.");
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "Cannot read the correlation snapshot.");
                }
            }
        }
        CorrelateTransform {
            engine,
            metrics,
            path,
            last_snapshot: Instant::now(),
        }
    }
}

struct Settings {
    window: chrono::Duration,
    resolve_after: chrono::Duration,
    resolve_after_wall: Duration,
    update_interval: chrono::Duration,
    min_occurrences: u64,
    min_duration: chrono::Duration,
    max_open: usize,
    rules: Vec<CausalRule>,
}

/// A member remembered for root-cause analysis: the first of its (reason, object).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Notable {
    reason: Str,
    object: ObjectRef,
    /// The message's shape (digits dropped): one notable per (reason, object, shape).
    shape: u64,
    occurrences: u64,
    message: String,
    node: Str,
    workload: Str,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IncidentState {
    id: Str,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    severity: Severity,
    occurrences: u64,
    members: u64,
    reasons: BTreeMap<Str, u64>,
    objects: Vec<AffectedObject>,
    notable: Vec<Notable>,
    workloads: Vec<Str>,
    nodes: Vec<Str>,
    reported: bool,
    reported_severity: Option<Severity>,
    reported_at: Option<Timestamp>,
    reported_members: u64,
    /// Wall-clock time of the last trouble (not saved: a restart starts the clock again).
    #[serde(skip, default = "Instant::now")]
    active: Instant,
}

/// What is saved across restarts.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    incidents: Vec<(u64, IncidentState)>,
    alias: Vec<(u64, u64)>,
    objects: Vec<(u64, ObjectState)>,
    parents: Vec<(u64, Str)>,
    workloads: Vec<(Str, u64)>,
    nodes: Vec<(Str, u64)>,
    scheduling: Vec<(u64, u64)>,
    watermark: Option<Timestamp>,
    next: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ObjectState {
    incident: Option<u64>,
    node: Str,
    /// Its top-level owner, once worked out (regexes are not run again per event).
    #[serde(default)]
    workload: Option<Str>,
}

struct Engine {
    settings: Settings,
    incidents: HashMap<u64, IncidentState>,
    /// Merged incident -> the one that absorbed it.
    alias: HashMap<u64, u64>,
    /// By object id ([`object_id`]).
    objects: LruCache<u64, ObjectState>,
    /// Object key -> its owner's key (learnt or enriched), for walking up to the workload.
    parents: LruCache<u64, Str>,
    /// Workload key -> its open incident.
    workloads: HashMap<Str, u64>,
    /// Node -> its open node-trouble incident.
    nodes: HashMap<Str, u64>,
    /// Scheduling failures by message shape -> their open incident: pods that cannot be
    /// placed for the same reason at the same time share a cause (cluster capacity).
    scheduling: HashMap<u64, u64>,
    /// The newest event time seen.
    watermark: Option<Timestamp>,
    next: u64,
}

static CREATED_POD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Created pod: (\S+)").expect("valid"));
static STATEFUL_POD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^create Pod (\S+) in StatefulSet (\S+) successful").expect("valid")
});
static SCALED_RS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Scaled (?:up|down) replica set (\S+) (?:to|from)").expect("valid")
});
static CREATED_JOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Created job (\S+)").expect("valid"));
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Successfully assigned (?:([^/\s]+)/)?(\S+) to (\S+)").expect("valid")
});
static POD_OF_DEPLOYMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.+)-([bcdfghjklmnpqrstvwxz2456789]{6,10})-([a-z0-9]{5})$").expect("valid")
});
static POD_OF_CRONJOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-(\d{8,10})-([a-z0-9]{5})$").expect("valid"));
static POD_OF_STATEFULSET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-(\d{1,4})$").expect("valid"));
static GENERATED_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-([a-z0-9]{5})$").expect("valid"));
static RS_OF_DEPLOYMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-([bcdfghjklmnpqrstvwxz2456789]{6,10})$").expect("valid"));

fn key(kind: &str, namespace: &str, name: &str) -> Str {
    Str::from(format!("{kind} {namespace}/{name}"))
}

/// The id of a key: the hash of `Kind namespace/name`.
fn key_id(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// The id of the object an event is about: [`key_id`] of its key, without building it.
fn object_id(e: &Event) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(e.object.kind.as_bytes());
    h.update(b" ");
    h.update(namespace(e).as_bytes());
    h.update(b"/");
    h.update(e.object.name.as_bytes());
    h.digest()
}

/// The key of the object an event is about.
fn object_key(e: &Event) -> Str {
    key(&e.object.kind, namespace(e), &e.object.name)
}

fn namespace(e: &Event) -> &str {
    if e.object.namespace.is_empty() {
        &e.namespace
    } else {
        &e.object.namespace
    }
}

/// When the event started and last happened.
fn span(e: &Event) -> (Option<Timestamp>, Option<Timestamp>) {
    let end = e.timestamp;
    let start = e.first_timestamp.or(e.event_time).or(end);
    (start.min(end).or(start), end.or(start))
}

fn is_trouble(e: &Event) -> bool {
    match e.severity {
        Some(s) => s >= Severity::Warning,
        None => e.event_type == "Warning",
    }
}

impl Engine {
    fn find(&self, mut id: u64) -> u64 {
        while let Some(&to) = self.alias.get(&id) {
            id = to;
        }
        id
    }

    /// Learns ownership and placement from what the event (about object `this`) says.
    fn learn(&mut self, e: &Event, this: u64) {
        let ns = namespace(e);
        let m = e.message.as_str();
        match (e.reason.as_str(), e.object.kind.as_str()) {
            ("SuccessfulCreate", "StatefulSet") => {
                if let Some(c) = STATEFUL_POD.captures(m) {
                    self.parents
                        .put(key_id(&key("Pod", ns, &c[1])), object_key(e));
                }
            }
            ("SuccessfulCreate", "CronJob") => {
                if let Some(c) = CREATED_JOB.captures(m) {
                    self.parents
                        .put(key_id(&key("Job", ns, &c[1])), object_key(e));
                }
            }
            ("SuccessfulCreate", _) => {
                if let Some(c) = CREATED_POD.captures(m) {
                    self.parents
                        .put(key_id(&key("Pod", ns, &c[1])), object_key(e));
                }
            }
            ("ScalingReplicaSet", "Deployment") => {
                if let Some(c) = SCALED_RS.captures(m) {
                    self.parents
                        .put(key_id(&key("ReplicaSet", ns, &c[1])), object_key(e));
                }
            }
            ("Scheduled", "Pod") => {
                if let Some(c) = ASSIGNED.captures(m) {
                    let pod_ns = c.get(1).map_or(ns, |n| n.as_str());
                    let pod = key_id(&key("Pod", pod_ns, &c[2]));
                    self.object(pod).node = c[3].into();
                }
            }
            _ => {}
        }
        if let Some(enrichment) = &e.enrichment {
            let mut child = this;
            for owner in &enrichment.owners {
                let parent = key(&owner.kind, ns, &owner.name);
                child = {
                    let id = key_id(&parent);
                    self.parents.put(child, parent);
                    id
                };
            }
            if !enrichment.node.is_empty() && e.object.kind == "Pod" {
                self.object(this).node = enrichment.node.clone();
            }
        }
        // The kubelet that reported a pod's event runs on its node.
        if e.object.kind == "Pod"
            && !e.host.is_empty()
            && e.reporting_controller.contains("kubelet")
        {
            let tracked = self.object(this);
            if tracked.node.is_empty() {
                tracked.node = e.host.clone();
            }
        }
    }

    fn object(&mut self, id: u64) -> &mut ObjectState {
        self.objects.get_or_insert_mut(id, ObjectState::default)
    }

    /// The top-level owner of an object: learnt, else guessed from generated names.
    fn workload(&mut self, e: &Event) -> Str {
        let mut id = object_id(e);
        let mut top: Option<Str> = None;
        for _ in 0..MAX_OWNER_DEPTH {
            match self.parents.get(&id) {
                Some(parent) => {
                    id = key_id(parent);
                    top = Some(parent.clone());
                }
                None => break,
            }
        }
        if let Some(top) = top {
            return top;
        }
        let current = object_key(e);
        let ns = namespace(e);
        let name = e.object.name.as_str();
        match e.object.kind.as_str() {
            "Pod" => {
                if let Some(c) = POD_OF_CRONJOB.captures(name) {
                    key("CronJob", ns, &c[1])
                } else if let Some(c) = POD_OF_DEPLOYMENT.captures(name) {
                    key("Deployment", ns, &c[1])
                } else if let Some(c) = POD_OF_STATEFULSET.captures(name) {
                    key("StatefulSet", ns, &c[1])
                } else if let Some(c) = GENERATED_SUFFIX.captures(name) {
                    key("Workload", ns, &c[1])
                } else {
                    current
                }
            }
            "ReplicaSet" => match RS_OF_DEPLOYMENT.captures(name) {
                Some(c) => key("Deployment", ns, &c[1]),
                None => current,
            },
            _ => current,
        }
    }

    /// The node an event's object is on (a Node's own name).
    fn node_of(&mut self, e: &Event) -> Str {
        if e.object.kind == "Node" {
            return e.object.name.clone();
        }
        self.objects
            .get(&object_id(e))
            .map(|o| o.node.clone())
            .unwrap_or_default()
    }

    fn fresh(&self, incident: &IncidentState, start: Option<Timestamp>) -> bool {
        match (incident.last, start) {
            (Some(last), Some(start)) => start - last <= self.settings.window,
            _ => true,
        }
    }

    /// Does some node-scoped rule make this event an effect of node trouble? (Never an
    /// image pull: a registry problem is not the node's.)
    fn node_effect(&self, e: &Event) -> bool {
        !is_image_pull(&e.message)
            && self.settings.rules.iter().any(|r| {
                r.scope == Scope::Node
                    && r.effect.iter().any(|x| *x == e.reason)
                    && r.effect_message
                        .as_ref()
                        .is_none_or(|p| p.0.is_match(&e.message))
            })
    }

    fn is_node_trouble(e: &Event) -> bool {
        NODE_TROUBLE.contains(&e.reason.as_str()) || e.object.kind == "Node"
    }

    /// Handles one event; incident records go to `records`.
    fn process(&mut self, e: &mut Event, records: &mut Vec<Event>) {
        let this = object_id(e);
        self.learn(e, this);
        let (start, end) = span(e);
        if let Some(end) = end {
            self.watermark = Some(self.watermark.map_or(end, |w| w.max(end)));
        }
        if !is_trouble(e) {
            // Joins an open incident its object is in, without keeping it open.
            let joined = self.objects.get(&this).and_then(|o| o.incident);
            if let Some(id) = joined.map(|id| self.find(id))
                && let Some(incident) = self.incidents.get_mut(&id)
            {
                incident.members += 1;
                *incident.reasons.entry(e.reason.clone()).or_default() += e.occurrences();
                e.correlation_id = Some(incident.id.clone());
            }
            return;
        }
        let workload = match self.objects.get(&this).and_then(|o| o.workload.clone()) {
            Some(w) => w,
            None => self.workload(e),
        };
        let node = self.node_of(e);
        let node_trouble = Self::is_node_trouble(e);
        let mut linked: Vec<u64> = Vec::new();
        if let Some(id) = self.objects.get(&this).and_then(|o| o.incident) {
            linked.push(self.find(id));
        }
        if let Some(&id) = self.workloads.get(&workload) {
            linked.push(self.find(id));
        }
        if !node.is_empty()
            && (node_trouble || self.node_effect(e))
            && let Some(&id) = self.nodes.get(&node)
        {
            linked.push(self.find(id));
        }
        let scheduling = (e.reason == "FailedScheduling").then(|| message_shape(&e.message));
        if let Some(&id) = scheduling.and_then(|shape| self.scheduling.get(&shape)) {
            linked.push(self.find(id));
        }
        linked.sort_unstable();
        linked.dedup();
        linked.retain(|id| self.incidents.get(id).is_some_and(|i| self.fresh(i, start)));
        let id = match linked.split_first() {
            Some((&first, rest)) => {
                let target = self.oldest(first, rest);
                for &other in linked.iter().filter(|&&o| o != target) {
                    self.merge(other, target, records);
                }
                target
            }
            None => self.open(e, start),
        };
        self.objects.put(
            this,
            ObjectState {
                incident: Some(id),
                node: node.clone(),
                workload: Some(workload.clone()),
            },
        );
        self.workloads.insert(workload.clone(), id);
        if node_trouble && !node.is_empty() {
            self.nodes.insert(node.clone(), id);
        }
        if let Some(shape) = scheduling {
            self.scheduling.insert(shape, id);
        }
        let severity = e.severity.unwrap_or(Severity::Warning);
        let incident = self.incidents.get_mut(&id).expect("open incident");
        incident.active = Instant::now();
        incident.members += 1;
        incident.occurrences += e.occurrences();
        *incident.reasons.entry(e.reason.clone()).or_default() += e.occurrences();
        incident.severity = incident.severity.max(severity);
        incident.first = min_time(incident.first, start);
        incident.last = max_time(incident.last, end);
        push_unique(&mut incident.workloads, workload.clone());
        if !node.is_empty() {
            push_unique(&mut incident.nodes, node.clone());
        }
        if incident.objects.len() < MAX_OBJECTS
            && !incident.objects.iter().any(|o| {
                o.name == e.object.name && o.kind == e.object.kind && o.namespace == namespace(e)
            })
        {
            incident.objects.push(AffectedObject {
                kind: e.object.kind.clone(),
                namespace: namespace(e).into(),
                name: e.object.name.clone(),
                owner: if workload == object_key(e) {
                    Str::default()
                } else {
                    workload.clone()
                },
                node: node.clone(),
            });
        }
        let shape = message_shape(&e.message);
        let known = incident
            .notable
            .iter()
            .position(|n| n.shape == shape && n.reason == e.reason && n.object == e.object);
        match known {
            Some(i) => incident.notable[i].occurrences += e.occurrences(),
            None if incident.notable.len() < MAX_NOTABLE => incident.notable.push(Notable {
                reason: e.reason.clone(),
                object: e.object.clone(),
                shape,
                occurrences: e.occurrences(),
                message: e.message.chars().take(300).collect(),
                node,
                workload,
                start,
                end,
            }),
            None => {}
        }
        e.correlation_id = Some(incident.id.clone());
        self.report(id, records);
        if self.incidents.len() > self.settings.max_open {
            let stalest = self
                .incidents
                .iter()
                .min_by_key(|(_, i)| i.last)
                .map(|(&id, _)| id);
            if let Some(stalest) = stalest {
                self.resolve(stalest, records);
            }
        }
    }

    fn oldest(&self, first: u64, rest: &[u64]) -> u64 {
        std::iter::once(first)
            .chain(rest.iter().copied())
            .min_by_key(|id| (self.incidents[id].first, *id))
            .expect("at least one")
    }

    fn open(&mut self, e: &Event, start: Option<Timestamp>) -> u64 {
        self.next += 1;
        let internal = self.next;
        let seed = format!(
            "{}/{}/{}/{}",
            e.uid,
            object_key(e),
            start.map(|t| t.timestamp_micros()).unwrap_or_default(),
            internal
        );
        let id = Str::from(format!("inc-{:012x}", xxh3_64(seed.as_bytes()) >> 16));
        self.incidents.insert(
            internal,
            IncidentState {
                id,
                first: start,
                last: start,
                severity: Severity::Warning,
                occurrences: 0,
                members: 0,
                reasons: BTreeMap::new(),
                objects: Vec::new(),
                notable: Vec::new(),
                workloads: Vec::new(),
                nodes: Vec::new(),
                reported: false,
                reported_severity: None,
                reported_at: None,
                reported_members: 0,
                active: Instant::now(),
            },
        );
        internal
    }

    /// Folds incident `from` into `into`.
    fn merge(&mut self, from: u64, into: u64, records: &mut Vec<Event>) {
        let Some(absorbed) = self.incidents.remove(&from) else {
            return;
        };
        self.alias.insert(from, into);
        for id in self
            .workloads
            .values_mut()
            .chain(self.nodes.values_mut())
            .chain(self.scheduling.values_mut())
        {
            if *id == from {
                *id = into;
            }
        }
        let target = self.incidents.get_mut(&into).expect("open incident");
        target.members += absorbed.members;
        target.occurrences += absorbed.occurrences;
        for (reason, n) in &absorbed.reasons {
            *target.reasons.entry(reason.clone()).or_default() += n;
        }
        target.severity = target.severity.max(absorbed.severity);
        target.first = min_time(target.first, absorbed.first);
        target.last = max_time(target.last, absorbed.last);
        for o in absorbed.objects.iter() {
            if target.objects.len() < MAX_OBJECTS && !target.objects.contains(o) {
                target.objects.push(o.clone());
            }
        }
        for n in absorbed.notable.iter() {
            if target.notable.len() < MAX_NOTABLE {
                target.notable.push(n.clone());
            }
        }
        for w in absorbed.workloads.iter() {
            push_unique(&mut target.workloads, w.clone());
        }
        for n in absorbed.nodes.iter() {
            push_unique(&mut target.nodes, n.clone());
        }
        if absorbed.reported {
            let into_id = target.id.clone();
            let mut record = absorbed.clone();
            records.push(self.record(&mut record, IncidentStatus::Resolved, Some(&into_id)));
        }
    }

    /// Emits `opened` once the incident is more than a blip, then `updated` as it grows.
    fn report(&mut self, id: u64, records: &mut Vec<Event>) {
        let settings = &self.settings;
        let incident = &self.incidents[&id];
        let span = match (incident.first, incident.last) {
            (Some(a), Some(b)) => b - a,
            _ => chrono::Duration::zero(),
        };
        let status = if !incident.reported {
            let confirmed = incident.severity == Severity::Critical
                || (incident.occurrences >= settings.min_occurrences
                    && span >= settings.min_duration);
            confirmed.then_some(IncidentStatus::Opened)
        } else {
            let due = match (incident.reported_at, incident.last) {
                (Some(at), Some(last)) => last - at >= settings.update_interval,
                _ => false,
            };
            let worse = incident
                .reported_severity
                .is_some_and(|s| incident.severity > s);
            ((due && incident.members > incident.reported_members) || worse)
                .then_some(IncidentStatus::Updated)
        };
        if let Some(status) = status {
            let mut incident = self.incidents.remove(&id).expect("open incident");
            records.push(self.record(&mut incident, status, None));
            self.incidents.insert(id, incident);
        }
    }

    /// The record of an incident's current state (and notes it as reported).
    fn record(
        &self,
        incident: &mut IncidentState,
        status: IncidentStatus,
        merged_into: Option<&Str>,
    ) -> Event {
        incident.reported = true;
        incident.reported_severity = Some(incident.severity);
        incident.reported_at = incident.last;
        incident.reported_members = incident.members;
        let root_cause = self.root_cause(incident);
        let mut summary = summary(incident, root_cause.as_ref());
        if let Some(into) = merged_into {
            summary = format!("merged into {into}: {summary}");
        }
        let reason = match status {
            IncidentStatus::Opened => "IncidentOpened",
            IncidentStatus::Updated => "IncidentUpdated",
            IncidentStatus::Resolved => "IncidentResolved",
        };
        let first_namespace = incident
            .objects
            .iter()
            .map(|o| o.namespace.clone())
            .find(|n| !n.is_empty())
            .unwrap_or_default();
        Event {
            uid: incident.id.clone(),
            resource_version: format!("{reason}-{}", incident.members).into(),
            namespace: first_namespace.clone(),
            name: incident.id.clone(),
            event_type: "Warning".into(),
            reason: reason.into(),
            message: summary.clone(),
            object: ObjectRef {
                kind: "Incident".into(),
                namespace: first_namespace,
                name: incident.id.clone(),
                ..ObjectRef::default()
            },
            reporting_controller: "kollate/correlate".into(),
            count: 1,
            first_timestamp: incident.first,
            last_timestamp: incident.last,
            timestamp: incident.last,
            severity: Some(incident.severity),
            correlation_id: Some(incident.id.clone()),
            incident: Some(Box::new(Incident {
                id: incident.id.clone(),
                status,
                severity: incident.severity,
                summary,
                root_cause,
                objects: incident.objects.clone(),
                reasons: incident.reasons.clone(),
                members: incident.members,
                first_seen: incident.first,
                last_seen: incident.last,
            })),
            ..Event::default()
        }
    }

    /// The earliest member a rule places upstream and none downstream; else the earliest.
    fn root_cause(&self, incident: &IncidentState) -> Option<RootCause> {
        let notable = &incident.notable;
        let mut is_effect = vec![false; notable.len()];
        let mut cause_rule: Vec<Option<&str>> = vec![None; notable.len()];
        for (ci, c) in notable.iter().enumerate() {
            for (ei, e) in notable.iter().enumerate() {
                if ci == ei {
                    continue;
                }
                if let Some(rule) = self.settings.rules.iter().find(|r| self.explains(r, c, e)) {
                    is_effect[ei] = true;
                    cause_rule[ci].get_or_insert(rule.name.as_str());
                }
            }
        }
        let roots = notable
            .iter()
            .enumerate()
            .filter(|(i, _)| cause_rule[*i].is_some() && !is_effect[*i])
            .min_by_key(|(_, n)| n.start)
            .map(|(i, n)| (n, cause_rule[i].unwrap_or("earliest")));
        // Without a rule: what happened most (a persistent failure, not a blip before
        // it), the earliest of equals.
        let (n, rule) = roots.or_else(|| {
            notable
                .iter()
                .min_by_key(|n| (std::cmp::Reverse(n.occurrences), n.start))
                .map(|n| (n, "most-frequent"))
        })?;
        Some(RootCause {
            reason: n.reason.clone(),
            object: n.object.clone(),
            message: n.message.clone(),
            timestamp: n.start,
            rule: rule.to_owned(),
        })
    }

    /// Does rule `r` make `c` a cause of `e`?
    fn explains(&self, r: &CausalRule, c: &Notable, e: &Notable) -> bool {
        let matches = |reasons: &[String], pattern: &Option<Pattern>, n: &Notable| {
            reasons.iter().any(|x| *x == n.reason)
                && pattern.as_ref().is_none_or(|p| p.0.is_match(&n.message))
        };
        if !matches(&r.cause, &r.cause_message, c) || !matches(&r.effect, &r.effect_message, e) {
            return false;
        }
        // The cause comes first (it may go on alongside its effect), within the window.
        let timely = match (c.start, e.start, c.end) {
            (Some(cs), Some(es), Some(ce)) => cs <= es && es - ce <= self.settings.window,
            _ => true,
        };
        let placed = match r.scope {
            Scope::Object => c.object == e.object,
            Scope::Owner => {
                c.object == e.object || (!c.workload.is_empty() && c.workload == e.workload)
            }
            Scope::Node => !c.node.is_empty() && c.node == e.node && !is_image_pull(&e.message),
        };
        timely && placed
    }

    /// Resolves an incident: its record (if it was reported), and its indexes dropped.
    fn resolve(&mut self, id: u64, records: &mut Vec<Event>) {
        let Some(mut incident) = self.incidents.remove(&id) else {
            return;
        };
        self.workloads.retain(|_, i| *i != id);
        self.nodes.retain(|_, i| *i != id);
        self.scheduling.retain(|_, i| *i != id);
        self.alias.retain(|_, to| *to != id);
        if incident.reported {
            records.push(self.record(&mut incident, IncidentStatus::Resolved, None));
        }
    }

    /// Resolves incidents quiet for `resolve_after`: in event time, or (`wall`) by the clock.
    fn expire(&mut self, wall: bool, records: &mut Vec<Event>) {
        let watermark = self.watermark;
        let quiet: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(_, i)| {
                let by_event_time = match (i.last, watermark) {
                    (Some(last), Some(w)) => w - last > self.settings.resolve_after,
                    _ => false,
                };
                by_event_time || (wall && i.active.elapsed() >= self.settings.resolve_after_wall)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in quiet {
            self.resolve(id, records);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            incidents: self
                .incidents
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            alias: self.alias.iter().map(|(k, v)| (*k, *v)).collect(),
            objects: self
                .objects
                .iter()
                .rev()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            parents: self
                .parents
                .iter()
                .rev()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            workloads: self
                .workloads
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            nodes: self.nodes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            scheduling: self.scheduling.iter().map(|(k, v)| (*k, *v)).collect(),
            watermark: self.watermark,
            next: self.next,
        }
    }

    fn restore(&mut self, s: Snapshot) {
        self.incidents = s.incidents.into_iter().collect();
        self.alias = s.alias.into_iter().collect();
        for (k, v) in s.objects {
            self.objects.put(k, v);
        }
        for (k, v) in s.parents {
            self.parents.put(k, v);
        }
        self.workloads = s.workloads.into_iter().collect();
        self.nodes = s.nodes.into_iter().collect();
        self.scheduling = s.scheduling.into_iter().collect();
        self.watermark = s.watermark;
        self.next = s.next;
    }
}

/// An image pull problem, by its message.
fn is_image_pull(message: &str) -> bool {
    contains_ignore_case(message, "pull") && contains_ignore_case(message, "image")
}

/// ASCII case-insensitive substring search, without allocating.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A message's shape: its hash with digits dropped (counts, durations, ports, IPs vary).
fn message_shape(message: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for chunk in message.split(|c: char| c.is_ascii_digit()) {
        h.update(chunk.as_bytes());
    }
    h.digest()
}

fn push_unique(list: &mut Vec<Str>, value: Str) {
    if list.len() < MAX_OBJECTS && !list.contains(&value) {
        list.push(value);
    }
}

fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    a.max(b)
}

/// What the members are going through, by their reasons (and messages).
fn effect_phrase(incident: &IncidentState) -> &'static str {
    let reasons = &incident.reasons;
    let has = |r: &str| reasons.contains_key(r);
    let pulling = incident.notable.iter().any(|n| {
        matches!(n.reason.as_str(), "BackOff" | "Failed" | "ErrImagePull")
            && contains_ignore_case(&n.message, "pull")
    });
    if has("NodeControllerEviction") || has("TaintManagerEviction") || has("Evicted") {
        "evicted"
    } else if pulling {
        "unable to pull images"
    } else if has("BackOff") {
        "restarting"
    } else if has("Killing") {
        "killed"
    } else if has("Unhealthy") {
        "failing probes"
    } else if has("FailedMount") || has("FailedAttachVolume") {
        "stuck waiting for volumes"
    } else if has("FailedScheduling") {
        "unschedulable"
    } else if has("Failed") || has("FailedCreate") {
        "failing"
    } else {
        "in trouble"
    }
}

/// Why, from the root cause's reason.
fn cause_phrase(root: &RootCause) -> String {
    let m = root.message.as_str();
    match root.reason.as_str() {
        "FailedMount" | "FailedAttachVolume" | "FailedMapVolume" => {
            if m.contains("timed out") {
                "volume mount timeouts".into()
            } else if m.contains("not found") {
                "a missing volume source".into()
            } else {
                "volume mount failures".into()
            }
        }
        "NodeNotReady" => format!("node {} became NotReady", root.object.name),
        "OOMKilling" | "SystemOOM" => "out-of-memory kills".into(),
        "Unhealthy" if m.starts_with("Liveness") => "failed liveness probes".into(),
        "Unhealthy" => "failed probes".into(),
        "Failed" | "ErrImagePull" if contains_ignore_case(m, "pull") => {
            "image pull failures".into()
        }
        "FailedScheduling" => "scheduling failures".into(),
        "Killing" => "containers being killed".into(),
        "DeletingAllPods" => format!("node {} lost its pods", root.object.name),
        "Rebooted" => format!("node {} rebooted", root.object.name),
        r if r.starts_with("NodeHas") => format!("node {} under pressure ({r})", root.object.name),
        other => other.to_owned(),
    }
}

/// "3 pods of deployment shop/cart restarting after volume mount timeouts on node n-7".
fn summary(incident: &IncidentState, root: Option<&RootCause>) -> String {
    let pods = incident.objects.iter().filter(|o| o.kind == "Pod").count();
    let nodes = incident.objects.iter().filter(|o| o.kind == "Node").count();
    let effect = effect_phrase(incident);
    let subject = match (pods, incident.workloads.as_slice()) {
        (0, _) if nodes > 0 => format!(
            "node{} {}",
            if nodes > 1 { "s" } else { "" },
            incident
                .objects
                .iter()
                .filter(|o| o.kind == "Node")
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (1, [one]) if one.starts_with("Pod ") => format!("pod {}", &one[4..]),
        (n, [one]) if n > 0 => {
            let (kind, name) = one.split_once(' ').unwrap_or(("workload", one));
            let kind = if kind == "Workload" {
                "workload".to_owned()
            } else {
                kind.to_lowercase()
            };
            format!("{n} pod{} of {kind} {name}", if n > 1 { "s" } else { "" })
        }
        (1, _) => "1 pod".to_owned(),
        (n, _) if n > 0 => format!("{n} pods"),
        _ => incident
            .objects
            .first()
            .map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
            .unwrap_or_else(|| "objects".into()),
    };
    let mut line = format!("{subject} {effect}");
    if let Some(root) = root.filter(|r| r.rule != "most-frequent") {
        line.push_str(" after ");
        line.push_str(&cause_phrase(root));
    }
    if let [node] = incident.nodes.as_slice()
        && !line.contains(node.as_str())
    {
        line.push_str(&format!(" on node {node}"));
    }
    line
}

/// The running transform.
pub struct CorrelateTransform {
    engine: Engine,
    metrics: Arc<ComponentMetrics>,
    path: Option<PathBuf>,
    last_snapshot: Instant,
}

impl CorrelateTransform {
    fn save(&mut self) {
        self.last_snapshot = Instant::now();
        let Some(path) = &self.path else {
            return;
        };
        if let Err(error) = crate::sources::write_checkpoint(path, &self.engine.snapshot()) {
            ComponentMetrics::add(&self.metrics.errors, 1);
            tracing::error!(file = %path.display(), %error, "Failed to save the correlation state.");
        }
    }

    /// Emits an `updated` record for every reported incident that grew since its last one
    /// (the end of a replay: its final state).
    fn final_updates(&mut self, records: &mut Vec<Event>) {
        let ids: Vec<u64> = self.engine.incidents.keys().copied().collect();
        for id in ids {
            let mut incident = self.engine.incidents.remove(&id).expect("listed");
            if incident.reported && incident.members > incident.reported_members {
                records.push(
                    self.engine
                        .record(&mut incident, IncidentStatus::Updated, None),
                );
            }
            self.engine.incidents.insert(id, incident);
        }
    }
}

impl Transform for CorrelateTransform {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let mut records = Vec::new();
        for e in batch.events.iter_mut() {
            self.engine.process(e, &mut records);
        }
        self.engine.expire(false, &mut records);
        batch.events.append(&mut records);
        out.push(batch);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self, out: &mut Vec<Batch>) {
        let mut records = Vec::new();
        self.engine.expire(true, &mut records);
        if !records.is_empty() {
            out.push(Batch::new(records));
        }
        if self.last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            self.save();
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) -> bool {
        let mut records = Vec::new();
        self.final_updates(&mut records);
        if !records.is_empty() {
            out.push(Batch::new(records));
        }
        self.save();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_time;

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

    fn run(t: &mut CorrelateTransform, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        t.process(Batch::new(events), &mut out);
        out.into_iter().flat_map(|b| b.events).collect()
    }

    #[test]
    fn a_restart_continues_the_same_incident_from_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/correlate.json");
        let config = CorrelateTransformConfig::default();
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
        let mut ignored = Vec::new();
        first.flush(&mut ignored);
        assert!(path.exists(), "state saved at shutdown");

        let mut second = config.build(Some(path), Arc::default());
        // Another pod of the same deployment, five minutes later: the same incident.
        let out = run(
            &mut second,
            vec![backoff("c", "cart-7d9f8b6c5-k8k8k", "2026-01-01T10:05:00Z")],
        );
        assert_eq!(out[0].correlation_id.as_ref(), Some(&id));
        // An hour of silence later: resolved, and a new failure is a new incident.
        let out = run(
            &mut second,
            vec![backoff("d", "cart-7d9f8b6c5-k8k8k", "2026-01-01T11:30:00Z")],
        );
        assert!(
            out.iter()
                .any(|e| e.reason == "IncidentResolved" && e.correlation_id.as_ref() == Some(&id)),
            "{out:#?}"
        );
        let newest = out.iter().find(|e| e.uid == "d").unwrap();
        assert_ne!(newest.correlation_id.as_ref(), Some(&id));
    }

    #[test]
    fn open_incidents_stay_bounded() {
        let config: CorrelateTransformConfig =
            serde_json::from_str(r#"{"max_open_incidents": 3}"#).unwrap();
        let mut t = config.build(None, Arc::default());
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
        assert!(t.engine.incidents.len() <= 3);
    }
}
