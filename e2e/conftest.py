"""Shared fixtures for the end-to-end tests: they run the real worker binary built by the test command."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def worker_bin() -> pathlib.Path:
    """The worker binary; the test command builds it before running these tests."""
    path = pathlib.Path(os.environ.get("SENSORPIPE_WORKER_BIN", ROOT / "target" / "debug" / "sensorpipe-worker"))
    if not path.exists():
        subprocess.run(["cargo", "build", "-p", "sensorpipe-worker"], cwd=ROOT, check=True)
    return path


def operator_crate_binary(name: str) -> pathlib.Path:
    path = ROOT / "target" / "debug" / name
    if not path.exists():
        subprocess.run(["cargo", "build", "-p", "sensorpipe-operator"], cwd=ROOT, check=True)
    return path


@pytest.fixture(scope="session")
def sensorpipe_bin() -> pathlib.Path:
    """The one-machine mode binary (`sensorpipe run`); the test command builds it before running these tests."""
    return operator_crate_binary("sensorpipe")


@pytest.fixture(scope="session")
def operator_bin() -> pathlib.Path:
    """The operator binary; the test command builds it before running these tests."""
    return operator_crate_binary("sensorpipe-operator")


@pytest.fixture(scope="session")
def example_pipeline() -> pathlib.Path:
    return ROOT / "examples" / "smart-building.yaml"
