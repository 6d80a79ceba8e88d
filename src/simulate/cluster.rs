//! How an occurrence becomes lines on a watch: the client-side recorders and the API server.
//!
//! Components do not write one Event per occurrence. `core/v1` recorders (kubelet, the
//! controllers) run client-go's `EventCorrelator`: an aggregator that folds 10+ distinct
//! messages of one (source, object, type, reason) within 10 minutes into one
//! `(combined from similar events): …` Event, a cache that turns a repeat into an update of the
//! same Event object (`count`+1, `lastTimestamp` moves, `firstTimestamp`, `name` and `uid`
//! stay) and a spam filter, a token bucket per (source, object) of burst 25 refilled one per
//! 5 minutes, that drops writes but not counts. The scheduler's `events.k8s.io/v1` recorder
//! writes the first occurrence, then `series.count` 2 on the second, and only every 30 minutes
//! (refresh) or 6 minutes after the series stopped (finish) after that. Writes reach the API
//! server after a per-component latency, get a cluster-global `resourceVersion` in that order,
//! and reach the exporter with up to `jitter` more delay. Modelled here so that none of it is
//! tailored to whatever consumes the stream.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use super::Role;

/// Instants of the simulated cluster.
pub(crate) type Time = DateTime<Utc>;

const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const COMBINED: &str = "(combined from similar events): ";

/// A random UUIDv4, as the API server gives objects.
pub(crate) fn uuid(rng: &mut ChaCha8Rng) -> String {
    let b: [u8; 16] = rng.random();
    let h = |r: &[u8]| r.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let v = (b[6] & 0x0f) | 0x40;
    let r = (b[8] & 0x3f) | 0x80;
    let (b6, b8) = (h(&[v, b[7]]), h(&[r, b[9]]));
    format!(
        "{}-{}-{b6}-{b8}-{}",
        h(&b[0..4]),
        h(&b[4..6]),
        h(&b[10..16])
    )
}

/// `n` characters of the alphabet Kubernetes uses for generated names and template hashes.
pub(crate) fn suffix(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| SAFE[rng.random_range(0..SAFE.len())] as char)
        .collect()
}

/// An object reference as recorders put it in `involvedObject`/`regarding`.
#[derive(Clone, Debug)]
pub(crate) struct ObjRef {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespace: String,
    pub name: String,
    /// Empty when the recorder does not know it (the taint manager's pod references).
    pub uid: String,
    /// 0: left out.
    pub rv: u64,
}

impl ObjRef {
    fn json(&self, field_path: &str) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.into(), Value::String(v.into()));
            }
        };
        put("kind", self.kind);
        put("namespace", &self.namespace);
        put("name", &self.name);
        put("uid", &self.uid);
        put("apiVersion", self.api_version);
        if self.rv != 0 {
            put("resourceVersion", &self.rv.to_string());
        }
        put("fieldPath", field_path);
        Value::Object(m)
    }

    fn key(&self, field_path: &str) -> String {
        let (k, a, n, m, u) = (
            self.kind,
            self.api_version,
            &self.namespace,
            &self.name,
            &self.uid,
        );
        format!("{k}|{a}|{n}|{m}|{u}|{field_path}")
    }
}

/// Ground truth carried by an occurrence: which incident, in which role.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tag {
    pub inc: Option<u16>,
    pub role: Role,
    /// Acceptable as the incident's root cause even though the role is not `RootCause`.
    pub accept: bool,
}

impl Tag {
    /// Routine cluster activity.
    pub const NOISE: Tag = Tag {
        inc: None,
        role: Role::Context,
        accept: false,
    };

    /// The same tag, also an acceptable root cause.
    pub fn accepted(self) -> Tag {
        Tag {
            accept: true,
            ..self
        }
    }
}

/// One thing a component reports, before its recorder decides what gets written.
#[derive(Clone, Debug)]
pub(crate) struct Occ {
    pub at: Time,
    pub obj: ObjRef,
    pub field_path: String,
    pub reason: &'static str,
    pub msg: String,
    pub warning: bool,
    pub component: String,
    pub host: String,
    /// `Some(action)`: written through the `events.k8s.io/v1` recorder (the scheduler).
    pub action: Option<&'static str>,
    pub tag: Tag,
}

/// One Event object on the server.
struct EvObj {
    uid: String,
    name: String,
    occ: Occ,
    first: Time,
    last: Time,
    count: u32,
    msg: String,
    created: Option<Time>,
    /// events.k8s.io series: (count, lastObservedTime).
    series: Option<(u32, Time)>,
    written: u32,
    tag: Tag,
}

struct Write {
    at: Time,
    obj: usize,
    value: Value,
}

/// What the watch saw, and the ground truth of each Event object in it.
pub(crate) struct Recorded {
    pub lines: Vec<String>,
    /// (uid, tag), in the order the objects first appear in `lines`.
    pub objects: Vec<(String, Tag)>,
}

struct Recorder<'a> {
    rng: &'a mut ChaCha8Rng,
    objs: Vec<EvObj>,
    writes: Vec<Write>,
    spam: HashMap<String, (f64, Time)>,
    agg: HashMap<String, (HashSet<String>, Time)>,
    cache: HashMap<String, usize>,
    series: HashMap<String, usize>,
    busy: HashMap<String, Time>,
}

fn secs(t: Time) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micros(t: Time) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Recorder<'_> {
    fn new_obj(&mut self, occ: &Occ) -> usize {
        let nanos = occ.at.timestamp_nanos_opt().unwrap_or(0) + self.rng.random_range(0..999_999);
        self.objs.push(EvObj {
            uid: uuid(self.rng),
            name: format!("{}.{:x}", occ.obj.name, nanos),
            occ: occ.clone(),
            first: occ.at,
            last: occ.at,
            count: 0,
            msg: occ.msg.clone(),
            created: None,
            series: None,
            written: 0,
            tag: occ.tag,
        });
        self.objs.len() - 1
    }

    fn observe(&mut self, i: usize, occ: &Occ, msg: String) {
        let o = &mut self.objs[i];
        o.count += 1;
        o.last = occ.at;
        o.msg = msg;
        let t = occ.tag;
        if o.tag.inc.is_none() && t.inc.is_some() {
            o.tag = t;
        } else if o.tag.inc == t.inc && t.inc.is_some() {
            let rank = |r: Role| match r {
                Role::RootCause => 0,
                Role::Symptom => 1,
                Role::Context => 2,
            };
            if rank(t.role) < rank(o.tag.role) {
                o.tag.role = t.role;
            }
            o.tag.accept |= t.accept;
        }
    }

    /// client-go `EventCorrelator.EventCorrelate` then, unless filtered, a write.
    fn legacy(&mut self, occ: &Occ) {
        let typ = if occ.warning { "Warning" } else { "Normal" };
        let src = format!("{}|{}", occ.component, occ.host);
        let obj_key = format!("{src}|{}", occ.obj.key(""));
        let agg_key = format!("{obj_key}|{typ}|{}", occ.reason);
        let rec = self
            .agg
            .entry(agg_key.clone())
            .or_insert_with(|| (HashSet::new(), occ.at));
        if occ.at - rec.1 > Duration::minutes(10) {
            rec.0.clear();
        }
        rec.1 = occ.at;
        rec.0.insert(occ.msg.clone());
        let (key, msg) = if rec.0.len() < 10 {
            let k = format!(
                "{src}|{}|{typ}|{}|{}",
                occ.obj.key(&occ.field_path),
                occ.reason,
                occ.msg
            );
            (k, occ.msg.clone())
        } else {
            (agg_key, format!("{COMBINED}{}", occ.msg))
        };
        let i = match self.cache.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.new_obj(occ);
                self.cache.insert(key, i);
                i
            }
        };
        self.observe(i, occ, msg);
        let bucket = self.spam.entry(obj_key).or_insert((25.0, occ.at));
        let refill = (occ.at - bucket.1).num_milliseconds() as f64 / 300_000.0;
        bucket.0 = (bucket.0 + refill).min(25.0);
        bucket.1 = occ.at;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            self.write(i, occ.at);
        }
    }

    /// client-go `tools/events` `recordToSink`: isomorphic events become a series.
    fn new_api(&mut self, occ: &Occ, action: &str) {
        let key = format!(
            "{}|{action}|{}|{}",
            occ.component,
            occ.reason,
            occ.obj.key(&occ.field_path)
        );
        if let Some(&i) = self.series.get(&key) {
            self.observe(i, occ, self.objs[i].msg.clone());
            let o = &mut self.objs[i];
            if let Some(s) = &mut o.series {
                *s = (s.0 + 1, occ.at);
            } else {
                o.series = Some((2, occ.at));
                self.write(i, occ.at);
            }
        } else {
            let i = self.new_obj(occ);
            self.observe(i, occ, occ.msg.clone());
            self.series.insert(key, i);
            self.write(i, occ.at);
        }
    }

    /// The broadcaster's `refreshExistingEventSeries` (`finish: false`) and `finishSeries`.
    fn tick(&mut self, now: Time, finish: bool) {
        let mut keys: Vec<(String, usize)> =
            self.series.iter().map(|(k, &i)| (k.clone(), i)).collect();
        keys.sort_by_key(|k| k.1);
        for (key, i) in keys {
            let o = &self.objs[i];
            let idle = now - Duration::minutes(6);
            let done = match o.series {
                Some((_, last)) => last < idle,
                None => o.first < idle,
            };
            if o.series.is_some_and(|s| s.0 != o.written) && (!finish || done) {
                self.write(i, now);
            }
            if finish && done {
                self.series.remove(&key);
            }
        }
    }

    fn write(&mut self, i: usize, now: Time) {
        let o = &self.objs[i];
        let src = format!("{}|{}", o.occ.component, o.occ.host);
        let mut lat = self.rng.random_range(3..150);
        if self.rng.random_bool(0.02) {
            lat += self.rng.random_range(500..4000);
        }
        let mut at = now + Duration::milliseconds(lat);
        if let Some(&b) = self.busy.get(&src) {
            at = at.max(b + Duration::milliseconds(2));
        }
        self.busy.insert(src, at);
        let o = &mut self.objs[i];
        let created = *o.created.get_or_insert(at);
        o.written = o.series.map_or(o.count, |s| s.0);
        let namespace = if o.occ.obj.namespace.is_empty() {
            "default"
        } else {
            &o.occ.obj.namespace
        };
        let meta = json!({"name": o.name, "namespace": namespace, "uid": o.uid,
            "resourceVersion": "", "creationTimestamp": secs(created)});
        let typ = if o.occ.warning { "Warning" } else { "Normal" };
        let value = if let Some(action) = o.occ.action {
            let mut v = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta,
                "eventTime": micros(o.first), "reportingController": o.occ.component,
                "reportingInstance": o.occ.host, "action": action, "reason": o.occ.reason,
                "regarding": o.occ.obj.json(&o.occ.field_path), "note": o.msg, "type": typ});
            if let Some((count, last)) = o.series {
                v["series"] = json!({"count": count, "lastObservedTime": micros(last)});
            }
            v
        } else {
            let mut source = json!({"component": o.occ.component});
            if !o.occ.host.is_empty() {
                source["host"] = json!(o.occ.host);
            }
            json!({"apiVersion": "v1", "kind": "Event", "metadata": meta,
                "involvedObject": o.occ.obj.json(&o.occ.field_path), "reason": o.occ.reason,
                "message": o.msg, "source": source, "firstTimestamp": secs(o.first),
                "lastTimestamp": secs(o.last), "count": o.count, "type": typ, "eventTime": null,
                "reportingComponent": o.occ.component, "reportingInstance": o.occ.host})
        };
        self.writes.push(Write { at, obj: i, value });
    }
}

/// Runs `occs` through the recorders, the API server and an exporter with `jitter`.
///
/// Occurrences after `end` never happen. `rv_at` is the cluster's resourceVersion at a time,
/// so Event resourceVersions stay above those of the objects they are about.
pub(crate) fn record(
    mut occs: Vec<Occ>,
    end: Time,
    jitter: Duration,
    rv_at: impl Fn(Time) -> u64,
    rng: &mut ChaCha8Rng,
) -> Recorded {
    occs.retain(|o| o.at <= end);
    occs.sort_by_key(|o| o.at);
    let start = occs.first().map_or(end, |o| o.at);
    let phase =
        |rng: &mut ChaCha8Rng, m: i64| start + Duration::seconds(rng.random_range(0..m * 60));
    let (mut finish, mut refresh) = (phase(rng, 6), phase(rng, 30));
    let mut r = Recorder {
        rng,
        objs: Vec::new(),
        writes: Vec::new(),
        spam: HashMap::new(),
        agg: HashMap::new(),
        cache: HashMap::new(),
        series: HashMap::new(),
        busy: HashMap::new(),
    };
    let mut ticks = |r: &mut Recorder, until: Time| {
        while finish.min(refresh) <= until {
            if refresh < finish {
                r.tick(refresh, false);
                refresh += Duration::minutes(30);
            } else {
                r.tick(finish, true);
                finish += Duration::minutes(6);
            }
        }
    };
    for occ in &occs {
        ticks(&mut r, occ.at);
        match occ.action {
            Some(action) => r.new_api(occ, action),
            None => r.legacy(occ),
        }
    }
    ticks(&mut r, end);

    // The API server orders writes; the watch delivers them in resourceVersion order and the
    // exporter adds its own delay, never reordering one object's updates.
    let mut writes = r.writes;
    writes.sort_by_key(|w| w.at);
    let mut rv = 0u64;
    let mut last_arrival: HashMap<usize, Time> = HashMap::new();
    let mut arrivals = Vec::with_capacity(writes.len());
    for (n, w) in writes.iter_mut().enumerate() {
        rv = (rv + r.rng.random_range(1..25)).max(rv_at(w.at));
        w.value["metadata"]["resourceVersion"] = json!(rv.to_string());
        let delay = match jitter.num_milliseconds() {
            0 => 0,
            j => r.rng.random_range(0..=j),
        };
        let arrival = w.at + Duration::milliseconds(delay);
        let arrival = last_arrival
            .get(&w.obj)
            .map_or(arrival, |&p| arrival.max(p));
        last_arrival.insert(w.obj, arrival);
        arrivals.push((arrival, n));
    }
    arrivals.sort();
    let mut seen = HashSet::new();
    let mut objects = Vec::new();
    let lines = arrivals
        .into_iter()
        .map(|(_, n)| {
            let w = &writes[n];
            if seen.insert(w.obj) {
                let o = &r.objs[w.obj];
                objects.push((o.uid.clone(), o.tag));
            }
            serde_json::to_string(&w.value).expect("JSON values serialize")
        })
        .collect();
    Recorded { lines, objects }
}
