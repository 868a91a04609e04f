"""Shared fixtures for the end-to-end tests: they run the real worker binary built by the test command, on the
shared Apache Kafka broker of the test session (unique topics and groups per test)."""

import json
import os
import pathlib
import subprocess
from dataclasses import dataclass

import pytest

from brokers import kafka_cluster

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
def container_images() -> dict[str, str]:
    """The operator and worker images, built with podman from this checkout's dev binaries on a Debian base made
    from Debian's packages (scripts/base-image.sh, scripts/images.sh; cached layers make a rebuild seconds).
    Returns component → image, named as the chart names them."""
    base = subprocess.run([str(ROOT / "scripts" / "base-image.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()
    out = subprocess.run([str(ROOT / "scripts" / "images.sh"), "--dev", "--base", base], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


@pytest.fixture(scope="session")
def example_pipeline() -> pathlib.Path:
    return ROOT / "examples" / "smart-building.yaml"


@dataclass(frozen=True)
class SharedKafka:
    """The session's broker: plaintext `bootstrap`; with security, an SSL listener that requires a client
    certificate (`client_cert`/`client_key`, signed by the CA in `ca_file`) and a SASL_SSL (SCRAM-SHA-512) one."""
    bootstrap: str
    ssl_bootstrap: str | None = None
    sasl_bootstrap: str | None = None
    ca_file: str | None = None
    users: dict | None = None
    client_cert: str | None = None
    client_key: str | None = None


def _shared(info: dict) -> SharedKafka:
    return SharedKafka(info["bootstrap"], info.get("ssl_bootstrap"), info.get("sasl_bootstrap"),
                       info.get("ca_file"), info.get("users"), info.get("client_cert"), info.get("client_key"))


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """One Apache Kafka broker for the whole session: the test command's (`SENSORPIPE_TEST_KAFKA` names its
    cluster.json), or one started here for this session."""
    shared = os.environ.get("SENSORPIPE_TEST_KAFKA")
    if shared:
        yield _shared(json.loads(pathlib.Path(shared).read_text()))
        return
    with kafka_cluster(tmp_path_factory.mktemp("kafka"), security=True) as cluster:
        yield _shared(cluster.describe())


@pytest.fixture(scope="session")
def kafka3(tmp_path_factory):
    """A 3-node KRaft cluster (replication factor 3, `min.insync.replicas=2`) for the tests that kill brokers:
    started once, when a test first asks for it. A test that stops a node starts it again before it ends."""
    with kafka_cluster(tmp_path_factory.mktemp("kafka3"), nodes=3) as cluster:
        yield cluster

