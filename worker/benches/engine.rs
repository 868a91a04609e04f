//! Throughput of the engine on one core, from JSON bytes in, next to a parse-only baseline measured in the same
//! run on the same records.
//!
//! Input: the reference pipeline (examples/smart-building.yaml: two thresholds, a spike rule, silence, 5-minute
//! averages per zone) over simulated readings of 10 000 sensors in 50 zones, every 10 s, 5% out of order.
//! Run: `cargo bench -p sensorpipe-worker --bench engine` (optionally `-- --records N --rounds R`).

mod common;

use std::hint::black_box;
use std::time::Instant;

use sensorpipe_worker::engine::Outputs;
use sensorpipe_worker::simulate::{SimConfig, generate};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let target_records = arg("--records", 2_000_000);
    let rounds = arg("--rounds", 5);

    let sensors = 10_000;
    let cfg = SimConfig {
        sensors,
        zones: 50,
        duration_ms: (target_records / sensors) as i64 * 10_000,
        overheats: 0,
        spike_rises: 0,
        spike_falls: 0,
        drifts: 0,
        stuck: 0,
        silences: 0,
        late: 0.0,
        malformed: 0.0,
        ..SimConfig::default()
    };
    let mut records: Vec<Vec<u8>> = Vec::with_capacity(target_records);
    generate(&cfg, |line| {
        records.push(line.to_vec());
        Ok(())
    })
    .expect("simulation");
    let bytes: usize = records.iter().map(Vec::len).sum();
    let pipeline = common::reference();
    println!(
        "engine benchmark: {} records ({:.0} bytes avg), {sensors} sensors, reference pipeline, {rounds} rounds, one core",
        records.len(),
        bytes as f64 / records.len() as f64
    );

    let mut parse_rates = Vec::new();
    let mut engine_rates = Vec::new();
    let mut emitted = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut ok = 0usize;
        for r in &records {
            ok += usize::from(black_box(pipeline.parse(black_box(r))).is_ok());
        }
        parse_rates.push(records.len() as f64 / start.elapsed().as_secs_f64());
        assert_eq!(ok, records.len());

        let start = Instant::now();
        let mut engine = pipeline.engine();
        let mut out = Outputs::default();
        emitted = 0;
        for r in &records {
            engine.process(black_box(r), &mut out);
            if out.aggregates.len() + out.anomalies.len() + out.dead_letters.len() > 1024 {
                emitted += out.aggregates.len() + out.anomalies.len() + out.dead_letters.len();
                out.clear();
            }
        }
        engine.flush(&mut out);
        emitted += out.aggregates.len() + out.anomalies.len() + out.dead_letters.len();
        engine_rates.push(records.len() as f64 / start.elapsed().as_secs_f64());
        black_box(&out);
    }
    let parse = common::median(parse_rates);
    let engine = common::median(engine_rates);
    println!("parse only:        {:>10.0} readings/s (median)", parse);
    println!("engine (parse in): {:>10.0} readings/s (median), {emitted} records emitted", engine);
    println!("engine / parse:    {:>10.1} %", 100.0 * engine / parse);
}
