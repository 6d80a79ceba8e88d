//! The `file` and `stdin` sources: recorded events from disk or a pipe.
//!
//! Reads every shape in [`crate::format`], from files matched by glob patterns (in sorted
//! order) or from standard input. `follow = true` tails files as they grow, notices new files
//! matching the patterns, and starts over when a file is truncated or replaced. `replay`
//! paces events by their own timestamps.
//!
//! With `checkpoint = true` the source records, per file, the offset up to which every sink
//! has acknowledged the events (see [`crate::batch`]) in `<data_dir>/checkpoints/<id>.json`,
//! and resumes from there after a restart. A file is recognised by a checksum of its first
//! bytes, so a replaced or rotated file is read from the start.
//!
//! Reading runs on a blocking thread: plain buffered reads are the fastest way through a
//! file, and the bounded channel's blocking send gives backpressure for free.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::emit::{
    DEFAULT_BATCH_SIZE, DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MAX_MESSAGE_BYTES, Emitter, ReadError,
    ReadOptions, Replay,
};
use crate::config::{ByteSize, DurationValue, OnError};
use crate::format::{Limits, Reader};
use crate::metrics::ComponentMetrics;
use crate::topology::{BuildError, SourceContext, Task};

/// Default interval between checks for new data when following files.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Read buffer per open file.
const READ_BUFFER: usize = 256 << 10;
/// Bytes of a file's start that identify it across restarts.
const FINGERPRINT_BYTES: u64 = 256;
/// Minimum time between checkpoint writes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_max_document_bytes() -> ByteSize {
    ByteSize(DEFAULT_MAX_DOCUMENT_BYTES)
}
fn default_max_message_bytes() -> ByteSize {
    ByteSize(DEFAULT_MAX_MESSAGE_BYTES)
}
fn default_poll_interval() -> DurationValue {
    DurationValue(DEFAULT_POLL_INTERVAL)
}

/// `type = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Files to read: paths or glob patterns (`events/*.json`, `dumps/**/events.yaml`).
    pub paths: Vec<String>,
    /// Keep reading as files grow, and pick up new files matching `paths`.
    #[serde(default)]
    pub follow: bool,
    /// Replay pace: `"fast"` (default), `"realtime"`, or a speed factor such as `10`.
    #[serde(default)]
    pub replay: Replay,
    /// Undecodable input: `"skip"` (report, count, carry on; default) or `"fail"`.
    #[serde(default)]
    pub on_error: OnError,
    /// Remember, per file, how far every sink has acknowledged, and resume there.
    #[serde(default)]
    pub checkpoint: bool,
    /// Events per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Largest line, pretty-printed object or document held in memory (default 64MiB).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: ByteSize,
    /// Messages longer than this are truncated, with a warning (default 64KiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// How often followed files are checked for new data (default 250ms).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: DurationValue,
}

/// `type = "stdin"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// Replay pace: `"fast"` (default), `"realtime"`, or a speed factor.
    #[serde(default)]
    pub replay: Replay,
    /// Undecodable input: `"skip"` (default) or `"fail"`.
    #[serde(default)]
    pub on_error: OnError,
    /// Events per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Largest line, pretty-printed object or document held in memory (default 64MiB).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: ByteSize,
    /// Messages longer than this are truncated, with a warning (default 64KiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
}

fn read_options(
    replay: Replay,
    on_error: OnError,
    batch_size: usize,
    max_document_bytes: ByteSize,
    max_message_bytes: ByteSize,
) -> ReadOptions {
    ReadOptions {
        replay,
        on_error,
        batch_size: batch_size.max(1),
        limits: Limits {
            max_document_bytes: usize::try_from(max_document_bytes.0).unwrap_or(usize::MAX),
            max_message_bytes: usize::try_from(max_message_bytes.0).unwrap_or(usize::MAX),
        },
    }
}

impl StdinSourceConfig {
    /// Builds the source's task.
    ///
    /// # Errors
    /// Never, today; kept for symmetry with other sources.
    pub fn build(&self, ctx: SourceContext) -> Result<Task, BuildError> {
        let opts = read_options(
            self.replay,
            self.on_error,
            self.batch_size,
            self.max_document_bytes,
            self.max_message_bytes,
        );
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || read_stdin(ctx, opts)).await??;
            Ok(())
        }))
    }
}

fn read_stdin(ctx: SourceContext, opts: ReadOptions) -> Result<(), ReadError> {
    let mut emitter: Emitter<()> = Emitter::new(ctx, opts);
    let stdin = std::io::stdin();
    let mut reader = Reader::new(stdin.lock(), opts.limits);
    let read_failed = |source| ReadError::ReadFailed {
        input: "stdin".into(),
        source,
    };
    let mut failed = None;
    loop {
        let n = reader
            .read_available(&mut emitter.feed("stdin", &(), &mut failed))
            .map_err(read_failed)?;
        ComponentMetrics::add(&emitter.metrics().bytes, n as u64);
        if let Some(e) = failed.take() {
            return Err(e);
        }
        if n == 0 || emitter.stopping() {
            break;
        }
    }
    reader.finish(&mut emitter.feed("stdin", &(), &mut failed));
    if let Some(e) = failed.take() {
        return Err(e);
    }
    let sent = emitter.flush(());
    emitter.close(|()| {});
    sent
}

impl FileSourceConfig {
    /// Total size of the files the patterns match now.
    pub fn input_bytes(&self) -> u64 {
        self.paths
            .iter()
            .filter_map(|p| glob::glob(p).ok())
            .flatten()
            .filter_map(|p| p.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Builds the source's task.
    ///
    /// # Errors
    /// A malformed glob pattern.
    pub fn build(&self, ctx: SourceContext) -> Result<Task, BuildError> {
        for pattern in &self.paths {
            glob::Pattern::new(pattern).map_err(|e| BuildError {
                kind: "source",
                component: ctx.id.clone(),
                message: format!("invalid path pattern `{pattern}`: {e}"),
            })?;
        }
        let source = FileSource {
            patterns: self.paths.clone(),
            follow: self.follow,
            checkpoints: self.checkpoint.then(|| {
                ctx.data_dir
                    .join("checkpoints")
                    .join(format!("{}.json", ctx.id))
            }),
            poll_interval: self.poll_interval.0,
            opts: read_options(
                self.replay,
                self.on_error,
                self.batch_size,
                self.max_document_bytes,
                self.max_message_bytes,
            ),
        };
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || source.run(ctx)).await??;
            Ok(())
        }))
    }
}

/// Where a batch ends in a file.
#[derive(Debug, Clone)]
struct FilePosition {
    path: Arc<str>,
    offset: u64,
    line: u64,
    /// Checksum and length of the file's first bytes, taken when it was opened.
    fingerprint: (u32, u64),
}

/// One file's saved progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileCheckpoint {
    offset: u64,
    line: u64,
    fingerprint: u32,
    fingerprint_len: u64,
}

/// The checkpoint file of one source.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoints {
    files: BTreeMap<String, FileCheckpoint>,
}

struct CheckpointStore {
    path: PathBuf,
    state: Checkpoints,
    dirty: bool,
    last_write: Instant,
}

impl CheckpointStore {
    fn open(path: PathBuf) -> Self {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "Ignored unreadable checkpoint file; reading from the start.");
                Checkpoints::default()
            }),
            Err(_) => Checkpoints::default(),
        };
        CheckpointStore {
            path,
            state,
            dirty: false,
            last_write: Instant::now(),
        }
    }

    fn update(&mut self, p: FilePosition) {
        let (fingerprint, fingerprint_len) = p.fingerprint;
        self.state.files.insert(
            p.path.to_string(),
            FileCheckpoint {
                offset: p.offset,
                line: p.line,
                fingerprint,
                fingerprint_len,
            },
        );
        self.dirty = true;
    }

    /// Where to resume reading `path`, if it is the same file as last time.
    fn resume_point(&self, path: &str) -> Option<(u64, u64)> {
        let saved = self.state.files.get(path)?;
        let size = std::fs::metadata(path).ok()?.len();
        if size < saved.offset || size < saved.fingerprint_len {
            return None;
        }
        let same =
            fingerprint_prefix(Path::new(path), saved.fingerprint_len).ok()? == saved.fingerprint;
        same.then_some((saved.offset, saved.line))
    }

    fn save(&mut self, force: bool) {
        if !self.dirty || (!force && self.last_write.elapsed() < CHECKPOINT_INTERVAL) {
            return;
        }
        match super::write_checkpoint(&self.path, &self.state) {
            Ok(()) => {
                self.dirty = false;
                self.last_write = Instant::now();
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "Failed to write checkpoint.")
            }
        }
    }
}

fn fingerprint(path: &Path) -> std::io::Result<(u32, u64)> {
    let len = std::fs::metadata(path)?.len().min(FINGERPRINT_BYTES);
    Ok((fingerprint_prefix(path, len)?, len))
}

fn fingerprint_prefix(path: &Path, len: u64) -> std::io::Result<u32> {
    let mut buf = Vec::with_capacity(len as usize);
    File::open(path)?.take(len).read_to_end(&mut buf)?;
    Ok(crc32fast::hash(&buf))
}

struct FileSource {
    patterns: Vec<String>,
    follow: bool,
    checkpoints: Option<PathBuf>,
    poll_interval: Duration,
    opts: ReadOptions,
}

/// A file being read.
struct OpenFile {
    name: Arc<str>,
    reader: Reader<BufReader<File>>,
    /// Safe position at the end of the last handled chunk.
    safe: FilePosition,
    fingerprint: (u32, u64),
    #[cfg(unix)]
    inode: u64,
}

impl OpenFile {
    fn open(path: &Path, resume: Option<(u64, u64)>, limits: Limits) -> std::io::Result<OpenFile> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        let (offset, line) = resume.unwrap_or((0, 1));
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        let mut reader = Reader::new(BufReader::with_capacity(READ_BUFFER, file), limits);
        reader.resume_at(offset, line);
        let name: Arc<str> = path.to_string_lossy().into();
        let fingerprint = fingerprint(path)?;
        Ok(OpenFile {
            safe: FilePosition {
                path: name.clone(),
                offset,
                line,
                fingerprint,
            },
            fingerprint,
            name,
            reader,
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }

    fn position(&self) -> FilePosition {
        FilePosition {
            path: self.name.clone(),
            offset: self.reader.committed_offset(),
            line: self.reader.committed_line(),
            fingerprint: self.fingerprint,
        }
    }

    /// Reads one chunk; returns bytes read.
    fn read_chunk(&mut self, emitter: &mut Emitter<FilePosition>) -> Result<usize, ReadError> {
        let mut failed = None;
        let n = self
            .reader
            .read_available(&mut emitter.feed(&self.name, &self.safe, &mut failed))
            .map_err(|source| ReadError::ReadFailed {
                input: self.name.to_string(),
                source,
            })?;
        ComponentMetrics::add(&emitter.metrics().bytes, n as u64);
        if let Some(e) = failed {
            return Err(e);
        }
        self.safe = self.position();
        Ok(n)
    }

    /// Handles what is left at the end of a file that will not grow.
    fn finish(&mut self, emitter: &mut Emitter<FilePosition>) -> Result<(), ReadError> {
        let mut failed = None;
        self.reader
            .finish(&mut emitter.feed(&self.name, &self.safe, &mut failed));
        if let Some(e) = failed {
            return Err(e);
        }
        self.safe = self.position();
        emitter.flush(self.safe.clone())
    }

    /// True when the file at the path was replaced (rotated) or truncated below our offset.
    fn was_replaced(&self) -> bool {
        match std::fs::metadata(&*self.name) {
            Ok(meta) => {
                #[cfg(unix)]
                if std::os::unix::fs::MetadataExt::ino(&meta) != self.inode {
                    return true;
                }
                meta.len() < self.reader.committed_offset()
            }
            Err(_) => false,
        }
    }
}

impl FileSource {
    fn expand(&self) -> (Vec<PathBuf>, Vec<String>) {
        let mut files = Vec::new();
        let mut unmatched = Vec::new();
        for pattern in &self.patterns {
            let mut matched: Vec<PathBuf> = glob::glob(pattern)
                .map(|paths| {
                    paths
                        .filter_map(Result::ok)
                        .filter(|p| p.is_file())
                        .collect()
                })
                .unwrap_or_default();
            if matched.is_empty() {
                unmatched.push(pattern.clone());
            }
            matched.sort();
            for m in matched {
                if !files.contains(&m) {
                    files.push(m);
                }
            }
        }
        (files, unmatched)
    }

    fn run(self, ctx: SourceContext) -> Result<(), ReadError> {
        let mut store = self.checkpoints.clone().map(CheckpointStore::open);
        let mut emitter = Emitter::new(ctx, self.opts);
        let result = if self.follow {
            self.follow_files(&mut emitter, &mut store)
        } else {
            self.read_files(&mut emitter, &mut store)
        };
        // Whatever happened, record what the sinks accepted before we stop.
        emitter.close(|p| {
            if let Some(store) = store.as_mut() {
                store.update(p);
            }
        });
        if let Some(store) = store.as_mut() {
            if emitter.tracker.has_failed() {
                tracing::warn!(
                    component = %emitter.context().id,
                    "A sink failed to deliver a batch: the checkpoint stays before it, so a restart reads it again."
                );
            }
            store.save(true);
        }
        result
    }

    fn open(
        &self,
        path: &Path,
        store: &Option<CheckpointStore>,
        emitter: &mut Emitter<FilePosition>,
    ) -> Result<Option<OpenFile>, ReadError> {
        let key = path.to_string_lossy();
        let resume = store.as_ref().and_then(|s| s.resume_point(&key));
        match OpenFile::open(path, resume, self.opts.limits) {
            Ok(f) => Ok(Some(f)),
            Err(e) => {
                ComponentMetrics::add(&emitter.metrics().errors, 1);
                if self.opts.on_error == OnError::Fail {
                    return Err(ReadError::ReadFailed {
                        input: key.into_owned(),
                        source: e,
                    });
                }
                emitter.report(&key, 0, &e.to_string(), "Cannot open file; skipped.");
                Ok(None)
            }
        }
    }

    fn acknowledge(emitter: &mut Emitter<FilePosition>, store: &mut Option<CheckpointStore>) {
        if let Some(store) = store.as_mut() {
            emitter.tracker.poll(|p| store.update(p));
            store.save(false);
        } else {
            emitter.tracker.poll(|_| {});
        }
    }

    fn read_files(
        &self,
        emitter: &mut Emitter<FilePosition>,
        store: &mut Option<CheckpointStore>,
    ) -> Result<(), ReadError> {
        let (files, unmatched) = self.expand();
        for pattern in unmatched {
            ComponentMetrics::add(&emitter.metrics().errors, 1);
            let message = "no file matches this path";
            if self.opts.on_error == OnError::Fail {
                return Err(ReadError::ReadFailed {
                    input: pattern,
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
                });
            }
            emitter.report(&pattern, 0, message, "Missing input.");
        }
        for path in files {
            let Some(mut file) = self.open(&path, store, emitter)? else {
                continue;
            };
            while file.read_chunk(emitter)? > 0 {
                Self::acknowledge(emitter, store);
                if emitter.stopping() {
                    return emitter.flush(file.position());
                }
            }
            file.finish(emitter)?;
            Self::acknowledge(emitter, store);
        }
        Ok(())
    }

    fn follow_files(
        &self,
        emitter: &mut Emitter<FilePosition>,
        store: &mut Option<CheckpointStore>,
    ) -> Result<(), ReadError> {
        let mut open: Vec<OpenFile> = Vec::new();
        let mut last_scan: Option<Instant> = None;
        let mut warned_unmatched = false;
        while !emitter.stopping() {
            if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_scan = Some(Instant::now());
                let (files, unmatched) = self.expand();
                if !unmatched.is_empty() && !warned_unmatched {
                    warned_unmatched = true;
                    tracing::warn!(component = %emitter.context().id, patterns = ?unmatched, "No file matches yet; waiting for one.");
                }
                for path in files {
                    if !open.iter().any(|f| Path::new(&*f.name) == path)
                        && let Some(f) = self.open(&path, store, emitter)?
                    {
                        open.push(f);
                    }
                }
            }
            let mut progressed = false;
            for file in open.iter_mut() {
                if file.read_chunk(emitter)? > 0 {
                    // Batches never mix files, so each carries its own file's position.
                    emitter.flush(file.position())?;
                    progressed = true;
                } else if file.was_replaced() {
                    tracing::info!(component = %emitter.context().id, file = %file.name, "File was truncated or replaced; reading it from the start.");
                    file.finish(emitter)?;
                    let path = PathBuf::from(&*file.name);
                    match OpenFile::open(&path, None, self.opts.limits) {
                        Ok(f) => *file = f,
                        Err(e) => emitter.report(
                            &file.name.clone(),
                            0,
                            &e.to_string(),
                            "Cannot reopen file.",
                        ),
                    }
                    progressed = true;
                }
            }
            Self::acknowledge(emitter, store);
            if !progressed {
                emitter.sleep(self.poll_interval);
            }
        }
        Ok(())
    }
}
