"""The runner's container mode: each pod is a podman container started from its image, with what the kubelet would
give it — so the journey tests what a container changes (the image's user, a read-only root filesystem, mounted
ConfigMap and Secret files with their modes and owners, dropped capabilities, memory and CPU limits).

From the pod spec:
- image (present locally: `--pull never`; else the pod fails to start, like ErrImageNeverPull), command
  (`--entrypoint`), args, env (passed by name from podman's environment, so no value, secret or not, is in any
  argv), and the ports and probes the runner checks on the pod's loopback address;
- ConfigMap, Secret and emptyDir volumes written as the kubelet writes them: files owned by root with the item's
  mode or the volume's `defaultMode` (0644 when unset); with the pod's `fsGroup`, group-owned by it and made
  group-readable (the kubelet's SetVolumeOwnership ORs 0440 into read-only volumes' files), and `fsGroup` added to
  the container's groups; mounted read-only when the mount says so, `subPath` as the single file;
- the security context, container over pod: runAsUser/runAsGroup (`--user`), runAsNonRoot (refused, as the kubelet
  does, when the container would run as uid 0 or the image's user is not numeric), readOnlyRootFilesystem
  (`--read-only` without podman's extra tmpfs mounts, which Kubernetes does not add), capabilities,
  allowPrivilegeEscalation: false (`no-new-privileges`), supplementalGroups, a seccomp profile of Unconfined;
- resources.limits memory and cpu (`--memory`, `--cpus`).

The network is the host's (`--network host`): pods bind their own 127.0.1.x address and reach the broker and the
API double on loopback. The double serves plain HTTP, which in-cluster configuration cannot use, so a pod whose
service account token would be mounted gets the double's kubeconfig mounted instead (KUBECONFIG names it); a pod
with `automountServiceAccountToken: false` gets neither, as in a cluster. Needs rootful podman (the kubelet's
chown of volume files needs root too); podman's settings come from images/containers.conf."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "images" / "containers.conf"
KUBECONFIG_MOUNT = "/var/run/kube-double/kubeconfig"
LABEL = "io.sensorpipe.kube-double"


def podman_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONTAINERS_CONF": str(CONF)}


def check_available() -> None:
    if shutil.which("podman") is None:
        raise RuntimeError("the runner's container mode needs podman (scripts/base-image.sh installs it)")
    if os.geteuid() != 0:
        raise RuntimeError("the runner's container mode needs root (rootful podman; volume files owned as the "
                           "kubelet owns them)")


def _security(pod_spec: dict, container: dict) -> dict:
    """The container's effective security context: its own fields over the pod's."""
    pod_sc = pod_spec.get("securityContext") or {}
    c_sc = container.get("securityContext") or {}
    merged = {k: pod_sc[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile") if k in pod_sc}
    merged.update(c_sc)
    merged["fsGroup"] = pod_sc.get("fsGroup")
    merged["supplementalGroups"] = pod_sc.get("supplementalGroups") or []
    return merged


def write_volumes(pod_dir: Path, pod_spec: dict, lookup) -> dict[str, Path]:
    """Writes each ConfigMap, Secret and emptyDir volume under `pod_dir`/volumes/ the way the kubelet does;
    returns volume name → host directory. `lookup(kind, name)` gives the object's key → value (or None)."""
    fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
    out = {}
    for v in pod_spec.get("volumes") or []:
        vdir = pod_dir / "volumes" / v["name"]
        if vdir.exists():
            shutil.rmtree(vdir)
        vdir.mkdir(parents=True)
        src = v.get("configMap") or v.get("secret")
        if src is not None:
            kind = "configmap" if "configMap" in v else "secret"
            data = lookup(kind, src.get("name") or src.get("secretName")) or {}
            default_mode = src.get("defaultMode", 0o644)
            items = src.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    continue
                path = vdir / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data[item["key"]])
                mode = item.get("mode", default_mode)
                os.chown(path, 0, 0)
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                    mode |= 0o440
                os.chmod(path, mode)
            os.chmod(vdir, 0o755 if fs_group is None else 0o2755)
            if fs_group is not None:
                os.chown(vdir, 0, fs_group)
        elif "emptyDir" in v:
            os.chmod(vdir, 0o777)
        out[v["name"]] = vdir
    return out


def _image_user(image: str) -> str | None:
    """The image's USER, or None when the image is not present."""
    p = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}", image],
                       env=podman_env(), capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def _quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(q))
    if not m:
        raise RuntimeError(f"memory limit {q!r} is not a quantity")
    return int(float(m.group(1)) * units.get(m.group(2) or "", 1))


def _quantity_cpus(q: str) -> str:
    s = str(q)
    return f"{int(s[:-1]) / 1000:g}" if s.endswith("m") else s


def podman_argv(name: str, pod_spec: dict, container: dict, env: dict[str, str], volumes: dict[str, Path],
                kubeconfig: Path, label: str) -> list[str]:
    """The `podman run` command line of one pod (env values are not in it: see `podman_env` and `-e NAME`)."""
    image = container.get("image", "")
    user = _image_user(image)
    if user is None:
        raise RuntimeError(f'image "{image}" is not present with pull policy Never (ErrImageNeverPull)')
    sc = _security(pod_spec, container)
    argv = ["podman", "run", "--rm", "--replace", "--name", name, "--pull", "never", "--network", "host",
            "--hostname", name[:63], "--label", f"{LABEL}={label}", "--log-driver", "none"]
    uid = sc.get("runAsUser")
    if uid is not None:
        argv += ["--user", f"{uid}:{sc['runAsGroup']}" if sc.get("runAsGroup") is not None else str(uid)]
    elif sc.get("runAsGroup") is not None:
        raise RuntimeError("runAsGroup without runAsUser is not supported by this runner")
    if sc.get("runAsNonRoot"):
        effective = str(uid) if uid is not None else (user.split(":")[0] or "0")
        if not effective.isdigit():
            raise RuntimeError(f"container has runAsNonRoot and image has non-numeric user ({effective}), "
                               "cannot verify user is non-root")
        if int(effective) == 0:
            raise RuntimeError("container has runAsNonRoot and image will run as root")
    for group in ([sc["fsGroup"]] if sc.get("fsGroup") is not None else []) + list(sc["supplementalGroups"]):
        argv += ["--group-add", str(group)]
    if sc.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        argv += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        argv += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        argv += ["--memory", str(_quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        argv += ["--cpus", _quantity_cpus(limits["cpu"])]
    for m in container.get("volumeMounts") or []:
        local = volumes.get(m["name"])
        if local is None:
            raise RuntimeError(f"volume {m['name']!r} is not one this runner provides")
        source = local / m["subPath"] if m.get("subPath") else local
        argv += ["--volume", f"{source}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
    if pod_spec.get("automountServiceAccountToken") is not False:
        argv += ["--volume", f"{kubeconfig}:{KUBECONFIG_MOUNT}:ro", "--env", f"KUBECONFIG={KUBECONFIG_MOUNT}"]
    for key in env:
        argv += ["--env", key]
    if container.get("command"):
        argv += ["--entrypoint", json.dumps(container["command"])]
    argv.append(image)
    argv += container.get("args") or []
    return argv


async def host_pid(name: str, tries: int = 40) -> int | None:
    """The host PID of the container's main process, once it runs (what `kill -9` of "the pod" signals)."""
    for _ in range(tries):
        proc = await asyncio.create_subprocess_exec(
            "podman", "inspect", "--format", "{{.State.Pid}}", name, env=podman_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        pid = out.decode().strip()
        if proc.returncode == 0 and pid.isdigit() and int(pid) > 0:
            return int(pid)
        await asyncio.sleep(0.25)
    return None


async def kill(name: str) -> None:
    """SIGKILL to the container (the grace period is over); `podman run --rm` then removes it."""
    proc = await asyncio.create_subprocess_exec("podman", "kill", "--signal", "KILL", name, env=podman_env(),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()


def remove_all(label: str) -> None:
    """Removes every container this runner started (also ones a crashed run left behind)."""
    ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={LABEL}={label}"], env=podman_env(),
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], env=podman_env(), capture_output=True)
