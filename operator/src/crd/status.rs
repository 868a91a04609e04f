//! `status` of a SensorPipeline: what the operator observed, as conditions a user (and `kubectl wait`) can read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator sets.
pub mod condition_types {
    /// Topics ready, workers ready, nothing degraded.
    pub const READY: &str = "Ready";
    /// Every managed topic exists as specified and the input topic exists.
    pub const TOPICS_READY: &str = "TopicsReady";
    /// The worker Deployment has as many ready workers as desired.
    pub const WORKERS_READY: &str = "WorkersReady";
    /// The autoscaler's last decision and why (only with `workers.autoscaling`).
    pub const AUTOSCALING: &str = "Autoscaling";
    /// Something needs the user's attention: an invalid spec, a conflict, an unsupported change, Kafka down.
    pub const DEGRADED: &str = "Degraded";
    /// Every type above.
    pub const ALL: [&str; 5] = [READY, TOPICS_READY, WORKERS_READY, AUTOSCALING, DEGRADED];
}

/// Summary of the pipeline's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Topics or workers are being created.
    #[default]
    Pending,
    /// Everything is as specified and workers are ready.
    Running,
    /// Scaled to zero workers (no lag).
    Idle,
    /// Running with a problem (see the Degraded condition).
    Degraded,
    /// The spec cannot be run (see the Degraded condition); nothing changes until the spec does.
    Failed,
    /// Being deleted.
    Terminating,
}

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// A condition in the Kubernetes convention (`kubectl wait --for=condition=Ready` reads these).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, for example `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word for the cause, for example `InvalidSpec`, `KafkaUnavailable`, `NotSupported`.
    pub reason: String,
    /// What happened and what to do, for humans.
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation of the spec this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A topic of the pipeline as the operator last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// `input`, `anomalies`, `aggregates`, `deadLetter`, `state` or `repartition` (zone and label windows).
    pub role: String,
    /// Topic name.
    pub name: String,
    /// Partitions on the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Whether the operator manages (creates, reconciles, may delete) it.
    pub managed: bool,
}

/// Consumer lag of the pipeline's group on the input topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LagStatus {
    /// Records not yet processed, summed over partitions.
    pub records: i64,
    /// Records per second the workers processed since the previous observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Seconds behind: the age of the oldest record not processed yet (from its Kafka timestamp); 0 without lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// Observed state of a SensorPipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary: Pending, Running, Idle, Degraded, Failed, Terminating.
    #[serde(default)]
    pub phase: Phase,
    /// Ready, TopicsReady, WorkersReady, Autoscaling, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The pipeline's topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// Workers that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Workers that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Workers the operator wants (autoscaler decision or `workers.replicas`).
    #[serde(default)]
    pub desired_replicas: i32,
    /// Label selector of the workers (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Consumer lag and throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagStatus>,
    /// When the autoscaler last changed the replica count (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
}
