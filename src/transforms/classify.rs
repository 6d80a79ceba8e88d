//! The `classify` transform: severity and category for every event.
//!
//! Kubernetes only says `Normal` or `Warning`. `classify` sets [`Severity`] (`critical`,
//! `error`, `warning`, `info`) and [`Category`] from user rules first, in order (the first
//! matching rule wins), then from a built-in table of the reasons the kubelet, scheduler,
//! controller-manager, node controller, cluster autoscaler and volume controllers emit. A
//! few reasons mean different things depending on the message, and the built-ins look:
//! the kubelet reports an image-pull `BackOff` as type `Normal`, while a container restart
//! `BackOff` is a `Warning`; `Failed` is an image problem or a runtime one; a `FailedMount`
//! of a missing ConfigMap is a config error, not a storage one.
//!
//! Unknown reasons fall back on the event type: `Warning` is a warning, anything else info.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::Deserialize;

use crate::batch::Batch;
use crate::condition::Condition;
use crate::event::{Category, Event, Severity, Str};
use crate::topology::Transform;

use Category::*;
use Severity::*;

/// `type = "classify"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyTransformConfig {
    /// User rules, evaluated in order before the built-ins; the first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Use the built-in table for whatever the rules leave unset (default true).
    #[serde(default = "default_true")]
    pub builtin: bool,
}

fn default_true() -> bool {
    true
}

/// One user rule: a condition, and what to set when it matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Which events the rule applies to.
    #[serde(default)]
    pub when: Condition,
    /// Severity to set.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Category to set.
    #[serde(default)]
    pub category: Option<Category>,
    /// Labels to add.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The running transform.
pub struct Classify {
    rules: Vec<Rule>,
    builtin: bool,
}

/// A compiled user rule.
struct Rule {
    when: Condition,
    severity: Option<Severity>,
    category: Option<Category>,
    labels: Vec<(Str, Str)>,
}

impl Default for ClassifyTransformConfig {
    /// The built-in table only.
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl ClassifyTransformConfig {
    /// Builds the transform.
    pub fn build(&self) -> Classify {
        Classify {
            rules: self
                .rules
                .iter()
                .map(|r| {
                    let labels = r
                        .labels
                        .iter()
                        .map(|(k, v)| (Str::new(k), Str::new(v)))
                        .collect();
                    Rule {
                        when: r.when.clone(),
                        severity: r.severity,
                        category: r.category,
                        labels,
                    }
                })
                .collect(),
            builtin: self.builtin,
        }
    }
}

impl Classify {
    /// Classifies one event in place.
    pub fn classify(&self, e: &mut Event) {
        if let Some(rule) = self.rules.iter().find(|r| r.when.matches(e)) {
            if rule.severity.is_some() {
                e.severity = rule.severity;
            }
            if rule.category.is_some() {
                e.category = rule.category;
            }
            for (k, v) in &rule.labels {
                e.labels.insert(k.clone(), v.clone());
            }
        }
        if e.severity.is_none() || e.category.is_none() {
            let (severity, category) = if self.builtin {
                builtin(e)
            } else {
                fallback(e)
            };
            e.severity.get_or_insert(severity);
            e.category.get_or_insert(category);
        }
    }
}

impl Transform for Classify {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        for e in &mut batch.events {
            self.classify(e);
        }
        out.push(batch);
    }
}

/// Severity and category from the built-in knowledge of Kubernetes reasons.
pub fn builtin(e: &Event) -> (Severity, Category) {
    if let Some(refined) = refine(e) {
        return refined;
    }
    match TABLE.get(e.reason.as_str()) {
        Some(&(s, c)) => (s, c),
        None => fallback(e),
    }
}

fn fallback(e: &Event) -> (Severity, Category) {
    if e.event_type == "Warning" {
        (Warning, Other)
    } else {
        (Info, Other)
    }
}

/// Reasons whose meaning depends on the message.
fn refine(e: &Event) -> Option<(Severity, Category)> {
    let m = e.message.as_str();
    let image_problem = || {
        [
            "ErrImagePull",
            "ImagePullBackOff",
            "pull image",
            "pulling image",
            "pull access denied",
            "manifest unknown",
            "ErrImageNeverPull",
        ]
        .iter()
        .any(|needle| m.contains(needle))
    };
    Some(match e.reason.as_str() {
        "BackOff" if m.contains("pulling image") || m.contains("Back-off pulling") => {
            (Warning, Image)
        }
        "BackOff" => (Error, Lifecycle),
        "Failed" if image_problem() => (Error, Image),
        "Failed" => (Error, Lifecycle),
        "Killing" if m.contains("liveness") || m.contains("startup probe") => (Warning, Probe),
        "Unhealthy" if m.starts_with("Liveness") => (Error, Probe),
        "FailedMount" | "FailedAttachVolume"
            if (m.contains("configmap") || m.contains("secret")) && m.contains("not found") =>
        {
            (Error, Config)
        }
        "FailedCreate" if m.contains("forbidden") || m.contains("exceeded quota") => (
            Error,
            if m.contains("quota") {
                Resources
            } else {
                Security
            },
        ),
        "FailedScheduling" if m.contains("Insufficient") => (Warning, Resources),
        _ => return None,
    })
}

/// The built-in reason table: reason -> (severity, category).
static TABLE: LazyLock<HashMap<&'static str, (Severity, Category)>> = LazyLock::new(|| {
    #[rustfmt::skip]
    let rows: &[(&str, Severity, Category)] = &[
        // kubelet: images
        ("Pulling", Info, Image), ("Pulled", Info, Image), ("ErrImagePull", Error, Image),
        ("ImagePullBackOff", Error, Image), ("ErrImageNeverPull", Error, Image),
        ("InspectFailed", Error, Image), ("FailedToInspectImage", Error, Image),
        // kubelet: containers and pods
        ("Created", Info, Lifecycle), ("Started", Info, Lifecycle), ("Killing", Info, Lifecycle),
        ("Preempting", Warning, Scheduling), ("ExceededGracePeriod", Warning, Lifecycle),
        ("FailedKillPod", Error, Lifecycle), ("FailedCreatePodContainer", Error, Lifecycle),
        ("FailedCreatePodSandBox", Error, Network), ("FailedPodSandBoxStatus", Error, Network),
        ("SandboxChanged", Warning, Lifecycle), ("FailedSync", Warning, Lifecycle),
        ("FailedValidation", Error, Config), ("FailedPostStartHook", Error, Lifecycle),
        ("FailedPreStopHook", Warning, Lifecycle), ("CrashLoopBackOff", Error, Lifecycle),
        ("OutOfmemory", Error, Resources), ("OutOfcpu", Error, Resources), ("UnexpectedAdmissionError", Error, Lifecycle),
        ("NodeAffinity", Error, Scheduling), ("Evicted", Error, Resources), ("Preempted", Warning, Scheduling),
        // kubelet: probes
        ("Unhealthy", Warning, Probe), ("ProbeWarning", Info, Probe),
        // volumes
        ("FailedMount", Error, Storage), ("FailedAttachVolume", Error, Storage),
        ("FailedDetachVolume", Warning, Storage), ("FailedMapVolume", Error, Storage),
        ("FailedUnMount", Warning, Storage), ("FailedUnmapDevice", Warning, Storage),
        ("SuccessfulMountVolume", Info, Storage), ("SuccessfulAttachVolume", Info, Storage),
        ("SuccessfulDetachVolume", Info, Storage), ("VolumeResizeFailed", Error, Storage),
        ("VolumeResizeSuccessful", Info, Storage), ("FileSystemResizeFailed", Error, Storage),
        ("FileSystemResizeSuccessful", Info, Storage), ("ProvisioningFailed", Error, Storage),
        ("ProvisioningSucceeded", Info, Storage), ("Provisioning", Info, Storage),
        ("ExternalProvisioning", Info, Storage), ("WaitForFirstConsumer", Info, Storage),
        ("WaitForPodScheduled", Info, Storage), ("VolumeFailedDelete", Warning, Storage),
        ("ClaimLost", Critical, Storage), ("ClaimMisbound", Error, Storage), ("FailedBinding", Warning, Storage),
        ("VolumeConditionAbnormal", Error, Storage),
        // nodes
        ("NodeReady", Info, Node), ("NodeNotReady", Critical, Node), ("NodeSchedulable", Info, Node),
        ("NodeNotSchedulable", Warning, Node), ("NodeHasSufficientMemory", Info, Node),
        ("NodeHasInsufficientMemory", Error, Node), ("NodeHasSufficientDisk", Info, Node),
        ("NodeOutOfDisk", Critical, Node), ("NodeHasDiskPressure", Error, Node),
        ("NodeHasNoDiskPressure", Info, Node), ("NodeHasSufficientPID", Info, Node),
        ("NodeHasInsufficientPID", Error, Node), ("Rebooted", Warning, Node), ("Starting", Info, Node),
        ("RegisteredNode", Info, Node), ("RemovingNode", Warning, Node), ("DeletingNode", Warning, Node),
        ("DeletingAllPods", Error, Node), ("NodeAllocatableEnforced", Info, Node),
        ("InvalidDiskCapacity", Warning, Node), ("ContainerGCFailed", Warning, Node),
        ("ImageGCFailed", Warning, Node), ("FreeDiskSpaceFailed", Warning, Node),
        ("KubeletSetupFailed", Critical, Node), ("NodeControllerEviction", Error, Node),
        ("TaintManagerEviction", Error, Node), ("CgroupV1", Warning, Node), ("KernelDeadlock", Critical, Node),
        ("TaskHung", Warning, Node), ("DockerHung", Critical, Node), ("FilesystemIsReadOnly", Critical, Node),
        ("NodeShutdown", Warning, Node), ("Shutdown", Warning, Node), ("NodeSysctlChange", Info, Node),
        // memory and resources
        ("SystemOOM", Critical, Resources), ("OOMKilling", Critical, Resources),
        ("EvictionThresholdMet", Error, Resources), ("ExceededQuota", Warning, Resources),
        // scheduler and autoscalers
        ("Scheduled", Info, Scheduling), ("FailedScheduling", Warning, Scheduling),
        ("NotTriggerScaleUp", Warning, Scaling), ("TriggeredScaleUp", Info, Scaling),
        ("ScaleDown", Info, Scaling), ("ScaleDownFailed", Warning, Scaling),
        ("FailedToScaleUpGroup", Error, Scaling), ("ScaledUpGroup", Info, Scaling),
        ("SuccessfulRescale", Info, Scaling), ("FailedGetResourceMetric", Warning, Scaling),
        ("FailedGetExternalMetric", Warning, Scaling), ("FailedComputeMetricsReplicas", Warning, Scaling),
        ("FailedGetScale", Warning, Scaling), ("FailedRescale", Error, Scaling),
        ("ScalingReplicaSet", Info, Scaling), ("DeploymentRollback", Info, Scaling),
        ("DeploymentRollbackRevisionNotFound", Warning, Scaling),
        // workload controllers
        ("SuccessfulCreate", Info, Lifecycle), ("FailedCreate", Error, Lifecycle),
        ("SuccessfulDelete", Info, Lifecycle), ("FailedDelete", Warning, Lifecycle),
        ("Completed", Info, Lifecycle), ("SawCompletedJob", Info, Lifecycle),
        ("BackoffLimitExceeded", Error, Lifecycle), ("DeadlineExceeded", Error, Lifecycle),
        ("UnexpectedJob", Warning, Lifecycle), ("MissingJob", Warning, Lifecycle),
        ("TooManyMissedTimes", Warning, Lifecycle), ("JobAlreadyActive", Info, Lifecycle),
        ("FailedNeedsStart", Warning, Lifecycle), ("RecreatingFailedPod", Warning, Lifecycle),
        ("SuccessfulUpdate", Info, Lifecycle), ("FailedUpdate", Error, Lifecycle),
        ("FailedPlacement", Warning, Scheduling), ("FailedDaemonPod", Warning, Lifecycle),
        // networking and services
        ("FailedToCreateEndpoint", Warning, Network), ("FailedToUpdateEndpoint", Warning, Network),
        ("FailedToUpdateEndpointSlices", Warning, Network), ("EnsuringLoadBalancer", Info, Network),
        ("EnsuredLoadBalancer", Info, Network), ("SyncLoadBalancerFailed", Error, Network),
        ("DeletingLoadBalancer", Info, Network), ("DeletedLoadBalancer", Info, Network),
        ("UpdatedLoadBalancer", Info, Network), ("LoadBalancerUpdateFailed", Error, Network),
        ("AddedInterface", Info, Network), ("NetworkNotReady", Error, Network),
        ("CIDRNotAvailable", Error, Network), ("CIDRAssignmentFailed", Error, Network),
        ("FailedToAllocateIP", Error, Network), ("IPAddressAllocation", Info, Network),
        ("DNSConfigForming", Warning, Network), ("ClusterIPOutOfRange", Error, Network),
        // security and policy
        ("PolicyViolation", Warning, Security), ("CreatedSCCRanges", Info, Security),
        ("FailedAdmission", Error, Security), ("CertificateIssued", Info, Security),
        ("Issuing", Info, Security), ("Generated", Info, Security), ("Requested", Info, Security),
        ("WaitingForApproval", Info, Security), ("cert-manager.io", Info, Security),
        // configuration
        ("ApplyingManifest", Info, Config), ("AppliedManifest", Info, Config),
        ("FailedApplyingManifest", Error, Config), ("InvalidConfig", Error, Config),
        // control plane
        ("LeaderElection", Info, Other),
    ];
    rows.iter().map(|&(r, s, c)| (r, (s, c))).collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, event_type: &str, message: &str) -> Event {
        Event {
            reason: reason.into(),
            event_type: event_type.into(),
            message: message.into(),
            ..Event::default()
        }
    }

    #[test]
    fn the_table_covers_the_common_reasons() {
        assert!(TABLE.len() >= 60, "only {} built-in reasons", TABLE.len());
        assert_eq!(
            builtin(&event("NodeNotReady", "Normal", "")),
            (Critical, Node)
        );
        assert_eq!(
            builtin(&event(
                "FailedScheduling",
                "Warning",
                "0/3 nodes are available"
            )),
            (Warning, Scheduling)
        );
    }

    #[test]
    fn image_pull_back_off_reported_as_normal_is_still_an_image_problem() {
        let e = event("BackOff", "Normal", "Back-off pulling image \"ngnix\"");
        assert_eq!(builtin(&e), (Warning, Image));
        let e = event("BackOff", "Warning", "Back-off restarting failed container");
        assert_eq!(builtin(&e), (Error, Lifecycle));
    }

    #[test]
    fn missing_config_map_is_a_config_error() {
        let e = event(
            "FailedMount",
            "Warning",
            "MountVolume.SetUp failed for volume \"html\" : configmap \"web-html\" not found",
        );
        assert_eq!(builtin(&e), (Error, Config));
    }

    #[test]
    fn user_rules_come_first_and_builtins_fill_the_rest() {
        let config: ClassifyTransformConfig = toml::from_str(
            r#"
[[rules]]
when = { reason = "BackOff", namespace = "payments" }
severity = "critical"
labels = { team = "payments" }
"#,
        )
        .unwrap();
        let classify = config.build();
        let mut e = event("BackOff", "Warning", "Back-off restarting failed container");
        e.object.namespace = "payments".into();
        classify.classify(&mut e);
        assert_eq!(e.severity, Some(Critical));
        assert_eq!(
            e.category,
            Some(Lifecycle),
            "category comes from the built-ins"
        );
        assert_eq!(e.labels.get("team").map(|s| s.as_str()), Some("payments"));
        let mut other = event("Mystery", "Warning", "");
        classify.classify(&mut other);
        assert_eq!(
            (other.severity, other.category),
            (Some(Warning), Some(Other))
        );
    }
}
