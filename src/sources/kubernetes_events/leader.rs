//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's
//! `leaderelection` package does it, and the checkpoint the replicas share through it.
//!
//! A candidate reads the Lease; it takes it when nobody holds it or when the holder has not
//! renewed it for `lease_duration`, measured on the candidate's own clock from when it last
//! saw the record change (so clock skew between replicas does not matter). Every write is a
//! compare-and-swap on `metadata.resourceVersion`: of two candidates, the API server lets one
//! win and answers the other `409 Conflict`. The leader renews every `retry_period`; if it
//! cannot for `renew_deadline` it stops leading (before anyone else may take over).
//!
//! The leader writes the positions every sink has acknowledged into the annotation
//! [`CHECKPOINT_ANNOTATION`] at each renewal, and again when it steps down at shutdown
//! (releasing the Lease so that a successor need not wait). A new leader resumes from there:
//! failover neither replays the history nor skips what happened meanwhile.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::DurationValue;
use crate::metrics::ComponentMetrics;

/// The Lease annotation holding the shared checkpoint (JSON).
pub const CHECKPOINT_ANNOTATION: &str = "kollate.dev/checkpoint";

fn default_lease_duration() -> DurationValue {
    DurationValue(Duration::from_secs(15))
}
fn default_renew_deadline() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}
fn default_retry_period() -> DurationValue {
    DurationValue(Duration::from_secs(2))
}

/// `leader_election = { namespace, lease_name, ... }`: only the replica holding the Lease
/// watches and ships.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// How long a Lease that is not renewed stays with its holder (default 15s).
    #[serde(default = "default_lease_duration")]
    pub lease_duration: DurationValue,
    /// The leader steps down if it could not renew for this long (default 10s; less than
    /// `lease_duration`).
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline: DurationValue,
    /// How often candidates try and the leader renews (default 2s).
    #[serde(default = "default_retry_period")]
    pub retry_period: DurationValue,
    /// This replica's name in the Lease; default: `$POD_NAME`, else `<hostname>_<pid>`.
    #[serde(default)]
    pub identity: Option<String>,
}

impl LeaderElectionConfig {
    /// Checks the timing rules client-go enforces.
    ///
    /// # Errors
    /// `renew_deadline` not below `lease_duration`, or `retry_period` not below
    /// `renew_deadline`.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline.0 >= self.lease_duration.0 {
            return Err("leader_election.renew_deadline must be less than lease_duration".into());
        }
        if self.retry_period.0 >= self.renew_deadline.0 {
            return Err("leader_election.retry_period must be less than renew_deadline".into());
        }
        Ok(())
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    limiter: std::sync::Arc<super::limit::RateLimiter>,
    config: LeaderElectionConfig,
    identity: String,
    /// The last record seen, and when it last changed (on our clock).
    observed: Option<(Lease, Instant)>,
}

/// Why a write to the Lease did not happen.
enum Refused {
    /// Someone else holds it, or won the race (409).
    Held,
    /// The API server could not be asked.
    Failed(kube::Error),
}

impl Elector {
    /// A candidate for `config`'s Lease.
    pub fn new(
        client: kube::Client,
        config: &LeaderElectionConfig,
        limiter: std::sync::Arc<super::limit::RateLimiter>,
    ) -> Elector {
        let identity = config.identity.clone().unwrap_or_else(|| {
            std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kollate".into());
                format!("{host}_{}", std::process::id())
            })
        });
        Elector {
            api: Api::namespaced(client, &config.namespace),
            limiter,
            config: config.clone(),
            identity,
            observed: None,
        }
    }

    /// Waits until this replica holds the Lease; returns the shared checkpoint found on it
    /// (`None` when `shutdown` came first).
    pub async fn acquire(
        &mut self,
        shutdown: &CancellationToken,
        metrics: &ComponentMetrics,
    ) -> Option<Option<String>> {
        let mut announced = false;
        loop {
            let outcome = self.try_acquire_or_renew(None).await;
            note_reachability(&outcome, metrics);
            match outcome {
                Ok(()) => {
                    tracing::info!(lease = %self.config.lease_name, identity = %self.identity, "Became the leader.");
                    return Some(self.checkpoint());
                }
                Err(Refused::Held) => {
                    if !announced {
                        let holder = self.holder().unwrap_or_default();
                        tracing::info!(lease = %self.config.lease_name, %holder, "Another replica leads; standing by.");
                        announced = true;
                    }
                    metrics.progressed();
                }
                Err(Refused::Failed(error)) => {
                    ComponentMetrics::add(&metrics.errors, 1);
                    tracing::warn!(lease = %self.config.lease_name, %error, "Cannot read or take the Lease; retrying.");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period.0) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Renews the Lease every `retry_period`, writing `checkpoint()` into it (unless it is
    /// `None` just then), until `stop` is cancelled (returns true) or leadership is lost
    /// (returns false).
    pub async fn hold(
        &mut self,
        stop: &CancellationToken,
        metrics: &ComponentMetrics,
        checkpoint: impl Fn() -> Option<String>,
    ) -> bool {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period.0) => {}
                _ = stop.cancelled() => return true,
            }
            let outcome = self.try_acquire_or_renew(checkpoint()).await;
            note_reachability(&outcome, metrics);
            match outcome {
                Ok(()) => last_renewal = Instant::now(),
                Err(Refused::Held) => {
                    tracing::warn!(lease = %self.config.lease_name, holder = %self.holder().unwrap_or_default(), "Lost the Lease to another replica; stopping.");
                    return false;
                }
                Err(Refused::Failed(error)) => {
                    ComponentMetrics::add(&metrics.errors, 1);
                    tracing::warn!(lease = %self.config.lease_name, %error, "Cannot renew the Lease.");
                    if last_renewal.elapsed() >= self.config.renew_deadline.0 {
                        tracing::warn!(lease = %self.config.lease_name, "Renew deadline passed; stepping down.");
                        return false;
                    }
                }
            }
        }
    }

    /// Steps down at shutdown: writes the final checkpoint and frees the Lease, so a standby
    /// replica takes over at once instead of waiting for it to expire.
    pub async fn release(&mut self, checkpoint: String) {
        let name = &self.config.lease_name;
        // A renewal cut short at shutdown may have landed: re-read on a conflict.
        for _ in 0..3 {
            let lease = match self.api.get_opt(name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(lease = %name, %error, "Could not release the Lease; it expires on its own.");
                    return;
                }
            };
            let mut lease = lease;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
            annotate(&mut lease, checkpoint.clone());
            match self.api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(lease = %name, "Released the Lease.");
                    return;
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(error) => {
                    tracing::warn!(lease = %name, %error, "Could not release the Lease; it expires on its own.");
                    return;
                }
            }
        }
    }

    fn holder(&self) -> Option<String> {
        self.observed
            .as_ref()
            .and_then(|(l, _)| l.spec.as_ref()?.holder_identity.clone())
    }

    /// The checkpoint annotation of the last record seen.
    fn checkpoint(&self) -> Option<String> {
        self.observed
            .as_ref()
            .and_then(|(l, _)| l.metadata.annotations.as_ref()?.get(CHECKPOINT_ANNOTATION))
            .cloned()
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self, checkpoint: Option<String>) -> Result<(), Refused> {
        let name = &self.config.lease_name;
        let duration = i32::try_from(self.config.lease_duration.0.as_secs().max(1)).unwrap_or(15);
        self.limiter.acquire().await;
        let current = self.api.get_opt(name).await.map_err(Refused::Failed)?;
        let Some(current) = current else {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            if let Some(c) = checkpoint {
                annotate(&mut lease, c);
            }
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed = Some((created, Instant::now()));
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                    Err(Refused::Held)
                }
                Err(e) => Err(Refused::Failed(e)),
            };
        };
        // Note when the record last changed, on our own clock.
        let record = |l: &Lease| {
            l.spec
                .as_ref()
                .map(|s| (s.holder_identity.clone(), s.renew_time.clone()))
        };
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| record(seen) != record(&current));
        if changed {
            self.observed = Some((current.clone(), Instant::now()));
        }
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_us = holder.as_deref() == Some(self.identity.as_str());
        let lease_secs = spec.lease_duration_seconds.unwrap_or(duration).max(1) as u64;
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= Duration::from_secs(lease_secs));
        if holder.is_some() && !held_by_us && !expired {
            return Err(Refused::Held);
        }
        let mut lease = current;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !held_by_us {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now());
        if let Some(c) = checkpoint {
            annotate(&mut lease, c);
        }
        // `metadata.resourceVersion` is kept: the API server refuses the write (409) if
        // anyone wrote the Lease since we read it.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(updated) => {
                self.observed = Some((updated, Instant::now()));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Err(Refused::Held),
            Err(e) => Err(Refused::Failed(e)),
        }
    }
}

/// Any answer from the API server means it is reachable; no answer means it is not.
fn note_reachability(outcome: &Result<(), Refused>, metrics: &ComponentMetrics) {
    match outcome {
        Err(Refused::Failed(e)) if !matches!(e, kube::Error::Api(_)) => metrics.unreachable(),
        _ => metrics.reachable(),
    }
}

fn annotate(lease: &mut Lease, checkpoint: String) {
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CHECKPOINT_ANNOTATION.to_owned(), checkpoint);
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}
