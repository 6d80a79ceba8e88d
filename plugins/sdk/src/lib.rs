//! Write kollate transforms in Rust.
//!
//! A plugin is a type implementing [`Transform`], exported with [`export_plugin!`]:
//!
//! ```ignore
//! use kollate_plugin_sdk::{export_plugin, Config, Disposition, EventView, Transform};
//!
//! struct Shout;
//!
//! impl Transform for Shout {
//!     fn new(_config: Config) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//!
//!     fn process(&mut self, event: &EventView<'_>) -> Disposition {
//!         let mut event = event.to_event();
//!         event.message = event.message.to_uppercase();
//!         Disposition::Replace(event)
//!     }
//! }
//!
//! export_plugin!(Shout);
//! ```
//!
//! Events arrive as [`EventView`]s: zero-copy views into the batch the host handed over,
//! with accessors for every field. [`EventView::to_event`] makes an owned [`Event`] to
//! change and return with `Disposition::Replace`; `Disposition::SetLabels` adds labels
//! without sending the event back.
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

use bindings::exports::kollate::plugin::transform::{GuestPlugin, Plugin};
pub use bindings::kollate::plugin::host::Level;
pub use bindings::kollate::plugin::types::{
    Batch, Category, Datetime, Disposition, Enrichment, Event, ObjectRef, Owner, Series, Severity,
};
use bindings::kollate::plugin::types::{EventView as RawEvent, ObjectView, PairRange, TextSpan};

/// The transform's `config` table, as JSON (`{}` when the config has none).
pub type Config = serde_json::Value;

/// A plugin transform. One value is created per plugin instance and keeps its state.
pub trait Transform: Sized + 'static {
    /// Creates the plugin from its config; an error stops kollate at start-up with the
    /// message shown to the operator.
    fn new(config: Config) -> Result<Self, String>;

    /// Decides what happens to one event.
    fn process(&mut self, event: &EventView<'_>) -> Disposition;

    /// Handles a whole batch; override for batch-level work. The default calls
    /// [`Transform::process`] for each event. Must return one disposition per event.
    fn process_batch(&mut self, batch: &Events<'_>) -> Result<Vec<Disposition>, String> {
        let mut out = Vec::with_capacity(batch.len());
        for e in batch.iter() {
            out.push(self.process(&e));
        }
        Ok(out)
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

    fn process(&self, batch: Batch) -> Result<Vec<Disposition>, String> {
        let events = Events { batch: &batch };
        self.0.borrow_mut().process_batch(&events)
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

/// The events of one batch, read in place.
#[derive(Clone, Copy)]
pub struct Events<'a> {
    batch: &'a Batch,
}

impl<'a> Events<'a> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.batch.events.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = EventView<'a>> + '_ {
        self.batch
            .events
            .iter()
            .map(|raw| EventView { raw, events: *self })
    }

    /// The string a span points at, checked when it is read (a plugin pays only for the
    /// fields it looks at). The host sends UTF-8 within the text; a span that is not
    /// reads as empty.
    fn text(&self, span: TextSpan) -> &'a str {
        let start = span.start as usize;
        self.batch
            .text
            .get(start..start.saturating_add(span.len as usize))
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    fn pairs(&self, range: PairRange) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let start = range.start as usize;
        self.batch
            .pairs
            .get(start..start + range.len as usize)
            .unwrap_or(&[])
            .iter()
            .map(|(k, v)| (self.text(*k), self.text(*v)))
    }
}

/// One input event, read in place (no copies). Field meanings are those of
/// `docs/schema.md`; absent strings are empty.
pub struct EventView<'a> {
    raw: &'a RawEvent,
    events: Events<'a>,
}

/// The involved object (or the related one), read in place.
pub struct ObjectRefView<'a> {
    raw: &'a ObjectView,
    events: Events<'a>,
}

macro_rules! text_fields {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> &'a str {
                self.events.text(self.raw.$name)
            }
        )*
    };
}

impl<'a> EventView<'a> {
    text_fields!(
        /// The Event object's uid.
        uid,
        /// The Event object's name.
        name,
        /// The Event object's namespace.
        namespace,
        /// The Event object's resourceVersion.
        resource_version,
        /// `v1` or `events.k8s.io/v1`.
        api_version,
        /// `Normal` or `Warning`.
        event_type,
        /// Machine-readable reason, e.g. `BackOff`.
        reason,
        /// Human-readable message.
        message,
        /// What was done (events.k8s.io `action`).
        action,
        /// Who reported it.
        reporting_controller,
        /// Which instance reported it.
        reporting_instance,
        /// The node it happened on.
        host,
    );

    /// The involved object.
    pub fn object(&self) -> ObjectRefView<'a> {
        ObjectRefView {
            raw: &self.raw.object,
            events: self.events,
        }
    }

    /// The related object, if any.
    pub fn related(&self) -> Option<ObjectRefView<'a>> {
        self.raw.related.as_ref().map(|raw| ObjectRefView {
            raw,
            events: self.events,
        })
    }

    /// True when the client-side aggregator merged similar events.
    pub fn combined(&self) -> bool {
        self.raw.combined
    }

    /// Occurrences this record stands for.
    pub fn count(&self) -> u64 {
        self.raw.count
    }

    /// When the latest occurrence happened.
    pub fn timestamp(&self) -> Option<Datetime> {
        self.raw.timestamp
    }

    /// kollate's severity (the `classify` transform).
    pub fn severity(&self) -> Option<Severity> {
        self.raw.severity
    }

    /// kollate's category (the `classify` transform).
    pub fn category(&self) -> Option<Category> {
        self.raw.category
    }

    /// The incident it belongs to (the `correlate` transform).
    pub fn correlation_id(&self) -> Option<&'a str> {
        self.raw.correlation_id.map(|s| self.events.text(s))
    }

    /// Labels, sorted by key.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.events.pairs(self.raw.labels)
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// True when the event is a `Warning`.
    pub fn is_warning(&self) -> bool {
        self.event_type() == "Warning"
    }

    /// The JSON escape hatch (`aggregation`, `incident`, `pattern`, `alert`), if any.
    pub fn extra(&self) -> Option<&'a str> {
        self.raw.extra.map(|s| self.events.text(s))
    }

    /// An owned copy, to change and return with `Disposition::Replace` or `FanOut`.
    pub fn to_event(&self) -> Event {
        let r = self.raw;
        Event {
            uid: self.uid().into(),
            name: self.name().into(),
            namespace: self.namespace().into(),
            resource_version: self.resource_version().into(),
            api_version: self.api_version().into(),
            event_type: self.event_type().into(),
            reason: self.reason().into(),
            message: self.message().into(),
            combined: r.combined,
            action: self.action().into(),
            object: self.object().to_object_ref(),
            related: self.related().map(|o| o.to_object_ref()),
            reporting_controller: self.reporting_controller().into(),
            reporting_instance: self.reporting_instance().into(),
            host: self.host().into(),
            count: r.count,
            first_timestamp: r.first_timestamp,
            last_timestamp: r.last_timestamp,
            event_time: r.event_time,
            series: r.series,
            timestamp: r.timestamp,
            severity: r.severity,
            category: r.category,
            correlation_id: self.correlation_id().map(Into::into),
            labels: self.labels().map(|(k, v)| (k.into(), v.into())).collect(),
            enrichment: r.enrichment.map(|en| Enrichment {
                owners: self
                    .events
                    .pairs(en.owners)
                    .map(|(kind, name)| Owner {
                        kind: kind.into(),
                        name: name.into(),
                    })
                    .collect(),
                node: self.events.text(en.node).into(),
                labels: self
                    .events
                    .pairs(en.labels)
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            }),
            extra: self.extra().map(Into::into),
        }
    }
}

impl<'a> ObjectRefView<'a> {
    text_fields!(
        /// Kind, e.g. `Pod`.
        kind,
        /// Namespace (empty for cluster-scoped objects).
        namespace,
        /// Name.
        name,
        /// UID.
        uid,
        /// API version, e.g. `apps/v1`.
        api_version,
        /// Resource version when the event was recorded.
        resource_version,
        /// Field path inside the object, e.g. `spec.containers{app}`.
        field_path,
    );

    /// An owned copy.
    pub fn to_object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind().into(),
            namespace: self.namespace().into(),
            name: self.name().into(),
            uid: self.uid().into(),
            api_version: self.api_version().into(),
            resource_version: self.resource_version().into(),
            field_path: self.field_path().into(),
        }
    }
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
}
