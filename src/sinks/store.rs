//! The `store` sink: events (and incident records) into kollate's embedded store
//! ([`crate::store`]), one transaction per batch (or per run of batches already waiting),
//! acknowledged after commit; retention
//! enforced in small steps between batches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{ByteSize, DurationValue};
use crate::event::Severity;
use crate::metrics::ComponentMetrics;
use crate::store::{Retention, Store};
use crate::topology::{BuildError, SinkContext, Task};

/// How often retention runs (one chunk each time, so ingestion never waits long).
const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// Batches already waiting are written together, up to this many events per transaction:
/// fewer commits (each writes the touched index pages to the WAL) when input is fast.
const MAX_TRANSACTION: usize = 65_536;
/// How often the background connection copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// `retention = { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Rows older than this go (e.g. `"30d"`).
    #[serde(default)]
    pub max_age: Option<DurationValue>,
    /// Oldest rows go while the database is bigger than this (e.g. `"5GiB"`).
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Per-severity ages, e.g. `{ info = "3d" }`.
    #[serde(default)]
    pub by_severity: BTreeMap<Severity, DurationValue>,
}

/// `type = "store"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSinkConfig {
    /// The database file (default `<data_dir>/store/events.db`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// How long events are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
}

impl StoreSinkConfig {
    /// Builds the sink's task.
    ///
    /// # Errors
    /// Never at build time; the database is opened when the task starts, and a file that
    /// is not a database or is locked stops the pipeline with that reason.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| ctx.data_dir.join("store").join("events.db"));
        let retention = Retention {
            max_age: self.retention.max_age.map(|d| d.0),
            by_severity: self
                .retention
                .by_severity
                .iter()
                .map(|(s, d)| (*s, d.0))
                .collect(),
            max_size: self.retention.max_size.map(|b| b.0),
        };
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || run(ctx, path, retention)).await??;
            Ok(())
        }))
    }
}

fn run(
    mut ctx: SinkContext,
    path: PathBuf,
    retention: Retention,
) -> Result<(), crate::store::StoreError> {
    let mut store = Store::open(&path)?;
    store.checkpoint_elsewhere()?;
    let _checkpoints = Checkpointer::start(&path, ctx.id.clone())?;
    let mut last_retention = Instant::now() - RETENTION_EVERY;
    while let Some(first) = ctx.input.blocking_recv() {
        let started = Instant::now();
        let mut batches = vec![first];
        let mut n = batches[0].len();
        while n < MAX_TRANSACTION {
            match ctx.input.try_recv() {
                Ok(more) => {
                    n += more.len();
                    batches.push(more);
                }
                Err(_) => break,
            }
        }
        let n = n as u64;
        ComponentMetrics::add(&ctx.metrics.events_in, n);
        match store.insert(batches.iter().flat_map(|b| b.events.iter())) {
            Ok(added) => {
                ctx.metrics.batch_latency.observe(started.elapsed());
                ComponentMetrics::add(&ctx.metrics.events_out, added as u64);
                ComponentMetrics::add(&ctx.metrics.discarded, n - added as u64);
            }
            Err(e) => {
                for batch in &batches {
                    batch.fail();
                }
                ComponentMetrics::add(&ctx.metrics.errors, n);
                return Err(e);
            }
        }
        // Committed: dropping the batches acknowledges them.
        drop(batches);
        if last_retention.elapsed() >= RETENTION_EVERY {
            last_retention = Instant::now();
            if let Err(error) = store.enforce(&retention, chrono::Utc::now()) {
                ComponentMetrics::add(&ctx.metrics.warnings, 1);
                tracing::warn!(component = %ctx.id, %error, "Retention step failed; will retry.");
            }
        }
    }
    Ok(())
}

/// A thread with its own connection that checkpoints the WAL every second, so the sink's
/// thread only writes events; it stops (after a last checkpoint) when dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(
        path: &std::path::Path,
        component: String,
    ) -> Result<Checkpointer, crate::store::StoreError> {
        let store = Store::open(path)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                loop {
                    let last = matches!(
                        stopped.recv_timeout(CHECKPOINT_EVERY),
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
                    );
                    if let Err(error) = store.checkpoint() {
                        tracing::warn!(component, %error, "WAL checkpoint failed; will retry.");
                    }
                    if last {
                        break;
                    }
                }
            })
            .map_err(|e| crate::store::StoreError {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
