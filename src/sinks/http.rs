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
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: hyper::Uri,
    content_type: &'static str,
    headers: BTreeMap<String, String>,
    timeout: Duration,
    max_backoff: Duration,
}

/// A connector for `http://` and `https://` (system roots, or only the CA in `ca_file`);
/// `http2` speaks HTTP/2 only (prior knowledge on `http://`, ALPN `h2` on `https://`).
fn connector(
    ca_file: Option<&std::path::Path>,
    http2: bool,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match ca_file {
        None => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?,
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read `tls.ca_file` {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("`tls.ca_file` {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("`tls.ca_file` {}: {e}", path.display()))?;
            }
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let builder = builder.https_or_http();
    Ok(if http2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    })
}

/// A receiver's answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// Response body.
    pub body: Bytes,
    /// Trailers (gRPC puts its status there).
    pub trailers: Option<hyper::HeaderMap>,
}

/// How a post ended.
pub enum Outcome {
    /// 2xx.
    Accepted,
    /// Refused for good (a 4xx other than 429): status and the receiver's words.
    Rejected(u16, String),
}

impl Poster {
    /// A poster of JSON to `url` (`http://` or `https://` with the system's CAs).
    ///
    /// # Errors
    /// A URL that does not parse or is not HTTP.
    pub fn new(
        url: &str,
        headers: BTreeMap<String, String>,
        timeout: Duration,
        max_backoff: Duration,
    ) -> Result<Poster, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("URL `{url}`: must start with http:// or https://"));
        }
        for (name, value) in &headers {
            hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            hyper::header::HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header `{name}`"))?;
        }
        Ok(Poster {
            client: Client::builder(TokioExecutor::new()).build(connector(None, false)?),
            url: uri,
            content_type: "application/json",
            headers,
            timeout,
            max_backoff,
        })
    }

    /// The same poster sending another content type, trusting only the CA in `ca_file` when
    /// given, over HTTP/2 only when `http2`.
    ///
    /// # Errors
    /// A CA file that cannot be read.
    pub fn content_type(
        mut self,
        content_type: &'static str,
        ca_file: Option<&std::path::Path>,
        http2: bool,
    ) -> Result<Poster, String> {
        self.content_type = content_type;
        if ca_file.is_some() || http2 {
            self.client = Client::builder(TokioExecutor::new())
                .http2_only(http2)
                .build(connector(ca_file, http2)?);
        }
        Ok(self)
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
            let answer = self.post(body.clone()).await.map(|a| {
                let text: String = String::from_utf8_lossy(&a.body).chars().take(500).collect();
                (a.status, text)
            });
            match answer {
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

    /// One attempt: (status, response body).
    ///
    /// # Errors
    /// No answer (transport error or timeout).
    pub async fn post(&self, body: Bytes) -> Result<Answer, String> {
        let mut request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, self.content_type);
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
            let headers = response.headers().clone();
            let collected = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            let trailers = collected.trailers().cloned();
            Ok::<_, String>(Answer {
                status,
                headers,
                body: collected.to_bytes(),
                trailers,
            })
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
