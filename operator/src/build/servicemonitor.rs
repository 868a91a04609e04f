//! A Prometheus Operator ServiceMonitor for the workers' metrics Service, built only when the cluster serves
//! `monitoring.coreos.com/v1` (the operator checks discovery first).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{meta, selector_labels, worker_name};
use crate::validate::ValidPipeline;

/// The ServiceMonitor kind.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub(super) fn build(p: &ValidPipeline) -> DynamicObject {
    let mut obj = DynamicObject::new(&worker_name(p), &api_resource()).within(&p.namespace);
    obj.metadata = meta(p, worker_name(p));
    obj.data = json!({
        "spec": {
            "selector": {"matchLabels": selector_labels(p)},
            "namespaceSelector": {"matchNames": [p.namespace]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        }
    });
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn selects_the_metrics_service() {
        let p = fixtures::example();
        let sm = build(&p);
        assert_eq!(sm.types.as_ref().unwrap().kind, "ServiceMonitor");
        assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"], "building-a");
    }
}
