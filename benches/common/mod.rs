//! Input shared by the benchmarks: generated events, as bytes and decoded.

use kollate::event::Event;
use kollate::format::{Decoded, Limits, Reader};
use kollate::generate::{GenerateOptions, generate};
use kollate::transforms::classify::ClassifyTransformConfig;

/// `events` generated events (JSON Lines, 400 deployments) at `rate` events/s of event time;
/// `mixed_apis` writes a share in the events.k8s.io/v1 shape, else all are core/v1
/// (`kollate generate --core-only`).
pub fn generated(events: u64, rate: f64, mixed_apis: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = GenerateOptions {
        events,
        rate,
        deployments: 400,
        mixed_apis,
        ..GenerateOptions::default()
    };
    generate(&opts, &mut out).expect("generate");
    out
}

/// The events in `bytes`, decoded as the file source decodes them.
pub fn decode(bytes: &[u8]) -> Vec<Event> {
    let limits = Limits {
        max_document_bytes: 64 << 20,
        max_message_bytes: 64 << 10,
    };
    let mut reader = Reader::new(bytes, limits);
    let mut events = Vec::new();
    let mut take = |d: Decoded| {
        if let Decoded::Event(e, _) = d {
            events.push(e);
        }
    };
    reader.read_to_end(&mut take).expect("in memory");
    events
}

/// The stream of `bench/run.sh` (`kollate generate --rate 200 --deployments 400
/// --core-only`, `events` long), decoded and classified by the default rules.
#[allow(
    dead_code,
    reason = "not every benchmark starts from classified events"
)]
pub fn classified(events: u64) -> Vec<Event> {
    let mut events = decode(&generated(events, 200.0, false));
    let classify = toml::from_str::<ClassifyTransformConfig>("")
        .expect("config")
        .build();
    for e in &mut events {
        classify.classify(e);
    }
    events
}
