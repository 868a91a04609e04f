"""One-machine mode end to end: `sensorpipe run examples/smart-building.yaml --simulate RATE` with its embedded
broker, two worker processes and the live page. Its outputs equal `replay` of the same input (read back from the
embedded broker, per partition), the terminal prints every anomaly, the page's state, SSE stream and worker
metrics answer, headless Chromium renders zones, values and anomalies (screenshot in target/screenshots/), and
Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from brokers import free_port
from kafka_io import canonical, http_get, read_partitions, replay_partitions, unique_pipeline, wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOPICS = {"input": "temperature_readings", "anomalies": "anomalies", "aggregates": "processed_data",
          "dead_letters": "temperature_readings_dlq"}
# 30 sensors over 6 simulated hours (64 266 readings with every episode kind) at 4 000 readings/s: ~16 s.
RUN = ["--simulate", "4000", "--simulate-for", "6h", "--sensors", "30", "--zones", "5"]


class Run:
    """A running `sensorpipe run`, its terminal output collected as it comes."""

    def __init__(self, binary: pathlib.Path, pipeline: pathlib.Path, work: pathlib.Path, extra: list[str],
                 stdin=subprocess.DEVNULL):
        self.port = free_port()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            [str(binary), "run", str(pipeline), "--listen", f"127.0.0.1:{self.port}", "--log-dir", str(work),
             *extra],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()

    def said(self, pattern: str) -> re.Match | None:
        return next((m for line in list(self.stderr) if (m := re.search(pattern, line))), None)

    def state(self) -> dict:
        status, body = http_get(self.port, "/api/state")
        assert status == 200, (status, body)
        return json.loads(body)

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)


@pytest.fixture(scope="module")
def run(sensorpipe_bin, worker_bin, example_pipeline, tmp_path_factory):
    work = tmp_path_factory.mktemp("local-run")
    r = Run(sensorpipe_bin, example_pipeline, work, RUN)
    try:
        wait_until(lambda: r.said(r"live page: http://") or r.proc.poll() is not None, 30, "the live page address")
        assert r.proc.poll() is None, "".join(r.stderr)
        wait_until(lambda: r.said(r"input finished: \d+ readings") or r.proc.poll() is not None, 120,
                   "the simulation to be produced")
        produced = int(r.said(r"input finished: (\d+) readings").group(1))
        wait_until(lambda: r.state()["stats"]["records_processed"] >= produced and
                   r.state()["stats"]["lag_records"] == 0, 120, "the workers to process every reading")
        r.produced = produced
        r.bootstrap = r.said(r"broker embedded \(([\d.:]+)\)").group(1)
        r.work = work
        yield r
    finally:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_outputs_equal_replay_of_the_same_input(run, worker_bin, example_pipeline, tmp_path):
    inputs = read_partitions(run.bootstrap, TOPICS["input"], 10)
    assert sum(len(v) for v in inputs.values()) == run.produced
    exp = replay_partitions(worker_bin, example_pipeline, inputs, tmp_path)
    got = {kind: [json.loads(m.value()) for ms in read_partitions(run.bootstrap, TOPICS[kind], 3).values()
                  for m in ms] for kind in ("anomalies", "aggregates")}
    for kind in ("anomalies", "aggregates"):
        g, e = canonical(got[kind]), canonical(exp[kind])
        assert e, f"replay produced no {kind}"
        assert g == e, f"{kind}: {len(g)} vs {len(e)} expected; {len(set(g) - set(e))} unexpected, " \
                       f"{len(set(e) - set(g))} missing"
    dead = sum(len(v) for v in read_partitions(run.bootstrap, TOPICS["dead_letters"], 1).values())
    assert dead == len(exp["dead_letters"]) > 0
    # The page saw every output, and the terminal printed every anomaly.
    state = run.state()
    assert state["anomaliesTotal"] == len(got["anomalies"])
    assert state["aggregatesTotal"] == len(got["aggregates"])
    printed = [line for line in run.stdout if re.search(r"\s(FIRING|resolved)\s", line)]
    assert len(printed) == len(got["anomalies"]), printed[:5]
    assert any("FIRING" in line and "overheat" in line for line in printed)


def test_the_page_state_and_the_sse_stream(run):
    state = run.state()
    assert state["pipeline"] == "building-a" and state["delivery"] == "atLeastOnce"
    zones = {w["key"] for w in state["windows"]}
    assert {f"floor-{i}" for i in range(1, 6)} <= zones, zones
    assert state["metrics"][0] == "temperature"
    assert state["stats"]["replicas"] == 2 and state["stats"]["ready_replicas"] == 2
    assert state["anomalies"] and {a["state"] for a in state["anomalies"]} == {"firing", "resolved"}
    # A page gets the state first, then updates (stats every second) without reloading.
    events = []
    with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/events", timeout=10) as stream:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "update" not in events:
            line = stream.readline().decode()
            if line.startswith("event: "):
                events.append(line.removeprefix("event: ").strip())
    assert events[0] == "snapshot" and "update" in events, events


def test_worker_metrics_are_exposed_for_prometheus(run):
    ports = [int(m.group(1)) for line in run.stderr if (m := re.search(r"metrics http://127\.0\.0\.1:(\d+)/", line))]
    assert len(ports) == 2
    total = 0.0
    for port in ports:
        status, text = http_get(port, "/metrics")
        assert status == 200 and "sensorpipe_worker_assigned_partitions" in text
        total += sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                     if l.startswith("sensorpipe_worker_records_consumed_total{")
                     and f'topic="{TOPICS["input"]}"' in l)
    assert total == run.produced


def chromium(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (scripts/test.sh installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1400,1000", *args],
            capture_output=True, text=True, timeout=90)


def test_the_page_renders_zones_values_and_anomalies_in_chromium(run):
    url = f"http://127.0.0.1:{run.port}/"
    dom = chromium("--dump-dom", url).stdout
    state = run.state()
    # Zone cards with their current value, the chart with one line per zone, the anomaly feed.
    for zone in (f"floor-{i}" for i in range(1, 6)):
        assert f'data-zone="{zone}"' in dom, zone
    latest = max(state["windows"], key=lambda w: w["window_end"])
    assert f'{latest["stats"]["temperature"]["avg"]:.1f}' in dom
    assert dom.count('class="anomaly"') == len(state["anomalies"]) > 0
    assert "overheat" in dom and "sensor-silent" in dom
    assert re.search(r'<path d="M[\d.,L]+"', dom), "no chart line"
    shots = ROOT / "target" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "local-run.png"
    shot.unlink(missing_ok=True)
    out = chromium(f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 10_000, out.stderr[-2000:]


def test_ctrl_c_stops_everything_cleanly(run):
    """Last in this module: it ends the shared run."""
    assert len(worker_pids(run.work)) == 2
    assert run.interrupt() == 0, "".join(run.stderr[-20:])
    assert run.said(r"^stopped: \d+ anomalies"), run.stderr[-5:]
    # Worker processes (own process groups) are gone too, and the page is down.
    assert not worker_pids(run.work)
    assert http_get(run.port, "/api/state")[0] == 0


def test_a_bad_manifest_is_refused_with_the_field_to_fix(sensorpipe_bin, example_pipeline, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(example_pipeline.read_text().replace("above: 30", "above: 30\n        below: 5", 1))
    out = subprocess.run([str(sensorpipe_bin), "run", str(bad), "--simulate", "10"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert "invalid pipeline" in out.stderr and "thresholds[0]" in out.stderr, out.stderr
    missing = subprocess.run([str(sensorpipe_bin), "run", str(tmp_path / "nope.yaml")], capture_output=True,
                             text=True, timeout=30)
    assert missing.returncode == 1 and "cannot read" in missing.stderr, missing.stderr


def test_readings_from_standard_input(sensorpipe_bin, worker_bin, example_pipeline, tmp_path):
    """`--input -`: JSON lines piped in are produced keyed by sensor and processed; the input's end is reported."""
    day = tmp_path / "day.jsonl"
    subprocess.run([str(worker_bin), "simulate", "--sensors", "30", "--duration", "6h", "--seed", "3", "-o",
                    str(day)], check=True, capture_output=True)
    lines = sum(1 for line in day.read_text().splitlines() if line.strip())
    with day.open("rb") as piped:
        r = Run(sensorpipe_bin, example_pipeline, tmp_path, ["--input", "-", "--replicas", "1", "--quiet"], piped)
    try:
        wait_until(lambda: r.said(r"input finished: \d+ readings") or r.proc.poll() is not None, 90, "the input")
        assert int(r.said(r"input finished: (\d+) readings").group(1)) == lines, r.stderr
        wait_until(lambda: r.state()["stats"]["records_processed"] == lines, 90, "every line processed")
        state = r.state()
        assert state["anomaliesTotal"] > 0 and state["aggregatesTotal"] > 0
        assert r.interrupt() == 0
    finally:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_on_a_real_broker_with_bootstrap_servers(sensorpipe_bin, kafka, example_pipeline, tmp_path):
    """`--bootstrap-servers`: Apache Kafka instead of the embedded broker. The operator's admin client creates the
    topics with the spec's partitions (replication capped at the cluster's one broker, and said so), workers run
    the pipeline's delivery (exactly-once), anomalies reach the page."""
    from confluent_kafka.admin import AdminClient

    pipe = unique_pipeline(example_pipeline, tmp_path)
    bs = kafka.bootstrap
    r = Run(sensorpipe_bin, pipe.path, tmp_path, ["--bootstrap-servers", bs, *RUN, "--quiet"])
    try:
        wait_until(lambda: r.said(r"input finished: \d+ readings") or r.proc.poll() is not None, 120,
                   "the simulation to be produced")
        assert r.said(r"broker external \(127\.0\.0\.1:\d+\), delivery exactlyOnce"), r.stderr
        assert r.said(rf"created topic {pipe.input} \(10 partitions, replication factor 1: the cluster has 1 "
                      rf"broker, the spec asks 3\)"), r.stderr
        topics = AdminClient({"bootstrap.servers": bs}).list_topics(timeout=10).topics
        internal = f"sensorpipe-default-{pipe.name}"  # internal topics are named after the namespaced group
        for name, partitions in [(pipe.input, 10), (pipe.anomalies, 3), (pipe.aggregates, 3),
                                 (pipe.dead_letters, 1), (f"{internal}-state", 10),
                                 (f"{internal}-repartition", 10)]:
            assert len(topics[name].partitions) == partitions, name
        wait_until(lambda: r.state()["anomaliesTotal"] > 0 and r.state()["aggregatesTotal"] > 0, 120,
                   "outputs on the page")
        assert r.interrupt() == 0, r.stderr[-10:]
    finally:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def worker_pids(log_dir: pathlib.Path) -> list[int]:
    """Worker processes started by the run whose logs go to `log_dir` (their pipeline path is shared, not the
    log dir, so they are found through the files they hold open)."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(str(log_dir) in str(fd.readlink()) for fd in (proc / "fd").iterdir()):
                cmd = (proc / "cmdline").read_bytes()
                if b"sensorpipe-worker" in cmd:
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_dead_worker_is_restarted_and_no_worker_outlives_a_killed_run(sensorpipe_bin, example_pipeline,
                                                                         tmp_path):
    r = Run(sensorpipe_bin, example_pipeline, tmp_path, ["--replicas", "2", "--quiet"])
    try:
        wait_until(lambda: r.said(r"2 workers ready") or r.proc.poll() is not None, 60, "workers ready")
        first = worker_pids(tmp_path)
        assert len(first) == 2, first
        subprocess.run(["kill", "-9", str(first[0])], check=True)
        wait_until(lambda: r.said(r"exited .*restarting it"), 10, "the run to notice")
        wait_until(lambda: r.state()["stats"]["ready_replicas"] == 2 and len(worker_pids(tmp_path)) == 2, 60,
                   "the worker to be back")
        # SIGKILL leaves the run no time to stop its workers: they notice the parent is gone and stop.
        r.proc.kill()
        r.proc.wait()
        wait_until(lambda: not worker_pids(tmp_path), 15, "the workers to stop after their parent")
    finally:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()
