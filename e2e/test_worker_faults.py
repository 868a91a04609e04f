"""The worker under faults it can meet in production, on Apache Kafka: outputs that cannot be produced as they
are must not stall the partition or be lost silently.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from kafka_io import (canonical, create_topics, http_get, metric, read_partitions, unique_pipeline, wait_caught_up,
                      wait_merged, wait_until, worker)
from verify import assert_delivered, ends_of, expected, outputs_committed

PARTITIONS = 2


def test_a_dead_letter_too_large_for_the_topic_is_cut_not_retried_forever(worker_bin, kafka, example_pipeline,
                                                                        tmp_path):
    """A malformed record of 1.5 MB is accepted by an input topic that allows 2 MiB, but as a dead letter it
    exceeds the worker producer's 1 000 000-byte limit (and the dead-letter topic's). The worker sends a 64 KiB
    prefix with reason `too_large`, the original size and xxh3 in headers, and goes on (it used to abort, rewind
    and redo the batch forever)."""
    bs = kafka.bootstrap
    pipe = unique_pipeline(example_pipeline, tmp_path)
    create_topics(bs, {t: PARTITIONS for k, t in pipe.topics().items() if k != "input"})
    admin = AdminClient({"bootstrap.servers": bs})
    big_input = NewTopic(pipe.input, PARTITIONS, 1, config={"max.message.bytes": str(2 << 20)})
    admin.create_topics([big_input])[pipe.input].result(timeout=15)
    ok = {"sensor_id": "room_1", "timestamp": 1673049600, "temperature": 21.0, "zone": "floor-1"}
    big = b'{"sensor_id":"room_1","note":"' + b"x" * 1_500_000
    p = Producer({"bootstrap.servers": bs, "message.max.bytes": 2 << 20})
    p.produce(pipe.input, json.dumps(ok).encode(), key=b"room_1", partition=0)
    p.produce(pipe.input, big, key=b"room_1", partition=0)
    p.produce(pipe.input, json.dumps({**ok, "timestamp": 1673049610}).encode(), key=b"room_1", partition=0)
    assert p.flush(30) == 0
    with worker(worker_bin, pipe.path, bs, tmp_path / "worker.log"):
        wait_caught_up(bs, pipe.group, pipe.input, {0: 3}, timeout=60)
    dead = [m for ms in read_partitions(bs, pipe.dead_letters, PARTITIONS).values() for m in ms]
    assert len(dead) == 1, [m.headers() for m in dead]
    h = {k: v.decode() for k, v in dead[0].headers()}
    assert h["sensorpipe.reason"] == "too_large", h
    assert "malformed_json" in h["sensorpipe.detail"], h
    assert h["sensorpipe.original.size"] == str(len(big))
    assert dead[0].value() == big[:65536]
    assert len(h["sensorpipe.original.xxh3"]) == 16


def create_topics_refusing(bs: str, pipe, kind: str) -> AdminClient:
    """The pipeline's topics, with `kind`'s taking no output (`max.message.bytes` 150: room for a transaction
    marker, not for an anomaly or an aggregate); the admin client, to raise the limit later."""
    create_topics(bs, {t: PARTITIONS for k, t in pipe.topics().items() if k != kind})
    admin = AdminClient({"bootstrap.servers": bs})
    topic = pipe.topics()[kind]
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"max.message.bytes": "150"})])[topic].result(timeout=15)
    return admin


@pytest.mark.parametrize("delivery", ["exactlyOnce", "atLeastOnce"])
def test_outputs_the_broker_refuses_are_retried_with_backoff_and_never_committed(worker_bin, kafka, example_pipeline,
                                                                                tmp_path, delivery):
    """The aggregates topic takes no aggregate (`max.message.bytes` 150: room for a transaction marker, not for an
    aggregate, so every aggregate is refused for good with
    MSG_SIZE_TOO_LARGE, as a missing ACL or a deleted topic would be): the worker retries the batch with capped
    backoff, not in a hot loop, says so on /readyz and in a metric naming the topic, and commits no offset whose
    outputs were not delivered — so once the limit is raised the outputs equal replay (exactly-once) or contain
    it (at-least-once). Before: a restore loop without pause (exactly-once), and at-least-once committed the
    offsets of refused outputs and lost them."""
    bs = kafka.bootstrap
    pipe = unique_pipeline(example_pipeline, tmp_path)
    admin = create_topics_refusing(bs, pipe, "aggregates")
    subprocess.run([str(worker_bin), "simulate", "--sensors", "30", "--duration", "6h", "--topic", pipe.input,
                    "--bootstrap-servers", bs], check=True, capture_output=True)
    inputs = read_partitions(bs, pipe.input, PARTITIONS)
    flags = ["--delivery", delivery]
    with worker(worker_bin, pipe.path, bs, tmp_path / "worker.log", extra=flags) as (_, port):
        wait_until(lambda: metric(http_get(port, "/metrics")[1], "sensorpipe_worker_records_produced_total",
                                  topic=pipe.aggregates, outcome="failed") > 0, 60, "a refused output to be reported")
        started = time.monotonic()
        restores = metric(http_get(port, "/metrics")[1], "sensorpipe_worker_restores_total")
        time.sleep(20)
        retried = metric(http_get(port, "/metrics")[1], "sensorpipe_worker_restores_total") - restores
        # Backoff doubling from 250 ms to a 30 s cap: a handful of retries per partition in 20 s, not hundreds (and not none:
        # a batch whose output was refused is redone, never committed).
        assert 1 <= retried <= 12 * PARTITIONS, f"{retried} restores in {time.monotonic() - started:.0f} s"
        status, body = http_get(port, "/readyz")
        assert status == 503 and pipe.aggregates in body, (status, body)
        assert metric(http_get(port, "/metrics")[1], "sensorpipe_worker_blocked_partitions") >= 1
        raised = ConfigEntry("max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource("topic", pipe.aggregates, incremental_configs=[raised])
        admin.incremental_alter_configs([resource])[resource].result(timeout=15)
        wait_caught_up(bs, pipe.group, pipe.input, ends_of(inputs), timeout=180)
        wait_merged(bs, pipe.group, pipe.repartition, timeout=180)
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "the worker to be ready again")
    got = outputs_committed(bs, pipe.topics(), PARTITIONS)
    exp = expected(worker_bin, pipe.path, inputs, tmp_path)
    assert_delivered(got, exp, delivery)


def test_a_partition_with_lag_and_no_progress_fails_the_liveness_probe(worker_bin, kafka, example_pipeline, tmp_path):
    """A reading 14 °C above the one before it raises a `temperature-jump` anomaly, which the anomalies topic
    refuses (`max.message.bytes` 150): the batch holds its input partition, redone with backoff and never committed
    while readings wait behind it. Once that lasted the stall timeout, /healthz answers 503 naming the partition,
    its lag and the last failure, so the liveness probe restarts a worker that is stuck for good; once the topic
    takes the anomaly, the partition catches up and /healthz answers 200 again. Before, /healthz answered ok
    whatever the partitions did."""
    bs = kafka.bootstrap
    pipe = unique_pipeline(example_pipeline, tmp_path)
    admin = create_topics_refusing(bs, pipe, "anomalies")
    p = Producer({"bootstrap.servers": bs})
    for i, temperature in enumerate([21.0, 35.0, 21.5, 22.0, 22.5]):
        reading = {"sensor_id": "room_1", "timestamp": 1673049600 + 10 * i, "temperature": temperature,
                   "zone": "floor-1"}
        p.produce(pipe.input, json.dumps(reading).encode(), key=b"room_1", partition=0)
    assert p.flush(30) == 0
    with worker(worker_bin, pipe.path, bs, tmp_path / "worker.log", extra=["--stall-timeout", "3s"]) as (_, port):
        wait_until(lambda: http_get(port, "/healthz")[0] == 503, 60, "the stalled partition to fail /healthz")
        body = http_get(port, "/healthz")[1]
        assert f"partition 0 of {pipe.input} has " in body, body
        assert "committed nothing" in body and pipe.anomalies in body, body
        raised = ConfigEntry("max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource("topic", pipe.anomalies, incremental_configs=[raised])
        admin.incremental_alter_configs([resource])[resource].result(timeout=15)
        wait_caught_up(bs, pipe.group, pipe.input, {0: 5}, timeout=120)
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, 60, "the worker to be live again")
    got = outputs_committed(bs, pipe.topics(), PARTITIONS)["anomalies"]
    exp = expected(worker_bin, pipe.path, read_partitions(bs, pipe.input, PARTITIONS), tmp_path)["anomalies"]
    assert any(a["rule"] == "temperature-jump" for a in exp), exp
    assert canonical(got) == canonical(exp)
