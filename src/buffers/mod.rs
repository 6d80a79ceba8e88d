//! Buffers in front of sinks: `buffer = { type = "memory", ... }` or `{ type = "disk", ... }`.
//!
//! Without a `buffer`, a sink reads straight from its input channel (`channel_capacity`
//! batches). A **memory** buffer holds up to `max_events` events between the pipeline and the
//! sink, so a sink that slows down for a moment does not stall its upstreams. A **disk**
//! buffer ([`disk`]) writes batches to a checksummed append-only log under
//! `<data_dir>/buffers/<sink>/` and acknowledges them upstream once they are on disk (after
//! the sync its `sync_interval` asks for): the source's checkpoint moves on, and what the sink
//! has not delivered survives a crash or a restart and is sent then.
//!
//! When a buffer is full, `when_full = "block"` (the default) stops taking new batches, so
//! backpressure reaches the sources and nothing is lost; `"drop_newest"` discards the batches
//! that do not fit, counting them (`kollate_buffer_discarded_events_total`), so a stuck sink
//! cannot hold up the rest of the pipeline.

pub mod disk;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::config::{ByteSize, DurationValue};
use crate::metrics::ComponentMetrics;
use crate::topology::{BoxError, BuildError, Task};

/// What to do with new batches when the buffer is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room (backpressure); nothing is lost.
    #[default]
    Block,
    /// Discard what does not fit, counted.
    DropNewest,
}

fn default_max_events() -> usize {
    10_000
}
fn default_sync_interval() -> DurationValue {
    DurationValue(Duration::from_millis(200))
}

/// `buffer = { ... }` on a sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BufferConfig {
    /// Events held in memory.
    Memory {
        /// Most events held (default 10000; whole batches, so it may pass by one batch).
        #[serde(default = "default_max_events")]
        max_events: usize,
        /// `block` (default) or `drop_newest`.
        #[serde(default)]
        when_full: WhenFull,
    },
    /// Events in a log on disk that survives restarts.
    Disk {
        /// Most bytes on disk, e.g. `"1GiB"`.
        max_size: ByteSize,
        /// `block` (default) or `drop_newest`.
        #[serde(default)]
        when_full: WhenFull,
        /// How often written data is synced to the device; upstream acknowledgements wait
        /// for it (default 200ms; `"0s"` syncs every batch).
        #[serde(default = "default_sync_interval")]
        sync_interval: DurationValue,
    },
}

/// Places the buffer between `input` and the sink: the task to run and the sink's input.
///
/// # Errors
/// A disk buffer whose directory cannot be used, or impossible limits.
pub fn build(
    config: &BufferConfig,
    sink: &str,
    input: mpsc::Receiver<Batch>,
    metrics: &Arc<ComponentMetrics>,
    data_dir: &Path,
) -> Result<(Task, mpsc::Receiver<Batch>), BuildError> {
    let error = |message: String| BuildError {
        kind: "sink",
        component: sink.to_owned(),
        message,
    };
    // One batch in the hand-over channel: the buffer, not the channel, holds the backlog.
    let (tx, rx) = mpsc::channel(1);
    let task: Task = match config {
        BufferConfig::Memory {
            max_events,
            when_full,
        } => {
            if *max_events == 0 {
                return Err(error("`buffer.max_events` must be at least 1".into()));
            }
            metrics
                .buffer_max_events
                .store(*max_events as u64, std::sync::atomic::Ordering::Relaxed);
            Box::pin(run_memory(
                input,
                tx,
                *max_events,
                *when_full,
                metrics.clone(),
            ))
        }
        BufferConfig::Disk {
            max_size,
            when_full,
            sync_interval,
        } => {
            let dir = data_dir.join("buffers").join(sink);
            let buffer = disk::DiskBuffer::open(&dir, max_size.0, metrics.clone())
                .map_err(|e| error(format!("disk buffer {}: {e}", dir.display())))?;
            Box::pin(buffer.run(input, tx, *when_full, sync_interval.0))
        }
    };
    Ok((task, rx))
}

/// The memory buffer: a queue of batches between the channel and the sink.
async fn run_memory(
    mut input: mpsc::Receiver<Batch>,
    output: mpsc::Sender<Batch>,
    max_events: usize,
    when_full: WhenFull,
    metrics: Arc<ComponentMetrics>,
) -> Result<(), BoxError> {
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut queued = 0usize;
    let mut open = true;
    while open || !queue.is_empty() {
        let room = queued < max_events || when_full == WhenFull::DropNewest;
        tokio::select! {
            biased;
            permit = output.reserve(), if !queue.is_empty() => {
                let permit = permit.map_err(|_| "the sink stopped")?;
                let batch = queue.pop_front().expect("guarded");
                queued -= batch.len();
                permit.send(batch);
            }
            batch = input.recv(), if open && room => match batch {
                Some(batch) if queued >= max_events => {
                    // Only reached with drop_newest; dropping acknowledges the batch.
                    ComponentMetrics::add(&metrics.buffer_discarded, batch.len() as u64);
                    ComponentMetrics::add(&metrics.discarded, batch.len() as u64);
                }
                Some(batch) => {
                    queued += batch.len();
                    queue.push_back(batch);
                }
                None => open = false,
            },
        }
        metrics
            .buffer_events
            .store(queued as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn batch(n: usize) -> Batch {
        Batch::new(vec![Event::default(); n])
    }

    #[tokio::test]
    async fn a_full_memory_buffer_drops_the_newest_and_counts_them() {
        let metrics = Arc::new(ComponentMetrics::default());
        let (in_tx, in_rx) = mpsc::channel(16);
        let (task, mut out) = build(
            &BufferConfig::Memory {
                max_events: 10,
                when_full: WhenFull::DropNewest,
            },
            "s",
            in_rx,
            &metrics,
            Path::new("."),
        )
        .unwrap();
        for _ in 0..8 {
            in_tx.send(batch(5)).await.unwrap();
        }
        drop(in_tx);
        let runner = tokio::spawn(task);
        // Nobody reads until the input is closed: one batch sits in the hand-over
        // channel, two fill the buffer, the rest are dropped.
        while !runner.is_finished() && ComponentMetrics::get(&metrics.buffer_discarded) < 25 {
            tokio::task::yield_now().await;
        }
        let mut received = 0;
        while let Some(b) = out.recv().await {
            received += b.len();
        }
        runner.await.unwrap().unwrap();
        assert_eq!(received, 15);
        assert_eq!(ComponentMetrics::get(&metrics.buffer_discarded), 25);
    }

    #[tokio::test]
    async fn a_blocking_memory_buffer_loses_nothing() {
        let metrics = Arc::new(ComponentMetrics::default());
        let (in_tx, in_rx) = mpsc::channel(1);
        let (task, mut out) = build(
            &BufferConfig::Memory {
                max_events: 10,
                when_full: WhenFull::Block,
            },
            "s",
            in_rx,
            &metrics,
            Path::new("."),
        )
        .unwrap();
        let runner = tokio::spawn(task);
        let producer = tokio::spawn(async move {
            for _ in 0..100 {
                in_tx.send(batch(5)).await.unwrap();
            }
        });
        let mut received = 0;
        while let Some(b) = out.recv().await {
            received += b.len();
            assert!(ComponentMetrics::get(&metrics.buffer_events) <= 15);
        }
        producer.await.unwrap();
        runner.await.unwrap().unwrap();
        assert_eq!(received, 500);
        assert_eq!(ComponentMetrics::get(&metrics.buffer_discarded), 0);
    }
}
