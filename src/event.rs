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

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use compact_str::CompactString;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

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
    /// Set on the events the `aggregate` transform emits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Box<Aggregation>>,
}

impl Event {
    /// Encodes the event as one line of JSON (without the newline) onto `out`.
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, and every field serialises infallibly. sonic-rs
        // escapes strings with SIMD: the encoder is a third of the per-event cost otherwise.
        sonic_rs::to_writer(out, self).expect("event serialisation is infallible");
    }

    /// The occurrence count a recurrence is measured by.
    pub fn occurrences(&self) -> u64 {
        self.count.max(1)
    }
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

/// A decoded input object, before it is known to be an event, a list or a watch frame.
///
/// Field names follow both Event APIs; aliases accept the capitalised Go-struct form.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEvent<'a> {
    #[serde(default, deserialize_with = "lenient_str")]
    api_version: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    kind: Str,
    #[serde(default)]
    metadata: Option<RawMeta>,
    // The Go-struct form flattens metadata into the item.
    #[serde(default, deserialize_with = "lenient_str")]
    name: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    namespace: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    uid: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    resource_version: Str,
    #[serde(default, deserialize_with = "lenient_time")]
    creation_timestamp: Option<Timestamp>,
    #[serde(default, alias = "InvolvedObject")]
    involved_object: Option<RawRef>,
    #[serde(default)]
    regarding: Option<RawRef>,
    #[serde(default, alias = "Related")]
    related: Option<RawRef>,
    #[serde(default, alias = "Reason", deserialize_with = "lenient_str")]
    reason: Str,
    #[serde(default, alias = "Message", deserialize_with = "lenient_string")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    note: Option<String>,
    #[serde(
        default,
        rename = "type",
        alias = "Type",
        deserialize_with = "lenient_str"
    )]
    event_type: Str,
    #[serde(default, alias = "Action", deserialize_with = "lenient_str")]
    action: Str,
    #[serde(default, alias = "Source")]
    source: Option<RawSource>,
    #[serde(default)]
    deprecated_source: Option<RawSource>,
    #[serde(default, deserialize_with = "lenient_str")]
    reporting_component: Str,
    #[serde(
        default,
        alias = "ReportingController",
        deserialize_with = "lenient_str"
    )]
    reporting_controller: Str,
    #[serde(default, alias = "ReportingInstance", deserialize_with = "lenient_str")]
    reporting_instance: Str,
    #[serde(default, alias = "Count", deserialize_with = "lenient_count")]
    count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_count")]
    deprecated_count: Option<u64>,
    #[serde(default, alias = "FirstTimestamp", deserialize_with = "lenient_time")]
    first_timestamp: Option<Timestamp>,
    #[serde(default, alias = "LastTimestamp", deserialize_with = "lenient_time")]
    last_timestamp: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_time")]
    deprecated_first_timestamp: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_time")]
    deprecated_last_timestamp: Option<Timestamp>,
    #[serde(default, alias = "EventTime", deserialize_with = "lenient_time")]
    event_time: Option<Timestamp>,
    #[serde(default, alias = "Series")]
    series: Option<RawSeries>,
    /// `items` of a List / EventList (JSON input only).
    #[serde(default, borrow, alias = "Items")]
    pub(crate) items: Option<Vec<&'a serde_json::value::RawValue>>,
    /// `object` of a watch frame (`{"type": "ADDED", "object": {...}}`).
    #[serde(default, borrow)]
    pub(crate) object: Option<Box<RawEvent<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    #[serde(default, deserialize_with = "lenient_str")]
    name: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    namespace: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    uid: Str,
    #[serde(default, deserialize_with = "lenient_str")]
    resource_version: Str,
    #[serde(default, deserialize_with = "lenient_time")]
    creation_timestamp: Option<Timestamp>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRef {
    #[serde(default, alias = "Kind", deserialize_with = "lenient_str")]
    kind: Str,
    #[serde(default, alias = "Namespace", deserialize_with = "lenient_str")]
    namespace: Str,
    #[serde(default, alias = "Name", deserialize_with = "lenient_str")]
    name: Str,
    #[serde(default, alias = "UID", deserialize_with = "lenient_str")]
    uid: Str,
    #[serde(default, alias = "APIVersion", deserialize_with = "lenient_str")]
    api_version: Str,
    #[serde(default, alias = "ResourceVersion", deserialize_with = "lenient_str")]
    resource_version: Str,
    #[serde(default, alias = "FieldPath", deserialize_with = "lenient_str")]
    field_path: Str,
}

#[derive(Deserialize, Default)]
struct RawSource {
    #[serde(default, alias = "Component", deserialize_with = "lenient_str")]
    component: Str,
    #[serde(default, alias = "Host", deserialize_with = "lenient_str")]
    host: Str,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSeries {
    #[serde(default, alias = "Count", deserialize_with = "lenient_count")]
    count: Option<u64>,
    #[serde(default, alias = "LastObservedTime", deserialize_with = "lenient_time")]
    last_observed_time: Option<Timestamp>,
}

impl From<RawRef> for ObjectRef {
    fn from(r: RawRef) -> Self {
        ObjectRef {
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
            uid: r.uid,
            api_version: r.api_version,
            resource_version: r.resource_version,
            field_path: r.field_path,
        }
    }
}

fn first_non_empty(a: Str, b: Str) -> Str {
    if a.is_empty() { b } else { a }
}

impl RawEvent<'_> {
    /// The `type` field, which in a watch frame is the watch event type (`ADDED`...).
    pub(crate) fn watch_type(&self) -> &str {
        &self.event_type
    }

    /// Turns the decoded object into an [`Event`], checking that it is one.
    pub(crate) fn into_event(self) -> Result<Event, DecodeError> {
        match self.api_version.as_str() {
            "" | "v1" | "events.k8s.io/v1" | "events.k8s.io/v1beta1" => {}
            other => return Err(DecodeError::UnsupportedApiVersion(other.to_owned())),
        }
        if !self.kind.is_empty() && self.kind != "Event" {
            return Err(DecodeError::NotAnEvent(self.kind.to_string()));
        }
        let object = self.involved_object.or(self.regarding);
        let message = self.message.or(self.note);
        if object.is_none() && message.is_none() && self.reason.is_empty() {
            return Err(DecodeError::Empty);
        }
        let meta = self.metadata.unwrap_or_default();
        let source = self.source.or(self.deprecated_source).unwrap_or_default();
        let series = self.series.map(|s| Series {
            count: s.count.unwrap_or(1),
            last_observed: s.last_observed_time,
        });
        let count = self
            .count
            .or(self.deprecated_count)
            .unwrap_or(0)
            .max(series.as_ref().map_or(0, |s| s.count))
            .max(1);
        let first_timestamp = self.first_timestamp.or(self.deprecated_first_timestamp);
        let last_timestamp = self.last_timestamp.or(self.deprecated_last_timestamp);
        let created = meta.creation_timestamp.or(self.creation_timestamp);
        let timestamp = [
            last_timestamp,
            series.as_ref().and_then(|s| s.last_observed),
            self.event_time,
            first_timestamp,
        ]
        .into_iter()
        .flatten()
        .max()
        .or(created);
        let reporting_controller = first_non_empty(
            first_non_empty(self.reporting_controller, self.reporting_component),
            source.component,
        );
        // The kubelet reports its node name as reportingInstance in events.k8s.io/v1.
        let host = if source.host.is_empty() && reporting_controller == "kubelet" {
            self.reporting_instance.clone()
        } else {
            source.host
        };
        let (message, combined) = match message {
            Some(m) => match m.strip_prefix(COMBINED_PREFIX) {
                Some(rest) => (rest.to_owned(), true),
                None => (m, false),
            },
            None => (String::new(), false),
        };
        Ok(Event {
            uid: first_non_empty(meta.uid, self.uid),
            name: first_non_empty(meta.name, self.name),
            namespace: first_non_empty(meta.namespace, self.namespace),
            resource_version: first_non_empty(meta.resource_version, self.resource_version),
            api_version: self.api_version,
            event_type: self.event_type,
            reason: self.reason,
            message,
            combined,
            action: self.action,
            object: object.map(ObjectRef::from).unwrap_or_default(),
            related: self.related.map(|r| Box::new(r.into())),
            reporting_controller,
            reporting_instance: self.reporting_instance,
            host,
            count,
            first_timestamp,
            last_timestamp,
            event_time: self.event_time,
            series,
            timestamp,
            ..Event::default()
        })
    }
}

/// Decodes one JSON object as an [`Event`].
///
/// # Errors
/// Malformed JSON, or an object that is not an Event.
pub fn decode_json(bytes: &[u8]) -> Result<Event, String> {
    let raw: RawEvent<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    raw.into_event().map_err(|e| e.to_string())
}

// ---- lenient field decoders -------------------------------------------------------------

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
        // Some bundle writers emit the string "null" for missing fields.
        if v == "null" {
            Ok(Str::default())
        } else {
            Ok(Str::new(v))
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<Str, E> {
        Ok(Str::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Str, E> {
        Ok(Str::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Str, D::Error> {
        d.deserialize_any(StrVisitor)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Str, E> {
        Ok(Str::const_new(if v { "true" } else { "false" }))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Str, E> {
        Ok(compact_str::format_compact!("{v}"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Str, E> {
        Ok(compact_str::format_compact!("{v}"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Str, E> {
        Ok(compact_str::format_compact!("{v}"))
    }
}

fn lenient_str<'de, D: Deserializer<'de>>(d: D) -> Result<Str, D::Error> {
    d.deserialize_any(StrVisitor)
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a count")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok((v.is_finite() && v >= 0.0).then_some(v as u64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse().ok())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// Formats a timestamp as RFC 3339 in UTC (`2024-01-02T03:04:05Z`, with as many fractional
/// digits as it has: milli-, micro- or nanoseconds), the way Kubernetes writes them.
///
/// Written by hand into a stack buffer: going through `Display` costs an escape pass per
/// fragment in the JSON encoder, a tenth of the whole pipeline's time.
pub fn format_time(t: &Timestamp, buf: &mut [u8; 40]) -> usize {
    use chrono::Timelike;
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let text = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        return n;
    }
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    let nanos = t.nanosecond() % 1_000_000_000;
    let (frac, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let mut len = 19;
    if digits > 0 {
        put(20, frac, digits);
        buf[19] = b'.';
        len = 20 + digits;
    }
    for (i, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buf[i] = sep;
    }
    buf[len] = b'Z';
    len + 1
}

fn ser_time<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => {
            let mut buf = [0u8; 40];
            let n = format_time(t, &mut buf);
            s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
        }
        None => s.serialize_none(),
    }
}

/// Parses an RFC 3339 timestamp of any precision; Go's zero time and junk become `None`.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let t = DateTime::parse_from_rfc3339(s.trim())
        .ok()?
        .with_timezone(&Utc);
    (t.year() > 1).then_some(t)
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Timestamp>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a timestamp")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(parse_time(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(DateTime::from_timestamp(v, 0))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v)
                .ok()
                .and_then(|v| DateTime::from_timestamp(v, 0)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_v1_event_decodes() {
        let e = decode_json(
            br#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"p.1","namespace":"shop","uid":"u1","resourceVersion":"42"},
            "involvedObject":{"kind":"Pod","namespace":"shop","name":"p","uid":"pu","fieldPath":"spec.containers{app}"},
            "reason":"BackOff","message":"Back-off restarting failed container","type":"Warning",
            "source":{"component":"kubelet","host":"n-7"},"count":5,
            "firstTimestamp":"2024-01-01T00:00:00Z","lastTimestamp":"2024-01-01T00:05:00Z","eventTime":null}"#,
        )
        .unwrap();
        assert_eq!(e.uid, "u1");
        assert_eq!(e.object.kind, "Pod");
        assert_eq!(e.object.field_path, "spec.containers{app}");
        assert_eq!(e.host, "n-7");
        assert_eq!(e.reporting_controller, "kubelet");
        assert_eq!(e.count, 5);
        assert_eq!(e.timestamp, parse_time("2024-01-01T00:05:00Z"));
        assert!(e.event_time.is_none());
    }

    #[test]
    fn events_k8s_io_event_decodes_into_the_same_model() {
        let e = decode_json(
            br#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"p.1","namespace":"shop","uid":"u1"},
            "regarding":{"kind":"Pod","name":"p"},"note":"Started container app","reason":"Started","type":"Normal",
            "reportingController":"kubelet","reportingInstance":"n-7","deprecatedCount":3,
            "eventTime":"2024-01-01T00:00:00.123456Z","series":{"count":4,"lastObservedTime":"2024-01-01T00:09:00.5Z"}}"#,
        )
        .unwrap();
        assert_eq!(e.message, "Started container app");
        assert_eq!(e.object.name, "p");
        assert_eq!(e.host, "n-7", "kubelet's reporting instance is the node");
        assert_eq!(e.count, 4, "series count wins when higher");
        assert_eq!(e.timestamp, parse_time("2024-01-01T00:09:00.5Z"));
    }

    #[test]
    fn capitalised_go_struct_form_decodes() {
        let e = decode_json(
            br#"{"name":"kube-apiserver.1","namespace":"kube-system","uid":"u9","resourceVersion":"161628",
            "InvolvedObject":{"Kind":"Pod","Namespace":"kube-system","Name":"kube-apiserver","UID":"pu","APIVersion":"v1","FieldPath":""},
            "Reason":"NodeControllerEviction","Message":"Marking for deletion","Source":{"Component":"controllermanager","Host":""},
            "FirstTimestamp":"2017-11-03T03:21:47Z","LastTimestamp":"2017-11-03T03:21:47Z","Count":1,"Type":"Normal",
            "EventTime":"0001-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.uid, "u9");
        assert_eq!(e.object.uid, "pu");
        assert_eq!(e.reason, "NodeControllerEviction");
        assert_eq!(e.reporting_controller, "controllermanager");
        assert!(e.event_time.is_none(), "Go zero time is no time");
    }

    #[test]
    fn string_null_and_combined_prefix_are_tolerated() {
        let e = decode_json(
            br#"{"reason":"X","note":"(combined from similar events): Created pod: a","eventTime":"null",
            "reportingComponent":"null","count":"7"}"#,
        )
        .unwrap();
        assert_eq!(e.message, "Created pod: a");
        assert!(e.combined);
        assert!(e.event_time.is_none());
        assert_eq!(e.reporting_controller, "");
        assert_eq!(e.count, 7);
    }

    #[test]
    fn other_kinds_and_api_versions_are_rejected() {
        assert_eq!(
            decode_json(br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#),
            Err(DecodeError::NotAnEvent("Pod".into()).to_string())
        );
        assert_eq!(
            decode_json(br#"{"apiVersion":"example.com/v9","kind":"Event","reason":"X"}"#),
            Err(DecodeError::UnsupportedApiVersion("example.com/v9".into()).to_string())
        );
        assert_eq!(
            decode_json(br#"{"foo":1}"#),
            Err(DecodeError::Empty.to_string())
        );
    }

    #[test]
    fn timestamps_format_like_kubernetes() {
        for text in [
            "2017-11-03T03:21:47Z",
            "2021-06-21T02:29:36.467694Z",
            "2024-01-01T00:09:00.5Z",
            "2024-02-29T23:59:59.000000001Z",
        ] {
            let t = parse_time(text).unwrap();
            let mut buf = [0u8; 40];
            let n = format_time(&t, &mut buf);
            let ours = std::str::from_utf8(&buf[..n]).unwrap();
            assert_eq!(ours, t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
    }

    #[test]
    fn encoding_round_trips() {
        let mut e = decode_json(
            br#"{"reason":"Pulled","message":"ok","involvedObject":{"kind":"Pod","name":"p"}}"#,
        )
        .unwrap();
        e.severity = Some(Severity::Info);
        e.labels.insert("team".into(), "shop".into());
        let mut out = Vec::new();
        e.encode_json(&mut out);
        let back: Event = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, e);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""severity":"info""#), "{text}");
    }
}
