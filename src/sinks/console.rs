//! The `console` sink: events for people (one coloured line each) or for pipes (JSON Lines).
//!
//! Text lines read `TIME SEVERITY CATEGORY NAMESPACE/KIND/NAME REASON: MESSAGE (xCOUNT)`.
//! Colour follows `color`: `"auto"` (default) colours only when the target is a terminal.
//! If the reader of the pipe goes away (`kollate run | head`), the sink stops writing and
//! counts the rest as discarded instead of failing the pipeline.

use std::io::{IsTerminal, Write};

use serde::Deserialize;

use crate::batch::Batch;
use crate::condition::namespace_of;
use crate::event::{Event, Severity};
use crate::metrics::ComponentMetrics;
use crate::topology::{BuildError, SinkContext, Task};

/// Output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// The JSON event schema, one per line.
    Json,
}

/// When to use ANSI colours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    /// When the target is a terminal.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Where to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

/// `type = "console"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// `"text"` (default) or `"json"`.
    #[serde(default)]
    pub format: ConsoleFormat,
    /// `"auto"` (default), `"always"` or `"never"`.
    #[serde(default)]
    pub color: ColorMode,
    /// `"stdout"` (default) or `"stderr"`.
    #[serde(default)]
    pub target: Target,
}

impl ConsoleSinkConfig {
    /// Builds the sink's task.
    ///
    /// # Errors
    /// Never, today; kept for symmetry with other sinks.
    pub fn build(&self, ctx: SinkContext) -> Result<Task, BuildError> {
        let format = self.format;
        let target = self.target;
        let tty = match target {
            Target::Stdout => std::io::stdout().is_terminal(),
            Target::Stderr => std::io::stderr().is_terminal(),
        };
        let color = match self.color {
            ColorMode::Auto => tty,
            ColorMode::Always => true,
            ColorMode::Never => false,
        };
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || run(ctx, format, color, target)).await??;
            Ok(())
        }))
    }
}

fn run(
    mut ctx: SinkContext,
    format: ConsoleFormat,
    color: bool,
    target: Target,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 << 10);
    let mut closed = false;
    while let Some(batch) = ctx.input.blocking_recv() {
        let started = std::time::Instant::now();
        let n = batch.len() as u64;
        ComponentMetrics::add(&ctx.metrics.events_in, n);
        if closed {
            ComponentMetrics::add(&ctx.metrics.discarded, n);
            continue;
        }
        buf.clear();
        render(&batch, format, color, &mut buf);
        let written = match target {
            Target::Stdout => std::io::stdout()
                .lock()
                .write_all(&buf)
                .and_then(|()| std::io::stdout().flush()),
            Target::Stderr => std::io::stderr().lock().write_all(&buf),
        };
        match written {
            Ok(()) => {
                ComponentMetrics::add(&ctx.metrics.events_out, n);
                ctx.metrics.batch_latency.observe(started.elapsed());
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::info!(component = %ctx.id, "Console reader went away; discarding further output.");
                ComponentMetrics::add(&ctx.metrics.discarded, n);
                closed = true;
            }
            Err(e) => {
                batch.fail();
                return Err(e);
            }
        }
    }
    Ok(())
}

fn render(batch: &Batch, format: ConsoleFormat, color: bool, out: &mut Vec<u8>) {
    for e in &batch.events {
        match format {
            ConsoleFormat::Json => e.encode_json(out),
            ConsoleFormat::Text => text_line(e, color, out),
        }
        out.push(b'\n');
    }
}

fn text_line(e: &Event, color: bool, out: &mut Vec<u8>) {
    let time = e.timestamp.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    let severity = e.severity.map_or("-", Severity::as_str);
    let (on, off) = match (color, e.severity) {
        (true, Some(Severity::Critical)) => ("\x1b[1;31m", "\x1b[0m"),
        (true, Some(Severity::Error)) => ("\x1b[31m", "\x1b[0m"),
        (true, Some(Severity::Warning)) => ("\x1b[33m", "\x1b[0m"),
        (true, _) => ("\x1b[2m", "\x1b[0m"),
        (false, _) => ("", ""),
    };
    let category = e.category.map_or("-", |c| c.as_str());
    let count = e.aggregation.as_ref().map_or(e.count, |a| a.count);
    let _ = write!(
        out,
        "{time} {on}{severity:<8}{off} {category:<10} {}/{}/{} {}: {}",
        namespace_of(e),
        e.object.kind,
        e.object.name,
        e.reason,
        e.message.replace('\n', " ")
    );
    if count > 1 {
        let _ = write!(out, " (x{count})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_readable_and_colour_is_optional() {
        let mut e = Event {
            reason: "BackOff".into(),
            message: "Back-off\nrestarting".into(),
            count: 4,
            ..Event::default()
        };
        e.object.namespace = "shop".into();
        e.object.kind = "Pod".into();
        e.object.name = "cart-1".into();
        e.severity = Some(Severity::Error);
        let mut out = Vec::new();
        text_line(&e, false, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with("shop/Pod/cart-1 BackOff: Back-off restarting (x4)"),
            "{line}"
        );
        let mut coloured = Vec::new();
        text_line(&e, true, &mut coloured);
        assert!(
            String::from_utf8(coloured)
                .unwrap()
                .contains("\x1b[31merror")
        );
    }
}
