//! kollate: turns the Kubernetes Event firehose into something people can act on.
//!
//! A pipeline of named sources, transforms and sinks declared in a TOML file
//! (Vector-style), carrying batches of one event model, with acknowledgements flowing
//! from sinks back to sources so checkpoints only ever pass delivered events.
//!
//! # Layout
//!
//! - [`api`]: the HTTP API: health checks and Prometheus metrics.
//! - [`event`]: the one event model both Event APIs decode into, and its JSON schema.
//! - [`format`]: reading events from bytes: JSON Lines, lists, watch streams, YAML.
//! - [`config`]: the TOML pipeline file, interpolation and validation with line:column errors.
//! - [`condition`]: event conditions shared by `classify` rules and `filter`.
//! - [`batch`]: batches and the acknowledgement path from sinks back to sources.
//! - [`topology`]: channels, tasks, backpressure, shutdown.
//! - [`generate`]: a deterministic generator of realistic event streams (examples, benchmarks).
//! - [`simulate`]: a model of how Kubernetes writes Events, playing incidents with known ground
//!   truth over a busy cluster, and a scorer for correlation results against that truth.
//! - [`metrics`]: per-component counters and the run summary.
//! - [`incidents`]: correlation over recorded dumps (`kollate incidents`).
//! - [`store`]: the embedded event store (SQLite) and its queries; [`query`]: their output;
//!   [`report`]: the self-contained HTML report.
//! - [`sources`], [`transforms`], [`sinks`]: one component per file, the TOML `type` is the
//!   module name.

pub mod api;
pub mod batch;
pub mod buffers;
pub mod condition;
pub mod config;
pub mod event;
pub mod format;
pub mod generate;
pub mod incidents;
pub mod metrics;
pub mod query;
pub mod report;
pub mod simulate;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod template;
pub mod topology;
pub mod transforms;
pub mod unit_test;
