//! What each component writes: one line per kind of event, verbatim from real clusters.
//!
//! Kept in one table so the simulator's texts can be checked against the recorded dumps
//! (`shared/data/events`) and the components' source in one place. Format:
//! `key|component|reason|N or W|message`. In messages and components, `$0`.. are the
//! caller's values; `$ns`, `$name`, `$uid` come from the object, `$c` (container), `$img`,
//! `$ip` and `$node` from the pod or node the event is about. Scheduler events are written
//! through `events.k8s.io/v1`, the rest through `core/v1`.

use std::collections::HashMap;

const CATALOGUE: &str = r#"
pulling|kubelet|Pulling|N|Pulling image "$img"
pulled|kubelet|Pulled|N|Successfully pulled image "$img" in $0 ($1 including waiting). Image size: $2 bytes.
present|kubelet|Pulled|N|Container image "$img" already present on machine
created|kubelet|Created|N|Created container: $c
started|kubelet|Started|N|Started container $c
killing|kubelet|Killing|N|Stopping container $c
probe-kill|kubelet|Killing|N|Container $c failed liveness probe, will be restarted
backoff|kubelet|BackOff|W|Back-off restarting failed container $c in pod $name_$ns($uid)
liveness|kubelet|Unhealthy|W|Liveness probe failed: Get "http://$ip:8080/healthz": context deadline exceeded (Client.Timeout exceeded while awaiting headers)
refused|kubelet|Unhealthy|W|Readiness probe failed: Get "http://$ip:$0/ready": dial tcp $ip:$0: connect: connection refused
not-ready|kubelet|Unhealthy|W|Readiness probe failed: HTTP probe failed with statuscode: 503
pull-failed|kubelet|Failed|W|Failed to pull image "$img": $0
err-pull|kubelet|Failed|W|Error: ErrImagePull
pull-backoff|kubelet|BackOff|N|Back-off pulling image "$img"
err-backoff|kubelet|Failed|W|Error: ImagePullBackOff
no-secret|kubelet|FailedMount|W|MountVolume.SetUp failed for volume "$0" : secret "$1" not found
mount-timeout|kubelet|FailedMount|W|Unable to attach or mount volumes: unmounted volumes=[$0], unattached volumes=[$1], failed to process volumes=[]: timed out waiting for the condition
sandbox|kubelet|SandboxChanged|N|Pod sandbox changed, it will be killed and re-created.
dns-config|kubelet|DNSConfigForming|W|Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 10.0.0.2 10.0.0.3 169.254.169.253
starting|kubelet|Starting|N|Starting kubelet.
rebooted|kubelet|Rebooted|W|Node $node has been rebooted, boot id: $0
memory|kubelet|NodeHasSufficientMemory|N|Node $node status is now: NodeHasSufficientMemory
disk|kubelet|NodeHasNoDiskPressure|N|Node $node status is now: NodeHasNoDiskPressure
pid|kubelet|NodeHasSufficientPID|N|Node $node status is now: NodeHasSufficientPID
allocatable|kubelet|NodeAllocatableEnforced|N|Updated Node Allocatable limit across pods
ready|kubelet|NodeReady|N|Node $node status is now: NodeReady
cordon|kubelet|NodeNotSchedulable|N|Node $node status is now: NodeNotSchedulable
uncordon|kubelet|NodeSchedulable|N|Node $node status is now: NodeSchedulable
system-oom|kubelet|SystemOOM|W|System OOM encountered, victim process: $0, pid: $1
oom|kernel-monitor|OOMKilling|W|$0: Killed process $1 ($2) total-vm:$3kB, anon-rss:$4kB, file-rss:$5kB, shmem-rss:0kB, UID:$6 pgtables:$7kB oom_score_adj:$8
node-not-ready|node-controller|NodeNotReady|N|Node $node status is now: NodeNotReady
pod-not-ready|node-controller|NodeNotReady|W|Node is not ready
registered|node-controller|RegisteredNode|N|Node $node event: Registered Node $node in Controller
removing|node-controller|RemovingNode|N|Node $node event: Removing Node $node from Controller
deleting|cloud-node-lifecycle-controller|DeletingNode|N|Deleting node $node because it does not exist in the cloud provider
taint|taint-controller|TaintManagerEviction|N|Marking for deletion Pod $ns/$name
scheduled|default-scheduler|Scheduled|N|Successfully assigned $ns/$name to $node
unschedulable|default-scheduler|FailedScheduling|W|0/$0 nodes are available: $1 Insufficient cpu$2. preemption: 0/$0 nodes are available: $0 No preemption victims found for incoming pod.
scale|deployment-controller|ScalingReplicaSet|N|Scaled $0 replica set $1 from $2 to $3
rs-create|replicaset-controller|SuccessfulCreate|N|Created pod: $0
rs-delete|replicaset-controller|SuccessfulDelete|N|Deleted pod: $0
rs-failed|replicaset-controller|FailedCreate|W|Error creating: $0
ds-create|daemonset-controller|SuccessfulCreate|N|Created pod: $0
job-create|job-controller|SuccessfulCreate|N|Created pod: $0
job-delete|job-controller|SuccessfulDelete|N|Deleted pod: $0
job-done|job-controller|Completed|N|Job completed
job-limit|job-controller|BackoffLimitExceeded|W|Job has reached the specified backoff limit
cj-create|cronjob-controller|SuccessfulCreate|N|Created job $0
cj-seen|cronjob-controller|SawCompletedJob|N|Saw completed job: $0, status: $1
cj-delete|cronjob-controller|SuccessfulDelete|N|Deleted job $0
sts-claim|statefulset-controller|SuccessfulCreate|N|create Claim $0 Pod $1 in StatefulSet $name success
sts-create|statefulset-controller|SuccessfulCreate|N|create Pod $0 in StatefulSet $name successful
sts-delete|statefulset-controller|SuccessfulDelete|N|delete Pod $0 in StatefulSet $name successful
rescale|horizontal-pod-autoscaler|SuccessfulRescale|N|New size: $0; reason: $1
no-metric|horizontal-pod-autoscaler|FailedGetResourceMetric|W|failed to get cpu utilization: did not receive metrics for targeted pods (pods might be unready)
no-replicas|horizontal-pod-autoscaler|FailedComputeMetricsReplicas|W|invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: failed to get cpu utilization: did not receive metrics for targeted pods (pods might be unready)
scale-up|cluster-autoscaler|TriggeredScaleUp|N|pod triggered scale-up: [{$0 $1->$2 (max: $3)}]
no-scale-up|cluster-autoscaler|NotTriggerScaleUp|N|pod didn't trigger scale-up: 1 max node group size reached
scale-down|cluster-autoscaler|ScaleDown|N|marked the node as toBeDeleted/unschedulable
evict|cluster-autoscaler|ScaleDown|N|deleting pod for node scale down
scale-down-failed|cluster-autoscaler|ScaleDownFailed|W|failed to drain the node, aborting ScaleDown
pvc-wait|persistentvolume-controller|WaitForFirstConsumer|N|waiting for first consumer to be created before binding
pvc-external|persistentvolume-controller|ExternalProvisioning|N|Waiting for a volume to be created either by the external provisioner 'ebs.csi.aws.com' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.
provisioning|$0|Provisioning|N|External provisioner is provisioning volume for claim "$ns/$name"
provisioned|$0|ProvisioningSucceeded|N|Successfully provisioned volume $1
attach-failed|attachdetach-controller|FailedAttachVolume|W|AttachVolume.Attach failed for volume "$0" : rpc error: code = DeadlineExceeded desc = context deadline exceeded
multi-attach|attachdetach-controller|FailedAttachVolume|W|Multi-Attach error for volume "$0" Volume is already exclusively attached to one node and can't be attached to another
cm-renew|cert-manager-certificates-trigger|Issuing|N|Renewing certificate as renewal was scheduled at $0
cm-reuse|cert-manager-certificates-key-manager|Reused|N|Reusing private key stored in existing Secret resource "$name"
cm-request|cert-manager-certificates-request-manager|Requested|N|Created new CertificateRequest resource "$0"
cm-wait|cert-manager-certificaterequests-issuer-$0|WaitingForApproval|N|Not signing CertificateRequest until it is Approved
cm-approved|cert-manager-certificaterequests-approver|cert-manager.io|N|Certificate request has been approved by cert-manager.io
cm-order|cert-manager-certificaterequests-issuer-acme|OrderCreated|N|Created Order resource $ns/$0
cm-issued|cert-manager-certificaterequests-issuer-acme|CertificateIssued|N|Certificate fetched from issuer successfully
cm-done|cert-manager-certificates-issuing|Issuing|N|The certificate has been successfully issued
cm-failed|cert-manager-certificates-issuing|Failed|W|The certificate request has failed to complete and will be retried: Failed to wait for order resource "$0" to become ready: order is in "errored" state: $1
"#;

/// One kind of event.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub component: &'static str,
    pub reason: &'static str,
    pub warning: bool,
    pub message: &'static str,
}

/// The catalogue by key.
pub(super) fn load() -> HashMap<&'static str, Entry> {
    let entry = |line: &'static str| {
        let f: Vec<&'static str> = line.splitn(5, '|').collect();
        let (component, reason, warning, message) = (f[1], f[2], f[3] == "W", f[4]);
        (
            f[0],
            Entry {
                component,
                reason,
                warning,
                message,
            },
        )
    };
    CATALOGUE
        .lines()
        .filter(|l| !l.is_empty())
        .map(entry)
        .collect()
}

/// Replaces `$word` in `template` with `var(word)`; unknown words stay as they are.
pub(super) fn fill(template: &str, var: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let word = &rest[i + 1..];
        let end = word
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(word.len());
        match var(&word[..end]) {
            Some(v) if end > 0 => out.push_str(&v),
            _ => out.push_str(&rest[i..=i + end]),
        }
        rest = &word[end..];
    }
    out.push_str(rest);
    out
}
