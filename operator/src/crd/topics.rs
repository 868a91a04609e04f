//! `spec.input` and `spec.outputs`: the pipeline's topics and whether the operator manages them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use sensorpipe_worker::model::InputFormat;
use serde::{Deserialize, Serialize};

/// Partitions, replication and configs of a managed topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicSettings {
    /// Number of partitions. Can be raised later (where the broker supports it), never lowered. Default 1 for
    /// outputs; for the input it also caps the number of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: Option<i32>,
    /// Replication factor. Fixed once the topic exists. Default: the broker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: Option<i32>,
    /// Topic configs (for example `retention.ms: "604800000"`); drift is reverted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// The input topic and how its records are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// Topic the sensor readings arrive on.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: String,
    /// `true`: the operator creates the topic and keeps its partitions and configs as specified. `false`
    /// (default): the topic must already exist; the operator only reads it.
    #[serde(default)]
    pub managed: bool,
    /// Settings of a managed topic (ignored when `managed` is false).
    #[serde(flatten)]
    pub settings: TopicSettings,
    /// Encoding and field mapping of the readings.
    #[serde(flatten)]
    pub format: InputFormat,
}

/// One output topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputTopic {
    /// Topic name; default `<pipeline>-<output>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: Option<String>,
    /// Partitions, replication and configs (output topics are always managed).
    #[serde(flatten)]
    pub settings: TopicSettings,
}

/// Output topics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputsSpec {
    /// Anomaly records (firing/resolved), keyed by sensor.
    #[serde(default)]
    pub anomalies: OutputTopic,
    /// Window aggregates, keyed by group.
    #[serde(default)]
    pub aggregates: OutputTopic,
    /// Records that could not be processed, with the reason in the `sensorpipe.reason` header.
    #[serde(default)]
    pub dead_letter: OutputTopic,
}
