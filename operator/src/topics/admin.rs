//! The operator's Kafka admin client: read topics (partitions, replication, configs), create them, add
//! partitions, revert configs, delete topics and the consumer group, and measure the group's lag.
//!
//! "Already exists" on create and "unknown topic/group" on delete count as success, so every step can be repeated
//! after a crash or a conflict. Calls that librdkafka only offers blocking run on tokio's blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// A topic as the broker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedTopic {
    pub partitions: i32,
    pub replication_factor: i32,
    /// Effective config values.
    pub config: BTreeMap<String, String>,
    /// The values set on the topic itself (kept when a config is changed, since AlterConfigs replaces the set).
    pub overrides: BTreeMap<String, String>,
}

/// Consumer-group lag on one topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lag {
    /// Per partition: (committed offset or -1, end offset).
    pub partitions: BTreeMap<i32, (i64, i64)>,
    /// Records not yet processed, over all partitions.
    pub records: i64,
    /// Age of the oldest unprocessed record (ms since its timestamp), over all partitions; 0 without lag.
    pub oldest_unprocessed_ms: Option<i64>,
    /// Sum of committed offsets (for throughput between two observations).
    pub committed_total: i64,
}

/// Why an admin call failed, in bounded categories (metric labels, condition reasons).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The cluster did not answer (down, unreachable, timed out): retry with backoff.
    #[error("Kafka unavailable: {0}")]
    Unavailable(String),
    /// The broker refused (authorization, unsupported request, invalid config): report, retry slowly.
    #[error("Kafka refused {what}: {detail}")]
    Refused { what: String, detail: String },
}

impl AdminError {
    pub fn reason(&self) -> &'static str {
        match self {
            AdminError::Unavailable(_) => "KafkaUnavailable",
            AdminError::Refused { .. } => "KafkaRefused",
        }
    }
}

fn classify(what: &str, e: KafkaError) -> AdminError {
    let code = match &e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator,
        )
        | None => AdminError::Unavailable(format!("{what}: {e}")),
        Some(_) => AdminError::Refused { what: what.to_owned(), detail: e.to_string() },
    }
}

fn refused(what: String, code: RDKafkaErrorCode) -> AdminError {
    match code {
        // Transient: the broker answers, but not yet (a group coordinator that moves or is still loading its
        // partition of __consumer_offsets, as right after a broker starts or fails over).
        RDKafkaErrorCode::OperationTimedOut
        | RDKafkaErrorCode::RequestTimedOut
        | RDKafkaErrorCode::NotCoordinator
        | RDKafkaErrorCode::CoordinatorNotAvailable
        | RDKafkaErrorCode::CoordinatorLoadInProgress
        | RDKafkaErrorCode::LeaderNotAvailable
        | RDKafkaErrorCode::NotLeaderForPartition => AdminError::Unavailable(format!("{what}: {code}")),
        _ => AdminError::Refused { what, detail: code.to_string() },
    }
}

/// Admin, metadata and offset access to one Kafka cluster.
#[derive(Clone)]
pub struct KafkaAdmin {
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Metadata and watermarks; no group.
    probe: Arc<BaseConsumer>,
    config: ClientConfig,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAdmin").finish_non_exhaustive()
    }
}

impl KafkaAdmin {
    /// `properties` are librdkafka settings (bootstrap.servers, security); values may be secrets and are never
    /// logged.
    pub fn new(properties: &BTreeMap<String, String>, timeout: Duration) -> Result<Self, AdminError> {
        let mut config = ClientConfig::new();
        config.set("client.id", "sensorpipe-operator");
        // Fail fast enough that a reconcile reports an outage instead of hanging.
        config.set("socket.timeout.ms", timeout.as_millis().to_string());
        for (k, v) in properties {
            config.set(k, v);
        }
        let admin = config.create().map_err(|e| classify("admin client", e))?;
        let probe = config.create().map_err(|e| classify("metadata client", e))?;
        Ok(Self { admin: Arc::new(admin), probe: Arc::new(probe), config, timeout })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new().request_timeout(Some(self.timeout)).operation_timeout(Some(self.timeout))
    }

    /// Cluster metadata: of one topic, or of all with `None` (librdkafka's call blocks: run off the runtime).
    async fn metadata(&self, topic: Option<&str>) -> Result<Metadata, AdminError> {
        let (probe, timeout, topic) = (self.probe.clone(), self.timeout, topic.map(str::to_owned));
        tokio::task::spawn_blocking(move || probe.fetch_metadata(topic.as_deref(), timeout))
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?
            .map_err(|e| classify("metadata", e))
    }

    /// Each named topic as the broker has it, or `None` when it does not exist.
    pub async fn describe(&self, names: &[String]) -> Result<BTreeMap<String, Option<ObservedTopic>>, AdminError> {
        let metadata = self.metadata(None).await?;
        let mut out = BTreeMap::new();
        let mut existing = Vec::new();
        for name in names {
            let topic = metadata.topics().iter().find(|t| t.name() == name && t.error().is_none());
            let observed = topic.filter(|t| !t.partitions().is_empty()).map(|t| ObservedTopic {
                partitions: t.partitions().len() as i32,
                replication_factor: t.partitions().iter().map(|p| p.replicas().len() as i32).min().unwrap_or(0),
                config: BTreeMap::new(),
                overrides: BTreeMap::new(),
            });
            if observed.is_some() {
                existing.push(name.clone());
            }
            out.insert(name.clone(), observed);
        }
        if existing.is_empty() {
            return Ok(out);
        }
        let specs: Vec<ResourceSpecifier<'_>> = existing.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let results =
            self.admin.describe_configs(&specs, &self.options()).await.map_err(|e| classify("describe configs", e))?;
        for (name, result) in existing.iter().zip(results) {
            let resource = result.map_err(|code| refused(format!("describe configs of {name}"), code))?;
            if let Some(Some(t)) = out.get_mut(name) {
                // Every effective value: drift is judged on the keys the spec names, whatever their source (some
                // brokers report creation-time configs as defaults).
                for e in resource.entries {
                    if let Some(v) = e.value {
                        if matches!(e.source, ConfigSource::DynamicTopic) {
                            t.overrides.insert(e.name.clone(), v.clone());
                        }
                        t.config.insert(e.name, v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many brokers the cluster has.
    pub async fn broker_count(&self) -> Result<usize, AdminError> {
        Ok(self.metadata(None).await?.brokers().len())
    }

    /// Creates a topic; an existing one is success.
    pub async fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: Option<i32>,
        config: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication_factor.unwrap_or(-1)));
        for (k, v) in config {
            topic = topic.set(k, v);
        }
        let results = self
            .admin
            .create_topics([&topic], &self.options())
            .await
            .map_err(|e| classify(&format!("creating topic {name}"), e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(refused(format!("creating topic {t}"), code)),
            }
        }
        self.await_partitions(name, |n| n >= partitions).await
    }

    /// Waits until the broker's metadata shows `name` with a partition count that `ready` accepts (0: absent).
    /// Kafka answers CreateTopics, CreatePartitions and DeleteTopics once its controller has decided, and the
    /// brokers' metadata follows a moment later; without the wait a describe right after sees the old topic.
    async fn await_partitions(&self, name: &str, ready: impl Fn(i32) -> bool) -> Result<(), AdminError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let md = self.metadata(Some(name)).await?;
            let seen = md
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none())
                .map_or(0, |t| t.partitions().len() as i32);
            if ready(seen) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AdminError::Unavailable(format!("topic {name}: the brokers' metadata did not follow")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Raises a topic's partition count to `to`.
    pub async fn add_partitions(&self, name: &str, to: i32) -> Result<(), AdminError> {
        let req = NewPartitions::new(name, to as usize);
        let results = self
            .admin
            .create_partitions([&req], &self.options())
            .await
            .map_err(|e| classify(&format!("adding partitions to {name}"), e))?;
        for r in results {
            if let Err((t, code)) = r {
                return Err(refused(format!("adding partitions to {t}"), code));
            }
        }
        self.await_partitions(name, |n| n >= to).await
    }

    /// Sets configs of a topic, keeping the other configs set on it (AlterConfigs replaces the whole set).
    pub async fn set_config(
        &self,
        name: &str,
        current: &BTreeMap<String, String>,
        changes: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let mut all = current.clone();
        all.extend(changes.clone());
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
        for (k, v) in &all {
            alter = alter.set(k, v);
        }
        let results = self
            .admin
            .alter_configs([&alter], &self.options())
            .await
            .map_err(|e| classify(&format!("altering configs of {name}"), e))?;
        for r in results {
            if let Err((_, code)) = r {
                return Err(refused(format!("altering configs of {name}"), code));
            }
        }
        Ok(())
    }

    /// Deletes topics; unknown ones are success.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<(), AdminError> {
        if names.is_empty() {
            return Ok(());
        }
        let results =
            self.admin.delete_topics(names, &self.options()).await.map_err(|e| classify("delete topics", e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => {}
                Err((t, code)) => return Err(refused(format!("deleting topic {t}"), code)),
            }
        }
        for name in names {
            self.await_partitions(name, |n| n == 0).await?;
        }
        Ok(())
    }

    /// Deletes a consumer group; an unknown group is success. `Ok(false)`: the group still has members (Kafka
    /// deletes only empty groups), so stop them and ask again. A coordinator that is moving or loading is asked
    /// again a few times within the call.
    pub async fn delete_group(&self, group: &str) -> Result<bool, AdminError> {
        let mut attempt = 0;
        loop {
            let results =
                self.admin.delete_groups(&[group], &self.options()).await.map_err(|e| classify("delete group", e))?;
            let mut outcome = Ok(true);
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                    Err((_, RDKafkaErrorCode::NonEmptyGroup)) => outcome = Ok(false),
                    Err((g, code)) => outcome = Err(refused(format!("deleting consumer group {g}"), code)),
                }
            }
            match outcome {
                Err(AdminError::Unavailable(_)) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    /// The lag of `group` on `topic`: committed offsets against end offsets, and how old the oldest unprocessed
    /// record is (its timestamp, read from the log — the same definition as the worker's lag in seconds).
    pub async fn lag(&self, group: &str, topic: &str, now_ms: i64) -> Result<Lag, AdminError> {
        let mut config = self.config.clone();
        config.set("group.id", group).set("enable.auto.commit", "false").set("isolation.level", "read_committed");
        let topic = topic.to_owned();
        let timeout = self.timeout;
        let probe = self.probe.clone();
        tokio::task::spawn_blocking(move || -> Result<Lag, AdminError> {
            let md = probe.fetch_metadata(Some(&topic), timeout).map_err(|e| classify("metadata", e))?;
            let partitions: Vec<i32> =
                md.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
            let consumer: BaseConsumer = config.create().map_err(|e| classify("offsets client", e))?;
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition(&topic, *p);
            }
            let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| classify("committed offsets", e))?;
            let mut lag = Lag::default();
            let mut lagging = TopicPartitionList::new();
            for p in partitions {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, p, timeout).map_err(|e| classify("end offsets", e))?;
                let position = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                };
                // Without a commit the group starts at the earliest offset.
                let from = if position >= 0 { position } else { low };
                lag.records += (high - from).max(0);
                lag.committed_total += position.max(0);
                lag.partitions.insert(p, (position, high));
                if high > from {
                    lagging
                        .add_partition_offset(&topic, p, Offset::Offset(from))
                        .map_err(|e| classify("offsets", e))?;
                }
            }
            let now_ms = now_ms;
            lag.oldest_unprocessed_ms = oldest_timestamp(&consumer, &lagging, timeout.min(Duration::from_secs(3)))
                .map(|ts| (now_ms - ts).max(0));
            Ok(lag)
        })
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?
    }
}

/// The oldest timestamp among the first records at the given positions (the oldest unprocessed record), read
/// within `budget` for all partitions together, so a slow or empty fetch cannot stall a reconcile.
fn oldest_timestamp(consumer: &BaseConsumer, positions: &TopicPartitionList, budget: Duration) -> Option<i64> {
    if positions.count() == 0 {
        return None;
    }
    consumer.assign(positions).ok()?;
    let mut pending: std::collections::BTreeSet<i32> = positions.elements().iter().map(|e| e.partition()).collect();
    let mut oldest: Option<i64> = None;
    let deadline = std::time::Instant::now() + budget;
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
            && pending.remove(&m.partition())
            && let Some(ts) = m.timestamp().to_millis()
        {
            oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
        }
    }
    oldest
}
