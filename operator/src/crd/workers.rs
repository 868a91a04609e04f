//! `spec.workers`: the worker Deployment — image, fixed replicas or the built-in autoscaler, resources,
//! scheduling and the delivery guarantee.

// `KubeSchema` re-declares its types in a hidden module, which trips this lint on the originals.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::KubeSchema;
use schemars::JsonSchema;
use sensorpipe_worker::model::Duration;
use serde::{Deserialize, Serialize};

/// How outputs and input offsets are tied together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// Outputs and input offsets commit in one Kafka transaction: no loss, no duplicates for read_committed
    /// consumers.
    #[default]
    ExactlyOnce,
    /// Offsets commit after outputs are acknowledged: no loss; a crash may repeat recent outputs.
    AtLeastOnce,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactlyOnce",
            Self::AtLeastOnce => "atLeastOnce",
        }
    }
}

/// The worker Deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || !has(self.replicas) || self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas").message("replicas must lie within autoscaling.minReplicas..maxReplicas"))]
pub struct WorkersSpec {
    /// Worker image. Default: the sensorpipe-worker image of the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of workers when `autoscaling` is not set (also the `scale` subresource, for `kubectl scale`, HPA or
    /// KEDA). More workers than input partitions stay idle. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Built-in autoscaling on consumer lag; when set, the operator owns the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Delivery guarantee: `exactlyOnce` (default) or `atLeastOnce`.
    #[serde(default)]
    pub delivery: Delivery,
    /// CPU and memory requests and limits of each worker. Default: requests 100m CPU and 128Mi, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the workers must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the workers tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity of the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Kafka client properties for the workers only (merged over `kafka.properties`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kafka_properties: BTreeMap<String, String>,
}

/// Scaling on consumer lag, averaged over time, within `[minReplicas, maxReplicas]` and never above the input's
/// partition count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.lagRecordsTarget) || has(self.lagSecondsTarget)").message("set lagRecordsTarget, lagSecondsTarget or both"))]
#[x_kube(validation = Rule::new("!has(self.scaleToZero) || self.minReplicas == 0").message("scaleToZero needs minReplicas: 0"))]
pub struct AutoscalingSpec {
    /// Fewest workers. 0 only with `scaleToZero`.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most workers (also capped at the input partition count).
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target consumer lag per worker, in records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub lag_records_target: Option<i64>,
    /// Target consumer lag in seconds (how far the oldest unprocessed reading is behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub lag_seconds_target: Option<i64>,
    /// Lag is averaged over this window before deciding. Default 1m.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// A scale-up happens only if every recommendation in this window asked for at least as many. Default 0s.
    #[serde(default)]
    pub scale_up_stabilization: Duration,
    /// A scale-down happens only if every recommendation in this window asked for at most as many. Default 5m.
    #[serde(default = "default_down")]
    pub scale_down_stabilization: Duration,
    /// Stop all workers when there is no lag, and start one again when lag passes the activation threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZero>,
}

/// Scale to zero and back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleToZero {
    /// Lag in records above which a pipeline at zero workers gets one again. Default 1.
    #[serde(default = "one_i64")]
    #[schemars(range(min = 1))]
    pub activation_lag_records: i64,
    /// Lag must be zero for this long before the last worker stops. Default 5m.
    #[serde(default = "default_down")]
    pub idle_for: Duration,
}

fn one() -> i32 {
    1
}

fn one_i64() -> i64 {
    1
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

fn default_down() -> Duration {
    Duration::from_secs(300)
}
