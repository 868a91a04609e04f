//! Reconcile against an in-memory Kubernetes API (the `kube-fake-client` crate: a mock only because no API
//! server can run here; the end-to-end journey against a local API double is e2e's job) and Apache Kafka for the
//! topic side (the test run's shared broker; each test's pipeline has a name, topics and group of its own).

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
use support::{Kafka, kafka, unique};

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

/// One test's pipeline name and topic names, unique on the shared broker.
#[derive(Clone, Debug)]
struct Names {
    name: String,
    input: String,
    anomalies: String,
    aggregates: String,
}

impl Names {
    fn new() -> Self {
        let name = unique("building");
        Self {
            input: format!("{name}-readings"),
            anomalies: format!("{name}-anomalies"),
            aggregates: format!("{name}-processed"),
            name,
        }
    }

    fn dead_letter(&self) -> String {
        format!("{}-dead-letter", self.name)
    }

    /// Internal topics are named after the namespaced group.
    fn state(&self) -> String {
        format!("{}-state", self.group())
    }

    fn repartition(&self) -> String {
        format!("{}-repartition", self.group())
    }

    fn all_topics(&self) -> [String; 6] {
        [
            self.input.clone(),
            self.anomalies.clone(),
            self.aggregates.clone(),
            self.dead_letter(),
            self.state(),
            self.repartition(),
        ]
    }

    fn group(&self) -> String {
        format!("sensorpipe-{NS}-{}", self.name)
    }

    fn workers(&self) -> String {
        format!("{}-worker", self.name)
    }
}

fn pipeline(n: &Names, bootstrap: &str, extra: &str) -> SensorPipeline {
    let Names { name, input, anomalies, aggregates } = n;
    let yaml = format!(
        r#"
apiVersion: sensorpipe.io/v1alpha1
kind: SensorPipeline
metadata: {{name: {name}, namespace: {NS}, uid: 11111111-2222-3333-4444-555555555555, generation: 1}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}"}}
  input:
    topic: {input}
    managed: true
    partitions: 4
    fields: {{metrics: [temperature], zone: zone}}
  processing:
    thresholds:
      - {{name: overheat, metric: temperature, above: 30}}
    aggregations:
      - {{name: zone-avg, window: {{size: 5m}}, groupBy: zone, functions: [avg]}}
  outputs:
    anomalies: {{topic: {anomalies}, partitions: 2}}
    aggregates: {{topic: {aggregates}}}
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
    /// The pipeline under test (the last object given).
    name: String,
}

impl Harness {
    async fn new(objects: Vec<SensorPipeline>) -> Self {
        let name = objects.last().and_then(|o| o.metadata.name.clone()).unwrap_or_default();
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
        Self { ctx, api: Api::namespaced(client, NS), name }
    }

    async fn get(&self) -> SensorPipeline {
        self.api.get(&self.name).await.unwrap()
    }

    async fn replace(&self, sp: &SensorPipeline) {
        self.api.replace(&self.name, &PostParams::default(), sp).await.unwrap();
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
    let (kafka, n) = (kafka(), Names::new());
    let h = Harness::new(vec![pipeline(&n, &kafka.bootstrap, "")]).await;
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));

    for (topic, partitions) in [
        (n.input.clone(), 4),
        (n.anomalies.clone(), 2),
        (n.aggregates.clone(), 1),
        (n.dead_letter(), 1),
        (n.state(), 4),
        (n.repartition(), 4),
    ] {
        assert_eq!(kafka.partitions(&topic), Some(partitions), "topic {topic}");
    }
    let client = h.ctx.client.clone();
    let deployment = Api::<Deployment>::namespaced(client.clone(), NS).get(&n.workers()).await.unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(deployment.metadata.owner_references.as_ref().unwrap()[0].name, n.name);
    Api::<ConfigMap>::namespaced(client.clone(), NS).get(&n.workers()).await.unwrap();
    Api::<Service>::namespaced(client.clone(), NS).get(&format!("{}-metrics", n.workers())).await.unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), NS).get(&n.workers()).await.unwrap();

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
        .patch_status(&n.workers(), &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    assert_eq!(Harness::condition(&sp, "Ready").0, ConditionStatus::True, "{:?}", sp.status);
    assert_eq!(sp.status.as_ref().unwrap().ready_replicas, 1);
}

#[tokio::test]
async fn a_spec_change_rolls_the_workers_and_scale_follows_the_spec() {
    let (kafka, n) = (kafka(), Names::new());
    let h = Harness::new(vec![pipeline(&n, &kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let deployments = Api::<Deployment>::namespaced(h.ctx.client.clone(), NS);
    let hash = |d: &Deployment| {
        d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
            ["sensorpipe.io/config-hash"]
            .clone()
    };
    let before = hash(&deployments.get(&n.workers()).await.unwrap());

    // `kubectl scale sp NAME --replicas 3` writes spec.workers.replicas through the scale subresource.
    let mut sp = h.get().await;
    sp.spec.workers.replicas = Some(3);
    sp.spec.processing.thresholds[0].above = Some(35.0);
    h.replace(&sp).await;
    h.reconcile().await.unwrap();
    let after = deployments.get(&n.workers()).await.unwrap();
    assert_eq!(after.spec.as_ref().unwrap().replicas, Some(3));
    assert_ne!(hash(&after), before, "a processing change must change the pod template");
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_with_the_message_and_waits_for_a_change() {
    let (kafka, n) = (kafka(), Names::new());
    let mut sp = pipeline(&n, &kafka.bootstrap, "");
    sp.spec.processing.thresholds[0].metric = "temprature".into();
    let h = Harness::new(vec![sp]).await;
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change());
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "InvalidSpec"));
    assert!(message.contains("spec.processing.thresholds[0].metric"), "{message}");
    assert_eq!(sp.status.as_ref().unwrap().phase, sensorpipe_operator::crd::Phase::Failed);
    assert_eq!(kafka.partitions(&n.input), None, "nothing is created for an invalid spec");
}

#[tokio::test]
async fn kafka_unreachable_is_a_condition_and_a_retry() {
    let port = support::free_port();
    let h = Harness::new(vec![pipeline(&Names::new(), &format!("127.0.0.1:{port}"), "")]).await;
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.reason(), "KafkaUnavailable", "{err}");
    let sp = h.get().await;
    let (status, reason, _) = Harness::condition(&sp, "TopicsReady");
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "KafkaUnavailable"));
    let guard = Arc::new(DeserializeGuard(Ok(sp)));
    let delays: Vec<Action> =
        (0..9).map(|_| sensorpipe_operator::controller::error_policy(guard.clone(), &err, h.ctx.clone())).collect();
    let expected: Vec<Action> =
        [5, 10, 20, 40, 80, 160, 300, 300, 300].map(|s| Action::requeue(Duration::from_secs(s))).into();
    assert_eq!(delays, expected, "doubling from 5 s to the documented 5-minute cap");
}

#[tokio::test]
async fn a_missing_unmanaged_input_is_reported_and_no_workers_start() {
    let (kafka, n) = (kafka(), Names::new());
    let mut sp = pipeline(&n, &kafka.bootstrap, "");
    sp.spec.input.managed = false;
    let h = Harness::new(vec![sp]).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "TopicsReady");
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "InputTopicMissing"));
    assert!(message.contains(&n.input), "{message}");
    let deployments = Api::<Deployment>::namespaced(h.ctx.client.clone(), NS);
    assert!(deployments.get_opt(&n.workers()).await.unwrap().is_none());
}

#[tokio::test]
async fn shrinking_partitions_is_not_supported_and_changes_nothing() {
    let (kafka, n) = (kafka(), Names::new());
    let h = Harness::new(vec![pipeline(&n, &kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let mut sp = h.get().await;
    sp.spec.outputs.anomalies.settings.partitions = Some(1);
    h.replace(&sp).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "NotSupported"), "{message}");
    assert!(message.contains(&n.anomalies), "{message}");
    assert_eq!(kafka.partitions(&n.anomalies), Some(2));
}

#[tokio::test]
async fn growing_partitions_adds_them_on_kafka() {
    let (kafka, n) = (kafka(), Names::new());
    let h = Harness::new(vec![pipeline(&n, &kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let mut sp = h.get().await;
    sp.spec.outputs.anomalies.settings.partitions = Some(6);
    sp.spec.input.settings.partitions = Some(8);
    h.replace(&sp).await;
    h.reconcile().await.unwrap();
    assert_eq!(kafka.partitions(&n.anomalies), Some(6));
    assert_eq!(kafka.partitions(&n.input), Some(8));
    // The state topic follows the input: one state partition per input partition.
    assert_eq!(kafka.partitions(&n.state()), Some(8));
    // The repartition topic keeps its count: the workers hash each group over the count they started with.
    assert_eq!(kafka.partitions(&n.repartition()), Some(4));
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "TopicsReady");
    assert_eq!(status, ConditionStatus::True, "{reason}: {message}");
    let topics = &sp.status.as_ref().unwrap().topics;
    assert_eq!(topics.iter().find(|t| t.name == n.anomalies).and_then(|t| t.partitions), Some(6), "{topics:?}");
}

#[tokio::test]
async fn a_replication_factor_change_is_reported_not_attempted() {
    let (kafka, n) = (kafka(), Names::new());
    let h = Harness::new(vec![pipeline(&n, &kafka.bootstrap, "")]).await;
    h.reconcile().await.unwrap();
    let mut sp = h.get().await;
    sp.spec.outputs.anomalies.settings.replication_factor = Some(3);
    h.replace(&sp).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "NotSupported"), "{message}");
    assert!(message.contains(&n.anomalies) && message.contains("replication factor 1"), "{message}");
    assert_eq!(kafka.partitions(&n.anomalies), Some(2), "the topic is left as it is");
}

#[tokio::test]
async fn an_output_topic_claimed_by_an_older_pipeline_is_a_conflict_for_the_newer() {
    let (kafka, n) = (kafka(), Names::new());
    let mut old = pipeline(&n, &kafka.bootstrap, "");
    let older = format!("{}-older", n.name);
    old.metadata.name = Some(older.clone());
    old.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(1_000).unwrap()));
    let mut new = pipeline(&n, &kafka.bootstrap, "");
    new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(2_000).unwrap()));
    let h = Harness::new(vec![old, new]).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "Degraded");
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "ResourceConflict"));
    assert!(message.contains(&n.anomalies) && message.contains(&format!("facilities/{older}")), "{message}");
    let (status, reason, message) = Harness::condition(&sp, "Ready");
    assert_eq!((status, reason.as_str()), (ConditionStatus::False, "ResourceConflict"), "{message}");
    assert!(message.contains(&format!("facilities/{older}")), "{message}");
    // No workers: they would write into the older pipeline's anomalies topic.
    let deployments = Api::<Deployment>::namespaced(h.ctx.client.clone(), NS);
    let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);
    assert_eq!(deployments.get_opt(&n.workers()).await.unwrap().and_then(replicas), Some(0));

    // The older pipeline moves to other topics: the conflict is gone and the newer one gets its workers.
    let olders: Api<SensorPipeline> = Api::namespaced(h.ctx.client.clone(), NS);
    let mut moved = olders.get(&older).await.unwrap();
    let outputs = &mut moved.spec.outputs;
    for (topic, default) in
        [(&mut outputs.anomalies.topic, &n.anomalies), (&mut outputs.aggregates.topic, &n.aggregates)]
    {
        *topic = Some(format!("{default}-elsewhere"));
    }
    outputs.dead_letter.topic = Some(format!("{}-elsewhere", n.dead_letter()));
    olders.replace(&older, &PostParams::default(), &moved).await.unwrap();
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    assert_eq!(Harness::condition(&sp, "Degraded").0, ConditionStatus::False, "{:?}", sp.status);
    assert_eq!(deployments.get_opt(&n.workers()).await.unwrap().and_then(replicas), Some(1));
}

/// Commits an offset for `group` on `topic`, as a worker that processed some input would.
fn commit_offset(kafka: &Kafka, group: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka.client().set("group.id", group).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, Offset::Offset(0)).unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}

/// Whether the broker knows `group` (it has committed offsets or members).
fn group_exists(kafka: &Kafka, group: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: BaseConsumer = kafka.client().create().unwrap();
    let groups = probe.fetch_group_list(Some(group), Duration::from_secs(10)).unwrap();
    groups.groups().iter().any(|g| g.name() == group && g.state() != "Dead")
}

async fn delete_with_policy(policy: &str) -> (Names, Vec<Option<usize>>, bool) {
    let (kafka, n) = (kafka(), Names::new());
    let h = Harness::new(vec![pipeline(&n, &kafka.bootstrap, &format!("  deletionPolicy: {policy}\n"))]).await;
    h.reconcile().await.unwrap();
    assert_eq!(kafka.partitions(&n.anomalies), Some(2));
    commit_offset(kafka, &n.group(), &n.input);
    assert!(group_exists(kafka, &n.group()), "the workers' group has committed offsets");
    let merge_group = format!("{}-merge", n.group());
    commit_offset(kafka, &merge_group, &n.repartition());
    // What `kubectl delete` leaves while the finalizer holds the object: a deletion timestamp.
    let sp = h.get().await;
    let mut deleting = sp.clone();
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let h2 = Harness::new(vec![deleting]).await;
    let action = reconcile(Arc::new(DeserializeGuard(Ok(h2.get().await))), h2.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let sp = h2.api.get_opt(&n.name).await.unwrap();
    assert!(sp.is_none_or(|s| !s.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)), "finalizer removed");
    let left = n.all_topics().iter().map(|t| kafka.partitions(t)).collect();
    let group_left = group_exists(kafka, &n.group());
    assert_eq!(group_exists(kafka, &merge_group), group_left, "the merge stage's group goes with the workers'");
    (n, left, group_left)
}

#[tokio::test]
async fn delete_policy_removes_the_topics_and_the_consumer_group() {
    let (_, left, group_left) = delete_with_policy("Delete").await;
    assert!(left.iter().all(Option::is_none), "topics left: {left:?}");
    assert!(!group_left, "the consumer group is deleted");
}

#[tokio::test]
async fn retain_policy_keeps_the_topics_and_the_consumer_group() {
    let (_, left, group_left) = delete_with_policy("Retain").await;
    assert!(left.iter().all(Option::is_some), "topics gone: {left:?}");
    assert!(group_left, "the consumer group is kept");
}

/// The configs set on `topic` itself (not broker defaults).
async fn topic_overrides(kafka: &Kafka, topic: &str) -> std::collections::BTreeMap<String, String> {
    let admin = sensorpipe_operator::topics::KafkaAdmin::new(
        &[("bootstrap.servers".to_owned(), kafka.bootstrap.clone())].into(),
        Duration::from_secs(10),
    )
    .unwrap();
    admin.describe(&[topic.to_owned()]).await.unwrap()[topic].clone().unwrap().overrides
}

#[tokio::test]
async fn config_changed_behind_the_operators_back_is_reverted_and_other_keys_are_kept() {
    let (kafka, n) = (kafka(), Names::new());
    let mut sp = pipeline(&n, &kafka.bootstrap, "");
    sp.spec.outputs.anomalies.settings.config.insert("retention.ms".into(), "86400000".into());
    let h = Harness::new(vec![sp]).await;
    h.reconcile().await.unwrap();
    let sp = h.get().await;
    assert_eq!(Harness::condition(&sp, "TopicsReady").0, ConditionStatus::True, "created with the config: no drift");

    // Someone changes the managed key on the broker and sets another key the spec does not name.
    let admin: rdkafka::admin::AdminClient<_> = kafka.client().create().unwrap();
    let alter = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(&n.anomalies))
        .set("retention.ms", "3600000")
        .set("max.message.bytes", "2000000");
    for r in admin.alter_configs([&alter], &rdkafka::admin::AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    // The broker answers DescribeConfigs from its metadata, which may not have the change yet: wait for it.
    let mut changed = topic_overrides(kafka, &n.anomalies).await;
    for _ in 0..100 {
        if changed.get("retention.ms").map(String::as_str) == Some("3600000") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        changed = topic_overrides(kafka, &n.anomalies).await;
    }
    assert_eq!(changed.get("retention.ms").map(String::as_str), Some("3600000"), "{changed:?}");

    h.reconcile().await.unwrap();
    let after = topic_overrides(kafka, &n.anomalies).await;
    assert_eq!(after.get("retention.ms").map(String::as_str), Some("86400000"), "reverted to the spec: {after:?}");
    assert_eq!(after.get("max.message.bytes").map(String::as_str), Some("2000000"), "others kept: {after:?}");
    let sp = h.get().await;
    let (status, reason, message) = Harness::condition(&sp, "TopicsReady");
    assert_eq!(status, ConditionStatus::True, "{reason}: {message}");
}
