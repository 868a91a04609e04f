//! The processing model: what a pipeline reads and what it computes. Serde + schemars types shared with the
//! operator's CRD, a YAML loader and a validator that reports every problem with its field path.

mod duration;
mod input;
mod load;
mod processing;
mod validate;

pub use duration::Duration;
pub use input::{FieldMapping, Format, InputFormat, MAX_FIELD_NAME, MAX_LABELS, MAX_METRICS, TimestampUnit};
pub use load::{LoadError, load_pipeline, load_pipeline_file};
pub use processing::{
    Aggregation, Direction, EventTime, Function, MAX_RULES, Processing, Severity, SilenceRule, SpikeRule,
    ThresholdRule, Window, WindowKind,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field the CRD will show must explain itself: the doc comments are `kubectl explain`'s text.
    #[test]
    fn every_field_of_the_model_is_described() {
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>, seen: &mut usize) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    *seen += 1;
                    let at = format!("{path}.{name}");
                    if prop.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                        missing.push(at.clone());
                    }
                    walk(&at, prop, missing, seen);
                }
            }
            if let Some(defs) = v.get("$defs").and_then(|d| d.as_object()) {
                for (name, def) in defs {
                    walk(name, def, missing, seen);
                }
            }
        }
        let (mut missing, mut seen) = (Vec::new(), 0);
        walk("input", &serde_json::to_value(schemars::schema_for!(InputFormat)).unwrap(), &mut missing, &mut seen);
        walk("processing", &serde_json::to_value(schemars::schema_for!(Processing)).unwrap(), &mut missing, &mut seen);
        assert!(missing.is_empty(), "fields without a description: {missing:?}");
        assert!(seen > 30, "only {seen} fields walked");
    }
}
