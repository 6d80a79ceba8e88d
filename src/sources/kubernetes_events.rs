//! The `kubernetes_events` source: a list + watch of Events that never loses, never repeats.
//!
//! Per scope (the whole cluster, or each of `namespaces`), the source:
//!
//! 1. finds where to start without loading every event: the checkpointed resourceVersion,
//!    or a `limit=1` list for `start_at = "now"`; `"beginning"` and `"<duration> ago"` page
//!    through the existing events with `limit`/`continue` and stream them;
//! 2. watches from there with bookmarks (`allowWatchBookmarks`) and a server-side timeout
//!    that replaces dead connections; `ADDED` and `MODIFIED` (a recurrence: the aggregate
//!    transform counts it once) are emitted, `DELETED` (TTL expiry) is not news;
//! 3. on `410 Gone` (the resourceVersion expired), relists and emits only what it has not
//!    emitted already, by `uid` + `resourceVersion`, remembered in a bounded LRU that is
//!    saved with the checkpoint; it never re-sends the history and never skips;
//! 4. retries every failure with jittered exponential backoff (reset after a healthy
//!    watch); 429 answers are retried by the `kube` client after their `Retry-After`.
//!
//! The checkpoint (`<data_dir>/checkpoints/<id>.json`) holds, per scope, the newest
//! resourceVersion that every sink has acknowledged (bookmarks advance it while idle) and
//! the dedupe memory; a restart resumes from it with no gap and no duplicate.
//!
//! Objects are read as untyped JSON and decoded by kollate's own decoder, the same one the
//! file source uses, so both Event APIs give the same [`crate::event::Event`].

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Timelike;
use futures::{AsyncBufReadExt, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use lru::LruCache;
use serde::{Deserialize, Serialize};

mod enrich;
mod leader;
mod limit;

pub use enrich::EnrichField;
pub use leader::{CHECKPOINT_ANNOTATION, LeaderElectionConfig};

use crate::batch::{AckTracker, Batch};
use crate::config::DurationValue;
use crate::event::{Event, WatchFrame, decode_json, decode_watch_frame};
use crate::metrics::ComponentMetrics;
use crate::topology::{BuildError, Fanout, SourceContext, Task};

/// Every API call the source makes, as (API group, resource, verb): what its RBAC role
/// must allow, and all it needs (`examples/kubernetes/rbac.yaml` is checked against it).
pub const REQUIRED_PERMISSIONS: &[(&str, &str, &str)] = &[
    ("events.k8s.io", "events", "list"),
    ("events.k8s.io", "events", "watch"),
    ("", "events", "list"),
    ("", "events", "watch"),
];

/// What `enrich` adds: reading the objects events are about, and their owners.
pub const ENRICH_PERMISSIONS: &[(&str, &str, &str)] = &[
    ("", "pods", "get"),
    ("apps", "replicasets", "get"),
    ("apps", "deployments", "get"),
    ("apps", "statefulsets", "get"),
    ("apps", "daemonsets", "get"),
    ("batch", "jobs", "get"),
    ("batch", "cronjobs", "get"),
];

/// What `leader_election` adds (on its own Lease only).
pub const LEADER_ELECTION_PERMISSIONS: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
];

/// Default events per list page.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default server-side watch timeout (the connection is then replaced).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// Default bound on remembered `uid`+`resourceVersion` pairs.
pub const DEFAULT_DEDUPE_CAPACITY: usize = 100_000;
/// Default events per batch.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Default time without progress (no event, no bookmark) after which the watch counts as
/// stalled in the health checks. API servers send a bookmark about every minute.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(180);
/// Default client-side requests per second.
pub const DEFAULT_QPS: f64 = 50.0;
/// Default client-side burst.
pub const DEFAULT_BURST: u32 = 100;
/// Default bound on objects whose enrichment is cached.
pub const DEFAULT_ENRICH_CACHE_SIZE: usize = 10_000;
/// Default time an object's enrichment is reused.
pub const DEFAULT_ENRICH_TTL: Duration = Duration::from_secs(600);
/// A partial batch waits at most this long.
const BATCH_TIMEOUT: Duration = Duration::from_millis(200);
/// Backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A watch that lasted this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Minimum time between checkpoint writes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Which Event API to watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum EventsApi {
    /// `events.k8s.io/v1` (the default).
    #[default]
    #[serde(rename = "events.k8s.io/v1")]
    EventsV1,
    /// `core/v1`.
    #[serde(rename = "core/v1", alias = "v1")]
    CoreV1,
}

/// Where to start when there is no checkpoint (or regardless of it).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StartAt {
    /// The checkpoint if there is one, else now (the default).
    #[default]
    Auto,
    /// Only events from now on.
    Now,
    /// The checkpoint (an error-free fresh start from now when there is none).
    Checkpoint,
    /// Every event the API server still holds.
    Beginning,
    /// Existing events that happened within this duration.
    Ago(Duration),
}

impl<'de> Deserialize<'de> for StartAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "now" => StartAt::Now,
            "checkpoint" => StartAt::Checkpoint,
            "beginning" => StartAt::Beginning,
            other => match other.strip_suffix(" ago").map(humantime::parse_duration) {
                Some(Ok(d)) => StartAt::Ago(d),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "invalid start_at `{other}`: expected \"now\", \"checkpoint\", \"beginning\" or \"<duration> ago\""
                    )));
                }
            },
        })
    }
}

fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}
fn default_watch_timeout() -> DurationValue {
    DurationValue(DEFAULT_WATCH_TIMEOUT)
}
fn default_dedupe() -> usize {
    DEFAULT_DEDUPE_CAPACITY
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_enrich_cache_size() -> usize {
    DEFAULT_ENRICH_CACHE_SIZE
}
fn default_enrich_ttl() -> DurationValue {
    DurationValue(DEFAULT_ENRICH_TTL)
}
fn default_qps() -> f64 {
    DEFAULT_QPS
}
fn default_burst() -> u32 {
    DEFAULT_BURST
}
fn default_stall_timeout() -> DurationValue {
    DurationValue(DEFAULT_STALL_TIMEOUT)
}

/// `type = "kubernetes_events"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesEventsSourceConfig {
    /// `"events.k8s.io/v1"` (default) or `"core/v1"`.
    #[serde(default)]
    pub api: EventsApi,
    /// A kubeconfig file; default: in-cluster config, else `$KUBECONFIG` / `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[serde(default)]
    pub context: Option<String>,
    /// Namespaces to watch (one watch each); empty: the whole cluster.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces (globs) whose events are dropped, e.g. `["kube-*"]`.
    #[serde(default)]
    pub exclude_namespaces: Option<crate::condition::Globs>,
    /// Server-side field selector, e.g. `reason=BackOff`.
    #[serde(default)]
    pub field_selector: Option<String>,
    /// Server-side label selector.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Event types to keep (`["Warning"]`), as a server-side field selector.
    #[serde(default)]
    pub types: Vec<String>,
    /// `"now"`, `"checkpoint"`, `"beginning"` or `"<duration> ago"`; default: the
    /// checkpoint if there is one, else now.
    #[serde(default)]
    pub start_at: StartAt,
    /// Events per list page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Server-side watch timeout; the watch is then re-established from where it was.
    #[serde(default = "default_watch_timeout")]
    pub watch_timeout: DurationValue,
    /// Remembered `uid`+`resourceVersion` pairs, to emit nothing twice after a relist.
    #[serde(default = "default_dedupe")]
    pub dedupe_capacity: usize,
    /// Events per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Without progress (no event, no bookmark, no successful list) for this long, the
    /// health checks report the source stalled (default 3m).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: DurationValue,
    /// Add what the API server knows about each event's object: `"owner"` (the owner
    /// chain, e.g. ReplicaSet then Deployment), `"node"`, `"labels"`.
    #[serde(default)]
    pub enrich: Vec<EnrichField>,
    /// Objects whose enrichment is cached (LRU).
    #[serde(default = "default_enrich_cache_size")]
    pub enrich_cache_size: usize,
    /// How long a cached enrichment is reused before the object is read again.
    #[serde(default = "default_enrich_ttl")]
    pub enrich_ttl: DurationValue,
    /// Client-side limit on API requests per second (list pages, watch (re)connections,
    /// Lease renewals), on top of the API server's own fairness (default 50).
    #[serde(default = "default_qps")]
    pub qps: f64,
    /// Requests that may go at once above `qps` after a quiet spell (default 100).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Run several replicas; only the one holding this Lease watches and ships, and a new
    /// leader resumes from the checkpoint the last one left on the Lease.
    #[serde(default)]
    pub leader_election: Option<LeaderElectionConfig>,
}

/// The source could not talk to the API server in a way retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesSourceError {
    /// No usable client configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfigFailed(String),
    /// Every downstream stopped.
    #[error(transparent)]
    Downstream(#[from] crate::topology::DownstreamClosed),
}

impl KubernetesEventsSourceConfig {
    /// Builds the source's task.
    ///
    /// # Errors
    /// Never at build time: the client is configured when the task starts, so a bad
    /// kubeconfig is reported as the source's failure with its reason.
    pub fn build(&self, ctx: SourceContext) -> Result<Task, BuildError> {
        if let Some(message) = self
            .leader_election
            .as_ref()
            .and_then(|l| l.validate().err())
        {
            return Err(BuildError {
                kind: "source",
                component: ctx.id.clone(),
                message,
            });
        }
        let mut selectors: Vec<String> = self.field_selector.iter().cloned().collect();
        // Events are Normal or Warning: one type is a filter, both are everything.
        if let [one] = self.types.as_slice() {
            selectors.push(format!("type={one}"));
        }
        let settings = Settings {
            api: self.api,
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            field_selector: (!selectors.is_empty()).then(|| selectors.join(",")),
            label_selector: self.label_selector.clone(),
            start_at: self.start_at.clone(),
            page_size: self.page_size.max(1),
            watch_timeout: self.watch_timeout.0,
            dedupe_capacity: NonZeroUsize::new(self.dedupe_capacity.max(1)).expect("non-zero"),
            batch_size: self.batch_size.max(1),
            leader_election: self.leader_election.clone(),
            exclude_namespaces: self.exclude_namespaces.clone(),
            limiter: Arc::new(limit::RateLimiter::new(self.qps, self.burst)),
            enrich: (!self.enrich.is_empty()).then(|| {
                (
                    self.enrich.clone(),
                    self.enrich_cache_size,
                    self.enrich_ttl.0,
                )
            }),
            enricher: None,
        };
        ctx.metrics.stall_after_ms.store(
            self.stall_timeout.0.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        ctx.metrics.progressed();
        let scopes: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        Ok(Box::pin(run(settings, scopes, ctx)))
    }
}

#[derive(Clone)]
struct Settings {
    api: EventsApi,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    field_selector: Option<String>,
    label_selector: Option<String>,
    start_at: StartAt,
    page_size: u32,
    watch_timeout: Duration,
    dedupe_capacity: NonZeroUsize,
    batch_size: usize,
    leader_election: Option<LeaderElectionConfig>,
    exclude_namespaces: Option<crate::condition::Globs>,
    /// Shared by every API call the source makes.
    limiter: Arc<limit::RateLimiter>,
    /// `enrich`: (fields, cache size, ttl).
    enrich: Option<(Vec<EnrichField>, usize, Duration)>,
    /// Made from `enrich` once the client exists.
    enricher: Option<Arc<enrich::Enricher>>,
}

/// What is saved per scope.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ScopeCheckpoint {
    resource_version: Option<String>,
    /// With `start_at = "now"`: when watching began. A relist after 410 does not emit
    /// events whose last occurrence is older (they existed before and were skipped on
    /// purpose), whatever the dedupe memory has forgotten.
    #[serde(default)]
    floor: Option<chrono::DateTime<chrono::Utc>>,
    /// `uid/resourceVersion` of recently emitted events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoints {
    scopes: BTreeMap<String, ScopeCheckpoint>,
}

impl Checkpoints {
    /// What the leader shares on the Lease: positions, without the dedupe memory (too big
    /// for an annotation; a successor resumes by resourceVersion and needs none).
    fn shared(&self) -> String {
        let scopes = self
            .scopes
            .iter()
            .map(|(k, s)| {
                let position = ScopeCheckpoint {
                    seen: Vec::new(),
                    ..s.clone()
                };
                (k.clone(), position)
            })
            .collect();
        serde_json::to_string(&Checkpoints { scopes }).unwrap_or_default()
    }

    /// Takes the positions a previous leader shared (they are newer than any local file).
    fn adopt(&mut self, shared: &str) {
        let Ok(shared) = serde_json::from_str::<Checkpoints>(shared) else {
            tracing::warn!("Ignored an unreadable checkpoint on the Lease.");
            return;
        };
        for (key, position) in shared.scopes {
            let entry = self.scopes.entry(key).or_default();
            entry.resource_version = position.resource_version;
            entry.floor = position.floor;
        }
    }
}

fn scope_key(scope: &Option<String>) -> String {
    scope.clone().unwrap_or_else(|| "*".to_owned())
}

async fn client(settings: &Settings) -> Result<kube::Client, KubernetesSourceError> {
    let failed =
        |e: &dyn std::fmt::Display| KubernetesSourceError::ClientConfigFailed(e.to_string());
    let config = match &settings.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| failed(&format!("{}: {e}", path.display())))?;
            let options = KubeConfigOptions {
                context: settings.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| failed(&e))?
        }
        None => kube::Config::infer().await.map_err(|e| failed(&e))?,
    };
    kube::Client::try_from(config).map_err(|e| failed(&e))
}

async fn run(
    mut settings: Settings,
    scopes: Vec<Option<String>>,
    mut ctx: SourceContext,
) -> Result<(), crate::topology::BoxError> {
    let client = client(&settings).await?;
    if let Some((fields, capacity, ttl)) = &settings.enrich {
        settings.enricher = Some(Arc::new(enrich::Enricher::new(
            client.clone(),
            fields,
            *capacity,
            *ttl,
            settings.limiter.clone(),
        )));
    }
    let resource = match settings.api {
        EventsApi::EventsV1 => {
            ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event"))
        }
        EventsApi::CoreV1 => ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Event")),
    };
    let path = ctx
        .data_dir
        .join("checkpoints")
        .join(format!("{}.json", ctx.id));
    let saved: Checkpoints = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let store = Arc::new(tokio::sync::Mutex::new(saved));
    let mut watchers = Watchers {
        client: client.clone(),
        resource,
        scopes,
        settings: settings.clone(),
        store: store.clone(),
        path,
    };
    let Some(election) = &settings.leader_election else {
        let shutdown = ctx.shutdown.clone();
        let result = watchers.run(&ctx, shutdown).await;
        ctx.out.close();
        return result;
    };
    let mut elector = leader::Elector::new(client, election, settings.limiter.clone());
    let mut result = Ok(());
    while let Some(shared) = elector.acquire(&ctx.shutdown, &ctx.metrics).await {
        if let Some(shared) = shared {
            store.lock().await.adopt(&shared);
            // Whatever `start_at` says, a successor continues where the last leader stopped.
            watchers.settings.start_at = StartAt::Checkpoint;
        }
        // One term of leadership: it ends at shutdown or when the Lease is lost.
        let term = ctx.shutdown.child_token();
        let watching = watchers.run(&ctx, term.clone());
        let mut watching = std::pin::pin!(watching);
        let shared = || store.try_lock().ok().map(|s| s.shared());
        tokio::select! {
            r = &mut watching => result = r,
            held = elector.hold(&term, &ctx.metrics, shared) => {
                if !held {
                    ComponentMetrics::add(&ctx.metrics.warnings, 1);
                }
                term.cancel();
                result = watching.await;
            }
        }
        if ctx.shutdown.is_cancelled() || result.is_err() {
            let final_checkpoint = store.lock().await.shared();
            elector.release(final_checkpoint).await;
            break;
        }
    }
    ctx.out.close();
    result
}

/// What every term of watching needs.
struct Watchers {
    client: kube::Client,
    resource: ApiResource,
    scopes: Vec<Option<String>>,
    settings: Settings,
    store: Arc<tokio::sync::Mutex<Checkpoints>>,
    path: PathBuf,
}

impl Watchers {
    /// Watches every scope until `stop` is cancelled (or one fails: then all stop).
    async fn run(
        &self,
        ctx: &SourceContext,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::topology::BoxError> {
        let mut tasks = tokio::task::JoinSet::new();
        for scope in &self.scopes {
            let api: Api<DynamicObject> = match scope {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
                None => Api::all_with(self.client.clone(), &self.resource),
            };
            let watcher = ScopeWatcher {
                id: ctx.id.clone(),
                key: scope_key(scope),
                client: self.client.clone(),
                api,
                settings: self.settings.clone(),
                out: ctx.out.clone(),
                metrics: ctx.metrics.clone(),
                shutdown: stop.clone(),
                store: self.store.clone(),
                path: self.path.clone(),
            };
            tasks.spawn(watcher.run());
        }
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stop.cancel();
                    result = Err(e.into());
                }
                Err(e) => result = Err(e.into()),
            }
        }
        result
    }
}

struct ScopeWatcher {
    id: String,
    key: String,
    client: kube::Client,
    api: Api<DynamicObject>,
    settings: Settings,
    out: Fanout,
    metrics: Arc<ComponentMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
    store: Arc<tokio::sync::Mutex<Checkpoints>>,
    path: PathBuf,
}

/// Events waiting to be sent, and the acknowledgement bookkeeping.
struct Outbox {
    batch: Vec<Event>,
    /// Where the stream is once the batch is delivered; empty while listing (a list is
    /// not in resourceVersion order, so no item's version is a safe place to resume).
    position: String,
    /// Positions travel with the count of keys emitted up to them (see `unacked`).
    tracker: AckTracker<(String, u64)>,
    /// Keys emitted but not yet acknowledged, oldest first: they are left out of the saved
    /// dedupe memory, or a crash would make the restarted source skip them as sent.
    unacked: std::collections::VecDeque<String>,
    /// Keys acknowledged so far (the index in emission order of `unacked`'s front).
    acked_keys: u64,
    /// The newest resourceVersion every sink has acknowledged.
    acknowledged: Option<String>,
    /// `uid/resourceVersion` of what was emitted.
    seen: LruCache<String, ()>,
    /// Events older than this are never emitted by a relist (see [`ScopeCheckpoint`]).
    floor: Option<chrono::DateTime<chrono::Utc>>,
    /// When the checkpoint was last written (none yet: the first position is saved at once,
    /// so that a crash right after start-up resumes from there, not from "now" again).
    last_save: Option<Instant>,
}

impl Outbox {
    /// Remembers `key` (`uid/resourceVersion`) as emitted; false if it already was.
    fn first_time(&mut self, key: String) -> bool {
        if self.seen.put(key.clone(), ()).is_some() {
            return false;
        }
        self.unacked.push_back(key);
        true
    }

    /// A notifier for a batch (or a bare position) ending at `resource_version`.
    fn notifier(&mut self, resource_version: String) -> crate::batch::BatchNotifier {
        let end = self.acked_keys + self.unacked.len() as u64;
        self.tracker.notifier((resource_version, end))
    }

    /// Applies a position every sink acknowledged.
    fn applied(&mut self, (resource_version, end): (String, u64)) {
        while self.acked_keys < end && self.unacked.pop_front().is_some() {
            self.acked_keys += 1;
        }
        if !resource_version.is_empty() {
            self.acknowledged = Some(resource_version);
        }
    }

    /// The dedupe memory to save: acknowledged keys only, oldest first (loading them back in
    /// order keeps the LRU order).
    fn acknowledged_keys(&self) -> Vec<String> {
        let unacked: std::collections::HashSet<&String> = self.unacked.iter().collect();
        let mut keys: Vec<String> = self
            .seen
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !unacked.contains(k))
            .cloned()
            .collect();
        keys.reverse();
        keys
    }
}

impl ScopeWatcher {
    async fn run(mut self) -> Result<(), KubernetesSourceError> {
        let mut seen: LruCache<String, ()> = LruCache::new(self.settings.dedupe_capacity);
        let (saved_rv, saved_floor) = {
            let store = self.store.lock().await;
            let scope = store.scopes.get(&self.key);
            for key in scope.map(|s| s.seen.as_slice()).unwrap_or_default() {
                seen.put(key.clone(), ());
            }
            (
                scope.and_then(|s| s.resource_version.clone()),
                scope.and_then(|s| s.floor),
            )
        };
        let floor = match (&self.settings.start_at, &saved_rv) {
            (StartAt::Auto | StartAt::Checkpoint, Some(_)) => saved_floor,
            // Kubernetes timestamps have second precision: events of this very second count.
            (StartAt::Auto | StartAt::Checkpoint | StartAt::Now, _) => {
                chrono::Utc::now().with_nanosecond(0)
            }
            (StartAt::Beginning, _) => None,
            (StartAt::Ago(d), _) => chrono::Duration::from_std(*d)
                .ok()
                .map(|d| chrono::Utc::now() - d),
        };
        let mut outbox = Outbox {
            batch: Vec::new(),
            position: String::new(),
            tracker: AckTracker::new(),
            unacked: Default::default(),
            acked_keys: 0,
            acknowledged: saved_rv.clone(),
            seen,
            floor,
            last_save: None,
        };
        let mut backoff = Backoff::default();
        let mut rv: Option<String> = match (&self.settings.start_at, &saved_rv) {
            (StartAt::Auto | StartAt::Checkpoint, Some(rv)) => Some(rv.clone()),
            _ => None,
        };
        let mut list_first =
            matches!(self.settings.start_at, StartAt::Beginning | StartAt::Ago(_)) && rv.is_none();
        while !self.shutdown.is_cancelled() {
            if rv.is_none() || list_first {
                let emit_existing = list_first;
                match self.list(emit_existing, &mut outbox).await {
                    Ok(list_rv) => {
                        rv = Some(list_rv);
                        list_first = false;
                    }
                    Err(Failure::Fatal(e)) => return Err(e),
                    Err(Failure::Retry(wait, reason)) => {
                        self.retry(&mut backoff, wait, &reason).await;
                        continue;
                    }
                }
            }
            let from = rv.clone().unwrap_or_default();
            let started = Instant::now();
            match self.watch(&from, &mut rv, &mut outbox).await {
                Ok(WatchEnd::Closed) => {}
                Ok(WatchEnd::Expired) => {
                    tracing::info!(component = %self.id, scope = %self.key, resource_version = %from, "Watch expired (410); relisting and emitting only what was missed.");
                    ComponentMetrics::add(&self.metrics.warnings, 1);
                    list_first = true;
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(wait, reason)) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = Backoff::default();
                    }
                    self.retry(&mut backoff, wait, &reason).await;
                }
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = Backoff::default();
            }
        }
        // Whatever is still in hand goes out before we stop; a stopped downstream is not
        // an error here (the pipeline is shutting down).
        if let Err(Failure::Fatal(e)) = self.flush(&mut outbox).await {
            tracing::debug!(component = %self.id, error = %e, "Final flush not delivered.");
        }
        self.out.close();
        let mut released = Vec::new();
        outbox.tracker.close(|p| released.push(p)).await;
        for p in released {
            outbox.applied(p);
        }
        self.save(&outbox).await;
        Ok(())
    }

    /// A failed API call, to retry; one that got no answer at all (connection refused,
    /// reset, timed out: anything but an HTTP status) marks the API server unreachable.
    fn failed(&self, e: kube::Error) -> Failure {
        if !matches!(e, kube::Error::Api(_)) {
            self.metrics.unreachable();
        }
        Failure::Retry(None, e.to_string())
    }

    async fn retry(&self, backoff: &mut Backoff, wait: Option<Duration>, reason: &str) {
        ComponentMetrics::add(&self.metrics.errors, 1);
        let delay = wait.unwrap_or_else(|| backoff.next());
        tracing::warn!(component = %self.id, scope = %self.key, error = %reason, retry_in = ?delay, "Kubernetes API call failed; retrying.");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Lists (paged). Emits the items not seen before when `emit` (start-up from the
    /// beginning, or a relist after 410); returns the list's resourceVersion.
    async fn list(&mut self, emit: bool, outbox: &mut Outbox) -> Result<String, Failure> {
        let cutoff = outbox.floor;
        let mut params = ListParams {
            field_selector: self.settings.field_selector.clone(),
            label_selector: self.settings.label_selector.clone(),
            ..Default::default()
        };
        params.limit = Some(if emit { self.settings.page_size } else { 1 });
        loop {
            let request = kube::core::Request::new(self.api.resource_url())
                .list(&params)
                .map_err(|e| Failure::Retry(None, e.to_string()))?;
            self.settings.limiter.acquire().await;
            let body = self
                .client
                .request_text(request)
                .await
                .map_err(|e| self.failed(e))?;
            self.metrics.reachable();
            self.metrics.progressed();
            ComponentMetrics::add(&self.metrics.bytes, body.len() as u64);
            // One page in memory at a time; items are decoded straight from its text.
            let page: ListPage<'_> = serde_json::from_str(&body)
                .map_err(|e| Failure::Retry(None, format!("unreadable list page: {e}")))?;
            if emit {
                for item in &page.items {
                    if let Some(event) = self.decode(item.get().as_bytes(), outbox)
                        && cutoff.is_none_or(|c| event.timestamp.is_none_or(|t| t >= c))
                    {
                        self.push(event, String::new(), outbox).await?;
                    }
                }
            }
            let list_rv = page.metadata.resource_version.unwrap_or_default();
            match page.metadata.continue_.filter(|c| emit && !c.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => {
                    // Positions from a list are safe once everything before them is.
                    self.push_position(list_rv.clone(), outbox).await?;
                    return Ok(list_rv);
                }
            }
        }
    }

    /// Watches from `from`, reading the stream's frames straight into kollate's decoder
    /// (one JSON parse per event, instead of the client's generic object and back).
    async fn watch(
        &mut self,
        from: &str,
        rv: &mut Option<String>,
        outbox: &mut Outbox,
    ) -> Result<WatchEnd, Failure> {
        let timeout = u32::try_from(self.settings.watch_timeout.as_secs())
            .unwrap_or(290)
            .max(1);
        let params = WatchParams {
            field_selector: self.settings.field_selector.clone(),
            label_selector: self.settings.label_selector.clone(),
            timeout: Some(timeout),
            bookmarks: true,
            ..Default::default()
        };
        let request = kube::core::Request::new(self.api.resource_url())
            .watch(&params, from)
            .map_err(|e| Failure::Retry(None, e.to_string()))?;
        // kube's client retries 429 answers itself, after their Retry-After.
        self.settings.limiter.acquire().await;
        let body = self
            .client
            .request_stream(request)
            .await
            .map_err(|e| self.failed(e))?;
        self.metrics.reachable();
        let mut lines = std::pin::pin!(body.lines());
        loop {
            let next = tokio::select! {
                next = lines.next() => next,
                _ = tokio::time::sleep(BATCH_TIMEOUT) => {
                    self.flush(outbox).await?;
                    continue;
                }
                _ = self.shutdown.cancelled() => return Ok(WatchEnd::Closed),
            };
            let Some(line) = next else {
                tracing::debug!(component = %self.id, scope = %self.key, resource_version = ?rv, "Watch closed; watching again.");
                return Ok(WatchEnd::Closed);
            };
            let line =
                line.map_err(|e| Failure::Retry(None, format!("watch stream broke: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            self.metrics.progressed();
            ComponentMetrics::add(&self.metrics.bytes, line.len() as u64);
            let frame = match decode_watch_frame(line.as_bytes()) {
                Ok(frame) => frame,
                Err(error) => {
                    ComponentMetrics::add(&self.metrics.errors, 1);
                    tracing::warn!(component = %self.id, %error, "Skipped an undecodable watch frame.");
                    continue;
                }
            };
            match frame {
                WatchFrame::Change {
                    uid,
                    resource_version,
                    event,
                } => {
                    if !outbox.first_time(format!("{uid}/{resource_version}")) {
                        ComponentMetrics::add(&self.metrics.discarded, 1);
                    } else {
                        match event {
                            Ok(event) => {
                                ComponentMetrics::add(&self.metrics.events_in, 1);
                                self.push(event, resource_version.clone(), outbox).await?;
                            }
                            Err(error) => {
                                ComponentMetrics::add(&self.metrics.errors, 1);
                                tracing::warn!(component = %self.id, %error, "Skipped an object that is not an Event.");
                            }
                        }
                    }
                    *rv = Some(resource_version);
                }
                WatchFrame::Deleted { resource_version } => {
                    ComponentMetrics::add(&self.metrics.discarded, 1);
                    *rv = Some(resource_version);
                }
                WatchFrame::Bookmark { resource_version } => {
                    self.flush(outbox).await?;
                    self.push_position(resource_version.clone(), outbox).await?;
                    *rv = Some(resource_version);
                }
                WatchFrame::Error { code: 410, .. } => return Ok(WatchEnd::Expired),
                WatchFrame::Error { code, message } => {
                    return Err(Failure::Retry(
                        None,
                        format!("watch error {code}: {message}"),
                    ));
                }
            }
        }
    }

    /// Decodes a listed object, unless it was already emitted (same uid and
    /// resourceVersion). List items carry no `apiVersion`; the API listed tells it.
    fn decode(&self, bytes: &[u8], outbox: &mut Outbox) -> Option<Event> {
        let mut event = match decode_json(bytes) {
            Ok(e) => e,
            Err(error) => {
                ComponentMetrics::add(&self.metrics.errors, 1);
                tracing::warn!(component = %self.id, %error, "Skipped an undecodable object from the API server.");
                return None;
            }
        };
        if !outbox.first_time(format!("{}/{}", event.uid, event.resource_version)) {
            ComponentMetrics::add(&self.metrics.discarded, 1);
            return None;
        }
        if event.api_version.is_empty() {
            event.api_version = match self.settings.api {
                EventsApi::EventsV1 => "events.k8s.io/v1".into(),
                EventsApi::CoreV1 => "v1".into(),
            };
        }
        ComponentMetrics::add(&self.metrics.events_in, 1);
        Some(event)
    }

    async fn push(
        &mut self,
        mut event: Event,
        position: String,
        outbox: &mut Outbox,
    ) -> Result<(), Failure> {
        outbox.position = position;
        if self
            .settings
            .exclude_namespaces
            .as_ref()
            .is_some_and(|g| g.is_match(&event.namespace))
        {
            ComponentMetrics::add(&self.metrics.discarded, 1);
            return Ok(());
        }
        if let Some(enricher) = &self.settings.enricher {
            enricher.enrich(&mut event, &self.metrics).await;
        }
        outbox.batch.push(event);
        if outbox.batch.len() >= self.settings.batch_size {
            self.flush(outbox).await?;
        }
        Ok(())
    }

    /// Records a position that needs no events (a bookmark, the end of a list): it becomes
    /// the checkpoint once everything emitted before it is acknowledged.
    async fn push_position(
        &mut self,
        position: String,
        outbox: &mut Outbox,
    ) -> Result<(), Failure> {
        self.flush(outbox).await?;
        drop(outbox.notifier(position));
        self.acknowledge(outbox).await;
        Ok(())
    }

    async fn flush(&mut self, outbox: &mut Outbox) -> Result<(), Failure> {
        if !outbox.batch.is_empty() {
            let events = std::mem::take(&mut outbox.batch);
            let n = events.len() as u64;
            let position = std::mem::take(&mut outbox.position);
            let notifier = outbox.notifier(position);
            if let Some(newest) = events.iter().filter_map(|e| e.timestamp).max() {
                let lag = (chrono::Utc::now() - newest).num_milliseconds().max(0);
                self.metrics
                    .lag_ms
                    .store(lag as u64, std::sync::atomic::Ordering::Relaxed);
            }
            self.out
                .send(Batch {
                    events,
                    notifiers: vec![notifier],
                })
                .await
                .map_err(|e| Failure::Fatal(e.into()))?;
            ComponentMetrics::add(&self.metrics.events_out, n);
        }
        self.acknowledge(outbox).await;
        Ok(())
    }

    /// Applies acknowledgements; saves the checkpoint at most every [`CHECKPOINT_INTERVAL`].
    async fn acknowledge(&self, outbox: &mut Outbox) {
        let mut released = Vec::new();
        outbox.tracker.poll(|p| released.push(p));
        let before = outbox.acknowledged.clone();
        for p in released {
            outbox.applied(p);
        }
        if outbox.acknowledged != before
            && outbox
                .last_save
                .is_none_or(|t| t.elapsed() >= CHECKPOINT_INTERVAL)
        {
            self.save(outbox).await;
            outbox.last_save = Some(Instant::now());
        }
    }

    async fn save(&self, outbox: &Outbox) {
        let seen = outbox.acknowledged_keys();
        let mut store = self.store.lock().await;
        let entry = store.scopes.entry(self.key.clone()).or_default();
        entry.resource_version = outbox.acknowledged.clone();
        entry.floor = outbox.floor;
        entry.seen = seen;
        if let Err(error) = super::write_checkpoint(&self.path, &*store) {
            tracing::error!(component = %self.id, file = %self.path.display(), %error, "Failed to write checkpoint.");
        }
    }
}

/// One page of a list, items left as text for kollate's decoder.
#[derive(Deserialize)]
struct ListPage<'a> {
    #[serde(default)]
    metadata: ListPageMeta,
    #[serde(default, borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
}

#[derive(Default, Deserialize)]
struct ListPageMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

enum WatchEnd {
    /// The server ended the watch (timeout) or the connection dropped: watch again.
    Closed,
    /// 410: the resourceVersion is too old.
    Expired,
}

enum Failure {
    /// Worth retrying, after the given wait (Retry-After) or the backoff.
    Retry(Option<Duration>, String),
    /// Not worth retrying.
    Fatal(KubernetesSourceError),
}

/// Jittered exponential backoff.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt += 1;
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter)
    }
}
