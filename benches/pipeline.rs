//! Micro-benchmarks of the per-event work: decode, classify, aggregate, encode.
//! Run with `cargo bench`; the whole-process benchmark is `bench/run.sh`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kollate::batch::Batch;
use kollate::event::Event;
use kollate::format::{Decoded, Limits, Reader};
use kollate::generate::{GenerateOptions, generate};
use kollate::metrics::ComponentMetrics;
use kollate::topology::Transform;
use kollate::transforms::aggregate::AggregateTransformConfig;
use kollate::transforms::classify::ClassifyTransformConfig;

const EVENTS: u64 = 20_000;

fn input() -> Vec<u8> {
    let mut out = Vec::new();
    let opts = GenerateOptions {
        events: EVENTS,
        rate: 100.0,
        deployments: 400,
        ..GenerateOptions::default()
    };
    generate(&opts, &mut out).expect("generate");
    out
}

fn decode(bytes: &[u8]) -> Vec<Event> {
    let limits = Limits {
        max_document_bytes: 64 << 20,
        max_message_bytes: 64 << 10,
    };
    let mut reader = Reader::new(bytes, limits);
    let mut events = Vec::with_capacity(EVENTS as usize);
    let mut take = |d: Decoded| {
        if let Decoded::Event(e, _) = d {
            events.push(e);
        }
    };
    while reader.read_available(&mut take).expect("in memory") > 0 {}
    reader.finish(&mut take);
    events
}

fn benches(c: &mut Criterion) {
    let bytes = input();
    let events = decode(&bytes);
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20);

    group.bench_function("decode", |b| b.iter(|| decode(&bytes)));

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
