//! The `otlp` sink: events as OpenTelemetry log records, over gRPC or HTTP/protobuf.
//!
//! Records are mapped the way the OpenTelemetry Collector's `k8s_events` receiver maps them,
//! so dashboards built on it keep working: resource attributes `k8s.node.name` (the event's
//! node) and `k8s.object.kind/name/uid/fieldpath/api_version/resource_version` (the involved
//! object); record attributes `k8s.event.reason/action/start_time/name/uid/count` and
//! `k8s.namespace.name` (the involved object's); body = the message; timestamp = when it happened. Unlike the
//! receiver, severity comes from kollate's classification (info 9, warning 13, error 17,
//! critical 21; the event's own `Normal`/`Warning` when unclassified). kollate adds
//! `k8s.event.type`, `k8s.event.reporting_controller`, `kollate.category`,
//! `kollate.correlation_id`, `kollate.incident.id/status` on incident records and
//! `kollate.label.<name>` for labels; `cluster_name` becomes the `k8s.cluster.name` resource
//! attribute.
//!
//! The request is built here from the OTLP protobuf types (not through the OpenTelemetry
//! SDK, whose batch processor drops records when its queue fills): the pipeline's buffers and
//! acknowledgements decide what waits and what is sent. gRPC is spoken directly over HTTP/2
//! (hyper): one unary call per request, the message gzipped at the fast level (a gRPC
//! library's fixed level 6 costs several times more CPU than building the request). Incoming batches are merged up to
//! `batch_max_events` per request, with up to `concurrency` requests in flight. Failures the
//! OTLP specification calls retryable (gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED,
//! ABORTED, OUT_OF_RANGE, DATA_LOSS, RESOURCE_EXHAUSTED; HTTP 429, 502, 503, 504; transport
//! errors and timeouts) are retried with jittered exponential backoff until they succeed;
//! others are logged with the receiver's reason, counted and written to `dead_letter`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde::Deserialize;

use crate::batch::Batch;
use crate::config::DurationValue;
use crate::event::{Event, Severity};
use crate::metrics::ComponentMetrics;
use crate::topology::{BoxError, BuildError, SinkContext, Task};

use super::retry::Backoff;

/// How records travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318, path `/v1/logs`).
    Http,
}

/// Request compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpCompression {
    /// None.
    None,
    /// gzip (the default).
    #[default]
    Gzip,
}

/// `tls = { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file of the certificate authority to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
}

fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}
fn default_batch() -> usize {
    1000
}
fn default_concurrency() -> usize {
    4
}

/// `type = "otlp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP; `/v1/logs` is added when the
    /// URL has no path). `https://` uses TLS.
    pub endpoint: String,
    /// `grpc` (default) or `http`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Headers (gRPC metadata) on every request, e.g. authentication.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: OtlpCompression,
    /// TLS options for `https://` endpoints.
    #[serde(default)]
    pub tls: TlsOptions,
    /// Per-request timeout (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: DurationValue,
    /// Most records per request (default 1000).
    #[serde(default = "default_batch")]
    pub batch_max_events: usize,
    /// Requests in flight at once (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `k8s.cluster.name` resource attribute.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Longest wait between retries (default 30s).
    #[serde(default = "super::http::default_max_backoff")]
    pub max_backoff: DurationValue,
    /// Records refused for good are appended here (JSON Lines) with the reason.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

impl OtlpSinkConfig {
    /// Builds the sink's task.
    ///
    /// # Errors
    /// An endpoint, header or CA file that cannot work.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let error = |message: String| BuildError {
            kind: "sink",
            component: ctx.id.clone(),
            message,
        };
        if self.batch_max_events == 0 || self.concurrency == 0 {
            return Err(error(
                "`batch_max_events` and `concurrency` must be at least 1".into(),
            ));
        }
        let (url, content_type, http2) = match self.protocol {
            Protocol::Grpc => (
                format!(
                    "{}/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                    self.endpoint.trim_end_matches('/')
                ),
                "application/grpc",
                true,
            ),
            Protocol::Http => {
                let bare = self
                    .endpoint
                    .parse::<hyper::Uri>()
                    .is_ok_and(|u| matches!(u.path(), "" | "/"));
                let url = if bare {
                    format!("{}/v1/logs", self.endpoint.trim_end_matches('/'))
                } else {
                    self.endpoint.clone()
                };
                (url, "application/x-protobuf", false)
            }
        };
        let mut headers = self.headers.clone();
        let gzip = self.compression == OtlpCompression::Gzip;
        if self.protocol == Protocol::Grpc {
            headers.insert("te".into(), "trailers".into());
            headers.insert("grpc-accept-encoding".into(), "gzip".into());
            if gzip {
                headers.insert("grpc-encoding".into(), "gzip".into());
            }
        } else if gzip {
            headers.insert("content-encoding".into(), "gzip".into());
        }
        let poster = super::http::Poster::new(&url, headers, self.timeout.0, self.max_backoff.0)
            .and_then(|p| p.content_type(content_type, self.tls.ca_file.as_deref(), http2))
            .map_err(error)?;
        let sink = Arc::new(OtlpSink {
            poster,
            grpc: self.protocol == Protocol::Grpc,
            gzip,
            cluster: self.cluster_name.clone(),
            max_backoff: self.max_backoff.0,
            dead_letter: self.dead_letter.clone(),
        });
        Ok(Box::pin(run(
            ctx,
            sink,
            self.batch_max_events,
            self.concurrency,
        )))
    }
}

struct OtlpSink {
    poster: super::http::Poster,
    grpc: bool,
    gzip: bool,
    cluster: Option<String>,
    max_backoff: Duration,
    dead_letter: Option<PathBuf>,
}

/// How one attempt ended.
enum Attempt {
    Accepted(i64),
    Retry(String),
    Rejected(String),
}

async fn run(
    mut ctx: SinkContext,
    sink: Arc<OtlpSink>,
    max_events: usize,
    concurrency: usize,
) -> Result<(), BoxError> {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = ctx.input.recv(), if open && in_flight.len() < concurrency => match first {
                Some(mut batch) => {
                    // Merge what is already waiting, up to one request's worth.
                    while batch.len() < max_events {
                        match ctx.input.try_recv() {
                            Ok(more) => {
                                batch.events.extend(more.events);
                                batch.notifiers.extend(more.notifiers);
                            }
                            Err(_) => break,
                        }
                    }
                    ComponentMetrics::add(&ctx.metrics.events_in, batch.len() as u64);
                    let sink = sink.clone();
                    let metrics = ctx.metrics.clone();
                    let id = ctx.id.clone();
                    in_flight.push(async move { sink.deliver(&id, batch, &metrics).await });
                }
                None => open = false,
            },
        }
    }
    Ok(())
}

impl OtlpSink {
    /// Sends one batch until the receiver takes or refuses it; dropping the batch at the end
    /// acknowledges it.
    async fn deliver(&self, id: &str, batch: Batch, metrics: &ComponentMetrics) {
        let started = Instant::now();
        let body = self.body(&self.request(&batch.events));
        let mut backoff = Backoff::new(Duration::from_millis(250), self.max_backoff);
        loop {
            match self.attempt(body.clone()).await {
                Attempt::Accepted(rejected) => {
                    metrics.reachable();
                    let rejected = rejected.clamp(0, batch.len() as i64) as u64;
                    if rejected > 0 {
                        ComponentMetrics::add(&metrics.errors, rejected);
                        tracing::error!(
                            component = id,
                            rejected,
                            "OTLP receiver rejected part of a request (partial success)."
                        );
                    }
                    ComponentMetrics::add(&metrics.events_out, batch.len() as u64 - rejected);
                    metrics.batch_latency.observe(started.elapsed());
                    return;
                }
                Attempt::Retry(why) => {
                    metrics.unreachable();
                    ComponentMetrics::add(&metrics.warnings, 1);
                    tracing::warn!(component = id, reason = %why, records = batch.len(), "OTLP export failed; retrying.");
                    backoff.wait().await;
                }
                Attempt::Rejected(why) => {
                    ComponentMetrics::add(&metrics.errors, batch.len() as u64);
                    tracing::error!(component = id, reason = %why, records = batch.len(), "OTLP receiver refused the records; not retrying.");
                    if let Some(path) = &self.dead_letter {
                        for e in &batch.events {
                            let mut json = Vec::new();
                            e.encode_json(&mut json);
                            super::write_dead_letter(path, None, &why, &json);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// The request body: protobuf, gzipped if asked, framed as a gRPC message for gRPC.
    fn body(&self, request: &ExportLogsServiceRequest) -> hyper::body::Bytes {
        let mut body = request.encode_to_vec();
        if self.gzip {
            body = gzip(&body);
        }
        if self.grpc {
            // A gRPC message: compressed flag, big-endian length, the (compressed) bytes.
            let mut frame = Vec::with_capacity(body.len() + 5);
            frame.push(u8::from(self.gzip));
            frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
            frame.extend_from_slice(&body);
            body = frame;
        }
        body.into()
    }

    async fn attempt(&self, body: hyper::body::Bytes) -> Attempt {
        let answer = match self.poster.post(body).await {
            Ok(answer) => answer,
            Err(e) => return Attempt::Retry(e),
        };
        if self.grpc {
            return grpc_outcome(&answer);
        }
        match answer.status {
            200..=299 => Attempt::Accepted(
                ExportLogsServiceResponse::decode(answer.body.as_ref())
                    .map(|r| rejected(&r))
                    .unwrap_or(0),
            ),
            429 | 502 | 503 | 504 => {
                Attempt::Retry(format!("HTTP {}: {}", answer.status, text(&answer.body)))
            }
            status => Attempt::Rejected(format!("HTTP {status}: {}", text(&answer.body))),
        }
    }

    /// The export request for `events`: consecutive events about the same object share one
    /// resource.
    fn request(&self, events: &[Event]) -> ExportLogsServiceRequest {
        let observed = now_nanos();
        let mut resource_logs: Vec<ResourceLogs> = Vec::new();
        for e in events {
            let resource = self.resource_attributes(e);
            let record = log_record(e, observed);
            if let Some(rl) = resource_logs.last_mut()
                && rl
                    .resource
                    .as_ref()
                    .is_some_and(|r| r.attributes == resource)
            {
                rl.scope_logs[0].log_records.push(record);
                continue;
            }
            resource_logs.push(ResourceLogs {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "kollate".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records: vec![record],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
        }
        ExportLogsServiceRequest { resource_logs }
    }

    fn resource_attributes(&self, e: &Event) -> Vec<KeyValue> {
        let o = &e.object;
        let mut attrs = Vec::with_capacity(8);
        if let Some(cluster) = &self.cluster {
            attrs.push(kv("k8s.cluster.name", cluster));
        }
        attrs.extend([
            kv("k8s.node.name", &e.host),
            kv("k8s.object.kind", &o.kind),
            kv("k8s.object.name", &o.name),
            kv("k8s.object.uid", &o.uid),
            kv("k8s.object.fieldpath", &o.field_path),
            kv("k8s.object.api_version", &o.api_version),
            kv("k8s.object.resource_version", &o.resource_version),
        ]);
        attrs
    }
}

/// One event as a log record.
fn log_record(e: &Event, observed: u64) -> LogRecord {
    let (number, text) = match (e.severity, e.event_type.as_str()) {
        (Some(Severity::Info), _) => (9, "INFO"),
        (Some(Severity::Warning), _) => (13, "WARN"),
        (Some(Severity::Error), _) => (17, "ERROR"),
        (Some(Severity::Critical), _) => (21, "FATAL"),
        (None, "Warning") => (13, "Warning"),
        (None, "Normal") => (9, "Normal"),
        (None, _) => (0, ""),
    };
    let mut attributes = vec![
        kv("k8s.event.reason", &e.reason),
        kv("k8s.event.action", &e.action),
        kv("k8s.event.name", &e.name),
        kv("k8s.event.uid", &e.uid),
        kv("k8s.namespace.name", &e.object.namespace),
        kv("k8s.event.type", &e.event_type),
        kv("k8s.event.reporting_controller", &e.reporting_controller),
    ];
    if let Some(start) = e.first_timestamp.or(e.event_time) {
        let mut buf = [0u8; 40];
        let n = crate::event::format_time(&start, &mut buf);
        attributes.push(kv(
            "k8s.event.start_time",
            std::str::from_utf8(&buf[..n]).unwrap_or_default(),
        ));
    }
    if e.count > 0 {
        attributes.push(KeyValue {
            key: "k8s.event.count".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(e.occurrences() as i64)),
            }),
            ..Default::default()
        });
    }
    if let Some(c) = e.category {
        attributes.push(kv("kollate.category", c.as_str()));
    }
    if let Some(id) = &e.correlation_id {
        attributes.push(kv("kollate.correlation_id", id));
    }
    if let Some(incident) = &e.incident {
        attributes.push(kv("kollate.incident.id", &incident.id));
        attributes.push(kv(
            "kollate.incident.status",
            &serde_json::to_value(incident.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ));
    }
    for (k, v) in &e.labels {
        attributes.push(kv(&format!("kollate.label.{k}"), v));
    }
    let body = match &e.incident {
        Some(i) if e.message.is_empty() => i.summary.clone(),
        _ => e.message.clone(),
    };
    LogRecord {
        time_unix_nano: e
            .timestamp
            .and_then(|t| t.timestamp_nanos_opt())
            .map_or(0, |n| n.max(0) as u64),
        observed_time_unix_nano: observed,
        severity_number: number,
        severity_text: text.into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes,
        ..Default::default()
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// How a gRPC exchange ended: `grpc-status` from the trailers (or the headers of a
/// trailers-only answer); codes the OTLP specification calls retryable are retried.
fn grpc_outcome(answer: &super::http::Answer) -> Attempt {
    if answer.status != 200 {
        let why = format!("HTTP {} from a gRPC endpoint", answer.status);
        return match answer.status {
            429 | 502 | 503 | 504 => Attempt::Retry(why),
            _ => Attempt::Rejected(why),
        };
    }
    let field = |name: &str| {
        answer
            .trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| answer.headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    let Some(code) = field("grpc-status").and_then(|c| c.parse::<u32>().ok()) else {
        return Attempt::Retry("gRPC answer without grpc-status".into());
    };
    if code == 0 {
        return Attempt::Accepted(grpc_message(&answer.body).map_or(0, |r| rejected(&r)));
    }
    let why = format!(
        "gRPC status {code}: {}",
        field("grpc-message").unwrap_or("")
    );
    match code {
        // CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE,
        // UNAVAILABLE, DATA_LOSS.
        1 | 2 | 4 | 8 | 10 | 11 | 14 | 15 => Attempt::Retry(why),
        _ => Attempt::Rejected(why),
    }
}

/// The response message of a gRPC body (`None` when absent or unreadable).
fn grpc_message(body: &[u8]) -> Option<ExportLogsServiceResponse> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let bytes = rest.get(4..4 + len)?;
    if flag == 1 {
        use std::io::Read;
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut plain)
            .ok()?;
        ExportLogsServiceResponse::decode(plain.as_slice()).ok()
    } else {
        ExportLogsServiceResponse::decode(bytes).ok()
    }
}

fn rejected(response: &ExportLogsServiceResponse) -> i64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |p| p.rejected_log_records)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    fn answer(
        status: u16,
        trailers: &[(&'static str, &str)],
        body: Vec<u8>,
    ) -> super::super::http::Answer {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in trailers {
            map.insert(*k, v.parse().unwrap());
        }
        super::super::http::Answer {
            status,
            headers: hyper::HeaderMap::new(),
            body: body.into(),
            trailers: Some(map),
        }
    }

    #[test]
    fn grpc_status_codes_decide_retry_or_rejection_and_partial_success_is_read() {
        let response = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "bad".into(),
            }),
        };
        let message = response.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        assert!(matches!(
            grpc_outcome(&answer(200, &[("grpc-status", "0")], framed)),
            Attempt::Accepted(3)
        ));
        assert!(matches!(
            grpc_outcome(&answer(200, &[("grpc-status", "14")], Vec::new())),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            grpc_outcome(&answer(200, &[("grpc-status", "3"), ("grpc-message", "invalid")], Vec::new())),
            Attempt::Rejected(m) if m.contains("invalid")
        ));
        assert!(matches!(
            grpc_outcome(&answer(503, &[], Vec::new())),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            grpc_outcome(&answer(200, &[], Vec::new())),
            Attempt::Retry(_)
        ));
    }
}
