//! The TOML pipeline file: named sources, transforms and sinks, Vector-style.
//!
//! ```toml
//! data_dir = "/var/lib/kollate"
//!
//! [sources.cluster]
//! type = "file"
//! paths = ["events/*.json"]
//!
//! [transforms.classify]
//! type = "classify"
//! inputs = ["cluster"]
//!
//! [sinks.archive]
//! type = "file"
//! inputs = ["classify"]
//! path = "archive/events-%Y-%m-%d.jsonl"
//! ```
//!
//! Loading is in stages, each collecting *every* error it finds rather than stopping at the
//! first: `${VAR}` / `${VAR:-default}` interpolation, TOML syntax, then each component on its
//! own (so one bad component does not hide another's mistakes), then the graph (unknown
//! inputs, cycles, sinks without inputs). Every error names the file, line, column and key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::TransformConfig;

/// Default location of the pipeline file.
pub const DEFAULT_CONFIG_PATH: &str = "config/kollate.toml";
/// Default data directory (checkpoints, buffers, state).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kollate";
/// Default listen address of the HTTP API (health, metrics, queries).
pub const DEFAULT_API_ADDRESS: &str = "127.0.0.1:8686";
/// Default capacity, in batches, of the channel in front of each transform and sink.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 4;

/// A whole, validated pipeline.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Options that are not about one component.
    pub global: GlobalOptions,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Transforms by name, with their inputs.
    pub transforms: BTreeMap<String, Component<TransformConfig>>,
    /// Sinks by name, with their inputs.
    pub sinks: BTreeMap<String, Component<SinkConfig>>,
    /// Things that are allowed but probably a mistake (a source nothing reads).
    pub warnings: Vec<String>,
}

/// A transform or sink and the components it reads from.
#[derive(Debug)]
pub struct Component<T> {
    /// Names of the sources or transforms feeding it.
    pub inputs: Vec<String>,
    /// Its own options.
    pub inner: T,
    /// Sinks only: the buffer in front of it (`buffer = { type = "memory" | "disk", ... }`).
    pub buffer: Option<crate::buffers::BufferConfig>,
}

/// Top-level options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalOptions {
    /// Where checkpoints, disk buffers and transform state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Capacity, in batches, of the channel in front of each transform and sink.
    /// This bounds memory: a slow sink back-pressures to the sources.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// The HTTP API (health checks, metrics, queries).
    #[serde(default)]
    pub api: ApiOptions,
    /// Unit tests for `kollate test` (`[[tests]]`).
    #[serde(default)]
    pub tests: Vec<crate::unit_test::UnitTest>,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            data_dir: default_data_dir(),
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            api: ApiOptions::default(),
            tests: Vec::new(),
        }
    }
}

/// `[api]`: the HTTP server for health checks, metrics and queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiOptions {
    /// Serve the API.
    #[serde(default)]
    pub enabled: bool,
    /// Listen address; loopback by default.
    #[serde(default = "default_api_address")]
    pub address: String,
    /// When set, data endpoints (`/metrics`...) require `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            enabled: false,
            address: default_api_address(),
            token: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_api_address() -> String {
    DEFAULT_API_ADDRESS.to_owned()
}
fn default_channel_capacity() -> usize {
    DEFAULT_CHANNEL_CAPACITY
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem has no place, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key at fault, e.g. `sinks.archive.inputs`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.key,
                self.message
            )
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors against one source text, turning byte spans into line:column.
struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Collector<'_> {
    fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = match span {
            Some(span) => line_col(self.text, span.start),
            None => (0, 0),
        };
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records a deserialisation error, naming the innermost key on the error's line.
    fn de(&mut self, e: &toml::de::Error, path: &str) {
        let span = e.span();
        let key = match &span {
            Some(s) => key_at(self.text, s.start)
                .filter(|k| !path.ends_with(k.as_str()))
                .map_or_else(|| path.to_owned(), |k| format!("{path}.{k}")),
            None => path.to_owned(),
        };
        self.at(span, key, e.message().trim().to_owned());
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// The bare key on the line containing `offset`, if the line is `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.contains(['{', '[', ' '])).then(|| key.to_owned())
}

impl Config {
    /// Where the first `store` sink keeps its database, if the pipeline has one: what the
    /// HTTP API's `/api/v1/*` endpoints read.
    pub fn store_path(&self) -> Option<PathBuf> {
        self.sinks.values().find_map(|c| match &c.inner {
            SinkConfig::Store(s) => Some(
                s.path
                    .clone()
                    .unwrap_or_else(|| self.global.data_dir.join("store").join("events.db")),
            ),
            _ => None,
        })
    }

    /// Loads and validates a pipeline file.
    ///
    /// # Errors
    /// Every problem found, each with file, line, column and key.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                key: "(file)".to_owned(),
                message: format!("cannot read config: {e}"),
            }])
        })?;
        Config::from_str_with(&raw, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` resolves `${VAR}`.
    ///
    /// # Errors
    /// Every problem found, each with file, line, column and key.
    pub fn from_str_with(
        raw: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut raw_errors = Collector {
            file: path,
            text: raw,
            errors: Vec::new(),
        };
        let text = interpolate(raw, env, &mut raw_errors);
        if !raw_errors.errors.is_empty() {
            return Err(ConfigErrors(raw_errors.errors));
        }
        let mut c = Collector {
            file: path,
            text: &text,
            errors: Vec::new(),
        };
        let (root, syntax) = DeTable::parse_recoverable(&text);
        for e in syntax {
            c.de(&e, "(syntax)");
        }
        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        let root_span = root.span();
        let mut global = DeTable::default();
        let mut sections: BTreeMap<String, Spanned<DeValue<'_>>> = BTreeMap::new();
        for (key, value) in root.into_inner() {
            let name = key.get_ref().to_string();
            if matches!(name.as_str(), "sources" | "transforms" | "sinks") {
                sections.insert(name, value);
            } else {
                global.insert(key, value);
            }
        }
        let global = match GlobalOptions::deserialize(ValueDeserializer::from(Spanned::new(
            root_span.clone(),
            DeValue::Table(global),
        ))) {
            Ok(g) => g,
            Err(e) => {
                c.de(&e, "(global)");
                GlobalOptions::default()
            }
        };
        if global.channel_capacity == 0 {
            c.at(
                Some(root_span.clone()),
                "channel_capacity",
                "must be at least 1",
            );
        }

        let sources = parse_section(
            &mut c,
            &mut sections,
            "sources",
            SourceConfig::parse,
            SourceConfig::TYPES,
        );
        let transforms = parse_section(
            &mut c,
            &mut sections,
            "transforms",
            TransformConfig::parse,
            TransformConfig::TYPES,
        );
        let sinks = parse_section(
            &mut c,
            &mut sections,
            "sinks",
            SinkConfig::parse,
            SinkConfig::TYPES,
        );
        for (section, value) in &sections {
            c.at(
                Some(value.span()),
                section,
                "must be a table of named components",
            );
        }

        // Names are unique across sections: inputs refer to them.
        let mut spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
        let names = sources
            .iter()
            .map(|p| (&p.name, &p.span, "sources"))
            .chain(transforms.iter().map(|p| (&p.name, &p.span, "transforms")))
            .chain(sinks.iter().map(|p| (&p.name, &p.span, "sinks")));
        for (name, span, section) in names {
            if spans.insert(name.clone(), span.clone()).is_some() {
                c.at(
                    Some(span.clone()),
                    format!("{section}.{name}"),
                    "another component has this name; names must be unique",
                );
            }
        }
        let wired: Vec<Wiring> = transforms
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    "transforms",
                    p.inputs.clone(),
                    p.span.clone(),
                )
            })
            .chain(
                sinks
                    .iter()
                    .map(|p| (p.name.clone(), "sinks", p.inputs.clone(), p.span.clone())),
            )
            .collect();
        let warnings = check_graph(&mut c, &spans, &wired, &root_span);
        if c.errors.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                global,
                sources: sources
                    .into_iter()
                    .filter_map(|p| Some((p.name, p.config?)))
                    .collect(),
                transforms: transforms
                    .into_iter()
                    .filter_map(Parsed::into_component)
                    .collect(),
                sinks: sinks
                    .into_iter()
                    .filter_map(Parsed::into_component)
                    .collect(),
                warnings,
            })
        } else {
            Err(ConfigErrors(c.errors))
        }
    }
}

/// (name, section, inputs, span) of a transform or sink.
type Wiring = (String, &'static str, Vec<Spanned<String>>, Range<usize>);

/// Parses `type` and options of one component kind.
type ParseFn<T> = fn(&str, ValueDeserializer<'_>) -> Result<Option<T>, toml::de::Error>;

/// One component as parsed; `config` is `None` when its options had errors (already
/// reported), so the graph check still knows its name.
struct Parsed<T> {
    name: String,
    span: Range<usize>,
    inputs: Vec<Spanned<String>>,
    buffer: Option<crate::buffers::BufferConfig>,
    config: Option<T>,
}

impl<T> Parsed<T> {
    fn into_component(self) -> Option<(String, Component<T>)> {
        let inputs = self.inputs.into_iter().map(Spanned::into_inner).collect();
        Some((
            self.name,
            Component {
                inputs,
                inner: self.config?,
                buffer: self.buffer,
            },
        ))
    }
}

/// Parses one section (`sources`, `transforms`, `sinks`) into components. The `type` and
/// `inputs` keys are pulled out first, so each component's own options deserialise on their
/// own, with their spans, and one component's mistakes do not hide another's.
fn parse_section<T>(
    c: &mut Collector<'_>,
    sections: &mut BTreeMap<String, Spanned<DeValue<'_>>>,
    section: &'static str,
    parse: ParseFn<T>,
    types: &[&str],
) -> Vec<Parsed<T>> {
    let kind = section.trim_end_matches('s');
    let Some(value) = sections.remove(section) else {
        return Vec::new();
    };
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        c.at(Some(span), section, "must be a table of named components");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in table {
        let name = key.get_ref().to_string();
        let path = format!("{section}.{name}");
        let span = key.span();
        let DeValue::Table(body) = value.into_inner() else {
            c.at(Some(span), &path, "must be a table");
            continue;
        };
        let mut rest = DeTable::default();
        let mut ty = None;
        let mut inputs = None;
        let mut buffer = None;
        for (k, v) in body {
            match k.get_ref().as_ref() {
                "type" => ty = Some(v),
                "inputs" => inputs = Some(v),
                "buffer" if section == "sinks" => buffer = Some(v),
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        let ty = match ty.map(|v| (v.span(), v.into_inner())) {
            Some((s, DeValue::String(t))) => Spanned::new(s, t.to_string()),
            Some((s, _)) => {
                c.at(Some(s), format!("{path}.type"), "must be a string");
                continue;
            }
            None => {
                c.at(Some(span), format!("{path}.type"), "missing `type`");
                continue;
            }
        };
        let inputs = match inputs {
            None => Vec::new(),
            Some(v) if section == "sources" => {
                c.at(
                    Some(v.span()),
                    format!("{path}.inputs"),
                    "sources have no inputs",
                );
                Vec::new()
            }
            Some(v) => match Vec::<Spanned<String>>::deserialize(ValueDeserializer::from(v)) {
                Ok(list) => list,
                Err(e) => {
                    c.de(&e, &format!("{path}.inputs"));
                    Vec::new()
                }
            },
        };
        let buffer = buffer.and_then(|v| {
            let at = v.span();
            crate::buffers::BufferConfig::deserialize(ValueDeserializer::from(v))
                .map_err(|e| {
                    let key = format!("{path}.buffer");
                    match e.span() {
                        Some(_) => c.de(&e, &key),
                        // The tagged enum loses inner spans: point at the whole table.
                        None => c.at(Some(at), key, e.message().trim().to_owned()),
                    }
                })
                .ok()
        });
        let body = ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(rest)));
        let config = match parse(ty.get_ref(), body) {
            Ok(Some(config)) => Some(config),
            Ok(None) => {
                c.at(
                    Some(ty.span()),
                    format!("{path}.type"),
                    format!(
                        "unknown {kind} type `{}`; expected one of: {}",
                        ty.get_ref(),
                        types.join(", ")
                    ),
                );
                None
            }
            Err(e) => {
                c.de(&e, &path);
                None
            }
        };
        out.push(Parsed {
            name,
            span,
            inputs,
            buffer,
            config,
        });
    }
    out
}

/// Checks the wiring: every input exists and is not a sink, transforms and sinks have
/// inputs, there are no cycles, and there is something to read and somewhere to write.
fn check_graph(
    c: &mut Collector<'_>,
    known: &BTreeMap<String, Range<usize>>,
    wired: &[Wiring],
    root: &Range<usize>,
) -> Vec<String> {
    let sinks: BTreeSet<&str> = wired
        .iter()
        .filter(|w| w.1 == "sinks")
        .map(|w| w.0.as_str())
        .collect();
    let mut consumed = BTreeSet::new();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, section, inputs, span) in wired {
        if inputs.is_empty() {
            let what = if *section == "sinks" {
                "sink"
            } else {
                "transform"
            };
            c.at(
                Some(span.clone()),
                format!("{section}.{name}.inputs"),
                format!("this {what} has no inputs"),
            );
        }
        for input in inputs {
            let key = format!("{section}.{name}.inputs");
            // `route.dead_letter` names the dead-letter output of transform `route`.
            let target = input.get_ref().as_str();
            let dead_letter_of = target
                .strip_suffix(crate::topology::DEAD_LETTER_OUTPUT)
                .filter(|t| wired.iter().any(|w| w.0 == *t && w.1 == "transforms"));
            if let Some(from) = dead_letter_of {
                if from == name {
                    c.at(
                        Some(input.span()),
                        key,
                        "a component cannot read its own output",
                    );
                } else {
                    edges.entry(from).or_default().push(name.as_str());
                }
            } else if sinks.contains(input.get_ref().as_str()) {
                c.at(
                    Some(input.span()),
                    key,
                    format!("`{}` is a sink; sinks cannot be inputs", input.get_ref()),
                );
            } else if !known.contains_key(input.get_ref()) {
                c.at(
                    Some(input.span()),
                    key,
                    format!("unknown input `{}`", input.get_ref()),
                );
            } else if input.get_ref() == name {
                c.at(
                    Some(input.span()),
                    key,
                    "a component cannot read its own output",
                );
            } else {
                consumed.insert(input.get_ref().as_str());
                edges
                    .entry(input.get_ref().as_str())
                    .or_default()
                    .push(name.as_str());
            }
        }
    }
    // Cycles: depth-first search over transform edges, reporting each cycle once.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<&'a str>>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let at = stack.iter().position(|n| n == next).unwrap_or(0);
                    cycles.push(stack[at..].to_vec());
                }
                Some(_) => {}
                None => visit(next, edges, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    let mut cycles = Vec::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let span = known.get(cycle[0]).cloned();
        c.at(
            span,
            format!("transforms.{}", cycle[0]),
            format!("cycle: {} -> {}", cycle.join(" -> "), cycle[0]),
        );
    }
    let has_source = known
        .keys()
        .any(|k| !sinks.contains(k.as_str()) && !wired.iter().any(|w| &w.0 == k));
    if !has_source {
        c.at(
            Some(root.start..root.start),
            "sources",
            "no sources: the pipeline has nothing to read",
        );
    }
    if sinks.is_empty() {
        c.at(
            Some(root.start..root.start),
            "sinks",
            "no sinks: the pipeline has nowhere to write",
        );
    }
    known
        .keys()
        .filter(|k| !sinks.contains(k.as_str()) && !consumed.contains(k.as_str()))
        .map(|k| format!("component `{k}` has no consumers; its output is discarded"))
        .collect()
}

/// Replaces `${VAR}`, `${VAR:-default}` (default when unset or empty) and
/// `${VAR-default}` (default when unset); `$$` is a literal `$`. Comments are left alone,
/// so documentation may mention `${VAR}`.
fn interpolate(raw: &str, env: &dyn Fn(&str) -> Option<String>, c: &mut Collector<'_>) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut offset = 0;
    for line in raw.split_inclusive('\n') {
        let code = &line[..comment_start(line)];
        interpolate_text(code, offset, env, c, &mut out);
        out.push_str(&line[code.len()..]);
        offset += line.len();
    }
    out
}

/// Byte index where a line's `#` comment starts (outside quoted strings), or its length.
fn comment_start(line: &str) -> usize {
    let mut quote = None;
    let mut escaped = false;
    for (i, ch) in line.char_indices() {
        match (quote, ch) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), ch) if ch == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(ch),
            (None, '#') => return i,
            _ => {}
        }
        escaped = false;
    }
    line.len()
}

fn interpolate_text(
    text: &str,
    mut offset: usize,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector<'_>,
    out: &mut String,
) {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            offset += i + 2;
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            offset += i + 1;
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            c.at(
                Some(offset + i..offset + i),
                "(interpolation)",
                "unterminated `${`",
            );
            out.push_str(&rest[i..]);
            return;
        };
        let expr = &body[..end];
        let (name, default, empty_is_unset) = if let Some((n, d)) = expr.split_once(":-") {
            (n, Some(d), true)
        } else if let Some((n, d)) = expr.split_once('-') {
            (n, Some(d), false)
        } else {
            (expr, None, false)
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            && !name.starts_with(|ch: char| ch.is_ascii_digit());
        if !valid {
            c.at(
                Some(offset + i..offset + i),
                "(interpolation)",
                format!("invalid variable name `{name}`"),
            );
        } else {
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() && empty_is_unset => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => c.at(
                    Some(offset + i..offset + i),
                    format!("${{{name}}}"),
                    format!("environment variable `{name}` is not set (use ${{{name}:-default}} for a default)"),
                ),
            }
        }
        let consumed = i + 2 + end + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
}

// ---- value types shared by components ---------------------------------------------------

/// A duration written as `"30s"`, `"5m"`, `"1h30m"`, `"250ms"` (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(DurationValue(Duration::from_secs(s))),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map(DurationValue)
                .map_err(|e| {
                    de::Error::custom(format!(
                        "invalid duration `{t}`: {e} (examples: \"30s\", \"5m\", \"1h\")"
                    ))
                }),
        }
    }
}

/// A size written as `"64MiB"`, `"10MB"`, `"512KiB"`, `"1GiB"` (or a number of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"`-style sizes.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t
            .find(|ch: char| !ch.is_ascii_digit() && ch != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().map_err(|_| format!("invalid size `{text}`"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "kib" => 1 << 10,
            "mb" | "m" => 1_000_000,
            "mib" => 1 << 20,
            "gb" | "g" => 1_000_000_000,
            "gib" => 1 << 30,
            "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "invalid size unit `{other}` in `{text}` (use B, KB, KiB, MB, MiB, GB, GiB)"
                ));
            }
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(ByteSize(b)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(de::Error::custom),
        }
    }
}

/// What a source does with input it cannot decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Report it (file and line), count it, carry on.
    #[default]
    Skip,
    /// Stop the pipeline with an error.
    Fail,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_str_with(text, Path::new("test.toml"), &|name| match name {
            "DIR" => Some("/tmp/k".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    const GOOD: &str = r#"
data_dir = "${DIR}"
[sources.in]
type = "file"
paths = ["${NOPE:-events.json}"]
[transforms.classify]
type = "classify"
inputs = ["in"]
[sinks.out]
type = "console"
inputs = ["classify"]
"#;

    #[test]
    fn interpolation_and_a_valid_pipeline() {
        let config = load(GOOD).unwrap();
        assert_eq!(config.global.data_dir, PathBuf::from("/tmp/k"));
        assert_eq!(config.transforms["classify"].inputs, vec!["in".to_owned()]);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let text = r#"
[sources.in]
type = "file"
paths = ["x"]
replay = "sometimes"

[transforms.a]
type = "classify"
inputs = ["b"]
[transforms.b]
type = "classify"
inputs = ["a"]
[transforms.c]
type = "nope"
inputs = ["in"]

[sinks.out]
type = "console"
inputs = ["missing"]
colour = "always"
[sinks.lonely]
type = "console"
"#;
        let errors = load(text).unwrap_err().0;
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let has = |needle: &str| shown.iter().any(|s| s.contains(needle));
        assert!(has("test.toml:5:10: sources.in.replay"), "{shown:#?}");
        assert!(
            has("test.toml:14:8: transforms.c.type: unknown transform type `nope`"),
            "{shown:#?}"
        );
        assert!(
            has("sinks.out.colour") && has("unknown field `colour`"),
            "{shown:#?}"
        );
        assert!(
            has("test.toml:19:11: sinks.out.inputs: unknown input `missing`"),
            "{shown:#?}"
        );
        assert!(
            has("sinks.lonely.inputs: this sink has no inputs"),
            "{shown:#?}"
        );
        assert!(has("cycle: a -> b -> a"), "{shown:#?}");
    }

    #[test]
    fn missing_variables_and_bad_values_are_errors() {
        let errors = load("data_dir = \"${MISSING}\"\n").unwrap_err().0;
        assert_eq!(errors[0].line, 1);
        assert!(errors[0].message.contains("`MISSING` is not set"));
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert!(ByteSize::parse("12 parsecs").is_err());
    }

    #[test]
    fn comments_are_not_interpolated() {
        let config = load(&format!("# uses ${{UNSET}} in a comment\n{GOOD}")).unwrap();
        assert_eq!(config.global.data_dir, PathBuf::from("/tmp/k"));
        assert_eq!(comment_start("a = \"x # y\" # z"), 12);
        assert_eq!(comment_start("a = 'x # y'"), 11);
    }

    #[test]
    fn empty_default_applies_to_empty_variables() {
        let config = load(&GOOD.replace("${DIR}", "${EMPTY:-/tmp/e}")).unwrap();
        assert_eq!(config.global.data_dir, PathBuf::from("/tmp/e"));
    }
}
