"""A namespaced install for a shared cluster: `helm install --set watchNamespaces={facilities}` against the local
Kubernetes API double, whose runner starts the operator and worker pods as podman containers of the project's
images, on the session's Apache Kafka broker: one pipeline through its SASL_SSL listener (SCRAM-SHA-512), one
through its SSL listener with a client certificate (mutual TLS), both verifying the broker by its own CA, with
credentials, certificate and key from Secrets, mounted as the kubelet mounts them.

The operator runs the pipelines of the namespace it watches, reading that namespace's Secrets, ignores a pipeline
elsewhere, and every request it makes is one the chart's Roles grant: nothing is listed, watched or read
cluster-wide, so the Secrets of other namespaces are out of its reach."""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import urllib.request
import uuid

import helm_python as helm
import pytest
import yaml
from confluent_kafka import Producer

from kafka_io import produce_reading, wait_caught_up, wait_until
from kube_cluster import kube_double

ROOT = pathlib.Path(__file__).resolve().parent.parent
WATCHED, OTHER, SYSTEM = "facilities", "warehouse", "sensorpipe-system"
START = 1673049600


def pipeline(kafka, namespace: str, tag: str, mutual_tls: bool = False) -> dict:
    """The smart-building example on the broker's SASL_SSL listener (or, with `mutual_tls`, its SSL listener with
    the client certificate), topics and name unique to this test."""
    sp = yaml.safe_load((ROOT / "examples" / "smart-building.yaml").read_text())
    sp["metadata"] = {"name": f"building-{tag}", "namespace": namespace}
    spec = sp["spec"]
    ref = {"name": "kafka-credentials"}
    if mutual_tls:
        spec["kafka"] = {"bootstrapServers": kafka.ssl_bootstrap,
                         "tls": {"caCert": {**ref, "key": "ca.crt"}, "clientCert": {**ref, "key": "tls.crt"},
                                 "clientKey": {**ref, "key": "tls.key"}}}
    else:
        spec["kafka"] = {"bootstrapServers": kafka.sasl_bootstrap,
                         "tls": {"caCert": {**ref, "key": "ca.crt"}},
                         "sasl": {"mechanism": "SCRAM-SHA-512", "username": {**ref, "key": "username"},
                                  "password": {**ref, "key": "password"}}}
    spec["input"].update(topic=f"readings-{tag}", partitions=1, replicationFactor=1)
    for kind, out in spec["outputs"].items():
        out.update(topic=f"{kind}-{tag}", replicationFactor=1)
    spec["processing"]["eventTime"]["idleTimeout"] = "0s"
    spec["workers"] = {"delivery": "exactlyOnce", "replicas": 1, "kafkaProperties": {"session.timeout.ms": "6000"}}
    spec["deletionPolicy"] = "Delete"
    return sp


def secret(kafka, namespace: str) -> dict:
    data = {"username": "sensorpipe", "password": kafka.users["sensorpipe"],
            "ca.crt": pathlib.Path(kafka.ca_file).read_text(), "tls.crt": pathlib.Path(kafka.client_cert).read_text(),
            "tls.key": pathlib.Path(kafka.client_key).read_text()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-credentials", "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, kafka, container_images):
    if not (kafka.sasl_bootstrap and kafka.client_cert):
        pytest.fail("the shared broker has no SASL_SSL listener or client certificate (start it with --security, as "
                    "the test command does)")
    work = tmp_path_factory.mktemp("namespaced")
    with kube_double(work / "k8s", containers=True) as k:
        for ns in (WATCHED, OTHER):
            k.kubectl("create", "namespace", ns)
        cfg = helm.Config(kubeconfig_path=str(k.kubeconfig), namespace=SYSTEM)
        values = {"watchNamespaces": [WATCHED], "leaderElection": {"leaseDuration": "6s"},
                  "operator": {"resync": "2s"}}
        release = cfg.install(str(ROOT / "charts" / "sensorpipe"), "sensorpipe", values, namespace=SYSTEM,
                              create_namespace=True, wait="watcher", timeout=120)
        assert release["status"] == "deployed"
        try:
            yield k
        except BaseException:
            print(k.pod_logs()[-20000:])
            raise


def test_a_namespaced_operator_runs_the_pipelines_of_its_namespace_and_ignores_the_others(cluster, kafka):
    k = cluster
    tag = uuid.uuid4().hex[:8]
    scram, mtls = pipeline(kafka, WATCHED, tag), pipeline(kafka, WATCHED, f"{tag}-m", mutual_tls=True)
    other = pipeline(kafka, OTHER, f"{tag}-x")
    for obj in (secret(kafka, WATCHED), secret(kafka, OTHER), scram, mtls, other):
        k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))
    for sp in (scram, mtls):
        k.kubectl("wait", "-n", WATCHED, f"sensorpipeline/{sp['metadata']['name']}", "--for=condition=Ready",
                  "--timeout=180s", timeout=200)
    # The workers read what arrives: one over SASL_SSL with the Secret's password, one over SSL with its client
    # certificate (the listener refuses a client without one: test_brokers.py).
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    for sp in (scram, mtls):
        for i in range(20):
            produce_reading(p, sp["spec"]["input"]["topic"], 0,
                            {"sensor_id": f"s{i % 4}", "temperature": 21.0 + i % 3, "timestamp": START + i,
                             "zone": "east"})
    p.flush(30)
    for sp in (scram, mtls):
        group = f"sensorpipe-{WATCHED}-{sp['metadata']['name']}"
        wait_caught_up(kafka.bootstrap, group, sp["spec"]["input"]["topic"], {0: 20}, timeout=120)
    # Meanwhile the operator has reconciled the watched pipelines every 2 s; the other it never saw.
    path = f"/apis/sensorpipe.io/v1alpha1/namespaces/{OTHER}/sensorpipelines/{other['metadata']['name']}"
    code, body, _ = k.request("GET", path)
    assert code == 200, body
    assert "status" not in body and not body["metadata"].get("finalizers"), body
    code, deployments, _ = k.request("GET", f"/apis/apps/v1/namespaces/{OTHER}/deployments")
    assert code == 200 and deployments["items"] == [], deployments


def test_every_call_of_a_namespaced_operator_is_granted_by_the_roles_of_the_chart(cluster):
    """Each request the operator made names a namespace whose Role (from the chart) grants it; none is
    cluster-wide, and no ClusterRole was installed. Secrets were read in the watched namespace only."""
    k = cluster
    wait_until(lambda: any(c[2] == "secrets" for c in k.operator_calls()), 60, "the operator to read a Secret")
    calls = k.operator_calls()
    assert k.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/sensorpipe-operator")[0] == 404
    roles = {SYSTEM: "sensorpipe-operator-leader-election", WATCHED: "sensorpipe-operator"}
    granted = {}
    for ns, role in roles.items():
        code, body, _ = k.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{role}")
        assert code == 200, body
        granted[ns] = {(g, r, v) for rule in body["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                       for v in rule["verbs"]}
    ungranted = sorted((ns or "<cluster>", g, r, v) for ns, g, r, v in calls if (g, r, v) not in granted.get(ns, ()))
    assert ungranted == [], f"calls no Role of the chart grants: {ungranted}"
    assert {ns for ns, _, r, _ in calls if r == "secrets"} == {WATCHED}


def test_no_secret_value_appears_in_a_configmap_status_event_log_metric_or_command_line(cluster, kafka):
    """The SASL password reaches the workers only as a secretKeyRef and the client key only as a Secret volume:
    neither is in the objects the operator writes, the pods' logs or metrics, the API double's request log, or
    any process's command line (the runner passes container env by name)."""
    k = cluster
    key_lines = pathlib.Path(kafka.client_key).read_text().splitlines()
    # A line from the middle of the key: found in the PEM however it is escaped (JSON's \n); and the whole key as
    # base64, as a Secret's data holds it.
    secrets = {"the SASL password": kafka.users["sensorpipe"], "the client key": key_lines[len(key_lines) // 2],
               "the client key (base64)": base64.b64encode(pathlib.Path(kafka.client_key).read_bytes()).decode()}
    wait_until(lambda: any(p["running"] and p["namespace"] == WATCHED for p in k.pods().values()), 60,
               "a worker container to run")
    places = {}
    for path in ("/api/v1/configmaps", "/apis/events.k8s.io/v1/events", "/api/v1/events",
                 "/apis/sensorpipe.io/v1alpha1/sensorpipelines", "/apis/apps/v1/deployments"):
        code, body, _ = k.request("GET", path)
        assert code == 200, (path, body)
        places[path] = json.dumps(body)
    assert any("sasl" in t for t in places.values()), "the objects name the SASL settings (by reference)"
    for name, pod in k.pods().items():
        places[f"log of {name}"] = pathlib.Path(pod["log"]).read_text(errors="replace")
    for target in json.loads((k.pods_dir / "targets.json").read_text()):
        address = target["targets"][0]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
            places[f"metrics of {target['labels']['pod']} at {address}"] = r.read().decode()
    places["the API double's request log"] = (k.work / "double.log").read_text(errors="replace")
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            places[f"command line of pid {proc.name}"] = (proc / "cmdline").read_bytes().decode(errors="replace")
    assert any(p.startswith("metrics of") for p in places), "no pod's metrics were read"
    leaked = [f"{what} in {where}" for where, text in places.items() for what, value in secrets.items()
              if value in text]
    assert leaked == [], f"secret values appear: {leaked}"
