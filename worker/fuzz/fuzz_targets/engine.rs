//! Fuzzes the whole engine with the reference pipeline: newline-separated records, then a flush and a snapshot
//! round trip. It must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sensorpipe_worker::engine::{Outputs, Pipeline};
use sensorpipe_worker::model::load_pipeline;

fn pipeline() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| {
        let yaml = include_str!("../../../examples/smart-building.yaml");
        Pipeline::new(&load_pipeline(yaml, "example").unwrap()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut engine = pipeline().engine();
    let mut out = Outputs::default();
    for record in data.split(|b| *b == b'\n') {
        engine.process(record, &mut out);
    }
    let restored = pipeline().restore(&engine.snapshot()).unwrap();
    drop(restored);
    engine.flush(&mut out);
});
