//! The disk buffer's write + read path: batches written to the log (encoded, checksummed,
//! synced every 200 ms), read back, decoded and acknowledged. Run with
//! `cargo bench --bench buffer`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kollate::batch::Batch;
use kollate::buffers::WhenFull;
use kollate::buffers::disk::DiskBuffer;
use kollate::event::Event;
use kollate::metrics::ComponentMetrics;
use tokio::sync::mpsc;

const EVENTS: u64 = 100_000;
const BATCH: usize = 512;

fn events() -> Vec<Event> {
    common::decode(&common::generated(EVENTS, 100.0, false))
}

/// Writes every batch through a fresh disk buffer and reads it all back.
async fn write_and_read(batches: Vec<Batch>) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Arc::new(ComponentMetrics::default());
    let buffer = DiskBuffer::open(dir.path(), 4 << 30, metrics).expect("open");
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(1);
    let runner =
        tokio::spawn(buffer.run(in_rx, out_tx, WhenFull::Block, Duration::from_millis(200)));
    let feeder = tokio::spawn(async move {
        for b in batches {
            in_tx.send(b).await.expect("buffer running");
        }
    });
    let mut read = 0;
    while let Some(batch) = out_rx.recv().await {
        read += batch.len();
    }
    feeder.await.expect("feeder");
    runner.await.expect("runner").expect("buffer");
    read
}

fn bench(c: &mut Criterion) {
    let events = events();
    let batches: Vec<Batch> = events
        .chunks(BATCH)
        .map(|c| Batch::new(c.to_vec()))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("disk_buffer");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("write_read_100k", |b| {
        b.iter_batched(
            || batches.clone(),
            |batches| {
                let read = runtime.block_on(write_and_read(batches));
                assert_eq!(read, EVENTS as usize);
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
