//! The incidents, with the truth written as they happen, and the plan of a simulated window.
//!
//! Each incident kind in [`super::KINDS`] is told the way the components involved report it,
//! with variants picked by the seed, over the routine noise of `world`. Roles follow one rule:
//! root causes are what an operator would name as the cause (several can be acceptable, e.g.
//! a rollout and its first failure), symptoms are the failure signals it produced, context is
//! the story around them (the change, progress of the failing pods, replacements, recovery).

use std::fmt::Display;

use chrono::Duration;
use rand_chacha::ChaCha8Rng;

use super::SimulateOptions;
use super::cluster::{ObjRef, Occ, Tag, Time};
use super::world::{Cluster, Kind, Loop, On, Place, REGISTRY, s};

/// What [`run`] hands to the recorders.
pub(super) struct World {
    pub occs: Vec<Occ>,
    /// (label, kind) per incident index.
    pub labels: Vec<(String, &'static str)>,
    pub rv_base: u64,
}

/// Builds the cluster and plays noise and 7 to 10 seed-picked incidents over the window.
pub(super) fn run(opts: &SimulateOptions, rng: &mut ChaCha8Rng) -> World {
    let mut c = Cluster::new(opts, rng.clone());
    let span = opts.duration.num_seconds().max(600);
    let scale = f64::from(opts.healthy_pods) / 480.0 * span as f64 / 3600.0;
    let at = |c: &Cluster, lo: i64, hi: i64| c.start + s(c.r(span * lo / 100, span * hi / 100));
    let mut kinds: Vec<&'static str> = super::KINDS.to_vec();
    kinds.retain(|k| *k != "crash-loop");
    c.shuffle(&mut kinds);
    // (when, what): an incident kind, or "" for a rollout, "hpa", "cert" for noise.
    let mut plan: Vec<(Time, &'static str)> = Vec::new();
    for kind in kinds.into_iter().take(c.r(7, 10) as usize) {
        plan.push((at(&c, 5, 65), kind));
    }
    for _ in 0..((4.0 * scale).round() as usize).max(1) {
        plan.push((at(&c, 0, 90), ""));
    }
    for _ in 0..((2.0 * scale).round() as usize).max(1) {
        plan.push((at(&c, 0, 70), "hpa"));
    }
    plan.push((at(&c, 0, 90), "cert"));
    plan.sort_by_key(|p| p.0);
    c.cronjobs();
    if c.chance(0.6) {
        c.dns_config();
    }
    for (t, what) in plan {
        let _ = c.play(what, t);
    }
    // Nothing on a node that is down writes anything.
    let nodes = &c.nodes;
    let down = |o: &Occ| {
        let node = nodes.iter().find(|n| n.name == o.host);
        node.is_some_and(|n| n.down.iter().any(|&(a, b)| a <= o.at && o.at < b))
    };
    c.occs
        .retain(|o| !(matches!(o.component.as_str(), "kubelet" | "kernel-monitor") && down(o)));
    *rng = c.rng();
    World {
        occs: c.occs,
        labels: c.labels,
        rv_base: c.rv_base,
    }
}

impl Cluster {
    fn play(&mut self, what: &str, at: Time) -> Option<()> {
        match what {
            "" => {
                let w = self.take(|x| x.kind == Kind::Deploy && !x.pods.is_empty())?;
                self.rollout_ok(at, w, self.bump(w), Tag::NOISE);
                self.work[w].free = true;
            }
            "hpa" => self.hpa_noise(at),
            "cert" => {
                let ns = self.pick(&["shop", "web", "auth"])?;
                self.renewal(at, ns, &format!("{ns}-ingress-tls"), None, Tag::NOISE);
            }
            "crashloop-rollout" => self.crashloop_rollout(at)?,
            "volume-attach" => self.volume(at)?,
            "node-lost" => self.node_lost(at)?,
            "image-typo" => self.image_typo(at)?,
            "oom-kill" => self.oom(at)?,
            "missing-secret" => self.missing_secret(at)?,
            "unschedulable-autoscale" => self.unschedulable(at)?,
            "dns-failure" => self.dns(at)?,
            "cert-expired" => self.cert_expired(at)?,
            "drain-blocked" => self.drain_blocked(at)?,
            "job-failed" => self.job_failed(at),
            _ => self.quota(at)?,
        }
        Some(())
    }

    /// A rollout whose new pods crash (or fail liveness); often rolled back.
    fn crashloop_rollout(&mut self, t0: Time) -> Option<()> {
        let w = self.take(Self::app)?;
        let t = self.inc("crashloop-rollout");
        let bad = self.rollout_bad(t0, w, self.bump(w), t, Place::Any);
        let probe = self.chance(0.4).then_some(t.sym);
        let run = if probe.is_some() { (25, 60) } else { (1, 15) };
        let lp = Loop(run, probe, usize::MAX);
        let undo = self.chance(0.7).then(|| t0 + s(self.r(480, 1500)));
        for (pod, bound) in &bad.pods {
            let started = self.run_pod(*bound, pod, true, t.ctx);
            self.crashloop(pod, started, undo.unwrap_or(self.end), lp, t);
        }
        undo.map(|at| self.rollback(at, w, &bad, t.ctx))
    }

    /// A volume that never attaches: a new StatefulSet's fresh volume, or a rescheduled pod's
    /// volume still attached to its old node. Its clients fail liveness and restart.
    fn volume(&mut self, t0: Time) -> Option<()> {
        let multi = self.chance(0.5);
        let sts = |w: &super::world::Work| w.kind == Kind::Sts && !w.pods.is_empty();
        let old = if multi { Some(self.take(sts)?) } else { None };
        let (t, pv) = (self.inc("volume-attach"), format!("pvc-{}", self.uuid()));
        let (pod, from) = if let Some(w) = old {
            let (set, old) = (self.work[w].obj.clone(), self.work[w].pods[0].clone());
            self.ev(t0, &set, "sts-delete", &[&old.obj.name], t.ctx.accepted());
            self.ev(t0 + self.ms(100, 600), &old, "killing", &[], t.ctx);
            let at = t0 + s(self.r(10, 30));
            let node = self.pick_node(at, Place::Avoid(old.node));
            let pod = self.new_pod(w, node, at, Some(old.obj.name.clone()));
            self.work[w].pods[0] = pod.clone();
            self.ev(at, &set, "sts-create", &[&pod.obj.name], t.ctx);
            self.ev(at + self.ms(100, 500), &pod, "scheduled", &[], t.ctx);
            (pod, at)
        } else {
            let ns = self.pick(&["data", "search", "analytics"])?;
            let name = self.pick(&["elasticsearch", "clickhouse", "rabbitmq"])?;
            let image = format!("{REGISTRY}/{ns}/{name}:3.{}.0", self.r(0, 12));
            let w = self.add_work(Kind::Sts, ns, name, image, 0);
            self.work[w].free = false;
            let (set, node) = (self.work[w].obj.clone(), self.pick_node(t0, Place::Any));
            let pod = self.new_pod(w, node, t0, Some(format!("{name}-0")));
            let pvc = self.obj("PersistentVolumeClaim", ns, &format!("data-{name}-0"), t0);
            self.ev(t0, &set, "sts-claim", &[&pvc.name, &pod.obj.name], t.ctx);
            self.ev(t0, &set, "sts-create", &[&pod.obj.name], t.ctx);
            self.ev(t0, &pvc, "pvc-wait", &[], t.ctx);
            self.ev(t0 + self.ms(300, 900), &pod, "scheduled", &[], t.ctx);
            self.ev(t0 + s(1), &pvc, "pvc-external", &[], t.ctx);
            let csi = format!("ebs.csi.aws.com_ebs-csi-controller-{}", self.sfx(9));
            let csi = format!("{csi}-{}_{}", self.sfx(5), self.uuid());
            self.ev(t0 + s(1), &pvc, "provisioning", &[&csi], t.ctx);
            let done = t0 + s(self.r(3, 9));
            self.ev(done, &pvc, "provisioned", &[&csi, &pv], t.ctx);
            (pod, done)
        };
        let (key, gap) = if multi {
            ("multi-attach", (15, 40))
        } else {
            ("attach-failed", (122, 140))
        };
        let mut at = from + if multi { s(1) } else { s(self.r(100, 125)) };
        while at < self.end {
            self.ev(at, &pod.obj, key, &[&pv], t.root);
            at += s(self.r(gap.0, gap.1));
        }
        for at in self.retries(from + s(122), self.end, 122_000, 135_000) {
            let tag = t.sym.accepted();
            self.ev(at, &pod, "mount-timeout", &[&"data", &"data"], tag);
        }
        let w = self.take(Self::app)?;
        let lp = Loop((20, 60), Some(t.sym), usize::MAX);
        let from = from + s(self.r(30, 90));
        for pod in self.quiet(w).into_iter().take(4) {
            self.crashloop(&pod, from + self.ms(0, 5000), self.end, lp, t);
        }
        Some(())
    }

    /// A node stops responding: NotReady, its pods evicted after 5 minutes and replaced
    /// elsewhere; it reboots and comes back, or the cloud provider deletes it.
    fn node_lost(&mut self, t0: Time) -> Option<()> {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.up(n, t0)).collect();
        let n = self.pick(&up)?;
        let t = self.inc("node-lost");
        let back = self.chance(0.6).then(|| t0 + s(self.r(600, 2400)));
        self.nodes[n]
            .down
            .push((t0, back.unwrap_or(self.end + Duration::days(1))));
        let nr = t0 + s(self.r(40, 50));
        self.ev(nr, On::Node(n), "node-not-ready", &[], t.root);
        for (w, i) in self.pods_on(n) {
            let pod = self.work[w].pods[i].obj.clone();
            self.ev(nr + self.ms(5, 900), &pod, "pod-not-ready", &[], t.sym);
        }
        for (w, i) in self.pods_on(n) {
            if self.work[w].kind == Kind::Ds {
                continue;
            }
            // The taint manager's reference has no uid.
            let p = ObjRef {
                uid: String::new(),
                rv: 0,
                ..self.work[w].pods[i].obj.clone()
            };
            let at = nr + s(300) + self.ms(0, 400);
            self.ev(at, &p, "taint", &[], t.sym);
            if self.work[w].kind == Kind::Deploy {
                let (at, pull) = (at + self.ms(200, 1500), self.chance(0.4));
                self.work[w].pods[i] = self.spawn(at, w, Place::Avoid(n), t.ctx, pull);
            }
        }
        let Some(at) = back else {
            let at = t0 + s(self.r(900, 1500));
            self.ev(at, On::Node(n), "deleting", &[], t.ctx);
            self.ev(at + s(self.r(1, 20)), On::Node(n), "removing", &[], t.ctx);
            return Some(());
        };
        let ready = self.boot(at, n, true, t.ctx);
        for (w, i) in self.pods_on(n) {
            let (pod, at) = (self.work[w].pods[i].clone(), ready + self.ms(500, 3000));
            if self.work[w].kind == Kind::Sts {
                // Its pods were deleted meanwhile: the StatefulSet recreates them.
                let set = self.work[w].obj.clone();
                self.ev(at, &set, "sts-create", &[&pod.obj.name], t.ctx);
                self.ev(at + self.ms(50, 300), &pod, "scheduled", &[], t.ctx);
            } else {
                self.ev(at, &pod, "sandbox", &[], t.ctx);
            }
            self.run_pod(at + s(1), &pod, false, t.ctx);
        }
        Some(())
    }

    /// A rollout to an image that does not exist (a tag or a repository typo).
    fn image_typo(&mut self, t0: Time) -> Option<()> {
        let w = self.take(Self::app)?;
        let t = self.inc("image-typo");
        let good = self.bump(w);
        let (repo, tag) = good.rsplit_once(':')?;
        let bad = if self.chance(0.6) {
            format!("{repo}:{}", tag.replacen('.', "", 1))
        } else {
            format!("{repo}-{}:{tag}", self.pick(&["svc", "app", "server"])?)
        };
        let why = if bad.contains(&format!("{repo}:")) {
            "rpc error: code = NotFound desc = failed to pull and unpack image \"$\": failed to \
             resolve reference \"$\": $: not found"
        } else {
            "rpc error: code = Unknown desc = failed to pull and unpack image \"$\": failed to \
             resolve reference \"$\": pull access denied, repository does not exist or may \
             require authorization: server message: insufficient_scope: authorization failed"
        };
        let why = why.replace('$', &bad);
        let rollout = self.rollout_bad(t0, w, bad, t.root(t.ctx.accepted()), Place::Any);
        let undo = self.chance(0.7).then(|| t0 + s(self.r(360, 1500)));
        for (pod, bound) in &rollout.pods {
            let from = *bound + self.ms(200, 900);
            self.pull_fail(pod, from, undo.unwrap_or(self.end), &why, t);
        }
        undo.map(|at| self.rollback(at, w, &rollout, t.ctx))
    }

    /// One workload's pods OOM-killed over and over on several nodes (container limits, or the
    /// whole node out of memory), maybe fixed by a rollout with more memory.
    fn oom(&mut self, t0: Time) -> Option<()> {
        let w = self.take(Self::app)?;
        let t = self.inc("oom-kill");
        let proc = self.pick(&["java", "node", "python3", "ruby", "envoy"])?;
        let system = self.chance(0.3);
        let fix = self.chance(0.4).then(|| t0 + s(self.r(1200, 2400)));
        let head = ["Memory cgroup out of memory", "Out of memory"][usize::from(system)];
        let mut pods = self.quiet(w);
        pods.sort_by_key(|p| p.node);
        pods.dedup_by_key(|p| p.node);
        pods.truncate(self.r(2, 4) as usize);
        for (i, pod) in pods.iter().enumerate() {
            let from = t0 + s(i as i64 * self.r(20, 120));
            let lp = Loop((40, 240), None, usize::MAX);
            for fail in self.crashloop(pod, from, fix.unwrap_or(self.end), lp, t) {
                let (pid, vm, rss) = (
                    self.r(1000, 99_999),
                    self.r(2, 9) << 20,
                    self.r(5, 20) << 17,
                );
                let (file, pg, adj) = (self.r(100, 30_000), self.r(1000, 9000), self.r(900, 999));
                let at = fail - self.ms(100, 900);
                let node = On::Node(pod.node);
                let args = [
                    &head as &dyn Display,
                    &pid,
                    &proc,
                    &vm,
                    &rss,
                    &file,
                    &1000,
                    &pg,
                    &adj,
                ];
                self.ev(at, node, "oom", &args, t.root);
                if system {
                    self.ev(at, node, "system-oom", &[&proc, &pid], t.root);
                }
            }
        }
        fix.map(|at| self.rollout_ok(at, w, self.bump(w), t.ctx))
    }

    /// A rollout mounting a Secret nobody created, and at the same moment on the same node an
    /// unrelated container starts crashing: two incidents.
    fn missing_secret(&mut self, t0: Time) -> Option<()> {
        let (w1, w2) = (self.take(Self::app)?, self.take(Self::app)?);
        let (a, b) = (self.inc("missing-secret"), self.inc("crash-loop"));
        let victim = self.pick(&self.quiet(w2))?;
        let at = t0 + s(self.r(-20, 20));
        let bad = self.rollout_bad(
            at,
            w1,
            self.bump(w1),
            a.root(a.ctx.accepted()),
            Place::On(victim.node),
        );
        let vol = self.pick(&["credentials", "db-secret"])?;
        let secret = format!("{}-{vol}", self.work[w1].c);
        let fix = self.chance(0.6).then(|| t0 + s(self.r(600, 1800)));
        for (pod, bound) in &bad.pods {
            let until = fix.unwrap_or(self.end);
            for at in self.retries(*bound + self.ms(300, 900), until, 500, 122_000) {
                self.ev(at, pod, "no-secret", &[&vol, &secret], a.root);
            }
            for at in self.retries(*bound + s(122), until, 122_000, 135_000) {
                self.ev(at, pod, "mount-timeout", &[&vol, &""], a.sym);
            }
            if let Some(at) = fix {
                self.run_pod(at + s(self.r(1, 60)), pod, true, a.ctx);
            }
        }
        let probe = self.chance(0.5).then_some(b.root);
        let lp = Loop(
            if probe.is_some() { (30, 90) } else { (2, 30) },
            probe,
            usize::MAX,
        );
        // Without a probe, the first BackOff is the first sign of it: a root cause.
        let b = if probe.is_some() { b } else { b.sym(b.root) };
        let (from, stop) = (t0 + s(self.r(-30, 30)), t0 + s(self.r(900, 2700)));
        self.crashloop(&victim, from, stop, lp, b);
        Some(())
    }

    /// The HPA scales up beyond capacity: pods pending until the cluster autoscaler's new nodes
    /// are Ready, or for good when the node group is at its maximum.
    fn unschedulable(&mut self, t0: Time) -> Option<()> {
        let w = self.take(Self::app)?;
        let t = self.inc("unschedulable-autoscale");
        let (rs, hpa) = (self.work[w].rs.clone(), self.hpa(w));
        let from = self.work[w].pods.len();
        let (to, fit) = (from + self.r(5, 10) as usize, self.r(0, 2) as usize);
        self.rescale(t0, &hpa, to, t.root);
        self.scale(t0, w, &rs.name, from, to, t.ctx.accepted());
        self.grow(t0, w, fit, t.ctx);
        let mut pending = Vec::new();
        for _ in fit..to - from {
            let at = t0 + self.ms(60, 600);
            let pod = self.new_pod(w, 0, at, None);
            self.ev(at, &rs, "rs-create", &[&pod.obj.name], t.ctx);
            pending.push((pod, at));
        }
        self.metrics_warnings(t0 + s(self.r(15, 40)), &hpa);
        let (size, room, capped) = (self.ng_size, self.r(2, 8) as usize, self.chance(0.3));
        let add = pending.len().div_ceil(3).clamp(1, 3).min(room);
        let max = size + if capped { add } else { room };
        let stuck = if capped { self.r(1, 2) as usize } else { 0 };
        let nodes = (0..self.nodes.len()).filter(|&n| self.up(n, t0)).count() as i64;
        let (join, mut new_nodes, mut ready) = (t0 + s(self.r(70, 120)), Vec::new(), self.end);
        for k in 0..add as i64 {
            let j = join + s(self.r(0, 20) + k);
            let n = self.add_node(j - s(5));
            self.ev(j, On::Node(n), "registered", &[], t.ctx);
            ready = ready.min(self.boot(j - s(3), n, false, t.ctx));
            let daemons = (0..self.work.len()).filter(|&d| self.work[d].kind == Kind::Ds);
            for d in daemons.collect::<Vec<_>>() {
                let pod = self.spawn(j + s(self.r(1, 4)), d, Place::On(n), t.ctx, true);
                self.work[d].pods.push(pod);
            }
            new_nodes.push(n);
        }
        self.ng_size += add;
        let ng = self.ng.clone();
        for (k, (mut pod, created)) in pending.into_iter().enumerate() {
            // The first `stuck` pods stay pending: the group is at its maximum.
            let stays = k < stuck && k + 1 < to - from - fit;
            let until = if stays {
                self.end
            } else {
                ready + self.ms(500, 3000)
            };
            let (mut at, cpu) = (created + self.ms(20, 200), self.r(nodes / 2, nodes));
            let mem = [
                String::new(),
                format!(", {} Insufficient memory", nodes - cpu),
            ];
            let mem = &mem[usize::from(cpu < nodes)];
            while at < until {
                self.ev(at, &pod, "unschedulable", &[&nodes, &cpu, mem], t.sym);
                at += s(if stays {
                    self.r(30, 300)
                } else {
                    self.r(5, 40)
                });
            }
            let mut at = created + s(self.r(8, 15));
            while stays && at < self.end {
                self.ev(at, &pod.obj, "no-scale-up", &[], t.sym);
                at += s(self.r(10, 30));
            }
            if !stays {
                let args = [&ng as &dyn Display, &size, &(size + add), &max];
                self.ev(at, &pod.obj, "scale-up", &args, t.ctx);
                pod.node = new_nodes[k % new_nodes.len()];
                self.ev(until, &pod, "scheduled", &[], t.ctx);
                self.run_pod(until, &pod, true, t.ctx);
                self.work[w].pods.push(pod);
            }
        }
        Some(())
    }

    /// CoreDNS down (OOM-killed under a query storm, or not ready), and everything whose
    /// readiness needs name resolution failing with it.
    fn dns(&mut self, t0: Time) -> Option<()> {
        let w = self.take(|w| w.obj.name == "coredns")?;
        let t = self.inc("dns-failure");
        let (fix, oom) = (t0 + s(self.r(480, 1500)), self.chance(0.5));
        for pod in self.work[w].pods.clone() {
            if !oom {
                self.not_ready(&pod, t0 + s(self.r(0, 10)), fix, t.root);
                continue;
            }
            let lp = Loop((20, 90), None, usize::MAX);
            for fail in self.crashloop(&pod, t0 + s(self.r(0, 20)), fix, lp, t) {
                let (pid, rss, pg) = (
                    self.r(1000, 99_999),
                    self.r(170_000, 175_000),
                    self.r(500, 900),
                );
                let head = "Memory cgroup out of memory";
                let args = [
                    &head as &dyn Display,
                    &pid,
                    &"coredns",
                    &812_340,
                    &rss,
                    &0,
                    &0,
                    &pg,
                    &999,
                ];
                let at = fail - self.ms(100, 500);
                self.ev(at, On::Node(pod.node), "oom", &args, t.root);
            }
        }
        for _ in 0..self.r(3, 5) {
            let Some(a) = self.take(Self::app) else { break };
            for pod in self.quiet(a).into_iter().take(3) {
                let from = t0 + s(self.r(20, 90));
                if self.chance(0.3) {
                    let lp = Loop((20, 40), Some(t.sym), usize::MAX);
                    self.crashloop(&pod, from, fix, lp, t);
                } else {
                    self.not_ready(&pod, from, fix + s(self.r(5, 30)), t.sym);
                }
            }
        }
        oom.then(|| self.rollout_ok(fix, w, self.bump(w), t.ctx))
    }

    /// cert-manager fails to renew a webhook's serving certificate; once it has expired,
    /// creating pods behind the webhook fails until someone fixes it.
    fn cert_expired(&mut self, t0: Time) -> Option<()> {
        let w = self.take(Self::app)?;
        let t = self.inc("cert-expired");
        let why = if self.chance(0.5) {
            let after = (t0 + Duration::days(2)).format("%Y-%m-%d %H:%M:%S UTC");
            format!(
                "Failed to create Order: 429 urn:ietf:params:acme:error:rateLimited: too many \
                 certificates (5) already issued for this exact set of domains in the last \
                 168h0m0s, retry after {after}: see https://letsencrypt.org/docs/rate-limits/"
            )
        } else {
            "Failed to finalize Order: 400 urn:ietf:params:acme:error:dns: DNS problem: NXDOMAIN \
             looking up TXT for _acme-challenge.hooks.example.com - check that a DNS record \
             exists for this domain"
                .into()
        };
        let cert = "pod-policy-webhook-tls";
        self.renewal(t0, "platform", cert, Some((t.root, &why)), t.ctx);
        let expiry = t0 + s(self.r(180, 900));
        let fix = self.chance(0.6).then(|| expiry + s(self.r(900, 2400)));
        let exp = expiry.format("%Y-%m-%dT%H:%M:%SZ");
        for u in [Some(w), self.take(Self::app)].into_iter().flatten() {
            let at = expiry + s(self.r(60, 900));
            let rs = self.new_rs(&self.work[u].obj, at);
            self.scale(at, u, &rs.name, 0, 1, t.ctx);
            let until = fix.unwrap_or(self.end);
            for at in self.retries(at + self.ms(100, 900), until, 5, 1_000_000) {
                let m = format!(
                    "Internal error occurred: failed calling webhook \
                     \"validate.pod-policy.platform.example.io\": failed to call webhook: Post \
                     \"https://pod-policy-webhook.platform.svc:443/validate?timeout=10s\": tls: \
                     failed to verify certificate: x509: certificate has expired or is not yet \
                     valid: current time {} is after {exp}",
                    at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                self.ev(at, &rs, "rs-failed", &[&m], t.sym);
            }
            if let Some(at) = fix {
                self.work[u].rs = rs;
                let pod = self.spawn(at + s(self.r(5, 60)), u, Place::Any, t.ctx, true);
                self.work[u].pods.push(pod);
            }
        }
        fix.map(|at| self.renewal(at, "platform", cert, None, t.ctx))
    }

    /// A drain a PodDisruptionBudget blocks: the cluster autoscaler's scale-down retried every
    /// 13 to 20 minutes, or a cordon and `kubectl drain` that hangs until someone uncordons.
    fn drain_blocked(&mut self, t0: Time) -> Option<()> {
        let movable = |c: &Self, n| -> Vec<(usize, usize)> {
            let on = c.pods_on(n).into_iter();
            on.filter(|&(w, _)| c.work[w].kind != Kind::Ds).collect()
        };
        // The autoscaler leaves nodes running kube-system pods alone (its default).
        let system = |c: &Self, n| {
            let ns = |&(w, _): &(usize, usize)| c.work[w].obj.namespace == "kube-system";
            movable(c, n).iter().any(ns)
        };
        let ok = |&n: &usize| self.up(n, t0) && !movable(self, n).is_empty() && !system(self, n);
        let n = self.pick(&(0..self.nodes.len()).filter(ok).collect::<Vec<_>>())?;
        let (t, on) = (self.inc("drain-blocked"), movable(self, n));
        let sts = |&(w, _): &(usize, usize)| self.work[w].kind == Kind::Sts;
        let blocked = on.iter().position(sts).unwrap_or(0);
        let by_ca = self.chance(0.6);
        if !by_ca {
            self.ev(t0, On::Node(n), "cordon", &[], t.root);
            let at = t0 + s(self.r(1500, 3000));
            self.ev(at, On::Node(n), "uncordon", &[], t.ctx);
        }
        let (mut at, mut first) = (t0, true);
        while at < self.end && (first || by_ca) {
            if by_ca {
                self.ev(at, On::Node(n), "scale-down", &[], t.ctx.accepted());
            }
            let pods = on
                .iter()
                .enumerate()
                .filter(|(k, _)| first || *k == blocked);
            for (k, &(w, i)) in pods.collect::<Vec<_>>() {
                let (pod, t1) = (self.work[w].pods[i].clone(), at + self.ms(50, 2000));
                if by_ca {
                    self.ev(t1, &pod.obj, "evict", &[], t.ctx);
                }
                if k != blocked && self.work[w].kind == Kind::Deploy {
                    self.ev(t1 + self.ms(100, 900), &pod, "killing", &[], t.ctx);
                    let t2 = t1 + self.ms(300, 2000);
                    self.work[w].pods[i] = self.spawn(t2, w, Place::Avoid(n), t.ctx, false);
                }
            }
            if by_ca {
                let at = at + s(self.r(120, 125));
                self.ev(at, On::Node(n), "scale-down-failed", &[], t.root);
            }
            (at, first) = (at + s(self.r(780, 1200)), false);
        }
        Some(())
    }

    /// A CronJob's Job failing until its backoff limit: a new pod per attempt (restartPolicy
    /// Never: no warning until the end), or one pod restarting in place (OnFailure).
    fn job_failed(&mut self, t0: Time) {
        let t = self.inc("job-failed");
        let jobs = [
            ("analytics", "nightly-export"),
            ("data", "db-migrate"),
            ("payments", "settle"),
        ];
        let (ns, name) = self.pick(&jobs).unwrap_or(jobs[0]);
        let image = format!("{REGISTRY}/{ns}/{name}:4.{}.{}", self.r(0, 9), self.r(0, 9));
        let w = self.add_work(Kind::Job, ns, name, image, 0);
        let cj = self.work[w].obj.clone();
        let job = format!("{name}-{}", t0.timestamp() / 60);
        self.work[w].rs = self.obj("Job", ns, &job, t0);
        let jref = self.work[w].rs.clone();
        self.ev(t0, &cj, "cj-create", &[&job], t.ctx);
        let limit = self.r(3, 6) as usize;
        let (mut at, mut failed) = (t0 + self.ms(50, 400), t0);
        if self.chance(0.5) {
            for attempt in 0..=limit {
                let (pod, bound) = self.create(at, w, Place::Any, t.ctx);
                failed = self.run_pod(bound, &pod, attempt == 0, t.ctx) + s(self.r(3, 40));
                at = failed + s((10 << attempt).min(360));
            }
        } else {
            let (pod, bound) = self.create(at, w, Place::Any, t.ctx);
            let started = self.run_pod(bound, &pod, true, t.ctx);
            let lp = Loop((3, 40), None, limit + 1);
            let fails = self.crashloop(&pod, started, self.end, lp, t.sym(t.sym.accepted()));
            failed = fails.last().copied().unwrap_or(started) + s(1);
            self.ev(failed, &jref, "job-delete", &[&pod.obj.name], t.ctx);
            self.ev(failed + self.ms(100, 600), &pod, "killing", &[], t.ctx);
        }
        self.ev(failed, &jref, "job-limit", &[], t.root);
        let seen = failed + s(self.r(1, 10));
        self.ev(seen, &cj, "cj-seen", &[&job, &"Failed"], t.sym);
    }

    /// A scale-up (by hand or by the HPA) into a namespace whose ResourceQuota is used up.
    fn quota(&mut self, t0: Time) -> Option<()> {
        let w = self.take(Self::app)?;
        let t = self.inc("quota-exceeded");
        let (rs, from) = (self.work[w].rs.clone(), self.work[w].pods.len());
        let (to, fit) = (from + self.r(3, 8) as usize, self.r(0, 2) as usize);
        if self.chance(0.5) {
            let hpa = self.hpa(w);
            self.rescale(t0 - s(1), &hpa, to, t.ctx.accepted());
        }
        self.scale(t0, w, &rs.name, from, to, t.ctx.accepted());
        self.grow(t0, w, fit, t.ctx);
        let (cpu, lim) = (self.pick(&[250, 500, 1000])?, self.r(8, 32));
        let used = lim * 1000 - self.r(0, cpu - 1);
        let fix = self.chance(0.5).then(|| t0 + s(self.r(600, 2400)));
        let until = fix.unwrap_or(self.end);
        for at in self.retries(t0 + self.ms(200, 500), until, 5, 1_000_000) {
            let m = format!(
                "pods \"{}-{}\" is forbidden: exceeded quota: compute-resources, requested: \
                 requests.cpu={cpu}m, used: requests.cpu={used}m, limited: requests.cpu={lim}",
                rs.name,
                self.sfx(5)
            );
            self.ev(at, &rs, "rs-failed", &[&m], t.root);
        }
        fix.map(|at| self.grow(at, w, to - from - fit, t.ctx))
    }
}
