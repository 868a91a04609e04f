"""The worker under faults it can meet in production, on Apache Kafka: outputs that cannot be produced as they
are must not stall the partition or be lost silently.
"""

from __future__ import annotations

import json

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_io import create_topics, read_partitions, unique_pipeline, wait_caught_up, worker

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
