//! The operator's Kafka admin client against Apache Kafka (the test run's shared broker): topics, configs, lag.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sensorpipe_operator::topics::KafkaAdmin;
use support::{Kafka, kafka, unique};

fn admin(kafka: &Kafka) -> KafkaAdmin {
    KafkaAdmin::new(
        &BTreeMap::from([("bootstrap.servers".to_owned(), kafka.bootstrap.clone())]),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test]
async fn creates_describes_and_deletes_topics_idempotently() {
    let kafka = kafka();
    let a = admin(kafka);
    let (t, missing) = (unique("t"), unique("missing"));
    let config = BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]);
    a.create(&t, 3, None, &config).await.unwrap();
    a.create(&t, 3, None, &config).await.expect("creating an existing topic is success");
    let seen = a.describe(&[t.clone(), missing.clone()]).await.unwrap();
    let topic = seen[&t].clone().unwrap();
    assert_eq!(topic.partitions, 3);
    assert_eq!(topic.replication_factor, 1);
    assert_eq!(topic.config.get("cleanup.policy").map(String::as_str), Some("compact"));
    assert_eq!(topic.overrides.get("cleanup.policy").map(String::as_str), Some("compact"), "set on the topic");
    assert!(!topic.overrides.contains_key("retention.ms"), "broker defaults are not overrides");
    assert!(seen[&missing].is_none());
    a.add_partitions(&t, 5).await.unwrap();
    assert_eq!(kafka.partitions(&t), Some(5));
    a.delete_topics(&[&t]).await.unwrap();
    a.delete_topics(&[&t]).await.expect("deleting a deleted topic is success");
    assert_eq!(kafka.partitions(&t), None);
    assert!(a.delete_group(&unique("never-existed")).await.expect("deleting an unknown group is success"));
}

#[tokio::test]
async fn lag_counts_uncommitted_records_and_the_age_of_the_oldest() {
    let kafka = kafka();
    let a = admin(kafka);
    let input = unique("in");
    a.create(&input, 1, None, &BTreeMap::new()).await.unwrap();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    for i in 0..100i64 {
        let ts = now - 60_000 + i * 100;
        producer.send(BaseRecord::<(), [u8]>::to(&input).payload(b"{}".as_slice()).partition(0).timestamp(ts)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let group = unique("sensorpipe-facilities-building");
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).set("group.id", &group).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&input, 0, Offset::Offset(40)).unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();

    let lag = a.lag(&group, &input, now).await.unwrap();
    assert_eq!(lag.records, 60);
    assert_eq!(lag.partitions[&0], (40, 100));
    assert_eq!(lag.committed_total, 40);
    // The oldest unprocessed record is offset 40, stamped 60 s − 4 s before `now`.
    assert_eq!(lag.oldest_unprocessed_ms, Some(56_000));

    let unknown = a.lag(&unique("no-such-group"), &input, now).await.unwrap();
    assert_eq!(unknown.records, 100, "a group without commits starts at the earliest offset");
}
