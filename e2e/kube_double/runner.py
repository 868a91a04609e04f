"""The deployment runner: what the deployment controller, the scheduler and the kubelet do for a Deployment,
done with local processes. Each replica ("pod") is the image's local binary, started in its own process group with
the container's args and env (values, fieldRefs, ConfigMap and Secret keys, `$(VAR)` references), its ConfigMap and
Secret volumes written to a directory (container paths in env, args and ConfigMap files become that directory), a
loopback address of its own (127.0.1.x: `0.0.0.0` in env and args becomes that address, so every pod can bind the
container port), and its log kept under DIR/pods/.

Readiness comes from the readiness probe (httpGet or tcpSocket on the pod address); status is written back through
/status like the real controller; a pod template change rolls the replicas within the strategy's maxSurge and
maxUnavailable (all at once for Recreate); scale-down stops the newest; a deleted Deployment stops them all; a
replica that exits is restarted after the kubelet's back-off (10 s, doubling). There are no Pod or ReplicaSet
objects."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import containers
from .api import Api, now

TICK = 0.25
# Pods get 127.0.1.2, 127.0.1.3, ... : every 127/8 address is loopback on Linux.
_ADDRESSES = (f"127.0.{1 + n // 250}.{2 + n % 250}" for n in itertools.count())


@dataclass
class Pod:
    name: str
    namespace: str
    deployment: str
    template_hash: str
    ip: str
    dir: Path
    log: Path
    container: dict
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    restarts: int = 0
    restart_at: float | None = None
    started: float = 0.0
    next_probe: float = 0.0
    stopping: bool = False
    ports: dict[str, int] = field(default_factory=dict)
    # Container mode: the container's name, and its main process as the host sees it (what `kill -9` signals).
    container_name: str | None = None
    host_pid: int | None = None


class DeploymentRunner:
    def __init__(self, api: Api, config: Path, pods_dir: Path, server: str, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(config.read_text()) or {}
        self.images: dict[str, str] = cfg.get("images") or {}
        # Pods as podman containers from their images (containers.py); else as local processes of `images`.
        self.containers: bool = bool(cfg.get("containers"))
        if self.containers:
            containers.check_available()
        self.api, self.pods_dir, self.server, self.kubeconfig = api, pods_dir, server, kubeconfig
        self.pods: dict[tuple[str, str], list[Pod]] = {}
        self.observed: dict[tuple[str, str], int] = {}
        self.targets = pods_dir / "targets.json"
        self._task: asyncio.Task | None = None
        self._stopping: set[asyncio.Task] = set()
        pods_dir.mkdir(parents=True, exist_ok=True)
        self._write_targets()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await asyncio.gather(*(self._terminate(p) for ps in self.pods.values() for p in ps), *self._stopping)
        if self.containers:
            containers.remove_all(str(self.pods_dir))

    async def _run(self) -> None:
        kind = self.api.kind("apps", "v1", "deployments")
        while True:
            try:
                deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                               for d in self.api.store.list(kind.key)}
                for key in list(self.pods):
                    d = deployments.get(key)
                    if d is None or d["metadata"].get("deletionTimestamp"):
                        for p in list(self.pods[key]):
                            self._retire(key, p)
                        del self.pods[key]
                        self.observed.pop(key, None)
                for key, d in deployments.items():
                    if not d["metadata"].get("deletionTimestamp"):
                        await self._reconcile(key, d)
                self._write_targets()
            except Exception as e:  # a runner bug must show in the log, not stop every deployment
                print(f"deployment runner: {e!r}", flush=True)
            await asyncio.sleep(TICK)

    async def _reconcile(self, key, d: dict) -> None:
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        thash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        want = spec.get("replicas", 1)
        pods = self.pods.setdefault(key, [])
        for p in pods:
            if p.proc is not None and p.proc.returncode is not None and not p.stopping:
                p.ready = False
                if p.restart_at is None:
                    # The kubelet's crash back-off: 10 s, doubling, at most 5 minutes.
                    delay = min(300.0, 10.0 * 2 ** min(p.restarts, 5))
                    p.restart_at = time.monotonic() + delay
                    with p.log.open("a") as f:
                        f.write(f"--- {now()} exited with {p.proc.returncode}; back-off {delay:.0f} s\n")
                elif time.monotonic() >= p.restart_at:
                    p.restarts += 1
                    p.restart_at = None
                    await self._spawn(p)
            await self._probe(p)
        current = [p for p in pods if p.template_hash == thash]
        old = [p for p in pods if p.template_hash != thash]
        for p in current[want:][::-1]:
            self._retire(key, p)
        surge, unavailable = _rollout_limits(spec.get("strategy") or {}, want)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            for p in old:
                self._retire(key, p)
            old, surge = [], 0
        # Old replicas go while enough replicas stay ready; new ones come while the surge allows.
        for p in sorted(old, key=lambda p: p.ready):
            if sum(q.ready for q in self.pods[key]) - p.ready >= want - unavailable:
                self._retire(key, p)
        while len(current) < want and len(self.pods[key]) < want + surge:
            pod = self._new_pod(key, d, thash)
            pods.append(pod)
            current.append(pod)
            await self._spawn(pod)
        self._status(key, d, thash)

    def _retire(self, key, pod: Pod) -> None:
        if pod in self.pods.get(key, []):
            self.pods[key].remove(pod)
            task = asyncio.get_running_loop().create_task(self._terminate(pod))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _new_pod(self, key, d: dict, thash: str) -> Pod:
        ns, name = key
        pod_name = f"{name}-{thash[:8]}-{os.urandom(3).hex()[:5]}"
        pdir = self.pods_dir / f"{ns}_{pod_name}"
        pdir.mkdir(parents=True, exist_ok=True)
        tspec = (d["spec"].get("template") or {}).get("spec") or {}
        return Pod(pod_name, ns, name, thash, next(_ADDRESSES), pdir, self.pods_dir / f"{ns}_{pod_name}.log",
                   copy.deepcopy(tspec.get("containers", [{}])[0]))

    # --- starting a container --------------------------------------------------------------------------------------

    def _binary(self, image: str) -> str:
        base = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        base = base.split("@", 1)[0]
        if base not in self.images:
            raise RuntimeError(f"image {image!r} has no local binary in the runner config")
        return self.images[base]

    def _data(self, kind: str, ns: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's or Secret's key → value (a Secret's decoded), or None when there is no such object."""
        plural = "configmaps" if kind == "configmap" else "secrets"
        obj = self.api.store.get(("", plural), ns, name)
        if obj is None:
            return None
        if plural == "configmaps":
            return dict(obj.get("data") or {})
        return {**(obj.get("stringData") or {}),
                **{k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}}

    def _volumes(self, pod: Pod, tspec: dict) -> dict[str, Path]:
        """Writes ConfigMap, Secret and emptyDir volumes; returns mountPath → local path."""
        by_name = {}
        for v in tspec.get("volumes") or []:
            vdir = pod.dir / "volumes" / v["name"]
            vdir.mkdir(parents=True, exist_ok=True)
            src = v.get("configMap") or v.get("secret")
            if src is not None:
                kind = "configmap" if "configMap" in v else "secret"
                data = self._data(kind, pod.namespace, src.get("name") or src.get("secretName")) or {}
                keys = {i["key"]: i["path"] for i in src.get("items") or []} or {k: k for k in data}
                for key, path in keys.items():
                    if key in data:
                        (vdir / path).parent.mkdir(parents=True, exist_ok=True)
                        (vdir / path).write_text(data[key])
            by_name[v["name"]] = vdir
        mounts = {}
        for m in pod.container.get("volumeMounts") or []:
            local = by_name.get(m["name"])
            if local is not None:
                mounts[m["mountPath"]] = local / m["subPath"] if m.get("subPath") else local
        # Container paths inside ConfigMap files (a properties file naming a mounted CA, say) become the local
        # ones, as in env and args: this process sees the volumes where the runner wrote them.
        for v in tspec.get("volumes") or []:
            if "configMap" in v:
                for f in (p for p in by_name[v["name"]].rglob("*") if p.is_file()):
                    f.write_text(self._local(f.read_text(), pod, mounts))
        return mounts

    def _env(self, pod: Pod, mounts: dict[str, Path]) -> dict[str, str]:
        c = pod.container
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod.name,
               # In a cluster the pod's service account token gives access; here the double's kubeconfig does.
               "KUBECONFIG": str(self.kubeconfig)}
        for src in c.get("envFrom") or []:
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            kind = "configmap" if "configMapRef" in src else "secret"
            for k, v in (self._data(kind, pod.namespace, ref.get("name", "")) or {}).items():
                env[src.get("prefix", "") + k] = v
        fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "status.podIP": pod.ip,
                  "spec.nodeName": "local", "status.hostIP": "127.0.0.1"}
        for e in c.get("env") or []:
            value = e.get("value")
            src = e.get("valueFrom") or {}
            if "fieldRef" in src:
                value = fields.get(src["fieldRef"]["fieldPath"], "")
            elif "configMapKeyRef" in src or "secretKeyRef" in src:
                ref = src.get("configMapKeyRef") or src.get("secretKeyRef")
                kind = "configmap" if "configMapKeyRef" in src else "secret"
                value = (self._data(kind, pod.namespace, ref["name"]) or {}).get(ref["key"])
                if value is None and not ref.get("optional"):
                    raise RuntimeError(f"{kind} {ref['name']}/{ref['key']} not found")
            env[e["name"]] = self._local(_expand(value or "", env), pod, mounts)
        return env

    @staticmethod
    def _local(value: str, pod: Pod, mounts: dict[str, Path]) -> str:
        """A container path or wildcard address as it exists for this local process."""
        value = value.replace("0.0.0.0", pod.ip)
        for mount, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            value = re.sub(rf"(?<![\w/]){re.escape(mount)}(?=/|$|\s)", str(local), value)
        return value

    async def _spawn(self, pod: Pod) -> None:
        d = self.api.store.get(("apps", "deployments"), pod.namespace, pod.deployment) or {}
        tspec = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        c = pod.container
        with pod.log.open("a") as log:
            try:
                if self.containers:
                    argv, env = self._container(pod, tspec)
                else:
                    mounts = self._volumes(pod, tspec)
                    env = self._env(pod, mounts)
                    argv = [_expand(a, env) for a in (c.get("command") or [self._binary(c.get("image", ""))])]
                    argv += [self._local(_expand(a, env), pod, mounts) for a in c.get("args") or []]
            except RuntimeError as e:  # like CreateContainerConfigError: retried on the next restart
                log.write(f"--- cannot start: {e}\n")
                pod.proc = await asyncio.create_subprocess_exec("false")
                return
            log.write(f"--- {now()} starting {pod.name} at {pod.ip}: {' '.join(argv)}\n")
            log.flush()
            pod.proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=pod.dir, stdout=log,
                                                            stderr=asyncio.subprocess.STDOUT,
                                                            start_new_session=True)
        pod.started = time.monotonic()
        pod.ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in c.get("ports") or []}
        if self.containers:
            pod.host_pid = None
            task = asyncio.get_running_loop().create_task(self._find_host_pid(pod, pod.proc))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _container(self, pod: Pod, tspec: dict) -> tuple[list[str], dict[str, str]]:
        """The `podman run` argv and the environment it takes the pod's env from (containers.py)."""
        volumes = containers.write_volumes(pod.dir, tspec, lambda kind, name: self._data(kind, pod.namespace, name))
        env = {k: v for k, v in self._env(pod, {}).items() if k not in ("PATH", "HOSTNAME", "KUBECONFIG")}
        pod.container_name = f"{pod.namespace}_{pod.name}"
        argv = containers.podman_argv(pod.container_name, tspec, pod.container, env, volumes, self.kubeconfig,
                                      str(self.pods_dir))
        argv = [_expand(a, env).replace("0.0.0.0", pod.ip) for a in argv]
        return argv, {**containers.podman_env(), **env}

    async def _find_host_pid(self, pod: Pod, proc) -> None:
        pid = await containers.host_pid(pod.container_name)
        if pod.proc is proc:
            pod.host_pid = pid

    async def _probe(self, pod: Pod) -> None:
        if pod.proc is None or pod.proc.returncode is not None:
            pod.ready = False
            return
        probe = pod.container.get("readinessProbe")
        if probe is None:
            pod.ready = time.monotonic() - pod.started > 0.5
            return
        t = time.monotonic()
        if t < pod.next_probe:
            return
        # Probes run at least every second, whatever periodSeconds says, to keep the tests short.
        pod.next_probe = t + min(1.0, probe.get("periodSeconds", 10))
        action = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = action.get("port")
        port = pod.ports.get(port, port) if isinstance(port, str) else port
        ok = await asyncio.get_running_loop().run_in_executor(None, _check, pod.ip, port, probe.get("httpGet"))
        pod.ready = ok

    async def _terminate(self, pod: Pod) -> None:
        pod.stopping = True
        if pod.proc is None or pod.proc.returncode is not None:
            return
        grace = min(30, ((self.api.store.get(("apps", "deployments"), pod.namespace, pod.deployment) or {})
                         .get("spec", {}).get("template", {}).get("spec", {})
                         .get("terminationGracePeriodSeconds", 30)))
        try:
            os.killpg(pod.proc.pid, signal.SIGTERM)
            await asyncio.wait_for(pod.proc.wait(), grace)
        except (ProcessLookupError, asyncio.TimeoutError):
            try:
                os.killpg(pod.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if pod.container_name:
                await containers.kill(pod.container_name)
            await pod.proc.wait()
        with pod.log.open("a") as f:
            f.write(f"--- {now()} stopped ({pod.proc.returncode})\n")

    # --- status ------------------------------------------------------------------------------------------------------

    def _status(self, key, d: dict, thash: str) -> None:
        pods = self.pods.get(key, [])
        want = d["spec"].get("replicas", 1)
        ready = sum(p.ready for p in pods)
        updated = sum(p.template_hash == thash for p in pods)
        available = ready >= want
        done = available and updated == want and len(pods) == want
        t = now()
        old_conditions = {c["type"]: c for c in (d.get("status") or {}).get("conditions") or []}

        def cond(type_, status, reason, message):
            prev = old_conditions.get(type_)
            since = prev["lastTransitionTime"] if prev and prev["status"] == status else t
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": since, "lastUpdateTime": prev.get("lastUpdateTime", t)
                    if prev and prev["status"] == status and prev["reason"] == reason else t}

        status = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": len(pods),
                  "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
                  "conditions": [
                      cond("Available", "True" if available else "False",
                           "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                           "Deployment has minimum availability." if available
                           else "Deployment does not have minimum availability."),
                      cond("Progressing", "True", "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                           f'ReplicaSet "{key[1]}-{thash[:8]}" has successfully progressed.' if done
                           else f'ReplicaSet "{key[1]}-{thash[:8]}" is progressing.')]}
        if len(pods) - ready:
            status["unavailableReplicas"] = len(pods) - ready
        for k in ("readyReplicas", "availableReplicas", "updatedReplicas"):
            if not status[k]:
                del status[k]
        if (d.get("status") or {}) != status:
            kind = self.api.kind("apps", "v1", "deployments")
            self.api.update(kind, key[0], key[1], {**d, "status": status}, "deployment-controller", "status")

    def _write_targets(self) -> None:
        """Every running pod's named ports, in Prometheus' file_sd format (what a PodMonitor would select), and
        pods.json: each replica's address, pid, readiness, restarts and log (what `kubectl get pods` would show)."""
        groups = []
        for (ns, dep), pods in sorted(self.pods.items()):
            for p in pods:
                if p.proc is None or p.proc.returncode is not None:
                    continue
                for pname, port in p.ports.items():
                    groups.append({"targets": [f"{p.ip}:{port}"],
                                   "labels": {"namespace": ns, "pod": p.name, "deployment": dep, "port": pname}})
        pods = {p.name: {"namespace": ns, "deployment": dep, "ip": p.ip,
                         "pid": p.host_pid if self.containers else (p.proc.pid if p.proc else None),
                         "container": p.container_name,
                         "running": p.proc is not None and p.proc.returncode is None, "ready": p.ready,
                         "restarts": p.restarts, "log": str(p.log)}
                for (ns, dep), ps in sorted(self.pods.items()) for p in ps}
        for path, data in ((self.targets, groups), (self.pods_dir / "pods.json", pods)):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)  # atomic: readers never see half a file


def _rollout_limits(strategy: dict, replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as the Deployment controller resolves them: percentages of the replicas, surge
    rounded up, unavailability down, and never both 0 (https://kubernetes.io/docs/concepts/workloads/controllers/
    deployment/#rolling-update-deployment)."""
    rolling = strategy.get("rollingUpdate") or {}

    def resolve(value, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            exact = int(value[:-1]) * replicas / 100
            return int(-(-exact // 1)) if round_up else int(exact)
        return int(value)

    surge = resolve(rolling.get("maxSurge", "25%"), True)
    unavailable = resolve(rolling.get("maxUnavailable", "25%"), False)
    return surge, (1 if surge == 0 and unavailable == 0 else unavailable)


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` references; `$$(VAR)` escapes."""
    return re.sub(r"\$\$\(|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$(" if m.group(0) == "$$(" else env.get(m.group(1), m.group(0)), value)


def _check(ip: str, port: int, http: dict | None) -> bool:
    try:
        if http is None:
            with socket.create_connection((ip, int(port)), timeout=1):
                return True
        with urllib.request.urlopen(f"http://{ip}:{port}{http.get('path', '/')}", timeout=1) as r:
            return 200 <= r.status < 400
    except (OSError, ValueError):
        return False
