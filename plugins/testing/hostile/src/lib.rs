//! A plugin that misbehaves on request, for the host's failure tests:
//!
//! - message containing `LOOP`: never returns (the deadline must stop it);
//! - message containing `BOMB`: allocates without end (the memory cap must stop it);
//! - reason `Poison`: panics (a trap);
//! - message containing `ERROR`: the whole batch returns an error;
//! - reason `Reject`: rejected (dead letter); reason `Twice`: fanned out into two copies;
//! - config `miscount = true`: returns one disposition too many;
//! - config `refuse = true`: refuses its config;
//! - `tick` with `last = true` emits one `Seen` event whose count is the events seen.

use kollate_plugin_sdk::{Config, Disposition, Event, EventView, Events, Transform, export_plugin};

struct Hostile {
    miscount: bool,
    seen: u64,
}

impl Transform for Hostile {
    fn new(config: Config) -> Result<Self, String> {
        if config.get("refuse").and_then(|v| v.as_bool()) == Some(true) {
            return Err("refusing on purpose".into());
        }
        Ok(Hostile {
            miscount: config.get("miscount").and_then(|v| v.as_bool()) == Some(true),
            seen: 0,
        })
    }

    fn process(&mut self, event: &EventView<'_>) -> Disposition {
        self.seen += 1;
        if event.message().contains("LOOP") {
            loop {
                std::hint::black_box(self.seen);
            }
        }
        if event.message().contains("BOMB") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        match event.reason() {
            "Poison" => panic!("poisoned event {}", event.uid()),
            "Reject" => Disposition::Reject("rejected by the test plugin".into()),
            "Twice" => Disposition::FanOut(vec![event.to_event(), event.to_event()]),
            _ => Disposition::Pass,
        }
    }

    fn process_batch(&mut self, batch: &Events<'_>) -> Result<Vec<Disposition>, String> {
        if batch.iter().any(|e| e.message().contains("ERROR")) {
            return Err("a batch with ERROR in it".into());
        }
        let mut out: Vec<Disposition> = batch.iter().map(|e| self.process(&e)).collect();
        if self.miscount {
            out.push(Disposition::Pass);
        }
        Ok(out)
    }

    fn tick(
        &mut self,
        now: kollate_plugin_sdk::Datetime,
        last: bool,
    ) -> Result<Vec<Event>, String> {
        if !last {
            return Ok(Vec::new());
        }
        Ok(vec![Event {
            uid: "hostile-seen".into(),
            name: String::new(),
            namespace: String::new(),
            resource_version: String::new(),
            api_version: String::new(),
            event_type: "Normal".into(),
            reason: "Seen".into(),
            message: format!("saw {} events", self.seen),
            combined: false,
            action: String::new(),
            object: kollate_plugin_sdk::ObjectRef {
                kind: "Plugin".into(),
                namespace: String::new(),
                name: "hostile".into(),
                uid: String::new(),
                api_version: String::new(),
                resource_version: String::new(),
                field_path: String::new(),
            },
            related: None,
            reporting_controller: String::new(),
            reporting_instance: String::new(),
            host: String::new(),
            count: self.seen.max(1),
            first_timestamp: None,
            last_timestamp: None,
            event_time: None,
            series: None,
            timestamp: Some(now),
            severity: None,
            category: None,
            correlation_id: None,
            labels: Vec::new(),
            enrichment: None,
            extra: None,
        }])
    }
}

export_plugin!(Hostile);
