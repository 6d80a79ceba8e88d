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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;

use crate::config::{ByteSize, DurationValue};
use crate::event::Event;
use crate::metrics::ComponentMetrics;
use crate::topology::{BuildError, SinkContext, Task};

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
}

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Field(Field),
    Time(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Namespace,
    Kind,
    Name,
    Reason,
    Type,
    Severity,
    Category,
    Host,
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
                let field = match name {
                    "namespace" => Field::Namespace,
                    "kind" => Field::Kind,
                    "name" => Field::Name,
                    "reason" => Field::Reason,
                    "type" => Field::Type,
                    "severity" => Field::Severity,
                    "category" => Field::Category,
                    "host" => Field::Host,
                    other => {
                        return Err(format!(
                            "unknown field `{{{other}}}` in path; use namespace, kind, name, reason, type, severity, category or host"
                        ));
                    }
                };
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
                    let value = match f {
                        Field::Namespace => crate::condition::namespace_of(e),
                        Field::Kind => &e.object.kind,
                        Field::Name => &e.object.name,
                        Field::Reason => &e.reason,
                        Field::Type => &e.event_type,
                        Field::Severity => e.severity.map_or("", |s| s.as_str()),
                        Field::Category => e.category.map_or("", |c| c.as_str()),
                        Field::Host => &e.host,
                    };
                    // Keep values from escaping the directory or making hidden files.
                    let safe = if value.is_empty() { "_" } else { value };
                    out.extend(safe.chars().map(|c| {
                        if c == '/' || c == '\\' || c == '\0' {
                            '_'
                        } else {
                            c
                        }
                    }));
                    if safe.starts_with('.') {
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
}

impl FileSink {
    fn run(mut self, mut ctx: SinkContext) -> Result<(), FileSinkError> {
        let mut by_path: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        let mut single = Vec::with_capacity(1 << 20);
        let mut path_buf = String::new();
        while let Some(batch) = ctx.input.blocking_recv() {
            let n = batch.len() as u64;
            ComponentMetrics::add(&ctx.metrics.events_in, n);
            let result = match &self.constant {
                Some(path) => {
                    single.clear();
                    for e in &batch.events {
                        e.encode_json(&mut single);
                        single.push(b'\n');
                    }
                    let path = path.clone();
                    self.write(&path, &single, &ctx.metrics)
                }
                None => {
                    for e in &batch.events {
                        self.template.render(e, &mut path_buf);
                        let buf = by_path.entry(PathBuf::from(&path_buf)).or_default();
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
            ComponentMetrics::add(&ctx.metrics.events_out, n);
            // Dropping the batch acknowledges it: the events are written (and synced per policy).
        }
        for (path, out) in self.open.drain() {
            out.sync(&path)?;
        }
        Ok(())
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
            let size = meta.as_ref().map_or(0, |m| m.len());
            let syncable = meta.is_some_and(|m| m.is_file());
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
}
