//! Drops known-noisy events: reasons per namespace, counting each drop by reason through
//! the plugin metrics (`kollate_plugin_counter_total{name="dropped.REASON"}`).
//!
//! ```toml
//! [transforms.quiet]
//! type = "wasm"
//! inputs = ["classify"]
//! path = "plugins/target/wasm/noise_filter.wasm"
//! config = { drop = { "kube-system" = ["Pulled", "Created", "Started"], "*" = ["SandboxChanged"] }, keep_warnings = true }
//! ```
//!
//! `"*"` applies to every namespace. With `keep_warnings = true` (the default), `Warning`
//! events are never dropped, whatever their reason.

use std::collections::{BTreeMap, BTreeSet};

use kollate_plugin_sdk::{
    Config, Disposition, EventView, Events, Transform, counter_add, export_plugin,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Namespace (or `*`) -> reasons to drop.
    #[serde(default)]
    drop: BTreeMap<String, BTreeSet<String>>,
    #[serde(default = "yes")]
    keep_warnings: bool,
}

fn yes() -> bool {
    true
}

struct NoiseFilter {
    settings: Settings,
    /// Drops in the current batch, by reason (reported once per batch).
    dropped: BTreeMap<String, u64>,
}

impl NoiseFilter {
    fn is_noise(&self, event: &EventView<'_>) -> bool {
        if self.settings.keep_warnings && event.is_warning() {
            return false;
        }
        let listed = |ns: &str| {
            self.settings
                .drop
                .get(ns)
                .is_some_and(|reasons| reasons.contains(event.reason()))
        };
        listed(event.namespace()) || listed("*")
    }
}

impl Transform for NoiseFilter {
    fn new(config: Config) -> Result<Self, String> {
        let settings =
            serde_json::from_value(config).map_err(|e| format!("noise-filter config: {e}"))?;
        Ok(NoiseFilter {
            settings,
            dropped: BTreeMap::new(),
        })
    }

    fn process(&mut self, event: &EventView<'_>) -> Disposition {
        if self.is_noise(event) {
            *self.dropped.entry(event.reason().to_owned()).or_default() += 1;
            Disposition::Drop
        } else {
            Disposition::Pass
        }
    }

    fn process_batch(&mut self, batch: &Events<'_>) -> Result<Vec<Disposition>, String> {
        let out = batch.iter().map(|e| self.process(&e)).collect();
        for (reason, n) in std::mem::take(&mut self.dropped) {
            counter_add(&format!("dropped.{reason}"), n);
        }
        Ok(out)
    }
}

export_plugin!(NoiseFilter);
