//! Sources: where events come from.
//!
//! | type | module | reads |
//! |---|---|---|
//! | `file` | [`file`] | files and globs, every on-disk shape; follow and replay |
//! | `stdin` | [`file`] | the same shapes from standard input |
//! | `kubernetes_events` | [`kubernetes_events`] | list + watch of either Event API, resumable |

mod emit;
pub mod file;
pub mod kafka;
pub mod kubernetes_events;

pub use emit::{ReadError, Replay};

use std::path::Path;

use serde::Deserialize;
use toml::de::ValueDeserializer;

use crate::topology::{BuildError, SourceContext, Task};

/// The config of any source, by `type`.
#[derive(Debug)]
pub enum SourceConfig {
    /// `type = "file"`.
    File(file::FileSourceConfig),
    /// `type = "stdin"`.
    Stdin(file::StdinSourceConfig),
    /// `type = "kubernetes_events"`.
    KubernetesEvents(Box<kubernetes_events::KubernetesEventsSourceConfig>),
    /// `type = "kafka"`.
    Kafka(Box<kafka::KafkaSourceConfig>),
}

impl SourceConfig {
    /// Every source `type`.
    pub const TYPES: &[&str] = &["file", "stdin", "kubernetes_events", "kafka"];

    /// Deserialises the options of a source of type `ty`; `None` for an unknown type.
    pub(crate) fn parse(
        ty: &str,
        de: ValueDeserializer<'_>,
    ) -> Result<Option<Self>, toml::de::Error> {
        Ok(Some(match ty {
            "file" => SourceConfig::File(file::FileSourceConfig::deserialize(de)?),
            "stdin" => SourceConfig::Stdin(file::StdinSourceConfig::deserialize(de)?),
            "kubernetes_events" => SourceConfig::KubernetesEvents(Box::new(
                kubernetes_events::KubernetesEventsSourceConfig::deserialize(de)?,
            )),
            "kafka" => SourceConfig::Kafka(Box::new(kafka::KafkaSourceConfig::deserialize(de)?)),
            _ => return Ok(None),
        }))
    }

    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Stdin(_) => "stdin",
            SourceConfig::KubernetesEvents(_) => "kubernetes_events",
            SourceConfig::Kafka(_) => "kafka",
        }
    }

    /// True when the source reads a finite input as fast as it can (progress is meaningful).
    pub fn is_replay(&self) -> bool {
        match self {
            SourceConfig::File(c) => !c.follow,
            SourceConfig::Stdin(_) | SourceConfig::KubernetesEvents(_) | SourceConfig::Kafka(_) => {
                false
            }
        }
    }

    /// Bytes of input known in advance (the files a replay will read), for progress.
    pub fn input_bytes(&self) -> Option<u64> {
        match self {
            SourceConfig::File(c) => Some(c.input_bytes()),
            SourceConfig::Stdin(_) | SourceConfig::KubernetesEvents(_) | SourceConfig::Kafka(_) => {
                None
            }
        }
    }

    /// Builds the source's task.
    ///
    /// # Errors
    /// Options that cannot work (e.g. a malformed glob).
    pub fn build(&self, ctx: SourceContext) -> Result<Task, BuildError> {
        match self {
            SourceConfig::File(c) => c.build(ctx),
            SourceConfig::Stdin(c) => c.build(ctx),
            SourceConfig::KubernetesEvents(c) => c.build(ctx),
            SourceConfig::Kafka(c) => c.build(ctx),
        }
    }
}

/// Writes a source's checkpoint file so that a crash leaves either the old or the new one:
/// to a temporary file first, then renamed over the old.
///
/// # Errors
/// The directory cannot be created or the file written.
pub(crate) fn write_checkpoint(path: &Path, state: &impl serde::Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, path)
}
