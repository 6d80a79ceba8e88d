//! The HTTP API: health checks and Prometheus metrics (queries come with the store).
//!
//! Served on `[api] address` (loopback by default) when `[api] enabled = true`:
//!
//! - `GET /healthz` (liveness): 200 while the pipeline runs; 503 once it is shutting down,
//!   or while a watch has made no progress (no event, no bookmark) for longer than its
//!   source's `stall_timeout` although its API server answers (a stalled watch is what
//!   restarting fixes; an unreachable API server is not);
//! - `GET /readyz` (readiness): 503 in those cases and also while a source's API server
//!   cannot be reached, saying which and for how long;
//! - `GET /metrics`: per-component counters in the Prometheus text format, named by
//!   Prometheus conventions after Vector's component metrics.
//!
//! - `GET /`: the HTML report ([`crate::report`]) over the last 24 hours (`?since=`);
//! - `GET /api/v1/events`, `/api/v1/aggregate`, `/api/v1/incidents`,
//!   `/api/v1/incidents/{id}`: the pipeline's event store (its first `store` sink), with the
//!   filters of `kollate query` as query parameters (`since`, `until`, `namespace`, `kind`,
//!   `name`, `node`, `reason`, `type`, `severity`, `category`, `correlation_id`, `search`,
//!   `limit`; `group_by` and `window` for aggregates). Bad parameters get a 400 saying why.
//!
//! With `[api] token` set, `/metrics` and the data endpoints require
//! `Authorization: Bearer <token>`; the health endpoints stay open for kubelet probes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::ApiOptions;
use crate::metrics::{ComponentMetrics, PluginMetrics, Registry};

/// The API could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for the HTTP API: {source}")]
pub struct ApiStartFailed {
    /// The configured address.
    pub address: String,
    /// Why.
    pub source: std::io::Error,
}

#[derive(Clone)]
struct ApiState {
    metrics: Arc<Registry>,
    /// The event store the data endpoints read, if the pipeline has one.
    store: Option<Arc<std::path::Path>>,
    token: Option<Arc<str>>,
    started: Instant,
    stopping: CancellationToken,
}

/// A running API server.
pub struct Api {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Api {
    /// Binds the listen address and serves until [`Api::stop`]. `stopping` is the pipeline's
    /// shutdown token: health checks fail once it is cancelled.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(
        options: &ApiOptions,
        metrics: Arc<Registry>,
        stopping: CancellationToken,
        store: Option<std::path::PathBuf>,
    ) -> Result<Api, ApiStartFailed> {
        let listener = tokio::net::TcpListener::bind(&options.address)
            .await
            .map_err(|source| ApiStartFailed {
                address: options.address.clone(),
                source,
            })?;
        let state = ApiState {
            metrics,
            store: store.map(Arc::from),
            token: options.token.as_deref().map(Arc::from),
            started: Instant::now(),
            stopping,
        };
        let app = Router::new()
            .route("/healthz", get(live))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics_text))
            .route("/", get(report))
            .route("/api/v1/events", get(events))
            .route("/api/v1/aggregate", get(aggregate))
            .route("/api/v1/incidents", get(incidents))
            .route("/api/v1/incidents/{id}", get(incident))
            .with_state(state);
        let stop = CancellationToken::new();
        let graceful = stop.clone();
        tracing::info!(address = %options.address, "HTTP API listening.");
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { graceful.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP API failed.");
            }
        });
        Ok(Api { task, stop })
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Liveness: 503 when stopping or when a watch stalled while its API server answers.
async fn live(State(state): State<ApiState>) -> Response {
    health(&state, false)
}

/// Readiness: also 503 while a source's API server cannot be reached.
async fn ready(State(state): State<ApiState>) -> Response {
    health(&state, true)
}

/// The health answer, naming each component that is not well.
fn health(state: &ApiState, readiness: bool) -> Response {
    if state.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    let now = crate::metrics::now_ms();
    let mut problems = String::new();
    for c in state.metrics.components() {
        match (c.unreachable_for(now), c.stalled_for(now)) {
            (Some(down), _) if readiness => {
                let _ = writeln!(
                    problems,
                    "{} {}: API server unreachable for {}s",
                    c.kind,
                    c.id,
                    down.as_secs()
                );
            }
            (None, Some(stalled)) => {
                let _ = writeln!(
                    problems,
                    "{} {}: no progress for {}s",
                    c.kind,
                    c.id,
                    stalled.as_secs()
                );
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems).into_response()
    }
}

type Params = axum::extract::Query<std::collections::HashMap<String, String>>;

/// A refusal: status and reason (a small error type; responses are built at the end).
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// A 400 with the reason.
fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// Runs `work` on the store (authorised, on a blocking thread).
async fn with_store<T: IntoResponse + Send + 'static>(
    state: &ApiState,
    headers: &HeaderMap,
    work: impl FnOnce(&crate::store::Store) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    if !authorised(state, headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    let Some(path) = state.store.clone() else {
        return (StatusCode::NOT_FOUND, "this pipeline has no store sink\n").into_response();
    };
    let answer = tokio::task::spawn_blocking(move || {
        let store = crate::store::Store::open_existing(&path)
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
        work(&store)
    })
    .await;
    match answer {
        Ok(Ok(value)) => value.into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Splits `limit` (and the given extra keys) from the filter parameters.
fn split_params(
    mut params: std::collections::HashMap<String, String>,
    extra: &[&str],
    default_limit: usize,
) -> Result<(crate::store::Filter, usize, Vec<Option<String>>), ApiError> {
    let limit = match params.remove("limit") {
        None => default_limit,
        Some(l) => l
            .parse()
            .map_err(|_| bad_request(format!("invalid limit `{l}`: expected a number")))?,
    };
    let extras = extra.iter().map(|k| params.remove(*k)).collect();
    let value = serde_json::to_value(&params).map_err(|e| bad_request(e.to_string()))?;
    let filter: crate::query::FilterParams = serde_json::from_value(value)
        .map_err(|e| bad_request(format!("invalid parameters: {e}")))?;
    let filter = filter.filter(chrono::Utc::now()).map_err(bad_request)?;
    Ok((filter, limit, extras))
}

fn store_failed(e: crate::store::StoreError) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The HTML report over the last 24 hours (or `?since=`).
async fn report(State(state): State<ApiState>, headers: HeaderMap, params: Params) -> Response {
    let now = chrono::Utc::now();
    let since = match crate::query::parse_time_arg(
        params.0.get("since").map_or("24h", String::as_str),
        now,
    ) {
        Ok(t) => t,
        Err(e) => return bad_request(e).into_response(),
    };
    with_store(&state, &headers, move |store| {
        crate::report::render(store, since, now)
            .map(axum::response::Html)
            .map_err(store_failed)
    })
    .await
}

async fn events(State(state): State<ApiState>, headers: HeaderMap, params: Params) -> Response {
    let (filter, limit, _) = match split_params(params.0, &[], 100) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    with_store(&state, &headers, move |store| {
        store
            .query(&filter, limit)
            .map(axum::Json)
            .map_err(store_failed)
    })
    .await
}

async fn aggregate(State(state): State<ApiState>, headers: HeaderMap, params: Params) -> Response {
    let (filter, limit, extras) = match split_params(params.0, &["group_by", "window"], 50) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let names: Vec<String> = extras[0]
        .as_deref()
        .unwrap_or("reason")
        .split(',')
        .map(str::to_owned)
        .collect();
    let columns = match crate::store::GroupColumn::parse_list(&names) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("group_by: {e}")).into_response(),
    };
    let window = match extras[1].as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => return bad_request(format!("invalid window: {e}")).into_response(),
    };
    with_store(&state, &headers, move |store| {
        store
            .aggregate(&filter, &columns, window, limit)
            .map(axum::Json)
            .map_err(store_failed)
    })
    .await
}

async fn incidents(State(state): State<ApiState>, headers: HeaderMap, params: Params) -> Response {
    let since = match params
        .0
        .get("since")
        .map(|s| crate::query::parse_time_arg(s, chrono::Utc::now()))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return bad_request(e).into_response(),
    };
    with_store(&state, &headers, move |store| {
        store.incidents(since).map(axum::Json).map_err(store_failed)
    })
    .await
}

async fn incident(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    with_store(&state, &headers, move |store| {
        let found = store.incident(&id).map_err(store_failed)?;
        let Some(incident) = found else {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no incident {id}")));
        };
        let filter = crate::store::Filter {
            correlation_id: Some(id),
            ..Default::default()
        };
        let members = store.query(&filter, 10_000).map_err(store_failed)?;
        Ok(axum::Json(
            serde_json::json!({ "incident": incident, "members": members }),
        ))
    })
    .await
}

fn authorised(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.as_bytes() == token.as_bytes())
}

async fn metrics_text(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if !authorised(&state, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorised\n",
        )
            .into_response();
    }
    let body = render(&state.metrics, state.started.elapsed().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Per-component counters: (metric name, help, counter).
type Counter = (
    &'static str,
    &'static str,
    fn(&ComponentMetrics) -> &std::sync::atomic::AtomicU64,
);

const COUNTERS: &[Counter] = &[
    (
        "kollate_component_received_events_total",
        "Events a component received (sources: decoded).",
        |c| &c.events_in,
    ),
    (
        "kollate_component_sent_events_total",
        "Events a component sent on (sinks: durably written).",
        |c| &c.events_out,
    ),
    (
        "kollate_component_discarded_events_total",
        "Events dropped on purpose: filtered, duplicates, watch frames without news.",
        |c| &c.discarded,
    ),
    (
        "kollate_component_errors_total",
        "Inputs or events lost to errors.",
        |c| &c.errors,
    ),
    (
        "kollate_component_warnings_total",
        "Problems repaired without losing the event.",
        |c| &c.warnings,
    ),
    (
        "kollate_component_bytes_total",
        "Bytes read (sources) or written (sinks).",
        |c| &c.bytes,
    ),
];

/// The Prometheus text exposition of every component's counters.
pub fn render(metrics: &Registry, uptime_seconds: f64) -> String {
    let components = metrics.components();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kollate_build_info kollate's version.\n# TYPE kollate_build_info gauge"
    );
    let _ = writeln!(
        out,
        "kollate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP kollate_uptime_seconds Seconds since the pipeline started.\n# TYPE kollate_uptime_seconds gauge"
    );
    let _ = writeln!(out, "kollate_uptime_seconds {uptime_seconds:.3}");
    for (name, help, counter) in COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for c in &components {
            let _ = writeln!(
                out,
                "{name}{{component_id=\"{}\",component_kind=\"{}\",component_type=\"{}\"}} {}",
                escape_label(&c.id),
                c.kind,
                c.component_type,
                ComponentMetrics::get(counter(c))
            );
        }
    }
    render_buffers_and_latency(&mut out, &components);
    render_plugins(&mut out, &components);
    out
}

/// Channel occupancy and batch latency of transforms and sinks; watch lag of Kubernetes
/// sources.
fn render_buffers_and_latency(out: &mut String, components: &[Arc<ComponentMetrics>]) {
    let labels = |c: &ComponentMetrics| {
        format!(
            "component_id=\"{}\",component_kind=\"{}\",component_type=\"{}\"",
            escape_label(&c.id),
            c.kind,
            c.component_type
        )
    };
    let buffered: Vec<_> = components
        .iter()
        .filter_map(|c| c.buffer.get().map(|w| (c, w)))
        .collect();
    for (name, help, capacity) in [
        (
            "kollate_component_buffer_batches",
            "Batches waiting in the channel in front of a component.",
            false,
        ),
        (
            "kollate_component_buffer_max_batches",
            "Capacity of the channel in front of a component (channel_capacity).",
            true,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (c, weak) in &buffered {
            // A channel whose senders are all gone is drained or closed: nothing waits.
            let value = weak.upgrade().map_or(0, |tx| {
                if capacity {
                    tx.max_capacity()
                } else {
                    tx.max_capacity() - tx.capacity()
                }
            });
            let _ = writeln!(out, "{name}{{{}}} {value}", labels(c));
        }
    }
    let with_buffer: Vec<_> = components
        .iter()
        .filter(|c| {
            ComponentMetrics::get(&c.buffer_max_events) > 0
                || ComponentMetrics::get(&c.buffer_max_bytes) > 0
        })
        .collect();
    if !with_buffer.is_empty() {
        type Gauge = fn(&ComponentMetrics) -> &std::sync::atomic::AtomicU64;
        let series: [(&str, &str, &str, Gauge); 6] = [
            (
                "kollate_buffer_events",
                "gauge",
                "Events held in a sink's buffer.",
                |c| &c.buffer_events,
            ),
            (
                "kollate_buffer_max_events",
                "gauge",
                "Most events a sink's memory buffer holds.",
                |c| &c.buffer_max_events,
            ),
            (
                "kollate_buffer_byte_size",
                "gauge",
                "Bytes a sink's disk buffer takes on disk.",
                |c| &c.buffer_bytes,
            ),
            (
                "kollate_buffer_max_byte_size",
                "gauge",
                "Most bytes a sink's disk buffer may take.",
                |c| &c.buffer_max_bytes,
            ),
            (
                "kollate_buffer_discarded_events_total",
                "counter",
                "Events a full buffer discarded (when_full = drop_newest).",
                |c| &c.buffer_discarded,
            ),
            (
                "kollate_buffer_corrupted_records_total",
                "counter",
                "Corrupted disk buffer records skipped.",
                |c| &c.buffer_corrupted,
            ),
        ];
        for (name, ty, help, gauge) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            for c in &with_buffer {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    labels(c),
                    ComponentMetrics::get(gauge(c))
                );
            }
        }
    }
    let name = "kollate_component_batch_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time per batch: transforms processing it, sinks until it is durably written.\n# TYPE {name} histogram"
    );
    for c in components.iter().filter(|c| c.kind != "source") {
        c.batch_latency.render(out, name, &labels(c));
    }
    let watchers: Vec<_> = components
        .iter()
        .filter(|c| c.component_type == "kubernetes_events")
        .collect();
    if !watchers.is_empty() {
        let name = "kollate_source_lag_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Age of the newest event a source sent, when it sent it (watch lag).\n# TYPE {name} gauge"
        );
        for c in watchers {
            let lag = c.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0;
            let _ = writeln!(out, "{name}{{{}}} {lag}", labels(c));
        }
    }
}

/// Plugin metrics: (name, type, help, value) per `wasm` transform.
type PluginValue = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PluginMetrics) -> &std::sync::atomic::AtomicU64,
);

const PLUGIN_VALUES: &[PluginValue] = &[
    (
        "kollate_plugin_calls_total",
        "counter",
        "Calls into a WebAssembly plugin.",
        |p| &p.calls,
    ),
    (
        "kollate_plugin_events_total",
        "counter",
        "Events handed to a plugin.",
        |p| &p.events,
    ),
    (
        "kollate_plugin_traps_total",
        "counter",
        "Plugin calls that trapped (panic, memory limit).",
        |p| &p.traps,
    ),
    (
        "kollate_plugin_timeouts_total",
        "counter",
        "Plugin calls stopped by the deadline.",
        |p| &p.timeouts,
    ),
    (
        "kollate_plugin_errors_total",
        "counter",
        "Plugin calls answered with an error or a wrong number of dispositions.",
        |p| &p.errors,
    ),
    (
        "kollate_plugin_failed_events_total",
        "counter",
        "Events on_error handled after the plugin failed on them.",
        |p| &p.failed_events,
    ),
    (
        "kollate_plugin_instantiations_total",
        "counter",
        "Plugin instances created (including after failures).",
        |p| &p.instantiations,
    ),
    (
        "kollate_plugin_circuit_opened_total",
        "counter",
        "Times the plugin's circuit breaker opened.",
        |p| &p.circuit_opened,
    ),
    (
        "kollate_plugin_circuit_open",
        "gauge",
        "1 while the plugin's circuit breaker is open.",
        |p| &p.circuit_open,
    ),
    (
        "kollate_plugin_memory_bytes",
        "gauge",
        "Largest linear memory of any instance of the plugin.",
        |p| &p.memory_bytes,
    ),
];

fn render_plugins(out: &mut String, components: &[Arc<ComponentMetrics>]) {
    let plugins: Vec<(&str, &PluginMetrics)> = components
        .iter()
        .filter_map(|c| c.plugin.get().map(|p| (c.id.as_str(), p)))
        .collect();
    if plugins.is_empty() {
        return;
    }
    for (name, ty, help, value) in PLUGIN_VALUES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for (id, p) in &plugins {
            let _ = writeln!(
                out,
                "{name}{{component_id=\"{}\"}} {}",
                escape_label(id),
                value(p).load(Ordering::Relaxed)
            );
        }
    }
    let name = "kollate_plugin_call_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of plugin calls.\n# TYPE {name} histogram"
    );
    for (id, p) in &plugins {
        p.latency
            .render(out, name, &format!("component_id=\"{}\"", escape_label(id)));
    }
    render_plugin_series(
        out,
        "kollate_plugin_counter_total",
        "counter",
        "Counters a plugin keeps (counter-add).",
        &plugins,
        |p| p.counters.lock().expect("plugin counters lock").clone(),
    );
    render_plugin_series(
        out,
        "kollate_plugin_gauge",
        "gauge",
        "Gauges a plugin sets (gauge-set).",
        &plugins,
        |p| p.gauges.lock().expect("plugin gauges lock").clone(),
    );
}

/// The series a plugin names itself (`counter-add`, `gauge-set`), one per plugin and name.
fn render_plugin_series<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    ty: &str,
    help: &str,
    plugins: &[(&str, &PluginMetrics)],
    series: impl Fn(&PluginMetrics) -> std::collections::BTreeMap<String, V>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
    for (id, p) in plugins {
        for (key, v) in series(p) {
            let _ = writeln!(
                out,
                "{name}{{component_id=\"{}\",name=\"{}\"}} {v}",
                escape_label(id),
                escape_label(&key)
            );
        }
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_prometheus_text_format() {
        let registry = Registry::default();
        let source = registry.register("in\"put", "source", "file");
        ComponentMetrics::add(&source.events_out, 42);
        let text = render(&registry, 1.5);
        assert!(
            text.contains("# TYPE kollate_component_sent_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"kollate_component_sent_events_total{component_id="in\"put",component_kind="source",component_type="file"} 42"#),
            "{text}"
        );
        assert!(text.contains("kollate_uptime_seconds 1.500"));
        assert!(
            !text.contains("kollate_plugin_"),
            "no plugins, no plugin metrics"
        );
    }

    #[test]
    fn buffers_batch_latency_and_watch_lag_render() {
        let registry = Registry::default();
        let sink = registry.register("out", "sink", "file");
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        sink.buffer.set(tx.downgrade()).unwrap();
        tx.try_send(crate::batch::Batch::default()).unwrap();
        tx.try_send(crate::batch::Batch::default()).unwrap();
        sink.batch_latency
            .observe(std::time::Duration::from_millis(2));
        let watch = registry.register("cluster", "source", "kubernetes_events");
        watch.lag_ms.store(1500, Ordering::Relaxed);
        let text = render(&registry, 1.0);
        let labels = r#"component_id="out",component_kind="sink",component_type="file""#;
        for line in [
            format!("kollate_component_buffer_batches{{{labels}}} 2"),
            format!("kollate_component_buffer_max_batches{{{labels}}} 4"),
            format!(r#"kollate_component_batch_duration_seconds_bucket{{{labels},le="0.0025"}} 1"#),
            format!("kollate_component_batch_duration_seconds_count{{{labels}}} 1"),
            r#"kollate_source_lag_seconds{component_id="cluster",component_kind="source",component_type="kubernetes_events"} 1.5"#.to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        drop(tx);
        let text = render(&registry, 1.0);
        assert!(text.contains(&format!("kollate_component_buffer_batches{{{labels}}} 0")));
    }

    #[test]
    fn plugin_metrics_render_with_a_cumulative_histogram() {
        let registry = Registry::default();
        let t = registry.register("route", "transform", "wasm");
        let p = PluginMetrics::default();
        p.calls.store(3, Ordering::Relaxed);
        p.latency.observe(std::time::Duration::from_micros(50));
        p.latency.observe(std::time::Duration::from_millis(3));
        p.latency.observe(std::time::Duration::from_secs(2));
        p.counter_add("dropped.Pulled", 7);
        t.plugin.set(p).unwrap();
        let text = render(&registry, 1.0);
        for line in [
            r#"kollate_plugin_calls_total{component_id="route"} 3"#,
            r#"kollate_plugin_call_duration_seconds_bucket{component_id="route",le="0.0001"} 1"#,
            r#"kollate_plugin_call_duration_seconds_bucket{component_id="route",le="0.005"} 2"#,
            r#"kollate_plugin_call_duration_seconds_bucket{component_id="route",le="1"} 2"#,
            r#"kollate_plugin_call_duration_seconds_bucket{component_id="route",le="+Inf"} 3"#,
            r#"kollate_plugin_call_duration_seconds_count{component_id="route"} 3"#,
            r#"kollate_plugin_counter_total{component_id="route",name="dropped.Pulled"} 7"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
