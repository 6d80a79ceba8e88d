//! The `file` sink: events as JSON Lines, in files named by a template, with rotation.
//!
//! `path` may use event fields in braces (`{namespace}`, `{kind}`, `{name}`, `{reason}`,
//! `{type}`, `{severity}`, `{category}`, `{host}`) and strftime specifiers (`%Y-%m-%d`)
//! taken from the event's timestamp (processing time when it has none). Each batch is
//! encoded once and written with one `write(2)` per file it touches.
//!
//! Rotation: when a file passes `rotate_size` or has been open for `rotate_interval`, it is
//! renamed with a timestamp before its extension (`events.jsonl` ->
//! `events.20240101T000000.000.jsonl`) and a fresh file is started.
//!
//! Durability (`fsync`): with `"never"` (default) a batch is acknowledged once `write(2)`
//! has returned: it survives a crash of kollate, not of the machine. With `"batch"` the file
//! is `fdatasync`ed before every acknowledgement: it survives power loss, at a cost in
//! throughput. At shutdown every file is synced whatever the policy.
//!
//! Crashes: whenever the sink opens an existing file it cuts off an incomplete last line (a
//! write a crash interrupted; the batch was not acknowledged and is sent again), so the
//! next line it writes starts a line of its own.
//!
//! Exactly once across crashes (`idempotent = true`): a source resumes from its last
//! acknowledged checkpoint, so after a `kill -9` it sends again what was written but not yet
//! checkpointed. With this option, the first time the sink touches an existing file it
//! reads the identities (`uid` + `resource_version`) of the events in the file's last
//! [`IDEMPOTENT_TAIL`] bytes; events already there are skipped (counted as discarded).
//! Events without both fields are always written.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{ByteSize, DurationValue};
use crate::event::Event;
use crate::metrics::ComponentMetrics;
use crate::template::Field;
use crate::topology::{BuildError, SinkContext, Task};

/// How much of an existing file's end `idempotent` reads back when it first touches it.
pub const IDEMPOTENT_TAIL: u64 = 8 << 20;

/// Default bound on files held open at once.
pub const DEFAULT_MAX_OPEN_FILES: usize = 64;

fn default_max_open_files() -> usize {
    DEFAULT_MAX_OPEN_FILES
}

/// When written data is forced to disk before it is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Acknowledge after `write(2)`; the OS flushes later (safe against process crashes).
    #[default]
    Never,
    /// `fdatasync` every batch before acknowledging it (safe against power loss).
    Batch,
}

/// `type = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path template, e.g. `archive/events-{namespace}-%Y-%m-%d.jsonl`.
    pub path: String,
    /// Rotate a file once it reaches this size (e.g. `"100MiB"`).
    #[serde(default)]
    pub rotate_size: Option<ByteSize>,
    /// Rotate a file after it has been open this long (e.g. `"1h"`).
    #[serde(default)]
    pub rotate_interval: Option<DurationValue>,
    /// Durability policy: `"never"` (default) or `"batch"`.
    #[serde(default)]
    pub fsync: Fsync,
    /// Most files held open at once; the least recently written is closed beyond it.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// Skip events an existing file already ends with (same `uid` and `resource_version`),
    /// and cut off a line a crash left incomplete: exactly once across restarts.
    #[serde(default)]
    pub idempotent: bool,
}

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Field(Field),
    Time(String),
}

/// A parsed path template.
#[derive(Debug, Clone)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(ch) = rest.chars().next() {
            if ch == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` in path `{text}`"))?;
                let name = &rest[1..end];
                let field = Field::parse(name).ok_or_else(|| {
                    format!(
                        "unknown field `{{{name}}}` in path; use namespace, kind, name, reason, type, severity, category, host, count, correlation_id, uid or resource_version"
                    )
                })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Field(field));
                rest = &rest[end + 1..];
            } else if ch == '%' {
                let spec: String = rest.chars().take(2).collect();
                if StrftimeItems::new(&spec).any(|item| matches!(item, Item::Error)) {
                    return Err(format!("invalid time specifier `{spec}` in path `{text}`"));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Time(spec.clone()));
                rest = &rest[spec.len()..];
            } else {
                literal.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template(pieces))
    }

    /// The path when it does not depend on the event.
    fn constant(&self) -> Option<PathBuf> {
        match self.0.as_slice() {
            [] => Some(PathBuf::new()),
            [Piece::Literal(l)] => Some(PathBuf::from(l)),
            _ => None,
        }
    }

    fn render(&self, e: &Event, out: &mut String) {
        out.clear();
        let time = e.timestamp.unwrap_or_else(Utc::now);
        for piece in &self.0 {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Time(spec) => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "{}", time.format(spec));
                }
                Piece::Field(f) => {
                    let start = out.len();
                    f.render(e, out);
                    // Keep values from escaping the directory or making hidden files.
                    const UNSAFE: [char; 3] = ['/', '\\', '\0'];
                    if out.len() == start {
                        out.push('_');
                    } else if out[start..].contains(UNSAFE) {
                        let safe = out[start..].replace(UNSAFE, "_");
                        out.truncate(start);
                        out.push_str(&safe);
                    }
                    if out[start..].starts_with('.') {
                        out.push('_');
                    }
                }
            }
        }
    }
}

/// The sink failed to write; the pipeline stops rather than lose events.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// A file could not be created or opened.
    #[error("cannot open {path}: {source}")]
    OpenFailed {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing, syncing or rotating failed.
    #[error("cannot write {path}: {source}")]
    WriteFailed {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl FileSinkConfig {
    /// Builds the sink's task.
    ///
    /// # Errors
    /// A malformed path template.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let template = Template::parse(&self.path).map_err(|message| BuildError {
            kind: "sink",
            component: ctx.id.clone(),
            message,
        })?;
        let sink = FileSink {
            constant: template.constant(),
            template,
            rotate_size: self.rotate_size.map(|s| s.0),
            rotate_interval: self.rotate_interval.map(|d| d.0),
            fsync: self.fsync,
            max_open: self.max_open_files.max(1),
            open: HashMap::new(),
            tick: 0,
            idempotent: self.idempotent,
            written: HashMap::new(),
        };
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || sink.run(ctx)).await??;
            Ok(())
        }))
    }
}

struct OpenOut {
    file: File,
    /// Regular files are synced; pipes and devices cannot be.
    syncable: bool,
    size: u64,
    opened: Instant,
    last_used: u64,
}

impl OpenOut {
    /// Forces written data to disk (a no-op for pipes and devices).
    fn sync(&self, path: &Path) -> Result<(), FileSinkError> {
        if !self.syncable {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|source| FileSinkError::WriteFailed {
                path: path.into(),
                source,
            })
    }
}

struct FileSink {
    template: Template,
    constant: Option<PathBuf>,
    rotate_size: Option<u64>,
    rotate_interval: Option<Duration>,
    fsync: Fsync,
    max_open: usize,
    open: HashMap<PathBuf, OpenOut>,
    tick: u64,
    idempotent: bool,
    /// With `idempotent`: per file touched, the identities its tail held when first touched.
    written: HashMap<PathBuf, HashSet<u64>>,
}

impl FileSink {
    fn run(mut self, mut ctx: SinkContext) -> Result<(), FileSinkError> {
        let mut by_path: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        let mut single = Vec::with_capacity(1 << 20);
        let mut path_buf = String::new();
        while let Some(batch) = ctx.input.blocking_recv() {
            let started = std::time::Instant::now();
            let n = batch.len() as u64;
            ComponentMetrics::add(&ctx.metrics.events_in, n);
            let mut skipped = 0;
            let result = match self.constant.clone() {
                Some(path) => {
                    single.clear();
                    for e in &batch.events {
                        if self.already_written(&path, e) {
                            skipped += 1;
                            continue;
                        }
                        e.encode_json(&mut single);
                        single.push(b'\n');
                    }
                    if single.is_empty() {
                        Ok(())
                    } else {
                        self.write(&path, &single, &ctx.metrics)
                    }
                }
                None => {
                    for e in &batch.events {
                        self.template.render(e, &mut path_buf);
                        let path = PathBuf::from(&path_buf);
                        if self.already_written(&path, e) {
                            skipped += 1;
                            continue;
                        }
                        let buf = by_path.entry(path).or_default();
                        e.encode_json(buf);
                        buf.push(b'\n');
                    }
                    by_path
                        .drain()
                        .try_for_each(|(path, buf)| self.write(&path, &buf, &ctx.metrics))
                }
            };
            if let Err(e) = result {
                batch.fail();
                ComponentMetrics::add(&ctx.metrics.errors, n);
                return Err(e);
            }
            ComponentMetrics::add(&ctx.metrics.discarded, skipped);
            ComponentMetrics::add(&ctx.metrics.events_out, n - skipped);
            ctx.metrics.batch_latency.observe(started.elapsed());
            // Dropping the batch acknowledges it: the events are written (and synced per policy).
        }
        for (path, out) in self.open.drain() {
            out.sync(&path)?;
        }
        Ok(())
    }

    /// With `idempotent`: is `e` among the events `path` ended with when first touched?
    fn already_written(&mut self, path: &Path, e: &Event) -> bool {
        if !self.idempotent {
            return false;
        }
        if !self.written.contains_key(path) {
            if self.written.len() >= self.max_open.saturating_mul(4) {
                let open = &self.open;
                self.written.retain(|p, _| open.contains_key(p));
            }
            let tail = read_tail(path).unwrap_or_else(|error| {
                tracing::warn!(file = %path.display(), %error, "Cannot read back the end of the file; events in it may be written again.");
                HashSet::new()
            });
            self.written.insert(path.to_path_buf(), tail);
        }
        identity(&e.uid, &e.resource_version).is_some_and(|id| self.written[path].contains(&id))
    }

    fn write(
        &mut self,
        path: &Path,
        bytes: &[u8],
        metrics: &ComponentMetrics,
    ) -> Result<(), FileSinkError> {
        self.tick += 1;
        let due = self.open.get(path).is_some_and(|o| {
            self.rotate_size
                .is_some_and(|max| o.size > 0 && o.size + bytes.len() as u64 > max)
                || self
                    .rotate_interval
                    .is_some_and(|max| o.opened.elapsed() >= max)
        });
        if due {
            self.open.remove(path).expect("checked").sync(path)?;
            std::fs::rename(path, rotated_name(path)).map_err(|source| {
                FileSinkError::WriteFailed {
                    path: path.into(),
                    source,
                }
            })?;
        }
        if !self.open.contains_key(path) {
            if self.open.len() >= self.max_open {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, o)| o.last_used)
                    .map(|(p, _)| p.clone());
                if let Some(p) = oldest {
                    self.open.remove(&p);
                }
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| FileSinkError::OpenFailed {
                    path: path.into(),
                    source,
                })?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| FileSinkError::OpenFailed {
                    path: path.into(),
                    source,
                })?;
            let meta = file.metadata().ok();
            let mut size = meta.as_ref().map_or(0, |m| m.len());
            let syncable = meta.is_some_and(|m| m.is_file());
            if syncable && size > 0 {
                size = cut_torn_line(&file, path, size).map_err(|source| {
                    FileSinkError::OpenFailed {
                        path: path.into(),
                        source,
                    }
                })?;
            }
            self.open.insert(
                path.to_path_buf(),
                OpenOut {
                    file,
                    syncable,
                    size,
                    opened: Instant::now(),
                    last_used: 0,
                },
            );
        }
        let out = self.open.get_mut(path).expect("opened");
        out.last_used = self.tick;
        out.file
            .write_all(bytes)
            .map_err(|source| FileSinkError::WriteFailed {
                path: path.into(),
                source,
            })?;
        if self.fsync == Fsync::Batch {
            out.sync(path)?;
        }
        out.size += bytes.len() as u64;
        ComponentMetrics::add(&metrics.bytes, bytes.len() as u64);
        Ok(())
    }
}

/// An event's identity for `idempotent`: a hash of `uid` and `resource_version`.
fn identity(uid: &str, resource_version: &str) -> Option<u64> {
    (!uid.is_empty() && !resource_version.is_empty())
        .then(|| xxh3_64(format!("{uid}/{resource_version}").as_bytes()))
}

/// Reads the identities in the complete lines among the last [`IDEMPOTENT_TAIL`] bytes of
/// `path` (nothing if it does not exist).
fn read_tail(path: &Path) -> std::io::Result<HashSet<u64>> {
    #[derive(Deserialize)]
    struct Identity<'a> {
        #[serde(default, borrow)]
        uid: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        resource_version: std::borrow::Cow<'a, str>,
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Ok(HashSet::new());
    }
    let len = file.metadata()?.len();
    let start = len.saturating_sub(IDEMPOTENT_TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut tail)?;
    // An incomplete last line is cut off when the sink opens the file to write.
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    // The first line may be cut by the window; skip it unless the window is the whole file.
    let body = if start == 0 {
        &tail[..complete]
    } else {
        let first = tail[..complete]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(complete, |i| i + 1);
        &tail[first..complete]
    };
    Ok(body
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Identity>(line).ok())
        .filter_map(|id| identity(&id.uid, &id.resource_version))
        .collect())
}

/// Cuts off the bytes after the last newline of `file` (`len` bytes long, open for writing at
/// `path`) and returns its new length. The sink writes whole lines only, so such bytes are a write that a crash
/// interrupted: the batch was not acknowledged and is sent again, and without the cut its
/// first line would be glued to the torn one and unreadable.
fn cut_torn_line(file: &File, path: &Path, len: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 << 10;
    let reader = File::open(path)?;
    let mut buf = vec![0; CHUNK.min(len) as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        reader.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(file = %path.display(), bytes = len - end, "Cut off an incomplete last line (an interrupted write; it is sent again).");
        file.set_len(end)?;
    }
    Ok(end)
}

/// `dir/events.jsonl` -> `dir/events.20240101T000000.000.jsonl` (unique per rotation).
fn rotated_name(path: &Path) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3f").to_string();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{stamp}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{stamp}"),
    };
    let mut candidate = path.with_file_name(&name);
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{name}.{n}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_fields_and_times_safely() {
        let t = Template::parse("out/{namespace}/events-{reason}-%Y-%m-%d.jsonl").unwrap();
        let mut e = Event {
            reason: "../../etc".into(),
            timestamp: crate::event::parse_time("2024-03-05T10:00:00Z"),
            ..Event::default()
        };
        e.object.namespace = "shop".into();
        let mut s = String::new();
        t.render(&e, &mut s);
        assert_eq!(s, "out/shop/events-.._.._etc_-2024-03-05.jsonl");
        assert!(
            Template::parse("x-{nope}")
                .unwrap_err()
                .contains("unknown field")
        );
        assert_eq!(
            Template::parse("plain.jsonl").unwrap().constant(),
            Some(PathBuf::from("plain.jsonl"))
        );
    }

    #[test]
    fn idempotent_reopen_remembers_the_complete_lines_of_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"uid\":\"a\",\"resource_version\":\"1\"}\n{\"uid\":\"b\",\"resource_version\":\"2\"}\n{\"uid\":\"c\",\"reso",
        )
        .unwrap();
        let ids = read_tail(&path).unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&identity("b", "2").unwrap()));
        assert!(!ids.contains(&identity("b", "3").unwrap()));
        assert!(read_tail(&dir.path().join("missing")).unwrap().is_empty());
        assert_eq!(identity("", "1"), None);
    }

    #[test]
    fn a_torn_last_line_is_cut_so_the_next_write_starts_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // Torn lines shorter and longer than the 64 KiB read-back chunk, and a file that is
        // nothing but a torn line.
        let long = format!("{{\"message\":\"{}", "x".repeat(200_000));
        for (complete, torn) in [
            ("{\"n\":1}\n{\"n\":2}\n", "{\"n\":3,\"mess".to_owned()),
            ("{\"n\":1}\n", long.clone()),
            ("", long),
            ("{\"n\":1}\n", String::new()),
        ] {
            std::fs::write(&path, format!("{complete}{torn}")).unwrap();
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            let len = file.metadata().unwrap().len();
            let kept = cut_torn_line(&file, &path, len).unwrap();
            assert_eq!(kept, complete.len() as u64);
            file.write_all(b"{\"n\":9}\n").unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{complete}{{\"n\":9}}\n")
            );
        }
    }
}
