"""Starts the Kubernetes API test double (e2e/kube_double) as its own process and talks to it the way users do:
kubectl with a private HOME (its discovery cache) and the double's kubeconfig, and raw HTTP for what kubectl hides.
Every kubectl call can be written to a report, so a run shows the output a user would have seen."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.request

from kafka_io import stop

E2E = pathlib.Path(__file__).resolve().parent


class Cluster:
    def __init__(self, work: pathlib.Path, url: str, proc: subprocess.Popen, report: pathlib.Path | None):
        self.work, self.url, self.proc, self.report = work, url, proc, report
        self.kubeconfig = work / "kubeconfig"
        self.home = work / "home"
        self.home.mkdir(exist_ok=True)
        self.pods_dir = work / "pods"

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.home)}

    def note(self, text: str) -> None:
        if self.report is not None:
            with self.report.open("a") as f:
                f.write(text.rstrip("\n") + "\n")

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = ["kubectl", *args]
        p = subprocess.run(cmd, env=self.env(), input=stdin, capture_output=True, text=True, timeout=timeout)
        self.note(f"```\n$ {' '.join(cmd)}\n{p.stdout}{p.stderr}```")
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                accept: str = "application/json") -> tuple[int, dict, dict]:
        """(HTTP status, decoded body, headers)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": accept,
                                              "User-Agent": "e2e-test/1.0"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}"), dict(e.headers)

    def watch(self, path: str, timeout: float = 10):
        """Yields watch events until the server ends the stream (use timeoutSeconds in `path`)."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            for line in r:
                if line.strip():
                    yield json.loads(line)

    def pods(self, deployment: str | None = None) -> dict[str, dict]:
        """The runner's replicas (name → namespace, deployment, ip, pid, running, ready, restarts, log)."""
        path = self.pods_dir / "pods.json"
        pods = json.loads(path.read_text()) if path.exists() else {}
        return {n: p for n, p in pods.items() if deployment is None or p["deployment"] == deployment}

    def operator_calls(self) -> set[tuple[str | None, str, str, str]]:
        """(namespace, or None for a cluster-wide call; API group; resource; RBAC verb) of every request the
        operator made (kube-rs sends no User-Agent, which the double logs as "-"; Helm, kubectl and the tests name
        themselves). Discovery and /version are not resources and are left out."""
        calls = set()
        line = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/1.1" \S+ \S+ "-"$')
        for m in filter(None, map(line.search, (self.work / "double.log").read_text().splitlines())):
            method, url = m.groups()
            path, _, query = url.partition("?")
            parts = path.strip("/").split("/")
            if parts[0] == "api":
                group, rest = "", parts[2:]
            elif parts[0] == "apis" and len(parts) > 2:
                group, rest = parts[1], parts[3:]
            else:
                continue
            namespace = None
            if rest[:1] == ["namespaces"] and len(rest) > 2:
                namespace, rest = rest[1], rest[2:]
            if not rest:
                continue
            resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
            named = len(rest) > 1
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if named else "deletecollection"}.get(method)
            if method == "GET":
                verb = "get" if named else ("watch" if "watch=true" in query else "list")
            calls.add((namespace, group, resource, verb))
        return calls

    def pod_logs(self) -> str:
        out = []
        for log in sorted(self.pods_dir.glob("*.log")):
            out.append(f"===== {log.name}\n{log.read_text(errors='replace')[-6000:]}")
        return "\n".join(out)


@contextlib.contextmanager
def kube_double(work: pathlib.Path, runner: dict | None = None, history: int = 5000,
                report: pathlib.Path | None = None, containers: bool = False):
    """A running double; `runner` (image → binary) turns its Deployments into processes, or with `containers`
    into podman containers of their images (kube_double/containers.py)."""
    work.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "kube_double", "--dir", str(work), "--history", str(history)]
    if runner is not None or containers:
        (work / "runner.json").write_text(json.dumps({"images": runner or {}, "containers": containers}))
        args += ["--runner", str(work / "runner.json")]
    log = (work / "double.log").open("w")
    proc = subprocess.Popen(args, cwd=E2E, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the API double did not start: {line!r}; see {work / 'double.log'}")
        cluster = Cluster(work, line.split()[-1], proc, report)
        yield cluster
    finally:
        stop(proc, timeout=45)
        log.close()

