//! A bounded recent history of the events that were not trouble, per object, workload,
//! node and volume, so the story before an incident can join it when it opens: the rollout
//! that created the failing ReplicaSet, the failing pod's `Scheduled` and `Pulling`, the
//! claim's provisioning.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::event::{Str, Timestamp};

/// Keys (objects, workloads, nodes, volumes) with a history.
pub const HISTORY_KEYS: usize = 10_000;
/// Events remembered per key (the newest).
pub const HISTORY_PER_KEY: usize = 32;
/// Characters of a remembered message.
pub const MESSAGE_CHARS: usize = 300;

/// An event remembered for later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recent {
    /// Its identity (see `engine::identity`).
    pub identity: u64,
    /// Its uid.
    pub uid: Str,
    /// Its resource version.
    pub resource_version: Str,
    /// Its reason.
    pub reason: Str,
    /// The kind of what it was about.
    pub kind: Str,
    /// The name of what it was about.
    pub name: Str,
    /// Its message, cut to [`MESSAGE_CHARS`].
    pub message: String,
    /// Occurrences.
    pub count: u64,
    /// First occurrence.
    pub start: Option<Timestamp>,
    /// Latest occurrence.
    pub end: Option<Timestamp>,
    /// The object's workload.
    pub workload: Str,
    /// The object's namespace.
    pub namespace: Str,
}

/// Recent events by key id.
pub struct History {
    pub(super) by_key: LruCache<u64, VecDeque<Recent>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            by_key: LruCache::new(NonZeroUsize::new(HISTORY_KEYS).expect("non-zero")),
        }
    }
}

impl History {
    /// Remembers `recent` under `key`, forgetting the oldest beyond [`HISTORY_PER_KEY`].
    pub fn record(&mut self, key: u64, recent: Recent) {
        let list = self.by_key.get_or_insert_mut(key, VecDeque::new);
        if list.len() == HISTORY_PER_KEY {
            list.pop_front();
        }
        list.push_back(recent);
    }

    /// Takes what `key` holds that ended at or after `since`.
    pub fn take(&mut self, key: u64, since: Option<Timestamp>) -> Vec<Recent> {
        let Some(list) = self.by_key.pop(&key) else {
            return Vec::new();
        };
        list.into_iter()
            .filter(|r| match (r.end, since) {
                (Some(end), Some(since)) => end >= since,
                _ => true,
            })
            .collect()
    }
}
