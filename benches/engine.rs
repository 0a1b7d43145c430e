//! Engine throughput on one core: how many change events per second the pure core decides, and the
//! same with Avro decode and command encode around it (the per-record transform of the pipeline).
//!
//! Run: `cargo bench --bench engine`. Criterion prints `thrpt` in elements (records) per second;
//! the benchmark is single-threaded, so that figure is per core. A summary line with ns/record is
//! printed at the end from a plain timed pass, for the README table.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use partner_sync::codec::Codec;
use partner_sync::engine::{Engine, EngineState};
use partner_sync::mapping::EngineConfig;
use partner_sync::model::ChangeEvent;
use partner_sync::story;

const PROSPECTS: usize = 2_000;

fn events(engine: &Engine) -> Vec<ChangeEvent> {
    story::generate(42, PROSPECTS, engine.config(), 1_772_442_000_000).clean()
}

fn engine_alone(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::defaults());
    let events = events(&engine);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(20);
    group.bench_function("apply (decide only)", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let mut state = EngineState::default();
                let mut commands = 0;
                for e in events {
                    commands += engine.apply(&mut state, e, 0).commands.len();
                }
                black_box(commands)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn transform(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::defaults());
    let codec = Codec::new();
    let encoded: Vec<_> = events(&engine)
        .iter()
        .map(|e| (e.kind(), codec.encode_event(e).unwrap()))
        .collect();
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(encoded.len() as u64));
    group.sample_size(20);
    group.bench_function("decode + apply + encode", |b| {
        b.iter(|| {
            let mut state = EngineState::default();
            let mut bytes = 0;
            for (kind, body) in &encoded {
                let event = codec
                    .decode_event(*kind, codec.event_schema(*kind), body)
                    .unwrap();
                for command in engine.apply(&mut state, event, 0).commands {
                    bytes += codec.encode_command(&command).unwrap().len();
                }
            }
            black_box(bytes)
        })
    });
    group.finish();
}

/// One plain timed pass of each, printed as ns/record and records/s, for humans and the README.
fn summary() {
    let engine = Engine::new(EngineConfig::defaults());
    let codec = Codec::new();
    let evs = events(&engine);
    let n = evs.len() as f64;
    let mut best_engine = f64::MAX;
    let mut best_transform = f64::MAX;
    let encoded: Vec<_> = evs
        .iter()
        .map(|e| (e.kind(), codec.encode_event(e).unwrap()))
        .collect();
    for _ in 0..5 {
        let batch = evs.clone();
        let start = Instant::now();
        let mut state = EngineState::default();
        for e in batch {
            black_box(engine.apply(&mut state, e, 0));
        }
        best_engine = best_engine.min(start.elapsed().as_nanos() as f64 / n);
        let start = Instant::now();
        let mut state = EngineState::default();
        for (kind, body) in &encoded {
            let event = codec
                .decode_event(*kind, codec.event_schema(*kind), body)
                .unwrap();
            for command in engine.apply(&mut state, event, 0).commands {
                black_box(codec.encode_command(&command).unwrap());
            }
        }
        best_transform = best_transform.min(start.elapsed().as_nanos() as f64 / n);
    }
    println!("\nsummary ({} records, best of 5, one core):", evs.len());
    println!(
        "  engine apply:              {:>8.0} ns/record  {:>10.0} records/s",
        best_engine,
        1e9 / best_engine
    );
    println!(
        "  decode + apply + encode:   {:>8.0} ns/record  {:>10.0} records/s",
        best_transform,
        1e9 / best_transform
    );
}

criterion_group!(benches, engine_alone, transform);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
