//! Enrichment (`enrich = ["owner", "node", "labels"]`): what the API server knows about the
//! object an event is about.
//!
//! For the kinds events are mostly about (Pods, the workload controllers, Nodes), the
//! source reads the object (metadata only, except a Pod's `spec.nodeName` when `node` is
//! wanted) and follows `ownerReferences` upwards: Pod -> ReplicaSet -> Deployment,
//! Pod -> Job -> CronJob, Pod -> StatefulSet / DaemonSet. Results are cached by object uid
//! (namespace/kind/name when an event carries none), in an LRU bounded by `enrich_cache_size` and kept for `enrich_ttl`; an object that is
//! gone or cannot be read is cached too (as nothing), so a storm of events about one
//! object costs one request, and every request goes through the source's rate limit.
//! Events about other kinds pass through untouched; so do events whose lookup failed
//! (counted as warnings).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use lru::LruCache;
use serde::Deserialize;

use super::limit::RateLimiter;
use crate::event::{Enrichment, Event, Owner, Str};
use crate::metrics::ComponentMetrics;

/// How far up an owner chain is followed.
const MAX_OWNER_DEPTH: usize = 4;

/// What to add to events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrichField {
    /// The owner chain.
    Owner,
    /// The node the object is on.
    Node,
    /// The object's labels.
    Labels,
}

/// Kinds looked up, with their API group, version and resource: also what the RBAC role
/// must allow `get` on (see [`super::ENRICH_PERMISSIONS`]).
pub const KINDS: &[(&str, &str, &str, &str)] = &[
    ("Pod", "", "v1", "pods"),
    ("ReplicaSet", "apps", "v1", "replicasets"),
    ("Deployment", "apps", "v1", "deployments"),
    ("StatefulSet", "apps", "v1", "statefulsets"),
    ("DaemonSet", "apps", "v1", "daemonsets"),
    ("Job", "batch", "v1", "jobs"),
    ("CronJob", "batch", "v1", "cronjobs"),
];

/// What one object told us: its labels, node and nearest owner.
#[derive(Debug, Clone, Default)]
struct Facts {
    labels: std::collections::BTreeMap<Str, Str>,
    node: Str,
    /// The nearest owner, and its uid.
    owner: Option<(Owner, Str)>,
}

/// An object's uid, or `namespace/kind/name` when it is not known.
type ObjectKey = Str;

/// What was learnt about an object (`None`: nothing to be had), and when.
type Cached = (Option<Arc<Facts>>, Instant);

/// Looks objects up and remembers what it found.
pub struct Enricher {
    client: kube::Client,
    owner: bool,
    node: bool,
    labels: bool,
    ttl: Duration,
    limiter: Arc<RateLimiter>,
    cache: tokio::sync::Mutex<LruCache<ObjectKey, Cached>>,
}

impl Enricher {
    /// An enricher adding `fields`, caching up to `capacity` objects for `ttl`.
    pub fn new(
        client: kube::Client,
        fields: &[EnrichField],
        capacity: usize,
        ttl: Duration,
        limiter: Arc<RateLimiter>,
    ) -> Enricher {
        Enricher {
            client,
            owner: fields.contains(&EnrichField::Owner),
            node: fields.contains(&EnrichField::Node),
            labels: fields.contains(&EnrichField::Labels),
            ttl,
            limiter,
            cache: tokio::sync::Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
        }
    }

    /// Adds what is known about the event's object.
    pub async fn enrich(&self, event: &mut Event, metrics: &ComponentMetrics) {
        let object = &event.object;
        if object.kind == "Node" {
            if self.node && !object.name.is_empty() {
                event.enrichment = Some(Box::new(Enrichment {
                    node: object.name.clone(),
                    ..Enrichment::default()
                }));
            }
            return;
        }
        let namespace = if object.namespace.is_empty() {
            event.namespace.clone()
        } else {
            object.namespace.clone()
        };
        let (kind, name, uid) = (object.kind.clone(), object.name.clone(), object.uid.clone());
        let Some(first) = self.facts(&namespace, &kind, &name, &uid, metrics).await else {
            return;
        };
        let mut enrichment = Enrichment::default();
        if self.labels {
            enrichment.labels = first.labels.clone();
        }
        if self.node {
            enrichment.node = first.node.clone();
        }
        if self.owner {
            let mut next = first.owner.clone();
            while let Some((owner, uid)) = next.take() {
                if enrichment.owners.len() >= MAX_OWNER_DEPTH {
                    break;
                }
                next = self
                    .facts(&namespace, &owner.kind, &owner.name, &uid, metrics)
                    .await
                    .and_then(|f| f.owner.clone());
                enrichment.owners.push(owner);
            }
        }
        if enrichment != Enrichment::default() {
            event.enrichment = Some(Box::new(enrichment));
        }
    }

    /// The facts about one object, from the cache or the API server.
    async fn facts(
        &self,
        namespace: &Str,
        kind: &Str,
        name: &Str,
        uid: &Str,
        metrics: &ComponentMetrics,
    ) -> Option<Arc<Facts>> {
        let &(_, group, version, _) = KINDS.iter().find(|(k, ..)| *k == kind.as_str())?;
        if name.is_empty() || namespace.is_empty() {
            return None;
        }
        let key: ObjectKey = if uid.is_empty() {
            format!("{namespace}/{kind}/{name}").into()
        } else {
            uid.clone()
        };
        let mut cache = self.cache.lock().await;
        if let Some((facts, at)) = cache.get(&key)
            && at.elapsed() < self.ttl
        {
            return facts.clone();
        }
        // The lock is held across the lookup: concurrent misses for one object wait for it
        // instead of asking again.
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        self.limiter.acquire().await;
        // Only a Pod's node needs more than metadata.
        let found = if kind == "Pod" && self.node {
            api.get_opt(name).await.map(|o| {
                o.map(|o| {
                    let node = o.data["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .into();
                    facts_of(&o.metadata, node)
                })
            })
        } else {
            api.get_metadata_opt(name)
                .await
                .map(|o| o.map(|o| facts_of(&o.metadata, Str::default())))
        };
        let facts = match found {
            Ok(facts) => facts.map(Arc::new),
            Err(error) => {
                ComponentMetrics::add(&metrics.warnings, 1);
                tracing::warn!(%kind, %namespace, %name, %error, "Cannot look up an event's object; its events go out without enrichment.");
                None
            }
        };
        cache.put(key, (facts.clone(), Instant::now()));
        facts
    }
}

fn facts_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, node: Str) -> Facts {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    // The controller when one is marked, else the first owner.
    let owner = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
        .map(|r| {
            let owner = Owner {
                kind: r.kind.as_str().into(),
                name: r.name.as_str().into(),
            };
            (owner, r.uid.as_str().into())
        });
    Facts {
        labels: meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
        node,
        owner,
    }
}
