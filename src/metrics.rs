//! Per-component counters: what came in, what went out, what was dropped and why.
//!
//! Counters are plain atomics, updated once per batch (not per event) on the hot path.
//! The run summary reads them at exit; the HTTP API exposes them as Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Counters of one component.
#[derive(Debug, Default)]
pub struct ComponentMetrics {
    /// Component name from the config.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub kind: &'static str,
    /// The component type, e.g. `file`.
    pub component_type: &'static str,
    /// Events received (for sources: decoded).
    pub events_in: AtomicU64,
    /// Events sent downstream (for sinks: durably written).
    pub events_out: AtomicU64,
    /// Events dropped on purpose: filtered, duplicates, watch frames with no news.
    pub discarded: AtomicU64,
    /// Inputs or events lost to errors: undecodable input, failed writes.
    pub errors: AtomicU64,
    /// Problems repaired without losing the event (invalid UTF-8, truncated messages).
    pub warnings: AtomicU64,
    /// Bytes read (sources) or written (sinks).
    pub bytes: AtomicU64,
    /// For sources that can stall (a watch): when they last made progress (Unix ms).
    pub progress_ms: AtomicU64,
    /// How long without progress counts as stalled (ms); 0 for components that cannot stall.
    pub stall_after_ms: AtomicU64,
    /// For components that talk to a server: since when it has not answered (Unix ms);
    /// 0 while it answers.
    pub unreachable_since_ms: AtomicU64,
    /// For `wasm` transforms: the plugin's own counters.
    pub plugin: OnceLock<PluginMetrics>,
    /// Time per batch: for transforms, processing it; for sinks, from receiving it until
    /// it is durably written (the sink latency).
    pub batch_latency: Histogram,
    /// For the `kubernetes_events` source: how old the newest event it sent was when it sent
    /// it (watch lag, ms).
    pub lag_ms: AtomicU64,
    /// For transforms and sinks: the channel in front of them (batches waiting).
    pub buffer: OnceLock<tokio::sync::mpsc::WeakSender<crate::batch::Batch>>,
    /// For sinks with a `buffer`: events it holds.
    pub buffer_events: AtomicU64,
    /// For sinks with a memory buffer: the most events it holds (0 otherwise).
    pub buffer_max_events: AtomicU64,
    /// For sinks with a disk buffer: bytes on disk.
    pub buffer_bytes: AtomicU64,
    /// For sinks with a disk buffer: the most bytes on disk (0 otherwise).
    pub buffer_max_bytes: AtomicU64,
    /// Events a full buffer discarded (`when_full = "drop_newest"`).
    pub buffer_discarded: AtomicU64,
    /// Corrupted disk buffer records skipped.
    pub buffer_corrupted: AtomicU64,
}

/// Upper bounds (seconds) of the plugin call latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
];

/// Most plugin-defined counters and gauges one plugin may create (more are ignored).
pub const MAX_PLUGIN_SERIES: usize = 200;

/// A latency histogram over [`LATENCY_BUCKETS`], updated lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bound (not cumulative), plus the overflow bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations (microseconds).
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the Prometheus text lines (`_bucket`, `_sum`, `_count`) of metric `name` with
    /// the label set `labels` (`key="value",...`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// What a WebAssembly plugin did: calls, failures, latency, memory, and its own counters.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// Calls into the plugin (`process` and `tick`).
    pub calls: AtomicU64,
    /// Events handed to the plugin.
    pub events: AtomicU64,
    /// Calls that trapped (panics, out-of-bounds access, memory limit).
    pub traps: AtomicU64,
    /// Calls stopped by the deadline.
    pub timeouts: AtomicU64,
    /// Calls the plugin answered with an error or a wrong number of dispositions.
    pub errors: AtomicU64,
    /// Events the `on_error` policy handled after the plugin failed on them.
    pub failed_events: AtomicU64,
    /// Instances created (initial ones and re-instantiations after a failure).
    pub instantiations: AtomicU64,
    /// Times the circuit breaker opened.
    pub circuit_opened: AtomicU64,
    /// 1 while the circuit breaker is open.
    pub circuit_open: AtomicU64,
    /// Largest linear memory of any instance (bytes).
    pub memory_bytes: AtomicU64,
    /// Call latency.
    pub latency: Histogram,
    /// Counters the plugin keeps through the `counter-add` import.
    pub counters: Mutex<BTreeMap<String, u64>>,
    /// Gauges the plugin sets through the `gauge-set` import.
    pub gauges: Mutex<BTreeMap<String, f64>>,
}

impl PluginMetrics {
    /// Adds to a plugin-defined counter; false when the plugin has too many already.
    pub fn counter_add(&self, name: &str, value: u64) -> bool {
        let mut counters = self.counters.lock().expect("plugin counters lock");
        if let Some(c) = counters.get_mut(name) {
            *c = c.saturating_add(value);
            true
        } else if counters.len() < MAX_PLUGIN_SERIES {
            counters.insert(name.to_owned(), value);
            true
        } else {
            false
        }
    }

    /// Sets a plugin-defined gauge; false when the plugin has too many already.
    pub fn gauge_set(&self, name: &str, value: f64) -> bool {
        let mut gauges = self.gauges.lock().expect("plugin gauges lock");
        if gauges.len() < MAX_PLUGIN_SERIES || gauges.contains_key(name) {
            gauges.insert(name.to_owned(), value);
            true
        } else {
            false
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ComponentMetrics {
    /// Records progress (an event, a bookmark, a successful list) now.
    pub fn progressed(&self) {
        self.progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records that the server did not answer (a connection failure), unless already known.
    pub fn unreachable(&self) {
        let _ = self.unreachable_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Records that the server answered.
    pub fn reachable(&self) {
        self.unreachable_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the server has not answered, if it has not.
    pub fn unreachable_for(&self, now_ms: u64) -> Option<std::time::Duration> {
        match self.unreachable_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                now_ms.saturating_sub(since),
            )),
        }
    }

    /// How long the component has gone without progress beyond its bound, if it has.
    pub fn stalled_for(&self, now_ms: u64) -> Option<std::time::Duration> {
        let bound = self.stall_after_ms.load(Ordering::Relaxed);
        let since = now_ms.saturating_sub(self.progress_ms.load(Ordering::Relaxed));
        (bound > 0 && since > bound).then(|| std::time::Duration::from_millis(since))
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge, stopping at zero.
    pub fn sub(gauge: &AtomicU64, n: u64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// All components' counters.
#[derive(Debug, Default)]
pub struct Registry {
    components: Mutex<Vec<Arc<ComponentMetrics>>>,
}

impl Registry {
    /// Registers a component and returns its counters.
    pub fn register(
        &self,
        id: &str,
        kind: &'static str,
        component_type: &'static str,
    ) -> Arc<ComponentMetrics> {
        let m = Arc::new(ComponentMetrics {
            id: id.to_owned(),
            kind,
            component_type,
            ..Default::default()
        });
        self.components
            .lock()
            .expect("metrics lock")
            .push(m.clone());
        m
    }

    /// Every registered component, in registration order.
    pub fn components(&self) -> Vec<Arc<ComponentMetrics>> {
        self.components.lock().expect("metrics lock").clone()
    }

    /// Sum of a counter over the components of one kind.
    pub fn total(&self, kind: &str, counter: impl Fn(&ComponentMetrics) -> &AtomicU64) -> u64 {
        self.components()
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| ComponentMetrics::get(counter(c)))
            .sum()
    }

    /// The end-of-run table: events in/out/discarded/errors per component.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<20} {:<10} {:>12} {:>12} {:>10} {:>8} {:>8}",
            "kind", "component", "type", "in", "out", "discarded", "errors", "warnings"
        );
        for c in self.components() {
            let _ = writeln!(
                out,
                "{:<10} {:<20} {:<10} {:>12} {:>12} {:>10} {:>8} {:>8}",
                c.kind,
                c.id,
                c.component_type,
                ComponentMetrics::get(&c.events_in),
                ComponentMetrics::get(&c.events_out),
                ComponentMetrics::get(&c.discarded),
                ComponentMetrics::get(&c.errors),
                ComponentMetrics::get(&c.warnings),
            );
        }
        out
    }
}
