"""The CRD as a real API server judges it when `helm install` creates it.

Kubernetes compiles every `x-kubernetes-validations` rule of a CRD and estimates its worst-case cost with the CEL
cost model of k8s.io/apiserver (the per-rule limit, `PerCallLimit`, and a total for the whole schema,
`StaticEstimatedCRDCostLimit`). The size of each string, list and map comes from its `maxLength`, `maxItems`
and `maxProperties`, or, where there is none, from the largest object etcd accepts (3 MiB) — so one unbounded
list around a rule that parses a string can put a CRD over the limit by a factor of a hundred, and the API server
refuses it. scripts/crdcost.sh runs that same validation (`validation.ValidateCustomResourceDefinition` of
k8s.io/apiextensions-apiserver v0.37, the code behind `kubectl apply` of a CRD), built from Go modules.
"""

from __future__ import annotations

import pathlib
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "sensorpipe.io_sensorpipelines.yaml"


def judge(path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / "crdcost.sh"), str(path)], capture_output=True, text=True,
                          timeout=900)


def strip_bounds(node):
    if isinstance(node, dict):
        return {k: strip_bounds(v) for k, v in node.items() if k not in ("maxLength", "maxItems", "maxProperties")}
    if isinstance(node, list):
        return [strip_bounds(v) for v in node]
    return node


def test_the_api_server_accepts_the_crd():
    r = judge(CRD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{CRD}: accepted", r.stdout


def test_without_its_bounds_the_crd_is_refused_for_the_cost_of_its_rules(tmp_path):
    """The CRD as it was before the bounds: the same rules, no maxLength/maxItems/maxProperties."""
    unbounded = tmp_path / "unbounded.yaml"
    unbounded.write_text(yaml.safe_dump(strip_bounds(yaml.safe_load(CRD.read_text()))))
    r = judge(unbounded)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "estimated rule cost exceeds budget" in r.stdout, r.stdout
    assert "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget" in r.stdout
