"""Second-stage latency benchmark (not a test): live readings (event time = now) on a local Apache Kafka broker,
one worker (release build, exactly-once, default 200 ms commits), 1-second windows; a read_committed consumer
notes when each window becomes visible, as wall clock minus the window's end. The same run grouped by sensor
(one stage) and by zone (two stages: partials through the repartition topic, merged); the difference of the
medians is what the second stage adds. Run by scripts/bench-merge-latency.sh."""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import threading
import time

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from brokers import kafka_cluster
from kafka_io import create_topics, http_get, wait_until, worker

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"


def pipeline(work: pathlib.Path, name: str, group_by: str, partitions: int) -> dict[str, str]:
    topics = {k: f"{name}-{k}" for k in ("input", "anomalies", "aggregates", "dlq", "state", "repartition")}
    sp = {"apiVersion": "sensorpipe.io/v1alpha1", "kind": "SensorPipeline", "metadata": {"name": name},
          "spec": {"kafka": {"bootstrapServers": "unused:9092"},
                   "input": {"topic": topics["input"], "fields": {
                       "sensorId": "sensor_id", "timestamp": "ts", "timestampUnit": "epochMillis",
                       "metrics": ["temperature"], "zone": "zone"}},
                   "processing": {"eventTime": {"maxOutOfOrderness": "0s", "idleTimeout": "0s"},
                                  "aggregations": [{"name": "w", "window": {"size": "1s"}, "groupBy": group_by,
                                                    "functions": ["avg", "count"]}]},
                   "outputs": {"anomalies": {"topic": topics["anomalies"]},
                               "aggregates": {"topic": topics["aggregates"]},
                               "deadLetter": {"topic": topics["dlq"]}}}}
    (work / f"{name}.yaml").write_text(yaml.safe_dump(sp))
    return topics


def run(bs: str, work: pathlib.Path, group_by: str, partitions: int, seconds: float, sensors: int) -> list[float]:
    name = f"lat-{group_by}"
    topics = pipeline(work, name, group_by, partitions)
    create_topics(bs, {t: partitions for t in topics.values()})
    seen: list[float] = []
    stop = threading.Event()

    def watch():
        c = Consumer({"bootstrap.servers": bs, "group.id": f"{name}-watch", "isolation.level": "read_committed",
                      "fetch.wait.max.ms": 10, "fetch.queue.backoff.ms": 1})
        c.assign([TopicPartition(topics["aggregates"], p, 0) for p in range(partitions)])
        while not stop.is_set():
            m = c.poll(0.05)
            if m is None or m.error():
                continue
            now = time.time() * 1000
            a = json.loads(m.value())
            end = int(a["id"].rsplit(":", 1)[1]) + 1000
            seen.append(now - end)
        c.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    with worker(RELEASE / "sensorpipe-worker", work / f"{name}.yaml", bs, work / f"{name}.log",
                extra=["--state-topic", topics["state"], "--repartition-topic", topics["repartition"]],
                commit_interval="200ms", snapshot_interval="10s") as (_, port):
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "the worker to be ready")
        p = Producer({"bootstrap.servers": bs, "linger.ms": 1})
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            now = int(time.time() * 1000)
            for s in range(sensors):
                r = {"sensor_id": f"s{s}", "ts": now, "zone": f"z{s % 10}", "temperature": 21.0}
                p.produce(topics["input"], json.dumps(r).encode(), key=r["sensor_id"].encode())
            p.poll(0)
            time.sleep(0.05)
        p.flush(10)
        time.sleep(2)
    stop.set()
    watcher.join()
    # The first seconds include the group's start-up; count the steady state.
    return seen[len(seen) // 5:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--sensors", type=int, default=40)
    args = ap.parse_args()
    work = ROOT / "target" / "bench-merge-latency"
    work.mkdir(parents=True, exist_ok=True)
    with kafka_cluster(work / "kafka", heap="1g") as cluster:
        result = {}
        for group_by in ("sensor", "zone"):
            lat = run(cluster.bootstrap, work, group_by, args.partitions, args.seconds, args.sensors)
            result[group_by] = {"windows": len(lat), "median_ms": round(statistics.median(lat)),
                                "p90_ms": round(statistics.quantiles(lat, n=10)[-1])}
        result["added_by_second_stage_ms"] = result["zone"]["median_ms"] - result["sensor"]["median_ms"]
        print(json.dumps({"partitions": args.partitions, "sensors": args.sensors, **result}))


if __name__ == "__main__":
    main()
