"""The user journey on one machine: `helm install` (Helm's own engine), `kubectl apply`, `wait`, `get`, `scale`,
`describe`, `delete` — against the local Kubernetes API test double (e2e/kube_double), whose deployment runner starts
each pod as a podman container of the project's images (scripts/images.sh), as the chart's and the operator's
Deployments say, on Apache Kafka (the session's shared broker; no other test uses the example's topic names),
scraped by a real Prometheus.

The tests run in file order and share one installation, like one user's session; each step's kubectl and Helm
output is written to target/journey-report.md."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta

import helm_python as helm
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from kafka_io import committed_offsets, read_partitions, wait_caught_up, wait_merged, wait_until
from kube_cluster import kube_double
from kube_double.containers import LABEL, podman_env
from prometheus_server import instant, prometheus
from test_chart_dashboards import QUERIES, finite, substitute
from verify import assert_exactly, ends_of, expected, outputs_committed

ROOT = pathlib.Path(__file__).resolve().parent.parent
REPORT = ROOT / "target" / "journey-report.md"
NS, SYSTEM = "facilities", "sensorpipe-system"
NAME = "building-a"
INPUT, PARTITIONS = "temperature_readings", 3
OUTPUTS = {"anomalies": "anomalies", "aggregates": "processed_data", "dead_letters": "temperature_readings_dlq"}
GROUP = f"sensorpipe-{NS}-{NAME}"
SP = f"/apis/sensorpipe.io/v1alpha1/namespaces/{NS}/sensorpipelines"
WORKERS = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}-worker"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/sensorpipe-operator"
# Short intervals so that the journey fits in minutes: reconcile every 2 s, leader lease 6 s.
LAG_TARGET = 400
CHART_VALUES = {"replicaCount": 2, "leaderElection": {"leaseDuration": "6s"}, "operator": {"resync": "2s"}}


def manifest(bootstrap: str, **changes) -> dict:
    """The smart-building example on the test broker: 3 partitions, replication 1 (one broker), a fast consumer
    group, autoscaling on 400 records of lag per worker (maxReplicas 10, so the 3 partitions are the bound) with a
    15 s scale-down stabilization. The 2 s averaging window (one of the operator's looks) lets the first look at a
    burst see its whole lag, not a third of it averaged with the quiet looks before. A worker keeps up with the
    simulator well enough that a look at the burst may see only a few thousand records of lag, so the target is
    low enough for that to ask for more workers than partitions."""
    sp = yaml.safe_load((ROOT / "examples" / "smart-building.yaml").read_text())
    sp["metadata"]["namespace"] = NS
    spec = sp["spec"]
    spec["kafka"]["bootstrapServers"] = bootstrap
    spec["input"].update(partitions=PARTITIONS, replicationFactor=1)
    for out in spec["outputs"].values():
        out["replicationFactor"] = 1
    spec["workers"]["kafkaProperties"] = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
    # Idle partitions move on with the wall clock; the comparisons with `replay --no-flush` need outputs that
    # depend on the input only.
    spec["processing"]["eventTime"]["idleTimeout"] = "0s"
    spec["workers"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 10, "lagRecordsTarget": LAG_TARGET,
                                      "window": "2s", "scaleDownStabilization": "15s"}
    spec["deletionPolicy"] = "Delete"
    for path, value in changes.items():
        node = sp
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return sp


class Journey:
    def __init__(self, k, bootstrap: str, prom: int, work: pathlib.Path, worker_bin: pathlib.Path):
        self.k, self.bootstrap, self.prom, self.work, self.worker_bin = k, bootstrap, prom, work, worker_bin
        self.produced = 0

    def step(self, title: str) -> None:
        self.k.note(f"\n## {title}\n")

    def apply(self, obj: dict) -> None:
        self.k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))

    def get(self, path: str) -> dict:
        code, body, _ = self.k.request("GET", path)
        assert code == 200, body
        return body

    def simulate(self, *extra: str, background: bool = False):
        args = [str(self.worker_bin), "simulate", "--sensors", "30", "--topic", INPUT, "--bootstrap-servers",
                self.bootstrap, *extra]
        if background:
            return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(args, check=True, capture_output=True)
        return None

    def worker_pods(self) -> set[str]:
        """Running worker replicas."""
        return {n for n, p in self.k.pods(f"{NAME}-worker").items() if p["running"]}

    def events(self, reason: str) -> list[dict]:
        body = self.get(f"/apis/events.k8s.io/v1/namespaces/{NS}/events")
        return [e for e in body["items"] if e.get("reason") == reason and e["regarding"]["name"] == NAME]

    def condition(self, type_: str) -> dict:
        sp = self.get(f"{SP}/{NAME}")
        return next((c for c in sp.get("status", {}).get("conditions", []) if c["type"] == type_), {})

    def caught_up(self, timeout: float = 240) -> dict[int, list]:
        """Waits until the workers' group has committed all of the input so far; returns that input."""
        inputs = read_partitions(self.bootstrap, INPUT, PARTITIONS)
        wait_caught_up(self.bootstrap, GROUP, INPUT, ends_of(inputs), timeout=timeout)
        wait_merged(self.bootstrap, GROUP, f"{GROUP}-repartition", timeout=timeout)
        return inputs

    def assert_outputs_equal_replay(self, inputs: dict[int, list], pipeline: dict) -> None:
        path = self.work / "pipeline.yaml"
        path.write_text(yaml.safe_dump(pipeline))
        got = outputs_committed(self.bootstrap, OUTPUTS, PARTITIONS)
        assert_exactly(got, expected(self.worker_bin, path, inputs, self.work))


@pytest.fixture(scope="module")
def journey(tmp_path_factory, kafka, worker_bin, container_images):
    work = tmp_path_factory.mktemp("journey")
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("# The user journey against the local Kubernetes API double\n")
    with kube_double(work / "k8s", containers=True, report=REPORT) as k, \
            prometheus(work, k.pods_dir / "targets.json") as prom:
        j = Journey(k, kafka.bootstrap, prom, work, worker_bin)
        try:
            yield j
        finally:
            k.note("\n## Pod logs (tails)\n")
            k.note("```\n" + k.pod_logs()[-20000:] + "\n```")


def test_helm_install_brings_the_operator_up(journey):
    j = journey
    j.step("helm install sensorpipe charts/sensorpipe --namespace sensorpipe-system --create-namespace --wait")
    cfg = helm.Config(kubeconfig_path=str(j.k.kubeconfig), namespace=SYSTEM)
    release = cfg.install(str(ROOT / "charts" / "sensorpipe"), "sensorpipe", CHART_VALUES, namespace=SYSTEM,
                          create_namespace=True, wait="watcher", timeout=120)
    j.k.note(f"```\nNAME: {release['name']}\nSTATUS: {release['status']}\nREVISION: {release['revision']}\n"
             f"NOTES:\n{release['notes']}\n```")
    assert release["status"] == "deployed"
    out = j.k.kubectl("get", "deployments", "-n", SYSTEM).stdout
    assert out.splitlines()[1].split()[:2] == ["sensorpipe-operator", "2/2"], out
    crd = j.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sensorpipelines.sensorpipe.io")
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    holder = wait_until(lambda: j.get(LEASE)["spec"].get("holderIdentity"), 30, "an operator to lead")
    assert holder.startswith("sensorpipe-operator-")


def test_kubectl_explain_shows_the_bounds_and_what_each_field_is(journey):
    j = journey
    j.step("kubectl explain sensorpipeline.spec.processing; kubectl explain sensorpipeline.status.lag")
    processing = j.k.kubectl("explain", "sensorpipeline.spec.processing").stdout
    for field in ("thresholds", "spikes", "aggregations"):
        assert re.search(rf"{field}\s+<\[\]Object>[^<]*At most 64\.", processing), processing
    lag = j.k.kubectl("explain", "sensorpipeline.status.lag.seconds").stdout
    assert "the age of the oldest record not processed yet" in " ".join(lag.split()), lag


def test_apply_then_wait_for_ready_and_get(journey):
    j = journey
    j.step("kubectl apply --server-side -f building-a.yaml; kubectl wait --for=condition=Ready")
    j.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    j.apply(manifest(j.bootstrap))
    j.k.kubectl("wait", "-n", NS, "--for=condition=Ready", f"sp/{NAME}", "--timeout=120s", timeout=130)
    out = j.k.kubectl("get", "sp", "-n", NS).stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "PHASE", "REPLICAS", "DESIRED", "LAG", "AGE"]
    assert out[1].split()[:5] == [NAME, "True", "Running", "1", "1"], out
    admin = AdminClient({"bootstrap.servers": j.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[INPUT].partitions) == PARTITIONS
    internal = f"sensorpipe-{NS}-{NAME}"  # internal topics are named after the namespaced group
    assert {"anomalies", "processed_data", "temperature_readings_dlq", f"{internal}-state",
            f"{internal}-repartition"} <= set(topics), set(topics)
    assert len(topics[f"{internal}-repartition"].partitions) == PARTITIONS


def test_every_pod_runs_as_a_container_as_its_pod_spec_says(journey):
    """Each running pod is a podman container of its Deployment's image, with the user, read-only root, dropped
    capabilities and memory limit of its pod spec (the runner's container mode, kube_double/containers.py)."""
    j = journey
    j.step("podman ps: the operator and worker pods as containers")
    ps = subprocess.run(["podman", "ps", "--filter", f"label={LABEL}={j.k.pods_dir}", "--format",
                         "table {{.Names}} {{.Image}} {{.Status}}"], env=podman_env(), capture_output=True,
                        text=True, check=True).stdout
    j.k.note(f"```\n$ podman ps\n{ps}```")
    pods = {name: p for name, p in j.k.pods().items() if p["running"]}
    assert {p["deployment"] for p in pods.values()} == {"sensorpipe-operator", f"{NAME}-worker"}, pods
    for name, pod in pods.items():
        path = f"/apis/apps/v1/namespaces/{pod['namespace']}/deployments/{pod['deployment']}"
        spec = j.get(path)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        info = json.loads(subprocess.run(["podman", "inspect", pod["container"]], env=podman_env(),
                                         capture_output=True, text=True, check=True).stdout)[0]
        assert info["ImageName"] == container["image"], (name, info["ImageName"])
        run_as = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        assert info["Config"]["User"] == f"{run_as['runAsUser']}:{run_as['runAsGroup']}", name
        assert info["HostConfig"]["ReadonlyRootfs"] is True, name
        assert info["HostConfig"]["CapDrop"] and not info["HostConfig"]["CapAdd"], name
        assert info["State"]["Pid"] == pod["pid"], name
        memory = container["resources"]["limits"]["memory"]
        assert info["HostConfig"]["Memory"] == int(memory.removesuffix("Mi")) * 2**20, (name, memory)


def test_a_burst_of_readings_scales_up_and_outputs_equal_replay(journey):
    j = journey
    j.step("simulated sensors: a burst of a day of readings from 30 sensors")
    # ~257 000 records at once: far more lag than one worker clears between two of the operator's 2 s looks.
    j.simulate("--duration", "24h")
    wait_until(lambda: j.events("ScaleUp"), 60, "a ScaleUp event")
    inputs = j.caught_up()
    ups = [re.search(r"average lag (\d+) records .*: (\d+) → (\d+) workers", e["note"]) for e in j.events("ScaleUp")]
    assert ups and all(ups), [e["note"] for e in j.events("ScaleUp")]
    # Some decision asked for more workers than partitions, and none went beyond them.
    assert max(-(-int(m.group(1)) // LAG_TARGET) for m in ups) > PARTITIONS, [m.group(0) for m in ups]
    assert max(int(m.group(3)) for m in ups) == PARTITIONS, [m.group(0) for m in ups]
    j.assert_outputs_equal_replay(inputs, manifest(j.bootstrap))
    j.k.kubectl("describe", "sp", "-n", NS, NAME)


def test_without_lag_it_scales_back_down_after_the_stabilization_window(journey):
    j = journey
    j.step("lag gone: scale down after scaleDownStabilization (15 s)")
    wait_until(lambda: j.get(WORKERS)["spec"]["replicas"] == 1, 90, "the workers to scale down to 1", 1)
    # It may step down (3 → 2 → 1) while the last of the burst is committed. kube-runtime's recorder folds events of
    # one reason into a series that keeps the first note, so the note names the first step down.
    down = j.events("ScaleDown")
    assert down and any(re.search(r"average lag \d+ records .*: 3 → [12] workers", e["note"]) for e in down), down
    # Not before the stabilization window: 15 s of recommendations for 1 after the last one for 3.
    last_up = max(datetime.fromisoformat(e["eventTime"]) for e in j.events("ScaleUp"))
    assert min(datetime.fromisoformat(e["eventTime"]) for e in down) - last_up >= timedelta(seconds=15), down
    j.k.kubectl("get", "events", "-n", NS)


def test_an_invalid_spec_is_rejected_or_reported_as_degraded(journey):
    j = journey
    j.step("an invalid spec: refused by the CRD schema, or reported by the operator as Degraded")
    bad_type = manifest(j.bootstrap, **{"spec.input.partitions": "three"})
    p = j.k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(bad_type), check=False)
    assert p.returncode != 0 and "spec.input.partitions" in p.stderr, p.stderr
    bad = manifest(j.bootstrap)
    bad["spec"]["processing"]["thresholds"][0]["metric"] = "co2"
    j.apply(bad)
    degraded = wait_until(lambda: (c := j.condition("Degraded")).get("status") == "True" and c, 60, "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "co2" in degraded["message"], degraded
    described = j.k.kubectl("describe", "sp", "-n", NS, NAME).stdout
    assert "InvalidSpec" in described and "co2" in described, described
    j.apply(manifest(j.bootstrap))
    wait_until(lambda: j.condition("Degraded").get("status") == "False" and j.condition("Ready").get("status")
               == "True", 60, "the pipeline to recover")


def test_prometheus_scrapes_operator_and_workers_and_the_dashboards_have_data(journey):
    """Runs after the invalid spec, so the reconcile-errors panel has its InvalidSpec series (a pipeline that never
    failed has none, and Grafana shows "No data" there)."""
    j = journey
    j.step("Prometheus scrapes the operator and the workers; every dashboard query returns data")
    # Readings go on after the burst's 24 simulated hours (earlier event times would all be late).
    producer = j.simulate("--start", "2023-01-08T00:00:00Z", "--duration", "2h", "--rate", "800", "--seed", "7",
                          background=True)
    try:
        wait_until(lambda: instant(j.prom, f'up{{namespace="{SYSTEM}"}} == 1') and
                   instant(j.prom, f'up{{namespace="{NS}"}} == 1'), 60, "operator and worker scrapes")
        try:
            wait_until(lambda: instant(j.prom, "sensorpipe_worker_zone_aggregate"), 90, "zone series")
        except AssertionError as e:
            seen = {q: instant(j.prom, q) for q in (
                "sensorpipe_worker_records_consumed_total", "sensorpipe_worker_aggregates_total",
                "sensorpipe_worker_consumer_lag_records", "sensorpipe_worker_transactions_total",
                "sensorpipe_worker_assigned_partitions")}
            raise AssertionError(f"{e}; the workers report {seen}") from None
        time.sleep(6)
        results = {(s, t, e): instant(j.prom, substitute(e)) for s, t, e in QUERIES}
    finally:
        producer.kill()
        producer.wait()
    empty = [f"{s}: {t}: {e}" for (s, t, e), r in results.items() if not r or not finite(r)]
    j.k.note(f"{len(results)} dashboard queries, {len(results) - len(empty)} with finite data")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_at_steady_state_the_operator_reconciles_at_its_timer_rate(journey):
    """With readings flowing, lag and throughput change at every look, and every status write changes the
    watched object: a status write must not trigger the next reconcile, so the rate stays at the resync timer's
    (2 s here) and the status is still refreshed by the timer. Before, each write triggered a reconcile. A change
    of the workers' Deployment (a scale step, a pod turning ready) rightly triggers reconciles, so the span
    measured is one in which the Deployment did not change (up to four 20 s spans are tried)."""
    j = journey
    j.step("steady state with readings flowing: reconciles at the 2 s timer's rate, status fresh")
    # 100 readings/s: lag stays far below the autoscaler's target, so the workers are not resized meanwhile.
    producer = j.simulate("--start", "2023-01-08T02:00:00Z", "--duration", "6h", "--rate", "100", "--seed", "9",
                          background=True)

    def reconciles() -> float:
        return sum(float(r["value"][1]) for r in instant(j.prom, "sensorpipe_operator_reconciles_total"))

    def deployment() -> tuple:
        d = j.get(WORKERS)
        return d["metadata"]["resourceVersion"], d["metadata"].get("generation")
    spans = []
    try:
        wait_until(lambda: (j.get(f"{SP}/{NAME}")["status"].get("lag") or {}).get("throughput"), 60,
                   "a throughput in the status")
        for _ in range(4):
            time.sleep(2)  # scrapes every second: the count at the start of the span is in
            before, workers, started = reconciles(), deployment(), time.monotonic()
            seen = set()
            while time.monotonic() - started < 20:
                lag = j.get(f"{SP}/{NAME}")["status"]["lag"]
                seen.add((lag.get("records"), lag.get("throughput")))
                time.sleep(1)
            steady = deployment() == workers
            time.sleep(2)
            spans.append((reconciles() - before, time.monotonic() - started - 2, len(seen), steady))
            if steady:
                break
    finally:
        producer.kill()
        producer.wait()
    j.k.note("reconciles with readings flowing (timer: every 2 s): " + "; ".join(
        f"{c:.0f} in {e:.0f} s{'' if st else ' (the Deployment changed)'}" for c, e, _, st in spans))
    count, elapsed, states, steady = spans[-1]
    assert steady, f"the workers' Deployment changed in every span: {spans}"
    assert count <= elapsed / 2 + 4, f"{count} reconciles in {elapsed:.0f} s: status writes trigger reconciles"
    assert count >= 4, f"only {count} reconciles in {elapsed:.0f} s: the timer does not run"
    assert states >= 3, f"the status' lag and throughput hardly changed in {elapsed:.0f} s: {spans}"


def test_killing_the_leading_operator_hands_over_and_loses_nothing(journey):
    j = journey
    j.step("kill -9 the leading operator while readings arrive; the other replica takes the lease")
    before = j.get(LEASE)["spec"]
    producer = j.simulate("--start", "2023-01-08T08:00:00Z", "--duration", "3h", "--rate", "3000", "--seed", "11",
                          background=True)
    try:
        pod = before["holderIdentity"]
        os.kill(j.k.pods()[pod]["pid"], signal.SIGKILL)
        after = wait_until(lambda: (s := j.get(LEASE)["spec"]).get("holderIdentity") not in (None, pod) and s,
                           60, "another operator to take the lease")
        assert after["leaseTransitions"] > before.get("leaseTransitions", 0)
    finally:
        producer.wait(timeout=120)
    inputs = j.caught_up()
    j.assert_outputs_equal_replay(inputs, manifest(j.bootstrap))
    j.k.kubectl("get", "lease", "-n", SYSTEM)
    assert j.condition("Ready").get("status") == "True"


def test_kubectl_scale_works_when_autoscaling_is_off(journey):
    j = journey
    j.step("autoscaling off (kubectl patch); kubectl scale sp --replicas=2")
    running = j.worker_pods()
    # A JSON patch, not a re-apply without the field: the API server would keep autoscaling's defaulted
    # sub-fields, which nobody owns, and the schema would then miss maxReplicas.
    j.k.kubectl("patch", "-n", NS, f"sp/{NAME}", "--type=json",
                "-p", '[{"op": "remove", "path": "/spec/workers/autoscaling"}]')
    j.k.kubectl("scale", "-n", NS, f"sp/{NAME}", "--replicas=2")
    wait_until(lambda: len(j.worker_pods()) == 2 and j.get(WORKERS).get("status", {}).get("readyReplicas") == 2,
               90, "two ready workers", 1)
    # The status converges over a reconcile or two after the Deployment does.
    wait_until(lambda: (st := j.get(f"{SP}/{NAME}")["status"]).get("readyReplicas") == 2
               and st.get("desiredReplicas") == 2 and j.condition("Ready").get("status") == "True", 60,
               "the status to say 2 of 2, Ready")
    # Pod names carry the template hash: a restart for a new template would show a new one.
    assert {p.rsplit("-", 2)[1] for p in j.worker_pods()} == {p.rsplit("-", 2)[1] for p in running}, \
        "scaling did not change the pod template (no worker restarted)"
    out = j.k.kubectl("get", "sp", "-n", NS).stdout.splitlines()
    assert out[1].split()[3:5] == ["2", "2"], out


def test_a_spec_change_rolls_the_workers(journey):
    j = journey
    j.step("a spec change (a Kafka client property) rolls the workers")
    before = j.worker_pods()
    generation = j.get(f"{SP}/{NAME}")["metadata"]["generation"]
    changed = manifest(j.bootstrap, **{"spec.workers.autoscaling": None})
    changed["spec"]["workers"]["kafkaProperties"]["linger.ms"] = "10"
    j.apply(changed)
    wait_until(lambda: (pods := j.worker_pods()) and not pods & before and len(pods) == 2, 120,
               "every worker to be replaced", 1)
    j.k.kubectl("rollout", "status", "-n", NS, f"deployment/{NAME}-worker", "--timeout=120s", timeout=130)
    wait_until(lambda: j.get(f"{SP}/{NAME}")["status"].get("observedGeneration") == generation + 1
               and j.condition("Ready").get("status") == "True", 60, "Ready at the new generation")
    inputs = j.caught_up()
    j.assert_outputs_equal_replay(inputs, changed)


def test_delete_with_retain_keeps_topics_and_with_delete_removes_them(journey):
    j = journey
    j.step("kubectl delete sp: deletionPolicy Retain keeps the Kafka topics, Delete removes topics and group")
    admin = AdminClient({"bootstrap.servers": j.bootstrap})
    kept = manifest(j.bootstrap, **{"metadata.name": "building-b", "spec.input.topic": "b_readings",
                                    "spec.deletionPolicy": "Retain", "spec.workers.autoscaling": None})
    for out in kept["spec"]["outputs"].values():
        out["topic"] = "b_" + out["topic"]
    j.apply(kept)
    j.k.kubectl("wait", "-n", NS, "--for=condition=Ready", "sp/building-b", "--timeout=120s", timeout=130)
    kept_group = f"sensorpipe-{NS}-building-b"
    subprocess.run([str(j.worker_bin), "simulate", "--sensors", "30", "--duration", "3h", "--topic", "b_readings",
                    "--bootstrap-servers", j.bootstrap], check=True, capture_output=True)
    wait_until(lambda: max(committed_offsets(j.bootstrap, kept_group, "b_readings", PARTITIONS).values()) > 0, 90,
               "building-b's workers to commit")
    j.k.kubectl("delete", "-n", NS, "sp/building-b", "--timeout=60s", timeout=70)
    topics = set(admin.list_topics(timeout=10).topics)
    assert {"b_readings", "b_anomalies", "b_processed_data", f"{kept_group}-state"} <= topics, topics
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    assert kept_group in groups, groups

    assert committed_offsets(j.bootstrap, GROUP, INPUT, PARTITIONS)[0] >= 0
    j.k.kubectl("delete", "-n", NS, f"sp/{NAME}", "--timeout=60s", timeout=70)
    wait_until(lambda: not ({INPUT, "anomalies", "processed_data", "temperature_readings_dlq", f"{NAME}-state"}
                            & set(admin.list_topics(timeout=10).topics)), 30, "the topics to be deleted")
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    assert GROUP not in groups, groups
    # The garbage collector removes the owned Deployment in the background, as in a cluster.
    wait_until(lambda: j.k.request("GET", WORKERS)[0] == 404, 30, "the worker Deployment to be collected")
    wait_until(lambda: not j.worker_pods(), 60, "the worker processes to stop")
    j.k.kubectl("get", "sp,deployments", "-A")


# Grants the journey's log cannot show, each with the code path that needs it.
UNEXERCISED = {
    ("", "secrets", "get"): "Kafka credentials of a pipeline with spec.kafka.sasl or tls (controller/deref.rs)",
    ("monitoring.coreos.com", "servicemonitors", "create"): "a cluster that serves ServiceMonitors (build/)",
    ("monitoring.coreos.com", "servicemonitors", "patch"): "the same",
    ("monitoring.coreos.com", "servicemonitors", "delete"): "the same, with --worker-service-monitors false",
    ("coordination.k8s.io", "leases", "update"): "kube-lease-manager replacing a Lease whose holder expired",
    # Server-side apply of an object that does not exist yet: the API server authorizes create as well as
    # patch (the API double does not check RBAC, so its log shows only the PATCH).
    **{(g, r, "create"): "server-side apply creating the object" for g, r in
       [("apps", "deployments"), ("", "configmaps"), ("", "services"), ("policy", "poddisruptionbudgets")]},
}


def test_the_chart_grants_the_operator_exactly_what_it_calls(journey):
    """Every request the operators made during the journey is granted by the chart's ClusterRole or leader
    election Role, and every grant was used — or is listed in UNEXERCISED with the code path that needs it."""
    j = journey
    j.step("RBAC: the chart grants the operator exactly the calls it makes")
    rules = j.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/sensorpipe-operator")["rules"]
    rules += j.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{SYSTEM}/roles/"
                   "sensorpipe-operator-leader-election")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    used = {call[1:] for call in j.k.operator_calls()}
    assert used - granted == set(), f"calls the chart does not grant: {sorted(used - granted)}"
    unused = granted - used - set(UNEXERCISED)
    assert unused == set(), f"grants no call used (or list them in UNEXERCISED with their code path): {unused}"
    assert set(UNEXERCISED) <= granted, sorted(set(UNEXERCISED) - granted)
    j.k.note(f"the operators made {len(used)} kinds of calls, all granted; {len(UNEXERCISED)} grants are for paths "
             "the journey does not take")
