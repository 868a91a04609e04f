"""The Helm chart, rendered by the real Helm engine (helm-python-sdk) for every value set in charts/sensorpipe/ci/:
strict lint, every object valid for the Kubernetes versions we support (`kubernetes-validate --strict`, schemas
bundled), Prometheus Operator objects valid against their own CRD schemas, values.schema.json rejecting bad
values with the key's name, and the chart agreeing with what the operator documents and accepts (CRD, RBAC,
flags)."""

from __future__ import annotations

import json
import re
import subprocess

import helm_python
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

from chart_support import CHART, NAMESPACE, ROOT, ci_value_sets, merge_values, objects, one, render

VALUE_SETS = ci_value_sets()
KUBE_VERSIONS = ["1.25.0", "1.30.0", "1.37.0"]
MONITORING_KINDS = {
    "ServiceMonitor": monitoring_v1.ServiceMonitor,
    "PodMonitor": monitoring_v1.PodMonitor,
    "PrometheusRule": monitoring_v1.PrometheusRule,
}


def test_there_are_value_sets_for_every_optional_part():
    assert {"default-values.yaml", "monitoring-values.yaml", "podmonitor-values.yaml", "ha-values.yaml",
            "namespaced-values.yaml"} <= set(VALUE_SETS)
    kinds = {o["kind"] for values in VALUE_SETS.values() for o in objects(values)}
    assert {"CustomResourceDefinition", "Deployment", "ServiceMonitor", "PodMonitor", "PrometheusRule",
            "ConfigMap", "ClusterRole", "Role"} <= kinds, kinds


@pytest.mark.parametrize("values_file", sorted(VALUE_SETS))
def test_lint_strict_finds_nothing(values_file):
    report = helm_python.lint(str(CHART), VALUE_SETS[values_file], strict=True, namespace=NAMESPACE,
                              kube_version="v1.30.0")
    # Severity 1 is informational ("icon is recommended"); warnings (2) and errors (3) fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("values_file", sorted(VALUE_SETS))
def test_values_sets_pass_the_values_schema(values_file):
    chart = helm_python.Chart.load(str(CHART))
    try:
        chart.validate_schema(VALUE_SETS[values_file])
    finally:
        chart.close()


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid(values_file, version):
    for obj in objects(VALUE_SETS[values_file]):
        kind = obj["kind"]
        if kind in MONITORING_KINDS:
            check_against_crd_model(obj, MONITORING_KINDS[kind])
        else:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{kind} {obj['metadata']['name']} (Kubernetes {version}): {e.message} at "
                            f"{'.'.join(map(str, e.path))}")


def check_against_crd_model(obj: dict, model) -> None:
    """Validates a Prometheus Operator object against models generated from its CRD (prometheus-operator v0.80);
    like `--strict`, a field the schema does not know (which the API server would prune) is an error."""
    parsed = model.model_validate(obj)
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = dropped_paths(obj, kept)
    assert not unknown, f"{obj['kind']} {obj['metadata']['name']}: fields unknown to the CRD: {unknown}"


def dropped_paths(given, kept, path="") -> list[str]:
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path]
        out = []
        for k, v in given.items():
            out += [f"{path}.{k}"] if k not in kept else dropped_paths(v, kept[k], f"{path}.{k}")
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in dropped_paths(g, k, f"{path}[{i}]")]
    return []


def test_the_crd_check_catches_a_misspelt_field():
    sm = one(objects(VALUE_SETS["monitoring-values.yaml"]), "ServiceMonitor")
    sm["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(AssertionError, match="intervall"):
        check_against_crd_model(sm, monitoring_v1.ServiceMonitor)


# values.schema.json: each bad value is refused, and the message names the key.
BAD_VALUES = [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"monitoring": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
    ({"monitoring": {"prometheusRule": {"deadLetters": {"ratio": 5}}}}, "ratio"),
    ({"monitoring": {"prometheusRule": {"lag": {"for": "ten minutes"}}}}, "for"),
    ({"operator": {"resync": "15 seconds"}}, "resync"),
    ({"dashboards": {"labelValue": 1}}, "labelValue"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"service": {"port": 70000}}, "port"),
    ({"imagePullSecrets": ["registry-credentials"]}, "imagePullSecrets"),
    ({"watchNamespaces": ["Facilities Team"]}, "watchNamespaces"),
]


@pytest.mark.parametrize("values,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_values_schema_rejects_bad_values_naming_the_key(values, key):
    chart = helm_python.Chart.load(str(CHART))
    try:
        with pytest.raises(helm_python.HelmValuesError) as e:
            chart.validate_schema(values)
    finally:
        chart.close()
    assert key in str(e.value), str(e.value)
    # `helm lint` (and so `helm install`) refuses them too.
    report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"]), report


@pytest.mark.parametrize("values,message", [
    ({"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
     "both scrape the operator"),
    ({"monitoring": {"workers": {"podMonitor": {"enabled": True}}}}, "set monitoring.workers.serviceMonitors=false"),
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "needs leaderElection.enabled=true"),
])
def test_contradicting_values_fail_with_a_clear_message(values, message):
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(values)


def test_the_chart_crd_is_the_generated_one():
    generated = yaml.safe_load((ROOT / "crds" / "sensorpipe.io_sensorpipelines.yaml").read_text())
    rendered = one(objects(), "CustomResourceDefinition")
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["name"] == generated["metadata"]["name"]
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    dropped = one(objects({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in dropped["metadata"]
    assert not [o for o in objects({"crds": {"enabled": False}}) if o["kind"] == "CustomResourceDefinition"]


def documented_rbac_rules() -> list[dict]:
    text = (ROOT / "docs" / "operator.md").read_text()
    block = re.search(r"### RBAC\n.*?```yaml\n(.*?)```", text, re.S)
    assert block, "docs/operator.md has no RBAC block"
    return yaml.safe_load(block.group(1))["rules"]


def grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_rbac_grants_exactly_what_the_operator_documents():
    objs = objects()
    cluster = grants(one(objs, "ClusterRole")["rules"])
    role = one(objs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    namespaced = grants(role["rules"])
    assert cluster | namespaced == grants(documented_rbac_rules())
    # Leases only in the release namespace; nothing else namespaced.
    assert {g for g in namespaced} == {g for g in grants(documented_rbac_rules()) if g[1] == "leases"}
    assert not {g for g in cluster if g[1] == "leases"}
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        subject = one(objs, binding)["subjects"][0]
        assert subject == {"kind": "ServiceAccount", "name": "sensorpipe-operator", "namespace": NAMESPACE}


def test_a_namespaced_install_grants_roles_in_its_namespaces_and_nothing_cluster_wide():
    """With watchNamespaces, each watched namespace gets a Role with the documented rules (Secrets included) and
    the operator is told to watch exactly those; no ClusterRole exists, so it can read no other Secret."""
    values = merge_values(VALUE_SETS["namespaced-values.yaml"], {"monitoring": {"workers": {
        "serviceMonitors": False, "podMonitor": {"enabled": True}}}})
    objs = objects(values)
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    watched = values["watchNamespaces"]
    documented = grants(documented_rbac_rules())
    for ns in watched:
        role = one([o for o in objs if o["metadata"].get("namespace") == ns], "Role")
        assert grants(role["rules"]) == {g for g in documented if g[1] != "leases"}, ns
        binding = one([o for o in objs if o["metadata"].get("namespace") == ns], "RoleBinding")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sensorpipe-operator",
                                        "namespace": NAMESPACE}]
    leases = one([o for o in objs if o["metadata"].get("namespace") == NAMESPACE], "Role")
    assert {g[1] for g in grants(leases["rules"])} == {"leases"}
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] == "Role"} == {NAMESPACE, *watched}
    env = {e["name"]: e.get("value") for e in
           one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SENSORPIPE_WATCH_NAMESPACES"] == ",".join(watched)
    assert "SENSORPIPE_WATCH_NAMESPACES" not in {e["name"] for e in one(objects(), "Deployment")["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    pm = one(objs, "PodMonitor", "sensorpipe-workers")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": watched}


@pytest.fixture(scope="module")
def operator_help(operator_bin) -> str:
    out = subprocess.run([str(operator_bin), "run", "--help"],
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("values_file", sorted(VALUE_SETS))
def test_the_operator_deployment_sets_only_settings_the_operator_reads(values_file, operator_help):
    values = VALUE_SETS[values_file]
    deployment = one(objects(values), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for name in env:
        if name.startswith("SENSORPIPE_"):
            assert f"env: {name}" in operator_help, f"{name} is not a flag of sensorpipe-operator run"
    assert container["args"] == ["run"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SENSORPIPE_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    replicas = values.get("replicaCount", 1)
    assert deployment["spec"]["replicas"] == replicas
    assert env["SENSORPIPE_LEADER_ELECTION"]["value"] == "true"
    workers_sm = values.get("monitoring", {}).get("workers", {}).get("serviceMonitors", True)
    assert env["SENSORPIPE_WORKER_SERVICE_MONITORS"]["value"] == str(workers_sm).lower()
    # Probes on the paths the operator serves, on the port the Service targets.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert env["SENSORPIPE_HTTP_ADDR"]["value"].endswith(":8080")
    assert container["ports"] == [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}]


def test_images_default_to_the_app_version_and_digests_win():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    container = one(objects(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == f"ghcr.io/sensorpipe/sensorpipe-operator:{chart['appVersion']}"
    assert env["SENSORPIPE_WORKER_IMAGE"] == f"ghcr.io/sensorpipe/sensorpipe-worker:{chart['appVersion']}"
    ha = one(objects(VALUE_SETS["ha-values.yaml"]), "Deployment")["spec"]["template"]["spec"]
    assert ha["containers"][0]["image"].startswith("registry.example.com/sensorpipe/operator@sha256:")
    assert ha["serviceAccountName"] == "sensorpipe-operator-irsa"


@pytest.mark.parametrize("values_file", sorted(VALUE_SETS))
def test_the_operator_pod_meets_the_restricted_pod_security_standard(values_file):
    pod = one(objects(VALUE_SETS[values_file]), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True
        assert "memory" in c["resources"]["limits"] and c["resources"]["requests"]


def test_the_service_selects_the_operator_pods():
    objs = objects()
    service = one(objs, "Service")
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    sm = one(objects(VALUE_SETS["monitoring-values.yaml"]), "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_worker_pod_monitor_selects_what_the_operator_deploys():
    pm = one(objects(VALUE_SETS["podmonitor-values.yaml"]), "PodMonitor", "sensorpipe-workers")
    build = (ROOT / "operator" / "src" / "build" / "mod.rs").read_text()
    for key, value in pm["spec"]["selector"]["matchLabels"].items():
        assert re.search(rf'"{re.escape(key)}".*"{re.escape(value)}"', build), (key, value)
    deployment = (ROOT / "operator" / "src" / "build" / "deployment.rs").read_text()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics" and '"metrics"' in deployment
    assert pm["spec"]["namespaceSelector"] == {"any": True}


@pytest.mark.parametrize("values_file", ["default-values.yaml", "monitoring-values.yaml", "podmonitor-values.yaml"])
def test_dashboards_are_config_maps_for_the_grafana_sidecar(values_file):
    values = VALUE_SETS[values_file]
    dash = merge_values({"label": "grafana_dashboard", "labelValue": "1", "namespace": ""},
                        values.get("dashboards", {}))
    maps = [o for o in objects(values) if o["kind"] == "ConfigMap"]
    assert len(maps) == 2
    for cm in maps:
        assert cm["metadata"]["labels"][dash["label"]] == dash["labelValue"]
        assert cm["metadata"]["namespace"] == (dash["namespace"] or NAMESPACE)
        assert cm["metadata"].get("annotations", {}) == dash.get("annotations", {})
        [(key, text)] = cm["data"].items()
        name = key.removeprefix("sensorpipe-").removesuffix(".json")
        assert json.loads(text) == json.loads((CHART / "dashboards" / f"{name}.json").read_text())
    assert not [o for o in objects(VALUE_SETS["ha-values.yaml"]) if o["kind"] == "ConfigMap"]


def test_notes_give_the_next_steps():
    notes = render()["sensorpipe/templates/NOTES.txt"]
    for step in ["rollout status deployment/sensorpipe-operator", "kubectl apply -f", "smart-building.yaml",
                 "kubectl wait --for=condition=Ready sp/building-a", "kubectl get sp", "Pipeline health",
                 "Facility", "grafana_dashboard=\"1\"", "monitoring.serviceMonitor.enabled=true"]:
        assert step in notes, step
    quiet = render(VALUE_SETS["monitoring-values.yaml"])["sensorpipe/templates/NOTES.txt"]
    assert "does not scrape the operator" not in quiet and "Alert rules are off" not in quiet


@pytest.mark.parametrize("values_file", sorted(VALUE_SETS))
def test_the_operator_starts_with_the_environment_the_chart_gives_it(values_file, operator_bin, tmp_path):
    """Every value the chart passes parses: the operator gets as far as looking for the Kubernetes API (absent
    here), so a bad duration or boolean in the chart would fail this first."""
    import os
    container = one(objects(VALUE_SETS[values_file]), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {"PATH": os.environ["PATH"], "KUBECONFIG": str(tmp_path / "absent"), "SENSORPIPE_HTTP_ADDR": "127.0.0.1:0"}
    out = subprocess.run([str(operator_bin), *container["args"]], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "kubeconfig" in out.stderr and "error: invalid value" not in out.stderr, out.stderr[-2000:]
