//! The `webhook` sink: alerts as a JSON POST to any URL, or in a Slack-compatible body.
//!
//! `format = "json"` posts `{"alerts": [...]}` with each alert as kollate writes it
//! (`docs/schema.md`); `format = "slack"` posts `{"text": "..."}`, one line per alert, which
//! Slack, Mattermost and Rocket.Chat incoming webhooks take as they are. Delivery is retried
//! as [`super::http`] describes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::DurationValue;
use crate::event::{Alert, AlertStatus};
use crate::topology::{BuildError, SinkContext, Task};

/// The body's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"alerts": [...]}`.
    #[default]
    Json,
    /// `{"text": "..."}`.
    Slack,
}

/// `type = "webhook"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Where to post.
    pub url: String,
    /// `"json"` (default) or `"slack"`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra HTTP headers (authentication).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout (default 10s).
    #[serde(default = "super::http::default_timeout")]
    pub timeout: DurationValue,
    /// Longest wait between retries (default 30s).
    #[serde(default = "super::http::default_max_backoff")]
    pub max_backoff: DurationValue,
    /// Rejected payloads are appended here (JSON Lines) with the reason.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

impl WebhookSinkConfig {
    /// Builds the sink's task.
    ///
    /// # Errors
    /// A URL or header that cannot work.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let poster = super::http::Poster::for_sink(
            &ctx.id,
            &self.url,
            &self.headers,
            self.timeout,
            self.max_backoff,
        )?;
        let format = self.format;
        Ok(Box::pin(super::http::run_alert_sink(
            ctx,
            poster,
            move |alerts| encode(alerts, format),
            self.dead_letter.clone(),
        )))
    }
}

fn encode(alerts: &[&Alert], format: WebhookFormat) -> Vec<u8> {
    let body = match format {
        WebhookFormat::Json => serde_json::json!({ "alerts": alerts }),
        WebhookFormat::Slack => {
            let lines: Vec<String> = alerts
                .iter()
                .map(|a| {
                    let status = match a.status {
                        AlertStatus::Firing => "FIRING",
                        AlertStatus::Resolved => "RESOLVED",
                    };
                    let summary = a.annotations.get("summary").map_or("", String::as_str);
                    format!("[{status}] {}: {summary}", a.name)
                })
                .collect();
            serde_json::json!({ "text": lines.join("\n") })
        }
    };
    serde_json::to_vec(&body).expect("JSON values serialise")
}
