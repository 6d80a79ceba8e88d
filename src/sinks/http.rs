//! What the HTTP sinks share: posting JSON with headers and a timeout, retrying what is
//! worth retrying.
//!
//! Transport errors, timeouts, `429` and `5xx` answers are retried with jittered
//! exponential backoff (250 ms doubling to `max_backoff`), forever: a batch is acknowledged
//! only once it was accepted, so nothing is lost while the receiver is down (backpressure
//! holds the pipeline meanwhile). Other `4xx` answers are a rejection: logged with the
//! receiver's reason, counted as errors, and the batch is dropped (sending it again would
//! fail the same way).

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::DurationValue;
use crate::event::Alert;
use crate::metrics::ComponentMetrics;
use crate::topology::{BuildError, SinkContext};

/// Default per-request timeout of the HTTP sinks.
pub fn default_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}

/// Default longest wait between retries of the HTTP sinks.
pub fn default_max_backoff() -> DurationValue {
    DurationValue(Duration::from_secs(30))
}

/// Where and how to post.
pub struct Poster {
    client: Client<HttpConnector, Full<Bytes>>,
    url: hyper::Uri,
    headers: BTreeMap<String, String>,
    timeout: Duration,
    max_backoff: Duration,
}

/// How a post ended.
pub enum Outcome {
    /// 2xx.
    Accepted,
    /// Refused for good (a 4xx other than 429): status and the receiver's words.
    Rejected(u16, String),
}

impl Poster {
    /// A poster for `url` (`http://` only).
    ///
    /// # Errors
    /// A URL that does not parse or is not `http`.
    pub fn new(
        url: &str,
        headers: BTreeMap<String, String>,
        timeout: Duration,
        max_backoff: Duration,
    ) -> Result<Poster, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "URL `{url}`: only http:// is supported (put a TLS-terminating proxy in front)"
            ));
        }
        for (name, value) in &headers {
            hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            hyper::header::HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header `{name}`"))?;
        }
        Ok(Poster {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: uri,
            headers,
            timeout,
            max_backoff,
        })
    }

    /// A poster for sink `component`, its problems as a build error.
    ///
    /// # Errors
    /// As [`Poster::new`].
    pub fn for_sink(
        component: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        timeout: DurationValue,
        max_backoff: DurationValue,
    ) -> Result<Poster, BuildError> {
        Poster::new(url, headers.clone(), timeout.0, max_backoff.0).map_err(|message| BuildError {
            kind: "sink",
            component: component.to_owned(),
            message,
        })
    }

    /// Posts `body` until it is accepted or rejected; every failed attempt is counted and
    /// logged.
    pub async fn deliver(
        &self,
        component: &str,
        body: Bytes,
        metrics: &ComponentMetrics,
    ) -> Outcome {
        let mut backoff = super::retry::Backoff::new(Duration::from_millis(250), self.max_backoff);
        loop {
            match self.post(body.clone()).await {
                Ok((status, _)) if (200..300).contains(&status) => return Outcome::Accepted,
                Ok((status, text)) if status != 429 && (400..500).contains(&status) => {
                    return Outcome::Rejected(status, text);
                }
                Ok((status, text)) => {
                    ComponentMetrics::add(&metrics.warnings, 1);
                    tracing::warn!(component, url = %self.url, status, response = %text, "Receiver refused for now; retrying.");
                }
                Err(error) => {
                    ComponentMetrics::add(&metrics.warnings, 1);
                    tracing::warn!(component, url = %self.url, %error, "Cannot post; retrying.");
                }
            }
            backoff.wait().await;
        }
    }

    /// One attempt: (status, body text).
    async fn post(&self, body: Bytes) -> Result<(u16, String), String> {
        let mut request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response
                .into_body()
                .collect()
                .await
                .map(|b| {
                    String::from_utf8_lossy(&b.to_bytes())
                        .chars()
                        .take(500)
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, String>((status, text))
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

/// Runs an alert sink: the alerts of each batch (other records are counted as discarded)
/// encoded by `encode` and delivered; rejected payloads go to `dead_letter` when set.
pub async fn run_alert_sink(
    mut ctx: SinkContext,
    poster: Poster,
    encode: impl Fn(&[&Alert]) -> Vec<u8> + Send + 'static,
    dead_letter: Option<std::path::PathBuf>,
) -> Result<(), crate::topology::BoxError> {
    while let Some(batch) = ctx.input.recv().await {
        let started = std::time::Instant::now();
        ComponentMetrics::add(&ctx.metrics.events_in, batch.len() as u64);
        let alerts: Vec<&Alert> = batch
            .events
            .iter()
            .filter_map(|e| e.alert.as_deref())
            .collect();
        let others = batch.len() - alerts.len();
        ComponentMetrics::add(&ctx.metrics.discarded, others as u64);
        if alerts.is_empty() {
            continue;
        }
        let body = Bytes::from(encode(&alerts));
        match poster.deliver(&ctx.id, body.clone(), &ctx.metrics).await {
            Outcome::Accepted => {
                ctx.metrics.batch_latency.observe(started.elapsed());
                ComponentMetrics::add(&ctx.metrics.events_out, alerts.len() as u64);
                ComponentMetrics::add(&ctx.metrics.bytes, body.len() as u64);
            }
            Outcome::Rejected(status, reason) => {
                ComponentMetrics::add(&ctx.metrics.errors, alerts.len() as u64);
                tracing::error!(component = %ctx.id, status, %reason, alerts = alerts.len(), "Receiver rejected alerts; not retrying.");
                if let Some(path) = &dead_letter {
                    super::write_dead_letter(path, Some(status), &reason, &body);
                }
            }
        }
        // Dropping the batch acknowledges it.
    }
    Ok(())
}
