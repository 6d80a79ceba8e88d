//! The embedded event store: SQLite (bundled, WAL), written by the `store` sink, read by
//! `kollate query`, `kollate aggregate`, the HTTP API and the report.
//!
//! The layout (schema version 3) is chosen for ingest speed and long retention:
//! - `events`: one row per stored event (incident, pattern and alert records included: they
//!   are events) with the fields people filter on as columns and where its JSON lives;
//!   indexed by time, namespace + time and node + time. An event is stored once per `uid` +
//!   `resource_version`: the time index is unique on the time and a 128-bit hash of the pair
//!   (the same resource version always carries the same time), so a replay or a restart
//!   writes nothing twice, at the price of one index, not two.
//! - `by_name`, `by_correlation`: deferred indexes on the object name and the correlation
//!   id (name or id, time, event id). Values like these arrive in random order, and an
//!   ordinary index pays a B-tree page write per event for them (it halved ingest speed).
//!   Instead, every [`MERGE_ROWS`] events their entries are inserted in one sorted pass, and
//!   `merged` records the last event id covered. Queries on those fields read the index for
//!   older events and scan the few events written since the last merge.
//! - `blocks`: the events' JSON, up to 64 events per row, zstd-compressed (JSON Lines of
//!   events compress about sixfold together, under twofold one by one). A block holds events
//!   of one severity, so per-severity retention frees whole blocks, and counts its live events.
//! - `rollup`: event records and occurrences per minute and namespace, kind, node, reason,
//!   type, severity and category, kept in the same transaction as the events. Group-bys on
//!   those fields read it, plus the events of the partial minutes at the edges of the time
//!   range, instead of every event.
//! - `incidents`: each incident's latest state.
//!
//! Retention deletes in small chunks (never holding the write lock for long): rows older
//! than `max_age` (or their severity's own age), then the oldest rows while the file is over
//! `max_size`; the rollup and the blocks follow in the same transaction, and freed pages are
//! returned to the file system (`auto_vacuum = incremental`).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params, params_from_iter,
};

use crate::event::{Event, Severity, Str, Timestamp};

/// Rows deleted per retention step.
const DELETE_CHUNK: i64 = 5_000;
/// Events per compressed block of JSON.
const BLOCK_EVENTS: usize = 64;
/// zstd level of the blocks (the fastest regular level: ~6× on event JSON at ~400 MB/s).
const BLOCK_LEVEL: i32 = 1;
/// Decompressed blocks a query keeps at hand (results come in time order, so neighbours
/// share blocks).
const BLOCK_CACHE: usize = 32;
/// The rollup's time resolution.
const MINUTE_MS: i64 = 60_000;
/// `PRAGMA user_version` of the layout below.
const SCHEMA_VERSION: i64 = 3;
/// Fields with a deferred index: (lookup table, events column).
const DEFERRED: [(&str, &str); 2] = [("by_name", "name"), ("by_correlation", "correlation_id")];
/// WAL frames (pages) a passive checkpoint may leave for the restart checkpoint.
const WAL_LEFT_FRAMES: i64 = 2_048;
/// Events written before their deferred index entries are merged in.
const MERGE_ROWS: i64 = 65_536;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    identity BLOB,
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
    block INTEGER NOT NULL,
    slot INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_ts ON events(ts, identity);
CREATE INDEX IF NOT EXISTS events_namespace_ts ON events(namespace, ts);
CREATE INDEX IF NOT EXISTS events_node_ts ON events(node, ts);
CREATE TABLE IF NOT EXISTS by_name (
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (name, ts, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS by_correlation (
    correlation_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (correlation_id, ts, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merged (upto INTEGER NOT NULL);
INSERT INTO merged SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM merged);
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    live INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup (
    minute INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT NOT NULL,
    reason TEXT NOT NULL,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    category TEXT NOT NULL,
    events INTEGER NOT NULL,
    occurrences INTEGER NOT NULL,
    PRIMARY KEY (minute, namespace, kind, node, reason, type, severity, category)
) WITHOUT ROWID;
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

/// Sets a layout 1 store's events aside for conversion: its indexes (whose names layout 2
/// reuses) dropped, the table renamed.
const LAYOUT1_ASIDE: &str = "
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS events_identity;
DROP INDEX IF EXISTS events_ts;
DROP INDEX IF EXISTS events_namespace_ts;
DROP INDEX IF EXISTS events_object;
DROP INDEX IF EXISTS events_node;
DROP INDEX IF EXISTS events_reason;
DROP INDEX IF EXISTS events_severity;
DROP INDEX IF EXISTS events_category;
DROP INDEX IF EXISTS events_correlation;
ALTER TABLE events RENAME TO events_v1;
COMMIT;
";

/// The event columns the rollup keeps, in its key order.
const ROLLUP_COLUMNS: [&str; 7] = [
    "namespace",
    "kind",
    "node",
    "reason",
    "type",
    "severity",
    "category",
];

/// The store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("event store {path}: {source}")]
pub struct StoreError {
    /// The database file.
    pub path: String,
    /// What went wrong (SQLite's error, a block that does not decompress, an old layout).
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: String,
    compressor: zstd::bulk::Compressor<'static>,
    /// Events written between two merges of the deferred indexes.
    merge_rows: i64,
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
    /// The WHERE clause (empty, or starting with " WHERE") and its parameters.
    fn sql(&self) -> (String, Vec<Value>) {
        let (mut clauses, mut values) = (Vec::new(), Vec::new());
        if let Some(t) = self.since {
            clauses.push("ts >= ?".to_owned());
            values.push(Value::Integer(t.timestamp_millis()));
        }
        if let Some(t) = self.until {
            clauses.push("ts < ?".to_owned());
            values.push(Value::Integer(t.timestamp_millis()));
        }
        self.field_clauses(&mut clauses, &mut values);
        (where_clause(&clauses), values)
    }

    /// What the rows are read from, with its parameters (they come before the WHERE
    /// clause's): the events table, or, when the filter names a field with a deferred
    /// index, the events that index lists plus those written since its last merge (read
    /// by id, whatever other index the conditions could use).
    fn source(&self) -> (String, Vec<Value>) {
        let deferred = [&self.name, &self.correlation_id]
            .into_iter()
            .zip(DEFERRED)
            .find_map(|(value, index)| value.as_ref().map(|v| (v, index)));
        let Some((value, (table, column))) = deferred else {
            return ("events".to_owned(), Vec::new());
        };
        let mut lookup = format!("SELECT id FROM {table} WHERE {column} = ?");
        let mut values = vec![Value::Text(value.clone())];
        for (bound, op) in [(self.since, ">="), (self.until, "<")] {
            if let Some(t) = bound {
                lookup.push_str(&format!(" AND ts {op} ?"));
                values.push(Value::Integer(t.timestamp_millis()));
            }
        }
        (
            format!(
                "(SELECT * FROM events NOT INDEXED WHERE id IN ({lookup})
                  UNION ALL
                  SELECT * FROM events NOT INDEXED WHERE id > (SELECT upto FROM merged))"
            ),
            values,
        )
    }

    /// Conditions on everything but time.
    fn field_clauses(&self, clauses: &mut Vec<String>, values: &mut Vec<Value>) {
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
    }

    /// Whether the rollup can answer: no condition on a field it does not keep.
    fn fits_rollup(&self) -> bool {
        self.name.is_none() && self.correlation_id.is_none() && self.search.is_none()
    }
}

fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
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

/// A rollup row's key: the minute and the [`ROLLUP_COLUMNS`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct RollupKey {
    minute: i64,
    fields: [Str; 7],
}

impl RollupKey {
    fn of(e: &Event, ts: i64) -> RollupKey {
        RollupKey {
            minute: minute_of(ts),
            fields: [
                Str::from(crate::condition::namespace_of(e)),
                e.object.kind.clone(),
                e.host.clone(),
                e.reason.clone(),
                e.event_type.clone(),
                Str::from(e.severity.map_or("", Severity::as_str)),
                Str::from(e.category.map_or("", |c| c.as_str())),
            ],
        }
    }

    /// The rollup table's order of keys.
    fn sort_key(&self) -> (i64, [&str; 7]) {
        (self.minute, self.fields.each_ref().map(Str::as_str))
    }

    /// From a row holding `ts` and then the [`ROLLUP_COLUMNS`], from column `first` on.
    fn from_row(r: &Row<'_>, first: usize) -> rusqlite::Result<RollupKey> {
        let field = |i: usize| r.get::<_, String>(first + 1 + i).map(Str::from);
        Ok(RollupKey {
            minute: minute_of(r.get(first)?),
            fields: [
                field(0)?,
                field(1)?,
                field(2)?,
                field(3)?,
                field(4)?,
                field(5)?,
                field(6)?,
            ],
        })
    }
}

/// Event records and occurrences to add to (or take from) the rollup.
type RollupDeltas = HashMap<RollupKey, (i64, i64)>;

fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// What `events` (with their times) add to the rollup, in key order.
fn rollup_of<'a>(events: impl Iterator<Item = (&'a Event, i64)>) -> Vec<(RollupKey, (i64, i64))> {
    let mut deltas = RollupDeltas::new();
    for (e, ts) in events {
        let counts = deltas.entry(RollupKey::of(e, ts)).or_default();
        counts.0 += 1;
        counts.1 += e.occurrences() as i64;
    }
    in_key_order(deltas)
}

/// `deltas` in the rollup table's key order, so that the rows of each minute are visited
/// page by page.
fn in_key_order(deltas: RollupDeltas) -> Vec<(RollupKey, (i64, i64))> {
    let mut deltas: Vec<_> = deltas.into_iter().collect();
    deltas.sort_unstable_by(|(a, _), (b, _)| a.sort_key().cmp(&b.sort_key()));
    deltas
}

/// Adds `deltas` to the rollup, removing rows that fall to zero.
fn apply_rollup(tx: &Transaction<'_>, deltas: &[(RollupKey, (i64, i64))]) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO rollup (minute, namespace, kind, node, reason, type, severity, category, events, occurrences)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT DO UPDATE SET events = events + excluded.events,
           occurrences = occurrences + excluded.occurrences",
    )?;
    let mut emptied = tx.prepare_cached(
        "DELETE FROM rollup WHERE minute = ?1 AND namespace = ?2 AND kind = ?3 AND node = ?4
           AND reason = ?5 AND type = ?6 AND severity = ?7 AND category = ?8 AND events <= 0",
    )?;
    for &(ref key, (events, occurrences)) in deltas {
        let [a, b, c, d, e, f, g] = key.fields.each_ref().map(Str::as_str);
        upsert.execute(params![
            key.minute,
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            events,
            occurrences
        ])?;
        if events < 0 {
            emptied.execute(params![key.minute, a, b, c, d, e, f, g])?;
        }
    }
    Ok(())
}

/// Events made ready for [`Store::write`], which can happen on another thread than the
/// writer's: their rows in the order they are inserted, each block's JSON Lines
/// (compressed; a block holds one severity), and what they add to the rollup.
pub struct Prepared {
    /// One per event given to [`Prepared::new`], in time order.
    rows: Vec<Pending>,
    /// Per block, in order: its compressed JSON Lines.
    blocks: Vec<Vec<u8>>,
    /// The rollup's deltas if every event is new, in key order.
    rollup: Vec<(RollupKey, (i64, i64))>,
}

/// An event to write: its index among the events given to [`Prepared::new`], and its place
/// in the transaction's blocks.
struct Pending {
    ts: i64,
    identity: Option<[u8; 16]>,
    event: usize,
    /// The block's index among the transaction's.
    block: usize,
    slot: usize,
}

impl Prepared {
    /// The compressor [`Prepared::new`] wants (one per thread, reused).
    ///
    /// # Errors
    /// zstd could not set it up (out of memory).
    pub fn compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
        zstd::bulk::Compressor::new(BLOCK_LEVEL)
    }

    /// Encodes and compresses `events` into blocks, one severity each (in time order within
    /// one), orders their rows by time and adds up their rollup.
    ///
    /// # Errors
    /// zstd failed (out of memory).
    pub fn new(
        events: &[&Event],
        compressor: &mut zstd::bulk::Compressor<'static>,
    ) -> std::io::Result<Prepared> {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].severity);
        let mut blocks = Vec::new();
        let mut rows = Vec::with_capacity(events.len());
        let mut lines = Vec::with_capacity(BLOCK_EVENTS * 1024);
        let mut first = 0;
        for (at, &i) in order.iter().enumerate() {
            let held = at - first;
            if held == BLOCK_EVENTS
                || (held > 0 && events[order[first]].severity != events[i].severity)
            {
                blocks.push(compressor.compress(&lines)?);
                lines.clear();
                first = at;
            }
            events[i].encode_json(&mut lines);
            lines.push(b'\n');
            rows.push(Pending {
                ts: events[i].timestamp.map_or(0, |t| t.timestamp_millis()),
                identity: identity(events[i]),
                event: i,
                block: blocks.len(),
                slot: at - first,
            });
        }
        if first < order.len() {
            blocks.push(compressor.compress(&lines)?);
        }
        // Rows go in in time order, whatever block holds them: the time index and the
        // table then grow at their ends instead of splitting pages all over the
        // transaction's time range.
        rows.sort_unstable_by_key(|r| (r.ts, r.identity));
        let rollup = rollup_of(rows.iter().map(|r| (events[r.event], r.ts)));
        Ok(Prepared {
            rows,
            blocks,
            rollup,
        })
    }
}

/// The 128-bit identity of an event with a uid: a hash of uid and resource version.
fn identity(e: &Event) -> Option<[u8; 16]> {
    if e.uid.is_empty() {
        return None;
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(e.uid.as_bytes());
    hasher.update(&[0]);
    hasher.update(e.resource_version.as_bytes());
    Some(hasher.digest128().to_le_bytes())
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// A file that is not a database, holds a layout this version does not know, is locked
    /// by another writer for longer than the busy timeout, or cannot be created. A store of
    /// the first layout is converted (once, resumably).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let failed = |source: rusqlite::Error| StoreError {
            path: name.clone(),
            source: source.into(),
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
        // A WAL file that grew in a burst is cut back once checkpointed.
        conn.pragma_update(None, "journal_size_limit", 67_108_864)
            .map_err(failed)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(failed)?;
        let exists = |table: &str| -> Result<bool, StoreError> {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )
            .map_err(failed)
        };
        let layout1 = version == 0
            && exists("events")?
            && conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'json')",
                    [],
                    |r| r.get(0),
                )
                .map_err(failed)?;
        if layout1 {
            // Layout 1 (one table, the JSON in the row, nine indexes): the indexes go and
            // the table is renamed, then copied over below.
            conn.execute_batch(LAYOUT1_ASIDE).map_err(failed)?;
        } else if version == 2 {
            // Layout 2 had ordinary indexes where layout 3 has deferred ones: they are
            // dropped here and filled below, once.
            conn.execute_batch(
                "DROP INDEX IF EXISTS events_name_ts; DROP INDEX IF EXISTS events_correlation;",
            )
            .map_err(failed)?;
        } else if exists("events")? && version != SCHEMA_VERSION && !exists("events_v1")? {
            return Err(StoreError {
                path: name,
                source: format!(
                    "written by another version of kollate (store layout {version}, this one reads {SCHEMA_VERSION}); move it aside and kollate starts a new one"
                )
                .into(),
            });
        }
        conn.execute_batch(SCHEMA).map_err(failed)?;
        let converting = exists("events_v1")?;
        let compressor = zstd::bulk::Compressor::new(BLOCK_LEVEL).map_err(|e| StoreError {
            path: name.clone(),
            source: e.into(),
        })?;
        let mut store = Store {
            conn,
            path: name,
            compressor,
            merge_rows: MERGE_ROWS,
        };
        if converting {
            store.convert_layout1()?;
        }
        if version == 2 {
            store.transaction(|tx, _| Ok(merge_deferred(tx)?))?;
        }
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| store.failed(e))?;
        Ok(store)
    }

    /// Copies the events of a layout 1 store (set aside as `events_v1`) into this layout,
    /// a chunk per transaction, deleting each chunk from the old table as it goes, so an
    /// interrupted conversion resumes where it stopped.
    fn convert_layout1(&mut self) -> Result<(), StoreError> {
        tracing::info!(path = %self.path, "Converting the event store to layout {SCHEMA_VERSION} (compressed blocks, a rollup); this runs once.");
        let (mut moved, mut unreadable) = (0usize, 0usize);
        loop {
            let chunk = self.transaction(|tx, compressor| {
                let rows: Vec<(i64, String)> = tx
                    .prepare("SELECT id, json FROM events_v1 ORDER BY id LIMIT 10000")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let Some(&(last, _)) = rows.last() else {
                    return Ok(0);
                };
                let events: Vec<Event> = rows
                    .iter()
                    .filter_map(|(_, json)| serde_json::from_str(json).ok())
                    .collect();
                unreadable += rows.len() - events.len();
                let events: Vec<&Event> = events.iter().collect();
                let prepared = Prepared::new(&events, compressor)?;
                write_events(tx, &events, &prepared, MERGE_ROWS)?;
                tx.execute("DELETE FROM events_v1 WHERE id <= ?1", [last])?;
                Ok(rows.len())
            })?;
            if chunk == 0 {
                break;
            }
            moved += chunk;
        }
        self.conn
            .execute_batch("DROP TABLE events_v1;")
            .map_err(|e| self.failed(e))?;
        self.give_back_space()?;
        tracing::info!(path = %self.path, events = moved, unreadable, "Event store converted.");
        Ok(())
    }

    /// Runs `work` in one write transaction (taking the write lock at once) and commits it.
    fn transaction<T>(
        &mut self,
        work: impl FnOnce(
            &Transaction<'_>,
            &mut zstd::bulk::Compressor<'static>,
        ) -> Result<T, Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<T, StoreError> {
        let failed = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| failed(e.into()))?;
        let out = work(&tx, &mut self.compressor).map_err(failed)?;
        tx.commit().map_err(|e| failed(e.into()))?;
        Ok(out)
    }

    /// Leaves WAL checkpoints to [`Store::copy_wal`] and [`Store::restart_wal`] on another
    /// connection (a writer that checkpoints copies pages into the database between its
    /// transactions instead of writing events).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn checkpoint_elsewhere(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| self.failed(e))
    }

    /// Copies what the WAL holds into the database as far as it can without holding up the
    /// writer or readers (a passive checkpoint).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn copy_wal(&self) -> Result<(), StoreError> {
        // The writer goes on meanwhile: copy again what it wrote during the last copy (and
        // sync it) while that is more than a little, so that what a restart checkpoint
        // finds left, and holds the writer up for, is small.
        for _ in 0..4 {
            let (log, copied) = self.wal_checkpoint("PASSIVE")?;
            if log - copied <= WAL_LEFT_FRAMES {
                break;
            }
        }
        Ok(())
    }

    /// Copies the rest of the WAL into the database and starts the WAL over, waiting for
    /// readers and the writer (a restart checkpoint). Under constant writes a passive
    /// checkpoint alone never lets the WAL start over: it would grow without end.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn restart_wal(&self) -> Result<(), StoreError> {
        self.wal_checkpoint("RESTART").map(|_| ())
    }

    /// Runs a checkpoint; returns the frames in the WAL and how many of them are copied.
    fn wal_checkpoint(&self, mode: &str) -> Result<(i64, i64), StoreError> {
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.failed(e))
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

    fn failed(&self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source: source.into(),
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
        let events: Vec<&Event> = events.into_iter().collect();
        let prepared = Prepared::new(&events, &mut self.compressor).map_err(|e| self.failed(e))?;
        self.write(&events, &prepared)
    }

    /// Writes `events`, made ready by [`Prepared::new`], in one transaction; returns how
    /// many were new.
    ///
    /// # Errors
    /// SQLite errors (disk full, corruption).
    pub fn write(&mut self, events: &[&Event], prepared: &Prepared) -> Result<usize, StoreError> {
        let merge_rows = self.merge_rows;
        self.transaction(|tx, _| write_events(tx, events, prepared, merge_rows))
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
            deleted += self.delete(
                "SELECT id FROM events WHERE severity = ?1 AND ts < ?2 LIMIT ?3",
                params![severity.as_str(), cutoff(*age), DELETE_CHUNK],
            )?;
        }
        if let Some(age) = retention.max_age {
            deleted += self.delete(
                "SELECT id FROM events WHERE ts < ?1 LIMIT ?2",
                params![cutoff(age), DELETE_CHUNK],
            )?;
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
            deleted += self.delete(
                "SELECT id FROM events ORDER BY ts LIMIT ?1",
                params![DELETE_CHUNK],
            )?;
        }
        if deleted > 0 {
            self.give_back_space()?;
        }
        Ok(deleted)
    }

    /// Deletes the events `select` picks (a query of ids), with their share of the rollup
    /// and of their blocks, in one transaction. Returns how many went.
    fn delete(&mut self, select: &str, values: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.transaction(|tx, _| Ok(delete_events(tx, select, values)?))
    }

    /// Returns free pages to the file system and cuts the WAL back.
    fn give_back_space(&self) -> Result<(), StoreError> {
        // The pragma frees a page per step: run it to the end (`execute_batch` steps once).
        let mut vacuum = self
            .conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(|e| self.failed(e))?;
        let mut rows = vacuum.query([]).map_err(|e| self.failed(e))?;
        while rows.next().map_err(|e| self.failed(e))?.is_some() {}
        drop(rows);
        self.wal_checkpoint("TRUNCATE").map(|_| ())
    }

    /// Bytes the database occupies (pages in use or free, WAL excluded).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn size(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| -> Result<i64, StoreError> {
            self.conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .map_err(|e| self.failed(e))
        };
        let in_use = pragma("page_count")? - pragma("freelist_count")?;
        Ok((in_use.max(0) * pragma("page_size")?) as u64)
    }

    /// Events matching `filter`, newest first, at most `limit`.
    ///
    /// # Errors
    /// SQLite errors; a block of JSON that does not decompress (a damaged file).
    pub fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<Event>, StoreError> {
        let (source, mut values) = filter.source();
        let (clause, conditions) = filter.sql();
        values.extend(conditions);
        values.push(Value::Integer(limit as i64));
        let sql =
            format!("SELECT block, slot FROM {source}{clause} ORDER BY ts DESC, id DESC LIMIT ?");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.failed(e))?;
        let places: Vec<(i64, usize)> = stmt
            .query_map(params_from_iter(values.iter()), |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as usize))
            })
            .map_err(|e| self.failed(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(e))?;
        let mut read = self
            .conn
            .prepare_cached("SELECT data FROM blocks WHERE id = ?1")
            .map_err(|e| self.failed(e))?;
        let mut blocks =
            lru::LruCache::new(NonZeroUsize::new(BLOCK_CACHE).unwrap_or(NonZeroUsize::MIN));
        let mut out = Vec::with_capacity(places.len());
        for (block, slot) in places {
            let lines = match blocks.get(&block) {
                Some(lines) => lines,
                None => {
                    let data: Vec<u8> = read
                        .query_row(params![block], |r| r.get(0))
                        .map_err(|e| self.failed(e))?;
                    let lines = zstd::stream::decode_all(data.as_slice())
                        .map_err(|e| self.failed(format!("block {block}: {e}")))?;
                    blocks.get_or_insert(block, || lines)
                }
            };
            let line = lines.split(|b| *b == b'\n').nth(slot).unwrap_or_default();
            match serde_json::from_slice::<Event>(line) {
                Ok(e) => out.push(e),
                Err(e) => return Err(self.failed(format!("block {block}, event {slot}: {e}"))),
            }
        }
        Ok(out)
    }

    /// Event records and occurrences matching `filter`, grouped by `group_by` and, when
    /// `window` is set, by time window; largest groups first.
    ///
    /// Groups and filters on the fields the rollup keeps, with windows of whole minutes, read
    /// the rollup for the whole minutes of the time range and the events only for the
    /// partial minutes at its edges; anything else reads the events.
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
        let window_ms = window.map(|w| (w.as_millis() as i64).max(1));
        let since = filter.since.map_or(i64::MIN, |t| t.timestamp_millis());
        let until = filter.until.map_or(i64::MAX, |t| t.timestamp_millis());
        // The whole minutes of [since, until).
        let first_minute = if since == i64::MIN {
            i64::MIN
        } else {
            minute_of(since.saturating_add(MINUTE_MS - 1))
        };
        let end_minute = if until == i64::MAX {
            i64::MAX
        } else {
            minute_of(until)
        };
        let use_rollup = filter.fits_rollup()
            && !group_by.contains(&GroupColumn::Name)
            && window_ms.is_none_or(|w| w % MINUTE_MS == 0)
            && first_minute < end_minute;
        let keys = |ts: &str| -> Vec<String> {
            let mut keys: Vec<String> = group_by.iter().map(|g| g.column().to_owned()).collect();
            if let Some(ms) = window_ms {
                keys.insert(0, format!("({ts} / {ms}) * {ms}"));
            }
            if keys.is_empty() {
                keys.push("'all'".to_owned());
            }
            keys
        };
        let aliased = |ts: &str| -> String {
            keys(ts)
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{k} AS g{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let width = keys("ts").len();
        let groups: Vec<String> = (0..width).map(|i| format!("g{i}")).collect();
        let groups = groups.join(", ");
        let (mut clauses, mut values) = (Vec::new(), Vec::new());
        filter.field_clauses(&mut clauses, &mut values);
        // The time ranges read from the events: all of [since, until), or with the rollup,
        // only the partial minutes at its edges.
        let mut ranges = Vec::new();
        if use_rollup {
            if since < first_minute {
                ranges.push((since, first_minute));
            }
            if end_minute < until {
                ranges.push((end_minute, until));
            }
        } else {
            ranges.push((since, until));
        }
        let mut parts = Vec::new();
        let mut params = Vec::new();
        if use_rollup {
            parts.push(format!(
                "SELECT {}, events AS n, occurrences AS o FROM rollup{}",
                aliased("minute"),
                where_clause(
                    &["minute >= ?".to_owned(), "minute < ?".to_owned()]
                        .into_iter()
                        .chain(clauses.iter().cloned())
                        .collect::<Vec<_>>()
                ),
            ));
            params.extend([Value::Integer(first_minute), Value::Integer(end_minute)]);
            params.extend(values.iter().cloned());
        }
        let (events, events_values) = filter.source();
        for (from, to) in ranges {
            params.extend(events_values.iter().cloned());
            let mut conditions = Vec::new();
            if from != i64::MIN {
                conditions.push("ts >= ?".to_owned());
                params.push(Value::Integer(from));
            }
            if to != i64::MAX {
                conditions.push("ts < ?".to_owned());
                params.push(Value::Integer(to));
            }
            conditions.extend(clauses.iter().cloned());
            params.extend(values.iter().cloned());
            parts.push(format!(
                "SELECT {}, 1 AS n, count AS o FROM {events}{}",
                aliased("ts"),
                where_clause(&conditions),
            ));
        }
        let source = parts.join(" UNION ALL ");
        let order = if window_ms.is_some() { "g0, " } else { "" };
        params.push(Value::Integer(limit as i64));
        let sql = format!(
            "SELECT {groups}, SUM(n), SUM(o) FROM ({source}) GROUP BY {groups} ORDER BY {order}SUM(n) DESC LIMIT ?"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map(params_from_iter(params.iter()), |r| {
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
/// Inserts `events` with their blocks and rollup; returns how many were new.
fn write_events(
    tx: &Transaction<'_>,
    events: &[&Event],
    prepared: &Prepared,
    merge_rows: i64,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO events (id, identity, ts, namespace, kind, name, node, reason, type, severity, category, correlation_id, count, message, block, slot)
         VALUES (?16, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    // Ids are given, not left to SQLite: it would reuse the id of a deleted last row, which
    // could be one the deferred indexes already cover.
    let (upto, last): (i64, i64) = tx.query_row(
        "SELECT upto, coalesce((SELECT max(id) FROM events), 0) FROM merged",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut next_id = upto.max(last) + 1;
    let mut incident = tx.prepare_cached(
        "INSERT INTO incidents (id, status, severity, summary, first_seen, last_seen, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, severity = excluded.severity,
           summary = excluded.summary, first_seen = excluded.first_seen,
           last_seen = excluded.last_seen, json = excluded.json",
    )?;
    let mut add_block =
        tx.prepare_cached("INSERT INTO blocks (id, live, data) VALUES (?1, ?2, ?3)")?;
    let block: i64 = tx.query_row("SELECT coalesce(max(id), 0) + 1 FROM blocks", [], |r| {
        r.get(0)
    })?;
    // Each block gets its id now; one none of whose events is new (a replay) is not
    // written, leaving its id unused.
    let mut live = vec![0_i64; prepared.blocks.len()];
    let mut new = Vec::with_capacity(prepared.rows.len());
    for row in &prepared.rows {
        let event = events[row.event];
        if write_event(tx, &mut insert, &mut incident, event, row, next_id, block)? {
            next_id += 1;
            live[row.block] += 1;
            new.push((event, row.ts));
        }
    }
    for ((live, data), id) in live.iter().zip(&prepared.blocks).zip(block..) {
        if *live > 0 {
            add_block.execute(params![id, live, data])?;
        }
    }
    if new.len() == prepared.rows.len() {
        apply_rollup(tx, &prepared.rollup)?;
    } else {
        // A replay: only the new events count.
        apply_rollup(tx, &rollup_of(new.iter().copied()))?;
    }
    if next_id - 1 - upto >= merge_rows {
        merge_deferred(tx)?;
    }
    Ok(new.len())
}

/// Inserts one event's row (and its incident's state) unless it is already stored, its
/// block numbered from `first_block`; returns whether it was new.
fn write_event(
    tx: &Transaction<'_>,
    insert: &mut rusqlite::CachedStatement<'_>,
    incident: &mut rusqlite::CachedStatement<'_>,
    e: &Event,
    row: &Pending,
    id: i64,
    first_block: i64,
) -> rusqlite::Result<bool> {
    let inserted = insert.execute(params![
        row.identity,
        row.ts,
        crate::condition::namespace_of(e),
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
        first_block + row.block as i64,
        row.slot as i64,
        id,
    ])?;
    if inserted == 0 {
        return Ok(false);
    }
    if let Some(i) = e.incident.as_ref().filter(|i| i.merged_into.is_some()) {
        // Folded into another incident: it no longer stands on its own.
        tx.prepare_cached("DELETE FROM incidents WHERE id = ?1")?
            .execute(params![i.id.as_str()])?;
    } else if let Some(i) = &e.incident {
        let status = serde_json::to_value(i.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        incident.execute(params![
            i.id.as_str(),
            status,
            i.severity.as_str(),
            i.summary,
            i.first_seen.map(|t| t.timestamp_millis()),
            i.last_seen.map(|t| t.timestamp_millis()),
            serde_json::to_string(i).unwrap_or_default(),
        ])?;
    }
    Ok(true)
}

/// Inserts the deferred index entries of the events written since the last merge, sorted,
/// so that each B-tree page is written once per merge rather than once per event.
fn merge_deferred(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let upto: i64 = tx.query_row("SELECT upto FROM merged", [], |r| r.get(0))?;
    for (table, column) in DEFERRED {
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO {table} ({column}, ts, id)
                 SELECT {column}, ts, id FROM events WHERE id > ?1 AND {column} IS NOT NULL
                 ORDER BY 1, 2, 3"
            ),
            [upto],
        )?;
    }
    tx.execute(
        "UPDATE merged SET upto = max(upto, coalesce((SELECT max(id) FROM events), 0))",
        [],
    )?;
    Ok(())
}

/// Deletes the events `select` picks, takes them out of the rollup and out of their blocks
/// (a block with no live event left goes); returns how many went.
fn delete_events(
    tx: &Transaction<'_>,
    select: &str,
    values: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    let mut blocks: HashMap<i64, i64> = HashMap::new();
    let mut rollup = RollupDeltas::new();
    let mut deleted = 0;
    let upto: i64 = tx.query_row("SELECT upto FROM merged", [], |r| r.get(0))?;
    // Per deferred index, the entries of the deleted events it covers.
    let mut entries: [Vec<(String, i64, i64)>; DEFERRED.len()] = Default::default();
    {
        let mut stmt = tx.prepare(&format!(
            "DELETE FROM events WHERE id IN ({select})
             RETURNING block, count, ts, {}, id, {}",
            ROLLUP_COLUMNS.join(", "),
            DEFERRED.map(|(_, column)| column).join(", ")
        ))?;
        let mut rows = stmt.query(values)?;
        let first_deferred = 3 + ROLLUP_COLUMNS.len() + 1;
        while let Some(r) = rows.next()? {
            deleted += 1;
            *blocks.entry(r.get(0)?).or_default() += 1;
            let counts = rollup.entry(RollupKey::from_row(r, 2)?).or_default();
            counts.0 -= 1;
            counts.1 -= r.get::<_, i64>(1)?;
            let (ts, id): (i64, i64) = (r.get(2)?, r.get(first_deferred - 1)?);
            if id <= upto {
                for (i, list) in entries.iter_mut().enumerate() {
                    if let Some(value) = r.get::<_, Option<String>>(first_deferred + i)? {
                        list.push((value, ts, id));
                    }
                }
            }
        }
    }
    for ((table, column), mut list) in DEFERRED.into_iter().zip(entries) {
        // In key order, like the merge, for the same locality.
        list.sort_unstable();
        let mut remove = tx.prepare_cached(&format!(
            "DELETE FROM {table} WHERE {column} = ?1 AND ts = ?2 AND id = ?3"
        ))?;
        for (value, ts, id) in list {
            remove.execute(params![value, ts, id])?;
        }
    }
    let mut release = tx.prepare_cached("UPDATE blocks SET live = live - ?2 WHERE id = ?1")?;
    let mut drop = tx.prepare_cached("DELETE FROM blocks WHERE id = ?1 AND live <= 0")?;
    for (block, n) in blocks {
        release.execute(params![block, n])?;
        drop.execute(params![block])?;
    }
    apply_rollup(tx, &in_key_order(rollup))?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_780_000_000;

    /// Events on 11 pods in 3 namespaces, 4 nodes (a fifth on none) and 5 incidents (a
    /// third without one), times out of order.
    fn events(from: usize, n: usize) -> Vec<Event> {
        (from..from + n)
            .map(|i| {
                let mut e = Event {
                    uid: format!("u{i}").into(),
                    resource_version: "1".into(),
                    reason: "BackOff".into(),
                    message: format!("m{i}"),
                    timestamp: chrono::DateTime::from_timestamp(
                        START + (i as i64 * 7919) % 5000,
                        0,
                    ),
                    severity: Some([Severity::Info, Severity::Warning][i % 2]),
                    correlation_id: (i % 3 != 0).then(|| Str::from(format!("c{}", i % 5))),
                    ..Event::default()
                };
                e.object.kind = "Pod".into();
                e.object.name = format!("p{}", (i * 31) % 11).into();
                e.object.namespace = format!("ns{}", (i * 7) % 3).into();
                e.host = if i % 5 == 0 {
                    Str::default()
                } else {
                    format!("n{}", i % 4).into()
                };
                e
            })
            .collect()
    }

    /// Every name, correlation id, node and namespace, with and without a time range (and
    /// with a limit), answered by the store as counted over `stored`.
    fn check_lookups(store: &Store, stored: &[Event]) {
        let ranges = [(None, None), (Some(START + 1000), Some(START + 3000))];
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0);
        type Field = fn(&mut Filter) -> &mut Option<String>;
        type Value = fn(&Event) -> &str;
        let fields: [(&str, Field, Value); 4] = [
            ("name", |f| &mut f.name, |e| e.object.name.as_str()),
            (
                "correlation",
                |f| &mut f.correlation_id,
                |e| e.correlation_id.as_deref().unwrap_or("none"),
            ),
            ("node", |f| &mut f.node, |e| e.host.as_str()),
            (
                "namespace",
                |f| &mut f.namespace,
                |e| crate::condition::namespace_of(e),
            ),
        ];
        // Every value of every field (and the empty one), each asked of every field.
        let values: Vec<String> = (0..11)
            .map(|k| format!("p{k}"))
            .chain((0..5).map(|k| format!("c{k}")))
            .chain((0..4).map(|k| format!("n{k}")))
            .chain((0..3).map(|k| format!("ns{k}")))
            .chain([String::new()])
            .collect();
        for (since, until) in ranges {
            let within = |e: &Event| {
                let t = e.timestamp.unwrap().timestamp();
                since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)
            };
            for (field, set, get) in fields {
                for value in &values {
                    let mut expected: Vec<&Event> = stored
                        .iter()
                        .filter(|e| get(e) == value && within(e))
                        .collect();
                    let mut filter = Filter {
                        since: since.and_then(at),
                        until: until.and_then(at),
                        ..Filter::default()
                    };
                    *set(&mut filter) = Some(value.to_owned());
                    let found = store.query(&filter, 100_000).unwrap();
                    let mut got: Vec<&str> = found.iter().map(|e| e.uid.as_str()).collect();
                    let mut uids: Vec<&str> = expected.iter().map(|e| e.uid.as_str()).collect();
                    got.sort_unstable();
                    uids.sort_unstable();
                    assert_eq!(got, uids, "{field} {value:?}, range {since:?}..{until:?}");
                    // Newest first, cut at the limit.
                    expected.sort_by_key(|e| std::cmp::Reverse(e.timestamp));
                    let newest = store.query(&filter, 5).unwrap();
                    assert_eq!(newest.len(), expected.len().min(5), "{field} {value:?}");
                    for (got, want) in newest.iter().zip(&expected) {
                        assert_eq!(got.timestamp, want.timestamp, "{field} {value:?}");
                    }
                    let counted: u64 = store
                        .aggregate(&filter, &[GroupColumn::Reason], None, 10)
                        .unwrap()
                        .iter()
                        .map(|r| r.events)
                        .sum();
                    assert_eq!(counted as usize, expected.len(), "aggregate on {value:?}");
                }
            }
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn deferred_lookups_find_merged_and_recent_events_through_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("events.db")).unwrap();
        store.merge_rows = 50;
        let mut stored = events(0, 400);
        for chunk in stored.chunks(30) {
            store.insert(chunk).unwrap();
        }
        let upto = count(&store, "SELECT upto FROM merged");
        assert!(upto >= 350, "merged up to {upto}");
        assert!(
            count(
                &store,
                "SELECT count(*) FROM events WHERE id > (SELECT upto FROM merged)"
            ) > 0
        );
        assert_eq!(count(&store, "SELECT count(*) FROM by_name"), upto);
        check_lookups(&store, &stored);

        // Retention takes the older half, index entries with it.
        let now = chrono::DateTime::from_timestamp(START + 2500, 0).unwrap();
        let retention = Retention {
            max_age: Some(Duration::ZERO),
            ..Retention::default()
        };
        assert!(store.enforce(&retention, now).unwrap() > 0);
        stored.retain(|e| e.timestamp.unwrap() >= now);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM by_name WHERE id NOT IN (SELECT id FROM events)"
            ),
            0
        );
        check_lookups(&store, &stored);

        // New events get new ids, never those of deleted ones the indexes covered.
        let more = events(400, 200);
        for chunk in more.chunks(30) {
            store.insert(chunk).unwrap();
        }
        stored.extend(more);
        check_lookups(&store, &stored);
    }

    #[test]
    fn a_replayed_batch_stores_only_its_new_events_and_reads_back_each_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("events.db")).unwrap();
        assert_eq!(store.insert(&events(0, 100)).unwrap(), 100);
        // Half already stored: their slots in the new blocks stay unused.
        assert_eq!(store.insert(&events(50, 100)).unwrap(), 50);
        assert_eq!(store.insert(&events(60, 20)).unwrap(), 0);
        let all = store.query(&Filter::default(), 1_000).unwrap();
        let mut uids: Vec<String> = all
            .iter()
            .map(|e| {
                let i = e.uid.strip_prefix('u').unwrap();
                assert_eq!(
                    e.message,
                    format!("m{i}"),
                    "the row points at its own event"
                );
                e.uid.to_string()
            })
            .collect();
        uids.sort_unstable();
        uids.dedup();
        assert_eq!(uids.len(), 150);
        assert_eq!(count(&store, "SELECT sum(live) FROM blocks"), 150);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM blocks WHERE id NOT IN (SELECT block FROM events)"
            ),
            0,
            "no block without a stored event"
        );
    }

    #[test]
    fn a_layout_2_store_gets_its_deferred_indexes_filled_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let stored = events(0, 300);
        {
            let mut store = Store::open(&path).unwrap();
            store.insert(&stored).unwrap();
            // Back to layout 2: ordinary indexes, no deferred ones.
            store
                .conn
                .execute_batch(
                    "DROP TABLE by_name; DROP TABLE by_correlation; DROP TABLE merged;
                     CREATE INDEX events_name_ts ON events(name, ts);
                     CREATE INDEX events_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL;
                     PRAGMA user_version = 2;",
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(count(&store, "SELECT upto FROM merged"), 300);
        assert_eq!(count(&store, "SELECT count(*) FROM by_name"), 300);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM sqlite_master WHERE name IN ('events_name_ts', 'events_correlation')"
            ),
            0
        );
        check_lookups(&store, &stored);
    }
}
