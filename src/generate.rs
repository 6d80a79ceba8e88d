//! A deterministic generator of realistic Kubernetes Event streams.
//!
//! It models what a busy cluster records, with the reasons, messages, sources, generated
//! names and repeat behaviour (the same Event object coming back with a higher `count`) of
//! the real kubelet, scheduler and controllers: routine pod lifecycles and rollouts in the
//! background, and incidents on top of them: a crash-looping deployment, a volume that
//! never mounts, a node going NotReady with its pods evicted and rescheduled, an image that
//! cannot be pulled, a liveness probe killing a container, an OOM kill, pods that cannot
//! be scheduled until the autoscaler adds a node.
//!
//! The same seed always gives the same bytes. Output is `core/v1` Events (and, with
//! `mixed_apis`, a share of `events.k8s.io/v1` ones) as JSON Lines. Used for the shipped
//! example stream (`examples/events/`), the tests and the benchmarks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of events.
    pub events: u64,
    /// Random seed.
    pub seed: u64,
    /// Average events per second of event time.
    pub rate: f64,
    /// Number of deployments the background workload is spread over.
    pub deployments: u32,
    /// Nodes in the cluster.
    pub nodes: u32,
    /// Write a share of events in the `events.k8s.io/v1` shape.
    pub mixed_apis: bool,
    /// Start of the stream.
    pub start: DateTime<Utc>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            events: 5_000,
            seed: 7,
            rate: 1.0,
            deployments: 40,
            nodes: 8,
            mixed_apis: true,
            start: DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
                .expect("valid")
                .with_timezone(&Utc),
        }
    }
}

const NAMESPACES: &[&str] = &[
    "shop",
    "payments",
    "search",
    "auth",
    "media",
    "analytics",
    "ops",
    "web",
];
const APPS: &[&str] = &[
    "cart", "checkout", "api", "worker", "frontend", "indexer", "gateway", "cache", "ledger",
    "thumbs",
];
const SUFFIX: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// One event to write, ordered by time.
struct Pending {
    at: DateTime<Utc>,
    seq: u64,
    value: Value,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The object an event is about.
#[derive(Clone)]
struct Obj {
    kind: &'static str,
    namespace: String,
    name: String,
    uid: String,
    api_version: &'static str,
}

struct Gen {
    rng: ChaCha8Rng,
    opts: GenerateOptions,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    resource_version: u64,
}

impl Gen {
    fn uid(&mut self) -> String {
        let b: [u8; 16] = self.rng.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
            (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
            u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
        )
    }

    fn suffix(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| SUFFIX[self.rng.random_range(0..SUFFIX.len())] as char)
            .collect()
    }

    fn node(&mut self) -> String {
        format!("n-{}", self.rng.random_range(1..=self.opts.nodes))
    }

    fn pod(&mut self, namespace: &str, owner: &str) -> Obj {
        let name = format!("{owner}-{}", self.suffix(5));
        Obj {
            kind: "Pod",
            namespace: namespace.into(),
            name,
            uid: self.uid(),
            api_version: "v1",
        }
    }

    fn object(
        &mut self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        api_version: &'static str,
    ) -> Obj {
        Obj {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            uid: self.uid(),
            api_version,
        }
    }

    /// Queues one Event object occurring `count` times, every `every`, from `at`.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        at: DateTime<Utc>,
        obj: &Obj,
        event_type: &str,
        reason: &str,
        message: &str,
        component: &str,
        host: &str,
        field_path: &str,
        count: u32,
        every: Duration,
    ) {
        let uid = self.uid();
        let name = format!("{}.{:016x}", obj.name, self.rng.random::<u64>() >> 4);
        let events_api = self.opts.mixed_apis && self.rng.random_range(0..5) == 0;
        for i in 0..count.max(1) {
            let last = at + every * i as i32;
            self.resource_version += 1;
            let value = if events_api {
                json!({
                    "apiVersion": "events.k8s.io/v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": obj.namespace, "uid": uid,
                        "resourceVersion": self.resource_version.to_string(), "creationTimestamp": ts(at)},
                    "eventTime": null,
                    "regarding": obj_json(obj, field_path),
                    "reason": reason, "note": message, "type": event_type, "action": action_for(reason),
                    "reportingController": component, "reportingInstance": if component == "kubelet" { host } else { "" },
                    "deprecatedSource": {"component": component, "host": host},
                    "deprecatedFirstTimestamp": ts(at), "deprecatedLastTimestamp": ts(last), "deprecatedCount": i + 1,
                })
            } else {
                json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": obj.namespace, "uid": uid,
                        "resourceVersion": self.resource_version.to_string(), "creationTimestamp": ts(at)},
                    "involvedObject": obj_json(obj, field_path),
                    "reason": reason, "message": message, "type": event_type,
                    "source": {"component": component, "host": host},
                    "firstTimestamp": ts(at), "lastTimestamp": ts(last), "count": i + 1,
                    "eventTime": null, "reportingComponent": component,
                    "reportingInstance": if component == "kubelet" { host } else { "" },
                })
            };
            self.seq += 1;
            self.queue.push(Reverse(Pending {
                at: last,
                seq: self.seq,
                value,
            }));
        }
    }

    /// A pod being scheduled and started on `node`.
    fn start_pod(
        &mut self,
        at: DateTime<Utc>,
        pod: &Obj,
        node: &str,
        image: &str,
    ) -> DateTime<Utc> {
        let s = |ms: i64| at + Duration::milliseconds(ms);
        let c = format!(
            "spec.containers{{{}}}",
            image.split(':').next().unwrap_or(image)
        );
        self.event(
            s(0),
            pod,
            "Normal",
            "Scheduled",
            &format!(
                "Successfully assigned {}/{} to {node}",
                pod.namespace, pod.name
            ),
            "default-scheduler",
            "",
            "",
            1,
            Duration::zero(),
        );
        self.event(
            s(900),
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
            "kubelet",
            node,
            &c,
            1,
            Duration::zero(),
        );
        let pull_ms = self.rng.random_range(300..9000);
        self.event(
            s(900 + pull_ms),
            pod,
            "Normal",
            "Pulled",
            &format!(
                "Successfully pulled image \"{image}\" in {}.{:03}s",
                pull_ms / 1000,
                pull_ms % 1000
            ),
            "kubelet",
            node,
            &c,
            1,
            Duration::zero(),
        );
        self.event(
            s(1000 + pull_ms),
            pod,
            "Normal",
            "Created",
            &format!("Created container {}", pod_container(image)),
            "kubelet",
            node,
            &c,
            1,
            Duration::zero(),
        );
        self.event(
            s(1100 + pull_ms),
            pod,
            "Normal",
            "Started",
            &format!("Started container {}", pod_container(image)),
            "kubelet",
            node,
            &c,
            1,
            Duration::zero(),
        );
        s(1100 + pull_ms)
    }

    fn scenario(&mut self, at: DateTime<Utc>) {
        let ns = NAMESPACES[self.rng.random_range(0..NAMESPACES.len())];
        let app_i = self.rng.random_range(0..self.opts.deployments.max(1));
        let app = format!(
            "{}-{}",
            APPS[app_i as usize % APPS.len()],
            app_i / APPS.len() as u32
        );
        let image = format!(
            "registry.example.com/{ns}/{}:1.{}.{}",
            APPS[app_i as usize % APPS.len()],
            app_i % 7,
            self.rng.random_range(0..20)
        );
        let rs_name = format!("{app}-{}", self.suffix(9));
        let rs = self.object("ReplicaSet", ns, &rs_name, "apps/v1");
        let deploy = self.object("Deployment", ns, &app, "apps/v1");
        let node = self.node();
        let roll: u32 = self.rng.random_range(0..100);
        match roll {
            // Routine: a pod replaced by its ReplicaSet.
            0..=54 => {
                let pod = self.pod(ns, &rs_name);
                self.event(
                    at,
                    &rs,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", pod.name),
                    "replicaset-controller",
                    "",
                    "",
                    1,
                    Duration::zero(),
                );
                self.start_pod(at + Duration::milliseconds(40), &pod, &node, &image);
            }
            // A rollout: new ReplicaSet up, old one down.
            55..=66 => {
                let old = format!("{app}-{}", self.suffix(9));
                let old_rs = self.object("ReplicaSet", ns, &old, "apps/v1");
                let replicas = self.rng.random_range(2..5);
                for r in 0..replicas {
                    let t = at + Duration::seconds(20 * r as i64);
                    self.event(
                        t,
                        &deploy,
                        "Normal",
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {rs_name} to {}", r + 1),
                        "deployment-controller",
                        "",
                        "",
                        1,
                        Duration::zero(),
                    );
                    let pod = self.pod(ns, &rs_name);
                    self.event(
                        t + Duration::milliseconds(30),
                        &rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", pod.name),
                        "replicaset-controller",
                        "",
                        "",
                        1,
                        Duration::zero(),
                    );
                    let node = self.node();
                    let ready = self.start_pod(t + Duration::milliseconds(60), &pod, &node, &image);
                    self.event(
                        ready + Duration::seconds(5),
                        &deploy,
                        "Normal",
                        "ScalingReplicaSet",
                        &format!("Scaled down replica set {old} to {}", replicas - r - 1),
                        "deployment-controller",
                        "",
                        "",
                        1,
                        Duration::zero(),
                    );
                    let victim = self.pod(ns, &old);
                    self.event(
                        ready + Duration::seconds(5),
                        &old_rs,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted pod: {}", victim.name),
                        "replicaset-controller",
                        "",
                        "",
                        1,
                        Duration::zero(),
                    );
                    self.event(
                        ready + Duration::seconds(6),
                        &victim,
                        "Normal",
                        "Killing",
                        &format!("Stopping container {}", pod_container(&image)),
                        "kubelet",
                        &node,
                        "",
                        1,
                        Duration::zero(),
                    );
                }
            }
            // A crash-looping container.
            67..=74 => {
                let pod = self.pod(ns, &rs_name);
                let started = self.start_pod(at, &pod, &node, &image);
                let c = format!("spec.containers{{{}}}", pod_container(&image));
                let restarts = self.rng.random_range(4..30);
                self.event(
                    started + Duration::seconds(8),
                    &pod,
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container",
                    "kubelet",
                    &node,
                    &c,
                    restarts,
                    Duration::seconds(30),
                );
            }
            // A volume that never mounts: attach times out, the pod never starts.
            75..=80 => {
                let sts = self.object("StatefulSet", ns, &format!("{app}-db"), "apps/v1");
                let pod = Obj {
                    name: format!("{app}-db-0"),
                    ..self.pod(ns, "x")
                };
                let pvc = format!("pvc-{}", self.uid());
                self.event(
                    at,
                    &sts,
                    "Normal",
                    "SuccessfulCreate",
                    &format!(
                        "create Pod {} in StatefulSet {}-db successful",
                        pod.name, app
                    ),
                    "statefulset-controller",
                    "",
                    "",
                    1,
                    Duration::zero(),
                );
                self.event(
                    at + Duration::seconds(1),
                    &pod,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{} to {node}", pod.name),
                    "default-scheduler",
                    "",
                    "",
                    1,
                    Duration::zero(),
                );
                let (attaches, mounts) =
                    (self.rng.random_range(2..6), self.rng.random_range(3..12));
                self.event(at + Duration::seconds(60), &pod, "Warning", "FailedAttachVolume", &format!("AttachVolume.Attach failed for volume \"{pvc}\" : rpc error: code = DeadlineExceeded desc = context deadline exceeded"), "attachdetach-controller", "", "", attaches, Duration::seconds(120));
                let token = format!("kube-api-access-{}", self.suffix(5));
                self.event(at + Duration::seconds(121), &pod, "Warning", "FailedMount", &format!("Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[data {token}]: timed out waiting for the condition"), "kubelet", &node, "", mounts, Duration::seconds(135));
            }
            // A node goes NotReady; its pods are evicted and rescheduled elsewhere.
            81..=83 => {
                let n = self.object("Node", "", &node, "v1");
                let n = Obj {
                    uid: node.clone(),
                    ..n
                };
                self.event(
                    at,
                    &n,
                    "Normal",
                    "NodeNotReady",
                    &format!("Node {node} status is now: NodeNotReady"),
                    "node-controller",
                    "",
                    "",
                    1,
                    Duration::zero(),
                );
                for k in 0..self.rng.random_range(2..6) {
                    let owner = format!("{app}-{}", self.suffix(9));
                    let victim = self.pod(ns, &owner);
                    let t = at + Duration::seconds(300 + k);
                    self.event(
                        t,
                        &victim,
                        "Normal",
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {ns}/{}", victim.name),
                        "taint-controller",
                        "",
                        "",
                        1,
                        Duration::zero(),
                    );
                    let replacement = self.pod(ns, &rs_name);
                    self.event(
                        t + Duration::seconds(2),
                        &rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", replacement.name),
                        "replicaset-controller",
                        "",
                        "",
                        1,
                        Duration::zero(),
                    );
                    let other = format!(
                        "n-{}",
                        (node[2..].parse::<u32>().unwrap_or(1) % self.opts.nodes) + 1
                    );
                    self.start_pod(t + Duration::seconds(3), &replacement, &other, &image);
                }
                self.event(
                    at + Duration::seconds(900),
                    &n,
                    "Normal",
                    "NodeReady",
                    &format!("Node {node} status is now: NodeReady"),
                    "kubelet",
                    &node,
                    "",
                    1,
                    Duration::zero(),
                );
            }
            // An image that cannot be pulled.
            84..=88 => {
                let pod = self.pod(ns, &rs_name);
                let bad = format!(
                    "registry.example.com/{ns}/{}:does-not-exist",
                    APPS[app_i as usize % APPS.len()]
                );
                let c = format!("spec.containers{{{}}}", pod_container(&image));
                self.event(
                    at,
                    &pod,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{} to {node}", pod.name),
                    "default-scheduler",
                    "",
                    "",
                    1,
                    Duration::zero(),
                );
                let tries = self.rng.random_range(3..8);
                self.event(
                    at + Duration::seconds(1),
                    &pod,
                    "Normal",
                    "Pulling",
                    &format!("Pulling image \"{bad}\""),
                    "kubelet",
                    &node,
                    &c,
                    tries,
                    Duration::seconds(60),
                );
                self.event(at + Duration::seconds(2), &pod, "Warning", "Failed", &format!("Failed to pull image \"{bad}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{bad}\": not found"), "kubelet", &node, &c, tries, Duration::seconds(60));
                self.event(
                    at + Duration::seconds(2),
                    &pod,
                    "Warning",
                    "Failed",
                    "Error: ErrImagePull",
                    "kubelet",
                    &node,
                    &c,
                    tries,
                    Duration::seconds(60),
                );
                self.event(
                    at + Duration::seconds(3),
                    &pod,
                    "Normal",
                    "BackOff",
                    &format!("Back-off pulling image \"{bad}\""),
                    "kubelet",
                    &node,
                    &c,
                    tries * 4,
                    Duration::seconds(15),
                );
                self.event(
                    at + Duration::seconds(3),
                    &pod,
                    "Warning",
                    "Failed",
                    "Error: ImagePullBackOff",
                    "kubelet",
                    &node,
                    &c,
                    tries * 4,
                    Duration::seconds(15),
                );
            }
            // A liveness probe kills a container, which then backs off.
            89..=93 => {
                let pod = self.pod(ns, &rs_name);
                let started = self.start_pod(at, &pod, &node, &image);
                let c = format!("spec.containers{{{}}}", pod_container(&image));
                let ip = format!(
                    "10.{}.{}.{}",
                    self.rng.random_range(0..255),
                    self.rng.random_range(0..255),
                    self.rng.random_range(2..250)
                );
                self.event(started + Duration::seconds(30), &pod, "Warning", "Unhealthy", &format!("Liveness probe failed: Get \"http://{ip}:8080/healthz\": context deadline exceeded"), "kubelet", &node, &c, 3, Duration::seconds(10));
                self.event(
                    started + Duration::seconds(51),
                    &pod,
                    "Normal",
                    "Killing",
                    &format!(
                        "Container {} failed liveness probe, will be restarted",
                        pod_container(&image)
                    ),
                    "kubelet",
                    &node,
                    &c,
                    1,
                    Duration::zero(),
                );
                let restarts = self.rng.random_range(2..9);
                self.event(
                    started + Duration::seconds(80),
                    &pod,
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container",
                    "kubelet",
                    &node,
                    &c,
                    restarts,
                    Duration::seconds(40),
                );
            }
            // The kernel OOM-kills a process on a node; the container restarts.
            94..=95 => {
                let n = Obj {
                    uid: node.clone(),
                    ..self.object("Node", "", &node, "v1")
                };
                let pid = self.rng.random_range(1000..60000);
                let (vm, rss, restarts) = (
                    self.rng.random_range(100_000..900_000),
                    self.rng.random_range(50_000..400_000),
                    self.rng.random_range(1..5),
                );
                self.event(at, &n, "Warning", "OOMKilling", &format!("Memory cgroup out of memory: Killed process {pid} ({}) total-vm:{vm}kB, anon-rss:{rss}kB", pod_container(&image)), "kernel-monitor", &node, "", 1, Duration::zero());
                let pod = self.pod(ns, &rs_name);
                self.event(
                    at + Duration::seconds(20),
                    &pod,
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container",
                    "kubelet",
                    &node,
                    "",
                    restarts,
                    Duration::seconds(60),
                );
            }
            // Pods that cannot be scheduled until the autoscaler adds a node.
            _ => {
                let pod = self.pod(ns, &rs_name);
                let n = self.opts.nodes;
                let tries = self.rng.random_range(2..8);
                self.event(at, &pod, "Warning", "FailedScheduling", &format!("0/{n} nodes are available: {} Insufficient cpu, {} node(s) had untolerated taint {{node-role.kubernetes.io/control-plane: }}. preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod.", n - 1, 1), "default-scheduler", "", "", tries, Duration::seconds(30));
                let pool = self.suffix(5);
                self.event(
                    at + Duration::seconds(10),
                    &pod,
                    "Normal",
                    "TriggeredScaleUp",
                    &format!(
                        "pod triggered scale-up: [{{pool-{pool} {}->{} (max: 10)}}]",
                        n,
                        n + 1
                    ),
                    "cluster-autoscaler",
                    "",
                    "",
                    1,
                    Duration::zero(),
                );
                let new_node = format!("n-{}", n + 1);
                self.start_pod(at + Duration::seconds(200), &pod, &new_node, &image);
            }
        }
    }
}

fn pod_container(image: &str) -> &str {
    let name = image.rsplit('/').next().unwrap_or(image);
    name.split(':').next().unwrap_or(name)
}

fn action_for(reason: &str) -> &'static str {
    match reason {
        "Scheduled" => "Binding",
        "Pulling" | "Pulled" => "Pulling",
        "Killing" => "Killing",
        _ => "",
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn obj_json(o: &Obj, field_path: &str) -> Value {
    let mut v = json!({"kind": o.kind, "name": o.name, "uid": o.uid, "apiVersion": o.api_version});
    if !o.namespace.is_empty() {
        v["namespace"] = json!(o.namespace);
    }
    if !field_path.is_empty() {
        v["fieldPath"] = json!(field_path);
    }
    v
}

/// Writes `opts.events` events as JSON Lines, in time order.
///
/// # Errors
/// Write errors.
pub fn generate(opts: &GenerateOptions, out: &mut impl Write) -> io::Result<()> {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(opts.seed),
        opts: opts.clone(),
        queue: BinaryHeap::new(),
        seq: 0,
        resource_version: 1_000_000,
    };
    let mut now = opts.start;
    // Scenarios average ~12 events; start them often enough to reach the requested rate.
    let mean_gap_ms = (12_000.0 / opts.rate.max(1e-6)).max(1.0);
    let mut written = 0;
    let mut line = Vec::with_capacity(1024);
    while written < opts.events {
        let gap = -mean_gap_ms * (1.0 - g.rng.random::<f64>()).ln();
        now += Duration::milliseconds(gap as i64);
        g.scenario(now);
        // Everything queued before the current time can no longer be preceded by new events.
        while written < opts.events && g.queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Reverse(p) = g.queue.pop().expect("peeked");
            line.clear();
            serde_json::to_writer(&mut line, &p.value)?;
            line.push(b'\n');
            out.write_all(&line)?;
            written += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_every_line_decodes() {
        let opts = GenerateOptions {
            events: 300,
            ..GenerateOptions::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&opts, &mut a).unwrap();
        generate(&opts, &mut b).unwrap();
        assert_eq!(a, b);
        let lines: Vec<&[u8]> = a.split(|&c| c == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 300);
        let mut last = None;
        for line in lines {
            let e = crate::event::decode_json(line).unwrap();
            assert!(last <= e.timestamp, "stream is in time order");
            last = e.timestamp;
        }
    }
}
