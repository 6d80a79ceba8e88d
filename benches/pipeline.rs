//! Micro-benchmarks of the per-event work: decode, classify, aggregate, encode.
//! Run with `cargo bench`; the whole-process benchmark is `bench/run.sh`.

mod common;

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kollate::batch::Batch;
use kollate::metrics::ComponentMetrics;
use kollate::topology::Transform;
use kollate::transforms::aggregate::AggregateTransformConfig;
use kollate::transforms::classify::ClassifyTransformConfig;

const EVENTS: u64 = 20_000;

fn benches(c: &mut Criterion) {
    let bytes = common::generated(EVENTS, 100.0, true);
    let events = common::decode(&bytes);
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20);

    group.bench_function("decode", |b| b.iter(|| common::decode(&bytes)));

    let classify = toml::from_str::<ClassifyTransformConfig>("")
        .expect("config")
        .build();
    group.bench_function("classify", |b| {
        b.iter_batched(
            || events.clone(),
            |mut events| {
                for e in &mut events {
                    classify.classify(e);
                }
                events
            },
            criterion::BatchSize::LargeInput,
        )
    });

    let aggregate_config = toml::from_str::<AggregateTransformConfig>("").expect("config");
    group.bench_function("aggregate", |b| {
        b.iter_batched(
            || {
                (
                    aggregate_config.build(Arc::new(ComponentMetrics::default())),
                    events.clone(),
                )
            },
            |(mut aggregate, events)| {
                let mut out = Vec::new();
                for chunk in events.chunks(512) {
                    aggregate.process(Batch::new(chunk.to_vec()), &mut out);
                }
                while aggregate.flush(&mut out) {}
                out
            },
            criterion::BatchSize::LargeInput,
        )
    });

    let mut buf = Vec::with_capacity(bytes.len() * 2);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            for e in &events {
                e.encode_json(&mut buf);
                buf.push(b'\n');
            }
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
