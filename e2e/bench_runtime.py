"""Runtime benchmark (not a test): N simulated readings on a local Apache Kafka broker (KRaft, one node), then the same data read by a
count-only consumer and processed by `sensorpipe-worker run` (consume → engine → produce, exactly-once), one after
the other in the same run. Prints rates, the ratio, CPU seconds and peak RSS. Run by scripts/bench-runtime.sh."""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import subprocess
import time

import yaml

from brokers import kafka_cluster
from kafka_io import committed_offsets, create_topics, http_get, metric, worker

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and peak RSS in bytes of a live process."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    hwm = next(int(line.split()[1]) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    return ticks / 100.0, hwm * 1024


def watermarks(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)]
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=1000)
    ap.add_argument("--duration", default="12h", help="simulated span (records = sensors × span / 10 s)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--delivery", default="exactlyOnce")
    ap.add_argument("--group-by", default="zone", choices=["zone", "sensor"],
                    help="the example's aggregation grouped by zone (two stages) or by sensor (one stage)")
    ap.add_argument("--worker", type=pathlib.Path, default=RELEASE / "sensorpipe-worker",
                    help="the worker binary (e.g. a build of an earlier commit, to compare in one session)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes in the group")
    ap.add_argument("--threads", type=int, default=0, help="the worker's --threads (0: one per CPU)")
    args = ap.parse_args()
    w = args.worker
    work = ROOT / "target" / "bench-runtime"
    work.mkdir(parents=True, exist_ok=True)
    sp = yaml.safe_load((ROOT / "examples" / "smart-building.yaml").read_text())
    sp["spec"]["processing"]["aggregations"][0]["groupBy"] = args.group_by
    pipeline = work / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(sp, sort_keys=False))
    with kafka_cluster(work / "kafka", heap="1g") as cluster:
        bs = cluster.bootstrap
        create_topics(bs, {"temperature_readings": args.partitions,
                           **{t: args.partitions for t in ("anomalies", "processed_data",
                                                           "temperature_readings_dlq", "building-a-state",
                                                           "building-a-repartition")}})
        sim = subprocess.run([str(w), "simulate", "--sensors", str(args.sensors), "--duration", args.duration,
                              "--topic", "temperature_readings", "--bootstrap-servers", bs],
                             check=True, capture_output=True, text=True)
        n = int(sim.stderr.split("produced ")[1].split()[0])
        count = subprocess.run([str(RELEASE / "examples" / "count_consumer"), bs, "temperature_readings", str(n)],
                               check=True, capture_output=True, text=True)
        baseline = json.loads(count.stdout)
        extra = ["--delivery", args.delivery, *(["--threads", str(args.threads)] if args.threads else [])]
        with contextlib.ExitStack() as stack:
            workers = [stack.enter_context(worker(w, pipeline, bs, work / f"worker-{i}.log", extra=extra,
                                                  commit_interval="200ms", snapshot_interval="10s"))
                       for i in range(args.workers)]
            first = last = None
            consumed = 0.0
            deadline = time.monotonic() + 600
            # With several workers, records redone after the first rebalance count twice: the rate is a little high.
            while consumed < n and time.monotonic() < deadline:
                for i, (proc, _) in enumerate(workers):
                    if proc.poll() is not None:
                        raise SystemExit(f"worker exited with {proc.returncode}; log: {work / f'worker-{i}.log'}")
                consumed = sum(metric(http_get(port, "/metrics")[1], "sensorpipe_worker_records_consumed_total",
                                      topic="temperature_readings") for _, port in workers)
                now = time.monotonic()
                if consumed > 0 and first is None:
                    first = (now, consumed)
                last = (now, consumed)
                time.sleep(0.05)
            stats = [proc_stats(proc.pid) for proc, _ in workers]
            cpu, rss = sum(c for c, _ in stats), max(r for _, r in stats)
            # Caught up means committed, not only consumed: the group's offsets reach every partition's end.
            ends = {p: hi for p, (_, hi) in enumerate(
                watermarks(bs, "temperature_readings", args.partitions))}
            caught_up_after = None
            start = time.monotonic()
            while time.monotonic() - start < 120:
                done = committed_offsets(bs, "sensorpipe-building-a", "temperature_readings", args.partitions)
                if all(done.get(p, -1) >= end for p, end in ends.items()):
                    caught_up_after = round(time.monotonic() - start, 2)
                    break
                time.sleep(0.2)
            texts = [http_get(port, "/metrics")[1] for _, port in workers]
            commits = sum(metric(t, "sensorpipe_worker_commit_duration_seconds_count") for t in texts)
            commit_seconds = sum(metric(t, "sensorpipe_worker_commit_duration_seconds_sum") for t in texts)
        rate = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
        print(json.dumps({
            "records": n, "partitions": args.partitions, "sensors": args.sensors, "delivery": args.delivery,
            "group_by": args.group_by,
            "count_only_records_per_second": baseline["records_per_second"],
            "worker_records_per_second": round(rate),
            "ratio": round(rate / baseline["records_per_second"], 3),
            "committed_to_the_end_after_s": caught_up_after,
            "commits": int(commits), "mean_commit_ms": round(1000 * commit_seconds / max(commits, 1), 1),
            "workers": args.workers, "worker_cpu_seconds": cpu,
            "cpu_seconds_per_million": round(cpu / n * 1e6, 2), "worker_peak_rss_mib": round(rss / 2**20, 1),
        }))


if __name__ == "__main__":
    main()
