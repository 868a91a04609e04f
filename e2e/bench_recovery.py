"""Recovery-time benchmark (not a test): how long an exactly-once worker killed with SIGKILL takes to be back, on a
local Apache Kafka broker. Input arrives at a steady rate (the simulator, 30 sensors); once the worker has run
past a few snapshots it is killed and a new one started at once, as an orchestrator restarts a pod. Measured
from the new process's start:
- `ready_s`: /readyz answers 200 (it holds its partitions and every restore is done);
- `first_commit_s`: its first committed transaction;
- `caught_up_s`: its lag is back to what it was before the kill (the backlog of the outage processed).
The group's session timeout (6 s here, as in the tests) bounds how soon the dead member's partitions move: the
new worker joins at once, but the group waits for the old member to expire. Run by scripts/bench-recovery.sh;
prints one JSON line with the medians of the runs."""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import time

from brokers import kafka_cluster
from kafka_io import FAST_GROUP, create_topics, http_get, metric, unique_pipeline, wait_until, worker

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
PARTITIONS = 4


def lag(port: int) -> float:
    return metric(http_get(port, "/metrics")[1], "sensorpipe_worker_consumer_lag_records")


def one_run(bs: str, work: pathlib.Path, worker_bin: pathlib.Path, rate: int, run_for: float) -> dict:
    pipe = unique_pipeline(ROOT / "examples" / "smart-building.yaml", work)
    create_topics(bs, {t: PARTITIONS for t in pipe.topics().values()})
    producer = subprocess.Popen([str(worker_bin), "simulate", "--sensors", "30", "--duration", "48h", "--rate",
                                 str(rate), "--topic", pipe.input, "--bootstrap-servers", bs],
                                stdout=subprocess.DEVNULL, stderr=(work / "simulate.log").open("wb"))
    try:
        first = worker(worker_bin, pipe.path, bs, work / "worker-1.log", commit_interval="200ms",
                       snapshot_interval="5s")
        proc, port = first.__enter__()
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "the first worker to be ready")
        time.sleep(run_for)
        lags = []
        for _ in range(10):
            lags.append(lag(port))
            time.sleep(0.2)
        before = statistics.median(lags)
        proc.kill()
        proc.wait()
        first.__exit__(None, None, None)
        started = time.monotonic()
        with worker(worker_bin, pipe.path, bs, work / "worker-2.log", commit_interval="200ms",
                    snapshot_interval="5s") as (_, port2):
            wait_until(lambda: http_get(port2, "/readyz")[0] == 200, 120, "the new worker to be ready")
            ready = time.monotonic() - started
            committed = lambda: metric(http_get(port2, "/metrics")[1], "sensorpipe_worker_transactions_total",
                                       outcome="committed") > 0
            wait_until(committed, 120, "a commit")
            first_commit = time.monotonic() - started
            wait_until(lambda: lag(port2) <= max(before * 1.5, 200), 300, "the new worker to catch up")
            caught_up = time.monotonic() - started
            body = http_get(port2, "/metrics")[1]
            restore_s = metric(body, "sensorpipe_worker_restore_duration_seconds_sum") / max(
                metric(body, "sensorpipe_worker_restore_duration_seconds_count"), 1)
    finally:
        producer.kill()
        producer.wait()
    return {"ready_s": round(ready, 2), "first_commit_s": round(first_commit, 2), "caught_up_s": round(caught_up, 2),
            "lag_before": before, "mean_restore_s": round(restore_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=3000, help="input records per second")
    ap.add_argument("--run-for", type=float, default=20, help="seconds the first worker runs before the kill")
    ap.add_argument("--worker", type=pathlib.Path, default=RELEASE / "sensorpipe-worker")
    args = ap.parse_args()
    work = ROOT / "target" / "bench-recovery"
    work.mkdir(parents=True, exist_ok=True)
    with kafka_cluster(work / "kafka", heap="1g") as cluster:
        runs = [one_run(cluster.bootstrap, work, args.worker, args.rate, args.run_for) for _ in range(args.runs)]
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({"partitions": PARTITIONS, "rate": args.rate,
                      "session_timeout_ms": int(FAST_GROUP["session.timeout.ms"]), "median": medians, "runs": runs}))


if __name__ == "__main__":
    main()
