//! The `wasm` transform: user plugins, WebAssembly components implementing
//! `wit/transform.wit` (package `kollate:plugin@0.1.0`), run sandboxed in wasmtime.
//!
//! ```toml
//! [transforms.route]
//! type = "wasm"
//! inputs = ["classify"]
//! path = "plugins/target/wasm/team_router.wasm"
//! config = { teams = { shop = "checkout" } }
//! batch_size = 256        # events per call
//! instances = 2           # parallel instances (each with its own state)
//! timeout = "200ms"       # per call (epoch deadline)
//! max_memory = "64MiB"    # per instance (linear memory)
//! on_error = "pass"       # or "drop", "dead_letter", "fail"
//! tick_interval = "10s"   # optional: calls the plugin's `tick`
//! ```
//!
//! **Loading.** One process-wide [`Engine`]; each component is compiled once. The compiled
//! artefact is cached under `DATA_DIR/plugin-cache/`, keyed by the wasm file's hash and the
//! engine's compatibility hash, with a checksum; kollate only ever deserialises files it
//! wrote there itself (never a user-supplied precompiled file). A file that is not a
//! component, or a component built against another version of the contract, is refused at
//! start-up with a message naming the file.
//!
//! **Sandbox.** The plugin imports `kollate:plugin/host` (log, counters, gauges) and nothing
//! else is granted: components built for `wasm32-wasip2` get WASI with no files, no
//! environment, no network, no stdio and a frozen clock, unless the `allow` table grants a
//! directory (read-only), environment variables, the clock or stderr.
//!
//! **Failures.** A call that traps (a panic, a memory limit) or overruns its deadline loses
//! the instance: its store is discarded and a fresh instance created. A call that fails in
//! any way (trap, deadline, error, wrong number of dispositions) is retried in halves until
//! the failing events are found, and `on_error` applies to those events alone; each is
//! counted. A plugin that keeps failing is circuit-broken: for a backoff that doubles up to a
//! minute, events bypass it under `on_error`, and the pipeline keeps running.
//!
//! **Outputs.** Events the plugin `reject`s, and failed events under
//! `on_error = "dead_letter"`, go to the `NAME.dead_letter` output (another component's
//! `inputs` may name it), labelled `kollate.dead_letter.reason`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker, ResourceAny, ResourceTable, TypedFunc};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::batch::{Batch, push_notifier};
use crate::config::{ByteSize, DurationValue};
use crate::event::{
    Aggregation, Alert, Category, Enrichment, Event, Incident, ObjectRef, Owner, PatternReport,
    Series, Severity, Str, Timestamp,
};
use crate::metrics::{ComponentMetrics, PluginMetrics};
use crate::topology::{BuildError, Transform};

mod lowering;

use lowering::Verdict;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "plugin",
    });
}

use bindings::kollate::plugin::{host, types as wit};

/// The contract version this host implements: the name of the interface plugins export.
pub const CONTRACT: &str = "kollate:plugin/transform@0.1.0";

/// How often the engine's epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Label carrying why an event went to the dead-letter output.
pub const DEAD_LETTER_REASON: &str = "kollate.dead_letter.reason";

/// Label carrying which component dead-lettered an event.
pub const DEAD_LETTER_COMPONENT: &str = "kollate.dead_letter.component";

/// Longest log line a plugin may write (longer ones are cut).
const MAX_LOG_LINE: usize = 4096;

/// Failed batches in a row after which the circuit breaker opens.
const BREAKER_THRESHOLD: u32 = 5;

/// The circuit breaker's first and longest open period.
const BREAKER_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// What happens to an event the plugin failed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Send the event on unchanged (nothing lost); counted as an error.
    #[default]
    Pass,
    /// Drop the event; counted as an error.
    Drop,
    /// Send it to the `NAME.dead_letter` output with the reason.
    DeadLetter,
    /// Stop the pipeline.
    Fail,
}

/// What the sandbox grants a plugin built for WASI (`wasm32-wasip2`). Nothing by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Real wall and monotonic clocks (otherwise both read a fixed instant).
    #[serde(default)]
    pub clock: bool,
    /// Environment variables passed through by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Directories mounted read-only: guest path -> host path.
    #[serde(default)]
    pub dirs: BTreeMap<String, PathBuf>,
    /// The plugin's stderr goes to kollate's stderr (otherwise discarded).
    #[serde(default)]
    pub stderr: bool,
}

/// `type = "wasm"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmTransformConfig {
    /// The component (`.wasm`), relative to the working directory.
    pub path: PathBuf,
    /// Handed to the plugin's `open` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
    /// Events per call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Parallel instances, each with its own state; batches are split between them.
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Deadline per call.
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Linear memory per instance.
    #[serde(default = "default_max_memory")]
    pub max_memory: ByteSize,
    /// What happens to an event the plugin failed on.
    #[serde(default)]
    pub on_error: OnError,
    /// How often the plugin's `tick` runs (never when unset; always once at shutdown).
    #[serde(default)]
    pub tick_interval: Option<DurationValue>,
    /// What the WASI sandbox grants.
    #[serde(default)]
    pub allow: Allow,
}

fn default_batch_size() -> usize {
    256
}

fn default_instances() -> usize {
    1
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_millis(200))
}

fn default_max_memory() -> ByteSize {
    ByteSize(64 << 20)
}

/// The process-wide engine, with a thread advancing its epoch for deadlines.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if std::env::var_os("KOLLATE_WASM_PERFMAP").is_some() {
            // Names the plugins' compiled functions for `perf` (/tmp/perf-PID.map).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).expect("the engine's fixed configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("kollate-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawn the epoch thread");
        engine
    })
}

/// A compiled plugin, ready to instantiate.
pub struct Loaded {
    pre: bindings::PluginPre<HostState>,
    /// The plugin's `process` method, called with a [`lowering::LoweredBatch`].
    process: wasmtime::component::ComponentExportIndex,
    /// True when the compiled artefact came from the cache.
    pub from_cache: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loaded {{ from_cache: {} }}", self.from_cache)
    }
}

/// Reads, checks, compiles (or loads from the cache) and links a plugin.
///
/// # Errors
/// A message naming the file: unreadable, not a component, another contract version,
/// imports kollate does not provide.
pub fn load(path: &Path, cache_dir: Option<&Path>) -> Result<Loaded, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read plugin `{shown}`: {e}"))?;
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err(format!(
                "`{shown}` is a core WebAssembly module, not a component: build it for \
                 wasm32-wasip2 (or with the SDK's offline build), see plugins/README.md"
            ));
        }
        _ => {
            return Err(format!(
                "`{shown}` is not a WebAssembly component (no `\\0asm` header)"
            ));
        }
    }
    let engine = engine();
    let (component, from_cache) = compile_cached(engine, &bytes, cache_dir)
        .map_err(|e| format!("cannot compile plugin `{shown}`: {e}"))?;
    check_contract(engine, &component).map_err(|e| format!("plugin `{shown}` {e}"))?;
    let mut linker = Linker::<HostState>::new(engine);
    bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(|e| format!("cannot link plugin `{shown}`: {e}"))?;
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| format!("cannot link plugin `{shown}`: {e}"))?;
    let process = component
        .get_export_index(None, CONTRACT)
        .and_then(|iface| component.get_export_index(Some(&iface), "[method]plugin.process"))
        .ok_or_else(|| format!("plugin `{shown}` does not export `plugin.process`"))?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(bindings::PluginPre::new)
        .map_err(|e| format!("plugin `{shown}` cannot be linked: {e}"))?;
    Ok(Loaded {
        pre,
        process,
        from_cache,
    })
}

/// Compiles a component, or deserialises it from kollate's own cache.
fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(wasmtime::component::Component, bool), String> {
    let Some(dir) = cache_dir else {
        let component =
            wasmtime::component::Component::new(engine, bytes).map_err(|e| e.to_string())?;
        return Ok((component, false));
    };
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let file = dir.join(format!(
        "{:032x}-{:016x}.cwasm",
        xxhash_rust::xxh3::xxh3_128(bytes),
        hasher.finish()
    ));
    if let Ok(cached) = std::fs::read(&file) {
        if let Some(payload) = checked_payload(&cached) {
            // SAFETY: the file is one kollate wrote itself into its own cache directory
            // (named by the source's hash and this engine's compatibility hash), and its
            // checksum matches what was written; user-supplied precompiled files are never
            // loaded.
            match unsafe { wasmtime::component::Component::deserialize(engine, payload) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "Ignoring a plugin cache entry that does not load; recompiling.")
                }
            }
        } else {
            tracing::warn!(file = %file.display(), "Ignoring a corrupted plugin cache entry; recompiling.");
        }
    }
    let component =
        wasmtime::component::Component::new(engine, bytes).map_err(|e| e.to_string())?;
    match component.serialize() {
        Ok(serialized) => {
            if let Err(e) = write_cache(dir, &file, &serialized) {
                tracing::warn!(file = %file.display(), error = %e, "Cannot write the plugin cache; compiling at every start.");
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot serialise a compiled plugin."),
    }
    Ok((component, false))
}

/// The payload of a cache file (`xxh3-64 checksum (LE) ++ payload`) when its checksum holds.
fn checked_payload(file: &[u8]) -> Option<&[u8]> {
    let (sum, payload) = file.split_at_checked(8)?;
    (u64::from_le_bytes(sum.try_into().ok()?) == xxhash_rust::xxh3::xxh3_64(payload))
        .then_some(payload)
}

fn write_cache(dir: &Path, file: &Path, serialized: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let mut data = Vec::with_capacity(serialized.len() + 8);
    data.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(serialized).to_le_bytes());
    data.extend_from_slice(serialized);
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, file)
}

/// Checks that the component exports this version of the contract.
fn check_contract(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<(), String> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    if exports.contains(&CONTRACT) {
        return Ok(());
    }
    let base = CONTRACT.split('@').next().unwrap_or(CONTRACT);
    if let Some(other) = exports.iter().find(|e| e.starts_with(base)) {
        return Err(format!(
            "was built against `{other}`, but this kollate implements `{CONTRACT}`: rebuild it \
             against this kollate's wit/transform.wit"
        ));
    }
    Err(format!(
        "does not export `{CONTRACT}` (it exports: {}); is it a kollate plugin?",
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    ))
}

/// What an instance's store holds: limits, the (empty) WASI context and the host imports'
/// state.
struct HostState {
    component: Arc<str>,
    max_memory: usize,
    /// A memory grow was refused during the current call.
    memory_refused: bool,
    metrics: Arc<ComponentMetrics>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_refused = true;
            return Ok(false);
        }
        if let Some(p) = self.metrics.plugin.get() {
            p.memory_bytes.fetch_max(desired as u64, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let component = &*self.component;
        match level {
            host::Level::Trace => tracing::trace!(component, "{message}"),
            host::Level::Debug => tracing::debug!(component, "{message}"),
            host::Level::Info => tracing::info!(component, "{message}"),
            host::Level::Warn => tracing::warn!(component, "{message}"),
            host::Level::Error => tracing::error!(component, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, value: u64) {
        if let Some(p) = self.metrics.plugin.get() {
            p.counter_add(&name, value);
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        if let Some(p) = self.metrics.plugin.get() {
            p.gauge_set(&name, value);
        }
    }
}

/// A clock frozen at the Unix epoch: what a plugin sees unless `allow.clock` is set.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Everything needed to make instances of one plugin.
struct Shared {
    loaded: Loaded,
    config_json: String,
    allow: Allow,
    component: Arc<str>,
    max_memory: usize,
    deadline_ticks: u64,
    metrics: Arc<ComponentMetrics>,
}

impl Shared {
    fn wasi(&self) -> Result<WasiCtx, String> {
        let mut b = WasiCtxBuilder::new();
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !self.allow.clock {
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        for name in &self.allow.env {
            if let Ok(value) = std::env::var(name) {
                b.env(name, value);
            }
        }
        for (guest, host) in &self.allow.dirs {
            b.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| format!("cannot grant directory `{}`: {e}", host.display()))?;
        }
        if self.allow.stderr {
            b.inherit_stderr();
        }
        Ok(b.build())
    }

    /// A fresh instance with its plugin resource opened from the config.
    fn instantiate(&self) -> Result<Instance, String> {
        let state = HostState {
            component: self.component.clone(),
            max_memory: self.max_memory,
            memory_refused: false,
            metrics: self.metrics.clone(),
            wasi: self.wasi()?,
            table: ResourceTable::new(),
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        if let Some(p) = self.metrics.plugin.get() {
            p.instantiations.fetch_add(1, Ordering::Relaxed);
        }
        let instance = self
            .loaded
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate: {}", describe(&e, &store)))?;
        let bindings = bindings::Plugin::new(&mut store, &instance)
            .map_err(|e| format!("cannot instantiate: {}", describe(&e, &store)))?;
        let process = instance
            .get_func(&mut store, self.loaded.process)
            .ok_or("the plugin has no `plugin.process` function")?;
        // Checked once here; each call then skips the check (see `Slot::call`).
        process
            .typed::<ProcessParams<'_>, ProcessResults>(&store)
            .map_err(|e| format!("`plugin.process` has another type: {e}"))?;
        store.set_epoch_deadline(self.deadline_ticks);
        let resource = bindings
            .kollate_plugin_transform()
            .plugin()
            .call_open(&mut store, &self.config_json)
            .map_err(|e| format!("`open` failed: {}", describe(&e, &store)))?
            .map_err(|e| format!("the plugin refused its config: {e}"))?;
        Ok(Instance {
            store,
            bindings,
            resource,
            process,
        })
    }
}

/// What `plugin.process` takes: the plugin resource and a batch.
type ProcessParams<'a> = (ResourceAny, lowering::LoweredBatch<'a>);

/// What `plugin.process` returns: one disposition per event, or an error.
type ProcessResults = (Result<lowering::Verdicts, String>,);

/// One live instance.
struct Instance {
    store: Store<HostState>,
    bindings: bindings::Plugin,
    resource: ResourceAny,
    /// `plugin.process`, called through [`lowering::LoweredBatch`].
    process: wasmtime::component::Func,
}

/// How a call failed.
#[derive(Debug, Clone)]
enum Failure {
    /// Trap or deadline: the instance is gone.
    Broken(String),
    /// The plugin answered, but not usefully; the instance is fine.
    Refused(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Broken(m) | Failure::Refused(m) => m,
        }
    }
}

/// A readable description of a call error: deadline, memory limit, or the trap.
fn describe(e: &wasmtime::Error, store: &Store<HostState>) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded".to_owned(),
        _ if store.data().memory_refused => {
            format!("memory limit of {} bytes reached", store.data().max_memory)
        }
        _ => format!("trapped: {e}"),
    }
}

/// A slot: an instance, re-created after each fatal failure.
struct Slot {
    instance: Option<Instance>,
    /// The batch handed to the plugin, laid out in buffers reused between calls.
    images: lowering::Images,
}

impl Slot {
    /// The live instance (a fresh one after a failure), armed for one call: a new deadline,
    /// no refused memory growth yet.
    fn ready<'a>(
        instance: &'a mut Option<Instance>,
        shared: &Shared,
    ) -> Result<&'a mut Instance, String> {
        let inst = match instance {
            Some(i) => i,
            None => instance.insert(shared.instantiate()?),
        };
        inst.store.set_epoch_deadline(shared.deadline_ticks);
        inst.store.data_mut().memory_refused = false;
        Ok(inst)
    }

    /// Calls `process` on `events`; `Ok` holds exactly one disposition per event.
    fn call(&mut self, shared: &Shared, events: &[Event]) -> Result<Vec<Verdict>, Failure> {
        let pm = shared
            .metrics
            .plugin
            .get()
            .expect("plugin metrics set at build");
        let inst = Self::ready(&mut self.instance, shared).map_err(Failure::Broken)?;
        pm.calls.fetch_add(1, Ordering::Relaxed);
        pm.events.fetch_add(events.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let batch = self.images.lower(events);
        // SAFETY: `Shared::instantiate` checked the function against exactly these types.
        let process =
            unsafe { TypedFunc::<ProcessParams<'_>, ProcessResults>::new_unchecked(inst.process) };
        let result = process
            .call(&mut inst.store, (inst.resource, batch))
            .map(|(r,)| r.map(|v| v.0));
        pm.latency.observe(started.elapsed());
        match result {
            Ok(Ok(d)) if d.len() == events.len() => Ok(d),
            Ok(Ok(d)) => {
                pm.errors.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Refused(format!(
                    "returned {} dispositions for {} events",
                    d.len(),
                    events.len()
                )))
            }
            Ok(Err(message)) => {
                pm.errors.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Refused(format!("returned an error: {message}")))
            }
            Err(e) => {
                let message = describe(&e, &inst.store);
                if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                    pm.timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    pm.traps.fetch_add(1, Ordering::Relaxed);
                }
                self.instance = None;
                Err(Failure::Broken(message))
            }
        }
    }

    /// Processes `events`, splitting failed calls in halves until the failing events are
    /// found. `budget` bounds the failed calls spent on this; when it runs out, the rest
    /// fail without further calls.
    fn resolve(
        &mut self,
        shared: &Shared,
        events: &[Event],
        budget: &mut u32,
        results: &mut Vec<Result<Verdict, String>>,
    ) {
        if *budget == 0 {
            results.extend(
                events
                    .iter()
                    .map(|_| Err("plugin keeps failing; skipped".to_owned())),
            );
            return;
        }
        match self.call(shared, events) {
            Ok(d) => results.extend(d.into_iter().map(Ok)),
            Err(failure) => {
                *budget -= 1;
                if events.len() == 1 {
                    results.push(Err(failure.message().to_owned()));
                } else {
                    let (a, b) = events.split_at(events.len() / 2);
                    self.resolve(shared, a, budget, results);
                    self.resolve(shared, b, budget, results);
                }
            }
        }
    }

    fn tick(
        &mut self,
        shared: &Shared,
        now: wit::Datetime,
        last: bool,
    ) -> Result<Vec<wit::Event>, String> {
        let inst = Self::ready(&mut self.instance, shared)?;
        let result = inst.bindings.kollate_plugin_transform().plugin().call_tick(
            &mut inst.store,
            inst.resource,
            now,
            last,
        );
        match result {
            Ok(r) => r,
            Err(e) => {
                let message = describe(&e, &inst.store);
                self.instance = None;
                Err(message)
            }
        }
    }
}

impl WasmTransformConfig {
    /// Loads the plugin and creates its instances (so a bad config fails at start-up).
    ///
    /// # Errors
    /// The plugin cannot be loaded, or refuses its config.
    pub fn build(
        &self,
        id: &str,
        metrics: Arc<ComponentMetrics>,
        data_dir: &Path,
    ) -> Result<WasmTransform, BuildError> {
        let error = |message: String| BuildError {
            kind: "transform",
            component: id.to_owned(),
            message,
        };
        if self.batch_size == 0 || self.instances == 0 {
            return Err(error(
                "`batch_size` and `instances` must be at least 1".into(),
            ));
        }
        let loaded = load(&self.path, Some(&data_dir.join("plugin-cache"))).map_err(error)?;
        let config_json = serde_json::to_string(&self.config).map_err(|e| error(e.to_string()))?;
        let _ = metrics.plugin.set(PluginMetrics::default());
        let shared = Shared {
            loaded,
            config_json,
            allow: self.allow.clone(),
            component: id.into(),
            max_memory: usize::try_from(self.max_memory.0).unwrap_or(usize::MAX),
            deadline_ticks: (self.timeout.0.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1,
            metrics: metrics.clone(),
        };
        let slots = (0..self.instances)
            .map(|_| {
                shared
                    .instantiate()
                    .map(|i| Slot {
                        instance: Some(i),
                        images: lowering::Images::default(),
                    })
                    .map_err(|e| error(format!("plugin `{}`: {e}", self.path.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WasmTransform {
            shared,
            slots,
            batch_size: self.batch_size,
            on_error: self.on_error,
            tick_interval: self.tick_interval.map(|d| d.0),
            breaker: Breaker::default(),
            dead_letters: Batch::default(),
            fatal: None,
        })
    }
}

/// Opens after [`BREAKER_THRESHOLD`] failed batches in a row; stays open for a backoff that
/// doubles each time it reopens, up to a minute; a clean batch closes it.
#[derive(Debug, Default)]
struct Breaker {
    failed_in_a_row: u32,
    open_until: Option<Instant>,
    backoff: Option<Duration>,
}

impl Breaker {
    fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|t| now < t)
    }

    /// Records a batch's outcome; true when this opened the breaker.
    fn record(&mut self, failed: bool, now: Instant) -> bool {
        if !failed {
            *self = Breaker::default();
            return false;
        }
        self.failed_in_a_row += 1;
        if self.failed_in_a_row < BREAKER_THRESHOLD && self.open_until.is_none() {
            return false;
        }
        let backoff = self
            .backoff
            .map_or(BREAKER_BACKOFF.0, |b| (b * 2).min(BREAKER_BACKOFF.1));
        self.backoff = Some(backoff);
        self.open_until = Some(now + backoff);
        true
    }
}

/// The running transform.
pub struct WasmTransform {
    shared: Shared,
    slots: Vec<Slot>,
    batch_size: usize,
    on_error: OnError,
    tick_interval: Option<Duration>,
    breaker: Breaker,
    dead_letters: Batch,
    fatal: Option<String>,
}

impl WasmTransform {
    fn plugin_metrics(&self) -> &PluginMetrics {
        self.shared
            .metrics
            .plugin
            .get()
            .expect("plugin metrics set at build")
    }

    /// Runs the plugin over `events` (split into calls of `batch_size`, spread over the
    /// instances); one outcome per event, in order.
    fn run(&mut self, events: &[Event]) -> Vec<Result<Verdict, String>> {
        let chunks: Vec<&[Event]> = events.chunks(self.batch_size).collect();
        let budget = |n: usize| 2 * (usize::BITS - n.leading_zeros()) + 2;
        let shared = &self.shared;
        if self.slots.len() == 1 || chunks.len() == 1 {
            let slot = &mut self.slots[0];
            let mut results = Vec::with_capacity(events.len());
            for chunk in chunks {
                let mut b = budget(chunk.len());
                slot.resolve(shared, chunk, &mut b, &mut results);
            }
            return results;
        }
        // Contiguous runs of chunks per instance, processed in parallel, joined in order.
        let per_slot = chunks.len().div_ceil(self.slots.len());
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .slots
                .iter_mut()
                .zip(chunks.chunks(per_slot))
                .map(|(slot, run)| {
                    scope.spawn(move || {
                        let mut results = Vec::new();
                        for chunk in run {
                            let mut b = budget(chunk.len());
                            slot.resolve(shared, chunk, &mut b, &mut results);
                        }
                        results
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("plugin worker does not panic"))
                .collect()
        })
    }

    /// Applies `on_error` to an event the plugin failed on (or bypassed while broken).
    fn failed(&mut self, event: Event, reason: &str, batch: &Batch, out: &mut Vec<Event>) {
        let metrics = &self.shared.metrics;
        ComponentMetrics::add(&metrics.errors, 1);
        self.plugin_metrics()
            .failed_events
            .fetch_add(1, Ordering::Relaxed);
        match self.on_error {
            OnError::Pass => out.push(event),
            OnError::Drop => {}
            OnError::DeadLetter => self.dead_letter(event, reason, batch),
            OnError::Fail => {
                if self.fatal.is_none() {
                    self.fatal = Some(format!(
                        "plugin `{}` failed on event {} ({}): {reason}",
                        self.shared.component, event.uid, event.reason
                    ));
                }
            }
        }
    }

    fn dead_letter(&mut self, mut event: Event, reason: &str, batch: &Batch) {
        event
            .labels
            .insert(DEAD_LETTER_REASON.into(), reason.into());
        event.labels.insert(
            DEAD_LETTER_COMPONENT.into(),
            (*self.shared.component).into(),
        );
        self.dead_letters.events.push(event);
        for n in &batch.notifiers {
            push_notifier(&mut self.dead_letters.notifiers, n);
        }
    }
}

impl Transform for WasmTransform {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        if self.fatal.is_some() {
            return;
        }
        let now = Instant::now();
        let mut events = Vec::with_capacity(batch.len());
        let mut skeleton = Batch {
            events: Vec::new(),
            notifiers: batch.notifiers,
        };
        if self.breaker.is_open(now) {
            for event in batch.events {
                self.failed(
                    event,
                    "plugin circuit-broken after repeated failures",
                    &skeleton,
                    &mut events,
                );
            }
            skeleton.events = events;
            out.push(skeleton);
            return;
        }
        self.plugin_metrics()
            .circuit_open
            .store(0, Ordering::Relaxed);
        let results = self.run(&batch.events);
        if results
            .iter()
            .all(|r| matches!(r, Ok(Verdict::Pass | Verdict::SetLabels(_))))
        {
            // Every event stays where it is (the common case): no event is moved.
            skeleton.events = batch.events;
            for (event, result) in skeleton.events.iter_mut().zip(results) {
                if let Ok(Verdict::SetLabels(labels)) = result {
                    set_labels(event, labels);
                }
            }
            self.breaker.record(false, now);
            out.push(skeleton);
            return;
        }
        let mut any_failed = false;
        for (mut event, result) in batch.events.into_iter().zip(results) {
            match result {
                Ok(Verdict::Pass) => events.push(event),
                Ok(Verdict::SetLabels(labels)) => {
                    set_labels(&mut event, labels);
                    events.push(event);
                }
                Ok(Verdict::Drop) => {
                    ComponentMetrics::add(&self.shared.metrics.discarded, 1);
                }
                Ok(Verdict::Replace(e)) => match from_wit(*e) {
                    Ok(e) => events.push(e),
                    Err(reason) => {
                        any_failed = true;
                        self.failed(event, &reason, &skeleton, &mut events);
                    }
                },
                Ok(Verdict::FanOut(list)) => {
                    match list
                        .into_iter()
                        .map(from_wit)
                        .collect::<Result<Vec<_>, _>>()
                    {
                        Ok(list) => events.extend(list),
                        Err(reason) => {
                            any_failed = true;
                            self.failed(event, &reason, &skeleton, &mut events);
                        }
                    }
                }
                Ok(Verdict::Reject(reason)) => self.dead_letter(event, &reason, &skeleton),
                Err(reason) => {
                    any_failed = true;
                    self.failed(event, &reason, &skeleton, &mut events);
                }
            }
        }
        if self.breaker.record(any_failed, now) {
            let pm = self.plugin_metrics();
            pm.circuit_opened.fetch_add(1, Ordering::Relaxed);
            pm.circuit_open.store(1, Ordering::Relaxed);
            tracing::error!(
                component = %self.shared.component,
                backoff = ?self.breaker.backoff.unwrap_or_default(),
                "Plugin keeps failing; bypassing it (on_error applies) until the backoff ends."
            );
        }
        skeleton.events = events;
        out.push(skeleton);
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.tick_interval
    }

    fn tick(&mut self, out: &mut Vec<Batch>) {
        self.tick_all(false, out);
    }

    fn flush(&mut self, out: &mut Vec<Batch>) -> bool {
        self.tick_all(true, out);
        false
    }

    fn take_dead_letters(&mut self) -> Option<Batch> {
        (!self.dead_letters.events.is_empty()).then(|| std::mem::take(&mut self.dead_letters))
    }

    fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }
}

impl WasmTransform {
    fn tick_all(&mut self, last: bool, out: &mut Vec<Batch>) {
        let now = to_datetime(chrono::Utc::now());
        let mut events = Vec::new();
        for slot in &mut self.slots {
            match slot.tick(&self.shared, now, last) {
                Ok(list) => {
                    for e in list {
                        match from_wit(e) {
                            Ok(e) => events.push(e),
                            Err(reason) => {
                                ComponentMetrics::add(&self.shared.metrics.errors, 1);
                                tracing::warn!(component = %self.shared.component, %reason, "Dropping an event the plugin's tick emitted.");
                            }
                        }
                    }
                }
                Err(reason) => {
                    ComponentMetrics::add(&self.shared.metrics.errors, 1);
                    tracing::warn!(component = %self.shared.component, %reason, "The plugin's tick failed.");
                }
            }
        }
        if !events.is_empty() {
            out.push(Batch::new(events));
        }
    }
}

// ---- conversions between kollate's event and the WIT record ------------------------------

fn to_datetime(t: Timestamp) -> wit::Datetime {
    wit::Datetime {
        seconds: t.timestamp(),
        nanoseconds: t.timestamp_subsec_nanos(),
    }
}

fn from_datetime(d: wit::Datetime) -> Result<Timestamp, String> {
    chrono::DateTime::from_timestamp(d.seconds, d.nanoseconds)
        .ok_or_else(|| format!("timestamp out of range: {}s", d.seconds))
}

fn opt_time(d: Option<wit::Datetime>) -> Result<Option<Timestamp>, String> {
    d.map(from_datetime).transpose()
}

fn from_object(o: wit::ObjectRef) -> ObjectRef {
    ObjectRef {
        kind: o.kind.into(),
        namespace: o.namespace.into(),
        name: o.name.into(),
        uid: o.uid.into(),
        api_version: o.api_version.into(),
        resource_version: o.resource_version.into(),
        field_path: o.field_path.into(),
    }
}

fn from_labels(labels: Vec<(String, String)>) -> BTreeMap<Str, Str> {
    labels
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

macro_rules! map_enum {
    ($to:ident, $from:ident, $ours:ident, $theirs:ty, [$($v:ident),*]) => {
        fn $to(x: $ours) -> $theirs {
            match x { $($ours::$v => <$theirs>::$v,)* }
        }
        fn $from(x: $theirs) -> $ours {
            match x { $(<$theirs>::$v => $ours::$v,)* }
        }
    };
}

map_enum!(
    to_severity,
    from_severity,
    Severity,
    wit::Severity,
    [Info, Warning, Error, Critical]
);
map_enum!(
    to_category,
    from_category,
    Category,
    wit::Category,
    [
        Scheduling, Image, Storage, Network, Node, Probe, Lifecycle, Scaling, Resources, Config,
        Security, Other
    ]
);

/// The schema fields without a typed WIT form, carried as JSON in `extra`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aggregation: Option<Box<Aggregation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incident: Option<Box<Incident>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pattern: Option<Box<PatternReport>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alert: Option<Box<Alert>>,
}

/// The `extra` JSON of an event: the schema objects without a typed WIT form.
fn extra_json(e: &Event) -> Option<String> {
    (e.aggregation.is_some() || e.incident.is_some() || e.pattern.is_some() || e.alert.is_some())
        .then(|| {
            serde_json::to_string(&Extra {
                aggregation: e.aggregation.clone(),
                incident: e.incident.clone(),
                pattern: e.pattern.clone(),
                alert: e.alert.clone(),
            })
            .unwrap_or_default()
        })
}

/// Applies a plugin's `set-labels` answer.
fn set_labels(event: &mut Event, labels: Vec<(String, String)>) {
    for (k, v) in labels {
        event.labels.insert(k.into(), v.into());
    }
}

/// An event a plugin returned, back in kollate's model.
///
/// # Errors
/// An out-of-range timestamp or an `extra` that is not the schema's JSON.
fn from_wit(e: wit::Event) -> Result<Event, String> {
    let extra: Extra = match e.extra.as_deref() {
        None | Some("") => Extra::default(),
        Some(json) => serde_json::from_str(json).map_err(|err| {
            format!("the plugin returned an event whose `extra` is invalid: {err}")
        })?,
    };
    Ok(Event {
        uid: e.uid.into(),
        name: e.name.into(),
        namespace: e.namespace.into(),
        resource_version: e.resource_version.into(),
        api_version: e.api_version.into(),
        event_type: e.event_type.into(),
        reason: e.reason.into(),
        message: e.message,
        combined: e.combined,
        action: e.action.into(),
        object: from_object(e.object),
        related: e.related.map(|r| Box::new(from_object(r))),
        reporting_controller: e.reporting_controller.into(),
        reporting_instance: e.reporting_instance.into(),
        host: e.host.into(),
        count: e.count.max(1),
        first_timestamp: opt_time(e.first_timestamp)?,
        last_timestamp: opt_time(e.last_timestamp)?,
        event_time: opt_time(e.event_time)?,
        series: e
            .series
            .map(|s| {
                Ok::<_, String>(Series {
                    count: s.count,
                    last_observed: opt_time(s.last_observed)?,
                })
            })
            .transpose()?,
        timestamp: opt_time(e.timestamp)?,
        severity: e.severity.map(from_severity),
        category: e.category.map(from_category),
        correlation_id: e.correlation_id.map(Into::into),
        labels: from_labels(e.labels),
        enrichment: e.enrichment.map(|en| {
            Box::new(Enrichment {
                owners: en
                    .owners
                    .into_iter()
                    .map(|o| Owner {
                        kind: o.kind.into(),
                        name: o.name.into(),
                    })
                    .collect(),
                node: en.node.into(),
                labels: from_labels(en.labels),
            })
        }),
        aggregation: extra.aggregation,
        incident: extra.incident,
        pattern: extra.pattern,
        alert: extra.alert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_extra_is_an_error_not_a_panic() {
        let object = || wit::ObjectRef {
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            api_version: String::new(),
            resource_version: String::new(),
            field_path: String::new(),
        };
        let event = wit::Event {
            uid: "u1".into(),
            name: String::new(),
            namespace: String::new(),
            resource_version: String::new(),
            api_version: String::new(),
            event_type: String::new(),
            reason: String::new(),
            message: String::new(),
            combined: false,
            action: String::new(),
            object: object(),
            related: None,
            reporting_controller: String::new(),
            reporting_instance: String::new(),
            host: String::new(),
            count: 1,
            first_timestamp: None,
            last_timestamp: None,
            event_time: None,
            series: None,
            timestamp: None,
            severity: None,
            category: None,
            correlation_id: None,
            labels: Vec::new(),
            enrichment: None,
            extra: None,
        };
        let plain = Event {
            uid: "u1".into(),
            count: 1,
            ..Event::default()
        };
        assert_eq!(from_wit(event.clone()).unwrap(), plain);
        let bad = wit::Event {
            extra: Some("{\"nope\": 1}".into()),
            ..event
        };
        assert!(from_wit(bad).unwrap_err().contains("extra"));
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_backs_off() {
        let mut b = Breaker::default();
        let t = Instant::now();
        for _ in 1..BREAKER_THRESHOLD {
            assert!(!b.record(true, t));
        }
        assert!(b.record(true, t));
        assert!(b.is_open(t));
        assert!(!b.is_open(t + BREAKER_BACKOFF.0));
        // Failing again while half-open doubles the backoff.
        assert!(b.record(true, t));
        assert_eq!(b.backoff, Some(BREAKER_BACKOFF.0 * 2));
        assert!(!b.record(false, t));
        assert!(!b.is_open(t));
    }

    #[test]
    fn non_components_are_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-plugin.wasm");
        std::fs::write(&path, b"hello").unwrap();
        let err = load(&path, None).unwrap_err();
        assert!(
            err.contains("not-a-plugin.wasm") && err.contains("not a WebAssembly component"),
            "{err}"
        );
        std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
        let err = load(&path, None).unwrap_err();
        assert!(err.contains("core WebAssembly module"), "{err}");
        let err = load(&dir.path().join("missing.wasm"), None).unwrap_err();
        assert!(
            err.contains("cannot read plugin") && err.contains("missing.wasm"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupted_cache_entry_is_not_loaded() {
        let payload = b"compiled";
        let mut file = xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes().to_vec();
        file.extend_from_slice(payload);
        assert_eq!(checked_payload(&file), Some(&payload[..]));
        *file.last_mut().unwrap() ^= 1;
        assert_eq!(checked_payload(&file), None);
        assert_eq!(checked_payload(b"short"), None);
    }
}
