//! The store's writer alone: generated, classified events (the stream of `bench/run.sh`)
//! written into a fresh store in transactions of 65,536, as the `store` sink's writer
//! thread writes them, with the WAL checkpointed by a second connection as the sink does.
//!
//! Generation, decoding, classification and each transaction's encoding and compression
//! (the sink's preparing thread) happen first and are not timed; the timed part is every
//! [`Store::write`]. Three rounds, each on a fresh database in `$TMPDIR` (use
//! `TMPDIR=/dev/shm` to leave the disk out). `bench/run.sh` and `bench/store.sh` measure
//! the whole process.
//!
//!     cargo bench --bench store [-- EVENTS]

mod common;

use std::time::{Duration, Instant};

use kollate::event::Event;
use kollate::sinks::store::Checkpointer;
use kollate::store::{Prepared, Store};

/// Events per transaction (the sink's largest).
const TRANSACTION: usize = 65_536;

/// Time spent writing `events` into a fresh store, and the database's size afterwards.
fn round(events: &[Event], prepared: &[Prepared]) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let mut store = Store::open(&path).expect("store");
    store.checkpoint_elsewhere().expect("checkpoints");
    let checkpoints = Checkpointer::start(&path, "bench".into()).expect("checkpointer");
    let mut took = Duration::ZERO;
    for (chunk, made) in events.chunks(TRANSACTION).zip(prepared) {
        let chunk: Vec<&Event> = chunk.iter().collect();
        let started = Instant::now();
        let added = checkpoints
            .turn(|| store.write(&chunk, made))
            .expect("write");
        took += started.elapsed();
        assert_eq!(added, chunk.len(), "every event is new");
    }
    drop(checkpoints);
    (took, store.size().expect("size"))
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let events = common::classified(n);
    let mut compressor = Prepared::compressor().expect("zstd");
    let prepared: Vec<Prepared> = events
        .chunks(TRANSACTION)
        .map(|c| {
            let c: Vec<&Event> = c.iter().collect();
            Prepared::new(&c, &mut compressor).expect("prepare")
        })
        .collect();
    let mut rates: Vec<f64> = (0..3)
        .map(|i| {
            let (took, size) = round(&events, &prepared);
            let rate = events.len() as f64 / took.as_secs_f64();
            println!(
                "round {}: {} events written in {:.2} s: {:.0} events/s ({:.2} µs per event), {} MiB",
                i + 1,
                events.len(),
                took.as_secs_f64(),
                rate,
                took.as_secs_f64() * 1e6 / events.len() as f64,
                size >> 20
            );
            rate
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!("store writer: median {:.0} events/s", rates[1]);
}
