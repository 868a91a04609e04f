//! Memory of the engine state for 100 000 sensors with the reference pipeline (5-minute windows per zone):
//! heap bytes held by one partition engine after 8 minutes of readings every 10 s (two windows open), measured
//! with the dhat heap profiler.
//! Run: `cargo bench -p sensorpipe-worker --bench memory`.
#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark prints its figures and stops on broken setup

mod common;

use std::io::Write;

use sensorpipe_worker::engine::Outputs;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let sensors: usize = 100_000;
    let pipeline = common::reference();
    let mut line = Vec::with_capacity(256);
    let mut out = Outputs::default();
    let t0: i64 = 1_673_049_600;

    let profiler = dhat::Profiler::builder().testing().trim_backtraces(Some(1)).build();
    let before = dhat::HeapStats::get().curr_bytes;
    let mut engine = pipeline.engine();
    let mut readings = 0u64;
    for step in 0..48i64 {
        for s in 0..sensors {
            line.clear();
            let ts = t0 + step * 10 + (s % 10) as i64;
            let temperature = 21.0 + (s % 7) as f64 * 0.3 + (step % 5) as f64 * 0.1;
            write!(
                line,
                r#"{{"sensor_id":"room_{s:06}","timestamp":{ts},"temperature":{temperature:.2},"humidity":45.5,"pressure":1013.2,"zone":"floor-{}"}}"#,
                s % 50
            )
            .expect("write to Vec");
            engine.process(&line, &mut out);
            readings += 1;
            out.clear();
        }
    }
    let held = dhat::HeapStats::get().curr_bytes - before;
    let stats = engine.stats();
    drop(profiler);
    println!("memory benchmark: {sensors} sensors, {readings} readings, reference pipeline");
    println!(
        "engine state: {:.1} MB ({:.0} bytes per sensor); {} buffered readings, {} open windows",
        held as f64 / 1e6,
        held as f64 / sensors as f64,
        stats.buffered,
        stats.open_windows
    );
    std::hint::black_box(engine);
}
