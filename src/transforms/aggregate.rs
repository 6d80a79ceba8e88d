//! The `aggregate` transform: one event per group of similar events per time window.
//!
//! Events are grouped by a key (default: namespace, involved object kind and name, reason,
//! and the message with its volatile parts normalised: numbers, ids, durations, IP
//! addresses, generated name suffixes, and the order of `[a b c]` lists) into tumbling
//! windows of **event time** (`window`, default 5m). A window closes once the newest event
//! time seen is `allowed_lateness` past its end, or, when input goes quiet, once as much
//! wall-clock time has passed: replays of old dumps aggregate exactly as the live stream
//! did, and a live stream's groups are not held forever when it pauses.
//!
//! Kubernetes' own repeats are understood: an Event object that comes back with a higher
//! `count` (or `series.count`) adds only the new occurrences; one that comes back with the
//! same count (a relist, or the same event in the other API shape) adds nothing and is
//! counted as discarded. The memory of counts per uid is an LRU of `max_tracked_uids`.
//!
//! Everything is bounded: at most `max_groups` open groups (when full, the group whose
//! window ends first is emitted early), at most `max_samples` sample messages per group.
//! Each group holds the acknowledgement handles of the batches that fed it, so a source
//! never checkpoints past events still waiting in a window. Open groups are flushed when
//! the input ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lru::LruCache;
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::batch::{Batch, BatchNotifier, push_notifier};
use crate::condition::namespace_of;
use crate::config::DurationValue;
use crate::event::{Aggregation, Event, Severity, Timestamp};
use crate::metrics::ComponentMetrics;
use crate::topology::Transform;

/// Default window length.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Default lateness allowed after a window's end before it closes.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(60);
/// Default bound on open groups.
pub const DEFAULT_MAX_GROUPS: usize = 100_000;
/// Default bound on remembered per-uid counts.
pub const DEFAULT_MAX_TRACKED_UIDS: usize = 200_000;
/// Default number of sample messages kept per group.
pub const DEFAULT_MAX_SAMPLES: usize = 3;
/// How often windows are checked against the wall clock.
const TICK: Duration = Duration::from_secs(1);
/// Most groups emitted per call, so closed groups go downstream in bounded steps.
const EMIT_CHUNK: usize = 4096;

/// A field the grouping key can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupField {
    /// The namespace the event is about.
    Namespace,
    /// The involved object's kind.
    Kind,
    /// The involved object's name.
    Name,
    /// The reason.
    Reason,
    /// The message, normalised.
    Message,
    /// `Normal` / `Warning`.
    Type,
    /// The node.
    Host,
    /// The reporting controller.
    ReportingController,
    /// The classified severity.
    Severity,
    /// The classified category.
    Category,
}

impl GroupField {
    /// Appends this field of `e` to a key.
    pub fn append(self, e: &Event, key: &mut String) {
        match self {
            GroupField::Namespace => key.push_str(namespace_of(e)),
            GroupField::Kind => key.push_str(&e.object.kind),
            GroupField::Name => key.push_str(&e.object.name),
            GroupField::Reason => key.push_str(&e.reason),
            GroupField::Message => normalize_message(&e.message, key),
            GroupField::Type => key.push_str(&e.event_type),
            GroupField::Host => key.push_str(&e.host),
            GroupField::ReportingController => key.push_str(&e.reporting_controller),
            GroupField::Severity => key.push_str(e.severity.map_or("", |s| s.as_str())),
            GroupField::Category => key.push_str(e.category.map_or("", |c| c.as_str())),
        }
    }
}

fn default_group_by() -> Vec<GroupField> {
    use GroupField::*;
    vec![Namespace, Kind, Name, Reason, Message]
}
fn default_window() -> DurationValue {
    DurationValue(DEFAULT_WINDOW)
}
fn default_lateness() -> DurationValue {
    DurationValue(DEFAULT_ALLOWED_LATENESS)
}
fn default_max_groups() -> usize {
    DEFAULT_MAX_GROUPS
}
fn default_max_uids() -> usize {
    DEFAULT_MAX_TRACKED_UIDS
}
fn default_max_samples() -> usize {
    DEFAULT_MAX_SAMPLES
}

/// `type = "aggregate"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateTransformConfig {
    /// Window length, in event time (default 5m).
    #[serde(default = "default_window")]
    pub window: DurationValue,
    /// How long after a window's end late events may still join it (default 1m).
    #[serde(default = "default_lateness")]
    pub allowed_lateness: DurationValue,
    /// Fields of the grouping key (default namespace, kind, name, reason, message).
    #[serde(default = "default_group_by")]
    pub group_by: Vec<GroupField>,
    /// Most groups open at once; beyond it the group closing soonest is emitted early.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Most event uids whose last count is remembered (to count repeats once).
    #[serde(default = "default_max_uids")]
    pub max_tracked_uids: usize,
    /// Distinct sample messages kept per group.
    #[serde(default = "default_max_samples")]
    pub max_samples: usize,
}

impl AggregateTransformConfig {
    /// Builds the transform.
    pub fn build(&self, metrics: Arc<ComponentMetrics>) -> Aggregate {
        let window = chrono::Duration::from_std(self.window.0.max(Duration::from_millis(1)))
            .unwrap_or(chrono::Duration::MAX);
        Aggregate {
            window,
            lateness: chrono::Duration::from_std(self.allowed_lateness.0)
                .unwrap_or(chrono::Duration::zero()),
            group_by: self.group_by.clone(),
            max_groups: self.max_groups.max(1),
            max_samples: self.max_samples,
            groups: HashMap::new(),
            closing: BinaryHeap::new(),
            seen: LruCache::new(NonZeroUsize::new(self.max_tracked_uids.max(1)).expect("non-zero")),
            watermark: None,
            last_input: Instant::now(),
            next_id: 0,
            metrics,
            key_buf: String::new(),
        }
    }
}

struct Group {
    id: u64,
    /// Start of the group's window (with the template, it gives back the key).
    window_start: Timestamp,
    template: Event,
    count: u64,
    events: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    /// Messages other than the template's.
    samples: Vec<String>,
    severity: Option<Severity>,
    notifiers: Vec<BatchNotifier>,
}

/// The running transform.
pub struct Aggregate {
    window: chrono::Duration,
    lateness: chrono::Duration,
    group_by: Vec<GroupField>,
    max_groups: usize,
    max_samples: usize,
    /// Open groups by the 64-bit hash of their key (the key itself is rebuilt from the
    /// group's first event when it is emitted: it is most of a group's memory otherwise).
    /// Boxed, so the table holds small entries: a table of inline groups wastes its empty
    /// slots and, while it grows, holds two copies of everything.
    groups: HashMap<u64, Box<Group>>,
    /// Groups by closing time: (closes at, group id, key hash).
    closing: BinaryHeap<Reverse<(Timestamp, u64, u64)>>,
    /// Last count seen per event uid (by hash).
    seen: LruCache<u64, u64>,
    watermark: Option<Timestamp>,
    last_input: Instant,
    next_id: u64,
    metrics: Arc<ComponentMetrics>,
    key_buf: String,
}

impl Aggregate {
    /// Number of open groups.
    pub fn open_groups(&self) -> usize {
        self.groups.len()
    }

    fn window_start(&self, t: Timestamp) -> Timestamp {
        let w = self.window.num_milliseconds().max(1);
        let ms = t.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(w)).unwrap_or(t)
    }

    /// Builds the grouping key into `key_buf` and returns its hash.
    fn build_key(&mut self, e: &Event, window_start: Timestamp) -> u64 {
        let key = &mut self.key_buf;
        key.clear();
        for (i, field) in self.group_by.iter().enumerate() {
            if i > 0 {
                key.push_str(" | ");
            }
            field.append(e, key);
        }
        key.push_str(" @ ");
        key.push_str(&window_start.timestamp_millis().to_string());
        xxh3_64(key.as_bytes())
    }

    /// New occurrences this event stands for: 0 for a repeat of a count already seen.
    fn new_occurrences(&mut self, e: &Event) -> (u64, bool) {
        let count = e.occurrences();
        if e.uid.is_empty() {
            return (count, true);
        }
        let uid = xxh3_64(e.uid.as_bytes());
        match self.seen.get_mut(&uid) {
            Some(prev) if count <= *prev => (0, false),
            Some(prev) => {
                let delta = count - *prev;
                *prev = count;
                (delta, false)
            }
            None => {
                self.seen.put(uid, count);
                (count, true)
            }
        }
    }

    fn add(&mut self, e: Event, notifiers: &[BatchNotifier], out: &mut Vec<Batch>) {
        let (delta, first_sight) = self.new_occurrences(&e);
        if delta == 0 {
            ComponentMetrics::add(&self.metrics.discarded, 1);
            return;
        }
        let t = e.timestamp.unwrap_or_else(Utc::now);
        let start = self.window_start(t);
        let key = self.build_key(&e, start);
        if !self.groups.contains_key(&key) {
            while self.groups.len() >= self.max_groups {
                if !self.close_next(out) {
                    break;
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            self.closing
                .push(Reverse((start + self.window + self.lateness, id, key)));
            let group = Group {
                id,
                window_start: start,
                template: Event {
                    aggregation: None,
                    ..e.clone()
                },
                count: 0,
                events: 0,
                first: None,
                last: None,
                samples: Vec::new(),
                severity: None,
                notifiers: Vec::new(),
            };
            self.groups.insert(key, Box::new(group));
        }
        let max_samples = self.max_samples;
        let group = self.groups.get_mut(&key).expect("group exists");
        group.count += delta;
        group.events += u64::from(first_sight);
        let first = e.first_timestamp.or(e.event_time).unwrap_or(t).min(t);
        group.first = Some(group.first.map_or(first, |f| f.min(first)));
        group.last = Some(group.last.map_or(t, |l| l.max(t)));
        group.severity = group.severity.max(e.severity);
        if e.message != group.template.message
            && group.samples.len() + 1 < max_samples
            && !group.samples.contains(&e.message)
        {
            group.samples.push(e.message);
        }
        for n in notifiers {
            push_notifier(&mut group.notifiers, n);
        }
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
    }

    /// Emits the group that closes first; false when there is none.
    fn close_next(&mut self, out: &mut Vec<Batch>) -> bool {
        while let Some(Reverse((_, id, key))) = self.closing.pop() {
            if self.groups.get(&key).is_some_and(|g| g.id == id) {
                let group = self.groups.remove(&key).expect("checked");
                self.emit(*group, out);
                return true;
            }
        }
        false
    }

    /// Emits groups whose closing time is at or before `now` (in event time), at most
    /// [`EMIT_CHUNK`] per call so that output never piles up in memory: the rest follow
    /// on the next batch or tick.
    fn close_until(&mut self, now: Timestamp, out: &mut Vec<Batch>) {
        for _ in 0..EMIT_CHUNK {
            let due = self
                .closing
                .peek()
                .is_some_and(|Reverse((at, _, _))| *at <= now);
            if !due || !self.close_next(out) {
                break;
            }
        }
    }

    fn emit(&mut self, group: Group, out: &mut Vec<Batch>) {
        let key = {
            self.build_key(&group.template, group.window_start);
            self.key_buf.clone()
        };
        emit(group, key, out);
    }
}

fn emit(group: Group, key: String, out: &mut Vec<Batch>) {
    let Group {
        template: mut e,
        count,
        events,
        first,
        last,
        samples: others,
        severity,
        notifiers,
        ..
    } = group;
    let mut samples = Vec::with_capacity(others.len() + 1);
    samples.push(e.message.clone());
    samples.extend(others);
    e.count = count;
    e.first_timestamp = first;
    e.last_timestamp = last;
    e.timestamp = last;
    e.severity = severity;
    e.aggregation = Some(Box::new(Aggregation {
        key,
        count,
        events,
        first_seen: first,
        last_seen: last,
        samples,
    }));
    // Groups closing together go out together, in one batch.
    match out.last_mut() {
        Some(batch) if batch.events.len() < 512 => {
            batch.events.push(e);
            for n in &notifiers {
                push_notifier(&mut batch.notifiers, n);
            }
        }
        _ => out.push(Batch {
            events: vec![e],
            notifiers,
        }),
    }
}

impl Transform for Aggregate {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        self.last_input = Instant::now();
        let Batch { events, notifiers } = batch;
        for e in events {
            self.add(e, &notifiers, out);
        }
        if let Some(w) = self.watermark {
            self.close_until(w, out);
        }
        // `notifiers` drops here; the groups hold their own clones.
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self, out: &mut Vec<Batch>) {
        // While input is quiet, event time advances with the wall clock.
        if let Some(w) = self.watermark {
            let idle = chrono::Duration::from_std(self.last_input.elapsed())
                .unwrap_or(chrono::Duration::zero());
            self.close_until(w + idle, out);
        }
    }

    fn flush(&mut self, out: &mut Vec<Batch>) -> bool {
        for _ in 0..EMIT_CHUNK {
            if !self.close_next(out) {
                return false;
            }
        }
        !self.groups.is_empty()
    }
}

/// Characters Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const GENERATED_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Appends `message` with its volatile parts replaced: digit runs become `#`; hexadecimal
/// ids (with a digit) and generated name suffixes become `*`; the items of `[...]` lists
/// are sorted so that the same set in another order gives the same key.
pub fn normalize_message(message: &str, out: &mut String) {
    let mut rest = message;
    while let Some(open) = rest.find('[') {
        normalize_words(&rest[..open], out);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) => {
                let mut items: Vec<String> = after[..close]
                    .split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(|item| {
                        let mut n = String::new();
                        normalize_words(item, &mut n);
                        n
                    })
                    .collect();
                items.sort_unstable();
                out.push('[');
                out.push_str(&items.join(" "));
                out.push(']');
                rest = &after[close + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    normalize_words(rest, out);
}

fn normalize_words(text: &str, out: &mut String) {
    // Segments are split on punctuation that joins generated names, ids and numbers.
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        if ch.is_ascii_alphanumeric() {
            continue;
        }
        normalize_segment(&text[start..i], out);
        out.push(ch);
        start = i + ch.len_utf8();
    }
    normalize_segment(&text[start..], out);
}

fn normalize_segment(seg: &str, out: &mut String) {
    let bytes = seg.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let is_hex_id = bytes.len() >= 4 && has_digit && bytes.iter().all(u8::is_ascii_hexdigit);
    let is_generated = (bytes.len() == 5 || (has_digit && (bytes.len() == 9 || bytes.len() == 10)))
        && bytes.iter().all(|b| GENERATED_ALPHABET.contains(b));
    if is_hex_id || is_generated {
        out.push('*');
        return;
    }
    let mut in_digits = false;
    for ch in seg.chars() {
        if ch.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(ch);
            in_digits = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_time;

    fn norm(m: &str) -> String {
        let mut s = String::new();
        normalize_message(m, &mut s);
        s
    }

    #[test]
    fn volatile_parts_are_normalised() {
        assert_eq!(
            norm(
                "Unable to attach or mount volumes: unmounted volumes=[rrd], unattached volumes=[rrd default-token-ldhts]"
            ),
            norm(
                "Unable to attach or mount volumes: unmounted volumes=[rrd], unattached volumes=[default-token-ldhts rrd]"
            ),
        );
        assert_eq!(
            norm("Successfully pulled image \"nginx\" in 3m0.171865125s"),
            norm("Successfully pulled image \"nginx\" in 1.5s").replace("#.#s", "#m#.#s"),
        );
        assert_eq!(
            norm("Created pod: web-7d8564b94-x2kqz"),
            "Created pod: web-*-*"
        );
        assert_eq!(
            norm("Readiness probe failed: dial tcp 10.0.3.7:82: connection refused"),
            "Readiness probe failed: dial tcp #.#.#.#:#: connection refused"
        );
        assert_eq!(
            norm("uid 1fd57598-c046-11e7-9440-005056850519"),
            "uid *-*-*-*-*"
        );
        assert_eq!(
            norm("Back-off restarting failed container"),
            "Back-off restarting failed container"
        );
    }

    fn event(uid: &str, count: u64, at: &str, message: &str) -> Event {
        let mut e = Event {
            uid: uid.into(),
            reason: "BackOff".into(),
            message: message.into(),
            count,
            timestamp: parse_time(at),
            ..Event::default()
        };
        e.object.kind = "Pod".into();
        e.object.name = "p".into();
        e
    }

    fn aggregate() -> Aggregate {
        let config: AggregateTransformConfig =
            toml::from_str("window = \"5m\"\nallowed_lateness = \"0s\"").unwrap();
        config.build(Arc::new(ComponentMetrics::default()))
    }

    #[test]
    fn repeats_of_one_uid_are_counted_once() {
        let mut agg = aggregate();
        let mut out = Vec::new();
        agg.process(
            Batch::new(vec![
                event("a", 3, "2024-01-01T00:00:10Z", "restart 1"),
                event("a", 3, "2024-01-01T00:00:10Z", "restart 1"),
                event("a", 5, "2024-01-01T00:01:00Z", "restart 2"),
                event("b", 1, "2024-01-01T00:02:00Z", "restart 3"),
            ]),
            &mut out,
        );
        assert!(out.is_empty(), "the window is still open");
        while agg.flush(&mut out) {}
        let e = &out[0].events[0];
        let a = e.aggregation.as_ref().unwrap();
        assert_eq!((a.count, a.events), (6, 2), "3 + 2 new + 1");
        assert_eq!(a.samples.len(), 3);
        assert_eq!(e.count, 6);
        assert_eq!(
            agg.metrics
                .discarded
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn windows_close_on_event_time_and_hold_acknowledgements() {
        let mut agg = aggregate();
        let mut tracker = crate::batch::AckTracker::new();
        let mut out = Vec::new();
        let n = tracker.notifier(1u64);
        agg.process(
            Batch {
                events: vec![event("a", 1, "2024-01-01T00:00:10Z", "x")],
                notifiers: vec![n],
            },
            &mut out,
        );
        let mut released = Vec::new();
        tracker.poll(|p| released.push(p));
        assert!(
            released.is_empty(),
            "the event waits in an open window, so its batch is not acknowledged"
        );
        agg.process(
            Batch::new(vec![event("b", 1, "2024-01-01T00:06:00Z", "y")]),
            &mut out,
        );
        assert_eq!(
            out.len(),
            1,
            "the first window closed when event time passed its end"
        );
        drop(out);
        tracker.poll(|p| released.push(p));
        assert_eq!(released, vec![1]);
    }

    #[test]
    fn group_limit_emits_early_instead_of_growing() {
        let config: AggregateTransformConfig = toml::from_str("max_groups = 2").unwrap();
        let mut agg = config.build(Arc::new(ComponentMetrics::default()));
        let mut out = Vec::new();
        let events = ["A", "B", "C", "D", "E"].map(|reason| Event {
            reason: reason.into(),
            ..event(reason, 1, "2024-01-01T00:00:00Z", "x")
        });
        agg.process(Batch::new(events.to_vec()), &mut out);
        assert!(agg.open_groups() <= 2);
        assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 3);
    }
}
