//! What `kollate query`, `kollate aggregate` and `kollate incident` print: time arguments
//! and tables over the embedded store ([`crate::store`]).

use std::fmt::Write as _;

use serde::Deserialize;

use crate::event::{Event, Incident, Severity, Timestamp};
use crate::store::{AggregateRow, Filter};

/// Filters as given on the command line (`kollate query`, `kollate aggregate`) or as URL
/// query parameters (`/api/v1/...`).
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    /// From (RFC 3339 or an age: 1h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Until (RFC 3339 or an age).
    #[arg(long)]
    pub until: Option<String>,
    /// Namespace.
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// Involved object kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Involved object name.
    #[arg(long)]
    pub name: Option<String>,
    /// Node.
    #[arg(long)]
    pub node: Option<String>,
    /// Reason.
    #[arg(long)]
    pub reason: Option<String>,
    /// Type (Normal, Warning).
    #[arg(long = "type")]
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// At least this severity (info, warning, error, critical).
    #[arg(long)]
    pub severity: Option<String>,
    /// Category.
    #[arg(long)]
    pub category: Option<String>,
    /// Incident id.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Text the message contains.
    #[arg(long)]
    pub search: Option<String>,
}

impl FilterParams {
    /// The store filter, times relative to `now`.
    ///
    /// # Errors
    /// A time or severity that does not parse, saying what was expected.
    pub fn filter(&self, now: Timestamp) -> Result<Filter, String> {
        let time = |t: &Option<String>| t.as_deref().map(|t| parse_time_arg(t, now)).transpose();
        let min_severity = match self.severity.as_deref() {
            None => None,
            Some(s) => Some(
                serde_json::from_value::<Severity>(serde_json::Value::String(s.to_owned()))
                    .map_err(|_| {
                        format!("invalid severity `{s}`: expected info, warning, error or critical")
                    })?,
            ),
        };
        Ok(Filter {
            since: time(&self.since)?,
            until: time(&self.until)?,
            namespace: self.namespace.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            node: self.node.clone(),
            reason: self.reason.clone(),
            event_type: self.event_type.clone(),
            min_severity,
            category: self.category.clone(),
            correlation_id: self.correlation_id.clone(),
            search: self.search.clone(),
        })
    }
}

/// A time argument: RFC 3339 (`2026-03-01T12:00:00Z`) or an age relative to `now`
/// (`90m`, `1h`, `7d`).
///
/// # Errors
/// Anything else, with what was expected.
pub fn parse_time_arg(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Some(t) = crate::event::parse_time(text) {
        return Ok(t);
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        format!("invalid time `{text}`: expected RFC 3339 (2026-03-01T12:00:00Z) or an age such as 90m, 1h, 7d")
    })?;
    chrono::Duration::from_std(age)
        .map(|d| now - d)
        .map_err(|_| format!("time `{text}` is too far back"))
}

fn time(t: Option<Timestamp>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Events as an aligned table, one line each.
pub fn events_table(events: &[Event]) -> String {
    let mut out = String::from(
        "TIME                 SEVERITY  NAMESPACE/KIND/NAME                          REASON               COUNT  MESSAGE\n",
    );
    for e in events {
        let object = format!(
            "{}/{}/{}",
            crate::condition::namespace_of(e),
            e.object.kind,
            e.object.name
        );
        let message: String = e.message.chars().take(120).collect();
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:<44} {:<20} {:>5}  {}",
            time(e.timestamp),
            e.severity.map_or("-", |s| s.as_str()),
            object,
            e.reason,
            e.occurrences(),
            message.replace('\n', " ")
        );
    }
    out
}

/// Aggregate rows as a table headed by the group columns.
pub fn aggregate_table(rows: &[AggregateRow], columns: &[&str]) -> String {
    let windowed = rows.iter().any(|r| r.window_start.is_some());
    let mut out = String::new();
    if windowed {
        out.push_str("WINDOW               ");
    }
    for c in columns {
        let _ = write!(out, "{:<28}", c.to_uppercase());
    }
    out.push_str("    EVENTS  OCCURRENCES\n");
    for r in rows {
        if windowed {
            let _ = write!(out, "{:<21}", time(r.window_start));
        }
        for g in &r.group {
            let _ = write!(out, "{:<28}", if g.is_empty() { "-" } else { g });
        }
        let _ = writeln!(out, "{:>10}  {:>11}", r.events, r.occurrences);
    }
    out
}

/// One incident and its member events, oldest first.
pub fn incident_timeline(incident: &Incident, members: &[Event]) -> String {
    let mut out = crate::incidents::timeline(std::slice::from_ref(incident));
    out.push_str("\nmembers:\n");
    let mut members: Vec<&Event> = members.iter().filter(|e| e.incident.is_none()).collect();
    members.sort_by_key(|e| e.timestamp);
    let owned: Vec<Event> = members.into_iter().cloned().collect();
    out.push_str(&events_table(&owned));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_arguments_are_absolute_or_relative() {
        let now = crate::event::parse_time("2026-03-01T12:00:00Z").unwrap();
        assert_eq!(
            parse_time_arg("90m", now).unwrap(),
            crate::event::parse_time("2026-03-01T10:30:00Z").unwrap()
        );
        assert_eq!(
            parse_time_arg("2026-02-01T00:00:00Z", now).unwrap(),
            crate::event::parse_time("2026-02-01T00:00:00Z").unwrap()
        );
        assert!(
            parse_time_arg("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
