//! The `alert` transform: rules that turn events, incidents and patterns into alerts for
//! the `alertmanager` and `webhook` sinks.
//!
//! Each `[[transforms.NAME.rules]]` has a `name` (the `alertname`), what it looks `on`
//! (`"event"`, `"incident"`, `"pattern"` or `"anomaly"` records), a condition `when` (the
//! same conditions as `classify` and `filter`: severity, category, reason, namespace...),
//! optional thresholds `min_count` (incident members, pattern or event occurrences) and
//! `min_score` (anomalies), and labels and annotations templated from
//! fields (`{namespace}`, `{kind}`, `{name}`, `{reason}`, `{type}`, `{severity}`,
//! `{category}`, `{host}`, `{message}`, `{count}`, `{correlation_id}`).
//!
//! An alert's identity is the rule plus its `group_by` fields (for incidents: the incident
//! id; for patterns and anomalies: the pattern key), so a storm of matching events is one
//! alert. A firing alert is sent when it starts and again at most every `repeat_interval`
//! while it keeps matching (which keeps it alive in Alertmanager: each send says it ends
//! three intervals later unless renewed). It is resolved (sent with `endsAt` = now) when its
//! incident is resolved, or when nothing matched it for `resolve_after`.
//!
//! Only alert records go out; the batches' acknowledgements travel with them, so a source
//! checkpoints past an event only once its alert was delivered.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Deserialize;

use crate::batch::Batch;
use crate::condition::Condition;
use crate::config::DurationValue;
use crate::event::{Alert, AlertStatus, Event, IncidentStatus, PatternKind, Timestamp};
use crate::template::{Field, Template};
use crate::topology::Transform;

/// What a rule looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// Plain events.
    #[default]
    Event,
    /// Incident records from `correlate`.
    Incident,
    /// Recurring-pattern records from `patterns`.
    Pattern,
    /// Rate-anomaly records from `patterns`.
    Anomaly,
}

fn default_repeat_interval() -> DurationValue {
    DurationValue(Duration::from_secs(300))
}
fn default_resolve_after() -> DurationValue {
    DurationValue(Duration::from_secs(900))
}

/// `[[transforms.NAME.rules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The alert's name (`alertname`).
    pub name: String,
    /// What the rule looks at (default `"event"`).
    #[serde(default)]
    pub on: On,
    /// The condition (default: everything).
    #[serde(default)]
    pub when: Condition,
    /// At least this many: an incident's member events, a pattern's occurrences in its
    /// window or an anomaly's in its bucket, an event's occurrences.
    #[serde(default)]
    pub min_count: Option<u64>,
    /// Anomalies only: at least this many standard deviations above the baseline.
    #[serde(default)]
    pub min_score: Option<f64>,
    /// Fields that make one alert (default: the incident id or pattern key; for events
    /// namespace, kind, name and reason).
    #[serde(default)]
    group_by: Option<Vec<Field>>,
    /// Labels, templated.
    #[serde(default)]
    pub labels: BTreeMap<String, Template>,
    /// Annotations, templated (default: `summary = "{message}"`).
    #[serde(default)]
    pub annotations: BTreeMap<String, Template>,
    /// Least time between two sends of the same firing alert (default 5m).
    #[serde(default = "default_repeat_interval")]
    pub repeat_interval: DurationValue,
    /// Resolved when nothing matched it this long (default 15m; incidents resolve with
    /// their incident).
    #[serde(default = "default_resolve_after")]
    pub resolve_after: DurationValue,
}

/// `type = "alert"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTransformConfig {
    /// The rules; every matching rule makes its own alert.
    pub rules: Vec<AlertRule>,
}

impl AlertTransformConfig {
    /// Builds the transform.
    pub fn build(&self) -> AlertTransform {
        AlertTransform {
            rules: self.rules.clone(),
            active: HashMap::new(),
        }
    }
}

/// A firing alert.
struct Active {
    alert: Alert,
    rule: usize,
    last_sent: Instant,
    last_match: Instant,
}

/// The running transform.
pub struct AlertTransform {
    rules: Vec<AlertRule>,
    active: HashMap<String, Active>,
}

fn kind_of(e: &Event) -> On {
    match (&e.incident, &e.pattern) {
        (Some(_), _) => On::Incident,
        (_, Some(p)) if p.kind == PatternKind::Anomaly => On::Anomaly,
        (_, Some(_)) => On::Pattern,
        _ => On::Event,
    }
}

impl AlertTransform {
    fn evaluate(&mut self, e: &Event, out: &mut Vec<Event>) {
        let kind = kind_of(e);
        if e.alert.is_some() {
            return;
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.on != kind || !rule.when.matches(e) || !thresholds_met(rule, e) {
                continue;
            }
            let mut fingerprint = rule.name.clone();
            match (&rule.group_by, kind) {
                (Some(fields), _) => {
                    for f in fields {
                        fingerprint.push('|');
                        f.render(e, &mut fingerprint);
                    }
                }
                (None, On::Incident) => {
                    fingerprint.push('|');
                    fingerprint.push_str(e.correlation_id.as_deref().unwrap_or(""));
                }
                (None, On::Pattern | On::Anomaly) => {
                    fingerprint.push('|');
                    fingerprint.push_str(e.pattern.as_ref().map_or("", |p| p.key.as_str()));
                }
                (None, On::Event) => {
                    for f in [Field::Namespace, Field::Kind, Field::Name, Field::Reason] {
                        fingerprint.push('|');
                        f.render(e, &mut fingerprint);
                    }
                }
            }
            let resolved = e
                .incident
                .as_ref()
                .is_some_and(|i| i.status == IncidentStatus::Resolved);
            let now = Instant::now();
            if resolved {
                if let Some(mut active) = self.active.remove(&fingerprint) {
                    active.alert.status = AlertStatus::Resolved;
                    active.alert.ends_at = e.timestamp.or_else(|| Some(Utc::now()));
                    out.push(alert_record(active.alert));
                }
                continue;
            }
            let repeat = rule.repeat_interval.0;
            match self.active.get_mut(&fingerprint) {
                Some(active) => {
                    active.last_match = now;
                    if now.duration_since(active.last_sent) >= repeat {
                        active.last_sent = now;
                        active.alert.annotations = annotations(rule, e);
                        active.alert.ends_at = Some(keep_alive(repeat));
                        out.push(alert_record(active.alert.clone()));
                    }
                }
                None => {
                    let mut labels: BTreeMap<String, String> = rule
                        .labels
                        .iter()
                        .map(|(k, t)| (k.clone(), t.render(e)))
                        .collect();
                    labels.insert("alertname".into(), rule.name.clone());
                    let alert = Alert {
                        name: rule.name.clone(),
                        status: AlertStatus::Firing,
                        fingerprint: fingerprint.clone(),
                        labels,
                        annotations: annotations(rule, e),
                        starts_at: e
                            .timestamp
                            .map(|t| t.min(Utc::now()))
                            .or_else(|| Some(Utc::now())),
                        ends_at: Some(keep_alive(repeat)),
                    };
                    out.push(alert_record(alert.clone()));
                    self.active.insert(
                        fingerprint,
                        Active {
                            alert,
                            rule: index,
                            last_sent: now,
                            last_match: now,
                        },
                    );
                }
            }
        }
    }
}

/// The rule's `min_count` and `min_score`, on what the record measures.
fn thresholds_met(rule: &AlertRule, e: &Event) -> bool {
    let count = match (&e.incident, &e.pattern) {
        (Some(i), _) => i.members,
        (_, Some(p)) => p.count,
        _ => e.occurrences(),
    };
    let score = e.pattern.as_ref().and_then(|p| p.score).unwrap_or(0.0);
    rule.min_count.is_none_or(|min| count >= min) && rule.min_score.is_none_or(|min| score >= min)
}

/// A firing alert stays alive in Alertmanager for three repeat intervals unless renewed.
fn keep_alive(repeat: Duration) -> Timestamp {
    Utc::now() + chrono::Duration::from_std(repeat * 3).unwrap_or(chrono::Duration::hours(1))
}

fn annotations(rule: &AlertRule, e: &Event) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = rule
        .annotations
        .iter()
        .map(|(k, t)| (k.clone(), t.render(e)))
        .collect();
    out.entry("summary".into())
        .or_insert_with(|| e.message.clone());
    out
}

/// An alert as an event record.
fn alert_record(alert: Alert) -> Event {
    Event {
        uid: format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(alert.fingerprint.as_bytes())
        )
        .into(),
        reason: match alert.status {
            AlertStatus::Firing => "AlertFiring",
            AlertStatus::Resolved => "AlertResolved",
        }
        .into(),
        message: alert
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_default(),
        event_type: "Warning".into(),
        reporting_controller: "kollate/alert".into(),
        count: 1,
        timestamp: Some(Utc::now()),
        alert: Some(Box::new(alert)),
        ..Event::default()
    }
}

impl Transform for AlertTransform {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let Batch { events, notifiers } = batch;
        let mut alerts = Vec::new();
        for e in &events {
            self.evaluate(e, &mut alerts);
        }
        // The input's acknowledgements go with the alerts (or are released right away).
        out.push(Batch {
            events: alerts,
            notifiers,
        });
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }

    /// Renews long-firing alerts and resolves those nothing matched for `resolve_after`.
    fn tick(&mut self, out: &mut Vec<Batch>) {
        let mut alerts = Vec::new();
        let now = Instant::now();
        let rules = &self.rules;
        self.active.retain(|_, active| {
            let rule = &rules[active.rule];
            if rule.on != On::Incident
                && now.duration_since(active.last_match) >= rule.resolve_after.0
            {
                active.alert.status = AlertStatus::Resolved;
                active.alert.ends_at = Some(Utc::now());
                alerts.push(alert_record(active.alert.clone()));
                return false;
            }
            if now.duration_since(active.last_sent) >= rule.repeat_interval.0 {
                active.last_sent = now;
                active.alert.ends_at = Some(keep_alive(rule.repeat_interval.0));
                alerts.push(alert_record(active.alert.clone()));
            }
            true
        });
        if !alerts.is_empty() {
            out.push(Batch::new(alerts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PatternReport, Severity};

    fn anomaly(score: f64, count: u64) -> Event {
        Event {
            namespace: "shop".into(),
            reason: "RateAnomaly".into(),
            message: "storm".into(),
            severity: Some(Severity::Error),
            pattern: Some(Box::new(PatternReport {
                kind: PatternKind::Anomaly,
                key: "BackOff | Pod | shop".into(),
                count,
                per_minute: count as f64,
                score: Some(score),
                baseline: Some(2.0),
                first_seen: None,
                last_seen: None,
                samples: vec![],
            })),
            ..Event::default()
        }
    }

    #[test]
    fn thresholds_and_grouping_make_one_alert_per_storm() {
        let config: AlertTransformConfig = toml::from_str(
            r#"
            [[rules]]
            name = "Storm"
            on = "anomaly"
            min_score = 5.0
            min_count = 20
            labels = { namespace = "{namespace}", what = "{reason} in {namespace}" }
            "#,
        )
        .unwrap();
        let mut t = config.build();
        let mut out = Vec::new();
        let batch = Batch::new(vec![
            anomaly(4.0, 100),
            anomaly(9.0, 10),
            anomaly(9.0, 100),
            anomaly(12.0, 300),
        ]);
        t.process(batch, &mut out);
        let alerts: Vec<Alert> = out
            .into_iter()
            .flat_map(|b| b.events)
            .filter_map(|e| e.alert.map(|a| *a))
            .collect();
        assert_eq!(
            alerts.len(),
            1,
            "below thresholds: none; the same key again: no repeat"
        );
        assert_eq!(alerts[0].labels["alertname"], "Storm");
        assert_eq!(alerts[0].labels["what"], "RateAnomaly in shop");
        assert_eq!(alerts[0].status, AlertStatus::Firing);
    }

    #[test]
    fn templates_name_unknown_fields() {
        let bad = toml::from_str::<AlertTransformConfig>(
            "[[rules]]\nname = \"x\"\nlabels = { a = \"{nope}\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("unknown field `{nope}`"), "{bad}");
    }
}
