//! Shared setup of the benchmarks: the reference pipeline and reading generators.
#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark prints its figures and stops on broken setup
#![allow(dead_code)]

use sensorpipe_worker::engine::Pipeline;
use sensorpipe_worker::model::load_pipeline;

pub(crate) fn reference() -> Pipeline {
    let yaml = include_str!("../../../examples/smart-building.yaml");
    Pipeline::new(&load_pipeline(yaml, "examples/smart-building.yaml").expect("example loads"))
        .expect("example is valid")
}

/// Median of a few measurements.
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
