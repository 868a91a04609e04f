"""The operator's /readyz and /healthz as a kubelet sees them: two operator processes on the local Kubernetes API
double sharing one leader Lease, then the API server frozen (SIGSTOP: it accepts connections and answers nothing,
as a hung or partitioned API server does). The leader can no longer renew its Lease, and a standby elsewhere would
take over when it expires, so the leader's /healthz must fail (the kubelet restarts it) rather than let it go on
believing it leads; the standby's stays ok. A reconcile stuck past its limit (five minutes at least) is covered by
the unit tests of operator/src/health.rs, since nothing real holds a reconcile that long here."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess

import pytest

from brokers import free_port
from kafka_io import http_get, stop, wait_until
from kube_cluster import kube_double

ROOT = pathlib.Path(__file__).resolve().parent.parent
LEASE_SECONDS = 3


@contextlib.contextmanager
def operator(operator_bin, k, name: str, log: pathlib.Path):
    port = free_port()
    env = {**k.env(), "POD_NAME": name, "RUST_LOG": "info,kube=warn"}
    args = [str(operator_bin), "run", "--worker-image", "sensorpipe-worker:test", "--http-addr", f"127.0.0.1:{port}",
            "--lease-namespace", "default", "--lease-duration", f"{LEASE_SECONDS}s"]
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, port
    finally:
        stop(proc)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        return http_get(port, path)
    except OSError as e:
        return 0, str(e)


@pytest.fixture
def frozen_api(tmp_path):
    with kube_double(tmp_path / "k8s") as k:
        k.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        try:
            yield k
        finally:
            os.kill(k.proc.pid, signal.SIGCONT)


def test_the_leaders_healthz_fails_when_its_lease_cannot_be_renewed_and_the_standbys_does_not(
        frozen_api, operator_bin, tmp_path):
    k = frozen_api
    with operator(operator_bin, k, "operator-a", tmp_path / "a.log") as (a, port_a), \
            operator(operator_bin, k, "operator-b", tmp_path / "b.log") as (b, port_b):
        def roles():
            return sorted(get(p, "/readyz") for p in (port_a, port_b))

        wait_until(lambda: roles() == [(200, "leading: reconciling\n"), (200, "standby: waiting for the leader lease\n")],
                   60, "one operator to lead and the other to stand by")
        leader = port_a if get(port_a, "/readyz")[1].startswith("leading") else port_b
        standby = port_b if leader == port_a else port_a
        assert get(leader, "/healthz") == (200, "ok\n") and get(standby, "/healthz") == (200, "ok\n")

        def leader_unhealthy():
            status, body = get(leader, "/healthz")
            return body if status == 503 else None

        os.kill(k.proc.pid, signal.SIGSTOP)
        try:
            body = wait_until(leader_unhealthy, 8 * LEASE_SECONDS, "the leader's /healthz to fail")
            assert "the leader lease was not renewed for" in body, body
            assert get(standby, "/healthz") == (200, "ok\n")
            assert a.poll() is None and b.poll() is None, "an operator exited instead of reporting"
        finally:
            os.kill(k.proc.pid, signal.SIGCONT)
        # The API server back: renewals are seen again and the process is healthy (had the kubelet restarted it,
        # it would have come back the same way).
        wait_until(lambda: get(leader, "/healthz") == (200, "ok\n") or get(standby, "/readyz")[1].startswith(
            "leading"), 60, "an operator to lead again, healthy")
