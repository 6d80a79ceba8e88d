//! The `kafka` sink: events as JSON messages to Kafka, acknowledged by delivery reports.
//!
//! Each event becomes one message (the schema of `docs/schema.md`, optionally cut down to
//! `fields`), on a topic templated from the event (`k8s-events-{category}`), keyed by default
//! by the event's correlation id so an incident's events stay in order on one partition
//! (events without one are keyed by their involved object). The message timestamp is the
//! event's time; `headers` are templated too.
//!
//! The producer is librdkafka (through `rdkafka`) with `acks = all` and idempotence on by
//! default, and no message timeout: librdkafka retries transport and broker errors itself,
//! in order, until the broker takes the message. A batch is acknowledged upstream only once
//! every one of its messages has a successful delivery report, so a source's checkpoint never
//! passes an event Kafka has not stored. Retriable failures that still surface (a timeout the
//! user configured, a full local queue) are produced again with jittered backoff; permanent
//! ones (message too large, topic authorisation) are logged with the reason, counted as
//! errors and written to `dead_letter` when set. Memory is bounded by the local queue
//! (`queue.buffering.max.kbytes`, 64 MiB by default) and by `max_in_flight_batches`.
//!
//! At start-up the sink asks the cluster for metadata (the healthcheck): if that fails the
//! error says which servers could not be reached, and events wait in the buffers meanwhile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;

use crate::batch::Batch;
use crate::config::DurationValue;
use crate::event::Event;
use crate::metrics::ComponentMetrics;
use crate::template::Template;
use crate::topology::{BoxError, BuildError, SinkContext, Task};

use super::retry::Backoff;

/// Message compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None (librdkafka's default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Which replicas must have a message before the broker answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica (the default; required by idempotence).
    #[default]
    All,
    /// The partition leader only.
    Leader,
}

fn default_linger() -> DurationValue {
    DurationValue(Duration::from_millis(5))
}
fn default_true() -> bool {
    true
}
fn default_max_in_flight() -> usize {
    64
}

/// `type = "kafka"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topic, templated from the event, e.g. `k8s-events-{category}`.
    pub topic: Template,
    /// Message key, templated (e.g. `"{uid}-{count}"` for idempotent consumers; `""` for
    /// none). Default: the correlation id, else the involved object.
    #[serde(default)]
    pub key: Option<Template>,
    /// Top-level fields of the JSON message to keep (default: all).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// `all` (default) or `leader`.
    #[serde(default)]
    pub acks: Acks,
    /// Idempotent producer: no duplicates from the producer's own retries (default true).
    #[serde(default = "default_true")]
    pub idempotence: bool,
    /// How long librdkafka waits to fill a batch (default 5ms).
    #[serde(default = "default_linger")]
    pub linger: DurationValue,
    /// Message headers, values templated.
    #[serde(default)]
    pub headers: BTreeMap<String, Template>,
    /// Any librdkafka setting (TLS, SASL, timeouts); applied last, so they win.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    /// Ask the cluster for metadata at start-up and report if it cannot be reached.
    #[serde(default = "default_true")]
    pub healthcheck: bool,
    /// Batches whose delivery reports may be outstanding at once (default 64).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_batches: usize,
    /// Longest wait between retries of a failed delivery (default 30s).
    #[serde(default = "super::http::default_max_backoff")]
    pub max_backoff: DurationValue,
    /// Events Kafka refused for good are appended here (JSON Lines) with the reason.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

impl KafkaSinkConfig {
    /// The librdkafka settings this config stands for.
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", "kollate")
            .set("compression.type", self.compression.as_str())
            .set(
                "acks",
                match self.acks {
                    Acks::All => "all",
                    Acks::Leader => "1",
                },
            )
            .set("enable.idempotence", self.idempotence.to_string())
            .set("linger.ms", self.linger.0.as_millis().to_string())
            // Never give up on a retriable error: the pipeline waits (backpressure) instead.
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "100000");
        for (k, v) in &self.librdkafka_options {
            c.set(k, v);
        }
        c
    }

    /// Builds the sink's task.
    ///
    /// # Errors
    /// A librdkafka setting it refuses.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let error = |message: String| BuildError {
            kind: "sink",
            component: ctx.id.clone(),
            message,
        };
        let producer: ThreadedProducer<Deliveries> = self
            .client_config()
            .create_with_context(Deliveries)
            .map_err(|e| error(format!("cannot create the Kafka producer: {e}")))?;
        if self.max_in_flight_batches == 0 {
            return Err(error("`max_in_flight_batches` must be at least 1".into()));
        }
        let sink = KafkaSink {
            producer: Arc::new(producer),
            topic: self.topic.clone(),
            key: self.key.clone(),
            fields: self.fields.clone(),
            headers: self.headers.clone(),
            max_in_flight: self.max_in_flight_batches,
            max_backoff: self.max_backoff.0,
            dead_letter: self.dead_letter.clone(),
            servers: self.bootstrap_servers.clone(),
        };
        let healthcheck = self.healthcheck;
        Ok(Box::pin(sink.run(ctx, healthcheck)))
    }
}

struct KafkaSink {
    producer: Arc<ThreadedProducer<Deliveries>>,
    topic: Template,
    key: Option<Template>,
    fields: Option<Vec<String>>,
    headers: BTreeMap<String, Template>,
    max_in_flight: usize,
    max_backoff: Duration,
    dead_letter: Option<PathBuf>,
    servers: String,
}

/// Receives librdkafka's delivery reports (on the producer's polling thread) and counts
/// them into the [`Reports`] of the batch each message came from.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Reports>;

    fn delivery(&self, result: &DeliveryResult<'_>, reports: Arc<Reports>) {
        match result {
            Ok(_) => {
                reports.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => reports.failed(error.clone(), message.detach()),
        }
        reports.settle();
    }
}

/// The delivery reports of a batch's messages: how many are delivered, which failed, and
/// a wake-up when the last report is in. (One shared counter per batch, rather than a
/// channel and a future per message.)
struct Reports {
    /// Messages without a report yet, plus one while messages are still being handed over.
    pending: AtomicUsize,
    delivered: AtomicU64,
    failures: Mutex<Vec<(KafkaError, OwnedMessage)>>,
    all_in: tokio::sync::Notify,
}

impl Reports {
    fn new() -> Arc<Reports> {
        Arc::new(Reports {
            pending: AtomicUsize::new(1),
            delivered: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            all_in: tokio::sync::Notify::new(),
        })
    }

    fn failed(&self, error: KafkaError, message: OwnedMessage) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((error, message));
    }

    /// One report (or the end of the hand-over) is in.
    fn settle(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_in.notify_one();
        }
    }

    /// Waits for every report; returns the count delivered and the failures.
    async fn wait(&self) -> (u64, Vec<(KafkaError, OwnedMessage)>) {
        while self.pending.load(Ordering::Acquire) > 0 {
            // A wake-up sent before this wait started is kept (a permit), so none is missed.
            self.all_in.notified().await;
        }
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()));
        (self.delivered.load(Ordering::Relaxed), failures)
    }
}

/// The parts of a message to produce.
struct Outgoing<'a> {
    topic: &'a str,
    payload: &'a [u8],
    key: Option<&'a [u8]>,
    timestamp: Option<i64>,
    headers: Option<OwnedHeaders>,
}

impl KafkaSink {
    async fn run(self, mut ctx: SinkContext, healthcheck: bool) -> Result<(), BoxError> {
        if healthcheck {
            self.healthcheck(&ctx).await;
        }
        let sink = Arc::new(self);
        let mut in_flight = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                Some((batch, (delivered, failed), started)) = in_flight.next(), if !in_flight.is_empty() => {
                    sink.complete(&ctx, batch, delivered, failed, started).await;
                }
                batch = ctx.input.recv(), if in_flight.len() < sink.max_in_flight => match batch {
                    Some(batch) => {
                        ComponentMetrics::add(&ctx.metrics.events_in, batch.len() as u64);
                        let started = Instant::now();
                        let reports = sink.produce(&ctx, &batch.events).await;
                        in_flight.push_back(async move { (batch, reports.wait().await, started) });
                    }
                    None => break,
                },
            }
        }
        while let Some((batch, (delivered, failed), started)) = in_flight.next().await {
            sink.complete(&ctx, batch, delivered, failed, started).await;
        }
        Ok(())
    }

    /// Asks for the cluster's metadata; reports (without stopping) when it cannot.
    async fn healthcheck(&self, ctx: &SinkContext) {
        let client = Arc::clone(&self.producer);
        let probe = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|m| m.brokers().len())
        })
        .await;
        match probe {
            Ok(Ok(brokers)) => {
                tracing::info!(component = %ctx.id, servers = %self.servers, brokers, "Kafka healthcheck passed.");
            }
            Ok(Err(e)) => {
                ctx.metrics.unreachable();
                tracing::error!(component = %ctx.id, servers = %self.servers, error = %e, "Kafka healthcheck failed: cannot get metadata from the bootstrap servers; events wait in the buffer until they answer.");
            }
            Err(e) => {
                tracing::error!(component = %ctx.id, error = %e, "Kafka healthcheck did not run.")
            }
        }
    }

    /// Hands every event to librdkafka, waiting while its local queue is full; returns
    /// where the batch's delivery reports arrive.
    async fn produce(&self, ctx: &SinkContext, events: &[Event]) -> Arc<Reports> {
        let reports = Reports::new();
        let mut payload = Vec::with_capacity(1024);
        let mut key = String::new();
        for e in events {
            payload.clear();
            self.encode(e, &mut payload);
            key.clear();
            let has_key = self.render_key(e, &mut key);
            let rendered;
            let topic = match self.topic.constant() {
                Some(t) => t,
                None => {
                    rendered = self.topic.render(e);
                    rendered.as_str()
                }
            };
            ComponentMetrics::add(&ctx.metrics.bytes, payload.len() as u64);
            let message = Outgoing {
                topic,
                payload: &payload,
                key: has_key.then_some(key.as_bytes()),
                timestamp: e.timestamp.map(|t| t.timestamp_millis()),
                headers: self.render_headers(e),
            };
            self.enqueue(message, &reports).await;
        }
        reports.settle();
        reports
    }

    /// Sends one message, waiting while the local queue is full; a message librdkafka
    /// refuses outright (too large, unknown partition...) is reported as failed at once.
    async fn enqueue(&self, message: Outgoing<'_>, reports: &Arc<Reports>) {
        let mut record =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(message.topic, Arc::clone(reports))
                .payload(message.payload);
        if let Some(key) = message.key {
            record = record.key(key);
        }
        if let Some(ts) = message.timestamp {
            record = record.timestamp(ts);
        }
        if let Some(h) = message.headers {
            record = record.headers(h);
        }
        reports.pending.fetch_add(1, Ordering::AcqRel);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Let deliveries drain.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((error, back)) => {
                    let message = OwnedMessage::new(
                        back.payload.map(<[u8]>::to_vec),
                        back.key.map(<[u8]>::to_vec),
                        back.topic.to_owned(),
                        back.timestamp
                            .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
                        back.partition.unwrap_or(-1),
                        -1,
                        back.headers,
                    );
                    back.delivery_opaque.failed(error, message);
                    back.delivery_opaque.settle();
                    return;
                }
            }
        }
    }

    fn encode(&self, e: &Event, out: &mut Vec<u8>) {
        e.encode_json(out);
        if let Some(fields) = &self.fields
            && let Ok(serde_json::Value::Object(mut all)) =
                serde_json::from_slice::<serde_json::Value>(out)
        {
            all.retain(|k, _| fields.iter().any(|f| f == k));
            out.clear();
            serde_json::to_writer(&mut *out, &all).expect("JSON values serialise");
        }
    }

    /// Writes the key into `out`; false for no key.
    fn render_key(&self, e: &Event, out: &mut String) -> bool {
        match &self.key {
            Some(t) => {
                out.push_str(&t.render(e));
                !out.is_empty()
            }
            None => {
                match e.correlation_id.as_deref() {
                    Some(id) if !id.is_empty() => out.push_str(id),
                    _ if !e.object.uid.is_empty() => out.push_str(&e.object.uid),
                    _ => {
                        out.push_str(crate::condition::namespace_of(e));
                        out.push('/');
                        out.push_str(&e.object.kind);
                        out.push('/');
                        out.push_str(&e.object.name);
                    }
                }
                true
            }
        }
    }

    fn render_headers(&self, e: &Event) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let v = value.render(e);
            h = h.insert(Header {
                key: name,
                value: Some(v.as_bytes()),
            });
        }
        Some(h)
    }

    /// Settles a batch once its reports are in: retries what may still succeed, records what
    /// never will, then drops the batch (acknowledging it).
    async fn complete(
        &self,
        ctx: &SinkContext,
        batch: Batch,
        mut delivered: u64,
        mut failed: Vec<(KafkaError, OwnedMessage)>,
        started: Instant,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        while !failed.is_empty() {
            let (retry, permanent): (Vec<_>, Vec<_>) =
                failed.into_iter().partition(|(e, _)| retriable(e));
            for (error, message) in permanent {
                self.reject(ctx, &error, &message);
            }
            if retry.is_empty() {
                break;
            }
            ctx.metrics.unreachable();
            ComponentMetrics::add(&ctx.metrics.warnings, retry.len() as u64);
            tracing::warn!(component = %ctx.id, messages = retry.len(), error = %retry[0].0, "Kafka delivery failed; retrying.");
            backoff.wait().await;
            let reports = Reports::new();
            for (_, m) in &retry {
                let message = Outgoing {
                    topic: m.topic(),
                    payload: m.payload().unwrap_or(&[]),
                    key: m.key(),
                    timestamp: m.timestamp().to_millis(),
                    headers: m.headers().cloned(),
                };
                self.enqueue(message, &reports).await;
            }
            reports.settle();
            let (more, again) = reports.wait().await;
            delivered += more;
            failed = again;
        }
        if delivered > 0 {
            ctx.metrics.reachable();
        }
        ComponentMetrics::add(&ctx.metrics.events_out, delivered);
        ctx.metrics.batch_latency.observe(started.elapsed());
        drop(batch);
    }

    fn reject(&self, ctx: &SinkContext, error: &KafkaError, message: &OwnedMessage) {
        ComponentMetrics::add(&ctx.metrics.errors, 1);
        tracing::error!(component = %ctx.id, topic = message.topic(), %error, "Kafka refused an event; not retrying.");
        if let Some(path) = &self.dead_letter {
            super::write_dead_letter(
                path,
                None,
                &error.to_string(),
                message.payload().unwrap_or(&[]),
            );
        }
    }
}

/// Failures that may succeed if tried again.
fn retriable(error: &KafkaError) -> bool {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnsupportedCompressionType
            | RDKafkaErrorCode::UnsupportedForMessageFormat,
        ) => false,
        Some(_) => true,
        None => false,
    }
}
