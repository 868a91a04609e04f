//! Throughput of the engine on one core, from JSON bytes in, next to baselines measured in the same run on the
//! same records: a bare JSON scan (serde_json into `IgnoredAny`) and our parse alone.
//!
//! Pipeline: the reference one (examples/smart-building.yaml: two thresholds, a spike rule, silence, 5-minute
//! statistics per zone). Input: simulated readings of 10 000 sensors in 50 zones, one every 10 s per sensor,
//! 5% out of order, in two shapes — the reference reading plus a zone (`{"sensor_id","temperature","timestamp",
//! "zone"}`, ~90 bytes) and the simulator's full reading (humidity, pressure, status too, ~136 bytes).
//! Rounds interleave the three measurements; medians are printed, and the ratio is the median of per-round
//! ratios, which shared machines disturb least.
//! Run: `cargo bench -p sensorpipe-worker --bench engine` (optionally `-- --records N --rounds R`).
#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark prints its figures and stops on broken setup

mod common;

use std::hint::black_box;
use std::time::Instant;

use sensorpipe_worker::engine::{Outputs, Pipeline};
use sensorpipe_worker::simulate::{SimConfig, generate};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let target_records = arg("--records", 1_000_000);
    let rounds = arg("--rounds", 7);
    let sensors = arg("--sensors", 10_000);
    let cfg = SimConfig {
        sensors,
        zones: 50.min(sensors),
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
    let mut full: Vec<Vec<u8>> = Vec::with_capacity(target_records);
    generate(&cfg, |line| {
        full.push(line.to_vec());
        Ok(())
    })
    .expect("simulation");
    let reference: Vec<Vec<u8>> = full
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r).expect("simulated JSON");
            serde_json::to_vec(&serde_json::json!({
                "sensor_id": v["sensor_id"], "temperature": v["temperature"], "timestamp": v["timestamp"], "zone": v["zone"],
            }))
            .expect("serialize")
        })
        .collect();
    let pipeline = common::reference();
    println!(
        "engine benchmark: reference pipeline, {sensors} sensors, {} records per pass, {rounds} rounds, one core",
        full.len()
    );
    if args.iter().any(|a| a == "--engine-only") {
        // For profilers: nothing but the engine loop over the reference-shaped records.
        for _ in 0..rounds {
            let mut e = pipeline.engine();
            let mut out = Outputs::default();
            for r in &reference {
                e.process(black_box(r), &mut out);
                out.clear();
            }
        }
        return;
    }
    for (name, records) in [("reference reading + zone", &reference), ("full simulated reading", &full)] {
        measure(name, &pipeline, records, rounds);
    }
}

fn rate(n: usize, start: Instant) -> f64 {
    n as f64 / start.elapsed().as_secs_f64()
}

fn measure(name: &str, pipeline: &Pipeline, records: &[Vec<u8>], rounds: usize) {
    let avg_bytes = records.iter().map(Vec::len).sum::<usize>() as f64 / records.len() as f64;
    let (mut scan, mut parse, mut engine, mut ratio) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut emitted = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        for r in records {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(r))).expect("valid JSON");
        }
        scan.push(rate(records.len(), start));

        let start = Instant::now();
        let mut ok = 0usize;
        for r in records {
            ok += usize::from(black_box(pipeline.parse(black_box(r))).is_ok());
        }
        let parse_rate = rate(records.len(), start);
        assert_eq!(ok, records.len());

        let start = Instant::now();
        let mut e = pipeline.engine();
        let mut out = Outputs::default();
        emitted = 0;
        for r in records {
            e.process(black_box(r), &mut out);
            if out.len() > 1024 {
                emitted += out.len();
                out.clear();
            }
        }
        e.flush(&mut out);
        let engine_rate = rate(records.len(), start);
        emitted += out.len();
        assert_eq!(out.dead_letters.len(), 0);
        parse.push(parse_rate);
        engine.push(engine_rate);
        ratio.push(engine_rate / parse_rate);
    }
    println!("{name} ({avg_bytes:.0} bytes avg):");
    println!("  JSON scan (serde_json IgnoredAny): {:>9.0} readings/s", common::median(scan));
    println!("  parse only:                        {:>9.0} readings/s", common::median(parse));
    println!("  engine, JSON bytes in:             {:>9.0} readings/s ({emitted} records out)", common::median(engine));
    println!(
        "  engine / parse only:               {:>9.1} % (median of per-round ratios)",
        100.0 * common::median(ratio)
    );
}
