//! The processing model: what a pipeline reads and what it computes. Serde + schemars types shared with the
//! operator's CRD, a YAML loader and a validator that reports every problem with its field path.

mod duration;
mod input;
mod load;
mod processing;
mod validate;

pub use duration::Duration;
pub use input::{FieldMapping, Format, InputFormat, MAX_LABELS, MAX_METRICS, TimestampUnit};
pub use load::{LoadError, load_pipeline, load_pipeline_file};
pub use processing::{
    Aggregation, Direction, EventTime, Function, Processing, Severity, SilenceRule, SpikeRule, ThresholdRule, Window,
    WindowKind,
};
pub use validate::{FieldError, MAX_WINDOWS_PER_READING, ValidationErrors, validate};

use serde::{Deserialize, Serialize};

/// The parts of a SensorPipeline spec the engine needs: how to read a reading and what to do with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineDefinition {
    pub input: InputFormat,
    #[serde(default)]
    pub processing: Processing,
}
