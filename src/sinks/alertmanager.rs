//! The `alertmanager` sink: alerts to Prometheus Alertmanager (`POST /api/v2/alerts`).
//!
//! Each alert goes with its labels, annotations, `startsAt`, and `endsAt`: for a firing
//! alert, when it lapses unless renewed (the `alert` transform renews it); for a resolved
//! one, when it was resolved, so Alertmanager sends its resolve notification. Delivery is
//! retried as [`super::http`] describes; a batch is acknowledged once Alertmanager took it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::DurationValue;
use crate::event::Alert;
use crate::topology::{BuildError, SinkContext, Task};

/// `type = "alertmanager"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSinkConfig {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub endpoint: String,
    /// Extra HTTP headers (authentication).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout (default 10s).
    #[serde(default = "super::http::default_timeout")]
    pub timeout: DurationValue,
    /// Longest wait between retries (default 30s).
    #[serde(default = "super::http::default_max_backoff")]
    pub max_backoff: DurationValue,
    /// Link sent as each alert's `generatorURL`.
    #[serde(default)]
    pub generator_url: Option<String>,
    /// Rejected payloads are appended here (JSON Lines) with the reason.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

impl AlertmanagerSinkConfig {
    /// Builds the sink's task.
    ///
    /// # Errors
    /// An endpoint or header that cannot work.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let url = format!("{}/api/v2/alerts", self.endpoint.trim_end_matches('/'));
        let poster = super::http::Poster::for_sink(
            &ctx.id,
            &url,
            &self.headers,
            self.timeout,
            self.max_backoff,
        )?;
        let generator = self.generator_url.clone().unwrap_or_default();
        Ok(Box::pin(super::http::run_alert_sink(
            ctx,
            poster,
            move |alerts| encode(alerts, &generator),
            self.dead_letter.clone(),
        )))
    }
}

/// The Alertmanager v2 body: a JSON array of postable alerts.
fn encode(alerts: &[&Alert], generator: &str) -> Vec<u8> {
    let time = |t: &crate::event::Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let mut v = serde_json::json!({
                "labels": a.labels,
                "annotations": a.annotations,
            });
            if let Some(t) = &a.starts_at {
                v["startsAt"] = time(t).into();
            }
            if let Some(t) = &a.ends_at {
                v["endsAt"] = time(t).into();
            }
            if !generator.is_empty() {
                v["generatorURL"] = generator.into();
            }
            v
        })
        .collect();
    serde_json::to_vec(&body).expect("JSON values serialise")
}
