//! The Kafka side of one-machine mode: an embedded broker (librdkafka's mock cluster, in this process, on a
//! loopback port other processes connect to) or a real cluster, and the pipeline's topics created through the
//! operator's own plan (`validate::planned_topics` → `topics::plan::plan_topics`).
//!
//! The embedded broker keeps everything in memory and lives as long as this process. It does not apply
//! transactional offset commits to the consumer group, so a worker that took over a partition could not resume
//! an exactly-once predecessor: on it, workers run at-least-once (which it supports fully), and nothing is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::crd::SensorPipeline;
use crate::topics::admin::KafkaAdmin;
use crate::topics::plan::{TopicAction, plan_topics};
use crate::validate::planned_topics;

/// Where the pipeline's topics live.
pub enum Broker {
    Embedded(MockCluster<'static, DefaultProducerContext>),
    External { bootstrap: String, properties: BTreeMap<String, String> },
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("bootstrap", &self.bootstrap()).finish()
    }
}

impl Broker {
    pub fn embedded() -> anyhow::Result<Self> {
        Ok(Self::Embedded(MockCluster::new(1).context("cannot start the embedded Kafka broker")?))
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Self::Embedded(mock) => mock.bootstrap_servers(),
            Self::External { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// Client properties for the admin client, the feed and the input producer.
    pub fn properties(&self) -> BTreeMap<String, String> {
        match self {
            Self::Embedded(_) => BTreeMap::from([("bootstrap.servers".to_owned(), self.bootstrap())]),
            Self::External { properties, .. } => properties.clone(),
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Embedded(_))
    }

    /// Creates what is missing of the pipeline's topics; returns lines describing what was done. On the
    /// embedded broker every topic is created (it starts empty), with replication factor 1 (one broker).
    pub async fn ensure_topics(&self, sp: &SensorPipeline, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let mut desired = planned_topics(sp);
        let observed = match self {
            Self::Embedded(_) => {
                for t in &mut desired {
                    t.managed = true;
                    t.replication_factor = Some(1);
                }
                desired.iter().map(|t| (t.name.clone(), None)).collect()
            }
            Self::External { properties, .. } => {
                let admin = KafkaAdmin::new(properties, timeout)?;
                let names: Vec<String> = desired.iter().map(|t| t.name.clone()).collect();
                admin
                    .describe(&names)
                    .await
                    .with_context(|| format!("cannot describe topics on {}", self.bootstrap()))?
            }
        };
        let (actions, issues) = plan_topics(&desired, &observed);
        if let Some(missing) = issues.iter().find(|i| i.reason == "InputTopicMissing") {
            bail!("{}", missing.message);
        }
        let mut done: Vec<String> = issues.iter().map(|i| format!("warning: {} ({})", i.message, i.reason)).collect();
        for action in actions {
            match (self, action) {
                (Self::Embedded(mock), TopicAction::Create { name, partitions, .. }) => {
                    mock.create_topic(&name, partitions, 1).with_context(|| format!("cannot create topic {name}"))?;
                    done.push(format!("created topic {name} ({partitions} partitions)"));
                }
                (
                    Self::External { properties, .. },
                    TopicAction::Create { name, partitions, replication_factor, config },
                ) => {
                    let admin = KafkaAdmin::new(properties, timeout)?;
                    // A manifest written for a production cluster (replication 3) still runs on a developer's
                    // one-broker Kafka: the factor is capped at the cluster's size, and the line says so.
                    let brokers = admin.broker_count().await.context("cannot read the cluster's brokers")?;
                    let (rf, note) = match replication_factor {
                        Some(asked) if asked as usize > brokers && brokers > 0 => (
                            Some(brokers as i32),
                            format!(
                                ", replication factor {brokers}: the cluster has {brokers} broker{}, the spec asks \
                                 {asked}",
                                if brokers == 1 { "" } else { "s" }
                            ),
                        ),
                        other => (other, String::new()),
                    };
                    admin
                        .create(&name, partitions, rf, &config)
                        .await
                        .with_context(|| format!("cannot create topic {name}"))?;
                    done.push(format!("created topic {name} ({partitions} partitions{note})"));
                }
                // An existing topic that differs from the spec is the operator's business on a cluster; here it is
                // reported and left alone.
                (_, other) => done.push(format!("note: not changed here: {other:?}")),
            }
        }
        Ok(done)
    }
}
