//! Sinks: where events go.
//!
//! | type | module | writes |
//! |---|---|---|
//! | `file` | [`file`] | JSON Lines, templated paths, rotation, fsync policy |
//! | `console` | [`console`] | human-readable lines or JSON on stdout/stderr |
//! | `alertmanager` | [`alertmanager`] | alerts to Prometheus Alertmanager's v2 API |
//! | `webhook` | [`webhook`] | alerts as JSON (or a Slack-compatible body) to any URL |
//! | `store` | [`store`] | the embedded event store (SQLite), with retention |
//! | `kafka` | [`kafka`] | JSON messages to Kafka, acknowledged by delivery reports |
//! | `otlp` | [`otlp`] | OpenTelemetry log records over gRPC or HTTP/protobuf |

pub mod alertmanager;
pub mod console;
pub mod file;
pub mod http;
pub mod kafka;
pub mod otlp;
pub mod retry;
pub mod store;
pub mod webhook;

use serde::Deserialize;
use toml::de::ValueDeserializer;

use crate::topology::{BuildError, SinkContext, Task};

/// The config of any sink, by `type`.
#[derive(Debug)]
pub enum SinkConfig {
    /// `type = "file"`.
    File(file::FileSinkConfig),
    /// `type = "console"`.
    Console(console::ConsoleSinkConfig),
    /// `type = "alertmanager"`.
    Alertmanager(alertmanager::AlertmanagerSinkConfig),
    /// `type = "webhook"`.
    Webhook(webhook::WebhookSinkConfig),
    /// `type = "store"`.
    Store(store::StoreSinkConfig),
    /// `type = "kafka"`.
    Kafka(Box<kafka::KafkaSinkConfig>),
    /// `type = "otlp"`.
    Otlp(Box<otlp::OtlpSinkConfig>),
}

impl SinkConfig {
    /// Every sink `type`.
    pub const TYPES: &[&str] = &[
        "file",
        "console",
        "alertmanager",
        "webhook",
        "store",
        "kafka",
    ];

    /// Deserialises the options of a sink of type `ty`; `None` for an unknown type.
    pub(crate) fn parse(
        ty: &str,
        de: ValueDeserializer<'_>,
    ) -> Result<Option<Self>, toml::de::Error> {
        Ok(Some(match ty {
            "file" => SinkConfig::File(file::FileSinkConfig::deserialize(de)?),
            "console" => SinkConfig::Console(console::ConsoleSinkConfig::deserialize(de)?),
            "alertmanager" => {
                SinkConfig::Alertmanager(alertmanager::AlertmanagerSinkConfig::deserialize(de)?)
            }
            "webhook" => SinkConfig::Webhook(webhook::WebhookSinkConfig::deserialize(de)?),
            "store" => SinkConfig::Store(store::StoreSinkConfig::deserialize(de)?),
            "kafka" => SinkConfig::Kafka(Box::new(kafka::KafkaSinkConfig::deserialize(de)?)),
            "otlp" => SinkConfig::Otlp(Box::new(otlp::OtlpSinkConfig::deserialize(de)?)),
            _ => return Ok(None),
        }))
    }

    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Console(_) => "console",
            SinkConfig::Alertmanager(_) => "alertmanager",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Store(_) => "store",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Otlp(_) => "otlp",
        }
    }

    /// Builds the sink's task.
    ///
    /// # Errors
    /// Options that cannot work (e.g. a malformed path template).
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        match self {
            SinkConfig::File(c) => c.build(ctx),
            SinkConfig::Console(c) => c.build(ctx),
            SinkConfig::Alertmanager(c) => c.build(ctx),
            SinkConfig::Webhook(c) => c.build(ctx),
            SinkConfig::Store(c) => c.build(ctx),
            SinkConfig::Kafka(c) => c.build(ctx),
            SinkConfig::Otlp(c) => c.build(ctx),
        }
    }
}

/// Appends a rejected payload, with why, to the dead-letter file (JSON Lines).
pub(crate) fn write_dead_letter(
    path: &std::path::Path,
    status: Option<u16>,
    reason: &str,
    body: &[u8],
) {
    use std::io::Write;
    let payload: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into());
    let line = serde_json::json!({
        "rejected_at": chrono::Utc::now().to_rfc3339(),
        "status": status,
        "reason": reason,
        "payload": payload,
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(error) = written {
        tracing::error!(file = %path.display(), %error, "Cannot write the dead-letter file.");
    }
}
