//! Replay analysis: the `correlate` transform over recorded dumps (`kollate incidents`).
//!
//! Post-mortems on events the cluster has already deleted: read every dump (any format the
//! file source reads), keep each Event object once (the newest count wins when a dump holds
//! it in both API shapes), order by time, classify, correlate, and print the incidents as a
//! timeline.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::Batch;
use crate::event::{Event, Incident};
use crate::format::{Decoded, Limits, Reader};
use crate::metrics::ComponentMetrics;
use crate::topology::Transform;
use crate::transforms::classify::ClassifyTransformConfig;
use crate::transforms::correlate::CorrelateTransformConfig;

/// Generous limits for dumps read whole.
const LIMITS: Limits = Limits {
    max_document_bytes: 256 << 20,
    max_message_bytes: 64 << 10,
};

/// A dump could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Reads events from dumps; returns them in time order, each Event object once, and the
/// problems met (file:line: message).
///
/// # Errors
/// A file that cannot be opened or read.
pub fn read_events(paths: &[PathBuf]) -> Result<(Vec<Event>, Vec<String>), ReadError> {
    let mut by_uid: HashMap<String, Event> = HashMap::new();
    let mut anonymous = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let failed = |source| ReadError {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(failed)?;
        let mut reader = Reader::new(BufReader::new(file), LIMITS);
        let mut take = |d: Decoded| match d {
            Decoded::Event(e, _) if e.uid.is_empty() => anonymous.push(e),
            Decoded::Event(e, _) => {
                let newer = by_uid
                    .get(e.uid.as_str())
                    .is_none_or(|old| e.occurrences() > old.occurrences());
                if newer {
                    by_uid.insert(e.uid.to_string(), e);
                }
            }
            Decoded::Discarded(_) => {}
            Decoded::Warning(line, m) | Decoded::Error(line, m) => {
                problems.push(format!("{}:{line}: {m}", path.display()));
            }
        };
        reader.read_to_end(&mut take).map_err(failed)?;
    }
    let mut events: Vec<Event> = by_uid.into_values().chain(anonymous).collect();
    events.sort_by(|a, b| {
        let start = |e: &Event| e.first_timestamp.or(e.event_time).or(e.timestamp);
        (start(a), a.timestamp, &a.uid).cmp(&(start(b), b.timestamp, &b.uid))
    });
    Ok((events, problems))
}

/// What [`analyse`] found.
pub struct Analysis {
    /// The input events, classified, with their `correlation_id`s (records left out).
    pub events: Vec<Event>,
    /// Each reported incident in its final state, by first occurrence; incidents merged
    /// into others are left out.
    pub incidents: Vec<Incident>,
}

/// Classifies and correlates `events` (in order).
pub fn analyse(events: Vec<Event>, config: &CorrelateTransformConfig) -> Analysis {
    let metrics = Arc::new(ComponentMetrics::default());
    let classify = ClassifyTransformConfig::default().build();
    let mut correlate = config.build(None, metrics);
    let mut latest: HashMap<String, Incident> = HashMap::new();
    let mut processed = Vec::with_capacity(events.len());
    let mut keep = |batches: Vec<Batch>, processed: &mut Vec<Event>| {
        for e in batches.into_iter().flat_map(|b| b.events) {
            match e.incident {
                Some(incident) => {
                    latest.insert(incident.id.to_string(), *incident);
                }
                None => processed.push(e),
            }
        }
    };
    for chunk in events.chunks(512) {
        let mut batch = Batch::new(chunk.to_vec());
        for e in batch.events.iter_mut() {
            classify.classify(e);
        }
        let mut out = Vec::new();
        correlate.process(batch, &mut out);
        keep(out, &mut processed);
    }
    let mut out = Vec::new();
    while correlate.flush(&mut out) {}
    keep(out, &mut processed);
    let mut incidents: Vec<Incident> = latest
        .into_values()
        .filter(|i| i.merged_into.is_none())
        .collect();
    incidents.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
    Analysis {
        events: processed,
        incidents,
    }
}

/// The incidents as a readable timeline.
pub fn timeline(incidents: &[Incident]) -> String {
    let mut out = String::new();
    let time = |t: Option<crate::event::Timestamp>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "?".into())
    };
    for i in incidents {
        let _ = writeln!(
            out,
            "{} .. {}  {:<8} {}  {}",
            time(i.first_seen),
            time(i.last_seen),
            i.severity.as_str(),
            i.id,
            i.summary
        );
        if let Some(root) = &i.root_cause {
            let _ = writeln!(
                out,
                "    root cause ({}): {} {} {}/{}: {}",
                root.rule,
                time(root.timestamp),
                root.reason,
                root.object.kind,
                root.object.name,
                root.message.chars().take(160).collect::<String>()
            );
        }
        let reasons: Vec<String> = i.reasons.iter().map(|(r, n)| format!("{r} x{n}")).collect();
        let _ = writeln!(out, "    {} events: {}", i.members, reasons.join(", "));
        let objects: Vec<String> = i
            .objects
            .iter()
            .take(8)
            .map(|o| {
                let mut s = format!("{} {}/{}", o.kind, o.namespace, o.name);
                if !o.node.is_empty() {
                    let _ = write!(s, " on {}", o.node);
                }
                s
            })
            .collect();
        let more = i.objects.len().saturating_sub(8);
        let _ = write!(out, "    objects: {}", objects.join("; "));
        if more > 0 {
            let _ = write!(out, " (+{more} more)");
        }
        out.push('\n');
    }
    if incidents.is_empty() {
        out.push_str("no incidents\n");
    }
    out
}

/// Whether `path` looks like something `read_events` can take (used by the CLI to expand
/// directories).
pub fn is_dump(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "json" | "jsonl" | "yaml" | "yml" | "ndjson"))
}
