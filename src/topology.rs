//! Builds the running pipeline from a [`Config`] and supervises it.
//!
//! One task per component. Transforms and sinks each own the receiving end of a bounded
//! channel of [`Batch`]es (capacity `channel_capacity`); every upstream holds a clone of the
//! sending end in its [`Fanout`]. A slow sink therefore fills its channel and blocks its
//! upstreams' sends, all the way back to the sources: memory stays bounded.
//!
//! Shutdown flows downstream. Only sources watch the shutdown token (SIGINT/SIGTERM, or a
//! fatal error anywhere); when a source ends it drops its senders, each transform ends when
//! all of its inputs have closed (after flushing its state), and each sink ends when its
//! input closes (after flushing its writes). A component that fails cancels the token, so
//! the rest drains and the process exits non-zero with the component's error.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::config::Config;
use crate::metrics::{ComponentMetrics, Registry};

/// Errors a running component can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A component's task.
pub type Task = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// How long the pipeline may take to drain after shutdown is requested; shorter than
/// Kubernetes' default 30 s termination grace period.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

/// A component could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("cannot build {kind} `{component}`: {message}")]
pub struct BuildError {
    /// `source`, `transform` or `sink`.
    pub kind: &'static str,
    /// Component name.
    pub component: String,
    /// What went wrong.
    pub message: String,
}

/// The sending side of a component's output: one channel per downstream component.
#[derive(Clone)]
pub struct Fanout {
    senders: Vec<(String, mpsc::Sender<Batch>)>,
}

/// Every downstream component is gone (they only stop early after a fatal error).
#[derive(Debug, thiserror::Error)]
#[error("downstream component `{0}` stopped")]
pub struct DownstreamClosed(pub String);

impl Fanout {
    /// The batch for each downstream: clones for all but the last, which gets the original.
    fn copies(
        &self,
        batch: Batch,
    ) -> impl Iterator<Item = (&(String, mpsc::Sender<Batch>), Batch)> {
        let n = self.senders.len();
        let mut batch = Some(batch);
        self.senders.iter().enumerate().map(move |(i, downstream)| {
            let copy = if i + 1 == n {
                batch.take()
            } else {
                batch.clone()
            };
            (downstream, copy.expect("one batch per downstream"))
        })
    }

    /// Sends a batch to every downstream, waiting while any of them is full (backpressure).
    ///
    /// # Errors
    /// A downstream component has stopped.
    pub async fn send(&mut self, batch: Batch) -> Result<(), DownstreamClosed> {
        for ((id, tx), b) in self.copies(batch) {
            tx.send(b).await.map_err(|_| DownstreamClosed(id.clone()))?;
        }
        Ok(())
    }

    /// [`Fanout::send`] for sources that run on a blocking thread.
    ///
    /// # Errors
    /// A downstream component has stopped.
    pub fn blocking_send(&mut self, batch: Batch) -> Result<(), DownstreamClosed> {
        for ((id, tx), b) in self.copies(batch) {
            tx.blocking_send(b)
                .map_err(|_| DownstreamClosed(id.clone()))?;
        }
        Ok(())
    }

    /// Closes every downstream channel (this component will send nothing more), so that
    /// downstream components can finish and flush while it waits for acknowledgements.
    pub fn close(&mut self) {
        self.senders.clear();
    }
}

/// What a source is given to run.
pub struct SourceContext {
    /// Component name.
    pub id: String,
    /// Where its batches go.
    pub out: Fanout,
    /// Cancelled when the pipeline should stop; sources finish their current batch and end.
    pub shutdown: CancellationToken,
    /// Its counters.
    pub metrics: Arc<ComponentMetrics>,
    /// The global data directory (checkpoints live under it).
    pub data_dir: PathBuf,
}

/// What a sink is given to run.
pub struct SinkContext {
    /// Component name.
    pub id: String,
    /// Its input.
    pub input: mpsc::Receiver<Batch>,
    /// Its counters.
    pub metrics: Arc<ComponentMetrics>,
    /// The global data directory.
    pub data_dir: PathBuf,
}

/// A transform: synchronous work on batches, with optional timers and a final flush.
pub trait Transform: Send + 'static {
    /// Handles one batch, pushing zero or more batches to `out`.
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>);

    /// How often [`Transform::tick`] runs, if at all.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (closing time windows).
    fn tick(&mut self, _out: &mut Vec<Batch>) {}

    /// Called when all inputs have closed: emit what is still held. Returns true while
    /// there is more, so a large state drains in bounded steps.
    fn flush(&mut self, _out: &mut Vec<Batch>) -> bool {
        false
    }

    /// Events refused since the last call, for the `NAME.dead_letter` output.
    fn take_dead_letters(&mut self) -> Option<Batch> {
        None
    }

    /// A failure that must stop the pipeline (a plugin with `on_error = "fail"`).
    fn take_fatal(&mut self) -> Option<String> {
        None
    }
}

/// The suffix naming a transform's dead-letter output in `inputs` (`route.dead_letter`).
pub const DEAD_LETTER_OUTPUT: &str = ".dead_letter";

/// Drives a [`Transform`] until its inputs close, then flushes it.
async fn run_transform(
    mut transform: Box<dyn Transform>,
    mut input: mpsc::Receiver<Batch>,
    mut out: Fanout,
    mut dead_letter: Fanout,
    metrics: Arc<ComponentMetrics>,
) -> Result<(), BoxError> {
    let mut ticker = transform.tick_interval().map(|period| {
        let mut t = tokio::time::interval(period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            batch = input.recv() => match batch {
                Some(batch) => {
                    ComponentMetrics::add(&metrics.events_in, batch.len() as u64);
                    let started = std::time::Instant::now();
                    transform.process(batch, &mut pending);
                    metrics.batch_latency.observe(started.elapsed());
                }
                None => break,
            },
            _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() => {
                transform.tick(&mut pending);
            }
        }
        send_all(&mut pending, &mut out, &metrics).await?;
        side_outputs(transform.as_mut(), &mut dead_letter, &metrics).await?;
    }
    loop {
        let more = transform.flush(&mut pending);
        send_all(&mut pending, &mut out, &metrics).await?;
        side_outputs(transform.as_mut(), &mut dead_letter, &metrics).await?;
        if !more {
            return Ok(());
        }
    }
}

/// Sends what a transform dead-lettered, and stops on a fatal failure it reported.
/// Dead letters nobody reads are counted as discarded (and so acknowledged).
async fn side_outputs(
    transform: &mut dyn Transform,
    dead_letter: &mut Fanout,
    metrics: &ComponentMetrics,
) -> Result<(), BoxError> {
    if let Some(batch) = transform.take_dead_letters() {
        if dead_letter.senders.is_empty() {
            ComponentMetrics::add(&metrics.discarded, batch.len() as u64);
        } else {
            dead_letter.send(batch).await?;
        }
    }
    match transform.take_fatal() {
        Some(message) => Err(message.into()),
        None => Ok(()),
    }
}

async fn send_all(
    pending: &mut Vec<Batch>,
    out: &mut Fanout,
    metrics: &ComponentMetrics,
) -> Result<(), BoxError> {
    for batch in pending.drain(..) {
        // An empty batch only carries acknowledgements: dropping it acknowledges them.
        if !batch.is_empty() {
            ComponentMetrics::add(&metrics.events_out, batch.len() as u64);
            out.send(batch).await?;
        }
    }
    Ok(())
}

/// A pipeline whose tasks are running.
pub struct Running {
    tasks: JoinSet<(String, Result<(), BoxError>)>,
    shutdown: CancellationToken,
    /// Counters of every component.
    pub metrics: Arc<Registry>,
}

/// The pipeline ended with errors.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct RunError(pub Vec<String>);

impl Running {
    /// Builds every component, wires the channels and starts one task per component.
    ///
    /// # Errors
    /// The first component that cannot be built; nothing is started then.
    pub fn start(config: Config) -> Result<Running, BuildError> {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let capacity = config.global.channel_capacity;
        let data_dir = config.global.data_dir.clone();

        // One channel in front of every transform and sink.
        let mut senders: BTreeMap<String, mpsc::Sender<Batch>> = BTreeMap::new();
        let mut receivers: BTreeMap<String, mpsc::Receiver<Batch>> = BTreeMap::new();
        let mut weak = BTreeMap::new();
        for id in config.transforms.keys().chain(config.sinks.keys()) {
            let (tx, rx) = mpsc::channel(capacity);
            weak.insert(id.clone(), tx.downgrade());
            senders.insert(id.clone(), tx);
            receivers.insert(id.clone(), rx);
        }
        // Each component's downstreams, from the inputs lists.
        let mut downstream: BTreeMap<String, Vec<(String, mpsc::Sender<Batch>)>> = BTreeMap::new();
        let edges = config
            .transforms
            .iter()
            .map(|(id, c)| (id, &c.inputs))
            .chain(config.sinks.iter().map(|(id, c)| (id, &c.inputs)));
        for (id, inputs) in edges {
            for input in inputs {
                downstream
                    .entry(input.clone())
                    .or_default()
                    .push((id.clone(), senders[id].clone()));
            }
        }
        // The original senders must go: a channel closes when its last upstream is done.
        drop(senders);
        let mut fanout = |id: &str| Fanout {
            senders: downstream.remove(id).unwrap_or_default(),
        };

        let mut tasks: Vec<(String, Task)> = Vec::new();
        for (id, source) in &config.sources {
            let ctx = SourceContext {
                id: id.clone(),
                out: fanout(id),
                shutdown: shutdown.clone(),
                metrics: registry.register(id, "source", source.type_name()),
                data_dir: data_dir.clone(),
            };
            tasks.push((id.clone(), source.build(ctx)?));
        }
        for (id, transform) in &config.transforms {
            let metrics = registry.register(id, "transform", transform.inner.type_name());
            let _ = metrics.buffer.set(weak[id].clone());
            let built = transform.inner.build(id, &metrics, &data_dir)?;
            let input = receivers.remove(id).expect("channel per transform");
            let dead_letter = fanout(&format!("{id}{DEAD_LETTER_OUTPUT}"));
            tasks.push((
                id.clone(),
                Box::pin(run_transform(
                    built,
                    input,
                    fanout(id),
                    dead_letter,
                    metrics,
                )),
            ));
        }
        for (id, sink) in &config.sinks {
            let metrics = registry.register(id, "sink", sink.inner.type_name());
            let _ = metrics.buffer.set(weak[id].clone());
            let mut input = receivers.remove(id).expect("channel per sink");
            if let Some(buffer) = &sink.buffer {
                let (task, rx) = crate::buffers::build(buffer, id, input, &metrics, &data_dir)?;
                tasks.push((format!("{id}.buffer"), task));
                input = rx;
            }
            let ctx = SinkContext {
                id: id.clone(),
                input,
                metrics,
                data_dir: data_dir.clone(),
            };
            tasks.push((id.clone(), sink.inner.build(ctx)?));
        }

        let mut set = JoinSet::new();
        for (id, task) in tasks {
            set.spawn(async move { (id, task.await) });
        }
        Ok(Running {
            tasks: set,
            shutdown,
            metrics: registry,
        })
    }

    /// The token that stops the sources (and so, in order, everything else).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every component has finished. After shutdown is requested the pipeline
    /// has [`SHUTDOWN_DEADLINE`] to drain; components still running then are aborted.
    ///
    /// # Errors
    /// Every component that failed, and a missed deadline.
    pub async fn wait(mut self) -> Result<(), RunError> {
        let mut errors = Vec::new();
        let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    None => break,
                    Some(Ok((_, Ok(())))) => {}
                    Some(Ok((id, Err(e)))) => {
                        tracing::error!(component = %id, error = %e, "Component failed; stopping the pipeline.");
                        errors.push(format!("{id}: {e}"));
                        self.shutdown.cancel();
                    }
                    Some(Err(e)) => {
                        errors.push(format!("a component task panicked or was cancelled: {e}"));
                        self.shutdown.cancel();
                    }
                },
                _ = self.shutdown.cancelled(), if deadline.is_none() => {
                    deadline = Some(Box::pin(tokio::time::sleep(SHUTDOWN_DEADLINE)));
                }
                _ = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => {
                    errors.push(format!(
                        "pipeline did not drain within {}s; {} component(s) aborted",
                        SHUTDOWN_DEADLINE.as_secs(),
                        self.tasks.len()
                    ));
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RunError(errors))
        }
    }
}
