//! The `SensorPipeline` custom resource (`sensorpipe.io/v1alpha1`, short name `sp`): its spec, its status and the
//! CRD generated from them (`sensorpipe-operator crd` writes `crds/`; a test fails when the two differ).
//!
//! The engine's parts of the spec (`input` format and field mapping, `processing`) are the worker's own model
//! types, so the API server, the operator and the worker agree on one schema. Doc comments are `kubectl explain`.

// `KubeSchema` re-declares its types in a hidden module, which trips this lint on the originals.
#![allow(unreachable_pub)]

mod kafka;
mod status;
mod topics;
mod workers;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use kafka::{KafkaSpec, SaslMechanism, SaslSpec, SecretKeyRef, TlsSpec};
pub use sensorpipe_worker::model::{InputFormat, Processing};
pub use status::{Condition, ConditionStatus, LagStatus, Phase, SensorPipelineStatus, TopicStatus, condition_types};
pub use topics::{InputSpec, OutputTopic, OutputsSpec, TopicSettings};
pub use workers::{AutoscalingSpec, Delivery, ScaleToZero, WorkersSpec};

/// A real-time analytics pipeline over sensor readings on Kafka: the operator creates its topics, runs and scales
/// its workers, and reports what they do.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sensorpipe.io",
    version = "v1alpha1",
    kind = "SensorPipeline",
    plural = "sensorpipelines",
    shortname = "sp",
    category = "sensorpipe",
    namespaced,
    status = "SensorPipelineStatus",
    doc = "A SensorPipeline turns sensor readings on a Kafka topic into anomalies and windowed aggregates.",
    scale(
        spec_replicas_path = ".spec.workers.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag.records"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(TOPIC_COLLISION_RULE).message("input, anomalies, aggregates, dead-letter and state topics must all differ")
)]
#[serde(rename_all = "camelCase")]
pub struct SensorPipelineSpec {
    /// How to reach the Kafka cluster.
    pub kafka: KafkaSpec,
    /// The topic readings arrive on, whether the operator manages it, and how a reading is read.
    pub input: InputSpec,
    /// Detection rules and aggregations (the worker's engine).
    #[serde(default)]
    pub processing: Processing,
    /// Where anomalies, aggregates and dead letters go. Topic names default to `<name>-anomalies`,
    /// `<name>-aggregates` and `<name>-dead-letter`.
    #[serde(default)]
    pub outputs: OutputsSpec,
    /// The worker Deployment: image, replicas or autoscaling, resources, scheduling, delivery guarantee.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// What `kubectl delete` does to the Kafka side: `Retain` (default) keeps the managed topics and the consumer
    /// group, `Delete` removes them. In-cluster objects are always removed.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// CEL over the whole object, since default topic names come from `metadata.name`. The internal topics (state,
/// repartition) are named after the namespaced group, which CEL cannot see (`metadata.namespace` is not
/// available to CRD rules); `validate` checks them.
const TOPIC_COLLISION_RULE: &str = "[self.spec.input.topic, \
    has(self.spec.outputs) && has(self.spec.outputs.anomalies) && has(self.spec.outputs.anomalies.topic) ? self.spec.outputs.anomalies.topic : self.metadata.name + '-anomalies', \
    has(self.spec.outputs) && has(self.spec.outputs.aggregates) && has(self.spec.outputs.aggregates.topic) ? self.spec.outputs.aggregates.topic : self.metadata.name + '-aggregates', \
    has(self.spec.outputs) && has(self.spec.outputs.deadLetter) && has(self.spec.outputs.deadLetter.topic) ? self.spec.outputs.deadLetter.topic : self.metadata.name + '-dead-letter'].all(t, [self.spec.input.topic, \
    has(self.spec.outputs) && has(self.spec.outputs.anomalies) && has(self.spec.outputs.anomalies.topic) ? self.spec.outputs.anomalies.topic : self.metadata.name + '-anomalies', \
    has(self.spec.outputs) && has(self.spec.outputs.aggregates) && has(self.spec.outputs.aggregates.topic) ? self.spec.outputs.aggregates.topic : self.metadata.name + '-aggregates', \
    has(self.spec.outputs) && has(self.spec.outputs.deadLetter) && has(self.spec.outputs.deadLetter.topic) ? self.spec.outputs.deadLetter.topic : self.metadata.name + '-dead-letter'].exists_one(u, u == t))";

/// What happens to the Kafka side when the SensorPipeline is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the managed topics and the consumer group (the data outlives the pipeline).
    #[default]
    Retain,
    /// Delete the managed topics (input only when `input.managed`), the internal topics (state, repartition) and
    /// the consumer groups (the workers' and their merge stage's).
    Delete,
}

impl SensorPipeline {
    /// The pipeline's name (always set on objects read from the API).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The CRD as YAML, with the header that marks it as generated.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&SensorPipeline::crd())?;
    Ok(format!(
        "# Generated by `sensorpipe-operator crd` (scripts/generate.sh) from operator/src/crd — do not edit.\n{body}"
    ))
}
