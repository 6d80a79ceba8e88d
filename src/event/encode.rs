//! Encoding: an [`Event`] as one line of JSON in the schema of `docs/schema.md`.
//!
//! The encoder is written out by hand because it is half of the per-event cost of a
//! pipeline: keys are constant bytes, strings are checked for characters needing escape
//! eight bytes at a time, timestamps are formatted into a stack buffer. The serde
//! `Serialize` derive on [`Event`] is the reference definition of the schema, and the tests
//! check that both produce the same bytes.

use chrono::Datelike;

use super::{Aggregation, Enrichment, Event, ObjectRef, Series, Str, Timestamp};

impl Event {
    /// Encodes the event as one line of JSON (without the newline) onto `out`.
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        out.reserve(self.message.len() + 768);
        let mut o = Object::open(out);
        o.str("uid", &self.uid);
        o.str("name", &self.name);
        o.str("namespace", &self.namespace);
        o.str("resource_version", &self.resource_version);
        o.str("api_version", &self.api_version);
        o.str("type", &self.event_type);
        o.str("reason", &self.reason);
        o.key("message");
        write_str(o.out, &self.message);
        if self.combined {
            o.key("combined");
            o.out.extend_from_slice(b"true");
        }
        o.str("action", &self.action);
        o.key("object");
        object_ref(o.out, &self.object);
        if let Some(related) = &self.related {
            o.key("related");
            object_ref(o.out, related);
        }
        o.str("reporting_controller", &self.reporting_controller);
        o.str("reporting_instance", &self.reporting_instance);
        o.str("host", &self.host);
        o.u64("count", self.count);
        o.time("first_timestamp", self.first_timestamp);
        o.time("last_timestamp", self.last_timestamp);
        o.time("event_time", self.event_time);
        if let Some(series) = &self.series {
            o.key("series");
            series_json(o.out, series);
        }
        o.time("timestamp", self.timestamp);
        if let Some(s) = self.severity {
            o.str("severity", s.as_str());
        }
        if let Some(c) = self.category {
            o.str("category", c.as_str());
        }
        if let Some(id) = &self.correlation_id {
            o.key("correlation_id");
            write_str(o.out, id);
        }
        if !self.labels.is_empty() {
            o.key("labels");
            labels_json(o.out, &self.labels);
        }
        if let Some(e) = &self.enrichment {
            o.key("enrichment");
            enrichment_json(o.out, e);
        }
        if let Some(a) = &self.aggregation {
            o.key("aggregation");
            aggregation_json(o.out, a);
        }
        if let Some(incident) = &self.incident {
            // Rare (one per incident change): the serde definition writes it.
            o.key("incident");
            serde_json::to_writer(&mut *o.out, incident).expect("writing to a Vec cannot fail");
        }
        if let Some(pattern) = &self.pattern {
            o.key("pattern");
            serde_json::to_writer(&mut *o.out, pattern).expect("writing to a Vec cannot fail");
        }
        if let Some(alert) = &self.alert {
            o.key("alert");
            serde_json::to_writer(&mut *o.out, alert).expect("writing to a Vec cannot fail");
        }
        o.close();
    }
}

/// Writes a JSON object field by field.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// A key known to need no escaping (the schema's own).
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A key from data (labels), escaped.
    fn data_key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
    }

    /// A string field, omitted when empty.
    fn str(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.key(key);
            write_str(self.out, value);
        }
    }

    fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A timestamp field, omitted when absent.
    fn time(&mut self, key: &str, value: Option<Timestamp>) {
        if let Some(t) = value {
            self.key(key);
            let mut buf = [0u8; 40];
            let n = format_time(&t, &mut buf);
            self.out.push(b'"');
            self.out.extend_from_slice(&buf[..n]);
            self.out.push(b'"');
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn object_ref(out: &mut Vec<u8>, r: &ObjectRef) {
    let mut o = Object::open(out);
    o.str("kind", &r.kind);
    o.str("namespace", &r.namespace);
    o.str("name", &r.name);
    o.str("uid", &r.uid);
    o.str("api_version", &r.api_version);
    o.str("resource_version", &r.resource_version);
    o.str("field_path", &r.field_path);
    o.close();
}

fn labels_json(out: &mut Vec<u8>, labels: &std::collections::BTreeMap<Str, Str>) {
    let mut l = Object::open(out);
    for (k, v) in labels {
        l.data_key(k);
        write_str(l.out, v);
    }
    l.close();
}

fn enrichment_json(out: &mut Vec<u8>, e: &Enrichment) {
    let mut o = Object::open(out);
    if !e.owners.is_empty() {
        o.key("owners");
        o.out.push(b'[');
        for (i, owner) in e.owners.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            let mut w = Object::open(o.out);
            w.key("kind");
            write_str(w.out, &owner.kind);
            w.key("name");
            write_str(w.out, &owner.name);
            w.close();
        }
        o.out.push(b']');
    }
    o.str("node", &e.node);
    if !e.labels.is_empty() {
        o.key("labels");
        labels_json(o.out, &e.labels);
    }
    o.close();
}

fn series_json(out: &mut Vec<u8>, s: &Series) {
    let mut o = Object::open(out);
    o.u64("count", s.count);
    o.time("last_observed", s.last_observed);
    o.close();
}

fn aggregation_json(out: &mut Vec<u8>, a: &Aggregation) {
    let mut o = Object::open(out);
    o.key("key");
    write_str(o.out, &a.key);
    o.u64("count", a.count);
    o.u64("events", a.events);
    o.time("first_seen", a.first_seen);
    o.time("last_seen", a.last_seen);
    o.key("samples");
    o.out.push(b'[');
    for (i, s) in a.samples.iter().enumerate() {
        if i > 0 {
            o.out.push(b',');
        }
        write_str(o.out, s);
    }
    o.out.push(b']');
    o.close();
}

/// Writes `s` as a JSON string: quotes, backslashes and control characters escaped, the
/// rest (UTF-8 included) as it is, like serde_json. Clean runs are found eight bytes at a
/// time and copied whole.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let word = match bytes.get(i..i + 8) {
            Some(eight) => u64::from_le_bytes(eight.try_into().expect("eight bytes")),
            None => {
                // The tail, padded with spaces (which need no escape).
                let mut padded = [b' '; 8];
                padded[..bytes.len() - i].copy_from_slice(&bytes[i..]);
                u64::from_le_bytes(padded)
            }
        };
        if !needs_escape(word) {
            i += 8;
            continue;
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ],
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            i += 1;
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// True when any byte of `word` is a quote, a backslash or a control character.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit (ASCII bytes only;
    // UTF-8 bytes have the high bit set already and are excluded by `!word`).
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0;
    control
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// Formats a timestamp as RFC 3339 in UTC (`2024-01-02T03:04:05Z`, with as many fractional
/// digits as it has: milli-, micro- or nanoseconds), the way Kubernetes writes them.
///
/// Written by hand into a stack buffer: going through `Display` costs an escape pass per
/// fragment in a JSON encoder, a tenth of the whole pipeline's time.
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

/// Serialises a timestamp field for the serde `Serialize` derive, the same way.
pub(super) fn ser_time<S: serde::Serializer>(
    t: &Option<Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => {
            let mut buf = [0u8; 40];
            let n = format_time(t, &mut buf);
            s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
        }
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Category, Owner, Severity, decode_json, parse_time};

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
    fn the_fast_encoder_writes_exactly_what_the_serde_definition_does() {
        let mut e = decode_json(
            br#"{"apiVersion":"v1","metadata":{"uid":"u\u0001","name":"n"},"reason":"Pulled","message":"tab\tquote\" back\\ caf\u00e9 \u001f end of a longer line","involvedObject":{"kind":"Pod","name":"p"},"related":{"kind":"Node","name":"n-1"},"count":3,"firstTimestamp":"2024-01-01T00:00:00Z","eventTime":"2024-01-01T00:00:00.123456Z","series":{"count":3,"lastObservedTime":"2024-01-01T00:00:09Z"}}"#,
        )
        .unwrap();
        e.severity = Some(Severity::Warning);
        e.category = Some(Category::Image);
        e.correlation_id = Some("inc-1".into());
        e.combined = true;
        e.labels.insert("team".into(), "a\"b".into());
        e.enrichment = Some(Box::new(Enrichment {
            owners: vec![
                Owner {
                    kind: "ReplicaSet".into(),
                    name: "shop-7d9".into(),
                },
                Owner {
                    kind: "Deployment".into(),
                    name: "shop".into(),
                },
            ],
            node: "n-1".into(),
            labels: [("app".into(), "shop".into())].into(),
        }));
        e.aggregation = Some(Box::new(Aggregation {
            key: "k".into(),
            count: 3,
            events: 1,
            first_seen: e.first_timestamp,
            last_seen: e.timestamp,
            samples: vec!["x".into(), "y\n".into()],
        }));
        let mut fast = Vec::new();
        e.encode_json(&mut fast);
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            serde_json::to_string(&e).unwrap()
        );
        // Every ASCII character, at every position of an eight-byte word.
        for c in 0u8..128 {
            for pad in 0..9 {
                let plain = Event {
                    message: format!("{}{}ijklmnopé", "a".repeat(pad), c as char),
                    ..Event::default()
                };
                let mut fast = Vec::new();
                plain.encode_json(&mut fast);
                let reference = serde_json::to_string(&plain).unwrap();
                assert_eq!(String::from_utf8(fast).unwrap(), reference);
            }
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
