//! Shared helpers for the worker's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

use sensorpipe_worker::engine::{Outputs, Pipeline};
use sensorpipe_worker::model::load_pipeline;

pub fn pipeline(yaml: &str) -> Pipeline {
    Pipeline::new(&load_pipeline(yaml, "test").unwrap()).unwrap()
}

pub fn reference() -> Pipeline {
    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/smart-building.yaml")).unwrap();
    pipeline(&yaml)
}

pub fn reading(sensor: &str, ts_s: f64, temperature: f64, zone: &str) -> Vec<u8> {
    format!(r#"{{"sensor_id":"{sensor}","timestamp":{ts_s},"temperature":{temperature},"zone":"{zone}"}}"#).into_bytes()
}

/// Runs records through a fresh engine, then flushes.
pub fn run(p: &Pipeline, records: &[Vec<u8>]) -> Outputs {
    let mut engine = p.engine();
    let mut out = Outputs::default();
    for r in records {
        engine.process(r, &mut out);
    }
    engine.flush(&mut out);
    out
}

pub fn ids(out: &Outputs) -> Vec<String> {
    out.anomalies.iter().map(|a| a.id.clone()).collect()
}
