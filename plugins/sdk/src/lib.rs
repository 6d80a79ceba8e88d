//! Write kollate transforms in Rust.
//!
//! A plugin is a type implementing [`Transform`], exported with [`export_plugin!`]:
//!
//! ```ignore
//! use kollate_plugin_sdk::{export_plugin, Config, Disposition, Event, Transform};
//!
//! struct Shout;
//!
//! impl Transform for Shout {
//!     fn new(_config: Config) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//!
//!     fn process(&mut self, event: &Event) -> Disposition {
//!         let mut event = event.clone();
//!         event.message = event.message.to_uppercase();
//!         Disposition::Replace(event)
//!     }
//! }
//!
//! export_plugin!(Shout);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (or `wasm32-unknown-unknown`, see
//! `plugins/README.md`); the `.wasm` file is the component a `wasm` transform loads. The
//! contract itself is `wit/transform.wit` (package `kollate:plugin@0.1.0`).

extern crate self as kollate_plugin_sdk;

use std::cell::RefCell;

/// The bindings `wit-bindgen` generates from `wit/transform.wit`. Plugins rarely need them
/// directly: the types they use are re-exported at the crate root.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "kollate_plugin_sdk::bindings",
        runtime_path: "kollate_plugin_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::kollate::plugin::host::Level;
pub use bindings::kollate::plugin::types::{
    Category, Datetime, Disposition, Enrichment, Event, ObjectRef, Owner, Series, Severity,
};
use bindings::exports::kollate::plugin::transform::{GuestPlugin, Plugin};

/// The transform's `config` table, as JSON (`{}` when the config has none).
pub type Config = serde_json::Value;

/// A plugin transform. One value is created per plugin instance and keeps its state.
pub trait Transform: Sized + 'static {
    /// Creates the plugin from its config; an error stops kollate at start-up with the
    /// message shown to the operator.
    fn new(config: Config) -> Result<Self, String>;

    /// Decides what happens to one event.
    fn process(&mut self, event: &Event) -> Disposition;

    /// Handles a whole batch; override for batch-level work. The default calls
    /// [`Transform::process`] for each event. Must return one disposition per event.
    fn process_batch(&mut self, batch: &[Event]) -> Result<Vec<Disposition>, String> {
        Ok(batch.iter().map(|e| self.process(e)).collect())
    }

    /// Periodic work for windowed plugins; `last` is true at shutdown. Returns events to
    /// emit. The default emits nothing.
    fn tick(&mut self, _now: Datetime, _last: bool) -> Result<Vec<Event>, String> {
        Ok(Vec::new())
    }
}

/// The resource the host sees: a [`Transform`] behind a `RefCell` (WIT resources are
/// called through shared references; calls never overlap).
#[doc(hidden)]
pub struct Instance<T>(RefCell<T>);

impl<T: Transform> GuestPlugin for Instance<T> {
    fn open(config: String) -> Result<Plugin, String> {
        let config: Config = if config.trim().is_empty() {
            Config::Object(Default::default())
        } else {
            serde_json::from_str(&config).map_err(|e| format!("config is not JSON: {e}"))?
        };
        Ok(Plugin::new(Instance(RefCell::new(T::new(config)?))))
    }

    fn process(&self, batch: Vec<Event>) -> Result<Vec<Disposition>, String> {
        self.0.borrow_mut().process_batch(&batch)
    }

    fn tick(&self, now: Datetime, last: bool) -> Result<Vec<Event>, String> {
        self.0.borrow_mut().tick(now, last)
    }
}

/// Exports a [`Transform`] as the plugin's implementation of `kollate:plugin/transform`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __KollatePluginExport;

        impl $crate::bindings::exports::kollate::plugin::transform::Guest for __KollatePluginExport {
            type Plugin = $crate::Instance<$plugin>;
        }

        $crate::bindings::export!(__KollatePluginExport with_types_in $crate::bindings);
    };
}

/// Writes a line to kollate's log, tagged with the transform's name.
pub fn log(level: Level, message: &str) {
    bindings::kollate::plugin::host::log(level, message);
}

/// Adds to a plugin counter (`kollate_plugin_counter_total{name=...}` on `/metrics`).
pub fn counter_add(name: &str, value: u64) {
    bindings::kollate::plugin::host::counter_add(name, value);
}

/// Sets a plugin gauge (`kollate_plugin_gauge{name=...}` on `/metrics`).
pub fn gauge_set(name: &str, value: f64) {
    bindings::kollate::plugin::host::gauge_set(name, value);
}

impl Event {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    /// Sets label `key` (labels stay sorted by key).
    pub fn set_label(&mut self, key: &str, value: impl Into<String>) {
        match self.labels.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => self.labels[i].1 = value.into(),
            Err(i) => self.labels.insert(i, (key.to_string(), value.into())),
        }
    }

    /// True when the event is a `Warning`.
    pub fn is_warning(&self) -> bool {
        self.event_type == "Warning"
    }
}
