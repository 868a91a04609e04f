//! Reconcile against an in-memory Kubernetes API (the `kube-fake-client` crate: a mock only because no API
//! server can run here; the end-to-end journey against a local API double is e2e's job) and a real Kafka-protocol
//! broker for the topic side (tansu, started per test on a free port).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns: a panic is the failure report

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube_fake_client::ClientBuilder;
use sensorpipe_operator::build::Defaults;
use sensorpipe_operator::controller::{Context, FINALIZER, reconcile};
use sensorpipe_operator::crd::{ConditionStatus, SensorPipeline};
use sensorpipe_operator::metrics::Metrics;
use support::Tansu;

/// A resource of the same group/version/kind with a `Default`, which the fake client needs to learn that
/// SensorPipeline has a status subresource.
mod gvk {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
    #[kube(group = "sensorpipe.io", version = "v1alpha1", kind = "SensorPipeline", namespaced, derive = "Default")]
    pub(crate) struct Spec {}
}

const NS: &str = "facilities";

fn pipeline(bootstrap: &str, extra: &str) -> SensorPipeline {
    let yaml = format!(
        r#"
apiVersion: sensorpipe.io/v1alpha1
kind: SensorPipeline
metadata: {{name: building-a, namespace: {NS}, uid: 11111111-2222-3333-4444-555555555555, generation: 1}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}"}}
  input:
    topic: temperature_readings
    managed: true
    partitions: 4
    fields: {{metrics: [temperature], zone: zone}}
  processing:
    thresholds:
      - {{name: overheat, metric: temperature, above: 30}}
  outputs:
    anomalies: {{topic: anomalies, partitions: 2}}
    aggregates: {{topic: processed_data}}
{extra}"#
    );
    let mut sp: SensorPipeline = serde_yaml::from_str(&yaml).unwrap();
    // kube's finalizer helper adds the first finalizer with a JSON patch that tests a missing
    // `/metadata/finalizers` against null, which the API server accepts and the fake client's JSON patch does
    // not; with another controller's finalizer present it takes the other path (test the list, append).
    sp.metadata.finalizers = Some(vec!["example.com/other-controller".to_owned()]);
    sp
}

struct Harness {
    ctx: Arc<Context>,
    api: Api<SensorPipeline>,
}

impl Harness {
    async fn new(objects: Vec<SensorPipeline>) -> Self {
        let mut builder = ClientBuilder::new()
            .with_resource::<SensorPipeline>()
            .with_status_subresource::<gvk::SensorPipeline>()
            .with_status_subresource::<Deployment>();
        for o in objects {
            builder = builder.with_object(o);
        }
        let client = builder.build().await.unwrap();
        let ctx = Arc::new(Context::new(
            client.clone(),
            Defaults { worker_image: "sensorpipe-worker:test".into(), service_monitors: true },
            Metrics::new().unwrap(),
            Duration::from_secs(3),
            Duration::from_secs(15),
        ));
        Self { ctx, api: Api::namespaced(client, NS) }
    }

    async fn get(&self) -> SensorPipeline {
        self.api.get("building-a").await.unwrap()
    }

    /// Runs reconciles until one returns something other than "the finalizer was just added".
    async fn reconcile(&self) -> Result<Action, sensorpipe_operator::controller::Error> {
        let mut last = None;
        for _ in 0..3 {
            let sp = self.get().await;
            let had_finalizer = sp.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
            last = Some(reconcile(Arc::new(DeserializeGuard(Ok(sp))), self.ctx.clone()).await);
            if had_finalizer {
                break;
            }
        }
        last.unwrap()
    }

    fn condition(sp: &SensorPipeline, t: &str) -> (ConditionStatus, String, String) {
        let c =
            sp.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t}"));
        (c.status, c.reason.clone(), c.message.clone())
    }
}

#[tokio::test]
async fn creates_topics_and_workers_and_reports_ready_once_workers_are() {
    let kafka = Tansu::start();
    let h = Harness::new(vec![pipeline(&kafka.bootstrap, "")]).await;
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));

    for (topic, partitions) in [
        ("temperature_readings", 4),
        ("anomalies", 2),
        ("processed_data", 1),
        ("building-a-dead-letter", 1),
        ("building-a-state", 4),
    ] {
        assert_eq!(kafka.partitions(topic), Some(partitions), "topic {topic}");
    }
    let client = h.ctx.client.clone();
    let deployment = Api::<Deployment>::namespaced(client.clone(), NS).get("building-a-worker").await.unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(deployment.metadata.owner_references.as_ref().unwrap()[0].name, "building-a");
    Api::<ConfigMap>::namespaced(client.clone(), NS).get("building-a-worker").await.unwrap();
    Api::<Service>::namespaced(client.clone(), NS).get("building-a-worker-metrics").await.unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), NS).get("building-a-worker").await.unwrap();

    let sp = h.get().await;
    assert!(sp.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER));
    assert_eq!(Harness::condition(&sp, "TopicsReady").0, ConditionStatus::True);
    assert_eq!(Harness::condition(&sp, "Ready").0, ConditionStatus::False, "no worker is ready yet");
    let status = sp.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, sp.metadata.generation);
    assert_eq!(status.desired_replicas, 1);
    assert_eq!(status.lag.as_ref().map(|l| l.records), Some(0));

    // The Deployment controller reports a ready worker: the pipeline becomes Ready.
    let ready = serde_json::json!({"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}});
    Api::<Deployment>::namespaced(client.clone(), NS)
        .patch_status("building-a-worker", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    assert_eq!(Harness::condition(&sp, "Ready").0, ConditionStatus::True, "{:?}", sp.status);
    assert_eq!(sp.status.as_ref().unwrap().ready_replicas, 1);
}

#[tokio::test]
async fn a_spec_change_rolls_the_workers_and_scale_follows_the_spec() {
    let kafka = Tansu::start();
    let h = Harness::new(vec![pipeline(&kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let deployments = Api::<Deployment>::namespaced(h.ctx.client.clone(), NS);
    let hash = |d: &Deployment| {
        d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
            ["sensorpipe.io/config-hash"]
            .clone()
    };
    let before = hash(&deployments.get("building-a-worker").await.unwrap());

    // `kubectl scale sp building-a --replicas 3` writes spec.workers.replicas through the scale subresource.
    let mut sp = h.get().await;
    sp.spec.workers.replicas = Some(3);
    sp.spec.processing.thresholds[0].above = Some(35.0);
    h.api.replace("building-a", &PostParams::default(), &sp).await.unwrap();
    h.reconcile().await.unwrap();
    let after = deployments.get("building-a-worker").await.unwrap();
    assert_eq!(after.spec.as_ref().unwrap().replicas, Some(3));
    assert_ne!(hash(&after), before, "a processing change must change the pod template");
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_with_the_message_and_waits_for_a_change() {
    let kafka = Tansu::start();
    let mut sp = pipeline(&kafka.bootstrap, "");
    sp.spec.processing.thresholds[0].metric = "temprature".into();
    let h = Harness::new(vec![sp]).await;
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change());
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "InvalidSpec"));
    assert!(message.contains("spec.processing.thresholds[0].metric"), "{message}");
    assert_eq!(sp.status.as_ref().unwrap().phase, sensorpipe_operator::crd::Phase::Failed);
    assert_eq!(kafka.partitions("temperature_readings"), None, "nothing is created for an invalid spec");
}

#[tokio::test]
async fn kafka_unreachable_is_a_condition_and_a_retry() {
    let port = support::free_port();
    let h = Harness::new(vec![pipeline(&format!("127.0.0.1:{port}"), "")]).await;
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.reason(), "KafkaUnavailable", "{err}");
    let sp = h.get().await;
    let (status, reason, _) = Harness::condition(&sp, "TopicsReady");
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "KafkaUnavailable"));
    let action = sensorpipe_operator::controller::error_policy(Arc::new(DeserializeGuard(Ok(sp))), &err, h.ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_missing_unmanaged_input_is_reported_and_no_workers_start() {
    let kafka = Tansu::start();
    let mut sp = pipeline(&kafka.bootstrap, "");
    sp.spec.input.managed = false;
    let h = Harness::new(vec![sp]).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "TopicsReady");
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "InputTopicMissing"));
    assert!(message.contains("temperature_readings"), "{message}");
    let deployments = Api::<Deployment>::namespaced(h.ctx.client.clone(), NS);
    assert!(deployments.get_opt("building-a-worker").await.unwrap().is_none());
}

#[tokio::test]
async fn shrinking_partitions_is_not_supported_and_changes_nothing() {
    let kafka = Tansu::start();
    let h = Harness::new(vec![pipeline(&kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let mut sp = h.get().await;
    sp.spec.outputs.anomalies.settings.partitions = Some(1);
    h.api.replace("building-a", &PostParams::default(), &sp).await.unwrap();
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "NotSupported"), "{message}");
    assert_eq!(kafka.partitions("anomalies"), Some(2));
}

#[tokio::test]
async fn an_output_topic_claimed_by_an_older_pipeline_is_a_conflict_for_the_newer() {
    let kafka = Tansu::start();
    let mut old = pipeline(&kafka.bootstrap, "");
    old.metadata.name = Some("building-0".into());
    old.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(1_000).unwrap()));
    let mut new = pipeline(&kafka.bootstrap, "");
    new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(2_000).unwrap()));
    let h = Harness::new(vec![old, new]).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "ResourceConflict"));
    assert!(message.contains("anomalies") && message.contains("facilities/building-0"), "{message}");
}

async fn delete_with_policy(policy: &str) -> (Tansu, Vec<Option<usize>>) {
    let kafka = Tansu::start();
    let h = Harness::new(vec![pipeline(&kafka.bootstrap, &format!("  deletionPolicy: {policy}\n"))]).await;
    h.reconcile().await.unwrap();
    assert_eq!(kafka.partitions("anomalies"), Some(2));
    // What `kubectl delete` leaves while the finalizer holds the object: a deletion timestamp.
    let sp = h.get().await;
    let mut deleting = sp.clone();
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let h2 = Harness::new(vec![deleting]).await;
    let action = reconcile(Arc::new(DeserializeGuard(Ok(h2.get().await))), h2.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let sp = h2.api.get_opt("building-a").await.unwrap();
    assert!(sp.is_none_or(|s| !s.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)), "finalizer removed");
    let left = ["temperature_readings", "anomalies", "processed_data", "building-a-dead-letter", "building-a-state"]
        .iter()
        .map(|t| kafka.partitions(t))
        .collect();
    (kafka, left)
}

#[tokio::test]
async fn delete_policy_removes_the_topics() {
    let (_kafka, left) = delete_with_policy("Delete").await;
    assert!(left.iter().all(Option::is_none), "topics left: {left:?}");
}

#[tokio::test]
async fn retain_policy_keeps_the_topics() {
    let (_kafka, left) = delete_with_policy("Retain").await;
    assert!(left.iter().all(Option::is_some), "topics gone: {left:?}");
}

#[tokio::test]
async fn config_drift_is_detected_and_a_refused_revert_is_reported() {
    let kafka = Tansu::start();
    let mut sp = pipeline(&kafka.bootstrap, "");
    sp.spec.outputs.anomalies.settings.config.insert("retention.ms".into(), "86400000".into());
    let h = Harness::new(vec![sp]).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    assert_eq!(Harness::condition(&sp, "TopicsReady").0, ConditionStatus::True, "created with the config: no drift");

    // Someone changes the config on the broker side: simulated by a spec change of the same key.
    let mut sp = h.get().await;
    sp.spec.outputs.anomalies.settings.config.insert("retention.ms".into(), "172800000".into());
    h.api.replace("building-a", &PostParams::default(), &sp).await.unwrap();
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "TopicsReady");
    // tansu has no (legacy) AlterConfigs, so the revert is refused; a Kafka cluster applies it.
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "KafkaRefused"), "{message}");
    assert!(message.contains("altering configs of anomalies"), "{message}");
}

#[tokio::test]
async fn growing_partitions_where_the_broker_cannot_is_not_supported() {
    let kafka = Tansu::start();
    let h = Harness::new(vec![pipeline(&kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let mut sp = h.get().await;
    sp.spec.outputs.anomalies.settings.partitions = Some(6);
    h.api.replace("building-a", &PostParams::default(), &sp).await.unwrap();
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "TopicsReady");
    // tansu has no CreatePartitions; on Kafka the topic grows to 6.
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "NotSupported"), "{message}");
    assert!(message.contains("adding partitions to anomalies"), "{message}");
    assert_eq!(kafka.partitions("anomalies"), Some(2));
}
