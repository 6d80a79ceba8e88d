//! Conditions on events, shared by `classify` rules and the `filter` transform.
//!
//! ```toml
//! { reason = ["FailedMount", "FailedAttachVolume"], namespace = "prod-*", message = "timed out" }
//! ```
//!
//! Every field given must match (AND); a list matches any of its values (OR). Strings match
//! exactly, `namespace`, `name` and `host` take globs, `message` is a regular expression.
//! Patterns are compiled when the config is loaded, so a bad one is a config error with its
//! line and column.

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::event::{Category, Event, Severity};

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Exact strings, any of which matches.
#[derive(Debug, Clone, Default)]
pub struct AnyOf(Vec<String>);

impl<'de> Deserialize<'de> for AnyOf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(AnyOf(OneOrMany::<String>::deserialize(d)?.into_vec()))
    }
}

impl AnyOf {
    fn matches(&self, value: &str) -> bool {
        self.0.iter().any(|v| v == value)
    }
}

/// Glob patterns, any of which matches.
#[derive(Debug, Clone)]
pub struct Globs(GlobSet);

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut builder = GlobSetBuilder::new();
        for pattern in OneOrMany::<String>::deserialize(d)?.into_vec() {
            let glob = Glob::new(&pattern)
                .map_err(|e| de::Error::custom(format!("invalid glob `{pattern}`: {e}")))?;
            builder.add(glob);
        }
        builder
            .build()
            .map(Globs)
            .map_err(|e| de::Error::custom(format!("invalid globs: {e}")))
    }
}

impl Globs {
    /// True when any pattern matches `value`.
    pub fn is_match(&self, value: &str) -> bool {
        self.0.is_match(value)
    }
}

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Regex::new(&text)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regular expression `{text}`: {e}")))
    }
}

/// A condition on an event. An empty condition matches everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Event reason(s), exact.
    #[serde(default)]
    pub reason: Option<AnyOf>,
    /// Event type(s): `Normal`, `Warning`.
    #[serde(default, rename = "type")]
    pub event_type: Option<AnyOf>,
    /// Kind(s) of the involved object, e.g. `Pod`.
    #[serde(default)]
    pub kind: Option<AnyOf>,
    /// Namespace glob(s).
    #[serde(default)]
    pub namespace: Option<Globs>,
    /// Involved object name glob(s).
    #[serde(default)]
    pub name: Option<Globs>,
    /// Node glob(s).
    #[serde(default)]
    pub host: Option<Globs>,
    /// Regular expression searched in the message.
    #[serde(default)]
    pub message: Option<Pattern>,
    /// Reporting controller(s) / component(s), e.g. `kubelet`.
    #[serde(default, alias = "reporting_component")]
    pub reporting_controller: Option<AnyOf>,
    /// Severities (as classified), any of which matches.
    #[serde(default)]
    pub severity: Option<OneOrManySeverity>,
    /// At least this severity.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Categories (as classified), any of which matches.
    #[serde(default)]
    pub category: Option<OneOrManyCategory>,
}

/// One severity or a list of them.
#[derive(Debug, Clone)]
pub struct OneOrManySeverity(Vec<Severity>);

impl<'de> Deserialize<'de> for OneOrManySeverity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OneOrManySeverity(
            OneOrMany::<Severity>::deserialize(d)?.into_vec(),
        ))
    }
}

/// One category or a list of them.
#[derive(Debug, Clone)]
pub struct OneOrManyCategory(Vec<Category>);

impl<'de> Deserialize<'de> for OneOrManyCategory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OneOrManyCategory(
            OneOrMany::<Category>::deserialize(d)?.into_vec(),
        ))
    }
}

impl Condition {
    /// True when every field given matches the event.
    pub fn matches(&self, e: &Event) -> bool {
        // Cheap exact comparisons first, the regex last.
        self.reason.as_ref().is_none_or(|m| m.matches(&e.reason))
            && self
                .event_type
                .as_ref()
                .is_none_or(|m| m.matches(&e.event_type))
            && self.kind.as_ref().is_none_or(|m| m.matches(&e.object.kind))
            && self
                .reporting_controller
                .as_ref()
                .is_none_or(|m| m.matches(&e.reporting_controller))
            && self
                .severity
                .as_ref()
                .is_none_or(|m| e.severity.is_some_and(|s| m.0.contains(&s)))
            && self
                .min_severity
                .is_none_or(|min| e.severity.is_some_and(|s| s >= min))
            && self
                .category
                .as_ref()
                .is_none_or(|m| e.category.is_some_and(|c| m.0.contains(&c)))
            && self
                .namespace
                .as_ref()
                .is_none_or(|g| g.is_match(namespace_of(e)))
            && self
                .name
                .as_ref()
                .is_none_or(|g| g.is_match(e.object.name.as_str()))
            && self
                .host
                .as_ref()
                .is_none_or(|g| g.is_match(e.host.as_str()))
            && self
                .message
                .as_ref()
                .is_none_or(|p| p.0.is_match(&e.message))
    }
}

/// The namespace an event is about: the involved object's, else the Event's own.
pub fn namespace_of(e: &Event) -> &str {
    if e.object.namespace.is_empty() {
        &e.namespace
    } else {
        &e.object.namespace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(toml_text: &str) -> Condition {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn all_fields_must_match_and_lists_are_alternatives() {
        let c = condition(
            r#"reason = ["FailedMount", "FailedAttachVolume"]
namespace = "prod-*"
message = "timed out""#,
        );
        let mut e = Event {
            reason: "FailedMount".into(),
            message: "MountVolume.SetUp timed out".into(),
            ..Event::default()
        };
        e.object.namespace = "prod-eu".into();
        assert!(c.matches(&e));
        e.object.namespace = "dev".into();
        assert!(!c.matches(&e));
        e.object.namespace = "prod-us".into();
        e.reason = "Pulled".into();
        assert!(!c.matches(&e));
    }

    #[test]
    fn severity_conditions_need_a_classified_event() {
        let c = condition(r#"min_severity = "error""#);
        let mut e = Event::default();
        assert!(!c.matches(&e));
        e.severity = Some(Severity::Critical);
        assert!(c.matches(&e));
        e.severity = Some(Severity::Warning);
        assert!(!c.matches(&e));
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        let err = toml::from_str::<Condition>(r#"message = "(unclosed""#).unwrap_err();
        assert!(
            err.to_string().contains("invalid regular expression"),
            "{err}"
        );
        let err = toml::from_str::<Condition>(r#"namespace = "a[""#).unwrap_err();
        assert!(err.to_string().contains("invalid glob"), "{err}");
    }
}
