//! The workers' metrics Service (headless: Prometheus scrapes every worker, not one behind a virtual IP).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{METRICS_PORT, meta, selector_labels, worker_name};
use crate::validate::ValidPipeline;

pub(super) fn build(p: &ValidPipeline) -> Service {
    Service {
        metadata: meta(p, format!("{}-metrics", worker_name(p))),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(p)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".to_owned()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
