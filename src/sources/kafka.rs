//! The `kafka` source: events from Kafka topics, in a consumer group, committed only after
//! every sink has acknowledged them.
//!
//! This is the aggregator half of kollate's scale-out (agents per cluster write with the
//! `kafka` sink; a pool of aggregators reads with this source, correlates across clusters and
//! stores). Messages are the `kafka` sink's JSON (`docs/schema.md`) or Kubernetes Event
//! objects (either API); `decoding = "auto"` tells them apart by their top-level keys.
//!
//! Offsets: automatic offset *storing* is off. Each batch carries an acknowledgement handle
//! (see [`crate::batch`]); once every sink has durably accepted a batch, and every batch
//! before it, the offsets after its messages are stored, and librdkafka commits stored
//! offsets every `commit_interval` (and once more at shutdown). After a crash the group
//! resumes from the last commit: events are delivered at least once, never lost. An
//! undecodable message is reported, counted and skipped (its offset is committed with the
//! rest).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::batch::{AckTracker, Batch};
use crate::config::DurationValue;
use crate::event::Event;
use crate::metrics::ComponentMetrics;
use crate::topology::{BoxError, BuildError, SourceContext, Task};

/// How message payloads are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoding {
    /// By their keys: Kubernetes Events have `involvedObject`, `regarding` or `metadata`.
    #[default]
    Auto,
    /// kollate's schema (what the `kafka` sink writes).
    Kollate,
    /// Kubernetes Event objects.
    Kubernetes,
}

fn default_batch_size() -> usize {
    500
}
fn default_commit_interval() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}
fn default_offset_reset() -> String {
    "earliest".into()
}

/// `type = "kafka"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Consumer group: aggregators sharing it split the partitions between them.
    pub group_id: String,
    /// Where a group without committed offsets starts: `earliest` (default) or `latest`.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    /// `auto` (default), `kollate` or `kubernetes`.
    #[serde(default)]
    pub decoding: Decoding,
    /// Most messages per batch (default 500).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How often acknowledged offsets are committed (default 1s).
    #[serde(default = "default_commit_interval")]
    pub commit_interval: DurationValue,
    /// Any librdkafka consumer setting (TLS, SASL, session timeout); applied last.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

impl KafkaSourceConfig {
    /// Builds the source's task.
    ///
    /// # Errors
    /// No topics, or a librdkafka setting it refuses.
    pub fn build(&self, ctx: SourceContext) -> Result<Task, BuildError> {
        let error = |message: String| BuildError {
            kind: "source",
            component: ctx.id.clone(),
            message,
        };
        if self.topics.is_empty() {
            return Err(error("`topics` must name at least one topic".into()));
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("client.id", "kollate")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval.0.as_millis().max(1).to_string(),
            )
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("enable.partition.eof", "false");
        for (k, v) in &self.librdkafka_options {
            c.set(k, v);
        }
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| error(format!("cannot create the Kafka consumer: {e}")))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| error(format!("cannot subscribe to {topics:?}: {e}")))?;
        let decoding = self.decoding;
        let batch_size = self.batch_size.max(1);
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || consume(ctx, consumer, decoding, batch_size))
                .await??;
            Ok(())
        }))
    }
}

/// Offsets after a batch: the next offset to read, per (topic, partition).
type Offsets = HashMap<(String, i32), i64>;

fn consume(
    mut ctx: SourceContext,
    consumer: BaseConsumer,
    decoding: Decoding,
    batch_size: usize,
) -> Result<(), BoxError> {
    let mut tracker: AckTracker<Offsets> = AckTracker::new();
    let store = |offsets: Offsets| {
        // `store_offsets` stores exactly the given offset (the next one to read);
        // `store_offset` would store one more, skipping a message at the next start.
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for ((topic, partition), offset) in offsets {
            // Offsets come from messages, so they are never out of range.
            let _ = list.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        if let Err(e) = consumer.store_offsets(&list) {
            // A partition taken away by a rebalance refuses; its new owner re-reads it.
            tracing::debug!(error = %e, "Offsets not stored.");
        }
    };
    let mut events = Vec::with_capacity(batch_size);
    let mut offsets = Offsets::new();
    let mut started = Instant::now();
    while !ctx.shutdown.is_cancelled() {
        tracker.poll(store);
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                ctx.metrics.progressed();
                offsets.insert(
                    (message.topic().to_owned(), message.partition()),
                    message.offset() + 1,
                );
                let payload = message.payload().unwrap_or(&[]);
                ComponentMetrics::add(&ctx.metrics.bytes, payload.len() as u64);
                match decode(payload, decoding) {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        ComponentMetrics::add(&ctx.metrics.errors, 1);
                        tracing::warn!(component = %ctx.id, topic = message.topic(), partition = message.partition(), offset = message.offset(), error = %e, "Skipped an undecodable Kafka message.");
                    }
                }
            }
            Some(Err(e)) => {
                ctx.metrics.unreachable();
                tracing::warn!(component = %ctx.id, error = %e, "Kafka consumer error.");
            }
            None => {}
        }
        let full = events.len() >= batch_size;
        let due = !offsets.is_empty() && started.elapsed() >= Duration::from_millis(100);
        if full || due {
            emit(&mut ctx, &mut tracker, &mut events, &mut offsets)?;
            started = Instant::now();
        }
    }
    emit(&mut ctx, &mut tracker, &mut events, &mut offsets)?;
    ctx.out.close();
    tracker.close_blocking(store);
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit is the common case.
        tracing::debug!(component = %ctx.id, error = %e, "Final commit.");
    }
    Ok(())
}

/// Sends the events gathered so far with a handle that stores `offsets` once acknowledged.
fn emit(
    ctx: &mut SourceContext,
    tracker: &mut AckTracker<Offsets>,
    events: &mut Vec<Event>,
    offsets: &mut Offsets,
) -> Result<(), BoxError> {
    if offsets.is_empty() {
        return Ok(());
    }
    ctx.metrics.reachable();
    let mut batch = Batch::new(std::mem::take(events));
    batch
        .notifiers
        .push(tracker.notifier(std::mem::take(offsets)));
    ComponentMetrics::add(&ctx.metrics.events_in, batch.len() as u64);
    ComponentMetrics::add(&ctx.metrics.events_out, batch.len() as u64);
    // An empty batch (only undecodable messages) is acknowledged by being dropped.
    if !batch.is_empty() {
        ctx.out.blocking_send(batch)?;
    }
    Ok(())
}

/// One message as an event.
fn decode(payload: &[u8], decoding: Decoding) -> Result<Event, String> {
    let kubernetes = match decoding {
        Decoding::Kollate => false,
        Decoding::Kubernetes => true,
        Decoding::Auto => {
            let keys: HashMap<&str, IgnoredAny> =
                serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            ["involvedObject", "regarding", "metadata", "apiVersion"]
                .iter()
                .any(|k| keys.contains_key(k))
        }
    };
    if kubernetes {
        crate::event::decode_json(payload)
    } else {
        sonic_rs::from_slice(payload).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_decoding_reads_both_kollate_and_kubernetes_messages() {
        let mut out = Vec::new();
        let mut e = Event {
            reason: "BackOff".into(),
            message: "Back-off restarting".into(),
            count: 3,
            ..Event::default()
        };
        e.object.kind = "Pod".into();
        e.object.name = "web-1".into();
        e.encode_json(&mut out);
        assert_eq!(decode(&out, Decoding::Auto).unwrap(), e);
        let k8s = br#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"x","namespace":"a"},
            "involvedObject":{"kind":"Pod","name":"web-1"},"reason":"BackOff","message":"m","count":2}"#;
        let decoded = decode(k8s, Decoding::Auto).unwrap();
        assert_eq!(decoded.object.name, "web-1");
        assert_eq!(decoded.count, 2);
        assert!(decode(b"not json", Decoding::Auto).is_err());
    }
}
