//! Loading a pipeline from YAML: either a whole `SensorPipeline` manifest (the file a user would `kubectl apply`)
//! or its bare `spec`. Settings the engine does not need (kafka, outputs, workers) are ignored here; the operator
//! owns them.

use std::path::Path;

use serde::Deserialize;

use super::{PipelineDefinition, ValidationErrors, validate};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The underlying error is part of the message (not a `source`), so a `{:#}` chain does not repeat it.
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: not a pipeline definition: {error}")]
    Yaml { path: String, error: serde_yaml::Error },
    #[error("{path}: kind is {kind:?}, expected SensorPipeline")]
    WrongKind { path: String, kind: String },
    #[error("{path}: invalid pipeline:\n{errors}")]
    Invalid { path: String, errors: ValidationErrors },
}

#[derive(Deserialize)]
struct Manifest {
    kind: String,
    spec: PipelineDefinition,
}

/// Reads, parses and validates a pipeline definition. `origin` names the source in error messages.
pub fn load_pipeline(yaml: &str, origin: &str) -> Result<PipelineDefinition, LoadError> {
    let path = origin.to_owned();
    // Peek at `kind` first so errors in a manifest point into `spec` with correct line numbers.
    let probe: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|error| LoadError::Yaml { path: path.clone(), error })?;
    let definition = if let Some(kind) = probe.get("kind") {
        let kind = kind.as_str().unwrap_or_default();
        if kind != "SensorPipeline" {
            return Err(LoadError::WrongKind { path, kind: kind.to_owned() });
        }
        let manifest: Manifest =
            serde_yaml::from_str(yaml).map_err(|error| LoadError::Yaml { path: path.clone(), error })?;
        debug_assert_eq!(manifest.kind, "SensorPipeline");
        manifest.spec
    } else {
        serde_yaml::from_str(yaml).map_err(|error| LoadError::Yaml { path: path.clone(), error })?
    };
    validate(&definition).map_err(|errors| LoadError::Invalid { path, errors })?;
    Ok(definition)
}

/// [`load_pipeline`] from a file.
pub fn load_pipeline_file(path: &Path) -> Result<PipelineDefinition, LoadError> {
    let shown = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|error| LoadError::Read { path: shown.clone(), error })?;
    load_pipeline(&yaml, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = r#"
input:
  fields:
    metrics: [temperature]
processing:
  thresholds:
    - name: overheat
      metric: temperature
      above: 30
"#;

    #[test]
    fn loads_a_bare_spec_with_defaults() {
        let def = load_pipeline(BARE, "bare.yaml").unwrap();
        assert_eq!(def.input.fields.sensor_id, "sensor_id");
        assert_eq!(def.processing.thresholds[0].min_count, 1);
        assert_eq!(def.processing.event_time.max_out_of_orderness.as_millis_i64(), 10_000);
    }

    #[test]
    fn loads_a_manifest_and_ignores_operator_settings() {
        let yaml = r#"
apiVersion: sensorpipe.io/v1alpha1
kind: SensorPipeline
metadata: {name: b}
spec:
  kafka: {bootstrapServers: "kafka:9092"}
  input:
    topic: temperature_readings
    fields: {metrics: [temperature]}
  processing: {}
"#;
        let def = load_pipeline(yaml, "m.yaml").unwrap();
        assert_eq!(def.input.fields.metrics, vec!["temperature"]);
    }

    #[test]
    fn reports_typos_with_their_path() {
        let yaml = BARE.replace("above: 30", "abvoe: 30");
        let err = load_pipeline(&yaml, "typo.yaml").unwrap_err().to_string();
        assert!(err.contains("typo.yaml"), "{err}");
        assert!(err.contains("abvoe"), "{err}");
        assert!(err.contains("thresholds[0]"), "{err}");
    }

    #[test]
    fn rejects_other_kinds() {
        let err = load_pipeline("kind: Deployment\nspec: {}\n", "d.yaml").unwrap_err().to_string();
        assert!(err.contains("expected SensorPipeline"), "{err}");
    }

    #[test]
    fn reports_semantic_errors_after_parsing() {
        let yaml = BARE.replace("metric: temperature", "metric: temprature");
        let err = load_pipeline(&yaml, "v.yaml").unwrap_err().to_string();
        assert!(err.contains("processing.thresholds[0].metric"), "{err}");
        assert!(err.contains("temprature"), "{err}");
    }
}
