//! One line for humans per incident: what is affected, what it is going through, why, and
//! what started it ("3 pods of deployment shop/cart restarting after volume mount timeouts
//! on node n-7").

use super::engine::IncidentState;
use super::rules::contains_ignore_case;
use crate::event::RootCause;

/// What the failing members are going through, by their reasons (and messages).
fn effect_phrase(incident: &IncidentState) -> &'static str {
    let failures = || incident.notable.iter().filter(|n| !n.change);
    let has = |r: &str| failures().any(|n| n.reason == r);
    let pulling = failures().any(|n| {
        matches!(n.reason.as_str(), "BackOff" | "Failed" | "ErrImagePull")
            && contains_ignore_case(&n.message, "pull")
    });
    if has("NodeControllerEviction") || has("TaintManagerEviction") || has("Evicted") {
        "evicted"
    } else if pulling {
        "unable to pull images"
    } else if has("BackOff") {
        "restarting"
    } else if has("Killing") {
        "killed"
    } else if has("FailedMount") || has("FailedAttachVolume") {
        "stuck waiting for volumes"
    } else if has("FailedScheduling") {
        "unschedulable"
    } else if has("Unhealthy") {
        "failing probes"
    } else if has("BackoffLimitExceeded") || has("DeadlineExceeded") {
        "failed"
    } else if has("FailedCreate") {
        "unable to create pods"
    } else if has("Failed") {
        "failing"
    } else if has("NodeNotReady") {
        "not ready"
    } else {
        "in trouble"
    }
}

/// Why, from the root cause's reason.
fn cause_phrase(root: &RootCause) -> String {
    let m = root.message.as_str();
    let name = &root.object.name;
    match root.reason.as_str() {
        "FailedMount" | "FailedAttachVolume" | "FailedMapVolume" => {
            if m.contains("timed out") {
                "volume mount timeouts".into()
            } else if m.contains("not found") {
                "a missing volume source".into()
            } else if root.reason == "FailedAttachVolume" {
                "volume attach failures".into()
            } else {
                "volume mount failures".into()
            }
        }
        "NodeNotReady" => format!("node {name} became NotReady"),
        "OOMKilling" | "SystemOOM" => "out-of-memory kills".into(),
        "Unhealthy" if m.starts_with("Liveness") => "failed liveness probes".into(),
        "Unhealthy" => "failed probes".into(),
        "Failed" | "ErrImagePull" if contains_ignore_case(m, "pull") => {
            "image pull failures".into()
        }
        "FailedScheduling" => "scheduling failures".into(),
        "FailedCreate" if contains_ignore_case(m, "quota") => "an exceeded quota".into(),
        "SuccessfulRescale" => format!("autoscaler {name} scaled up"),
        "ScalingReplicaSet" => format!("{name} was scaled up"),
        "Killing" => "containers being killed".into(),
        "DeletingAllPods" => format!("node {name} lost its pods"),
        "Rebooted" => format!("node {name} rebooted"),
        "BackOff" => format!("{name} crash-looping"),
        r if r.starts_with("NodeHas") => format!("node {name} under pressure ({r})"),
        other => other.to_owned(),
    }
}

/// The incident's summary line.
pub(super) fn summary(
    incident: &IncidentState,
    root: Option<&RootCause>,
    trigger: Option<&RootCause>,
) -> String {
    let pods = incident.objects.iter().filter(|o| o.kind == "Pod").count();
    let nodes: Vec<&str> = incident
        .objects
        .iter()
        .filter(|o| o.kind == "Node")
        .map(|o| o.name.as_str())
        .collect();
    let effect = effect_phrase(incident);
    let subject = match (pods, incident.workloads.as_slice()) {
        (0, _) if !nodes.is_empty() => format!(
            "node{} {}",
            if nodes.len() > 1 { "s" } else { "" },
            nodes.join(", ")
        ),
        (1, [one]) if one.starts_with("Pod ") => format!("pod {}", &one[4..]),
        (n, [one]) if n > 0 => {
            let (kind, name) = one.split_once(' ').unwrap_or(("workload", one));
            let kind = if kind == "Workload" {
                "workload".to_owned()
            } else {
                kind.to_lowercase()
            };
            format!("{n} pod{} of {kind} {name}", if n > 1 { "s" } else { "" })
        }
        (1, _) => "1 pod".to_owned(),
        (n, _) if n > 0 => format!("{n} pods"),
        _ => incident
            .objects
            .first()
            .map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
            .unwrap_or_else(|| "objects".into()),
    };
    let mut line = format!("{subject} {effect}");
    if let Some(root) = root.filter(|r| r.rule != "earliest-failure") {
        line.push_str(" after ");
        line.push_str(&cause_phrase(root));
    }
    if let [node] = incident.nodes.as_slice()
        && !line.contains(node.as_str())
    {
        line.push_str(&format!(" on node {node}"));
    }
    if let Some(trigger) = trigger {
        let what = match trigger.reason.as_str() {
            "SuccessfulRescale" => format!("autoscaler {}", trigger.object.name),
            "DeploymentRollback" => format!("rollback of {}", trigger.object.name),
            _ => format!("rollout of {}", trigger.object.name),
        };
        line.push_str(&format!(" (triggered by {what})"));
    }
    line
}
