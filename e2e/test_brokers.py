"""The broker harness the Kafka tests build on (brokers.py): Apache Kafka in KRaft mode on free loopback ports,
creating topics with partitions and configs, round-tripping records, and reached over plaintext, SSL and SASL_SSL
with SCRAM-SHA-512 (a wrong password is refused), the SSL listener only with a client certificate."""

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic


def consume_all(config: dict, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer({**config, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    for _ in range(300):
        msg = consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
        if len(got) >= expected:
            break
    consumer.close()
    return got


def round_trip(config: dict, topic: str) -> list[bytes]:
    producer = Producer({**config, "enable.idempotence": True})
    for i in range(10):
        producer.produce(topic, key=f"room_{i}", value=f'{{"i":{i}}}')
    assert producer.flush(15) == 0
    return sorted(consume_all(config, topic, 10))


EXPECTED = sorted(f'{{"i":{i}}}'.encode() for i in range(10))


def test_kafka_creates_topics_with_configs_and_round_trips(kafka):
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    topic = f"readings-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                  config={"retention.ms": "3600000"})])[topic].result(timeout=15)
    assert len(admin.list_topics(timeout=5).topics[topic].partitions) == 3
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert round_trip({"bootstrap.servers": kafka.bootstrap}, topic) == EXPECTED


def secure(kafka, protocol: str, password: str | None = None, client_cert: bool = True) -> dict:
    config = {"security.protocol": protocol, "ssl.ca.location": kafka.ca_file}
    if protocol == "SSL":
        cert = {"ssl.certificate.location": kafka.client_cert, "ssl.key.location": kafka.client_key}
        return {**config, "bootstrap.servers": kafka.ssl_bootstrap, **(cert if client_cert else {})}
    return {**config, "bootstrap.servers": kafka.sasl_bootstrap, "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "sensorpipe", "sasl.password": password or kafka.users["sensorpipe"]}


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_and_scram_listeners_verify_the_test_ca(kafka, protocol):
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=15)
    assert round_trip(secure(kafka, protocol), topic) == EXPECTED


def test_a_wrong_scram_password_is_refused(kafka):
    errors = []
    admin = AdminClient({**secure(kafka, "SASL_SSL", password="not-the-password"), "log_level": 0,
                         "error_cb": errors.append})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)  # serves the error callback
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_the_ssl_listener_refuses_a_client_without_a_certificate(kafka):
    errors = []
    admin = AdminClient({**secure(kafka, "SSL", client_cert=False), "log_level": 0, "error_cb": errors.append})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)  # serves the error callback
    # The broker ends the handshake with TLS alert 42; librdkafka reports it as a transport error naming it.
    assert any(e.code() == KafkaError._TRANSPORT and "bad certificate" in e.str() for e in errors), errors[:3]
