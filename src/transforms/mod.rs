//! Transforms: what happens to events between sources and sinks.
//!
//! | type | module | does |
//! |---|---|---|
//! | `classify` | [`classify`] | severity and category from user rules and built-in knowledge |
//! | `aggregate` | [`aggregate`] | one event per group of similar events per window |
//! | `filter` | [`filter`] | keeps or drops events by condition |
//! | `correlate` | [`correlate`] | related trouble into incidents with a probable root cause |
//! | `patterns` | [`patterns`] | recurring patterns and rate anomalies per similarity key |
//! | `alert` | [`alert`] | alert rules on events, incidents and patterns, for alert sinks |
//! | `wasm` | [`wasm`] | a user plugin: a WebAssembly component implementing `wit/transform.wit` |

pub mod aggregate;
pub mod alert;
pub mod classify;
pub mod correlate;
pub mod filter;
pub mod patterns;
pub mod wasm;

use std::sync::Arc;

use serde::Deserialize;
use toml::de::ValueDeserializer;

use crate::metrics::ComponentMetrics;
use crate::topology::{BuildError, Transform};

/// The config of any transform, by `type`.
#[derive(Debug)]
pub enum TransformConfig {
    /// `type = "classify"`.
    Classify(classify::ClassifyTransformConfig),
    /// `type = "aggregate"`.
    Aggregate(aggregate::AggregateTransformConfig),
    /// `type = "filter"`.
    Filter(Box<filter::FilterTransformConfig>),
    /// `type = "correlate"`.
    Correlate(Box<correlate::CorrelateTransformConfig>),
    /// `type = "patterns"`.
    Patterns(Box<patterns::PatternsTransformConfig>),
    /// `type = "alert"`.
    Alert(Box<alert::AlertTransformConfig>),
    /// `type = "wasm"`.
    Wasm(Box<wasm::WasmTransformConfig>),
}

impl TransformConfig {
    /// Every transform `type`.
    pub const TYPES: &[&str] = &[
        "classify",
        "aggregate",
        "filter",
        "correlate",
        "patterns",
        "alert",
        "wasm",
    ];

    /// Deserialises the options of a transform of type `ty`; `None` for an unknown type.
    pub(crate) fn parse(
        ty: &str,
        de: ValueDeserializer<'_>,
    ) -> Result<Option<Self>, toml::de::Error> {
        Ok(Some(match ty {
            "classify" => {
                TransformConfig::Classify(classify::ClassifyTransformConfig::deserialize(de)?)
            }
            "aggregate" => {
                TransformConfig::Aggregate(aggregate::AggregateTransformConfig::deserialize(de)?)
            }
            "filter" => {
                TransformConfig::Filter(Box::new(filter::FilterTransformConfig::deserialize(de)?))
            }
            "correlate" => TransformConfig::Correlate(Box::new(
                correlate::CorrelateTransformConfig::deserialize(de)?,
            )),
            "patterns" => TransformConfig::Patterns(Box::new(
                patterns::PatternsTransformConfig::deserialize(de)?,
            )),
            "alert" => {
                TransformConfig::Alert(Box::new(alert::AlertTransformConfig::deserialize(de)?))
            }
            "wasm" => TransformConfig::Wasm(Box::new(wasm::WasmTransformConfig::deserialize(de)?)),
            _ => return Ok(None),
        }))
    }

    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            TransformConfig::Classify(_) => "classify",
            TransformConfig::Aggregate(_) => "aggregate",
            TransformConfig::Filter(_) => "filter",
            TransformConfig::Correlate(_) => "correlate",
            TransformConfig::Patterns(_) => "patterns",
            TransformConfig::Alert(_) => "alert",
            TransformConfig::Wasm(_) => "wasm",
        }
    }

    /// Builds the running transform.
    ///
    /// # Errors
    /// Options that cannot work.
    pub fn build(
        &self,
        id: &str,
        metrics: &Arc<ComponentMetrics>,
        data_dir: &std::path::Path,
    ) -> Result<Box<dyn Transform>, BuildError> {
        Ok(match self {
            TransformConfig::Correlate(c) => Box::new(c.build(
                Some(data_dir.join("state").join(format!("{id}.json"))),
                metrics.clone(),
            )),
            TransformConfig::Classify(c) => Box::new(c.build()),
            TransformConfig::Patterns(c) => Box::new(c.build()),
            TransformConfig::Alert(c) => Box::new(c.build()),
            TransformConfig::Aggregate(c) => Box::new(c.build(metrics.clone())),
            TransformConfig::Filter(c) => Box::new(c.build(metrics.clone())),
            TransformConfig::Wasm(c) => Box::new(c.build(id, metrics.clone(), data_dir)?),
        })
    }
}
