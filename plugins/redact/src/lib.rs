//! Masks secrets in event messages: credentials (`password=...`, `token: ...`), bearer
//! tokens, JWTs, cloud access keys, private keys, email addresses and IP addresses.
//!
//! ```toml
//! [transforms.redact]
//! type = "wasm"
//! inputs = ["classify"]
//! path = "plugins/target/wasm/redact.wasm"
//! config = { mask = ["secret", "token", "email", "ip"], replacement = "[REDACTED:{kind}]" }
//! ```
//!
//! `mask` selects the kinds (all four by default); `{kind}` in `replacement` becomes the
//! kind masked. Events with nothing to mask pass untouched (nothing is copied back).
//! Masked events get the label `redacted` listing what was masked; the count of masks
//! by kind is the plugin counter `masked.KIND`.

use std::collections::BTreeMap;

use kollate_plugin_sdk::{
    Config, Disposition, EventView, Events, Transform, counter_add, export_plugin,
};
use regex::Regex;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "all_kinds")]
    mask: Vec<String>,
    #[serde(default = "replacement")]
    replacement: String,
}

fn all_kinds() -> Vec<String> {
    KINDS.iter().map(|(k, _)| (*k).to_owned()).collect()
}

fn replacement() -> String {
    "[REDACTED:{kind}]".into()
}

/// Kinds and their patterns, in the order they apply (credentials before the addresses
/// they may contain).
const KINDS: &[(&str, &[&str])] = &[
    (
        "secret",
        &[
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
            r#"(?i)\b(password|passwd|pwd|secret|client[_-]?secret|api[_-]?key|access[_-]?key)\b(\s*[=:]\s*|"\s*:\s*")[^\s,;"']+"#,
            r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
            r"://[^\s:/@]+:[^\s@/]+@",
        ],
    ),
    (
        "token",
        &[
            r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*",
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
            r#"(?i)\b(token|auth[_-]?token|refresh[_-]?token)\b(\s*[=:]\s*|"\s*:\s*")[^\s,;"']+"#,
            r"\b(ghp|gho|ghs|github_pat|glpat|xox[abpors])[_-][A-Za-z0-9_-]{10,}",
        ],
    ),
    (
        "email",
        &[r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"],
    ),
    (
        "ip",
        &[
            r"\b(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\b",
            r"(?i)\b([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?i)\b([0-9a-f]{1,4}:){1,6}:([0-9a-f]{1,4}:?){0,6}[0-9a-f]{1,4}\b|(?i)\bfe80::[0-9a-f:%.]+",
        ],
    ),
];

struct Redact {
    /// (kind, patterns, replacement text) for the selected kinds.
    rules: Vec<(String, Vec<Regex>, String)>,
    masked: BTreeMap<String, u64>,
}

impl Redact {
    /// The message with every selected kind masked, if anything was.
    fn mask(&mut self, message: &str) -> Option<(String, Vec<String>)> {
        let mut text: Option<String> = None;
        let mut kinds = Vec::new();
        for (kind, patterns, replacement) in &self.rules {
            for re in patterns {
                let current = text.as_deref().unwrap_or(message);
                let n = re.find_iter(current).count();
                if n == 0 {
                    continue;
                }
                let replaced = re.replace_all(current, replacement.as_str()).into_owned();
                text = Some(replaced);
                *self.masked.entry(kind.clone()).or_default() += n as u64;
                if !kinds.contains(kind) {
                    kinds.push(kind.clone());
                }
            }
        }
        text.map(|t| (t, kinds))
    }
}

impl Transform for Redact {
    fn new(config: Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config).map_err(|e| format!("redact config: {e}"))?;
        let mut rules = Vec::new();
        for wanted in &settings.mask {
            let Some((kind, patterns)) = KINDS.iter().find(|(k, _)| k == wanted) else {
                return Err(format!(
                    "redact config: unknown kind `{wanted}` in `mask` (expected one of: {})",
                    all_kinds().join(", ")
                ));
            };
            let compiled = patterns
                .iter()
                .map(|p| Regex::new(p).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push((
                (*kind).to_owned(),
                compiled,
                settings.replacement.replace("{kind}", kind),
            ));
        }
        Ok(Redact {
            rules,
            masked: BTreeMap::new(),
        })
    }

    fn process(&mut self, event: &EventView<'_>) -> Disposition {
        match self.mask(event.message()) {
            None => Disposition::Pass,
            Some((message, kinds)) => {
                let mut clean = event.to_event();
                clean.message = message;
                clean.set_label("redacted", kinds.join(","));
                Disposition::Replace(clean)
            }
        }
    }

    fn process_batch(&mut self, batch: &Events<'_>) -> Result<Vec<Disposition>, String> {
        let out = batch.iter().map(|e| self.process(&e)).collect();
        for (kind, n) in std::mem::take(&mut self.masked) {
            counter_add(&format!("masked.{kind}"), n);
        }
        Ok(out)
    }
}

export_plugin!(Redact);
