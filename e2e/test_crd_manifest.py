"""The generated CRD is a valid apiextensions.k8s.io/v1 CustomResourceDefinition for the Kubernetes versions we
support, judged by the Kubernetes OpenAPI schemas (`kubernetes-validate --strict`, schemas bundled, offline).
The example against the CRD's own schema and CEL rules: operator/tests/crd.rs."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALIDATE = pathlib.Path(sys.executable).parent / "kubernetes-validate"


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_crd_is_a_valid_custom_resource_definition(version):
    crd = ROOT / "crds" / "sensorpipe.io_sensorpipelines.yaml"
    out = subprocess.run([str(VALIDATE), "--strict", "-k", version, str(crd)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed" in out.stdout and "customresourcedefinition/sensorpipelines.sensorpipe.io" in out.stdout, out.stdout
