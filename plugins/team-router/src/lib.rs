//! Adds the owning team and its on-call contact to every event, from a namespace -> team map.
//!
//! ```toml
//! [transforms.route]
//! type = "wasm"
//! inputs = ["classify"]
//! path = "plugins/target/wasm/team_router.wasm"
//! config = { teams = { shop = "checkout", "payments-*" = "payments" }, oncall = { checkout = "@alice" }, default_team = "platform" }
//! ```
//!
//! Namespaces match exactly, or by prefix when the key ends in `*` (the longest prefix
//! wins). Events of cluster-scoped objects (no namespace) use the involved object's
//! namespace, else `default_team`. Labels written: `team` and `oncall` (names configurable).

use std::collections::BTreeMap;

use kollate_plugin_sdk::{Config, Disposition, EventView, Transform, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Namespace (or `prefix*`) -> team.
    #[serde(default)]
    teams: BTreeMap<String, String>,
    /// Team -> on-call contact.
    #[serde(default)]
    oncall: BTreeMap<String, String>,
    /// Team for namespaces no key matches (no label when unset).
    #[serde(default)]
    default_team: Option<String>,
    #[serde(default = "team_label")]
    team_label: String,
    #[serde(default = "oncall_label")]
    oncall_label: String,
}

fn team_label() -> String {
    "team".into()
}

fn oncall_label() -> String {
    "oncall".into()
}

struct TeamRouter {
    exact: BTreeMap<String, String>,
    /// (prefix, team), longest prefix first.
    prefixes: Vec<(String, String)>,
    settings: Settings,
}

impl TeamRouter {
    fn team(&self, namespace: &str) -> Option<&str> {
        if let Some(team) = self.exact.get(namespace) {
            return Some(team);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| namespace.starts_with(p.as_str()))
            .map(|(_, t)| t.as_str())
            .or(self.settings.default_team.as_deref())
    }
}

impl Transform for TeamRouter {
    fn new(config: Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config).map_err(|e| format!("team-router config: {e}"))?;
        let mut exact = BTreeMap::new();
        let mut prefixes = Vec::new();
        for (key, team) in &settings.teams {
            match key.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_owned(), team.clone())),
                None => {
                    exact.insert(key.clone(), team.clone());
                }
            }
        }
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(TeamRouter {
            exact,
            prefixes,
            settings,
        })
    }

    fn process(&mut self, event: &EventView<'_>) -> Disposition {
        let namespace = match event.object().namespace() {
            "" => event.namespace(),
            ns => ns,
        };
        let Some(team) = self.team(namespace) else {
            return Disposition::Pass;
        };
        let oncall = self.settings.oncall.get(team);
        if event.label(&self.settings.team_label) == Some(team)
            && oncall.is_none_or(|o| event.label(&self.settings.oncall_label) == Some(o))
        {
            return Disposition::Pass;
        }
        // Only the labels go back to the host, not the whole event.
        let mut labels = vec![(self.settings.team_label.clone(), team.to_owned())];
        if let Some(contact) = oncall {
            labels.push((self.settings.oncall_label.clone(), contact.clone()));
        }
        Disposition::SetLabels(labels)
    }
}

export_plugin!(TeamRouter);
