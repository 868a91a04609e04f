"""Kafka helpers for the end-to-end tests: topics, reading a topic back, running workers and replays."""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass

import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from brokers import free_port

FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def create_topics(bootstrap: str, partitions: dict[str, int], replication_factor: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, n, replication_factor) for t, n in partitions.items()])
    for topic, f in futures.items():
        f.result(timeout=15)


@dataclass(frozen=True)
class Pipeline:
    """A copy of a pipeline manifest whose name and topics carry a tag of their own, so that tests share one broker
    without sharing a topic or a consumer group."""
    path: pathlib.Path
    name: str
    input: str
    anomalies: str
    aggregates: str
    dead_letters: str

    @property
    def state(self) -> str:
        return f"{self.name}-state"

    @property
    def repartition(self) -> str:
        """The topic between the two stages of zone and label windows (the worker's default name)."""
        return f"{self.name}-repartition"

    @property
    def group(self) -> str:
        """The worker's consumer group when run with `--pipeline` (the operator's is namespaced)."""
        return f"sensorpipe-{self.name}"

    def topics(self) -> dict[str, str]:
        return {"input": self.input, "anomalies": self.anomalies, "aggregates": self.aggregates,
                "dead_letters": self.dead_letters, "state": self.state, "repartition": self.repartition}


def produce_reading(producer, topic: str, partition: int, reading: dict) -> None:
    """Produces one JSON reading keyed by its sensor, waiting for deliveries while the local queue is full."""
    while True:
        try:
            producer.produce(topic, json.dumps(reading).encode(), key=reading["sensor_id"].encode(),
                             partition=partition)
            return
        except BufferError:
            producer.poll(0.1)


def unique_pipeline(example: pathlib.Path, work: pathlib.Path, tag: str | None = None,
                    event_time: dict | None = None) -> Pipeline:
    """`event_time` is merged into spec.processing.eventTime. Idleness is off unless it says otherwise: an idle
    partition moves on with the wall clock, so outputs would depend on how long a test waits, and the tests that
    compare with `replay --no-flush` need them to depend on the input only."""
    tag = tag or uuid.uuid4().hex[:8]
    sp = yaml.safe_load(example.read_text())
    et = sp["spec"].setdefault("processing", {}).setdefault("eventTime", {})
    et["idleTimeout"] = "0s"
    et.update(event_time or {})
    name = f"{sp['metadata']['name']}-{tag}"
    sp["metadata"]["name"] = name
    spec = sp["spec"]
    spec["input"]["topic"] = f"{spec['input']['topic']}-{tag}"
    outputs = spec.setdefault("outputs", {})
    for kind, default in (("anomalies", "anomalies"), ("aggregates", "aggregates"), ("deadLetter", "dead-letter")):
        out = outputs.setdefault(kind, {})
        out["topic"] = f"{out.get('topic', default)}-{tag}"
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sp, sort_keys=False))
    return Pipeline(path, name, spec["input"]["topic"], outputs["anomalies"]["topic"],
                    outputs["aggregates"]["topic"], outputs["deadLetter"]["topic"])


def read_partitions(bootstrap: str, topic: str, partitions: int, settle: float = 3.0,
                    timeout: float = 120.0) -> dict[int, list]:
    """Every record of every partition, in offset order, read until nothing new arrives for `settle` seconds."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-reader", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "fetch.queue.backoff.ms": 1})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: dict[int, list] = {p: [] for p in range(partitions)}
    last = time.monotonic()
    deadline = last + timeout
    while time.monotonic() - last < settle and time.monotonic() < deadline:
        msgs = c.consume(10000, 0.2)
        for m in msgs:
            if m.error():
                continue
            out[m.partition()].append(m)
            last = time.monotonic()
    c.close()
    return out


@contextlib.contextmanager
def worker(worker_bin: pathlib.Path, pipeline: pathlib.Path, bootstrap: str, log: pathlib.Path,
           extra: list[str] = (), env: dict | None = None, commit_interval: str = "100ms",
           snapshot_interval: str = "1s"):
    """A `sensorpipe-worker run` process; yields (process, metrics port). SIGTERM on exit. Short intervals by
    default, so tests see many commits and snapshots."""
    port = free_port()
    args = [str(worker_bin), "run", "-p", str(pipeline), "--bootstrap-servers", bootstrap,
            "--http-addr", f"127.0.0.1:{port}", "--commit-interval", commit_interval,
            "--snapshot-interval", snapshot_interval]
    for k, v in FAST_GROUP.items():
        args += ["--kafka-property", f"{k}={v}"]
    args += list(extra)
    with log.open("ab") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc, port
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""  # not listening (yet, or any more)


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def replay_partitions(worker_bin: pathlib.Path, pipeline: pathlib.Path, inputs: dict[int, list],
                      work: pathlib.Path, flush: bool = False) -> dict[str, list[dict]]:
    """`replay --no-flush` of the input partition by partition (one `-i` per partition: one engine each, zone
    windows merged across them): what a stream that has seen these records has emitted."""
    args = [str(worker_bin), "replay", "-p", str(pipeline), "-o", str(work / "replay")]
    for p, msgs in sorted(inputs.items()):
        src = work / f"input-{p}.jsonl"
        src.write_bytes(b"".join((m.value() or b"") + b"\n" for m in msgs))
        args += ["-i", str(src)]
    if not flush:
        args.append("--no-flush")
    subprocess.run(args, check=True, capture_output=True)
    result: dict[str, list[dict]] = {}
    for kind in ("anomalies", "aggregates", "dead_letters"):
        text = (work / "replay" / f"{kind}.jsonl").read_text()
        result[kind] = [json.loads(line) for line in text.splitlines() if line]
    return result


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (without joining the group); -1001 where none."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def wait_caught_up(bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float,
                   watch=None) -> None:
    """Waits until the group has committed every partition up to `ends` (offset after the last record).
    `watch` is called on every poll, e.g. to restart crashed workers."""
    last: dict[int, int] = {}

    def check():
        if watch:
            watch()
        try:
            last.update(committed_offsets(bootstrap, group, topic, max(ends) + 1))
        except KafkaException:
            return False  # e.g. a group coordinator still loading after a broker restart: ask again
        return all(last.get(p, -1) >= end for p, end in ends.items())
    try:
        wait_until(check, timeout, f"group {group} to commit {ends}", interval=1.0)
    except AssertionError as e:
        raise AssertionError(f"{e}; last committed: {last}") from None


def wait_merged(bootstrap: str, group: str, repartition: str, timeout: float, watch=None) -> None:
    """Waits until the merge stage (group `<group>-merge`) has committed past the last partial in the repartition
    topic. Call it once the input group has caught up: the topic then holds every partial the input makes, and the
    final zone and label windows of those partials are emitted only when this returns — an input group that has
    caught up says nothing about the second stage, which may still be rejoining its group after a fault."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-reader"})
    try:
        partitions = len(c.list_topics(repartition, timeout=15).topics[repartition].partitions)
    finally:
        c.close()
    parts = read_partitions(bootstrap, repartition, partitions, settle=1.0)
    # The offset after the last partial, not the end offset: a transaction's commit marker follows it.
    ends = {p: msgs[-1].offset() + 1 for p, msgs in parts.items() if msgs}
    if ends:
        wait_caught_up(bootstrap, f"{group}-merge", repartition, ends, timeout, watch)


def canonical(records: list[dict]) -> list[str]:
    """Order-free, comparable form of output records (a multiset as a sorted list)."""
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def committed_once(port: int) -> bool:
    return metric(http_get(port, "/metrics")[1], "sensorpipe_worker_transactions_total", outcome="committed") > 0
