//! `kollate test`: unit tests declared in the pipeline file, Vector-style.
//!
//! ```toml
//! [[tests]]
//! name = "shop events go to the checkout team"
//! transforms = ["classify", "route"]       # one name, or a chain run in order
//! [[tests.inputs]]                         # the kollate schema (docs/schema.md)...
//! reason = "BackOff"
//! namespace = "shop"
//! object = { kind = "Pod", namespace = "shop", name = "cart-1" }
//! [[tests.inputs]]                         # ...or a Kubernetes Event as the API serves it
//! apiVersion = "v1"
//! kind = "Event"
//! involvedObject = { kind = "Pod", namespace = "kube-system", name = "dns" }
//! reason = "Pulled"
//! [tests.expect]
//! count = 1                                # events out (0: everything dropped)
//! dead_letters = 0                         # events sent to NAME.dead_letter
//! [[tests.expect.events]]                  # field checks on output event 0, 1...
//! "labels.team" = "checkout"
//! severity = "error"
//! ```
//!
//! Field checks compare a dotted path into the output event's JSON (as sinks write it)
//! with the value given; a field the event does not have matches only `""` (the schema
//! omits empty strings). Each test builds its transforms fresh from the file (WASM plugins
//! included), feeds the inputs as one batch, then flushes them, so windowed transforms
//! emit what they hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::batch::Batch;
use crate::config::Config;
use crate::event::{Event, decode_json};
use crate::metrics::ComponentMetrics;

/// One `[[tests]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTest {
    /// Shown in the report.
    pub name: String,
    /// The transform under test, or a chain of them run in order.
    pub transforms: Transforms,
    /// Input events: the kollate schema, or Kubernetes Events (with `apiVersion`).
    #[serde(default)]
    pub inputs: Vec<toml::Table>,
    /// What must come out.
    #[serde(default)]
    pub expect: Expect,
}

/// One transform name or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Transforms {
    /// A single transform.
    One(String),
    /// A chain.
    Chain(Vec<String>),
}

impl Transforms {
    fn names(&self) -> &[String] {
        match self {
            Transforms::One(n) => std::slice::from_ref(n),
            Transforms::Chain(c) => c,
        }
    }
}

/// `[tests.expect]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Number of output events.
    #[serde(default)]
    pub count: Option<usize>,
    /// Number of dead-lettered events (over the whole chain).
    #[serde(default)]
    pub dead_letters: Option<usize>,
    /// Field checks per output event, in order (fewer tables than events: the rest
    /// are not checked).
    #[serde(default)]
    pub events: Vec<BTreeMap<String, toml::Value>>,
}

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The test's name.
    pub name: String,
    /// Every failed check (empty: passed).
    pub failures: Vec<String>,
}

/// Runs every test of `config`; transforms keep their state under a temporary directory.
///
/// # Errors
/// The config has no tests, or a scratch directory cannot be made.
pub fn run_all(config: &Config) -> Result<Vec<Outcome>, String> {
    if config.global.tests.is_empty() {
        return Err(format!(
            "{}: no [[tests]] to run (see `kollate test --help`)",
            config.path.display()
        ));
    }
    let scratch = std::env::temp_dir().join(format!("kollate-test-{}", std::process::id()));
    let outcomes = config
        .global
        .tests
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dir = scratch.join(i.to_string());
            let failures = run_one(config, t, &dir).unwrap_or_else(|e| vec![e]);
            Outcome {
                name: t.name.clone(),
                failures,
            }
        })
        .collect();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(outcomes)
}

/// Runs one test; the failed checks.
fn run_one(config: &Config, test: &UnitTest, scratch: &Path) -> Result<Vec<String>, String> {
    let mut events = test
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| input_event(t).map_err(|e| format!("inputs[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dead_letters = 0;
    // Plugins compile once into the pipeline's cache; other state stays in the scratch dir.
    let plugin_cache = config.global.data_dir.clone();
    for name in test.transforms.names() {
        let component = config
            .transforms
            .get(name)
            .ok_or_else(|| format!("unknown transform `{name}`"))?;
        let metrics = Arc::new(ComponentMetrics::default());
        let data_dir = if component.inner.type_name() == "wasm" {
            plugin_cache.as_path()
        } else {
            scratch
        };
        let mut transform = component
            .inner
            .build(name, &metrics, data_dir)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        transform.process(Batch::new(std::mem::take(&mut events)), &mut out);
        while transform.flush(&mut out) {}
        dead_letters += transform.take_dead_letters().map_or(0, |b| b.len());
        if let Some(fatal) = transform.take_fatal() {
            return Err(format!("`{name}` failed: {fatal}"));
        }
        events = out.into_iter().flat_map(|b| b.events).collect();
    }
    Ok(check(&test.expect, &events, dead_letters))
}

/// An input table as an event: a Kubernetes Event when it names an `apiVersion` or `kind`,
/// else the kollate schema (`count` defaults to 1).
fn input_event(table: &toml::Table) -> Result<Event, String> {
    let mut json = serde_json::to_value(table).map_err(|e| e.to_string())?;
    if table.contains_key("apiVersion") || table.contains_key("kind") {
        return decode_json(json.to_string().as_bytes());
    }
    if let Some(obj) = json.as_object_mut() {
        obj.entry("count").or_insert(1.into());
    }
    serde_json::from_value(json).map_err(|e| e.to_string())
}

/// Compares the outputs with the expectations; one message per failed check.
fn check(expect: &Expect, events: &[Event], dead_letters: usize) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(n) = expect.count
        && n != events.len()
    {
        failures.push(format!(
            "expected {n} output event(s), got {}",
            events.len()
        ));
    }
    if let Some(n) = expect.dead_letters
        && n != dead_letters
    {
        failures.push(format!("expected {n} dead letter(s), got {dead_letters}"));
    }
    for (i, fields) in expect.events.iter().enumerate() {
        let Some(event) = events.get(i) else {
            failures.push(format!("events[{i}]: no such output event"));
            continue;
        };
        let json = serde_json::to_value(event).unwrap_or_default();
        for (path, want) in fields {
            let want = serde_json::to_value(want).unwrap_or_default();
            let got = lookup(&json, path);
            if !same(got, &want) {
                failures.push(format!(
                    "events[{i}].{path}: expected {want}, got {}",
                    got.map_or("nothing".to_owned(), ToString::to_string)
                ));
            }
        }
    }
    failures
}

/// The value at a dotted path (`labels.team`, `object.name`); label keys may themselves
/// contain dots, so the rest of the path after `labels.` is one key.
fn lookup<'a>(json: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut node = json;
    let mut rest = path;
    loop {
        let map = node.as_object()?;
        if let Some(v) = map.get(rest) {
            return Some(v);
        }
        let (head, tail) = rest.split_once('.')?;
        node = map.get(head)?;
        rest = tail;
    }
}

/// Equality that treats `""` as matching an absent field (the schema omits empty strings)
/// and compares numbers by value.
fn same(got: Option<&serde_json::Value>, want: &serde_json::Value) -> bool {
    match (got, want) {
        (None, serde_json::Value::String(s)) => s.is_empty(),
        (None, _) => false,
        (Some(g), w) if g.is_number() && w.is_number() => g.as_f64() == w.as_f64(),
        (Some(g), w) => g == w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_find_nested_fields_and_dotted_label_keys() {
        let json = serde_json::json!({
            "object": {"name": "cart"},
            "labels": {"kollate.dead_letter.reason": "x", "team": "t"}
        });
        assert_eq!(lookup(&json, "object.name"), Some(&"cart".into()));
        assert_eq!(lookup(&json, "labels.team"), Some(&"t".into()));
        assert_eq!(
            lookup(&json, "labels.kollate.dead_letter.reason"),
            Some(&"x".into())
        );
        assert_eq!(lookup(&json, "object.uid"), None);
    }

    #[test]
    fn checks_report_each_mismatch() {
        let event = Event {
            reason: "BackOff".into(),
            count: 3,
            ..Event::default()
        };
        let expect: Expect = toml::from_str(
            "count = 2\ndead_letters = 0\n[[events]]\nreason = \"BackOff\"\ncount = 3\nhost = \"\"\n[[events]]\nreason = \"x\"",
        )
        .unwrap();
        let failures = check(&expect, &[event], 0);
        assert_eq!(
            failures,
            [
                "expected 2 output event(s), got 1",
                "events[1]: no such output event"
            ]
        );
    }

    #[test]
    fn inputs_take_the_schema_or_a_kubernetes_event() {
        let schema: toml::Table =
            toml::from_str("reason = \"BackOff\"\nnamespace = \"shop\"").unwrap();
        let e = input_event(&schema).unwrap();
        assert_eq!((e.reason.as_str(), e.count), ("BackOff", 1));
        let k8s: toml::Table = toml::from_str(
            "apiVersion = \"v1\"\nkind = \"Event\"\nreason = \"Pulled\"\ninvolvedObject = { kind = \"Pod\", name = \"p\" }",
        )
        .unwrap();
        let e = input_event(&k8s).unwrap();
        assert_eq!((e.reason.as_str(), e.object.name.as_str()), ("Pulled", "p"));
    }
}
