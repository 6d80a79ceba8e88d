//! What the `file` and `stdin` sources share: turning decoded items into paced, acknowledged
//! batches, counting and reporting bad input, and the options that control it.

use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::batch::{AckTracker, Batch};
use crate::config::OnError;
use crate::event::{Event, Timestamp};
use crate::format::{Decoded, Limits};
use crate::metrics::ComponentMetrics;
use crate::topology::SourceContext;

/// Default number of events per batch.
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Default `max_document_bytes`: the largest line, object or document held in memory.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 64 << 20;
/// Default `max_message_bytes`: longer messages are truncated.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 64 << 10;
/// Bad-input warnings logged per source before they are only counted.
const LOGGED_ERRORS: u64 = 20;

/// How fast to replay recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Replay {
    /// As fast as the pipeline takes them.
    #[default]
    Fast,
    /// At the pace of the events' own timestamps.
    Realtime,
    /// The events' pace sped up by this factor (`10` = ten times faster).
    Speed(f64),
}

impl<'de> Deserialize<'de> for Replay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Factor(f64),
            Text(String),
        }
        let bad = |what: &str| {
            de::Error::custom(format!(
                "invalid replay `{what}`: expected \"fast\", \"realtime\" or a speed factor > 0"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Factor(f) if f > 0.0 && f.is_finite() => Ok(Replay::Speed(f)),
            Raw::Factor(f) => Err(bad(&f.to_string())),
            Raw::Text(t) => match t.as_str() {
                "fast" => Ok(Replay::Fast),
                "realtime" => Ok(Replay::Realtime),
                other => match other.trim_end_matches('x').parse::<f64>() {
                    Ok(f) if f > 0.0 && f.is_finite() => Ok(Replay::Speed(f)),
                    _ => Err(bad(other)),
                },
            },
        }
    }
}

/// Decoding options common to `file` and `stdin`.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Replay pace.
    pub replay: Replay,
    /// What to do with undecodable input.
    pub on_error: OnError,
    /// Events per batch.
    pub batch_size: usize,
    /// Reader bounds.
    pub limits: Limits,
}

/// A source stopped on bad input (with `on_error = "fail"`) or an I/O failure.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Input could not be decoded and `on_error = "fail"`.
    #[error("{input}:{line}: {message} (on_error = \"fail\")")]
    DecodeFailed {
        /// File name or `stdin`.
        input: String,
        /// Line of the bad input.
        line: u64,
        /// What was wrong.
        message: String,
    },
    /// Reading failed.
    #[error("cannot read {input}: {source}")]
    ReadFailed {
        /// File name or `stdin`.
        input: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Every downstream stopped.
    #[error(transparent)]
    Downstream(#[from] crate::topology::DownstreamClosed),
}

/// Paces by event time: how long to wait before emitting an event stamped `t`.
struct Pacer {
    speed: Option<f64>,
    origin: Option<(Instant, Timestamp)>,
}

impl Pacer {
    fn new(replay: Replay) -> Self {
        let speed = match replay {
            Replay::Fast => None,
            Replay::Realtime => Some(1.0),
            Replay::Speed(f) => Some(f),
        };
        Pacer {
            speed,
            origin: None,
        }
    }

    fn delay(&mut self, t: Option<Timestamp>) -> Option<Duration> {
        let speed = self.speed?;
        let t = t?;
        let (wall, first) = *self.origin.get_or_insert((Instant::now(), t));
        let offset = (t - first).to_std().ok()?.div_f64(speed);
        (wall + offset).checked_duration_since(Instant::now())
    }
}

/// Batches decoded items for one source, with acknowledgements carrying positions `P`.
pub struct Emitter<P> {
    ctx: SourceContext,
    opts: ReadOptions,
    batch: Vec<Event>,
    pacer: Pacer,
    /// Hands out notifiers; releases positions once every sink has accepted a batch.
    pub tracker: AckTracker<P>,
    logged: u64,
}

impl<P: Clone> Emitter<P> {
    /// An emitter sending to `ctx.out`.
    pub fn new(ctx: SourceContext, opts: ReadOptions) -> Self {
        Emitter {
            ctx,
            batch: Vec::with_capacity(opts.batch_size),
            pacer: Pacer::new(opts.replay),
            opts,
            tracker: AckTracker::new(),
            logged: 0,
        }
    }

    /// True once the pipeline is shutting down.
    pub fn stopping(&self) -> bool {
        self.ctx.shutdown.is_cancelled()
    }

    /// The source's counters.
    pub fn metrics(&self) -> &ComponentMetrics {
        &self.ctx.metrics
    }

    /// The source's context.
    pub fn context(&self) -> &SourceContext {
        &self.ctx
    }

    /// A reader callback feeding [`Emitter::handle`]; the first error is kept in `failed`
    /// and everything after it ignored.
    pub fn feed<'a>(
        &'a mut self,
        input: &'a str,
        safe: &'a P,
        failed: &'a mut Option<ReadError>,
    ) -> impl FnMut(Decoded) + 'a {
        move |item| {
            if failed.is_none()
                && let Err(e) = self.handle(item, input, safe)
            {
                *failed = Some(e);
            }
        }
    }

    /// Handles one decoded item from `input`. Batches filled here are acknowledged at
    /// `safe`, a position before the item (what follows it is not yet covered).
    ///
    /// # Errors
    /// Bad input with `on_error = "fail"`; downstream gone.
    pub fn handle(&mut self, item: Decoded, input: &str, safe: &P) -> Result<(), ReadError> {
        {
            match item {
                Decoded::Event(event, _) => {
                    ComponentMetrics::add(&self.ctx.metrics.events_in, 1);
                    if let Some(wait) = self.pacer.delay(event.timestamp) {
                        self.flush(safe.clone())?;
                        self.sleep(wait);
                    }
                    self.batch.push(event);
                    if self.batch.len() >= self.opts.batch_size {
                        self.flush(safe.clone())?;
                    }
                }
                Decoded::Discarded(_) => ComponentMetrics::add(&self.ctx.metrics.discarded, 1),
                Decoded::Warning(line, message) => {
                    ComponentMetrics::add(&self.ctx.metrics.warnings, 1);
                    self.report(input, line, &message, "Repaired input.");
                }
                Decoded::Error(line, message) => {
                    ComponentMetrics::add(&self.ctx.metrics.errors, 1);
                    if self.opts.on_error == OnError::Fail {
                        return Err(ReadError::DecodeFailed {
                            input: input.to_owned(),
                            line,
                            message,
                        });
                    }
                    self.report(input, line, &message, "Skipped undecodable input.");
                }
            }
        }
        Ok(())
    }

    /// Reports a problem with input: the first few in full, then every thousandth.
    pub fn report(&mut self, input: &str, line: u64, message: &str, what: &'static str) {
        self.logged += 1;
        if self.logged <= LOGGED_ERRORS || self.logged.is_multiple_of(1000) {
            tracing::warn!(component = %self.ctx.id, file = %input, line, error = %message, problems = self.logged, "{what}");
        }
        if self.logged == LOGGED_ERRORS {
            tracing::warn!(component = %self.ctx.id, "Further input problems are only counted (logged every 1000th).");
        }
    }

    /// Sends the current batch, acknowledged at `position`.
    ///
    /// # Errors
    /// Downstream gone.
    pub fn flush(&mut self, position: P) -> Result<(), ReadError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let events = std::mem::replace(&mut self.batch, Vec::with_capacity(self.opts.batch_size));
        let n = events.len() as u64;
        let notifier = self.tracker.notifier(position);
        self.ctx.out.blocking_send(Batch {
            events,
            notifiers: vec![notifier],
        })?;
        ComponentMetrics::add(&self.ctx.metrics.events_out, n);
        Ok(())
    }

    /// Closes the output (so downstream components can finish and flush), then waits until
    /// every batch sent is acknowledged, calling `released` with each safe position.
    pub fn close(&mut self, released: impl FnMut(P)) {
        self.ctx.out.close();
        self.tracker.close_blocking(released);
    }

    /// Sleeps up to `wait`, waking early on shutdown.
    pub fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }
}
