//! The event model: one owned type that both Kubernetes Event APIs decode into.
//!
//! `core/v1` Events (`involvedObject`, `message`, `source`, `count`, `firstTimestamp`) and
//! `events.k8s.io/v1` Events (`regarding`, `note`, `reportingController`, `deprecated*`,
//! `series`) decode into the same [`Event`]. So does the capitalised Go-struct form that
//! `kubectl cluster-info dump` wrote before 1.9 (`InvolvedObject.Kind`, `Reason`, metadata
//! flattened into the item). Sinks and plugins only ever see [`Event`], never client types.
//!
//! Decoding is tolerant the way real dumps need: every field may be missing or `null`,
//! timestamps may have second or sub-second precision (or be the string `"null"`, or Go's
//! zero time), counts may be numbers or strings. It is strict where silence would hide a
//! mistake: an object of another kind or an unknown `apiVersion` is an error.
//!
//! [`Event`] encodes to JSON with the stable snake_case schema documented in
//! `docs/schema.md`; every sink writes it.

mod decode;
mod encode;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub(crate) use decode::RawEvent;
pub use decode::{WatchFrame, decode_json, decode_watch_frame, parse_time};
pub use encode::format_time;
use encode::ser_time;

/// Short strings (reasons, kinds, names) stay inline up to 24 bytes: no allocation.
pub type Str = CompactString;

/// Timestamps are UTC instants.
pub type Timestamp = DateTime<Utc>;

/// Prefix the client-side event aggregator puts on messages it merged.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// How bad an event is, from kollate's classification (not just `Normal`/`Warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine: lifecycle progress, successful operations.
    Info,
    /// Something may need attention; often transient.
    Warning,
    /// An operation failed; a workload is degraded.
    Error,
    /// A node or a whole workload is down, or data is at risk.
    Critical,
}

impl Severity {
    /// The lowercase name used in config and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// What area of the cluster an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Placing pods on nodes.
    Scheduling,
    /// Pulling container images.
    Image,
    /// Volumes: attach, mount, provisioning.
    Storage,
    /// Pod networking, services, load balancers, endpoints.
    Network,
    /// Node health and conditions.
    Node,
    /// Liveness, readiness and startup probes.
    Probe,
    /// Container and pod lifecycle: create, start, kill, restart.
    Lifecycle,
    /// Replica counts, autoscaling, rollouts.
    Scaling,
    /// CPU, memory, quota, eviction for resources.
    Resources,
    /// Configuration: missing config maps, secrets, invalid specs.
    Config,
    /// Authentication, authorisation, policy, certificates.
    Security,
    /// Anything else.
    Other,
}

impl Category {
    /// The lowercase name used in config and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Scheduling => "scheduling",
            Category::Image => "image",
            Category::Storage => "storage",
            Category::Network => "network",
            Category::Node => "node",
            Category::Probe => "probe",
            Category::Lifecycle => "lifecycle",
            Category::Scaling => "scaling",
            Category::Resources => "resources",
            Category::Config => "config",
            Category::Security => "security",
            Category::Other => "other",
        }
    }
}

/// The object an event is about (`involvedObject` / `regarding`), or its `related` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Kind, e.g. `Pod`.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub kind: Str,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub namespace: Str,
    /// Name.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub name: Str,
    /// UID (may be missing, or a node name for Node events).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub uid: Str,
    /// API version of the object, e.g. `apps/v1`.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub api_version: Str,
    /// Resource version of the object when the event was recorded.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub resource_version: Str,
    /// Field path inside the object, e.g. `spec.containers{app}`.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub field_path: Str,
}

/// An owner of the involved object (from its `ownerReferences`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// Kind, e.g. `ReplicaSet`.
    pub kind: Str,
    /// Name.
    pub name: Str,
}

/// What the `kubernetes_events` source's `enrich` option found out about the involved
/// object (omitted when it found nothing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    /// The owner chain, nearest first: a Pod of a Deployment has
    /// `[ReplicaSet, Deployment]`; a Pod of a CronJob has `[Job, CronJob]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Owner>,
    /// The node the object is on (a Pod's `spec.nodeName`; a Node's own name).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub node: Str,
    /// The object's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<Str, Str>,
}

/// What the `patterns` transform found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternKind {
    /// Something keeps happening: over the threshold within the window.
    Recurring,
    /// A key's rate departs from its own history.
    Anomaly,
}

/// A recurring pattern or a rate anomaly, from the `patterns` transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternReport {
    /// Recurring or anomaly.
    pub kind: PatternKind,
    /// The similarity key, e.g. `BackOff | Pod | shop`.
    pub key: String,
    /// Occurrences within the window (recurring) or the current bucket (anomaly).
    pub count: u64,
    /// Occurrences per minute over the window.
    pub per_minute: f64,
    /// For anomalies: how many standard deviations above the key's baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// For anomalies: the expected occurrences per bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// First occurrence since the key was tracked.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub first_seen: Option<Timestamp>,
    /// Latest occurrence.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub last_seen: Option<Timestamp>,
    /// Up to three distinct sample messages.
    pub samples: Vec<String>,
}

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// Just opened: its first trouble event arrived.
    Opened,
    /// More events joined it.
    Updated,
    /// Nothing joined it for the resolve period.
    Resolved,
}

/// The event an incident's trouble started from, and why kollate thinks so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    /// Its reason.
    pub reason: Str,
    /// The object it was about.
    pub object: ObjectRef,
    /// Its message.
    pub message: String,
    /// When it (first) happened.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub timestamp: Option<Timestamp>,
    /// The causal rule that placed it upstream (`"earliest-failure"` when no rule applied,
    /// `"trigger"` for an incident's trigger).
    pub rule: String,
    /// The uid of the Event object.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub uid: Str,
    /// Its resource version when it joined.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub resource_version: Str,
}

/// An object an incident affects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AffectedObject {
    /// Kind.
    pub kind: Str,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub namespace: Str,
    /// Name.
    pub name: Str,
    /// Its top-level owner, e.g. `Deployment shop/cart`, when known.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub owner: Str,
    /// The node it is on, when known.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub node: Str,
}

/// An incident record from the `correlate` transform: related events grouped, with their
/// probable root cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id; member events carry it as `correlation_id`.
    pub id: Str,
    /// Opened, updated or resolved.
    pub status: IncidentStatus,
    /// The worst severity among its members.
    pub severity: Severity,
    /// One line for humans.
    pub summary: String,
    /// The probable root cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<RootCause>,
    /// The change that started the trouble (a rollout, a rescale), when one is known and
    /// is not the root cause itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<RootCause>,
    /// Set on the last record of an incident folded into another one: that one's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<Str>,
    /// Affected objects (at most 50 listed).
    pub objects: Vec<AffectedObject>,
    /// Member events by reason (occurrences).
    pub reasons: BTreeMap<Str, u64>,
    /// Member events (distinct Event objects).
    pub members: u64,
    /// Uids of members that joined after they had passed (the story before the trouble:
    /// the rollout, the pod's scheduling) or that are not trouble; at most 200 listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<Str>,
    /// Earliest occurrence among members.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub first_seen: Option<Timestamp>,
    /// Latest occurrence among members.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub last_seen: Option<Timestamp>,
}

/// An event series (`series` in both APIs): repeated occurrences of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Occurrences in the series so far.
    pub count: u64,
    /// When the last occurrence was observed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub last_observed: Option<Timestamp>,
}

/// What the `aggregate` transform adds to the one event it emits for a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregation {
    /// The normalised grouping key.
    pub key: String,
    /// Occurrences in the group (Kubernetes' own repeats counted once each).
    pub count: u64,
    /// Distinct event objects (uids) that fed the group.
    pub events: u64,
    /// Earliest occurrence.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub first_seen: Option<Timestamp>,
    /// Latest occurrence.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub last_seen: Option<Timestamp>,
    /// Up to three distinct sample messages.
    pub samples: Vec<String>,
}

/// One Kubernetes Event, whichever API it came from, plus kollate's enrichment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `metadata.uid` of the Event object.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub uid: Str,
    /// `metadata.name` of the Event object.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub name: Str,
    /// `metadata.namespace` of the Event object.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub namespace: Str,
    /// `metadata.resourceVersion` of the Event object.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub resource_version: Str,
    /// The API the event came from: `v1` or `events.k8s.io/v1` (empty when the input said none).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub api_version: Str,
    /// `Normal` or `Warning` (empty in some bootstrap events).
    #[serde(rename = "type", default, skip_serializing_if = "Str::is_empty")]
    pub event_type: Str,
    /// Machine-readable reason, e.g. `BackOff`.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub reason: Str,
    /// Human-readable message (`message` / `note`), without the client aggregator's prefix.
    #[serde(default)]
    pub message: String,
    /// True when the client-side aggregator merged similar events into this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub combined: bool,
    /// What was done (`action`, events.k8s.io), e.g. `Binding`.
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub action: Str,
    /// The object the event is about (`involvedObject` / `regarding`).
    #[serde(default)]
    pub object: ObjectRef,
    /// A secondary object (`related`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<Box<ObjectRef>>,
    /// Who reported it (`reportingController` / `reportingComponent` / `source.component`).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub reporting_controller: Str,
    /// Which instance reported it (`reportingInstance`).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub reporting_instance: Str,
    /// The node the event happened on (`source.host`, or the kubelet's reporting instance).
    #[serde(default, skip_serializing_if = "Str::is_empty")]
    pub host: Str,
    /// Occurrences this object stands for (`count` / `deprecatedCount` / `series.count`; at least 1).
    pub count: u64,
    /// First occurrence (`firstTimestamp` / `deprecatedFirstTimestamp`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub first_timestamp: Option<Timestamp>,
    /// Last occurrence (`lastTimestamp` / `deprecatedLastTimestamp`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub last_timestamp: Option<Timestamp>,
    /// Microsecond-precision time of the first occurrence (`eventTime`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub event_time: Option<Timestamp>,
    /// The series, when the event is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
    /// When the latest occurrence happened: the best of the times above.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub timestamp: Option<Timestamp>,
    /// Severity from the `classify` transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Category from the `classify` transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Incident this event belongs to (the `correlate` transform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Str>,
    /// Free-form labels added by rules and plugins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<Str, Str>,
    /// About the involved object, from the source's `enrich` option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Box<Enrichment>>,
    /// Set on the events the `aggregate` transform emits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Box<Aggregation>>,
    /// Set on the incident records the `correlate` transform emits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Box<Incident>>,
    /// Set on the records the `patterns` transform emits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Box<PatternReport>>,
    /// Set on the alert records the `alert` transform emits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Box<Alert>>,
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// It no longer does.
    Resolved,
}

/// An alert from the `alert` transform, for the `alertmanager` and `webhook` sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name (`alertname`).
    pub name: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Identity of the alert: rule name plus its grouping values.
    pub fingerprint: String,
    /// Labels (`alertname` included).
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`...).
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(serialize_with = "ser_time")]
    pub starts_at: Option<Timestamp>,
    /// When it was resolved (resolved alerts only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_time"
    )]
    pub ends_at: Option<Timestamp>,
}

/// Why an object could not become an [`Event`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The object's `apiVersion` is not one of the Event APIs.
    #[error("unsupported apiVersion {0:?} (expected v1 or events.k8s.io/v1)")]
    UnsupportedApiVersion(String),
    /// The object is some other kind of resource.
    #[error("not an Event: kind is {0:?}")]
    NotAnEvent(String),
    /// The object carries none of the fields an Event has.
    #[error("not an Event: no reason, involved object or message")]
    Empty,
}

impl Event {
    /// The occurrence count a recurrence is measured by.
    pub fn occurrences(&self) -> u64 {
        self.count.max(1)
    }
}
