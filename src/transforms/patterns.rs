//! The `patterns` transform: recurring patterns and rate anomalies, per similarity key.
//!
//! Events are keyed by `key` (default: reason, involved kind, namespace). Per key, counts
//! are kept in buckets of event time (`bucket`, default 1m):
//!
//! - **Recurring**: when the occurrences within the sliding `window` (default 10m, a whole
//!   number of buckets) reach `threshold`, a record goes out (count, rate, first/last seen,
//!   up to three distinct samples); the same key is reported again at most once per window.
//! - **Anomaly**: each key keeps its own baseline, an exponentially weighted mean and
//!   variance of its per-bucket count (`alpha`). After `warmup` buckets, a bucket whose count
//!   reaches `min_count` and stands `anomaly_threshold` standard deviations above the
//!   baseline is reported, once per bucket and then not again for `cooldown` buckets: a
//!   storm is one alert, not one per event.
//!
//! Records are events with reason `PatternDetected` or `RateAnomaly`, a one-line message,
//! and the details under `pattern`. Memory is bounded by `max_keys` (an LRU).

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use serde::Deserialize;

use crate::batch::Batch;
use crate::config::DurationValue;
use crate::event::{Event, ObjectRef, PatternKind, PatternReport, Severity, Timestamp};
use crate::topology::Transform;
use crate::transforms::aggregate::GroupField;

fn default_key() -> Vec<GroupField> {
    vec![GroupField::Reason, GroupField::Kind, GroupField::Namespace]
}
fn default_window() -> DurationValue {
    DurationValue(Duration::from_secs(600))
}
fn default_bucket() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}
fn default_threshold() -> u64 {
    20
}
fn default_alpha() -> f64 {
    0.2
}
fn default_warmup() -> u32 {
    10
}
fn default_anomaly_threshold() -> f64 {
    4.0
}
fn default_min_count() -> u64 {
    10
}
fn default_cooldown() -> u32 {
    10
}
fn default_max_keys() -> usize {
    50_000
}

/// `type = "patterns"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternsTransformConfig {
    /// The similarity key (default `["reason", "kind", "namespace"]`).
    #[serde(default = "default_key")]
    pub key: Vec<GroupField>,
    /// Sliding window for recurring patterns (default 10m).
    #[serde(default = "default_window")]
    pub window: DurationValue,
    /// Bucket of event time (default 1m).
    #[serde(default = "default_bucket")]
    pub bucket: DurationValue,
    /// Occurrences within the window that make a recurring pattern (default 20).
    #[serde(default = "default_threshold")]
    pub threshold: u64,
    /// Weight of the newest bucket in a key's baseline (default 0.2).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Buckets a key needs before it can be anomalous (default 10).
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Standard deviations above the baseline that make an anomaly (default 4).
    #[serde(default = "default_anomaly_threshold")]
    pub anomaly_threshold: f64,
    /// Least occurrences in a bucket for an anomaly (default 10).
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// Buckets after an anomaly before the key can be anomalous again (default 10).
    #[serde(default = "default_cooldown")]
    pub cooldown: u32,
    /// Keys tracked (default 50,000; least recently seen dropped beyond).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl PatternsTransformConfig {
    /// Builds the transform.
    pub fn build(&self) -> Patterns {
        let bucket_ms = (self.bucket.0.as_millis() as i64).max(1);
        let buckets = (self.window.0.as_millis() as i64 / bucket_ms).max(1) as usize;
        Patterns {
            key: self.key.clone(),
            bucket_ms,
            buckets,
            threshold: self.threshold.max(1),
            alpha: self.alpha.clamp(0.001, 1.0),
            warmup: self.warmup,
            anomaly_threshold: self.anomaly_threshold,
            min_count: self.min_count,
            cooldown: self.cooldown,
            keys: LruCache::new(NonZeroUsize::new(self.max_keys.max(1)).expect("non-zero")),
            key_buf: String::new(),
        }
    }
}

/// Per-key state.
struct KeyState {
    /// Bucket index (event time / bucket) of `counts.back()`.
    current: i64,
    /// Counts of the last `buckets` buckets, oldest first.
    counts: VecDeque<u64>,
    first_seen: Option<Timestamp>,
    last_seen: Option<Timestamp>,
    samples: Vec<String>,
    /// Bucket until which recurring reports are held back.
    quiet_until: i64,
    /// Baseline: mean and variance of closed buckets, and how many there were.
    mean: f64,
    variance: f64,
    closed: u32,
    /// Bucket until which anomalies are held back.
    calm_until: i64,
}

/// The running transform.
pub struct Patterns {
    key: Vec<GroupField>,
    bucket_ms: i64,
    buckets: usize,
    threshold: u64,
    alpha: f64,
    warmup: u32,
    anomaly_threshold: f64,
    min_count: u64,
    cooldown: u32,
    keys: LruCache<String, KeyState>,
    key_buf: String,
}

impl Patterns {
    fn observe(&mut self, e: &Event, records: &mut Vec<Event>) {
        let Some(t) = e.timestamp else {
            return;
        };
        if e.incident.is_some() || e.pattern.is_some() || e.alert.is_some() {
            return;
        }
        self.key_buf.clear();
        for (i, field) in self.key.iter().enumerate() {
            if i > 0 {
                self.key_buf.push_str(" | ");
            }
            field.append(e, &mut self.key_buf);
        }
        let bucket = t.timestamp_millis().div_euclid(self.bucket_ms);
        let (alpha, buckets) = (self.alpha, self.buckets);
        if !self.keys.contains(self.key_buf.as_str()) {
            self.keys.put(
                self.key_buf.clone(),
                KeyState {
                    current: bucket,
                    counts: VecDeque::from([0]),
                    first_seen: None,
                    last_seen: None,
                    samples: Vec::new(),
                    quiet_until: i64::MIN,
                    mean: 0.0,
                    variance: 0.0,
                    closed: 0,
                    calm_until: i64::MIN,
                },
            );
        }
        let state = self.keys.get_mut(self.key_buf.as_str()).expect("present");
        // Close the buckets between the last one and this one (late events count in the
        // current bucket).
        let gap = (bucket - state.current).clamp(0, buckets as i64 + 64);
        for _ in 0..gap {
            let done = *state.counts.back().unwrap_or(&0) as f64;
            let diff = done - state.mean;
            let incr = alpha * diff;
            state.mean += incr;
            state.variance = (1.0 - alpha) * (state.variance + diff * incr);
            state.closed = state.closed.saturating_add(1);
            state.counts.push_back(0);
            if state.counts.len() > buckets {
                state.counts.pop_front();
            }
        }
        state.current = state.current.max(bucket);
        let n = e.occurrences();
        *state.counts.back_mut().expect("one bucket at least") += n;
        state.last_seen = Some(state.last_seen.map_or(t, |l| l.max(t)));
        state.first_seen = Some(state.first_seen.map_or(t, |f| f.min(t)));
        if state.samples.len() < 3 && !state.samples.contains(&e.message) {
            state.samples.push(e.message.chars().take(300).collect());
        }
        let in_window: u64 = state.counts.iter().sum();
        let window_minutes = (self.bucket_ms as f64 * state.counts.len() as f64) / 60_000.0;
        if in_window >= self.threshold && bucket >= state.quiet_until {
            state.quiet_until = bucket + buckets as i64;
            let report = PatternReport {
                kind: PatternKind::Recurring,
                key: self.key_buf.clone(),
                count: in_window,
                per_minute: in_window as f64 / window_minutes.max(1e-9),
                score: None,
                baseline: None,
                first_seen: state.first_seen,
                last_seen: state.last_seen,
                samples: state.samples.clone(),
            };
            records.push(record(e, report));
        }
        let now = *state.counts.back().expect("one bucket at least");
        let deviation = state.variance.sqrt().max(1.0);
        let score = (now as f64 - state.mean) / deviation;
        if state.closed >= self.warmup
            && now >= self.min_count
            && score >= self.anomaly_threshold
            && bucket >= state.calm_until
        {
            state.calm_until = bucket + 1 + i64::from(self.cooldown);
            let report = PatternReport {
                kind: PatternKind::Anomaly,
                key: self.key_buf.clone(),
                count: now,
                per_minute: now as f64 * 60_000.0 / self.bucket_ms as f64,
                score: Some((score * 100.0).round() / 100.0),
                baseline: Some((state.mean * 100.0).round() / 100.0),
                first_seen: state.first_seen,
                last_seen: state.last_seen,
                samples: state.samples.clone(),
            };
            records.push(record(e, report));
        }
    }
}

/// A pattern record, about what `e` is about.
fn record(e: &Event, report: PatternReport) -> Event {
    let (reason, message) = match report.kind {
        PatternKind::Recurring => (
            "PatternDetected",
            format!(
                "{} x{} in the window ({:.1}/min)",
                report.key, report.count, report.per_minute
            ),
        ),
        PatternKind::Anomaly => (
            "RateAnomaly",
            format!(
                "{}: {} this bucket, {:.1} sigma above its usual {:.1}",
                report.key,
                report.count,
                report.score.unwrap_or_default(),
                report.baseline.unwrap_or_default()
            ),
        ),
    };
    Event {
        uid: format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                format!("{reason}/{}/{:?}", report.key, report.last_seen).as_bytes()
            )
        )
        .into(),
        namespace: e.namespace.clone(),
        event_type: "Warning".into(),
        reason: reason.into(),
        message,
        object: ObjectRef {
            kind: e.object.kind.clone(),
            namespace: e.object.namespace.clone(),
            ..ObjectRef::default()
        },
        reporting_controller: "kollate/patterns".into(),
        count: report.count,
        timestamp: report.last_seen,
        first_timestamp: report.first_seen,
        last_timestamp: report.last_seen,
        severity: Some(match report.kind {
            PatternKind::Anomaly => Severity::Error,
            PatternKind::Recurring => e
                .severity
                .unwrap_or(Severity::Warning)
                .max(Severity::Warning),
        }),
        category: e.category,
        pattern: Some(Box::new(report)),
        ..Event::default()
    }
}

impl Transform for Patterns {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let mut records = Vec::new();
        for e in &batch.events {
            self.observe(e, &mut records);
        }
        batch.events.append(&mut records);
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_time;

    fn event(reason: &str, at: &str) -> Event {
        Event {
            reason: reason.into(),
            namespace: "shop".into(),
            message: format!("{reason} happened"),
            object: ObjectRef {
                kind: "Pod".into(),
                namespace: "shop".into(),
                name: "p".into(),
                ..ObjectRef::default()
            },
            count: 1,
            timestamp: parse_time(at),
            ..Event::default()
        }
    }

    fn config(extra: &str) -> PatternsTransformConfig {
        toml::from_str(extra).unwrap()
    }

    fn run(p: &mut Patterns, events: Vec<Event>) -> Vec<PatternReport> {
        let mut out = Vec::new();
        p.process(Batch::new(events), &mut out);
        out.into_iter()
            .flat_map(|b| b.events)
            .filter_map(|e| e.pattern.map(|p| *p))
            .collect()
    }

    #[test]
    fn a_recurring_pattern_is_reported_once_per_window() {
        let mut p = config("threshold = 5\nwindow = \"10m\"").build();
        let events = (0..12)
            .map(|i| event("BackOff", &format!("2024-01-01T00:0{}:00Z", i % 10)))
            .collect::<Vec<_>>();
        let found = run(&mut p, events);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, PatternKind::Recurring);
        assert_eq!(found[0].count, 5);
        assert_eq!(found[0].key, "BackOff | Pod | shop");
        assert_eq!(found[0].samples, vec!["BackOff happened".to_owned()]);
    }

    #[test]
    fn a_rate_far_above_its_own_history_is_an_anomaly_once_per_storm() {
        let mut p = config("threshold = 1000000\nwarmup = 10\nmin_count = 10").build();
        // Two hours of 2-3 events a minute: the baseline. Nothing anomalous.
        let mut events = Vec::new();
        for minute in 0..120 {
            for k in 0..(2 + minute % 2) {
                let t = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap()
                    + chrono::Duration::seconds(minute * 60 + k * 7);
                events.push(event("Unhealthy", &t.to_rfc3339()));
            }
        }
        assert!(
            run(&mut p, events).is_empty(),
            "a steady rate is not anomalous"
        );
        // Then a storm: 200 in two minutes.
        let storm = (0..200)
            .map(|k| {
                let t = chrono::DateTime::parse_from_rfc3339("2024-01-01T02:00:00Z").unwrap()
                    + chrono::Duration::milliseconds(k * 600);
                event("Unhealthy", &t.to_rfc3339())
            })
            .collect();
        let found = run(&mut p, storm);
        assert_eq!(found.len(), 1, "one anomaly per storm: {found:?}");
        assert_eq!(found[0].kind, PatternKind::Anomaly);
        assert!(found[0].score.unwrap() >= 4.0);
        assert!(found[0].baseline.unwrap() < 4.0);
    }
}
