//! The embedded event store: SQLite (bundled, WAL), written by the `store` sink, read by
//! `kollate query` and `kollate aggregate`.
//!
//! One table of events (incident, pattern and alert records included: they are events),
//! with the fields people filter on as indexed columns and the whole event as JSON; one table
//! of incidents, each row the incident's latest state. An event is stored once per
//! `uid` + `resource_version` (a replay or a restart writes nothing twice).
//!
//! Retention deletes in small chunks (never holding the write lock for long): rows older
//! than `max_age` (or their severity's own age), then the oldest rows while the file is over
//! `max_size`; freed pages are returned to the file system (`auto_vacuum = incremental`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::event::{Event, Severity, Timestamp};

/// Rows deleted per retention step.
const DELETE_CHUNK: i64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    ts INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    node TEXT NOT NULL,
    reason TEXT NOT NULL,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    category TEXT NOT NULL,
    correlation_id TEXT,
    count INTEGER NOT NULL,
    message TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_identity ON events(uid, resource_version) WHERE uid <> '';
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_namespace_ts ON events(namespace, ts);
CREATE INDEX IF NOT EXISTS events_object ON events(kind, name);
CREATE INDEX IF NOT EXISTS events_node ON events(node, ts);
CREATE INDEX IF NOT EXISTS events_reason ON events(reason, ts);
CREATE INDEX IF NOT EXISTS events_severity ON events(severity, ts);
CREATE INDEX IF NOT EXISTS events_category ON events(category, ts);
CREATE INDEX IF NOT EXISTS events_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    first_seen INTEGER,
    last_seen INTEGER,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_last_seen ON incidents(last_seen);
";

/// The store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("event store {path}: {source}")]
pub struct StoreError {
    /// The database file.
    pub path: String,
    /// What SQLite said.
    pub source: rusqlite::Error,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: String,
}

/// How long rows are kept.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Rows older than this go.
    pub max_age: Option<Duration>,
    /// Per severity, instead of `max_age`.
    pub by_severity: Vec<(Severity, Duration)>,
    /// Oldest rows go while the file is bigger than this.
    pub max_size: Option<u64>,
}

/// Filters for [`Store::query`] and [`Store::aggregate`]; `None` is "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// From this time (inclusive).
    pub since: Option<Timestamp>,
    /// Until this time (exclusive).
    pub until: Option<Timestamp>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Involved object kind.
    pub kind: Option<String>,
    /// Involved object name.
    pub name: Option<String>,
    /// Node.
    pub node: Option<String>,
    /// Reason.
    pub reason: Option<String>,
    /// `Normal` / `Warning`.
    pub event_type: Option<String>,
    /// At least this severity.
    pub min_severity: Option<Severity>,
    /// Category.
    pub category: Option<String>,
    /// Incident id.
    pub correlation_id: Option<String>,
    /// Text the message contains (case-insensitive).
    pub search: Option<String>,
}

impl Filter {
    /// The WHERE clause and its parameters.
    fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(t) = self.since {
            clauses.push("ts >= ?".into());
            values.push(Value::Integer(t.timestamp_millis()));
        }
        if let Some(t) = self.until {
            clauses.push("ts < ?".into());
            values.push(Value::Integer(t.timestamp_millis()));
        }
        let exact = [
            ("namespace", &self.namespace),
            ("kind", &self.kind),
            ("name", &self.name),
            ("node", &self.node),
            ("reason", &self.reason),
            ("type", &self.event_type),
            ("category", &self.category),
            ("correlation_id", &self.correlation_id),
        ];
        for (column, value) in exact {
            if let Some(v) = value {
                clauses.push(format!("{column} = ?"));
                values.push(Value::Text(v.clone()));
            }
        }
        if let Some(min) = self.min_severity {
            let allowed: Vec<&str> = [
                Severity::Info,
                Severity::Warning,
                Severity::Error,
                Severity::Critical,
            ]
            .into_iter()
            .filter(|s| *s >= min)
            .map(Severity::as_str)
            .collect();
            clauses.push(format!(
                "severity IN ({})",
                vec!["?"; allowed.len()].join(",")
            ));
            values.extend(allowed.into_iter().map(|s| Value::Text(s.into())));
        }
        if let Some(text) = &self.search {
            clauses.push("message LIKE ? ESCAPE '\\'".into());
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            values.push(Value::Text(format!("%{escaped}%")));
        }
        let sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        (sql, values)
    }
}

/// What [`Store::aggregate`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    /// Namespace.
    Namespace,
    /// Involved kind.
    Kind,
    /// Involved name.
    Name,
    /// Node.
    Node,
    /// Reason.
    Reason,
    /// Type.
    Type,
    /// Severity.
    Severity,
    /// Category.
    Category,
}

impl GroupColumn {
    /// Parses a column name.
    pub fn parse(name: &str) -> Option<GroupColumn> {
        Some(match name {
            "namespace" => GroupColumn::Namespace,
            "kind" => GroupColumn::Kind,
            "name" => GroupColumn::Name,
            "node" | "host" => GroupColumn::Node,
            "reason" => GroupColumn::Reason,
            "type" => GroupColumn::Type,
            "severity" => GroupColumn::Severity,
            "category" => GroupColumn::Category,
            _ => return None,
        })
    }

    /// Parses a list of column names.
    ///
    /// # Errors
    /// An unknown name, saying which ones exist.
    pub fn parse_list(names: &[String]) -> Result<Vec<GroupColumn>, String> {
        names
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| {
                GroupColumn::parse(n).ok_or_else(|| {
                    format!("unknown field `{n}`: expected namespace, kind, name, node, reason, type, severity or category")
                })
            })
            .collect()
    }

    /// The SQL column.
    pub fn column(self) -> &'static str {
        match self {
            GroupColumn::Namespace => "namespace",
            GroupColumn::Kind => "kind",
            GroupColumn::Name => "name",
            GroupColumn::Node => "node",
            GroupColumn::Reason => "reason",
            GroupColumn::Type => "type",
            GroupColumn::Severity => "severity",
            GroupColumn::Category => "category",
        }
    }
}

/// One row of [`Store::aggregate`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AggregateRow {
    /// Start of the time window (when windowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Timestamp>,
    /// The group's values, in `group_by` order.
    pub group: Vec<String>,
    /// Event records in the group.
    pub events: u64,
    /// Occurrences (sum of counts).
    pub occurrences: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// A file that is not a database, is locked by another writer for longer than the busy
    /// timeout, or cannot be created.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let failed = |source| StoreError {
            path: name.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(failed)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(failed)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
        // Index pages stay in memory (32 MiB), the file is read through a map instead of
        // read(2), and WAL checkpoints come every ~40 MiB rather than every 4 MiB.
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(failed)?;
        conn.pragma_update(None, "mmap_size", 268_435_456)
            .map_err(failed)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(failed)?;
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)
            .map_err(failed)?;
        conn.execute_batch(SCHEMA).map_err(failed)?;
        Ok(Store { conn, path: name })
    }

    /// Opens an existing store for reading.
    ///
    /// # Errors
    /// A missing file or one that is not a kollate store.
    pub fn open_existing(path: &Path) -> Result<Store, String> {
        if !path.is_file() {
            return Err(format!("no event store at {}", path.display()));
        }
        let store = Store::open(path).map_err(|e| e.to_string())?;
        Ok(store)
    }

    fn failed(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes events in one transaction; returns how many were new.
    ///
    /// # Errors
    /// SQLite errors (disk full, corruption).
    pub fn insert<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError {
            path: self.path.clone(),
            source: e,
        })?;
        let mut added = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (uid, resource_version, ts, namespace, kind, name, node, reason, type, severity, category, correlation_id, count, message, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(|e| StoreError { path: self.path.clone(), source: e })?;
            let mut incident = tx
                .prepare_cached(
                    "INSERT INTO incidents (id, status, severity, summary, first_seen, last_seen, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(id) DO UPDATE SET status = excluded.status, severity = excluded.severity,
                       summary = excluded.summary, first_seen = excluded.first_seen,
                       last_seen = excluded.last_seen, json = excluded.json",
                )
                .map_err(|e| StoreError { path: self.path.clone(), source: e })?;
            let mut json = Vec::with_capacity(1024);
            for e in events {
                json.clear();
                e.encode_json(&mut json);
                let text = String::from_utf8_lossy(&json);
                let ts = e.timestamp.map_or(0, |t| t.timestamp_millis());
                let namespace = crate::condition::namespace_of(e);
                added += insert
                    .execute(params![
                        e.uid.as_str(),
                        e.resource_version.as_str(),
                        ts,
                        namespace,
                        e.object.kind.as_str(),
                        e.object.name.as_str(),
                        e.host.as_str(),
                        e.reason.as_str(),
                        e.event_type.as_str(),
                        e.severity.map_or("", Severity::as_str),
                        e.category.map_or("", |c| c.as_str()),
                        e.correlation_id.as_deref(),
                        e.occurrences() as i64,
                        e.message.as_str(),
                        text.as_ref(),
                    ])
                    .map_err(|e| StoreError {
                        path: self.path.clone(),
                        source: e,
                    })?;
                if let Some(i) = e
                    .incident
                    .as_ref()
                    .filter(|i| i.summary.starts_with("merged into "))
                {
                    // Folded into another incident: it no longer stands on its own.
                    tx.execute(
                        "DELETE FROM incidents WHERE id = ?1",
                        params![i.id.as_str()],
                    )
                    .map_err(|e| StoreError {
                        path: self.path.clone(),
                        source: e,
                    })?;
                } else if let Some(i) = &e.incident {
                    let status = serde_json::to_value(i.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    incident
                        .execute(params![
                            i.id.as_str(),
                            status,
                            i.severity.as_str(),
                            i.summary,
                            i.first_seen.map(|t| t.timestamp_millis()),
                            i.last_seen.map(|t| t.timestamp_millis()),
                            serde_json::to_string(i).unwrap_or_default(),
                        ])
                        .map_err(|e| StoreError {
                            path: self.path.clone(),
                            source: e,
                        })?;
                }
            }
        }
        tx.commit().map_err(|e| self.failed(e))?;
        Ok(added)
    }

    /// One step of retention at time `now`: deletes at most a chunk of expired rows.
    /// Returns the rows deleted (0: nothing left to do).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn enforce(&mut self, retention: &Retention, now: Timestamp) -> Result<usize, StoreError> {
        let cutoff = |age: Duration| {
            (now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX))
                .timestamp_millis()
        };
        let mut deleted = 0;
        for (severity, age) in &retention.by_severity {
            deleted += self
                .conn
                .execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE severity = ?1 AND ts < ?2 LIMIT ?3)",
                    params![severity.as_str(), cutoff(*age), DELETE_CHUNK],
                )
                .map_err(|e| self.failed(e))?;
        }
        if let Some(age) = retention.max_age {
            deleted += self
                .conn
                .execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 LIMIT ?2)",
                    params![cutoff(age), DELETE_CHUNK],
                )
                .map_err(|e| self.failed(e))?;
            deleted += self
                .conn
                .execute(
                    "DELETE FROM incidents WHERE last_seen < ?1",
                    params![cutoff(age)],
                )
                .map_err(|e| self.failed(e))?;
        }
        if let Some(max) = retention.max_size
            && self.size()? > max
        {
            deleted += self
                .conn
                .execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts LIMIT ?1)",
                    params![DELETE_CHUNK],
                )
                .map_err(|e| self.failed(e))?;
        }
        if deleted > 0 {
            self.conn
                .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(|e| self.failed(e))?;
        }
        Ok(deleted)
    }

    /// Bytes the database occupies (pages in use or free, WAL excluded).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn size(&self) -> Result<u64, StoreError> {
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(|e| self.failed(e))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(|e| self.failed(e))?;
        let page_size: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| self.failed(e))?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    /// Events matching `filter`, newest first, at most `limit`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<Event>, StoreError> {
        let (clause, mut values) = filter.sql();
        values.push(rusqlite::types::Value::Integer(limit as i64));
        let sql = format!("SELECT json FROM events{clause} ORDER BY ts DESC, id DESC LIMIT ?");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter()), |r| r.get::<_, String>(0))
            .map_err(|e| self.failed(e))?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(|e| self.failed(e))?;
            if let Ok(e) = serde_json::from_str::<Event>(&text) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Event records and occurrences matching `filter`, grouped by `group_by` and, when
    /// `window` is set, by time window; largest groups first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn aggregate(
        &self,
        filter: &Filter,
        group_by: &[GroupColumn],
        window: Option<Duration>,
        limit: usize,
    ) -> Result<Vec<AggregateRow>, StoreError> {
        let (clause, mut values) = filter.sql();
        let mut keys: Vec<String> = group_by.iter().map(|g| g.column().to_owned()).collect();
        let window_ms = window.map(|w| (w.as_millis() as i64).max(1));
        if let Some(ms) = window_ms {
            keys.insert(0, format!("(ts / {ms}) * {ms}"));
        }
        let select = if keys.is_empty() {
            "'all'".to_owned()
        } else {
            keys.join(", ")
        };
        let group = if keys.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", keys.join(", "))
        };
        let order = if window_ms.is_some() { "1, " } else { "" };
        values.push(rusqlite::types::Value::Integer(limit as i64));
        let sql = format!(
            "SELECT {select}, COUNT(*), SUM(count) FROM events{clause}{group} ORDER BY {order}COUNT(*) DESC LIMIT ?"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.failed(e))?;
        let width = keys.len().max(1);
        let rows = stmt
            .query_map(params_from_iter(values.iter()), |r| {
                let mut group = Vec::new();
                let mut window_start = None;
                for i in 0..width {
                    if window_ms.is_some() && i == 0 {
                        let ms: i64 = r.get(0)?;
                        window_start = chrono::DateTime::from_timestamp_millis(ms);
                    } else {
                        group.push(r.get::<_, String>(i)?);
                    }
                }
                Ok(AggregateRow {
                    window_start,
                    group,
                    events: r.get::<_, i64>(width)? as u64,
                    occurrences: r.get::<_, Option<i64>>(width + 1)?.unwrap_or(0) as u64,
                })
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    /// Incidents seen since `since`, latest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn incidents(
        &self,
        since: Option<Timestamp>,
    ) -> Result<Vec<crate::event::Incident>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT json FROM incidents WHERE last_seen >= ?1 ORDER BY last_seen DESC")
            .map_err(|e| self.failed(e))?;
        let since = since.map_or(i64::MIN, |t| t.timestamp_millis());
        let rows = stmt
            .query_map(params![since], |r| r.get::<_, String>(0))
            .map_err(|e| self.failed(e))?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(i) = serde_json::from_str(&row.map_err(|e| self.failed(e))?) {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// One incident, if stored.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn incident(&self, id: &str) -> Result<Option<crate::event::Incident>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM incidents WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.failed(e))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
