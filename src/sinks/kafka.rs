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
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
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
        let producer: FutureProducer = self
            .client_config()
            .create()
            .map_err(|e| error(format!("cannot create the Kafka producer: {e}")))?;
        if self.max_in_flight_batches == 0 {
            return Err(error("`max_in_flight_batches` must be at least 1".into()));
        }
        let sink = KafkaSink {
            producer,
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
    producer: FutureProducer,
    topic: Template,
    key: Option<Template>,
    fields: Option<Vec<String>>,
    headers: BTreeMap<String, Template>,
    max_in_flight: usize,
    max_backoff: Duration,
    dead_letter: Option<PathBuf>,
    servers: String,
}

/// The delivery reports of one batch, in message order.
type Reports = Vec<
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
>;

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
                Some((batch, reports, started)) = in_flight.next(), if !in_flight.is_empty() => {
                    sink.complete(&ctx, batch, reports, started).await;
                }
                batch = ctx.input.recv(), if in_flight.len() < sink.max_in_flight => match batch {
                    Some(batch) => {
                        ComponentMetrics::add(&ctx.metrics.events_in, batch.len() as u64);
                        let started = Instant::now();
                        let deliveries = sink.produce(&ctx, &batch.events).await;
                        in_flight.push_back(async move {
                            (batch, futures::future::join_all(deliveries).await, started)
                        });
                    }
                    None => break,
                },
            }
        }
        while let Some((batch, reports, started)) = in_flight.next().await {
            sink.complete(&ctx, batch, reports, started).await;
        }
        Ok(())
    }

    /// Asks for the cluster's metadata; reports (without stopping) when it cannot.
    async fn healthcheck(&self, ctx: &SinkContext) {
        let client = self.producer.clone();
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

    /// Hands every event to librdkafka, waiting while its local queue is full.
    async fn produce(
        &self,
        ctx: &SinkContext,
        events: &[Event],
    ) -> Vec<rdkafka::producer::DeliveryFuture> {
        let mut deliveries = Vec::with_capacity(events.len());
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
            let headers = self.render_headers(e);
            let timestamp = e.timestamp.map(|t| t.timestamp_millis());
            ComponentMetrics::add(&ctx.metrics.bytes, payload.len() as u64);
            let mut record = FutureRecord::to(topic).payload(&payload[..]);
            if has_key {
                record = record.key(key.as_str());
            }
            if let Some(ts) = timestamp {
                record = record.timestamp(ts);
            }
            if let Some(h) = headers {
                record = record.headers(h);
            }
            deliveries.push(self.enqueue(record).await);
        }
        deliveries
    }

    /// Sends one record, retrying while the local queue is full.
    async fn enqueue<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        mut record: FutureRecord<'_, K, [u8]>,
    ) -> rdkafka::producer::DeliveryFuture {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return delivery,
                Err((_, back)) => {
                    // QueueFull (or a transient local error): let deliveries drain.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
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
    async fn complete(&self, ctx: &SinkContext, batch: Batch, reports: Reports, started: Instant) {
        let mut failed: Vec<(KafkaError, OwnedMessage)> = Vec::new();
        let mut delivered = 0u64;
        for report in reports {
            match report {
                Ok(Ok(_)) => delivered += 1,
                Ok(Err(failure)) => failed.push(failure),
                // The producer went away; cannot happen while the sink holds it.
                Err(_) => ComponentMetrics::add(&ctx.metrics.errors, 1),
            }
        }
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
            let mut again = Vec::with_capacity(retry.len());
            for (_, m) in &retry {
                let mut record = FutureRecord::to(m.topic()).payload(m.payload().unwrap_or(&[]));
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(h) = m.headers() {
                    record = record.headers(h.clone());
                }
                if let Some(ts) = m.timestamp().to_millis() {
                    record = record.timestamp(ts);
                }
                again.push(self.enqueue(record).await);
            }
            failed = Vec::new();
            for report in futures::future::join_all(again).await {
                match report {
                    Ok(Ok(_)) => delivered += 1,
                    Ok(Err(failure)) => failed.push(failure),
                    Err(_) => ComponentMetrics::add(&ctx.metrics.errors, 1),
                }
            }
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
