"""The broker harness the Kafka end-to-end tests build on: tansu starts on a free loopback port, creates topics
with partitions and configs, and round-trips records through an idempotent producer and a consumer group."""

import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from brokers import tansu


def consume_all(bootstrap, topic, expected, **extra):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000, **extra})
    consumer.subscribe([topic])
    got = []
    for _ in range(200):
        msg = consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
        if len(got) >= expected:
            break
    consumer.close()
    return got


def test_tansu_creates_topics_with_configs_and_round_trips(tmp_path):
    with tansu(tmp_path) as bootstrap:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = f"readings-{uuid.uuid4().hex[:8]}"
        futures = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                                config={"retention.ms": "3600000"})])
        futures[topic].result(timeout=10)
        assert len(admin.list_topics(timeout=5).topics[topic].partitions) == 3

        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for i in range(10):
            producer.produce(topic, key=f"room_{i}", value=f'{{"i":{i}}}')
        assert producer.flush(10) == 0
        assert sorted(consume_all(bootstrap, topic, 10)) == sorted(f'{{"i":{i}}}'.encode() for i in range(10))
