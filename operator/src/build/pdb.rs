//! A PodDisruptionBudget: node drains take workers down one at a time, so a rebalance moves few partitions.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{meta, selector_labels, worker_name};
use crate::validate::ValidPipeline;

pub(super) fn build(p: &ValidPipeline) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(p, worker_name(p)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(p)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
