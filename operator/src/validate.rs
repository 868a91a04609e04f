//! Validate (pure): a `SensorPipeline` as stored → a [`ValidPipeline`] with every default resolved, or every
//! problem at once, each with the path of the field to fix. Nothing here talks to Kubernetes or Kafka, so the
//! rules are unit-tested from inline YAML.
//!
//! The CRD's CEL rules reject most of these at `kubectl apply`; the operator checks again because an object may
//! predate a rule, come from a cluster that skips CEL, or break a rule CEL cannot express (the worker's semantic
//! checks: metrics that exist, unique rule names, window limits).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sensorpipe_worker::model::{PipelineDefinition, validate as validate_definition};

use crate::crd::{Delivery, SaslMechanism, SensorPipeline, TopicSettings};

/// librdkafka properties the worker sets itself because exactly-once depends on them.
pub const PROTECTED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "transactional.id",
    "enable.idempotence",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "enable.partition.eof",
];

/// librdkafka properties that carry a secret, and the field that takes it from a Secret instead: written inline
/// in `spec.kafka.properties` they would be readable by anyone who may read the SensorPipeline, and land in the
/// workers' ConfigMap.
pub const SECRET_PROPERTIES: &[(&str, &str)] = &[
    ("sasl.username", "spec.kafka.sasl.username"),
    ("sasl.password", "spec.kafka.sasl.password"),
    ("ssl.key.password", "spec.kafka.tls.clientKey (an unencrypted PEM key from a Secret)"),
    ("ssl.key.pem", "spec.kafka.tls.clientKey"),
    ("ssl_key", "spec.kafka.tls.clientKey"),
    ("ssl.keystore.password", "spec.kafka.tls.clientCert and clientKey (PEM from Secrets)"),
    ("sasl.oauthbearer.client.secret", "a SASL mechanism with spec.kafka.sasl (OAUTHBEARER is not supported)"),
    ("sasl.oauthbearer.config", "a SASL mechanism with spec.kafka.sasl (OAUTHBEARER is not supported)"),
];

/// What a topic is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Input,
    Anomalies,
    Aggregates,
    DeadLetter,
    State,
    /// Between the two stages of zone and label windows (planned only when an aggregation groups by one).
    Repartition,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Anomalies => "anomalies",
            Role::Aggregates => "aggregates",
            Role::DeadLetter => "deadLetter",
            Role::State => "state",
            Role::Repartition => "repartition",
        }
    }
}

/// A topic the pipeline uses, with what the spec asks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPlan {
    pub role: Role,
    pub name: String,
    /// The operator creates it, reconciles partitions and configs, and may delete it.
    pub managed: bool,
    /// Desired partitions (managed topics); `None`: the broker's default at creation.
    pub partitions: Option<i32>,
    pub replication_factor: Option<i32>,
    pub config: BTreeMap<String, String>,
}

/// Autoscaler settings with defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Autoscaling {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub lag_records_target: Option<i64>,
    pub lag_seconds_target: Option<i64>,
    pub window: std::time::Duration,
    pub scale_up_stabilization: std::time::Duration,
    pub scale_down_stabilization: std::time::Duration,
    /// `Some((activation lag in records, idle time before stopping the last worker))`.
    pub scale_to_zero: Option<(i64, std::time::Duration)>,
}

/// A pipeline the operator can run: names resolved, defaults applied, every rule checked.
#[derive(Clone, Debug)]
pub struct ValidPipeline {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub topics: Vec<TopicPlan>,
    pub group_id: String,
    pub transactional_id_prefix: String,
    pub delivery: Delivery,
    /// `None`: the scale subresource / `workers.replicas` decide (default 1).
    pub autoscaling: Option<Autoscaling>,
    /// The replica count the spec asks for when not autoscaling.
    pub replicas: i32,
    /// Kafka properties for workers (pipeline-wide, then worker-specific).
    pub worker_kafka_properties: BTreeMap<String, String>,
    /// The object as the API returned it (builders read the rest of the spec from here).
    pub object: SensorPipeline,
}

impl ValidPipeline {
    pub fn topic(&self, role: Role) -> &TopicPlan {
        // Every role but the repartition topic is always planned by `validate`.
        self.topics.iter().find(|t| t.role == role).unwrap_or(&self.topics[0])
    }

    /// The repartition topic, when some aggregation groups by zone or label.
    pub fn repartition_topic(&self) -> Option<&TopicPlan> {
        self.topics.iter().find(|t| t.role == Role::Repartition)
    }
}

/// One problem in a SensorPipeline, with the path of the field (from `spec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec(pub Vec<Problem>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.path, p.message)?;
        }
        Ok(())
    }
}

/// Checks `sp` and resolves every default.
pub fn validate(sp: &SensorPipeline) -> Result<ValidPipeline, InvalidSpec> {
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| problems.push(Problem { path: path.to_owned(), message });
    let name = sp.metadata.name.clone().unwrap_or_default();
    let namespace = sp.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let spec = &sp.spec;

    if spec.kafka.bootstrap_servers.trim().is_empty() {
        problem("spec.kafka.bootstrapServers", "set the Kafka bootstrap servers, e.g. kafka:9092".to_owned());
    }
    if let Some(tls) = &spec.kafka.tls
        && tls.client_cert.is_some() != tls.client_key.is_some()
    {
        problem("spec.kafka.tls", "clientCert and clientKey go together (mutual TLS needs both)".to_owned());
    }
    for (path, props) in [
        ("spec.kafka.properties", &spec.kafka.properties),
        ("spec.workers.kafkaProperties", &spec.workers.kafka_properties),
    ] {
        for key in props.keys().filter(|k| PROTECTED_PROPERTIES.contains(&k.as_str())) {
            problem(path, format!("{key} is set by sensorpipe (exactly-once depends on it); remove it"));
        }
        // The message names the key only: it goes to the status and an Event, never the value.
        for (key, instead) in SECRET_PROPERTIES.iter().filter(|(k, _)| props.contains_key(*k)) {
            problem(path, format!("{key} carries a secret and may not be written inline; use {instead}"));
        }
    }
    if let Some(sasl) = &spec.kafka.sasl
        && sasl.mechanism == SaslMechanism::Plain
        && spec.kafka.tls.is_none()
        && !spec.kafka.allow_insecure_sasl
    {
        problem(
            "spec.kafka.sasl.mechanism",
            "PLAIN over a listener without TLS sends the password in clear text to whatever answers at \
             bootstrapServers; set spec.kafka.tls, use SCRAM-SHA-512, or set spec.kafka.allowInsecureSasl: true"
                .to_owned(),
        );
    }

    // The engine's part: the worker's own checks, with paths moved under `spec`.
    let definition = PipelineDefinition { input: spec.input.format.clone(), processing: spec.processing.clone() };
    if let Err(errors) = validate_definition(&definition) {
        for e in errors.0 {
            problem(&format!("spec.{}", e.path), e.message);
        }
    }

    let topics = planned_topics(sp);
    let mut seen: HashMap<&str, Role> = HashMap::new();
    for t in &topics {
        if let Some(other) = seen.insert(&t.name, t.role) {
            problem(
                &format!("spec.{}", topic_path(t.role)),
                format!("topic {} is also the {} topic; each role needs its own topic", t.name, other.as_str()),
            );
        }
        if !is_topic_name(&t.name) {
            problem(
                &format!("spec.{}", topic_path(t.role)),
                format!("{:?} is not a valid topic name (letters, digits, '.', '_', '-'; at most 249)", t.name),
            );
        }
    }

    let autoscaling = spec.workers.autoscaling.as_ref().map(|a| Autoscaling {
        min_replicas: a.min_replicas,
        max_replicas: a.max_replicas,
        lag_records_target: a.lag_records_target,
        lag_seconds_target: a.lag_seconds_target,
        window: a.window.into(),
        scale_up_stabilization: a.scale_up_stabilization.into(),
        scale_down_stabilization: a.scale_down_stabilization.into(),
        scale_to_zero: a.scale_to_zero.as_ref().map(|z| (z.activation_lag_records, z.idle_for.into())),
    });
    if let Some(a) = &autoscaling {
        if a.min_replicas > a.max_replicas {
            problem(
                "spec.workers.autoscaling",
                format!("minReplicas {} exceeds maxReplicas {}", a.min_replicas, a.max_replicas),
            );
        }
        if a.lag_records_target.is_none() && a.lag_seconds_target.is_none() {
            problem("spec.workers.autoscaling", "set lagRecordsTarget, lagSecondsTarget or both".to_owned());
        }
        if a.min_replicas == 0 && a.scale_to_zero.is_none() {
            problem("spec.workers.autoscaling.minReplicas", "0 needs scaleToZero (with its activation lag)".to_owned());
        }
    }
    if spec.workers.replicas.is_some_and(|r| r < 0) {
        problem("spec.workers.replicas", "must not be negative".to_owned());
    }

    if !problems.is_empty() {
        return Err(InvalidSpec(problems));
    }
    let group_id = group_id(sp);
    let mut worker_kafka_properties = spec.kafka.properties.clone();
    worker_kafka_properties.extend(spec.workers.kafka_properties.clone());
    Ok(ValidPipeline {
        transactional_id_prefix: group_id.clone(),
        group_id,
        generation: sp.metadata.generation,
        delivery: spec.workers.delivery,
        replicas: spec.workers.replicas.unwrap_or(1),
        autoscaling,
        worker_kafka_properties,
        topics,
        name,
        namespace,
        object: sp.clone(),
    })
}

fn topic_path(role: Role) -> &'static str {
    match role {
        Role::Input => "input.topic",
        Role::Anomalies => "outputs.anomalies.topic",
        Role::Aggregates => "outputs.aggregates.topic",
        Role::DeadLetter => "outputs.deadLetter.topic",
        Role::State | Role::Repartition => "metadata.name",
    }
}

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The consumer group (and transactional id prefix) of a pipeline's workers: namespaced, so pipelines of the same
/// name in two namespaces sharing a Kafka cluster do not share a group.
pub fn group_id(sp: &SensorPipeline) -> String {
    format!(
        "sensorpipe-{}-{}",
        sp.metadata.namespace.as_deref().unwrap_or("default"),
        sp.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The consumer group of the workers' merge stage (the repartition topic; docs/engine.md).
pub fn merge_group_id(sp: &SensorPipeline) -> String {
    format!("{}-merge", group_id(sp))
}

/// The topics of a pipeline (usable on an invalid spec too): input and outputs as the spec names them, and the
/// internal ones — state and, for zone and label windows, repartition — named after the namespaced group, so
/// two pipelines of one name in two namespaces never share one.
pub fn planned_topics(sp: &SensorPipeline) -> Vec<TopicPlan> {
    let spec = &sp.spec;
    let name = sp.metadata.name.as_deref().unwrap_or_default();
    let internal = group_id(sp);
    let plan = |role: Role, topic: String, managed: bool, s: &TopicSettings| TopicPlan {
        role,
        name: topic,
        managed,
        partitions: s.partitions,
        replication_factor: s.replication_factor,
        config: s.config.clone(),
    };
    let out = |role: Role, o: &crate::crd::OutputTopic, suffix: &str| {
        let mut t = plan(role, o.topic.clone().unwrap_or_else(|| format!("{name}-{suffix}")), true, &o.settings);
        t.partitions = t.partitions.or(Some(1));
        t
    };
    let input_partitions = spec.input.settings.partitions;
    let mut state_config = BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]);
    // Snapshots are small and rewritten every few seconds: compact briskly so restores read little.
    state_config.insert("segment.ms".to_owned(), "3600000".to_owned());
    let mut topics = vec![
        plan(Role::Input, spec.input.topic.clone(), spec.input.managed, &spec.input.settings),
        out(Role::Anomalies, &spec.outputs.anomalies, "anomalies"),
        out(Role::Aggregates, &spec.outputs.aggregates, "aggregates"),
        out(Role::DeadLetter, &spec.outputs.dead_letter, "dead-letter"),
        TopicPlan {
            role: Role::State,
            name: format!("{internal}-state"),
            managed: true,
            // One state partition per input partition keeps restores reading only their own snapshots; for an
            // unmanaged input the reconciler fills in the input's actual count.
            partitions: input_partitions,
            replication_factor: spec.outputs.anomalies.settings.replication_factor,
            config: state_config,
        },
    ];
    if spec.processing.aggregations.iter().any(|a| a.group_by != "sensor") {
        topics.push(TopicPlan {
            role: Role::Repartition,
            name: format!("{internal}-repartition"),
            managed: true,
            // Like the state topic: as many partitions as the input (filled in for an unmanaged input).
            partitions: input_partitions,
            replication_factor: spec.outputs.anomalies.settings.replication_factor,
            // Partials are merged within seconds; a week covers a pipeline stopped over a long weekend.
            config: BTreeMap::from([("retention.ms".to_owned(), "604800000".to_owned())]),
        });
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(kafka: &str) -> SensorPipeline {
        let yaml = format!(
            "apiVersion: sensorpipe.io/v1alpha1\nkind: SensorPipeline\nmetadata: {{name: p, namespace: ns}}\nspec:\n  kafka: {kafka}\n  input: {{topic: readings, fields: {{metrics: [t]}}}}\n"
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    fn problems(kafka: &str) -> String {
        validate(&pipeline(kafka)).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn secret_bearing_properties_are_refused_naming_the_field_to_use_and_not_the_value() {
        let e = problems("{bootstrapServers: k:9092, properties: {sasl.password: hunter2, ssl.key.password: pw2}}");
        assert!(
            e.contains("spec.kafka.properties: sasl.password carries a secret")
                && e.contains("spec.kafka.sasl.password"),
            "{e}"
        );
        assert!(e.contains("ssl.key.password carries a secret") && e.contains("spec.kafka.tls.clientKey"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("pw2"), "{e}");
        let e = problems("{bootstrapServers: k:9092}\n  workers: {kafkaProperties: {sasl.username: u}}");
        assert!(e.contains("spec.workers.kafkaProperties: sasl.username carries a secret"), "{e}");
        assert_eq!(problems("{bootstrapServers: k:9092, properties: {compression.type: zstd}}"), "");
    }

    #[test]
    fn sasl_plain_without_tls_needs_an_explicit_opt_in() {
        let sasl = "sasl: {mechanism: PLAIN, username: {name: s, key: u}, password: {name: s, key: p}}";
        let e = problems(&format!("{{bootstrapServers: k:9092, {sasl}}}"));
        assert!(e.contains("spec.kafka.sasl.mechanism: PLAIN over a listener without TLS"), "{e}");
        assert_eq!(problems(&format!("{{bootstrapServers: k:9092, {sasl}, allowInsecureSasl: true}}")), "");
        assert_eq!(problems(&format!("{{bootstrapServers: k:9093, {sasl}, tls: {{}}}}")), "");
        let scram = sasl.replace("PLAIN", "SCRAM-SHA-512");
        assert_eq!(problems(&format!("{{bootstrapServers: k:9092, {scram}}}")), "", "SCRAM sends no password");
    }
}
