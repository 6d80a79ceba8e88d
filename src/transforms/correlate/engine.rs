//! The correlation engine: events, in event-time order, into incidents.
//!
//! Every event that signals trouble ([`rules::is_trouble`]) joins the open incidents it is
//! linked to, merging them, or opens one. Links are evidence, bounded in time by `window`:
//!
//! - **strong** (they may merge two incidents): the same Event object (an update of a
//!   member), the same involved object, the same workload (top-level owner), a pod
//!   effect of node failure (`NodeNotReady`, `TaintManagerEviction`...) on a pod placed on a
//!   node in trouble, node trouble on the same node, pods unschedulable for the same reason;
//! - **weak** (they only bring in an object that is in no incident yet, or fold in an
//!   incident that is only a node's): a container restarting on a node right after the
//!   kernel killed a process there (OOM), a crash in a namespace whose storage is failing,
//!   a failed name lookup while the cluster DNS is in trouble.
//!
//! A pod's node is learnt from `Scheduled`, the kubelet that reported it, enrichment, or,
//! for the node controller's `NodeNotReady` "Node is not ready" (which names no node), the
//! Node that went NotReady at the same moment.
//!
//! Events that are not trouble are **context**: they join an open incident their object,
//! workload or node is in (replacement pods, the node's return, the rollback); otherwise
//! they are remembered in a bounded [`History`] per object, workload, node and volume, and
//! join when an incident opens on one of those (the rollout before the crash loop, the
//! pod's scheduling, the claim's provisioning). Changes among them (a rollout's
//! `ScalingReplicaSet`, an HPA's `SuccessfulRescale`) are named as the incident's trigger.
//!
//! The **root cause** is found with causal rules (`cause -> effect`): the earliest member
//! that a rule places upstream of another member and that no rule places downstream;
//! without one, the earliest failure of the most fundamental kind (node, volume, image,
//! scheduling, crash, probe).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::history::{History, MESSAGE_CHARS, Recent};
use super::ownership::{
    self, Ownership, key_id, namespace, node_key, object_id, object_key, volume_keys,
};
use super::rules::{
    self, CHANGES, CausalRule, NODE_DOWN_EFFECTS, NodeTrouble, Scope, is_image_pull,
    is_node_trouble, is_trouble,
};
use super::summary;
use crate::event::{
    AffectedObject, Event, Incident, IncidentStatus, ObjectRef, RootCause, Severity, Str, Timestamp,
};

/// Affected objects listed per incident.
pub const MAX_OBJECTS: usize = 50;
/// Distinct (reason, object, message shape) kept per incident for root-cause analysis.
const MAX_NOTABLE: usize = 64;
/// Uids of members that joined after they were seen (context), listed per incident.
pub const MAX_CONTEXT: usize = 200;
/// How long an incident with a node still down stays open without news.
const NODE_DOWN_MAX_QUIET: i64 = 2 * 3600;
/// How far apart a Node's `NodeNotReady` and its pods' may be written.
const SIMULTANEOUS: i64 = 30;
/// How soon after an OOM kill on its node a container's restart counts as its effect.
const OOM_FOLLOW: i64 = 60;
/// Histories (objects, workloads, volumes, created pods) attached when one object joins.
const MAX_ATTACH_KEYS: usize = 64;
/// Recent NotReady transitions of nodes remembered for pods that name no node.
const MAX_NODE_DOWN: usize = 256;
/// An incident of readiness failures alone must last this long (probes fail while pods
/// start; a persistent failure is an outage).
const WEAK_MIN_SPAN: i64 = 120;
/// ... and happen this often.
const WEAK_MIN_OCCURRENCES: u64 = 3;

/// The indexes' map: keys are short strings and ids hashed on every event, so a fast
/// hasher (foldhash, the one `lru` uses) rather than SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, lru::DefaultHasher>;

/// The engine's settings, from the transform's config.
#[derive(Clone)]
pub(super) struct Settings {
    pub window: chrono::Duration,
    pub resolve_after: chrono::Duration,
    pub resolve_after_wall: Duration,
    pub update_interval: chrono::Duration,
    pub min_occurrences: u64,
    pub min_duration: chrono::Duration,
    pub max_open: usize,
    pub max_tracked: NonZeroUsize,
    pub rules: Vec<CausalRule>,
}

/// A member remembered for root-cause analysis: the first of its (reason, object, shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Notable {
    pub uid: Str,
    pub resource_version: Str,
    pub reason: Str,
    pub object: ObjectRef,
    /// The message's shape (digits dropped).
    pub shape: u64,
    pub occurrences: u64,
    pub message: String,
    pub node: Str,
    pub workload: Str,
    pub namespace: Str,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// A change (rollout, rescale) that joined as context, not a failure.
    pub change: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct IncidentState {
    pub id: Str,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub severity: Severity,
    pub occurrences: u64,
    pub members: u64,
    pub reasons: BTreeMap<Str, u64>,
    pub objects: Vec<AffectedObject>,
    pub notable: Vec<Notable>,
    pub workloads: Vec<Str>,
    pub nodes: Vec<Str>,
    /// Uids that joined after they were seen.
    pub context: Vec<Str>,
    /// Pods that cannot be placed for one reason, across workloads: what each of them
    /// does once placed is its own story.
    #[serde(default)]
    pub capacity: bool,
    /// A failure that is final on its own joined (a Job that gave up).
    #[serde(default)]
    pub terminal: bool,
    /// Occurrences of failures other than readiness probes.
    pub strong_occurrences: u64,
    /// When a container restart on a node there may follow an OOM kill: node -> time.
    pub oom: Vec<(Str, Timestamp)>,
    /// The autoscaler was asked for nodes at this time: nodes that register next join.
    pub scale_up: Option<Timestamp>,
    /// Nodes it holds that went down and have not come back.
    #[serde(default)]
    pub down: Vec<Str>,
    pub reported: bool,
    pub reported_severity: Option<Severity>,
    pub reported_at: Option<Timestamp>,
    pub reported_members: u64,
    #[serde(default)]
    pub reported_occurrences: u64,
    /// Wall-clock time of the last trouble (not saved: a restart starts the clock again).
    #[serde(skip, default = "Instant::now")]
    pub active: Instant,
}

impl IncidentState {
    /// Did it grow since its last record?
    fn grew(&self) -> bool {
        self.members > self.reported_members || self.occurrences > self.reported_occurrences
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ObjectState {
    pub incident: Option<u64>,
    /// It had trouble of its own in that incident (not only context that joined).
    #[serde(default)]
    pub troubled: bool,
    pub node: Str,
    /// Its top-level owner, once worked out (regexes are not run again per event).
    #[serde(default)]
    pub workload: Option<Str>,
}

/// A member event: its incident and the count it had when last seen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Seen {
    pub incident: u64,
    pub count: u64,
}

/// What an event links to.
#[derive(Default)]
struct Links {
    strong: Vec<u64>,
    weak: Option<u64>,
}

pub(super) struct Engine {
    pub settings: Settings,
    pub incidents: BTreeMap<u64, IncidentState>,
    /// Merged incident -> the one that absorbed it.
    pub alias: LruCache<u64, u64>,
    /// Incident -> (its public id, reported at least once), kept after it resolves so
    /// events still held can be stamped.
    pub labels: LruCache<u64, (Str, bool)>,
    /// By object id.
    pub objects: LruCache<u64, ObjectState>,
    pub ownership: Ownership,
    /// Member events by identity.
    pub seen: LruCache<u64, Seen>,
    pub history: History,
    /// Workload key -> its open incident.
    pub workloads: HashMap<Str, u64>,
    /// Workload key -> the open incident of the node its pods were evicted from: its
    /// replacements join, its own later failures do not (unless they cannot be placed).
    pub displaced: HashMap<Str, u64>,
    /// (Node, kind of trouble) -> its open incident.
    pub nodes: HashMap<(Str, NodeTrouble), u64>,
    /// Failures of many objects that one cause explains, by that cause ([`shared_cause`]:
    /// pods unschedulable for the same reason, creations refused by the same webhook) ->
    /// their open incident.
    pub scheduling: HashMap<u64, u64>,
    /// (Namespace, Service) named by failures (`https://X.NS.svc`) -> their open incident:
    /// when X's objects fail later, they join it.
    pub services: HashMap<(Str, Str), u64>,
    /// Namespace -> an open incident with a storage outage in it.
    pub storage: HashMap<Str, u64>,
    /// The open incident the cluster DNS is in.
    pub dns: Option<u64>,
    /// Recent NotReady transitions: (node, time).
    pub node_down: Vec<(Str, Timestamp)>,
    /// The newest event time seen.
    pub watermark: Option<Timestamp>,
    pub next: u64,
}

/// An event's identity: its uid, or for events without one (taint manager evictions in
/// some versions, hand-made dumps) its object, reason and first time.
pub(super) fn identity(e: &Event) -> u64 {
    if !e.uid.is_empty() {
        return xxh3_64(e.uid.as_bytes());
    }
    let mut h = Xxh3::new();
    h.update(object_key(e).as_bytes());
    h.update(e.reason.as_bytes());
    let (start, _) = span(e);
    h.update(&start.map_or(0, |t| t.timestamp_micros()).to_le_bytes());
    h.digest()
}

/// When the event started and last happened.
pub(super) fn span(e: &Event) -> (Option<Timestamp>, Option<Timestamp>) {
    let end = e.timestamp;
    let start = e.first_timestamp.or(e.event_time).or(end);
    (start.min(end).or(start), end.or(start))
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

impl Engine {
    pub fn new(settings: Settings) -> Self {
        let capacity = settings.max_tracked;
        Engine {
            settings,
            incidents: BTreeMap::new(),
            alias: LruCache::new(capacity),
            labels: LruCache::new(capacity),
            objects: LruCache::new(capacity),
            ownership: Ownership::new(capacity),
            seen: LruCache::new(capacity),
            history: History::default(),
            workloads: HashMap::default(),
            displaced: HashMap::default(),
            services: HashMap::default(),
            nodes: HashMap::default(),
            scheduling: HashMap::default(),
            storage: HashMap::default(),
            dns: None,
            node_down: Vec::new(),
            watermark: None,
            next: 0,
        }
    }

    fn find(&self, mut id: u64) -> u64 {
        for _ in 0..64 {
            match self.alias.peek(&id) {
                Some(&to) => id = to,
                None => break,
            }
        }
        id
    }

    /// The open incident `id` stands for now, if it is open and fresh for `start`: within
    /// `window` of its trouble.
    fn open_fresh(&self, id: u64, start: Option<Timestamp>) -> Option<u64> {
        self.open_within(id, start, self.settings.window)
    }

    /// How long after its last trouble incident `id` still takes `node`'s own events: while
    /// the node is down, until it comes back (bounded).
    fn node_horizon(&self, id: u64, node: &Str, horizon: chrono::Duration) -> chrono::Duration {
        match self.incidents.get(&self.find(id)) {
            Some(i) if i.down.contains(node) => horizon.max(secs(NODE_DOWN_MAX_QUIET)),
            _ => horizon,
        }
    }

    /// The open incident `id` stands for now, if `start` is within `horizon` of it.
    fn open_within(
        &self,
        id: u64,
        start: Option<Timestamp>,
        horizon: chrono::Duration,
    ) -> Option<u64> {
        let id = self.find(id);
        let incident = self.incidents.get(&id)?;
        let fresh = match (incident.first, incident.last, start) {
            (Some(first), Some(last), Some(start)) => {
                start <= last + horizon && start >= first - self.settings.window
            }
            _ => true,
        };
        fresh.then_some(id)
    }

    /// The correlation id of the event with this [`identity`], when it belongs to a
    /// reported incident.
    pub fn correlation_id(&mut self, identity: u64) -> Option<Str> {
        let seen = self.seen.peek(&identity)?;
        let id = self.find(seen.incident);
        self.labels
            .peek(&id)
            .filter(|(_, reported)| *reported)
            .map(|(label, _)| label.clone())
    }

    fn object(&mut self, id: u64) -> &mut ObjectState {
        self.objects.get_or_insert_mut(id, ObjectState::default)
    }

    /// Handles one event (in event-time order) of this [`identity`]; incident records go
    /// to `records`.
    pub fn process(&mut self, e: &Event, identity: u64, records: &mut Vec<Event>) {
        let this = object_id(e);
        if let Some(placed) = self.ownership.learn(e, this) {
            self.object(placed.pod).node = placed.node;
        }
        let (start, end) = span(e);
        if let Some(end) = end {
            self.watermark = Some(self.watermark.map_or(end, |w| w.max(end)));
        }
        let mut prior = 0;
        if let Some(seen) = self.seen.get(&identity).copied() {
            if let Some(id) = self.open_fresh(seen.incident, start) {
                self.update_member(id, identity, seen, e, end, records);
                return;
            }
            // Its incident is over: what happened since is new trouble.
            prior = seen.count;
        }
        let workload = match self.objects.get(&this).and_then(|o| o.workload.clone()) {
            Some(w) => w,
            None => {
                let w = self.ownership.workload(e);
                self.object(this).workload = Some(w.clone());
                w
            }
        };
        let mut node = self.node_of(e, this);
        if node.is_empty()
            && e.object.kind == "Pod"
            && NODE_DOWN_EFFECTS.contains(&e.reason.as_str())
            && let Some(down) = self.simultaneous_node_down(start)
        {
            self.object(this).node = down.clone();
            node = down;
        }
        let member = Member {
            this,
            identity,
            prior,
            workload,
            node,
            start,
            end,
        };
        if is_trouble(e) {
            self.trouble(e, member, records);
        } else {
            self.context(e, member);
        }
    }

    /// The node an event's object is on (a Node's own name).
    fn node_of(&mut self, e: &Event, this: u64) -> Str {
        if e.object.kind == "Node" {
            return e.object.name.clone();
        }
        self.objects
            .peek(&this)
            .map(|o| o.node.clone())
            .unwrap_or_default()
    }

    /// The node that went NotReady closest to `at` (within [`SIMULTANEOUS`]).
    fn simultaneous_node_down(&self, at: Option<Timestamp>) -> Option<Str> {
        let at = at?;
        self.node_down
            .iter()
            .filter(|(_, t)| (at - *t).num_seconds().abs() <= SIMULTANEOUS)
            .min_by_key(|(node, t)| ((at - *t).num_milliseconds().abs(), node.clone()))
            .map(|(node, _)| node.clone())
    }

    /// An update of a member event (a repeat): counts grow by what is new.
    fn update_member(
        &mut self,
        id: u64,
        identity: u64,
        seen: Seen,
        e: &Event,
        end: Option<Timestamp>,
        records: &mut Vec<Event>,
    ) {
        let count = e.occurrences();
        let delta = count.saturating_sub(seen.count);
        self.seen.put(
            identity,
            Seen {
                incident: id,
                count: count.max(seen.count),
            },
        );
        let trouble = is_trouble(e);
        let incident = self.incidents.get_mut(&id).expect("open incident");
        *incident.reasons.entry(e.reason.clone()).or_default() += delta;
        if let Some(n) = incident
            .notable
            .iter_mut()
            .find(|n| n.uid == e.uid && !n.uid.is_empty())
        {
            n.occurrences += delta;
            n.end = n.end.max(end);
        }
        if trouble && delta > 0 {
            incident.occurrences += delta;
            if !rules::is_readiness(e) {
                incident.strong_occurrences += delta;
            }
            incident.last = incident.last.max(end);
            incident.active = Instant::now();
            self.report(id, records);
        }
    }

    /// What trouble links to.
    fn links(&mut self, e: &Event, m: &Member) -> Links {
        let mut links = Links::default();
        let start = m.start;
        let mut strong = Vec::new();
        // The same object failing again stays in its incident as long as that is open: a
        // controller retries every 1,000 s at most, past `window`.
        // An object that only joined as context (a pod started on a new node) brings no
        // evidence for its own trouble.
        // A Node's troubles link by kind (below): lost, under pressure, killing processes.
        if e.object.kind != "Node"
            && let Some(id) = self
                .objects
                .peek(&m.this)
                .filter(|o| o.troubled)
                .and_then(|o| o.incident)
                .and_then(|id| self.open_within(id, start, self.settings.resolve_after))
        {
            strong.push(id);
        }
        let workloads = if is_scheduling(e) {
            [Some(&self.workloads), Some(&self.displaced)]
        } else {
            [Some(&self.workloads), None]
        };
        if e.object.kind != "Node" {
            for id in workloads
                .into_iter()
                .flatten()
                .filter_map(|map| map.get(&m.workload))
                .filter_map(|&id| self.open_fresh(id, start))
            {
                strong.push(id);
            }
        }
        // A pod that could not be placed and now fails otherwise starts its own story.
        if !is_scheduling(e) {
            strong.retain(|&id| {
                self.incidents
                    .get(&self.find(id))
                    .is_none_or(|i| !i.capacity)
            });
        }
        let node_effect = e.object.kind == "Pod" && NODE_DOWN_EFFECTS.contains(&e.reason.as_str());
        let node_trouble = (m.node.clone(), NodeTrouble::of(&e.reason));
        // A node's own trouble continues its incident while that is open (it comes back
        // from a reboot half an hour later); its pods' within `window`.
        let horizon = if is_node_trouble(e) {
            self.settings.resolve_after
        } else {
            self.settings.window
        };
        if !m.node.is_empty()
            && (is_node_trouble(e) || node_effect)
            && let Some(id) = self.nodes.get(&node_trouble).and_then(|&id| {
                self.open_within(id, start, self.node_horizon(id, &m.node, horizon))
            })
        {
            strong.push(id);
        }
        if let Some(id) = shared_cause(e)
            .and_then(|cause| self.scheduling.get(&cause))
            .and_then(|&id| self.open_fresh(id, start))
        {
            strong.push(id);
        }
        // What a node's failure does to a pod belongs to the node's incident alone: the
        // pod's own earlier trouble is another story that the node ended.
        if node_effect
            && let Some(id) = self
                .nodes
                .get(&node_trouble)
                .and_then(|&id| self.open_fresh(id, start))
        {
            strong = vec![id];
        }
        links.strong = strong;
        links.strong.sort_unstable();
        links.strong.dedup();
        links.weak = self.weak_link(e, m);
        links
    }

    /// Weaker evidence: an OOM kill on the pod's node just before, a storage outage in its
    /// namespace, a failed lookup while the cluster DNS is down.
    fn weak_link(&self, e: &Event, m: &Member) -> Option<u64> {
        let start = m.start?;
        if let Some(id) = self.service_link(e, m.start) {
            return Some(id);
        }
        if e.object.kind != "Pod" {
            return None;
        }
        if !m.node.is_empty()
            && matches!(e.reason.as_str(), "BackOff" | "Killing" | "Unhealthy")
            && let Some(id) = self
                .nodes
                .get(&(m.node.clone(), NodeTrouble::Oom))
                .and_then(|&id| self.open_fresh(id, m.start))
            && self.incidents[&id].oom.iter().any(|(node, at)| {
                *node == m.node && start >= *at && start - *at <= secs(OOM_FOLLOW)
            })
        {
            return Some(id);
        }
        if matches!(e.reason.as_str(), "BackOff" | "Unhealthy")
            && let Some(id) = self
                .storage
                .get(namespace(e))
                .and_then(|&id| self.open_fresh(id, m.start))
            && self.incidents[&id]
                .first
                .is_some_and(|first| first <= start)
            && !self.incidents[&id].workloads.contains(&m.workload)
            && !self.recently_changed(&m.workload)
        {
            return Some(id);
        }
        if rules::is_dns_failure(&e.message)
            && let Some(id) = self.dns.and_then(|id| self.open_fresh(id, m.start))
        {
            return Some(id);
        }
        None
    }

    /// The open incident of what a failure names: a Service called `X.NS.svc` (a webhook,
    /// a backend) stands for the objects of namespace `NS` named after `X` (its
    /// certificate, its pods).
    fn service_link(&self, e: &Event, start: Option<Timestamp>) -> Option<u64> {
        // A failure of one of X's objects, after failures that named X.
        let ns = namespace(e);
        let named = self
            .services
            .iter()
            .filter(|((service_ns, service), _)| {
                service_ns == ns && e.object.name.starts_with(service.as_str())
            })
            .find_map(|(_, &id)| self.open_fresh(id, start));
        if named.is_some() {
            return named;
        }
        let (service, ns) = named_service(&e.message)?;
        self.incidents
            .iter()
            .filter(|(_, i)| {
                i.objects
                    .iter()
                    .any(|o| o.namespace == ns && o.name.starts_with(service))
            })
            .find_map(|(&id, _)| self.open_fresh(id, start))
    }

    /// Did the workload just change (a rollout in its recent history)? Then its trouble
    /// has its own explanation.
    fn recently_changed(&self, workload: &Str) -> bool {
        self.history
            .by_key
            .peek(&key_id(workload))
            .is_some_and(|list| list.iter().any(|r| CHANGES.contains(&r.reason.as_str())))
    }

    /// A trouble event joins or opens an incident.
    fn trouble(&mut self, e: &Event, m: Member, records: &mut Vec<Event>) {
        let links = self.links(e, &m);
        let id = match (links.strong.as_slice(), links.weak) {
            ([], None) => self.open(e, m.start),
            ([], Some(weak)) => weak,
            (strong, weak) => {
                let mut all = strong.to_vec();
                // Weak evidence folds in an incident only when that one is only a node's
                // trouble so far (an OOM kill waiting for its victim).
                if let Some(weak) = weak
                    && !all.contains(&weak)
                    && self.incidents[&weak].workloads.is_empty()
                {
                    all.push(weak);
                }
                let target = self.oldest(&all);
                for &other in all.iter().filter(|&&o| o != target) {
                    tracing::debug!(
                        from = %self.incidents[&other].id,
                        into = %self.incidents[&target].id,
                        reason = %e.reason,
                        object = %object_key(e),
                        "Merged incidents."
                    );
                    self.merge(other, target, records);
                }
                target
            }
        };
        self.join(id, e, &m, true);
        self.report(id, records);
        if self.incidents.len() > self.settings.max_open {
            let stalest = self
                .incidents
                .iter()
                .min_by_key(|(id, i)| (i.last, **id))
                .map(|(&id, _)| id);
            if let Some(stalest) = stalest {
                self.resolve(stalest, records);
            }
        }
    }

    /// An event that is not trouble joins the open incident of its object, workload or
    /// node, or is remembered for one that may open.
    fn context(&mut self, e: &Event, m: Member) {
        let mut target = self
            .objects
            .peek(&m.this)
            .and_then(|o| o.incident)
            .and_then(|id| self.open_fresh(id, m.start));
        if target.is_none() && e.object.kind != "Node" {
            target = [&self.workloads, &self.displaced]
                .into_iter()
                .filter_map(|map| map.get(&m.workload))
                .find_map(|&id| self.open_fresh(id, m.start));
        }
        // A pod stopped on a node being drained or scaled down.
        if target.is_none()
            && e.object.kind == "Pod"
            && !m.node.is_empty()
            && matches!(e.reason.as_str(), "Killing" | "ScaleDown")
        {
            target = self
                .nodes
                .get(&(m.node.clone(), NodeTrouble::Cordon))
                .and_then(|&id| self.open_fresh(id, m.start));
        }
        // A pod starting on a node the autoscaler just added for an incident.
        if target.is_none() && e.object.kind == "Pod" && !m.node.is_empty() {
            target = self
                .objects
                .peek(&key_id(&node_key(&m.node)))
                .and_then(|o| o.incident)
                .and_then(|id| self.open_fresh(id, m.start))
                .filter(|id| self.incidents[id].scale_up.is_some());
        }
        if target.is_none() && e.object.kind == "Node" {
            target = self
                .nodes
                .iter()
                .filter(|((node, _), _)| *node == m.node)
                .filter_map(|(_, &id)| {
                    let horizon = self.node_horizon(id, &m.node, self.settings.resolve_after);
                    self.open_within(id, m.start, horizon)
                })
                .min()
                .or_else(|| self.new_node_after_scale_up(e, m.start));
        }
        if target.is_none() && names_a_volume(&e.message) {
            target = volume_keys(namespace(e), &e.message)
                .filter_map(|k| self.objects.peek(&key_id(&k)).and_then(|o| o.incident))
                .find_map(|id| self.open_fresh(id, m.start));
        }
        match target {
            Some(id) => {
                let newcomer = e.object.kind == "Pod"
                    && self.objects.peek(&m.this).and_then(|o| o.incident) != Some(id);
                self.join(id, e, &m, false);
                if newcomer {
                    self.attach_creation(id, e, &m);
                }
            }
            None => self.remember(e, &m),
        }
    }

    /// A node that registers or becomes ready soon after the autoscaler was asked for
    /// nodes joins the incident that asked.
    fn new_node_after_scale_up(&self, e: &Event, start: Option<Timestamp>) -> Option<u64> {
        let unknown = self
            .objects
            .peek(&object_id(e))
            .is_none_or(|o| o.incident.is_none());
        let starting = matches!(
            e.reason.as_str(),
            "RegisteredNode" | "NodeReady" | "Starting" | "NodeAllocatableEnforced"
        ) || e.reason.starts_with("NodeHasSufficient")
            || e.reason.starts_with("NodeHasNo");
        if !unknown || !starting {
            return None;
        }
        let start = start?;
        self.incidents
            .iter()
            .filter(|(_, i)| {
                i.scale_up
                    .is_some_and(|at| start >= at && start - at <= self.settings.window)
            })
            .max_by_key(|(_, i)| i.scale_up)
            .map(|(&id, _)| id)
    }

    /// Remembers a context event under its object, its workload (for controllers' events),
    /// and the volumes it names.
    fn remember(&mut self, e: &Event, m: &Member) {
        let recent = Recent {
            identity: m.identity,
            uid: e.uid.clone(),
            resource_version: e.resource_version.clone(),
            reason: e.reason.clone(),
            kind: e.object.kind.clone(),
            name: e.object.name.clone(),
            // Only a change's message is read again (as a trigger).
            message: if CHANGES.contains(&e.reason.as_str())
                || matches!(e.reason.as_str(), "SuccessfulCreate" | "SuccessfulDelete")
            {
                e.message.chars().take(MESSAGE_CHARS).collect()
            } else {
                String::new()
            },
            count: e.occurrences(),
            start: m.start,
            end: m.end,
            workload: m.workload.clone(),
            namespace: namespace(e).into(),
        };
        let own = m.this;
        let workload = key_id(&m.workload);
        if workload != own && e.object.kind != "Pod" {
            self.history.record(workload, recent.clone());
        }
        if e.object.kind == "PersistentVolumeClaim" {
            for volume in volume_keys(namespace(e), &e.message) {
                self.history.record(key_id(&volume), recent.clone());
            }
        }
        // A pod stopped or marked for removal on its node is part of the node's story (a
        // drain, a scale-down) if trouble on the node follows.
        if e.object.kind == "Pod"
            && !m.node.is_empty()
            && matches!(e.reason.as_str(), "ScaleDown" | "Killing" | "Evicted")
        {
            self.history
                .record(key_id(&node_key(&m.node)), recent.clone());
        }
        self.history.record(own, recent);
    }

    /// Adds an event to incident `id`: counts, objects, notables, indexes; the first time an
    /// object joins, its recent history comes with it.
    fn join(&mut self, id: u64, e: &Event, m: &Member, trouble: bool) {
        let total = e.occurrences().max(m.prior);
        let count = (total - m.prior).max(1);
        self.seen.put(
            m.identity,
            Seen {
                incident: id,
                count: total,
            },
        );
        let newcomer = self.objects.peek(&m.this).and_then(|o| o.incident) != Some(id);
        {
            let tracked = self.object(m.this);
            tracked.troubled = (tracked.troubled && !newcomer) || trouble;
            tracked.incident = Some(id);
        }
        let ns = namespace(e);
        let is_node = e.object.kind == "Node";
        if trouble {
            let displaced =
                e.object.kind == "Pod" && NODE_DOWN_EFFECTS.contains(&e.reason.as_str());
            if displaced {
                self.displaced.insert(m.workload.clone(), id);
            } else if !is_node {
                self.workloads.insert(m.workload.clone(), id);
            }
            if is_node_trouble(e) {
                self.nodes
                    .insert((m.node.clone(), NodeTrouble::of(&e.reason)), id);
            }
            if let Some(cause) = shared_cause(e) {
                self.scheduling.insert(cause, id);
            }
            if let Some((service, service_ns)) = named_service(&e.message) {
                self.services
                    .insert((service_ns.into(), service.into()), id);
            }
            if e.reason == "FailedScheduling" {
                let incident = self.incidents.get_mut(&id).expect("open incident");
                incident.capacity |= incident.workloads.iter().any(|w| *w != m.workload);
            }
            // The storage backend failing (not the kubelet's generic mount time-out, which
            // a missing Secret ends in too).
            if e.reason == "FailedAttachVolume" {
                self.storage.insert(ns.into(), id);
            }
            if rules::is_dns_workload(&e.object.name) {
                self.dns = Some(id);
            }
            if is_node
                && e.reason == "NodeNotReady"
                && let Some(at) = m.start
            {
                if self.node_down.len() == MAX_NODE_DOWN {
                    self.node_down.remove(0);
                }
                self.node_down.push((m.node.clone(), at));
            }
        }
        let severity = e.severity.unwrap_or(Severity::Warning);
        let incident = self.incidents.get_mut(&id).expect("open incident");
        incident.members += 1;
        *incident.reasons.entry(e.reason.clone()).or_default() += count;
        if trouble {
            incident.active = Instant::now();
            incident.occurrences += count;
            if !rules::is_readiness(e) {
                incident.strong_occurrences += count;
            }
            incident.severity = incident.severity.max(severity);
            incident.first = min_time(incident.first, m.start);
            incident.last = incident.last.max(m.end);
            if matches!(e.reason.as_str(), "OOMKilling" | "SystemOOM")
                && let Some(at) = m.start
                && incident.oom.len() < MAX_OBJECTS
            {
                incident.oom.push((m.node.clone(), at));
            }
            if e.reason == "TriggeredScaleUp" {
                incident.scale_up = incident.scale_up.max(m.start);
            }
            incident.terminal |= rules::FINAL.contains(&e.reason.as_str());
            if is_node && e.reason == "NodeNotReady" {
                push_unique(&mut incident.down, m.node.clone(), true);
            }
        } else {
            if is_node && matches!(e.reason.as_str(), "NodeReady" | "RegisteredNode") {
                incident.down.retain(|n| *n != m.node);
            }
            if e.reason == "TriggeredScaleUp" {
                incident.scale_up = incident.scale_up.max(m.start);
            }
            if incident.context.len() < MAX_CONTEXT {
                incident.context.push(e.uid.clone());
            }
        }
        if trouble || !is_node {
            push_unique(&mut incident.workloads, m.workload.clone(), !is_node);
        }
        if trouble && !m.node.is_empty() {
            push_unique(&mut incident.nodes, m.node.clone(), true);
        }
        if trouble
            && incident.objects.len() < MAX_OBJECTS
            && !incident
                .objects
                .iter()
                .any(|o| o.name == e.object.name && o.kind == e.object.kind && o.namespace == ns)
        {
            incident.objects.push(AffectedObject {
                kind: e.object.kind.clone(),
                namespace: ns.into(),
                name: e.object.name.clone(),
                owner: if m.workload == object_key(e) {
                    Str::default()
                } else {
                    m.workload.clone()
                },
                node: m.node.clone(),
            });
        }
        let change = !trouble && CHANGES.contains(&e.reason.as_str());
        if trouble || change {
            add_notable(
                incident,
                Notable {
                    uid: e.uid.clone(),
                    resource_version: e.resource_version.clone(),
                    reason: e.reason.clone(),
                    object: e.object.clone(),
                    shape: message_shape(&e.message),
                    occurrences: count,
                    message: e.message.chars().take(MESSAGE_CHARS).collect(),
                    node: m.node.clone(),
                    workload: m.workload.clone(),
                    namespace: ns.into(),
                    start: m.start,
                    end: m.end,
                    change,
                },
            );
        }
        if trouble && newcomer {
            self.attach_history(id, e, m);
        }
    }

    /// Brings in the controller's "Created pod: X" of a pod X that joined as context (a
    /// DaemonSet's pod on a node the autoscaler added).
    fn attach_creation(&mut self, id: u64, e: &Event, m: &Member) {
        let workload = key_id(&m.workload);
        let Some(list) = self.history.by_key.peek_mut(&workload) else {
            return;
        };
        let Some(at) = list.iter().position(|r| {
            r.reason == "SuccessfulCreate"
                && ownership::named_pod(&r.message) == Some(e.object.name.as_str())
        }) else {
            return;
        };
        let recent = list.remove(at).expect("found");
        if self.seen.contains(&recent.identity) {
            return;
        }
        self.seen.put(
            recent.identity,
            Seen {
                incident: id,
                count: recent.count,
            },
        );
        let incident = self.incidents.get_mut(&id).expect("open incident");
        incident.members += 1;
        *incident.reasons.entry(recent.reason.clone()).or_default() += recent.count;
        if incident.context.len() < MAX_CONTEXT {
            incident.context.push(recent.uid);
        }
    }

    /// Brings in what the object, its workload, its node (node trouble) and the volumes
    /// the event names went through before the trouble.
    fn attach_history(&mut self, id: u64, e: &Event, m: &Member) {
        let since = m.start.map(|s| s - self.settings.window);
        // An evicted pod brings its own story, not its workload's (a rollout of it is not
        // why the node failed).
        let displaced = NODE_DOWN_EFFECTS.contains(&e.reason.as_str());
        let mut keys = vec![m.this];
        if !displaced {
            keys.push(key_id(&m.workload));
        }
        if is_node_trouble(e) {
            keys.push(key_id(&node_key(&m.node)));
        }
        let volumes: Vec<Str> = if names_a_volume(&e.message) {
            volume_keys(namespace(e), &e.message).collect()
        } else {
            Vec::new()
        };
        for volume in volumes {
            let volume_id = key_id(&volume);
            keys.push(volume_id);
            // Later events of the claim or volume join too.
            let tracked = self.object(volume_id);
            if tracked.incident.is_none() {
                tracked.incident = Some(id);
            }
        }
        keys.dedup();
        let mut next = 0;
        while let Some(&key) = keys.get(next) {
            next += 1;
            for recent in self.history.take(key, since) {
                // A controller's "Created pod: X" (or "Deleted pod: X", the pods a rollout
                // replaces) brings X's own story along.
                if matches!(
                    recent.reason.as_str(),
                    "SuccessfulCreate" | "SuccessfulDelete"
                ) && keys.len() < MAX_ATTACH_KEYS
                    && let Some(pod) = ownership::named_pod(&recent.message)
                {
                    keys.push(key_id(&ownership::key("Pod", &recent.namespace, pod)));
                }
                if self.seen.contains(&recent.identity) {
                    continue;
                }
                self.seen.put(
                    recent.identity,
                    Seen {
                        incident: id,
                        count: recent.count,
                    },
                );
                let object = key_id(&ownership::key(
                    &recent.kind,
                    &recent.namespace,
                    &recent.name,
                ));
                {
                    let tracked = self.object(object);
                    if tracked.incident.is_none() {
                        tracked.incident = Some(id);
                    }
                }
                let incident = self.incidents.get_mut(&id).expect("open incident");
                incident.members += 1;
                *incident.reasons.entry(recent.reason.clone()).or_default() += recent.count;
                if incident.context.len() < MAX_CONTEXT {
                    incident.context.push(recent.uid.clone());
                }
                if CHANGES.contains(&recent.reason.as_str()) {
                    add_notable(
                        incident,
                        Notable {
                            uid: recent.uid,
                            resource_version: recent.resource_version,
                            reason: recent.reason,
                            object: ObjectRef {
                                kind: recent.kind,
                                namespace: recent.namespace.clone(),
                                name: recent.name,
                                ..ObjectRef::default()
                            },
                            shape: message_shape(&recent.message),
                            occurrences: recent.count,
                            message: recent.message,
                            node: Str::default(),
                            workload: recent.workload,
                            namespace: recent.namespace,
                            start: recent.start,
                            end: recent.end,
                            change: true,
                        },
                    );
                }
            }
        }
    }

    fn oldest(&self, ids: &[u64]) -> u64 {
        ids.iter()
            .copied()
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
        self.labels.put(internal, (id.clone(), false));
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
                context: Vec::new(),
                capacity: false,
                terminal: false,
                strong_occurrences: 0,
                oom: Vec::new(),
                scale_up: None,
                down: Vec::new(),
                reported: false,
                reported_severity: None,
                reported_at: None,
                reported_members: 0,
                reported_occurrences: 0,
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
        self.alias.put(from, into);
        for id in self
            .workloads
            .values_mut()
            .chain(self.displaced.values_mut())
            .chain(self.services.values_mut())
            .chain(self.nodes.values_mut())
            .chain(self.scheduling.values_mut())
            .chain(self.storage.values_mut())
            .chain(self.dns.iter_mut())
        {
            if *id == from {
                *id = into;
            }
        }
        let target = self.incidents.get_mut(&into).expect("open incident");
        target.members += absorbed.members;
        target.occurrences += absorbed.occurrences;
        target.strong_occurrences += absorbed.strong_occurrences;
        for (reason, n) in &absorbed.reasons {
            *target.reasons.entry(reason.clone()).or_default() += n;
        }
        target.severity = target.severity.max(absorbed.severity);
        target.first = min_time(target.first, absorbed.first);
        target.last = target.last.max(absorbed.last);
        target.scale_up = target.scale_up.max(absorbed.scale_up);
        target.capacity |= absorbed.capacity;
        for node in absorbed.down.iter() {
            push_unique(&mut target.down, node.clone(), true);
        }
        target.terminal |= absorbed.terminal;
        for o in absorbed.objects.iter() {
            if target.objects.len() < MAX_OBJECTS && !target.objects.contains(o) {
                target.objects.push(o.clone());
            }
        }
        for n in absorbed.notable.iter() {
            add_notable(target, n.clone());
        }
        for w in absorbed.workloads.iter() {
            push_unique(&mut target.workloads, w.clone(), true);
        }
        for n in absorbed.nodes.iter() {
            push_unique(&mut target.nodes, n.clone(), true);
        }
        for (node, at) in absorbed.oom.iter() {
            if target.oom.len() < MAX_OBJECTS {
                target.oom.push((node.clone(), *at));
            }
        }
        for uid in absorbed.context.iter() {
            if target.context.len() < MAX_CONTEXT {
                target.context.push(uid.clone());
            }
        }
        if absorbed.reported {
            let into_id = target.id.clone();
            let mut record = absorbed.clone();
            records.push(self.record(&mut record, IncidentStatus::Resolved, Some(&into_id)));
        }
        let target_reported = self.incidents[&into].reported;
        if absorbed.reported && !target_reported {
            // What was reported stays reported under its new id.
            let mut target = self.incidents.remove(&into).expect("open incident");
            records.push(self.record(&mut target, IncidentStatus::Opened, None));
            self.incidents.insert(into, target);
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
            let weak_only = incident.strong_occurrences == 0;
            let confirmed = if weak_only {
                incident.occurrences >= WEAK_MIN_OCCURRENCES.max(settings.min_occurrences)
                    && span >= secs(WEAK_MIN_SPAN).max(settings.min_duration)
            } else {
                incident.severity == Severity::Critical
                    || incident.terminal
                    || (incident.occurrences >= settings.min_occurrences
                        && span >= settings.min_duration)
            };
            confirmed.then_some(IncidentStatus::Opened)
        } else {
            let due = match (incident.reported_at, incident.last) {
                (Some(at), Some(last)) => last - at >= settings.update_interval,
                _ => false,
            };
            let worse = incident
                .reported_severity
                .is_some_and(|s| incident.severity > s);
            ((due && incident.grew()) || worse).then_some(IncidentStatus::Updated)
        };
        if let Some(status) = status {
            let mut incident = self.incidents.remove(&id).expect("open incident");
            records.push(self.record(&mut incident, status, None));
            self.incidents.insert(id, incident);
            if let Some(label) = self.labels.get_mut(&id) {
                label.1 = true;
            }
        }
    }

    /// The record of an incident's current state (and notes it as reported).
    pub fn record(
        &self,
        incident: &mut IncidentState,
        status: IncidentStatus,
        merged_into: Option<&Str>,
    ) -> Event {
        incident.reported = true;
        incident.reported_severity = Some(incident.severity);
        incident.reported_at = incident.last;
        incident.reported_members = incident.members;
        incident.reported_occurrences = incident.occurrences;
        let (root, trigger) = self.root_cause(incident);
        let root_cause = root.map(|(n, rule)| root_of(n, &rule));
        let trigger = trigger.map(|n| root_of(n, "trigger"));
        let summary = summary::summary(incident, root_cause.as_ref(), trigger.as_ref());
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
            message: match merged_into {
                Some(into) => format!("merged into {into}: {summary}"),
                None => summary.clone(),
            },
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
            correlation_id: Some(merged_into.unwrap_or(&incident.id).clone()),
            incident: Some(Box::new(Incident {
                id: incident.id.clone(),
                status,
                severity: incident.severity,
                summary,
                root_cause,
                trigger,
                merged_into: merged_into.cloned(),
                objects: incident.objects.clone(),
                reasons: incident.reasons.clone(),
                members: incident.members,
                context: incident.context.clone(),
                first_seen: incident.first,
                last_seen: incident.last,
            })),
            ..Event::default()
        }
    }

    /// The root cause (with the rule that placed it) and the trigger: the change that
    /// started the trouble, when one joined and is not itself the root cause.
    fn root_cause<'a>(
        &self,
        incident: &'a IncidentState,
    ) -> (Option<(&'a Notable, String)>, Option<&'a Notable>) {
        let notable = &incident.notable;
        // Which rules each member may be the cause or the effect of, by reason alone (the
        // cheap test that rules out most pairs before the full one).
        let rules = &self.settings.rules;
        let mask = |n: &Notable, side: fn(&CausalRule) -> &Vec<String>| -> u128 {
            rules
                .iter()
                .enumerate()
                .filter(|(i, r)| *i >= 128 || side(r).iter().any(|x| *x == n.reason))
                .fold(0, |m, (i, _)| m | (1u128 << i.min(127)))
        };
        let as_cause: Vec<u128> = notable.iter().map(|n| mask(n, |r| &r.cause)).collect();
        let as_effect: Vec<u128> = notable.iter().map(|n| mask(n, |r| &r.effect)).collect();
        let mut edges: Vec<(usize, usize, usize)> = Vec::new();
        for (ci, c) in notable.iter().enumerate() {
            if as_cause[ci] == 0 {
                continue;
            }
            for (ei, e) in notable.iter().enumerate() {
                if ci == ei || e.change || as_cause[ci] & as_effect[ei] == 0 {
                    continue;
                }
                if let Some(r) = rules.iter().position(|r| self.explains(r, c, e)) {
                    edges.push((ci, ei, r));
                }
            }
        }
        // A rollout is the cause only when its new pods fail (two of them when it asked for
        // two or more): one pod crash-looping among healthy siblings has its own cause.
        let explained = |ci: usize| {
            let mut objects: Vec<&str> = edges
                .iter()
                .filter(|(c, _, _)| *c == ci)
                .map(|(_, e, _)| notable[*e].object.name.as_str())
                .collect();
            objects.sort_unstable();
            objects.dedup();
            objects.len()
        };
        let weak_changes: Vec<usize> = (0..notable.len())
            .filter(|&ci| {
                let c = &notable[ci];
                c.change && explained(ci) < replicas_asked(&c.message).clamp(1, 2)
            })
            .collect();
        edges.retain(|(ci, _, _)| !weak_changes.contains(ci));
        let mut is_effect = vec![false; notable.len()];
        let mut cause_rule: Vec<Option<usize>> = vec![None; notable.len()];
        for &(ci, ei, r) in &edges {
            is_effect[ei] = true;
            cause_rule[ci].get_or_insert(r);
        }
        let root = notable
            .iter()
            .enumerate()
            .filter(|(i, _)| cause_rule[*i].is_some() && !is_effect[*i])
            .min_by_key(|(_, n)| (n.start, n.change))
            .map(|(i, n)| {
                let rule = cause_rule[i].expect("filtered");
                (n, self.settings.rules[rule].name.clone())
            })
            .or_else(|| {
                notable
                    .iter()
                    .filter(|n| !n.change)
                    .min_by_key(|n| (priority(n), n.start))
                    .map(|n| (n, "earliest-failure".to_owned()))
            });
        let first_failure = notable
            .iter()
            .filter(|n| !n.change)
            .filter_map(|n| n.start)
            .min();
        let root_is_change = root.as_ref().is_some_and(|(r, _)| r.change);
        let trigger = notable
            .iter()
            .filter(|n| n.change && !root_is_change)
            .filter(|n| !root.as_ref().is_some_and(|(r, _)| std::ptr::eq(*n, *r)))
            .filter(|n| match (n.start, first_failure) {
                (Some(s), Some(f)) => s <= f && f - s <= self.settings.window,
                _ => false,
            })
            .max_by_key(|n| n.start);
        (root, trigger)
    }

    /// Does rule `r` make `c` a cause of `e`?
    fn explains(&self, r: &CausalRule, c: &Notable, e: &Notable) -> bool {
        let matches = |reasons: &[String],
                       pattern: &Option<crate::condition::Pattern>,
                       kind: &Option<String>,
                       n: &Notable| {
            reasons.iter().any(|x| *x == n.reason)
                && pattern.as_ref().is_none_or(|p| p.0.is_match(&n.message))
                && kind.as_ref().is_none_or(|k| *k == n.object.kind)
        };
        if !matches(&r.cause, &r.cause_message, &r.cause_kind, c)
            || !matches(&r.effect, &r.effect_message, &r.effect_kind, e)
            || r.cause_object
                .as_ref()
                .is_some_and(|p| !p.0.is_match(&c.object.name))
        {
            return false;
        }
        // The cause comes first (it may go on alongside its effect), within the window.
        let timely = match (c.start, e.start, c.end) {
            (Some(cs), Some(es), Some(ce)) => cs <= es && es - ce <= self.settings.window,
            _ => true,
        };
        // A rollout brings a bad image, but the pull failure names it: that is the cause.
        if c.change && is_image_pull(&e.message) {
            return false;
        }
        // A rollout's failures are those of the ReplicaSet it scaled up.
        if c.reason == "ScalingReplicaSet"
            && let Some(rs) = ownership::scaled_replica_set(&c.message)
            && !(e.object.name == rs
                || e.object
                    .name
                    .strip_prefix(rs)
                    .is_some_and(|rest| rest.starts_with('-')))
        {
            return false;
        }
        let same_object = c.object.kind == e.object.kind
            && c.object.name == e.object.name
            && c.namespace == e.namespace;
        let placed = match r.scope {
            Scope::Object => same_object,
            Scope::Owner => same_object || (!c.workload.is_empty() && c.workload == e.workload),
            Scope::Node => !c.node.is_empty() && c.node == e.node && !is_image_pull(&e.message),
            Scope::Namespace => {
                c.namespace == e.namespace && !same_object && !is_image_pull(&e.message)
            }
            Scope::Incident => true,
        };
        timely && placed
    }

    /// Resolves an incident: its record (if it was reported), and its indexes dropped.
    pub fn resolve(&mut self, id: u64, records: &mut Vec<Event>) {
        let Some(mut incident) = self.incidents.remove(&id) else {
            return;
        };
        self.workloads.retain(|_, i| *i != id);
        self.displaced.retain(|_, i| *i != id);
        self.services.retain(|_, i| *i != id);
        self.nodes.retain(|_, i| *i != id);
        self.scheduling.retain(|_, i| *i != id);
        self.storage.retain(|_, i| *i != id);
        if self.dns == Some(id) {
            self.dns = None;
        }
        if incident.reported {
            records.push(self.record(&mut incident, IncidentStatus::Resolved, None));
        }
    }

    /// Resolves incidents quiet for `resolve_after`: in event time, or (`wall`) by the clock.
    pub fn expire(&mut self, wall: bool, records: &mut Vec<Event>) {
        let watermark = self.watermark;
        let quiet: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(_, i)| {
                // A lost node that has not come back keeps its incident open (nothing more
                // is written while it is down), up to a bound.
                let quiet = if i.down.is_empty() {
                    self.settings.resolve_after
                } else {
                    self.settings.resolve_after.max(secs(NODE_DOWN_MAX_QUIET))
                };
                let by_event_time = match (i.last, watermark) {
                    (Some(last), Some(w)) => w - last > quiet,
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

    /// An `updated` record for every reported incident that grew since its last one
    /// (the end of a replay: its final state).
    pub fn final_updates(&mut self, records: &mut Vec<Event>) {
        let ids: Vec<u64> = self.incidents.keys().copied().collect();
        for id in ids {
            let mut incident = self.incidents.remove(&id).expect("listed");
            if incident.reported && incident.grew() {
                records.push(self.record(&mut incident, IncidentStatus::Updated, None));
            }
            self.incidents.insert(id, incident);
        }
    }
}

/// The facts about an event that linking needs, worked out once.
struct Member {
    this: u64,
    identity: u64,
    /// Occurrences counted before (in an incident now over).
    prior: u64,
    workload: Str,
    node: Str,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

/// A cheap test before the volume regex: does the message talk about volumes or claims?
fn names_a_volume(message: &str) -> bool {
    let bytes = message.as_bytes();
    memchr::memmem::find(bytes, b"olume").is_some()
        || memchr::memmem::find(bytes, b"laim").is_some()
}

/// The Service a message names by its cluster address (`https://X.NS.svc`): (X, NS).
fn named_service(message: &str) -> Option<(&str, &str)> {
    static SERVICE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"//([a-z0-9][a-z0-9-]*)\.([a-z0-9][a-z0-9-]*)\.svc\b").expect("valid")
    });
    if !message.contains(".svc") {
        return None;
    }
    let c = SERVICE.captures(message)?;
    Some((c.get(1)?.as_str(), c.get(2)?.as_str()))
}

/// How many replicas a scale-up asked for ("... to 3"); 1 when the message does not say.
fn replicas_asked(message: &str) -> usize {
    message
        .rsplit_once(" to ")
        .and_then(|(_, n)| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// What many objects' failures may share, when the message says: the scheduling failure
/// (its shape: cluster capacity), the admission webhook that refused them.
fn shared_cause(e: &Event) -> Option<u64> {
    static WEBHOOK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"failed calling webhook "([^"]+)""#).expect("valid")
    });
    match e.reason.as_str() {
        "FailedScheduling" => Some(message_shape(&e.message)),
        "FailedCreate" if e.message.contains("webhook") => WEBHOOK
            .captures(&e.message)
            .map(|c| xxh3_64(format!("webhook {}", &c[1]).as_bytes())),
        _ => None,
    }
}

/// The scheduler's and the autoscaler's events about a pod waiting for room.
fn is_scheduling(e: &Event) -> bool {
    matches!(
        e.reason.as_str(),
        "FailedScheduling" | "TriggeredScaleUp" | "NotTriggerScaleUp" | "Preempted"
    )
}

/// How fundamental a failure is, for root causes no rule decides: node, storage, image,
/// scheduling and quota, memory, crashes, liveness, the rest, readiness.
fn priority(n: &Notable) -> u8 {
    match n.reason.as_str() {
        _ if n.object.kind == "Node" => 0,
        "FailedAttachVolume" | "FailedMount" | "FailedMapVolume" | "ProvisioningFailed" => 1,
        "Failed" | "ErrImagePull" if is_image_pull(&n.message) => 2,
        "FailedScheduling" | "FailedCreate" => 3,
        "OOMKilling" | "SystemOOM" | "Evicted" => 4,
        "BackOff" | "CrashLoopBackOff" => 5,
        "Unhealthy" if !n.message.starts_with("Readiness") => 6,
        "Unhealthy" => 8,
        _ => 7,
    }
}

fn root_of(n: &Notable, rule: &str) -> RootCause {
    RootCause {
        reason: n.reason.clone(),
        object: n.object.clone(),
        message: n.message.clone(),
        timestamp: n.start,
        rule: rule.to_owned(),
        uid: n.uid.clone(),
        resource_version: n.resource_version.clone(),
    }
}

fn add_notable(incident: &mut IncidentState, n: Notable) {
    let known = incident.notable.iter().position(|x| {
        x.shape == n.shape
            && x.reason == n.reason
            && x.object.kind == n.object.kind
            && x.object.name == n.object.name
    });
    match known {
        Some(i) => {
            let x = &mut incident.notable[i];
            x.occurrences += n.occurrences;
            x.start = min_time(x.start, n.start);
            x.end = x.end.max(n.end);
        }
        None if incident.notable.len() < MAX_NOTABLE => incident.notable.push(n),
        None => {}
    }
}

/// A message's shape: its hash with digits dropped (counts, durations, ports, IPs vary).
pub(super) fn message_shape(message: &str) -> u64 {
    let mut h = Xxh3::new();
    for chunk in message.split(|c: char| c.is_ascii_digit()) {
        h.update(chunk.as_bytes());
    }
    h.digest()
}

/// Adds `value` unless listed (or `keep` is false, or the list is full).
fn push_unique(list: &mut Vec<Str>, value: Str, keep: bool) {
    if keep && list.len() < MAX_OBJECTS && !list.contains(&value) {
        list.push(value);
    }
}

fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
