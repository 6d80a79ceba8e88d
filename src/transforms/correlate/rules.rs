//! What kollate knows about Kubernetes reasons: causal rules (`cause -> effect`) and the
//! classes of events correlation treats specially.
//!
//! The classes come from how the control plane writes events, not from any one stream:
//! the node controller marks a Node and every pod on it `NodeNotReady` in one pass and the
//! taint manager evicts those pods minutes later; controllers announce changes
//! (`ScalingReplicaSet`, `SuccessfulRescale`) before the pods they create fail; some
//! warnings (an HPA without metrics for a minute after a scale-up, a pod's first readiness
//! probe) heal by themselves.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::condition::Pattern;
use crate::event::Event;

/// Where a causal rule looks for the cause of an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The same object.
    Object,
    /// The same object or the same workload (top-level owner).
    Owner,
    /// The node the effect's object is on.
    Node,
    /// The same namespace.
    Namespace,
    /// Anywhere in the incident (the members were linked by other evidence).
    Incident,
}

/// `[[transforms.NAME.rules]]`: `cause -> effect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CausalRule {
    /// Shown as the root cause's `rule`.
    pub name: String,
    /// Reasons of the cause.
    pub cause: Vec<String>,
    /// Reasons of the effect.
    pub effect: Vec<String>,
    /// Where the cause must be.
    pub scope: Scope,
    /// The cause's message must match this too.
    #[serde(default)]
    pub cause_message: Option<Pattern>,
    /// The effect's message must match this too.
    #[serde(default)]
    pub effect_message: Option<Pattern>,
    /// The kind of the cause's object (`Node`, `Pod`...), when it matters.
    #[serde(default)]
    pub cause_kind: Option<String>,
    /// The kind of the effect's object, when it matters.
    #[serde(default)]
    pub effect_kind: Option<String>,
    /// The cause's object name must match this too.
    #[serde(default)]
    pub cause_object: Option<Pattern>,
}

/// A built-in rule; `kinds` are the cause's and the effect's object kinds ("" for any).
fn rule(
    name: &str,
    (cause, cause_message): (&[&str], Option<&str>),
    (effect, effect_message): (&[&str], Option<&str>),
    scope: Scope,
    kinds: (&str, &str),
) -> CausalRule {
    let pattern = |p: Option<&str>| p.map(|p| Pattern(Regex::new(p).expect("built-in pattern")));
    let kind = |k: &str| (!k.is_empty()).then(|| k.to_owned());
    CausalRule {
        name: name.into(),
        cause: cause.iter().map(|s| s.to_string()).collect(),
        effect: effect.iter().map(|s| s.to_string()).collect(),
        scope,
        cause_message: pattern(cause_message),
        effect_message: pattern(effect_message),
        cause_kind: kind(kinds.0),
        effect_kind: kind(kinds.1),
        cause_object: None,
    }
}

/// Node conditions and node-level failures (about the Node itself).
pub const NODE_TROUBLE: &[&str] = &[
    "NodeNotReady",
    "NodeHasDiskPressure",
    "NodeHasMemoryPressure",
    "NodeHasPIDPressure",
    "NodeHasInsufficientMemory",
    "NodeHasInsufficientPID",
    "NodeOutOfDisk",
    "EvictionThresholdMet",
    "Rebooted",
    "KernelDeadlock",
    "SystemOOM",
    "OOMKilling",
    "DeletingAllPods",
    "ContainerGCFailed",
    "ImageGCFailed",
    "FreeDiskSpaceFailed",
    "KubeletSetupFailed",
    "NodeNotSchedulable",
    "FilesystemIsReadOnly",
    "DockerHung",
    "TaskHung",
    "NodeShutdown",
    "ScaleDownFailed",
];

/// What happens to a pod because its node failed: these link the pod to the node's
/// incident on placement alone.
pub const NODE_DOWN_EFFECTS: &[&str] = &[
    "NodeNotReady",
    "TaintManagerEviction",
    "NodeControllerEviction",
    "Evicted",
    "Preempting",
    "FailedKillPod",
    "DeletingAllPods",
];

/// Events that announce a change to a workload: the trigger of the trouble that follows.
pub const CHANGES: &[&str] = &[
    "ScalingReplicaSet",
    "SuccessfulRescale",
    "DeploymentRollback",
    "SuccessfulUpdate",
];

/// Failures that are final on their own: reported at once, however rare.
pub const FINAL: &[&str] = &["BackoffLimitExceeded", "DeadlineExceeded", "ClaimLost"];

/// Warnings that heal by themselves; they never open an incident (an HPA without metrics
/// right after a scale-up, DNS config truncation).
pub const BENIGN: &[&str] = &[
    "FailedGetResourceMetric",
    "FailedComputeMetricsReplicas",
    "FailedGetExternalMetric",
    "FailedGetPodsMetric",
    "FailedGetObjectMetric",
    "DNSConfigForming",
];

/// The causal rules kollate knows.
pub fn builtin_rules() -> Vec<CausalRule> {
    use Scope::*;
    vec![
        rule(
            "node-failure-evicts-its-pods",
            (NODE_TROUBLE, None),
            (
                &[
                    "NodeControllerEviction",
                    "TaintManagerEviction",
                    "Evicted",
                    "Killing",
                    "NodeNotReady",
                    "FailedMount",
                    "BackOff",
                    "Unhealthy",
                    "FailedCreatePodSandBox",
                    "SandboxChanged",
                    "FailedKillPod",
                    "Preempting",
                    "FailedSync",
                    "DeletingAllPods",
                ],
                None,
            ),
            Node,
            ("Node", "Pod"),
        ),
        rule(
            "node-not-ready-before-its-conditions",
            (&["NodeNotReady"], None),
            (
                &[
                    "Rebooted",
                    "DeletingAllPods",
                    "NodeHasDiskPressure",
                    "NodeHasMemoryPressure",
                ],
                None,
            ),
            Object,
            ("Node", "Node"),
        ),
        rule(
            "oom-kills-restart-containers",
            (&["OOMKilling", "SystemOOM"], None),
            (&["BackOff", "Killing", "Evicted", "Unhealthy"], None),
            Node,
            ("Node", "Pod"),
        ),
        rule(
            "volume-failure-keeps-containers-from-starting",
            (
                &["FailedMount", "FailedAttachVolume", "FailedMapVolume"],
                None,
            ),
            (
                &[
                    "BackOff",
                    "Failed",
                    "FailedCreatePodContainer",
                    "Unhealthy",
                    "FailedSync",
                    "Killing",
                ],
                // Not image pulls: a pod whose volumes mounted late and then fails to pull
                // its image has an image problem.
                Some(
                    "(?i)restarting|mount|volume|create ?container|failed to start|start container|timed out|probe",
                ),
            ),
            Owner,
            ("", ""),
        ),
        rule(
            "attach-failure-before-mount-timeout",
            (&["FailedAttachVolume"], None),
            (&["FailedMount"], None),
            Owner,
            ("", ""),
        ),
        rule(
            "storage-outage-breaks-dependents",
            (
                &["FailedMount", "FailedAttachVolume"],
                Some("(?i)timed out|attach|deadline"),
            ),
            (&["BackOff", "Unhealthy"], None),
            Namespace,
            ("", ""),
        ),
        rule(
            "dns-outage-breaks-lookups",
            (&["BackOff", "Unhealthy", "Killing", "Failed"], None),
            (&["Unhealthy", "BackOff", "Failed"], Some(DNS_FAILURE)),
            Incident,
            ("", ""),
        )
        .with_cause_object(DNS_WORKLOAD),
        rule(
            "expired-certificate-breaks-its-webhook",
            (&["Failed"], None),
            (&["FailedCreate"], Some("(?i)x509|certificate")),
            Incident,
            ("Certificate", ""),
        ),
        rule(
            "liveness-failure-restarts-container",
            (&["Unhealthy"], Some("(?i)liveness|startup")),
            (&["Killing", "BackOff"], None),
            Object,
            ("", ""),
        ),
        rule(
            "killed-container-backs-off",
            (&["Killing"], Some("(?i)liveness|startup|probe")),
            (&["BackOff"], None),
            Object,
            ("", ""),
        ),
        rule(
            "image-pull-error-names-the-image",
            (
                &["Failed"],
                Some(
                    "(?i)failed to pull|pull access denied|manifest unknown|not found|unauthorized",
                ),
            ),
            (
                &["Failed", "BackOff", "ErrImagePull", "ImagePullBackOff"],
                Some("(?i)^Error: |back-?off pulling|ImagePullBackOff"),
            ),
            Object,
            ("", ""),
        ),
        rule(
            "image-pull-failure-backs-off",
            (&["Failed", "ErrImagePull"], Some("(?i)ErrImagePull")),
            (
                &["BackOff", "Failed", "ImagePullBackOff"],
                Some("(?i)back-?off|ImagePullBackOff"),
            ),
            Object,
            ("", ""),
        ),
        rule(
            "rollout-breaks-its-pods",
            (&["ScalingReplicaSet"], Some("(?i)scaled up")),
            (
                &[
                    "BackOff",
                    "Unhealthy",
                    "Killing",
                    "Failed",
                    "CrashLoopBackOff",
                ],
                Some("(?i)back-?off restarting|probe|crash|failed to start|error|exit"),
            ),
            Owner,
            ("", ""),
        ),
        rule(
            "scale-up-exceeds-capacity",
            (
                &["SuccessfulRescale", "ScalingReplicaSet"],
                Some("(?i)new size|scaled up"),
            ),
            (&["FailedScheduling"], None),
            Owner,
            ("", ""),
        ),
        rule(
            "unschedulable-pod-scales-cluster",
            (&["FailedScheduling"], None),
            (&["TriggeredScaleUp", "NotTriggerScaleUp"], None),
            Object,
            ("", ""),
        ),
        rule(
            "unschedulable-pod-then-crashes",
            (&["FailedScheduling"], None),
            (&["Unhealthy", "BackOff", "Killing"], None),
            Object,
            ("", ""),
        ),
        rule(
            "quota-blocks-pod-creation",
            (&["FailedCreate"], Some("(?i)quota")),
            (&["FailedCreate", "FailedScheduling"], None),
            Owner,
            ("", ""),
        ),
        rule(
            "crashing-pods-fail-the-job",
            (&["BackOff", "Failed", "Unhealthy"], None),
            (&["BackoffLimitExceeded", "DeadlineExceeded"], None),
            Owner,
            ("", ""),
        ),
    ]
}

impl CausalRule {
    /// Restricts the cause to objects whose name matches `pattern`.
    fn with_cause_object(mut self, pattern: &str) -> Self {
        self.cause_object = Some(Pattern(Regex::new(pattern).expect("built-in pattern")));
        self
    }
}

/// The cluster DNS workloads, by name.
pub const DNS_WORKLOAD: &str = "^(coredns|kube-dns|node-local-dns)";

/// A message that says a name could not be resolved.
pub const DNS_FAILURE: &str = r"(?i)no such host|lookup \S+ on \S+:53|server misbehaving|name resolution|temporary failure in name";

/// Does an event say a name lookup failed inside the cluster? (Image pulls resolve
/// registries through the node's resolver, not the cluster DNS.)
pub fn is_dns_failure(message: &str) -> bool {
    if is_image_pull(message) {
        return false;
    }
    static PATTERN: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(DNS_FAILURE).expect("valid"));
    PATTERN.is_match(message)
}

/// Is this object one of the cluster DNS's (by name)?
pub fn is_dns_workload(name: &str) -> bool {
    static PATTERN: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(DNS_WORKLOAD).expect("valid"));
    PATTERN.is_match(name)
}

/// An image pull problem, by its message.
pub fn is_image_pull(message: &str) -> bool {
    contains_ignore_case(message, "pull") && contains_ignore_case(message, "image")
}

/// A readiness probe failure: a pod not yet (or no longer) serving, not a crash.
pub fn is_readiness(e: &Event) -> bool {
    e.reason == "Unhealthy" && e.message.starts_with("Readiness")
}

/// ASCII case-insensitive substring search, without allocating.
pub fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Kinds of node trouble: one node may be lost, under pressure and killing processes for
/// memory at once, and each is its own story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeTrouble {
    /// Not ready, rebooted, shut down, its runtime hung.
    Down,
    /// Disk, memory or PID pressure and the evictions it causes.
    Pressure,
    /// The kernel killed a process for memory.
    Oom,
    /// Cordoned.
    Cordon,
}

impl NodeTrouble {
    /// The kind of a node event's trouble, or of a pod event caused by its node's trouble.
    pub fn of(reason: &str) -> NodeTrouble {
        match reason {
            "OOMKilling" | "SystemOOM" => NodeTrouble::Oom,
            "NodeNotSchedulable" | "ScaleDown" | "ScaleDownFailed" => NodeTrouble::Cordon,
            "Evicted"
            | "Preempting"
            | "EvictionThresholdMet"
            | "ContainerGCFailed"
            | "ImageGCFailed"
            | "FreeDiskSpaceFailed"
            | "NodeOutOfDisk" => NodeTrouble::Pressure,
            r if r.starts_with("NodeHas") => NodeTrouble::Pressure,
            _ => NodeTrouble::Down,
        }
    }
}

/// Is this node trouble (an event about the Node itself)?
pub fn is_node_trouble(e: &Event) -> bool {
    e.object.kind == "Node" && NODE_TROUBLE.contains(&e.reason.as_str())
}

/// Does the event signal trouble worth an incident? Severity warning or worse from
/// `classify` (else type `Warning`), node trouble of any type (the node controller writes a
/// Node's `NodeNotReady` as Normal), never the benign warnings.
pub fn is_trouble(e: &Event) -> bool {
    if BENIGN.contains(&e.reason.as_str()) {
        return false;
    }
    if is_node_trouble(e) && e.reason != "NodeNotSchedulable" {
        return true;
    }
    match e.severity {
        Some(s) => s >= crate::event::Severity::Warning,
        None => e.event_type == "Warning",
    }
}
