//! The `wasm` transform's costs: per-event host overhead of an identity (`pass`) plugin in
//! batches of 256, the team-router plugin per event, and cold start with and without the
//! precompiled cache. Builds the plugins first (`plugins/build.sh --rust-only`).
//! Run with `cargo bench --bench wasm`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kollate::batch::Batch;
use kollate::event::{Event, decode_json};
use kollate::generate::{GenerateOptions, generate};
use kollate::metrics::ComponentMetrics;
use kollate::topology::Transform;
use kollate::transforms::classify::ClassifyTransformConfig;
use kollate::transforms::wasm::{self, WasmTransformConfig};

const BATCH: usize = 256;

fn plugin(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(root.join("plugins/build.sh"))
        .arg("--rust-only")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run plugins/build.sh");
    assert!(status.success(), "plugins/build.sh failed");
    root.join("plugins/target/wasm")
        .join(format!("{name}.wasm"))
}

/// 256 realistic, classified events.
fn events() -> Vec<Event> {
    let mut out = Vec::new();
    let opts = GenerateOptions {
        events: BATCH as u64,
        rate: 100.0,
        deployments: 50,
        ..GenerateOptions::default()
    };
    generate(&opts, &mut out).expect("generate");
    let mut events: Vec<Event> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| decode_json(l).expect("generated events decode"))
        .collect();
    let mut classify = toml::from_str::<ClassifyTransformConfig>("")
        .expect("config")
        .build();
    let mut classified = Vec::new();
    classify.process(Batch::new(std::mem::take(&mut events)), &mut classified);
    classified.into_iter().flat_map(|b| b.events).collect()
}

fn transform(name: &str, options: &str, data_dir: &Path) -> Box<dyn Transform> {
    let text = format!(
        "path = {:?}\nbatch_size = {BATCH}\n{options}",
        plugin(name).display().to_string()
    );
    let config: WasmTransformConfig = toml::from_str(&text).expect("config");
    Box::new(
        config
            .build("bench", Arc::new(ComponentMetrics::default()), data_dir)
            .expect("plugin builds"),
    )
}

fn benches(c: &mut Criterion) {
    let events = events();
    let data = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("wasm");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    for (name, options) in [
        ("identity", ""),
        (
            "team_router",
            r#"config = { teams = { shop = "checkout", payments = "payments", search = "discovery", auth = "identity", media = "content" }, oncall = { checkout = "@checkout-oncall" }, default_team = "platform" }"#,
        ),
    ] {
        let mut t = transform(name, options, data.path());
        group.bench_function(format!("{name}_batch_of_{BATCH}"), |b| {
            // Each batch is cloned just before its call, so its events are in cache as they
            // are for a pipeline stage whose predecessor just handled them. Cloning hundreds
            // of batches ahead (`SmallInput`) left the result to where the allocator put
            // them: 31 to 40 µs per batch for one binary, against ±1% this way.
            b.iter_batched(
                || Batch::new(events.clone()),
                |batch| {
                    let mut out = Vec::new();
                    t.process(batch, &mut out);
                    out
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("wasm_cold_start");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let path = plugin("team_router");
    group.bench_function("compile", |b| {
        b.iter(|| wasm::load(&path, None).expect("loads"))
    });
    let cache = data.path().join("cache");
    wasm::load(&path, Some(&cache)).expect("fills the cache");
    group.bench_function("from_cache", |b| {
        b.iter(|| {
            let loaded = wasm::load(&path, Some(&cache)).expect("loads");
            assert!(loaded.from_cache);
            loaded
        })
    });
    group.finish();
}

criterion_group!(wasm_benches, benches);
criterion_main!(wasm_benches);
