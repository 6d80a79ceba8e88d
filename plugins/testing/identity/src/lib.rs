//! Passes every event unchanged: the host's per-event overhead, measured.
//!
//! With `config = { copy = true }` it answers `replace` with a copy of each event read
//! through the SDK's view instead: every field crosses to the plugin and back, which the
//! host's tests compare with the input.

use kollate_plugin_sdk::{Config, Disposition, EventView, Transform, export_plugin};

struct Identity {
    copy: bool,
}

impl Transform for Identity {
    fn new(config: Config) -> Result<Self, String> {
        Ok(Identity {
            copy: config["copy"].as_bool().unwrap_or(false),
        })
    }

    fn process(&mut self, event: &EventView<'_>) -> Disposition {
        if self.copy {
            Disposition::Replace(event.to_event())
        } else {
            Disposition::Pass
        }
    }
}

export_plugin!(Identity);
