//! Build (pure): a [`ValidPipeline`] → every in-cluster object the pipeline needs, ready for server-side apply.
//! One builder per object kind; none of them touches a client, so each is unit-tested on its output.

mod configmap;
mod deployment;
mod pdb;
mod service;
mod servicemonitor;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;

pub use configmap::{KAFKA_PROPERTIES_FILE, PIPELINE_FILE};
pub use deployment::{CONFIG_HASH_ANNOTATION, METRICS_PORT};
pub use servicemonitor::api_resource as service_monitor_resource;

use crate::validate::ValidPipeline;

/// Settings of the operator installation that builders need (from its flags / the chart).
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Worker image when `spec.workers.image` is not set.
    pub worker_image: String,
    /// Give each pipeline a ServiceMonitor when the cluster serves the kind. Off when something else scrapes the
    /// workers (the chart's PodMonitor), so no worker is scraped twice.
    pub service_monitors: bool,
}

/// Every object of one pipeline, in the order they are applied.
#[derive(Clone, Debug)]
pub struct Objects {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    /// Only when the cluster serves the ServiceMonitor kind (Prometheus Operator).
    pub service_monitor: Option<DynamicObject>,
}

/// Builds the pipeline's objects. `replicas` is what the autoscaler or the spec decided; `service_monitor`
/// whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitor.
pub fn build(p: &ValidPipeline, defaults: &Defaults, replicas: i32, service_monitor: bool) -> Objects {
    let config_map = configmap::build(p);
    let hash = configmap::hash(&config_map);
    Objects {
        deployment: deployment::build(p, defaults, replicas, &hash),
        service: service::build(p),
        pdb: pdb::build(p),
        service_monitor: service_monitor.then(|| servicemonitor::build(p)),
        config_map,
    }
}

/// Name of the worker Deployment (and the stem of the other objects' names).
pub fn worker_name(p: &ValidPipeline) -> String {
    format!("{}-worker", p.name)
}

/// Labels that select a pipeline's worker pods.
pub fn selector_labels(p: &ValidPipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "sensorpipe-worker".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), p.name.clone()),
    ])
}

/// `selector_labels` as a label selector string (`status.selector`, for the scale subresource).
pub fn selector_string(p: &ValidPipeline) -> String {
    selector_labels(p).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Labels on every built object.
fn labels(p: &ValidPipeline) -> BTreeMap<String, String> {
    let mut l = selector_labels(p);
    l.insert("app.kubernetes.io/component".to_owned(), "worker".to_owned());
    l.insert("app.kubernetes.io/part-of".to_owned(), "sensorpipe".to_owned());
    l.insert("app.kubernetes.io/managed-by".to_owned(), "sensorpipe-operator".to_owned());
    l
}

/// The owner reference that makes Kubernetes garbage-collect a child with its SensorPipeline.
fn owner(p: &ValidPipeline) -> Vec<OwnerReference> {
    p.object.controller_owner_ref(&()).into_iter().collect()
}

/// Metadata of a child object.
fn meta(p: &ValidPipeline, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(p.namespace.clone()),
        labels: Some(labels(p)),
        owner_references: Some(owner(p)),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::crd::SensorPipeline;
    use crate::validate::{ValidPipeline, validate};

    /// A small valid pipeline.
    pub(crate) const MINIMAL: &str = r#"
apiVersion: sensorpipe.io/v1alpha1
kind: SensorPipeline
metadata: {name: b}
spec:
  kafka: {bootstrapServers: "kafka:9092"}
  input:
    topic: readings
    fields: {metrics: [temperature], zone: zone}
  processing:
    thresholds:
      - {name: overheat, metric: temperature, above: 30}
"#;

    /// The reference example, as the API would return it.
    pub(crate) fn example() -> ValidPipeline {
        from_yaml(include_str!("../../../examples/smart-building.yaml"))
    }

    pub(crate) fn from_yaml(yaml: &str) -> ValidPipeline {
        let mut sp: SensorPipeline = serde_yaml::from_str(yaml).expect("fixture parses");
        sp.metadata.namespace.get_or_insert_with(|| "facilities".to_owned());
        sp.metadata.uid = Some("0b7c8a2e-1111-4c1e-9d55-5a1e0c0ffee0".to_owned());
        sp.metadata.generation = Some(3);
        validate(&sp).expect("fixture is valid")
    }
}
