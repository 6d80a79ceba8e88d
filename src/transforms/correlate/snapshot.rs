//! The engine's state saved across restarts (`<data_dir>/state/<name>.json`): open
//! incidents, what was learnt about objects, ownership and placement, the recent history.
//! Events still held by the transform are not in it: they are emitted at shutdown.

use std::collections::VecDeque;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::engine::{Engine, IncidentState, ObjectState, Seen};
use super::history::Recent;
use super::rules::NodeTrouble;
use crate::event::{Str, Timestamp};

/// What is saved.
#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
    incidents: Vec<(u64, IncidentState)>,
    alias: Vec<(u64, u64)>,
    labels: Vec<(u64, (Str, bool))>,
    objects: Vec<(u64, ObjectState)>,
    parents: Vec<(u64, Str)>,
    seen: Vec<(u64, Seen)>,
    history: Vec<(u64, VecDeque<Recent>)>,
    workloads: Vec<(Str, u64)>,
    #[serde(default)]
    displaced: Vec<(Str, u64)>,
    #[serde(default)]
    services: Vec<((Str, Str), u64)>,
    nodes: Vec<((Str, NodeTrouble), u64)>,
    scheduling: Vec<(u64, u64)>,
    storage: Vec<(Str, u64)>,
    dns: Option<u64>,
    node_down: Vec<(Str, Timestamp)>,
    watermark: Option<Timestamp>,
    next: u64,
}

/// The entries of an LRU cache, least recently used first (so putting them back in order
/// restores the order).
fn lru_entries<K: Clone + std::hash::Hash + Eq, V: Clone>(
    cache: &lru::LruCache<K, V>,
) -> Vec<(K, V)> {
    cache
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Engine {
    /// The state to save.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            incidents: self
                .incidents
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            alias: lru_entries(&self.alias),
            labels: lru_entries(&self.labels),
            objects: lru_entries(&self.objects),
            parents: lru_entries(&self.ownership.parents),
            seen: lru_entries(&self.seen),
            history: lru_entries(&self.history.by_key),
            workloads: sorted(self.workloads.iter().map(|(k, v)| (k.clone(), *v))),
            displaced: sorted(self.displaced.iter().map(|(k, v)| (k.clone(), *v))),
            services: sorted(self.services.iter().map(|(k, v)| (k.clone(), *v))),
            nodes: sorted(self.nodes.iter().map(|(k, v)| (k.clone(), *v))),
            scheduling: sorted(self.scheduling.iter().map(|(k, v)| (*k, *v))),
            storage: sorted(self.storage.iter().map(|(k, v)| (k.clone(), *v))),
            dns: self.dns,
            node_down: self.node_down.clone(),
            watermark: self.watermark,
            next: self.next,
        }
    }

    /// Continues from a saved state.
    pub(super) fn restore(&mut self, s: Snapshot) {
        self.incidents = s.incidents.into_iter().collect();
        for (k, v) in s.alias {
            self.alias.put(k, v);
        }
        for (k, v) in s.labels {
            self.labels.put(k, v);
        }
        for (k, v) in s.objects {
            self.objects.put(k, v);
        }
        for (k, v) in s.parents {
            self.ownership.parents.put(k, v);
        }
        for (k, v) in s.seen {
            self.seen.put(k, v);
        }
        for (k, v) in s.history {
            self.history.by_key.put(k, v);
        }
        self.workloads = s.workloads.into_iter().collect();
        self.displaced = s.displaced.into_iter().collect();
        self.services = s.services.into_iter().collect();
        self.nodes = s.nodes.into_iter().collect();
        self.scheduling = s.scheduling.into_iter().collect();
        self.storage = s.storage.into_iter().collect();
        self.dns = s.dns;
        self.node_down = s.node_down;
        self.watermark = s.watermark;
        self.next = s.next;
    }
}

/// What the file holds: each cluster's state.
#[derive(Serialize, Deserialize)]
pub(super) struct Saved {
    /// (cluster, its engine's state).
    pub clusters: Vec<(Str, Snapshot)>,
}

/// Loads the states saved at `path`, if there are; an unreadable file is logged and
/// ignored (the engines start empty). A file from before clusters were kept apart holds one
/// state, the unnamed cluster's.
pub(super) fn load(path: &Path) -> Vec<(Str, Snapshot)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "Cannot read the correlation snapshot.");
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Saved>(&bytes) {
        Ok(saved) => saved.clusters,
        Err(error) => match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(single) => vec![(Str::default(), single)],
            Err(_) => {
                tracing::warn!(file = %path.display(), %error, "Ignored an unreadable correlation snapshot.");
                Vec::new()
            }
        },
    }
}

/// Map entries in a stable order (the saved file is the same for the same state).
fn sorted<K: Ord, V>(entries: impl Iterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = entries.collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
