//! The simulated cluster: nodes, workloads, pods, and the routine life that is noise.
//!
//! An EKS-like cluster with DaemonSets on every node and Deployments and StatefulSets across a
//! dozen namespaces, plus the building blocks incidents are told with: pod starts, crash
//! loops, image pull back-offs, rollouts and rollbacks, node boots, with the kubelet's and
//! controllers' timings (back-offs, probe periods, retry schedules). Routine activity is noise:
//! rolling updates, CronJobs, HPA scaling with the benign metric warnings after it, certificate
//! renewals, the odd readiness failure at start-up, a node with too many nameservers.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use chrono::Duration;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::catalogue::{self, Entry};
use super::cluster::{ObjRef, Occ, Tag, Time, suffix, uuid};
use super::{Role, SimulateOptions};

pub(super) const REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const EKS: &str = "602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks";
const SYSTEM: &[&str] = &["kube-system", "monitoring", "logging", "data"];
/// `namespace/name`, `*` for a StatefulSet.
const APPS: &str = "shop/cart shop/checkout shop/catalog shop/recommendations payments/payments-api \
    payments/ledger payments/fraud-scoring search/indexer search/query-api auth/auth-api \
    auth/session-store* media/thumbnailer media/media-api analytics/events-collector \
    analytics/report-worker web/frontend web/bff data/postgres* data/redis* data/kafka* \
    monitoring/grafana monitoring/prometheus* kube-system/coredns kube-system/metrics-server";
const DAEMONS: &str = "kube-system/kube-proxy kube-system/aws-node kube-system/ebs-csi-node \
    monitoring/node-exporter logging/fluent-bit";
/// `namespace/name/minutes`.
const CRONJOBS: &str = "analytics/report-sync/5 shop/price-refresh/10 platform/cleanup-tmp/15 \
    data/backup-snapshot/30 auth/token-rotate/60";

pub(super) fn s(n: i64) -> Duration {
    Duration::seconds(n)
}

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

/// The tags of one incident's roles.
#[derive(Clone, Copy)]
pub(super) struct T3 {
    pub root: Tag,
    pub sym: Tag,
    pub ctx: Tag,
}

impl T3 {
    /// The same with another root tag (the trigger of a rollout, say).
    pub fn root(mut self, root: Tag) -> T3 {
        self.root = root;
        self
    }

    /// The same with another symptom tag (what crash loops report).
    pub fn sym(mut self, sym: Tag) -> T3 {
        self.sym = sym;
        self
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Deploy,
    Sts,
    Ds,
    Job,
}

#[derive(Clone)]
pub(super) struct Pod {
    pub obj: ObjRef,
    pub node: usize,
    ip: String,
    /// Container name.
    c: String,
    image: String,
}

pub(super) struct Work {
    pub kind: Kind,
    pub obj: ObjRef,
    /// The current ReplicaSet of a Deployment, the current Job of a CronJob; else `obj`.
    pub rs: ObjRef,
    pub c: String,
    image: String,
    pub pods: Vec<Pod>,
    /// Not owned by an incident.
    pub free: bool,
}

pub(super) struct Node {
    pub name: String,
    /// As the kubelet and node-problem-detector refer to it (`uid` is the name).
    kref: ObjRef,
    /// As controllers refer to it (the Node's uid).
    cref: ObjRef,
    /// Intervals the node is gone: nothing on it writes.
    pub down: Vec<(Time, Time)>,
}

/// What an event is about: `&ObjRef` and `&Pod` convert.
#[derive(Clone, Copy)]
pub(super) enum On<'a> {
    Obj(&'a ObjRef),
    Pod(&'a Pod),
    Node(usize),
}

impl<'a> From<&'a Pod> for On<'a> {
    fn from(p: &'a Pod) -> Self {
        On::Pod(p)
    }
}

impl<'a> From<&'a ObjRef> for On<'a> {
    fn from(o: &'a ObjRef) -> Self {
        On::Obj(o)
    }
}

/// Where the scheduler puts a new pod.
#[derive(Clone, Copy)]
pub(super) enum Place {
    Any,
    Avoid(usize),
    On(usize),
}

/// How a container keeps failing: seconds it runs, liveness failures (with this tag) killing
/// it instead of it exiting, and after how many failures it stops.
#[derive(Clone, Copy)]
pub(super) struct Loop(pub (i64, i64), pub Option<Tag>, pub usize);

/// A rollout that went wrong: the old and new ReplicaSet and the new pods, bound, not started.
pub(super) struct Bad {
    old_rs: ObjRef,
    new_rs: ObjRef,
    pub pods: Vec<(Pod, Time)>,
    removed: usize,
    replicas: usize,
}

pub(super) struct Cluster {
    rng: RefCell<ChaCha8Rng>,
    catalogue: HashMap<&'static str, Entry>,
    pub occs: Vec<Occ>,
    /// (label, kind) per incident index.
    pub labels: Vec<(String, &'static str)>,
    pub start: Time,
    pub end: Time,
    pub nodes: Vec<Node>,
    pub work: Vec<Work>,
    pub rv_base: u64,
    sched: String,
    pub ng: String,
    pub ng_size: usize,
    /// Pods that already have events: incidents pick their victims elsewhere when they can,
    /// as a repeated message updates an Event object that belongs to another story.
    touched: HashSet<String>,
}

impl Cluster {
    pub fn new(opts: &SimulateOptions, mut rng: ChaCha8Rng) -> Self {
        let host = format!(
            "ip-172-16-{}-{}",
            rng.random_range(0..64),
            rng.random_range(2..250)
        );
        let mut c = Cluster {
            rv_base: rng.random_range(40_000_000..90_000_000),
            sched: format!("default-scheduler-{host}.eu-west-1.compute.internal"),
            ng: format!("eks-general-{}", uuid(&mut rng)),
            rng: RefCell::new(rng),
            catalogue: catalogue::load(),
            occs: Vec::new(),
            labels: Vec::new(),
            start: opts.start,
            end: opts.start + opts.duration,
            nodes: Vec::new(),
            work: Vec::new(),
            ng_size: opts.nodes as usize,
            touched: HashSet::new(),
        };
        for _ in 0..opts.nodes.max(1) {
            c.add_node(opts.start - Duration::days(3));
        }
        for (ns, name) in DAEMONS.split_whitespace().filter_map(|d| d.split_once('/')) {
            let image = format!("{EKS}/{name}:v1.{}.{}", c.r(2, 9), c.r(0, 9));
            c.add_work(Kind::Ds, ns, name, image, 0);
        }
        let mut left = (opts.healthy_pods as usize).saturating_sub(5 * c.nodes.len());
        for round in 1..20 {
            for (ns, app) in APPS.split_whitespace().filter_map(|a| a.split_once('/')) {
                if left == 0 || (round > 1 && SYSTEM.contains(&ns)) {
                    continue;
                }
                let (app, sts) = (app.trim_end_matches('*'), app.ends_with('*'));
                let name = if round > 1 {
                    format!("{app}-{round}")
                } else {
                    app.into()
                };
                let n = if sts { 3 } else { c.r(3, 14) as usize };
                let n = if app == "coredns" { 2 } else { n.min(left) };
                left = left.saturating_sub(n);
                let kind = if sts { Kind::Sts } else { Kind::Deploy };
                let repo = if ns == "kube-system" {
                    EKS.into()
                } else {
                    format!("{REGISTRY}/{ns}")
                };
                let image = format!("{repo}/{app}:1.{}.{}", c.r(0, 30), c.r(0, 9));
                c.add_work(kind, ns, &name, image, n);
            }
        }
        c
    }

    // ---- randomness and objects ----------------------------------------------------------

    pub fn r(&self, lo: i64, hi: i64) -> i64 {
        self.rng.borrow_mut().random_range(lo..=hi.max(lo))
    }

    /// A random duration of `lo..=hi` milliseconds.
    pub fn ms(&self, lo: i64, hi: i64) -> Duration {
        ms(self.r(lo, hi))
    }

    pub fn chance(&self, p: f64) -> bool {
        self.rng.borrow_mut().random_bool(p)
    }

    pub fn uuid(&self) -> String {
        uuid(&mut self.rng.borrow_mut())
    }

    pub fn sfx(&self, n: usize) -> String {
        suffix(&mut self.rng.borrow_mut(), n)
    }

    pub fn pick<T: Clone>(&self, xs: &[T]) -> Option<T> {
        xs.choose(&mut *self.rng.borrow_mut()).cloned()
    }

    pub fn shuffle<T>(&self, xs: &mut [T]) {
        xs.shuffle(&mut *self.rng.borrow_mut());
    }

    pub fn rng(&self) -> ChaCha8Rng {
        self.rng.borrow().clone()
    }

    /// The cluster's resourceVersion around `t`.
    pub fn rv_at(&self, t: Time) -> u64 {
        let since = (t - self.start).num_seconds();
        let before = since.min(0).unsigned_abs().min(self.rv_base / 2);
        self.rv_base + since.max(0) as u64 * 40 - before
    }

    pub fn obj(&self, kind: &'static str, ns: &str, name: &str, t: Time) -> ObjRef {
        let api_version = match kind {
            "Pod" | "PersistentVolumeClaim" => "v1",
            "Job" | "CronJob" => "batch/v1",
            "HorizontalPodAutoscaler" => "autoscaling/v2",
            "Certificate" | "CertificateRequest" => "cert-manager.io/v1",
            _ => "apps/v1",
        };
        let (namespace, name, uid) = (ns.to_string(), name.to_string(), self.uuid());
        let rv = self.rv_at(t) - self.r(1, 2000) as u64;
        ObjRef {
            kind,
            api_version,
            namespace,
            name,
            uid,
            rv,
        }
    }

    pub fn add_node(&mut self, up_from: Time) -> usize {
        let az = self.pick(&[10, 42, 77]).unwrap_or(10) + self.r(0, 31);
        let name = format!("ip-10-0-{az}-{}.eu-west-1.compute.internal", self.r(2, 254));
        let mut kref = self.obj("Node", "", &name, self.start);
        (kref.api_version, kref.uid, kref.rv) = ("", name.clone(), 0);
        let cref = ObjRef {
            api_version: "v1",
            uid: self.uuid(),
            ..kref.clone()
        };
        let down = vec![(self.start - Duration::days(30), up_from)];
        self.nodes.push(Node {
            name,
            kref,
            cref,
            down,
        });
        self.nodes.len() - 1
    }

    pub fn add_work(&mut self, kind: Kind, ns: &str, name: &str, image: String, n: usize) -> usize {
        let t = self.start - Duration::days(2);
        let k = match kind {
            Kind::Deploy => "Deployment",
            Kind::Sts => "StatefulSet",
            Kind::Ds => "DaemonSet",
            Kind::Job => "CronJob",
        };
        let obj = self.obj(k, ns, name, t);
        let rs = if kind == Kind::Deploy {
            self.new_rs(&obj, t)
        } else {
            obj.clone()
        };
        let c = name
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        let free = kind != Kind::Job;
        self.work.push(Work {
            kind,
            obj,
            rs,
            c,
            image,
            pods: Vec::new(),
            free,
        });
        let w = self.work.len() - 1;
        let n = if kind == Kind::Ds {
            self.nodes.len()
        } else {
            n
        };
        for k in 0..n {
            let node = if kind == Kind::Ds {
                k
            } else {
                self.pick_node(t, Place::Any)
            };
            let name = (kind == Kind::Sts).then(|| format!("{name}-{k}"));
            let pod = self.new_pod(w, node, t, name);
            self.work[w].pods.push(pod);
        }
        w
    }

    pub fn new_rs(&self, owner: &ObjRef, t: Time) -> ObjRef {
        let name = format!("{}-{}", owner.name, self.sfx(self.r(8, 10) as usize));
        self.obj("ReplicaSet", &owner.namespace, &name, t)
    }

    pub fn new_pod(&self, w: usize, node: usize, t: Time, name: Option<String>) -> Pod {
        let work = &self.work[w];
        let name = name.unwrap_or_else(|| format!("{}-{}", work.rs.name, self.sfx(5)));
        let obj = self.obj("Pod", &work.obj.namespace, &name, t);
        let ip = format!("10.0.{}.{}", self.r(1, 120), self.r(2, 254));
        Pod {
            obj,
            node,
            ip,
            c: work.c.clone(),
            image: work.image.clone(),
        }
    }

    /// Pods of `w` without events so far (all of them if there are none such).
    pub fn quiet(&self, w: usize) -> Vec<Pod> {
        let pods = &self.work[w].pods;
        let quiet = pods.iter().filter(|p| !self.touched.contains(&p.obj.uid));
        let quiet: Vec<Pod> = quiet.cloned().collect();
        if quiet.is_empty() {
            pods.clone()
        } else {
            quiet
        }
    }

    pub fn up(&self, n: usize, t: Time) -> bool {
        !self.nodes[n].down.iter().any(|&(a, b)| a <= t && t < b)
    }

    pub fn pick_node(&self, t: Time, place: Place) -> usize {
        let ok = |&n: &usize| self.up(n, t) && !matches!(place, Place::Avoid(a) if a == n);
        let ok: Vec<usize> = (0..self.nodes.len()).filter(ok).collect();
        match place {
            Place::On(n) => n,
            _ => self.pick(&ok).unwrap_or(0),
        }
    }

    /// A random free workload matching `f`, now taken.
    pub fn take(&mut self, f: impl Fn(&Work) -> bool) -> Option<usize> {
        let ok = |&i: &usize| self.work[i].free && f(&self.work[i]);
        let w = self.pick(&(0..self.work.len()).filter(ok).collect::<Vec<_>>())?;
        self.work[w].free = false;
        Some(w)
    }

    /// An application Deployment (not a system one) with a few pods.
    pub fn app(w: &Work) -> bool {
        let system = SYSTEM.contains(&w.obj.namespace.as_str());
        w.kind == Kind::Deploy && w.pods.len() >= 3 && !system
    }

    /// The workload's image with a newer tag.
    pub fn bump(&self, w: usize) -> String {
        let image = &self.work[w].image;
        let repo = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
        format!("{repo}:1.{}.{}", self.r(31, 60), self.r(0, 9))
    }

    /// Registers an incident of `kind`.
    pub fn inc(&mut self, kind: &'static str) -> T3 {
        let n = self.labels.iter().filter(|(_, k)| *k == kind).count() + 1;
        self.labels.push((format!("{kind}-{n}"), kind));
        let inc = Some((self.labels.len() - 1) as u16);
        let t = |role| Tag {
            inc,
            role,
            accept: false,
        };
        T3 {
            root: t(Role::RootCause),
            sym: t(Role::Symptom),
            ctx: t(Role::Context),
        }
    }

    /// (workload, pod index) of the pods on node `n`.
    pub fn pods_on(&self, n: usize) -> Vec<(usize, usize)> {
        let on = |(w, work): (usize, &Work)| {
            let pods = work.pods.iter().enumerate().filter(|(_, p)| p.node == n);
            pods.map(move |(i, _)| (w, i)).collect::<Vec<_>>()
        };
        self.work.iter().enumerate().flat_map(on).collect()
    }

    // ---- emitting ------------------------------------------------------------------------

    /// The catalogue's `key` event about `on`, `args` filling `$0`...
    pub fn ev<'a>(
        &mut self,
        at: Time,
        on: impl Into<On<'a>>,
        key: &str,
        args: &[&dyn Display],
        tag: Tag,
    ) {
        let e = self.catalogue[key];
        let local = matches!(e.component, "kubelet" | "kernel-monitor");
        let (obj, pod, node) = match on.into() {
            On::Obj(o) => (o.clone(), None, None),
            On::Pod(p) => (p.obj.clone(), Some(p), Some(p.node)),
            On::Node(n) if local => (self.nodes[n].kref.clone(), None, Some(n)),
            On::Node(n) => (self.nodes[n].cref.clone(), None, Some(n)),
        };
        let node_name = node.map(|n| self.nodes[n].name.clone());
        let var = |w: &str| match w {
            "ns" => Some(obj.namespace.clone()),
            "name" => Some(obj.name.clone()),
            "uid" => Some(obj.uid.clone()),
            "node" => node_name.clone(),
            "c" => pod.map(|p| p.c.clone()),
            "img" => pod.map(|p| p.image.clone()),
            "ip" => pod.map(|p| p.ip.clone()),
            _ => args.get(w.parse::<usize>().ok()?).map(|a| a.to_string()),
        };
        let component = catalogue::fill(e.component, var);
        let msg = catalogue::fill(e.message, var);
        let (mut at, mut host, mut action) = (at, String::new(), None);
        if e.component == "default-scheduler" {
            at += Duration::microseconds(self.r(0, 999));
            host = self.sched.clone();
            action = Some(if e.reason == "Scheduled" {
                "Binding"
            } else {
                "Scheduling"
            });
        } else if local {
            host = node_name.unwrap_or_default();
        }
        let pod_level = matches!(
            e.reason,
            "FailedMount" | "SandboxChanged" | "DNSConfigForming"
        );
        let field_path = match pod {
            Some(p) if local && !pod_level => format!("spec.containers{{{}}}", p.c),
            _ => String::new(),
        };
        if obj.kind == "Pod" {
            self.touched.insert(obj.uid.clone());
        }
        let (reason, warning) = (e.reason, e.warning);
        let o = Occ {
            at,
            obj,
            field_path,
            reason,
            msg,
            warning,
            component,
            host,
            action,
            tag,
        };
        self.occs.push(o);
    }

    // ---- pod lifecycles ------------------------------------------------------------------

    /// The kubelet pulls (or finds) the image and starts the container; returns when.
    pub fn run_pod(&mut self, at: Time, pod: &Pod, pull: bool, tag: Tag) -> Time {
        let mut t = at + self.ms(300, 1500);
        if pull {
            self.ev(t, pod, "pulling", &[], tag);
            let (d, size) = (self.r(400, 12_000), self.r(5_000_000, 300_000_000));
            t += ms(d);
            let (took, waited) = (go_ms(d), go_ms(d + self.r(0, 40)));
            self.ev(t, pod, "pulled", &[&took, &waited, &size], tag);
        } else {
            self.ev(t, pod, "present", &[], tag);
        }
        t += self.ms(30, 300);
        self.ev(t, pod, "created", &[], tag);
        t += self.ms(50, 800);
        self.ev(t, pod, "started", &[], tag);
        t
    }

    /// The workload's controller creates a pod and the scheduler binds it.
    pub fn create(&mut self, at: Time, w: usize, place: Place, tag: Tag) -> (Pod, Time) {
        let pod = self.new_pod(w, self.pick_node(at, place), at, None);
        let key = match self.work[w].kind {
            Kind::Ds => "ds-create",
            Kind::Job => "job-create",
            _ => "rs-create",
        };
        let owner = self.work[w].rs.clone();
        self.ev(at, &owner, key, &[&pod.obj.name], tag);
        let bound = at + self.ms(5, 400);
        self.ev(bound, &pod, "scheduled", &[], tag);
        (pod, bound)
    }

    /// [`Cluster::create`] then [`Cluster::run_pod`]; routine starts may fail one readiness probe.
    pub fn spawn(&mut self, at: Time, w: usize, place: Place, tag: Tag, pull: bool) -> Pod {
        let (pod, bound) = self.create(at, w, place, tag);
        let started = self.run_pod(bound, &pod, pull, tag);
        if tag.inc.is_none() && self.chance(0.12) {
            let port = self.pick(&[8080, 8000, 3000, 9090]).unwrap_or(80);
            let at = started + self.ms(1500, 8000);
            self.ev(at, &pod, "refused", &[&port], tag);
        }
        pod
    }

    /// Adds `n` started pods to `w`.
    pub fn grow(&mut self, at: Time, w: usize, n: usize, tag: Tag) {
        for _ in 0..n {
            let pod = self.spawn(at + self.ms(30, 600), w, Place::Any, tag, false);
            self.work[w].pods.push(pod);
        }
    }

    /// The ReplicaSet deletes `pod` and the kubelet stops it.
    pub fn delete(&mut self, at: Time, rs: &ObjRef, pod: &Pod, tag: Tag) {
        self.ev(at, rs, "rs-delete", &[&pod.obj.name], tag);
        self.ev(at + self.ms(100, 900), pod, "killing", &[], tag);
    }

    /// A container that keeps failing: BackOff while the kubelet waits (10 s doubling to 5 min
    /// after an immediate first restart), a restart when the wait is over. BackOff and probe
    /// kills are `t.sym`, restarts `t.ctx`. Returns the failures.
    pub fn crashloop(&mut self, pod: &Pod, from: Time, until: Time, lp: Loop, t: T3) -> Vec<Time> {
        let (mut at, mut backoff, mut fails) = (from, 0, Vec::new());
        while fails.len() < lp.2 {
            let fail = at + self.ms(lp.0.0 * 1000, lp.0.1 * 1000);
            if fail >= until {
                break;
            }
            if let Some(probe) = lp.1 {
                for k in (0..3).rev() {
                    self.ev(fail - s(10 * k), pod, "liveness", &[], probe);
                }
                self.ev(fail + ms(50), pod, "probe-kill", &[], t.sym);
            }
            fails.push(fail);
            if fails.len() >= lp.2 {
                break;
            }
            let restart = fail + s(backoff.max(1));
            let mut b = fail + self.ms(300, 2000);
            while backoff > 0 && b < restart.min(until) {
                self.ev(b, pod, "backoff", &[], t.sym);
                b += self.ms(9_000, 16_000);
            }
            if restart >= until {
                break;
            }
            at = self.run_pod(restart, pod, false, t.ctx);
            backoff = if backoff == 0 {
                10
            } else {
                (backoff * 2).min(300)
            };
        }
        fails
    }

    /// An image that cannot be pulled: attempts back off 10 s doubling to 5 min, and every pod
    /// sync in between reports the back-off.
    pub fn pull_fail(&mut self, pod: &Pod, from: Time, until: Time, why: &str, t: T3) {
        let (mut at, mut backoff) = (from, 10);
        while at < until {
            self.ev(at, pod, "pulling", &[], t.ctx);
            let f = at + self.ms(300, 2500);
            self.ev(f, pod, "pull-failed", &[&why], t.root);
            self.ev(f + ms(1), pod, "err-pull", &[], t.sym);
            let (next, mut b) = (f + s(backoff), f + self.ms(500, 2000));
            while b < next.min(until) {
                self.ev(b, pod, "pull-backoff", &[], t.sym);
                self.ev(b + ms(1), pod, "err-backoff", &[], t.sym);
                b += self.ms(9_000, 16_000);
            }
            (at, backoff) = (next, (backoff * 2).min(300));
        }
    }

    /// Readiness failing every probe period (10 s) from `from` to `until`.
    pub fn not_ready(&mut self, pod: &Pod, from: Time, until: Time, tag: Tag) {
        let mut t = from;
        while t < until {
            self.ev(t, pod, "not-ready", &[], tag);
            t += self.ms(9_900, 10_100);
        }
    }

    /// Times something is retried from `from`: after `first` ms, doubling up to `cap` ms.
    pub fn retries(&self, from: Time, until: Time, first: i64, cap: i64) -> Vec<Time> {
        let (mut t, mut d, mut out) = (from, first, Vec::new());
        while t < until {
            out.push(t);
            t += ms(d + self.r(0, 50));
            d = (d * 2).min(cap);
        }
        out
    }

    // ---- rollouts ------------------------------------------------------------------------

    /// The deployment controller scales ReplicaSet `rs` of workload `w`.
    pub fn scale(&mut self, at: Time, w: usize, rs: &str, from: usize, to: usize, tag: Tag) {
        let dir = if to > from { "up" } else { "down" };
        let dep = self.work[w].obj.clone();
        self.ev(at, &dep, "scale", &[&dir, &rs, &from, &to], tag);
    }

    /// A healthy rolling update (maxSurge 1, maxUnavailable 0).
    pub fn rollout_ok(&mut self, at: Time, w: usize, image: String, tag: Tag) {
        let (old_rs, new_rs) = (self.work[w].rs.clone(), self.new_rs(&self.work[w].obj, at));
        let old = std::mem::take(&mut self.work[w].pods);
        (self.work[w].rs, self.work[w].image) = (new_rs.clone(), image);
        let (n, mut t) = (old.len(), at);
        for (i, victim) in old.into_iter().enumerate() {
            self.scale(t, w, &new_rs.name, i, i + 1, tag);
            let pod = self.spawn(t + self.ms(10, 80), w, Place::Any, tag, true);
            self.work[w].pods.push(pod);
            t += self.ms(8_000, 25_000);
            self.scale(t, w, &old_rs.name, n - i, n - i - 1, tag);
            self.delete(t + self.ms(5, 60), &old_rs, &victim, tag);
        }
    }

    /// A rollout (maxSurge and maxUnavailable 25%) whose new pods will not become ready: they
    /// are created and bound (the first placed by `first`); how they fail is up to the caller.
    pub fn rollout_bad(&mut self, at: Time, w: usize, image: String, t: T3, first: Place) -> Bad {
        let (old_rs, new_rs) = (self.work[w].rs.clone(), self.new_rs(&self.work[w].obj, at));
        let old_image = std::mem::replace(&mut self.work[w].image, image);
        self.work[w].rs = new_rs.clone();
        let n = self.work[w].pods.len();
        let (surge, removed) = (n.div_ceil(4).max(1), n / 4);
        self.scale(at, w, &new_rs.name, 0, surge, t.root);
        let mut pods = vec![self.create(at + self.ms(10, 200), w, first, t.ctx)];
        for _ in 1..surge {
            pods.push(self.create(at + self.ms(10, 200), w, Place::Any, t.ctx));
        }
        if removed > 0 {
            let at = at + self.ms(100, 600);
            self.scale(at, w, &old_rs.name, n, n - removed, t.ctx);
            for victim in self.work[w].pods.drain(..removed).collect::<Vec<_>>() {
                self.delete(at + ms(20), &old_rs, &victim, t.ctx);
            }
            self.scale(at + ms(40), w, &new_rs.name, surge, surge + removed, t.ctx);
            for _ in 0..removed {
                pods.push(self.create(at + self.ms(60, 400), w, Place::Any, t.ctx));
            }
        }
        (self.work[w].rs, self.work[w].image) = (old_rs.clone(), old_image);
        Bad {
            old_rs,
            new_rs,
            pods,
            removed,
            replicas: n,
        }
    }

    /// `kubectl rollout undo`: the old ReplicaSet back to full size, the new one to zero.
    pub fn rollback(&mut self, at: Time, w: usize, bad: &Bad, ctx: Tag) {
        let (n, gone, old) = (bad.replicas, bad.removed, bad.old_rs.name.clone());
        self.scale(at, w, &old, n - gone, n, ctx);
        self.grow(at, w, gone, ctx);
        let t = at + self.ms(50, 400);
        self.scale(t, w, &bad.new_rs.name, bad.pods.len(), 0, ctx);
        for (pod, _) in &bad.pods {
            self.ev(t + ms(30), &bad.new_rs, "rs-delete", &[&pod.obj.name], ctx);
        }
    }

    /// A node's kubelet (re)starting; returns when the node is Ready.
    pub fn boot(&mut self, at: Time, n: usize, rebooted: bool, tag: Tag) -> Time {
        self.ev(at, On::Node(n), "starting", &[], tag);
        if rebooted {
            self.ev(at + ms(40), On::Node(n), "rebooted", &[&self.uuid()], tag);
        }
        for key in ["memory", "disk", "pid"] {
            self.ev(at + self.ms(200, 900), On::Node(n), key, &[], tag);
        }
        self.ev(
            at + self.ms(1000, 2000),
            On::Node(n),
            "allocatable",
            &[],
            tag,
        );
        let ready = at + self.ms(8000, 30_000);
        self.ev(ready, On::Node(n), "ready", &[], tag);
        ready
    }

    // ---- noise ---------------------------------------------------------------------------

    /// CronJobs every 5 to 60 minutes: job, pod lifecycle, completion, history cleanup.
    pub fn cronjobs(&mut self) {
        let noise = Tag::NOISE;
        for job in CRONJOBS.split_whitespace() {
            let f: Vec<&str> = job.split('/').collect();
            let (ns, name, every) = (f[0], f[1], f[2].parse::<i64>().unwrap_or(10));
            let image = format!("{REGISTRY}/{ns}/{name}:2.{}.{}", self.r(0, 9), self.r(0, 9));
            let w = self.add_work(Kind::Job, ns, name, image, 0);
            let cj = self.work[w].obj.clone();
            let minute = self.start.timestamp() / 60;
            let first = minute - minute % every;
            let mut history: Vec<i64> = (1..=3).map(|k| first - k * every).collect();
            let mut t = self.start + s((every - minute % every) * 60);
            while t < self.end {
                let job = format!("{name}-{}", t.timestamp() / 60);
                let jref = self.obj("Job", ns, &job, t);
                self.work[w].rs = jref.clone();
                self.ev(t + ms(50), &cj, "cj-create", &[&job], noise);
                let (pod, bound) = self.create(t + self.ms(80, 900), w, Place::Any, noise);
                let done = self.run_pod(bound, &pod, false, noise) + s(self.r(5, 90));
                self.ev(done, &jref, "job-done", &[], noise);
                let seen = done + s(self.r(1, 10));
                self.ev(seen, &cj, "cj-seen", &[&job, &"Complete"], noise);
                history.push(t.timestamp() / 60);
                let old = format!("{name}-{}", history.remove(0));
                self.ev(seen + ms(20), &cj, "cj-delete", &[&old], noise);
                t += s(every * 60);
            }
        }
    }

    /// A node with too many nameservers in resolv.conf: its pods warn on syncs.
    pub fn dns_config(&mut self) {
        let n = self.r(0, self.nodes.len() as i64 - 1) as usize;
        for (w, i) in self.pods_on(n).into_iter().take(8) {
            let pod = self.work[w].pods[i].clone();
            let mut t = self.start + s(self.r(0, 300));
            while t < self.end {
                self.ev(t, &pod, "dns-config", &[], Tag::NOISE);
                t += s(self.r(60, 400));
            }
        }
    }

    /// The HPA scales a Deployment up under load and back down later.
    pub fn hpa_noise(&mut self, at: Time) {
        let Some(w) = self.take(Self::app) else {
            return;
        };
        let (rs, hpa, noise) = (self.work[w].rs.clone(), self.hpa(w), Tag::NOISE);
        let from = self.work[w].pods.len();
        let to = from + self.r(2, 5) as usize;
        self.rescale(at, &hpa, to, noise);
        self.scale(at + ms(40), w, &rs.name, from, to, noise);
        self.grow(at + ms(60), w, to - from, noise);
        self.metrics_warnings(at + s(self.r(15, 30)), &hpa);
        let down = at + s(self.r(900, 2400));
        let why = "All metrics below target";
        self.ev(down, &hpa, "rescale", &[&from, &why], noise);
        self.scale(down + ms(40), w, &rs.name, to, from, noise);
        for pod in self.work[w].pods.split_off(from) {
            self.delete(down + self.ms(60, 200), &rs, &pod, noise);
        }
    }

    /// The HorizontalPodAutoscaler of workload `w`.
    pub fn hpa(&self, w: usize) -> ObjRef {
        let (d, kind) = (&self.work[w].obj, "HorizontalPodAutoscaler");
        self.obj(kind, &d.namespace, &d.name, self.start - Duration::days(20))
    }

    pub fn rescale(&mut self, at: Time, hpa: &ObjRef, to: usize, tag: Tag) {
        let why = "cpu resource utilization (percentage of request) above target";
        self.ev(at, hpa, "rescale", &[&to, &why], tag);
    }

    /// The HPA cannot read metrics of pods that just started: benign, always noise.
    pub fn metrics_warnings(&mut self, at: Time, hpa: &ObjRef) {
        for k in 0..self.r(1, 4) {
            self.ev(at + s(15 * k), hpa, "no-metric", &[], Tag::NOISE);
            self.ev(at + s(15 * k) + ms(2), hpa, "no-replicas", &[], Tag::NOISE);
        }
    }

    /// cert-manager renewing a Certificate; with `fail` = (tag, why), the ACME order errors.
    pub fn renewal(&mut self, at: Time, ns: &str, name: &str, fail: Option<(Tag, &str)>, tag: Tag) {
        let cert = self.obj("Certificate", ns, name, at - Duration::days(60));
        let cr = format!("{name}-{}", self.r(2, 40));
        let cr = self.obj("CertificateRequest", ns, &cr, at);
        let due = at - Duration::days(self.r(0, 20));
        let due = due.format("%Y-%m-%d %H:%M:%S +0000 UTC");
        self.ev(at, &cert, "cm-renew", &[&due], tag);
        self.ev(at + ms(30), &cert, "cm-reuse", &[], tag);
        self.ev(at + ms(60), &cert, "cm-request", &[&cr.name], tag);
        for issuer in ["ca", "venafi", "acme", "selfsigned", "vault"] {
            self.ev(at + self.ms(70, 120), &cr, "cm-wait", &[&issuer], tag);
        }
        self.ev(at + ms(150), &cr, "cm-approved", &[], tag);
        let order = format!("{}-{}", cr.name, self.r(1 << 30, 1 << 32));
        self.ev(at + ms(300), &cr, "cm-order", &[&order], tag);
        let done = at + s(self.r(20, 90));
        match fail {
            Some((root, why)) => self.ev(done, &cert, "cm-failed", &[&order, &why], root),
            None => {
                self.ev(done, &cr, "cm-issued", &[], tag);
                self.ev(done + ms(80), &cert, "cm-done", &[], tag);
            }
        }
    }
}

/// Go's `time.Duration` printing at the kubelet's millisecond rounding: `660ms`, `4.01s`.
fn go_ms(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = format!("{:.3}", ms as f64 / 1000.0);
    format!("{}s", secs.trim_end_matches('0').trim_end_matches('.'))
}
