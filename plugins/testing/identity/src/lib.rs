//! Passes every event unchanged: the host's per-event overhead, measured.

use kollate_plugin_sdk::{Config, Disposition, EventView, Transform, export_plugin};

struct Identity;

impl Transform for Identity {
    fn new(_config: Config) -> Result<Self, String> {
        Ok(Identity)
    }

    fn process(&mut self, _event: &EventView<'_>) -> Disposition {
        Disposition::Pass
    }
}

export_plugin!(Identity);
