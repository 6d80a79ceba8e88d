//! Who owns what and what runs where, learnt from the events themselves.
//!
//! Enrichment (the source's `enrich` option) gives owner chains and nodes when the API is
//! there; without it (a replay, a dump) the controllers' own messages say it:
//! `SuccessfulCreate` "Created pod: X" on a ReplicaSet/Job/DaemonSet, "create Pod X in
//! StatefulSet Y", `ScalingReplicaSet` "Scaled up replica set X" on a Deployment, "Created
//! job X" on a CronJob, the scheduler's "Successfully assigned ns/pod to node", the kubelet
//! that reported a pod's event. Failing that, generated names are read
//! (`cart-7d9f8b6c5-x2x9z` is Deployment `cart`, `data-pg-0` a claim of StatefulSet `pg`).

use std::num::NonZeroUsize;
use std::sync::LazyLock;

use lru::LruCache;
use regex::Regex;
use xxhash_rust::xxh3::xxh3_64;

use crate::event::{Event, Str};

/// Owner links followed upwards.
const MAX_OWNER_DEPTH: usize = 5;

/// The ReplicaSet a Deployment's `ScalingReplicaSet` "Scaled up replica set X ..." names.
pub fn scaled_replica_set(message: &str) -> Option<&str> {
    SCALED_RS
        .captures(message)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

/// The pod a controller's `SuccessfulCreate` or `SuccessfulDelete` names (`Created pod:
/// X`, `Deleted pod: X`, `create Pod X in StatefulSet Y successful`).
pub fn named_pod(message: &str) -> Option<&str> {
    static NAMED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(?:(?:Created|Deleted) pod: (\S+)|(?:create|delete) Pod (\S+) in StatefulSet)",
        )
        .expect("valid")
    });
    let c = NAMED.captures(message)?;
    c.get(1).or_else(|| c.get(2)).map(|m| m.as_str())
}

static CREATED_POD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Created pod: (\S+)").expect("valid"));
static STATEFUL_POD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^create Pod (\S+) in StatefulSet (\S+) successful").expect("valid")
});
static SCALED_RS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Scaled (?:up|down) replica set (\S+) (?:to|from)").expect("valid")
});
static CREATED_JOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Created job (\S+)").expect("valid"));
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Successfully assigned (?:([^/\s]+)/)?(\S+) to (\S+)").expect("valid")
});
static POD_OF_DEPLOYMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.+)-([bcdfghjklmnpqrstvwxz2456789]{6,10})-([a-z0-9]{5})$").expect("valid")
});
static POD_OF_CRONJOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-(\d{8,10})-([a-z0-9]{5})$").expect("valid"));
static POD_OF_STATEFULSET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-(\d{1,4})$").expect("valid"));
static GENERATED_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-([a-z0-9]{5})$").expect("valid"));
static RS_OF_DEPLOYMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-([bcdfghjklmnpqrstvwxz2456789]{6,10})$").expect("valid"));
static JOB_OF_CRONJOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.+)-(\d{8,10})$").expect("valid"));
static EVICTED_FROM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Marking for deletion Pod (?:([^/\s]+)/)?(\S+) from Node (\S+)").expect("valid")
});
/// Volumes and claims a message names: `volume "pvc-..."`, `claim "data-pg-0"`,
/// `persistentvolumeclaim "x"`, "provisioned volume pvc-...".
static VOLUME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:volume|claim|persistentvolumeclaim) "?(pvc-[0-9a-f-]{8,}|[a-z0-9][a-z0-9.-]*)"?"#,
    )
    .expect("valid")
});

/// `Kind namespace/name`.
pub fn key(kind: &str, namespace: &str, name: &str) -> Str {
    Str::from(format!("{kind} {namespace}/{name}"))
}

/// The id of a key: the hash of `Kind namespace/name`.
pub fn key_id(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// The id of the object an event is about: [`key_id`] of its key, without building it.
pub fn object_id(e: &Event) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(e.object.kind.as_bytes());
    h.update(b" ");
    h.update(namespace(e).as_bytes());
    h.update(b"/");
    h.update(e.object.name.as_bytes());
    h.digest()
}

/// The key of the object an event is about.
pub fn object_key(e: &Event) -> Str {
    key(&e.object.kind, namespace(e), &e.object.name)
}

/// The object's namespace (the event's when the object names none; none for Nodes, which
/// the node controller reports in `default`).
pub fn namespace(e: &Event) -> &str {
    if e.object.kind == "Node" {
        ""
    } else if e.object.namespace.is_empty() {
        &e.namespace
    } else {
        &e.object.namespace
    }
}

/// The key of a node.
pub fn node_key(node: &str) -> Str {
    key("Node", "", node)
}

/// The key of a volume a message names (a claim in `namespace`, or a PV by name).
pub fn volume_keys(namespace: &str, message: &str) -> impl Iterator<Item = Str> {
    VOLUME.captures_iter(message).filter_map(move |c| {
        let name = c.get(1)?.as_str();
        if name.starts_with("pvc-") {
            Some(key("PersistentVolume", "", name))
        } else if name.len() > 2 && !name.contains('.') {
            Some(key("PersistentVolumeClaim", namespace, name))
        } else {
            None
        }
    })
}

/// A placement learnt from an event: this pod runs on this node.
pub struct Placement {
    /// The pod's id ([`key_id`]).
    pub pod: u64,
    /// The node.
    pub node: Str,
}

/// Owner links, learnt or enriched.
pub struct Ownership {
    /// Object id -> its owner's key.
    pub(super) parents: LruCache<u64, Str>,
}

impl Ownership {
    /// Remembers up to `capacity` links.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Ownership {
            parents: LruCache::new(capacity),
        }
    }

    /// Learns ownership from what the event (about object `this`) says; returns the
    /// placement it reveals, if any.
    pub fn learn(&mut self, e: &Event, this: u64) -> Option<Placement> {
        let ns = namespace(e);
        let m = e.message.as_str();
        let mut placed = None;
        match (e.reason.as_str(), e.object.kind.as_str()) {
            ("SuccessfulCreate", "StatefulSet") => {
                if let Some(c) = STATEFUL_POD.captures(m) {
                    self.parents
                        .put(key_id(&key("Pod", ns, &c[1])), object_key(e));
                }
            }
            ("SuccessfulCreate", "CronJob") => {
                if let Some(c) = CREATED_JOB.captures(m) {
                    self.parents
                        .put(key_id(&key("Job", ns, &c[1])), object_key(e));
                }
            }
            ("SuccessfulCreate", _) => {
                if let Some(c) = CREATED_POD.captures(m) {
                    self.parents
                        .put(key_id(&key("Pod", ns, &c[1])), object_key(e));
                }
            }
            ("ScalingReplicaSet", "Deployment") => {
                if let Some(c) = SCALED_RS.captures(m) {
                    self.parents
                        .put(key_id(&key("ReplicaSet", ns, &c[1])), object_key(e));
                }
            }
            ("NodeControllerEviction" | "TaintManagerEviction", _) => {
                if let Some(c) = EVICTED_FROM.captures(m) {
                    let pod_ns = c.get(1).map_or(ns, |n| n.as_str());
                    placed = Some(Placement {
                        pod: key_id(&key("Pod", pod_ns, &c[2])),
                        node: c[3].into(),
                    });
                }
            }
            ("Scheduled", "Pod") => {
                if let Some(c) = ASSIGNED.captures(m) {
                    let pod_ns = c.get(1).map_or(ns, |n| n.as_str());
                    placed = Some(Placement {
                        pod: key_id(&key("Pod", pod_ns, &c[2])),
                        node: c[3].into(),
                    });
                }
            }
            _ => {}
        }
        if let Some(enrichment) = &e.enrichment {
            let mut child = this;
            for owner in &enrichment.owners {
                let parent = key(&owner.kind, ns, &owner.name);
                let id = key_id(&parent);
                self.parents.put(child, parent);
                child = id;
            }
            if !enrichment.node.is_empty() && e.object.kind == "Pod" {
                placed = Some(Placement {
                    pod: this,
                    node: enrichment.node.clone(),
                });
            }
        }
        // The kubelet that reported a pod's event runs on its node.
        if placed.is_none()
            && e.object.kind == "Pod"
            && !e.host.is_empty()
            && e.reporting_controller.contains("kubelet")
        {
            placed = Some(Placement {
                pod: this,
                node: e.host.clone(),
            });
        }
        placed
    }

    /// The top-level owner of an object: learnt, else guessed from generated names.
    pub fn workload(&mut self, e: &Event) -> Str {
        let mut id = object_id(e);
        let mut top: Option<Str> = None;
        for _ in 0..MAX_OWNER_DEPTH {
            match self.parents.get(&id) {
                Some(parent) => {
                    id = key_id(parent);
                    top = Some(parent.clone());
                }
                None => break,
            }
        }
        match top {
            // A controller learnt only so far (its own owner not yet seen): its name says
            // the rest (a ReplicaSet's Deployment, a Job's CronJob).
            Some(top) => match top.split_once(' ').and_then(|(kind, rest)| {
                let (ns, name) = rest.split_once('/')?;
                Some(guess_workload(kind, ns, name))
            }) {
                Some(guessed) => guessed,
                None => top,
            },
            None => guess_workload(&e.object.kind, namespace(e), &e.object.name),
        }
    }
}

/// The workload an object belongs to, from its name alone.
pub fn guess_workload(kind: &str, ns: &str, name: &str) -> Str {
    match kind {
        "Pod" => {
            if let Some(c) = POD_OF_CRONJOB.captures(name) {
                key("CronJob", ns, &c[1])
            } else if let Some(c) = POD_OF_DEPLOYMENT.captures(name) {
                key("Deployment", ns, &c[1])
            } else if let Some(c) = POD_OF_STATEFULSET.captures(name) {
                key("StatefulSet", ns, &c[1])
            } else if let Some(c) = GENERATED_SUFFIX.captures(name) {
                key("Workload", ns, &c[1])
            } else {
                key(kind, ns, name)
            }
        }
        "ReplicaSet" => match RS_OF_DEPLOYMENT.captures(name) {
            Some(c) => key("Deployment", ns, &c[1]),
            None => key(kind, ns, name),
        },
        "Job" => match JOB_OF_CRONJOB.captures(name) {
            Some(c) => key("CronJob", ns, &c[1]),
            None => key(kind, ns, name),
        },
        // An autoscaler is named after what it scales, almost always.
        "HorizontalPodAutoscaler" => key("Deployment", ns, name),
        // A StatefulSet's claims are `<template>-<pod>`.
        "PersistentVolumeClaim" => name
            .match_indices('-')
            .map(|(i, _)| &name[i + 1..])
            .find_map(|pod| POD_OF_STATEFULSET.captures(pod))
            .map(|c| key("StatefulSet", ns, &c[1]))
            .unwrap_or_else(|| key(kind, ns, name)),
        _ => key(kind, ns, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_reveal_their_workloads() {
        let g = |kind, name| guess_workload(kind, "ns", name).to_string();
        assert_eq!(g("Pod", "cart-7d9f8b6c5-x2x9z"), "Deployment ns/cart");
        assert_eq!(g("Pod", "pg-0"), "StatefulSet ns/pg");
        assert_eq!(g("Pod", "backup-29012345-abcde"), "CronJob ns/backup");
        assert_eq!(g("ReplicaSet", "cart-7d9f8b6c5"), "Deployment ns/cart");
        assert_eq!(g("PersistentVolumeClaim", "data-pg-0"), "StatefulSet ns/pg");
        assert_eq!(g("HorizontalPodAutoscaler", "cart"), "Deployment ns/cart");
    }

    #[test]
    fn messages_name_their_volumes() {
        let keys: Vec<String> = volume_keys(
            "db",
            r#"AttachVolume.Attach failed for volume "pvc-0a1b2c3d-1111-2222-3333-444455556666" : timed out"#,
        )
        .map(|k| k.to_string())
        .collect();
        assert_eq!(
            keys,
            ["PersistentVolume /pvc-0a1b2c3d-1111-2222-3333-444455556666"]
        );
    }
}
