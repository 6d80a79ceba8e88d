//! The `store` sink: events (and incident records) into kollate's embedded store
//! ([`crate::store`]), one transaction per batch (or per run of batches already waiting),
//! acknowledged after commit; retention enforced in small steps between batches. A second
//! thread encodes and compresses the next transaction's events while the writer commits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::batch::Batch;
use crate::config::{ByteSize, DurationValue};
use crate::event::{Event, Severity};
use crate::metrics::ComponentMetrics;
use crate::store::{Prepared, Retention, Store};
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
    ctx: SinkContext,
    path: PathBuf,
    retention: Retention,
) -> Result<(), crate::store::StoreError> {
    let SinkContext {
        id, input, metrics, ..
    } = ctx;
    let mut store = Store::open(&path)?;
    store.checkpoint_elsewhere()?;
    let checkpoints = Checkpointer::start(&path, id.clone())?;
    // Encoding and compressing happen on a thread of their own, one transaction ahead of
    // the writer, which then only runs SQLite. A rendezvous: at most one prepared
    // transaction waits while another is written.
    let (ready, prepared) = std::sync::mpsc::sync_channel(0);
    let shared = Arc::clone(&metrics);
    let preparer = std::thread::Builder::new()
        .name("store-prepare".into())
        .spawn(move || prepare(input, &shared, &ready))
        .map_err(|e| crate::store::StoreError {
            path: path.display().to_string(),
            source: e.into(),
        })?;
    let mut last_retention = Instant::now() - RETENTION_EVERY;
    for (batches, made) in prepared {
        let started = Instant::now();
        let n = batches.iter().map(Batch::len).sum::<usize>() as u64;
        let events: Vec<&Event> = batches.iter().flat_map(|b| b.events.iter()).collect();
        let written = made
            .map_err(|e| crate::store::StoreError {
                path: path.display().to_string(),
                source: e.into(),
            })
            .and_then(|made| checkpoints.turn(|| store.write(&events, &made)));
        match written {
            Ok(added) => {
                metrics.batch_latency.observe(started.elapsed());
                ComponentMetrics::add(&metrics.events_out, added as u64);
                ComponentMetrics::add(&metrics.discarded, n - added as u64);
            }
            Err(e) => {
                for batch in &batches {
                    batch.fail();
                }
                ComponentMetrics::add(&metrics.errors, n);
                // The preparer stops at its next hand-over (failing what it holds).
                return Err(e);
            }
        }
        // Committed: dropping the batches acknowledges them.
        drop(events);
        drop(batches);
        if last_retention.elapsed() >= RETENTION_EVERY {
            last_retention = Instant::now();
            if let Err(error) = store.enforce(&retention, chrono::Utc::now()) {
                ComponentMetrics::add(&metrics.warnings, 1);
                tracing::warn!(component = %id, %error, "Retention step failed; will retry.");
            }
        }
    }
    let _ = preparer.join();
    Ok(())
}

/// A transaction's worth of batches, and their events made ready for the store.
type Ready = (Vec<Batch>, std::io::Result<Prepared>);

/// The preparing thread: takes the batches waiting (up to [`MAX_TRANSACTION`] events),
/// encodes and compresses them, and hands them to the writer.
fn prepare(
    mut input: tokio::sync::mpsc::Receiver<Batch>,
    metrics: &ComponentMetrics,
    ready: &std::sync::mpsc::SyncSender<Ready>,
) {
    let mut compressor = Prepared::compressor();
    while let Some(first) = input.blocking_recv() {
        let mut batches = vec![first];
        let mut n = batches[0].len();
        while n < MAX_TRANSACTION {
            match input.try_recv() {
                Ok(more) => {
                    n += more.len();
                    batches.push(more);
                }
                Err(_) => break,
            }
        }
        ComponentMetrics::add(&metrics.events_in, n as u64);
        let made = match &mut compressor {
            Ok(compressor) => {
                let events: Vec<&Event> = batches.iter().flat_map(|b| b.events.iter()).collect();
                Prepared::new(&events, compressor)
            }
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        if let Err(std::sync::mpsc::SendError((batches, _))) = ready.send((batches, made)) {
            // The writer stopped on an error: these were not stored.
            for batch in &batches {
                batch.fail();
            }
            return;
        }
    }
}

/// A thread with its own connection that checkpoints the WAL every second, so the sink's
/// thread only writes events; it stops (after a last checkpoint) when dropped.
///
/// It copies the WAL while the writer goes on, then takes its turn between two
/// transactions to copy the rest and start the WAL over; the writer waits for that turn
/// (a lock) rather than starving it, so the WAL holds about a second of writes.
pub struct Checkpointer {
    turns: Arc<Mutex<()>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the store at `path` (whose writer has called
    /// [`Store::checkpoint_elsewhere`]); `component` names it in warnings.
    ///
    /// # Errors
    /// The store could not be opened, or the thread not started.
    pub fn start(
        path: &std::path::Path,
        component: String,
    ) -> Result<Checkpointer, crate::store::StoreError> {
        let store = Store::open(path)?;
        let turns = Arc::new(Mutex::new(()));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shared = Arc::clone(&turns);
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                loop {
                    let last = matches!(
                        stopped.recv_timeout(CHECKPOINT_EVERY),
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
                    );
                    let done = store.copy_wal().and_then(|()| {
                        let _turn = shared.lock().unwrap_or_else(|p| p.into_inner());
                        store.restart_wal()
                    });
                    if let Err(error) = done {
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
            turns,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs one write transaction, not while a checkpoint has its turn.
    pub fn turn<T>(&self, write: impl FnOnce() -> T) -> T {
        let _turn = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        write()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    /// Under constant writes the background checkpoints start the WAL over, so it holds
    /// about a second of writes, not everything written (a passive checkpoint alone lets it
    /// grow without end).
    #[test]
    fn the_wal_stays_small_under_constant_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let mut store = Store::open(&path).unwrap();
        store.checkpoint_elsewhere().unwrap();
        let checkpoints = Checkpointer::start(&path, "test".into()).unwrap();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < CHECKPOINT_EVERY * 5 {
            let batch: Vec<Event> = (n..n + 500)
                .map(|i| Event {
                    uid: format!("u{i}").into(),
                    message: format!("{i} {}", "x".repeat(300)),
                    timestamp: chrono::DateTime::from_timestamp(1_780_000_000 + i as i64, 0),
                    ..Event::default()
                })
                .collect();
            checkpoints.turn(|| store.insert(&batch)).unwrap();
            n += 500;
        }
        let wal = std::fs::metadata(dir.path().join("events.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        let db = std::fs::metadata(&path).unwrap().len();
        drop(checkpoints);
        assert!(
            db > 0 && wal < db / 2,
            "{n} events: WAL {wal} bytes, database {db}"
        );
    }
}
