//! Decoding: every shape of Event on disk or on the wire into an [`Event`].
//!
//! [`RawEvent`] names the fields of both Event APIs, with aliases for the capitalised
//! Go-struct form; lenient field decoders accept what real dumps contain (`null`, the
//! string `"null"`, numbers where strings belong, counts as strings, timestamps of any
//! precision or Go's zero time). [`RawEvent::into_event`] then merges the two APIs'
//! fields into one [`Event`] and rejects objects that are not Events.

use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{COMBINED_PREFIX, DecodeError, Event, ObjectRef, Series, Str, Timestamp};

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
    related: Option<Box<RawRef>>,
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
    /// `code` of a `Status` (the object of a watch `ERROR` frame).
    #[serde(default, deserialize_with = "lenient_count")]
    code: Option<u64>,
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
    pub(crate) fn into_event(self: Box<Self>) -> Result<Event, DecodeError> {
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
            related: self.related.map(|r| Box::new((*r).into())),
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

/// One frame of a Kubernetes watch stream (`{"type": ..., "object": ...}`).
// Not boxed: the event is moved once into a batch; a box would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum WatchFrame {
    /// `ADDED` or `MODIFIED`: the object's uid and resourceVersion, and the event (or why
    /// the object is not one).
    Change {
        /// `metadata.uid`.
        uid: String,
        /// `metadata.resourceVersion`.
        resource_version: String,
        /// The decoded event.
        event: Result<Event, DecodeError>,
    },
    /// `DELETED` (TTL expiry: not news).
    Deleted {
        /// `metadata.resourceVersion`.
        resource_version: String,
    },
    /// `BOOKMARK`: progress without a change.
    Bookmark {
        /// `metadata.resourceVersion`.
        resource_version: String,
    },
    /// `ERROR` with the `Status` code (410: the resourceVersion expired) and message.
    Error {
        /// HTTP-style status code.
        code: u64,
        /// Its message.
        message: String,
    },
}

/// Decodes one line of a watch stream, straight from the bytes (one parse, no detour
/// through a generic JSON tree).
///
/// # Errors
/// Malformed JSON or a frame without an object.
pub fn decode_watch_frame(line: &[u8]) -> Result<WatchFrame, String> {
    let frame = match sonic_rs::from_slice::<Box<RawEvent<'_>>>(line) {
        Ok(frame) => frame,
        Err(_) => serde_json::from_slice::<Box<RawEvent<'_>>>(line).map_err(|e| e.to_string())?,
    };
    let kind = frame.event_type.clone();
    let object = frame
        .object
        .ok_or_else(|| "watch frame without an object".to_owned())?;
    let meta = |o: &RawEvent<'_>| {
        let m = o.metadata.as_ref();
        let pick = |from_meta: Option<&Str>, flat: &Str| {
            from_meta
                .filter(|s| !s.is_empty())
                .unwrap_or(flat)
                .to_string()
        };
        (
            pick(m.map(|m| &m.uid), &o.uid),
            pick(m.map(|m| &m.resource_version), &o.resource_version),
        )
    };
    let (uid, resource_version) = meta(&object);
    Ok(match kind.as_str() {
        "DELETED" => WatchFrame::Deleted { resource_version },
        "BOOKMARK" => WatchFrame::Bookmark { resource_version },
        "ERROR" => WatchFrame::Error {
            code: object.code.unwrap_or(0),
            message: object.message.clone().unwrap_or_default(),
        },
        _ => WatchFrame::Change {
            uid,
            resource_version,
            event: object.into_event(),
        },
    })
}

/// Decodes one JSON object as an [`Event`].
///
/// # Errors
/// Malformed JSON, or an object that is not an Event.
pub fn decode_json(bytes: &[u8]) -> Result<Event, String> {
    let raw: Box<RawEvent<'_>> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    raw.into_event().map_err(|e| e.to_string())
}

// ---- lenient field decoders -------------------------------------------------------------

/// `null` (and an absent value) decodes as the type's empty value.
macro_rules! null_is_empty {
    ($empty:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    };
}

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
    null_is_empty!(Str::default());
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
        null_is_empty!(None);
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
        null_is_empty!(None);
    }
    d.deserialize_any(V)
}

/// Parses an RFC 3339 timestamp of any precision; Go's zero time and junk become `None`.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let t = match parse_utc_fast(s.as_bytes()) {
        Some(t) => t,
        None => DateTime::parse_from_rfc3339(s.trim())
            .ok()?
            .with_timezone(&Utc),
    };
    (t.year() > 1).then_some(t)
}

/// The form Kubernetes writes, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, read at fixed
/// positions (a sixth of the cost of a general RFC 3339 parse, and events carry several).
/// Anything else (offsets, spaces, junk) is left to the general parser.
fn parse_utc_fast(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let rest = &b[19..];
    let nanos = match rest {
        [b'Z'] => 0,
        [b'.', digits @ .., b'Z'] if !digits.is_empty() && digits.len() <= 9 => {
            let value = digits.iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })?;
            value * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time =
        chrono::NaiveTime::from_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?;
    Some(date.and_time(time).and_utc())
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
        null_is_empty!(None);
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
    fn the_fast_timestamp_reader_agrees_with_rfc_3339() {
        for text in [
            "2017-11-03T03:21:47Z",
            "2021-06-21T02:29:36.467694Z",
            "2024-01-01T00:09:00.5Z",
            "2024-02-29T23:59:59.000000001Z",
            "2024-02-29T23:59:59+02:00",
            "2024-02-30T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01 00:00:00Z",
            "null",
        ] {
            let general = DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc));
            assert_eq!(parse_time(text), general, "{text}");
        }
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None, "Go's zero time");
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
}
