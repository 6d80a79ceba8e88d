//! The HTML report (`kollate report`, and `/` on the HTTP API): one self-contained page
//! (inline CSS and SVG, no external requests) with the incident timeline, events per
//! category over time, the top recurring patterns and the noisiest objects.

use std::fmt::Write as _;
use std::time::Duration;

use crate::event::{Incident, Severity, Timestamp};
use crate::store::{AggregateRow, Filter, GroupColumn, Store, StoreError};

/// Time buckets across the report's span.
const BUCKETS: i64 = 48;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "#6b8fb5",
        Severity::Warning => "#d9a400",
        Severity::Error => "#d9534f",
        Severity::Critical => "#8b1a1a",
    }
}

const CATEGORY_COLOURS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c",
];

/// Renders the report for events since `since` (up to `now`).
///
/// # Errors
/// The store cannot be read.
pub fn render(store: &Store, since: Timestamp, now: Timestamp) -> Result<String, StoreError> {
    let filter = Filter {
        since: Some(since),
        ..Filter::default()
    };
    let span_ms = (now - since).num_milliseconds().max(BUCKETS);
    // Whole minutes when the span allows, so the store's rollup answers.
    let bucket_ms = span_ms / BUCKETS;
    let bucket_ms = if bucket_ms >= 60_000 {
        (bucket_ms + 59_999) / 60_000 * 60_000
    } else {
        bucket_ms
    };
    let bucket = Duration::from_millis(bucket_ms as u64);
    let incidents = store.incidents(Some(since))?;
    let per_category = store.aggregate(&filter, &[GroupColumn::Category], Some(bucket), 100_000)?;
    let patterns = store.aggregate(
        &Filter {
            min_severity: Some(Severity::Warning),
            ..filter.clone()
        },
        &[
            GroupColumn::Reason,
            GroupColumn::Kind,
            GroupColumn::Namespace,
        ],
        None,
        10,
    )?;
    let noisiest = store.aggregate(
        &filter,
        &[GroupColumn::Namespace, GroupColumn::Kind, GroupColumn::Name],
        None,
        10,
    )?;
    let total: u64 = store
        .aggregate(&filter, &[], None, 1)?
        .iter()
        .map(|r| r.events)
        .sum();

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kollate report</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}}\
         h1{{margin-bottom:0}}.sub{{color:#666;margin-top:.2em}}table{{border-collapse:collapse;width:100%;margin:1em 0}}\
         td,th{{text-align:left;padding:4px 8px;border-bottom:1px solid #ddd;font-size:14px;vertical-align:top}}\
         th{{background:#f4f4f4}}.sev{{color:#fff;padding:1px 6px;border-radius:3px;font-size:12px}}\
         svg text{{font-size:11px;fill:#333}}.legend span{{display:inline-block;margin-right:12px;font-size:13px}}\
         .legend i{{display:inline-block;width:10px;height:10px;margin-right:4px}}</style></head><body>\
         <h1>kollate report</h1><p class=\"sub\">{} to {} &middot; {} events &middot; {} incidents</p>",
        since.format("%Y-%m-%d %H:%M UTC"),
        now.format("%Y-%m-%d %H:%M UTC"),
        total,
        incidents.len()
    );
    incident_section(&mut html, &incidents, since, now);
    category_section(&mut html, &per_category, since, bucket);
    table_section(
        &mut html,
        "Top recurring patterns",
        &["reason", "kind", "namespace"],
        &patterns,
        "patterns",
    );
    table_section(
        &mut html,
        "Noisiest objects",
        &["namespace", "kind", "name"],
        &noisiest,
        "noisiest",
    );
    html.push_str("</body></html>\n");
    Ok(html)
}

fn incident_section(html: &mut String, incidents: &[Incident], since: Timestamp, now: Timestamp) {
    html.push_str("<h2>Incidents</h2>");
    if incidents.is_empty() {
        html.push_str("<p>No incidents in this period.</p>");
        return;
    }
    let mut sorted: Vec<&Incident> = incidents.iter().collect();
    sorted.sort_by_key(|i| i.first_seen);
    let shown = &sorted[..sorted.len().min(60)];
    let (width, row) = (1100.0, 16.0);
    // The axis spans the incidents themselves, within the report's period.
    let start = shown
        .iter()
        .filter_map(|i| i.first_seen)
        .min()
        .unwrap_or(since)
        .max(since);
    let end = shown
        .iter()
        .filter_map(|i| i.last_seen)
        .max()
        .unwrap_or(now)
        .min(now)
        .max(start);
    let span = (end - start).num_milliseconds().max(1) as f64;
    let x = |t: Option<Timestamp>| {
        t.map_or(0.0, |t| {
            ((t - start).num_milliseconds() as f64 / span * width).clamp(0.0, width)
        })
    };
    let height = shown.len() as f64 * row + 24.0;
    let _ = write!(
        html,
        "<svg id=\"timeline\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"incident timeline\">",
        width + 20.0,
    );
    for k in 0..=4 {
        let t = start + chrono::Duration::milliseconds((span * f64::from(k) / 4.0) as i64);
        let _ = write!(
            html,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{}\">{}</text>",
            width * f64::from(k) / 4.0,
            height - 4.0,
            match k {
                0 => "start",
                4 => "end",
                _ => "middle",
            },
            t.format("%m-%d %H:%M")
        );
    }
    for (n, i) in shown.iter().enumerate() {
        let (a, b) = (x(i.first_seen), x(i.last_seen));
        let _ = write!(
            html,
            "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
            n as f64 * row + 4.0,
            (b - a).max(3.0),
            row - 4.0,
            colour(i.severity),
            esc(&i.summary)
        );
    }
    html.push_str("</svg>");
    html.push_str("<table id=\"incidents\"><tr><th>first seen</th><th>last seen</th><th>severity</th><th>incident</th><th>summary</th><th>root cause</th></tr>");
    for i in sorted.iter().rev() {
        let time = |t: Option<Timestamp>| {
            t.map(|t| t.format("%m-%d %H:%M:%S").to_string())
                .unwrap_or_default()
        };
        let root = i
            .root_cause
            .as_ref()
            .map(|r| {
                format!(
                    "{} {}/{}: {}",
                    r.reason, r.object.kind, r.object.name, r.message
                )
            })
            .unwrap_or_default();
        let _ = write!(
            html,
            "<tr data-incident=\"{id}\"><td>{}</td><td>{}</td><td><span class=\"sev\" style=\"background:{}\">{}</span></td><td>{id}</td><td>{}</td><td>{}</td></tr>",
            time(i.first_seen),
            time(i.last_seen),
            colour(i.severity),
            i.severity.as_str(),
            esc(&i.summary),
            esc(&root),
            id = esc(&i.id),
        );
    }
    html.push_str("</table>");
}

fn category_section(html: &mut String, rows: &[AggregateRow], since: Timestamp, bucket: Duration) {
    html.push_str("<h2>Events per category</h2>");
    if rows.is_empty() {
        html.push_str("<p>No events in this period.</p>");
        return;
    }
    let mut categories: Vec<&str> = rows.iter().map(|r| r.group[0].as_str()).collect();
    categories.sort_unstable();
    categories.dedup();
    let bucket_ms = bucket.as_millis().max(1) as i64;
    let index = |t: Option<Timestamp>| {
        t.map_or(0, |t| {
            ((t - since).num_milliseconds() / bucket_ms).clamp(0, BUCKETS - 1)
        }) as usize
    };
    let mut stacks = vec![vec![0u64; categories.len()]; BUCKETS as usize];
    for r in rows {
        let c = categories
            .iter()
            .position(|c| *c == r.group[0])
            .unwrap_or(0);
        stacks[index(r.window_start)][c] += r.events;
    }
    let peak = stacks
        .iter()
        .map(|s| s.iter().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (width, height) = (1100.0, 220.0);
    let bar = width / BUCKETS as f64;
    let _ = write!(
        html,
        "<svg id=\"categories\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"events per category\">",
        width + 20.0,
        height + 20.0
    );
    for (b, stack) in stacks.iter().enumerate() {
        let mut y = height;
        for (c, n) in stack.iter().enumerate().filter(|(_, n)| **n > 0) {
            let h = *n as f64 / peak * height;
            y -= h;
            let _ = write!(
                html,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {n}</title></rect>",
                b as f64 * bar,
                (bar - 1.0).max(1.0),
                CATEGORY_COLOURS[c % CATEGORY_COLOURS.len()],
                esc(categories[c])
            );
        }
    }
    let _ = write!(
        html,
        "<text x=\"0\" y=\"{}\">peak {peak} events per {}</text></svg>",
        height + 15.0,
        humantime::format_duration(Duration::from_secs(bucket.as_secs()))
    );
    html.push_str("<p class=\"legend\">");
    for (c, name) in categories.iter().enumerate() {
        let _ = write!(
            html,
            "<span><i style=\"background:{}\"></i>{}</span>",
            CATEGORY_COLOURS[c % CATEGORY_COLOURS.len()],
            esc(if name.is_empty() {
                "unclassified"
            } else {
                name
            })
        );
    }
    html.push_str("</p>");
}

fn table_section(
    html: &mut String,
    title: &str,
    columns: &[&str],
    rows: &[AggregateRow],
    id: &str,
) {
    let _ = write!(html, "<h2>{}</h2><table id=\"{id}\"><tr>", esc(title));
    for c in columns {
        let _ = write!(html, "<th>{c}</th>");
    }
    html.push_str("<th>events</th><th>occurrences</th></tr>");
    for r in rows {
        html.push_str("<tr>");
        for g in &r.group {
            let _ = write!(html, "<td>{}</td>", esc(g));
        }
        let _ = write!(html, "<td>{}</td><td>{}</td></tr>", r.events, r.occurrences);
    }
    html.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
