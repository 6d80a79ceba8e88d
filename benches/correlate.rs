//! The correlate and patterns stages alone, on one thread, over the 1,000,000-event stream
//! of `bench/run.sh` (`kollate generate --rate 200 --deployments 400 --core-only`).
//!
//! Generation, decoding and classification happen first and are not timed; the timed part
//! is every batch of 500 going through `correlate` then `patterns`, and their final flush.
//! Three rounds, each on fresh transforms. `bench/run.sh` measures the whole process
//! (file decoding and encoding included).
//!
//! The allocator is mimalloc, as in the `kollate` binary. `KOLLATE_CORRELATE` takes extra
//! correlate options as JSON (e.g. `{"reorder_window": "0s", "hold": "0s"}` for no holds).
//!
//!     cargo bench --bench correlate [-- EVENTS]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kollate::batch::Batch;
use kollate::event::Event;
use kollate::metrics::ComponentMetrics;
use kollate::topology::Transform;
use kollate::transforms::correlate::CorrelateTransformConfig;
use kollate::transforms::patterns::PatternsTransformConfig;

const BATCH: usize = 500;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Time spent in the two stages for one pass over `events`, and the records they emitted.
fn round(events: &[Event]) -> (Duration, usize) {
    let mut options = serde_json::json!({ "snapshot": false });
    if let Ok(extra) = std::env::var("KOLLATE_CORRELATE") {
        let extra: serde_json::Value =
            serde_json::from_str(&extra).expect("KOLLATE_CORRELATE is JSON");
        for (k, v) in extra.as_object().expect("a JSON object") {
            options[k] = v.clone();
        }
    }
    let config: CorrelateTransformConfig =
        serde_json::from_value(options).expect("correlate options");
    let mut correlate = config.build(None, Arc::new(ComponentMetrics::default()));
    let mut patterns = toml::from_str::<PatternsTransformConfig>("")
        .expect("config")
        .build();
    let batches: Vec<Batch> = events
        .chunks(BATCH)
        .map(|c| Batch::new(c.to_vec()))
        .collect();
    let (mut middle, mut out) = (Vec::new(), Vec::new());
    let mut emitted = 0;
    let started = Instant::now();
    for batch in batches {
        correlate.process(batch, &mut middle);
        for b in middle.drain(..) {
            patterns.process(b, &mut out);
        }
        emitted += out.drain(..).map(|b| b.len()).sum::<usize>();
    }
    while correlate.flush(&mut middle) {}
    for b in middle.drain(..) {
        patterns.process(b, &mut out);
    }
    while patterns.flush(&mut out) {}
    emitted += out.drain(..).map(|b| b.len()).sum::<usize>();
    (started.elapsed(), emitted)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let events = common::classified(n);
    let mut rates: Vec<f64> = (0..3)
        .map(|i| {
            let (took, emitted) = round(&events);
            let rate = events.len() as f64 / took.as_secs_f64();
            println!(
                "round {}: {} events in {:.3} s: {rate:.0} events/s ({emitted} records out)",
                i + 1,
                events.len(),
                took.as_secs_f64()
            );
            rate
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "correlate + patterns, one thread: median {:.0} events/s ({:.2} µs per event)",
        rates[1],
        1e6 / rates[1]
    );
}
