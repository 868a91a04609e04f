"""The Kafka runtime end to end on Apache Kafka: simulated readings on a topic, real `sensorpipe-worker run`
processes, outputs read back by a plain read_committed consumer and compared with `replay` of the same input, per
partition (each partition has its own engine).

A stream that has not ended has not emitted its open windows; the comparison is with `replay --no-flush`.
Every test runs on the session's shared broker with a pipeline of its own (unique topics and group); the outage
test runs on a broker of its own behind a TCP proxy.

Diagnosis: with SENSORPIPE_E2E_DUMP=FILE, the committed outputs are listed there with partition and offset, to
tell a duplicate from a wrong value (a bad restore).
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import time

import pytest

from brokers import kafka_cluster
from kafka_io import (Pipeline, committed_once, create_topics, http_get, metric, read_partitions, unique_pipeline,
                      wait_caught_up, wait_merged, wait_until, worker)
from proxy import TcpProxy
from verify import assert_exactly, assert_none_lost, ends_of, expected, outputs_committed

# 30 sensors, 6 simulated hours: 64 266 records with every episode kind, dead-letter reason and late record.
SIMULATION = ["--sensors", "30", "--duration", "6h"]
PARTITIONS = 4


def simulate(worker_bin, bootstrap: str, topic: str, rate: float | None = None, background: bool = False):
    args = [str(worker_bin), "simulate", *SIMULATION, "--topic", topic, "--bootstrap-servers", bootstrap]
    if rate:
        args += ["--rate", str(rate)]
    if background:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(args, check=True, capture_output=True)
    return None


def create_pipeline_topics(bootstrap: str, pipe: Pipeline, partitions: int = PARTITIONS,
                           replication_factor: int = 1) -> None:
    create_topics(bootstrap, {t: partitions for t in pipe.topics().values()}, replication_factor)


@pytest.fixture
def pipe(example_pipeline, tmp_path) -> Pipeline:
    """The example pipeline with topics and a group of this test's own."""
    return unique_pipeline(example_pipeline, tmp_path)


def test_simulated_input_through_the_worker_equals_replay(worker_bin, kafka, pipe, tmp_path):
    """simulate → topic → worker (exactly-once) → output topics; outputs equal replay, dead letters carry the reason
    header and the original payload, /metrics and /readyz report what happened."""
    bs = kafka.bootstrap
    create_pipeline_topics(bs, pipe)
    simulate(worker_bin, bs, pipe.input)
    inputs = read_partitions(bs, pipe.input, PARTITIONS)
    total = sum(len(v) for v in inputs.values())
    with worker(worker_bin, pipe.path, bs, tmp_path / "worker.log") as (proc, port):
        wait_caught_up(bs, pipe.group, pipe.input, ends_of(inputs), timeout=180)
        wait_merged(bs, pipe.group, pipe.repartition, timeout=180)
        assert http_get(port, "/readyz")[0] == 200
        assert http_get(port, "/healthz")[0] == 200
        metrics = http_get(port, "/metrics")[1]
    assert proc.returncode == 0, "worker did not stop cleanly on SIGTERM"
    got = outputs_committed(bs, pipe.topics(), PARTITIONS)
    assert_exactly(got, expected(worker_bin, pipe.path, inputs, tmp_path))
    reasons = {d["reason"] for d in got["dead_letters"]}
    assert reasons == {"malformed_json", "missing_field", "wrong_type", "non_finite", "timestamp_out_of_range",
                       "late"}, reasons
    assert metric(metrics, "sensorpipe_worker_records_consumed_total", topic=pipe.input) == total
    for reason in reasons:
        assert metric(metrics, "sensorpipe_worker_dead_letters_total", reason=reason) == \
            sum(1 for d in got["dead_letters"] if d["reason"] == reason)
    check_metrics_exposition(metrics)


DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def check_metrics_exposition(text: str) -> None:
    """Every metric in docs/metrics.md is exported, nothing undocumented is, and promtool finds no lint problem."""
    import re
    documented = set(re.findall(r"^\| `(sensorpipe_worker_[a-z_]+)`", DOCS.read_text(), re.M))
    exported = set(re.findall(r"^# TYPE (sensorpipe_worker_[a-z_]+) ", text, re.M))
    assert documented == exported, f"undocumented: {exported - documented}; not exported: {documented - exported}"
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr


def kill9_loop(worker_bin, pipe: Pipeline, bs: str, work: pathlib.Path, extra, kills: int) -> dict[int, list]:
    """Runs one worker while a producer writes at a rate; kills it with SIGKILL `kills` times mid-run, restarting
    it each time; then lets the last one finish. Returns the input."""
    # 64 266 records at 1 500/s take ~43 s: longer than three kill cycles, so every kill lands while input still
    # arrives. (At 8 000/s a fast worker had consumed everything before the second kill.)
    producer = simulate(worker_bin, bs, pipe.input, rate=1500, background=True)
    procs = []
    try:
        for i in range(kills + 1):
            ctx = worker(worker_bin, pipe.path, bs, work / f"worker-{i}.log", extra=extra)
            proc, port = ctx.__enter__()
            procs.append((ctx, proc))
            if i < kills:
                # Wait until it processes (so the kill lands mid-stream, with open transactions), then kill.
                wait_until(lambda: committed_once(port), 60, "the worker to commit")
                time.sleep(1.5)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert producer.wait(timeout=120) == 0
        inputs = read_partitions(bs, pipe.input, PARTITIONS)
        wait_caught_up(bs, pipe.group, pipe.input, ends_of(inputs), timeout=240)
        wait_merged(bs, pipe.group, pipe.repartition, timeout=240)
        return inputs
    finally:
        if producer.poll() is None:
            producer.kill()
        for ctx, _ in procs:
            ctx.__exit__(None, None, None)


def test_a_missing_topic_is_named_and_the_worker_exits(worker_bin, kafka, pipe, tmp_path):
    """No state topic: the worker waits a little (a topic created a moment ago may not have reached every broker),
    then exits non-zero naming the topic and what to do."""
    topics = pipe.topics()
    create_topics(kafka.bootstrap, {t: PARTITIONS for k, t in topics.items() if k != "state"})
    with worker(worker_bin, pipe.path, kafka.bootstrap, tmp_path / "worker.log") as (proc, _):
        assert proc.wait(timeout=60) != 0
    log = (tmp_path / "worker.log").read_text()
    assert f"topic {topics['state']} does not exist on {kafka.bootstrap}; create it" in log, log[-2000:]
    assert "topic not in the cluster metadata yet; waiting" in log, log[-2000:]


def test_kill_9_repeatedly_exactly_once(worker_bin, kafka, pipe, tmp_path):
    """SIGKILL the worker three times during a run; the committed outputs equal replay exactly —
    nothing lost, nothing twice."""
    create_pipeline_topics(kafka.bootstrap, pipe)
    inputs = kill9_loop(worker_bin, pipe, kafka.bootstrap, tmp_path, ["--delivery", "exactlyOnce"], kills=3)
    got = outputs_committed(kafka.bootstrap, pipe.topics(), PARTITIONS)
    assert_exactly(got, expected(worker_bin, pipe.path, inputs, tmp_path))


def test_kill_9_repeatedly_at_least_once_loses_nothing(worker_bin, kafka, pipe, tmp_path):
    """At-least-once: after three SIGKILLs every output of replay is there (repeats allowed)."""
    create_pipeline_topics(kafka.bootstrap, pipe)
    inputs = kill9_loop(worker_bin, pipe, kafka.bootstrap, tmp_path, ["--delivery", "atLeastOnce"], kills=3)
    got = outputs_committed(kafka.bootstrap, pipe.topics(), PARTITIONS)
    assert_none_lost(got, expected(worker_bin, pipe.path, inputs, tmp_path))


def test_rebalance_one_three_one_exactly_once(worker_bin, kafka, pipe, tmp_path):
    """1 worker, then 3, then 1 again while input arrives; outputs equal replay exactly."""
    bs = kafka.bootstrap
    create_pipeline_topics(bs, pipe)
    producer = simulate(worker_bin, bs, pipe.input, rate=6000, background=True)
    first = worker(worker_bin, pipe.path, bs, tmp_path / "w0.log")
    proc0, port0 = first.__enter__()
    extra = []
    try:
        wait_until(lambda: committed_once(port0), 60, "the first worker to commit")
        extra = [worker(worker_bin, pipe.path, bs, tmp_path / f"w{i}.log") for i in (1, 2)]
        ports = [ctx.__enter__()[1] for ctx in extra]

        def spread():
            owned = [assigned(p) for p in [port0, *ports]]
            return all(n >= 1 for n in owned) and sum(owned) == PARTITIONS
        wait_until(spread, 60, "the partitions to spread over three workers")
        time.sleep(2)
        for ctx in extra:
            ctx.__exit__(None, None, None)
        extra = []
        wait_until(lambda: assigned(port0) == PARTITIONS, 60, "the first worker to own all partitions")
        assert producer.wait(timeout=120) == 0
        inputs = read_partitions(bs, pipe.input, PARTITIONS)
        try:
            wait_caught_up(bs, pipe.group, pipe.input, ends_of(inputs), timeout=240)
            wait_merged(bs, pipe.group, pipe.repartition, timeout=240)
        except AssertionError as e:
            lag = [line for line in http_get(port0, "/metrics")[1].splitlines()
                   if line.startswith(("sensorpipe_worker_consumer_lag_records{", "sensorpipe_worker_transactions"))]
            raise AssertionError(f"{e}; the remaining worker reports: {lag}") from None
        rebalances = http_get(port0, "/metrics")[1]
    finally:
        for ctx in extra:
            ctx.__exit__(None, None, None)
        first.__exit__(None, None, None)
        if producer.poll() is None:
            producer.kill()
    got = outputs_committed(bs, pipe.topics(), PARTITIONS)
    assert_exactly(got, expected(worker_bin, pipe.path, inputs, tmp_path))
    assert metric(rebalances, "sensorpipe_worker_rebalances_total", kind="revoke") >= 1


def assigned(port: int) -> int:
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith("sensorpipe_worker_assigned_partitions{"):
            return int(float(line.split()[-1]))
    return 0


def test_broker_outage_the_worker_recovers_by_itself_exactly_once(worker_bin, pipe, tmp_path):
    """A broker of its own behind a TCP proxy: the connection is cut for 15 s mid-run and restored; the worker
    finishes the input without a restart, exactly-once (outputs equal replay)."""
    with TcpProxy() as proxy, kafka_cluster(tmp_path / "kafka", advertised_port=proxy.port) as cluster:
        direct = cluster.bootstrap
        proxy.target = direct
        bs = f"127.0.0.1:{proxy.port}"
        create_pipeline_topics(direct, pipe)
        simulate(worker_bin, direct, pipe.input)
        inputs = read_partitions(direct, pipe.input, PARTITIONS)
        with worker(worker_bin, pipe.path, bs, tmp_path / "worker.log") as (proc, port):
            wait_until(lambda: committed_once(port), 60, "the worker to commit")
            proxy.cut()
            time.sleep(15)
            assert proc.poll() is None, "the worker exited during the outage"
            proxy.restore()
            wait_caught_up(direct, pipe.group, pipe.input, ends_of(inputs), timeout=180)
            wait_merged(direct, pipe.group, pipe.repartition, timeout=180)
            errors = http_get(port, "/metrics")[1]
        got = outputs_committed(direct, pipe.topics(), PARTITIONS)
        assert_exactly(got, expected(worker_bin, pipe.path, inputs, tmp_path))
    assert metric(errors, "sensorpipe_worker_kafka_errors_total", kind="transport") > 0
