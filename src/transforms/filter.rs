//! The `filter` transform: keep or drop events by condition.
//!
//! `include` keeps only the events that match it; `exclude` then drops those that match it.
//! Both take the same conditions as `classify` rules (see [`crate::condition`]). Dropped
//! events are counted as discarded; their batches are still acknowledged (a filtered event
//! is handled, not lost).

use std::sync::Arc;

use serde::Deserialize;

use crate::batch::Batch;
use crate::condition::Condition;
use crate::metrics::ComponentMetrics;
use crate::topology::Transform;

/// `type = "filter"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTransformConfig {
    /// Keep only events matching this (default: all).
    #[serde(default)]
    pub include: Option<Condition>,
    /// Drop events matching this (default: none).
    #[serde(default)]
    pub exclude: Option<Condition>,
}

/// The running transform.
pub struct Filter {
    include: Option<Condition>,
    exclude: Option<Condition>,
    metrics: Arc<ComponentMetrics>,
}

impl FilterTransformConfig {
    /// Builds the transform.
    pub fn build(&self, metrics: Arc<ComponentMetrics>) -> Filter {
        Filter {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            metrics,
        }
    }
}

impl Transform for Filter {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let before = batch.events.len();
        batch.events.retain(|e| {
            self.include.as_ref().is_none_or(|c| c.matches(e))
                && !self.exclude.as_ref().is_some_and(|c| c.matches(e))
        });
        ComponentMetrics::add(
            &self.metrics.discarded,
            (before - batch.events.len()) as u64,
        );
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn include_then_exclude() {
        let config: FilterTransformConfig = toml::from_str(
            "include = { type = \"Warning\" }\nexclude = { reason = \"FailedScheduling\" }",
        )
        .unwrap();
        let metrics = Arc::new(ComponentMetrics::default());
        let mut filter = config.build(metrics.clone());
        let e = |t: &str, r: &str| Event {
            event_type: t.into(),
            reason: r.into(),
            ..Event::default()
        };
        let mut out = Vec::new();
        filter.process(
            Batch::new(vec![
                e("Warning", "BackOff"),
                e("Normal", "Pulled"),
                e("Warning", "FailedScheduling"),
            ]),
            &mut out,
        );
        let kept: Vec<_> = out[0].events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(kept, vec!["BackOff"]);
        assert_eq!(ComponentMetrics::get(&metrics.discarded), 2);
    }
}
