"""The Kubernetes API test double against behaviour a real API server shows. Each test cites the documentation (or
source) of the behaviour it checks; kubectl 1.32 is the client wherever a user would use it."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from kafka_io import wait_until
from kube_cluster import kube_double

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "sensorpipe.io_sensorpipelines.yaml"
SP = "/apis/sensorpipe.io/v1alpha1/namespaces/default/sensorpipelines"
CM = "/api/v1/namespaces/default/configmaps"
APPLY = "application/apply-patch+yaml"


@pytest.fixture(scope="module")
def k(tmp_path_factory):
    with kube_double(tmp_path_factory.mktemp("double")) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(CRD))
        yield cluster


def pipeline(name: str, **spec_extra) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "smart-building.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"].update(spec_extra)
    return doc


def configmap(name: str, data: dict, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": data}


def apply(k, path: str, obj: dict, manager: str, force: bool = False):
    q = f"?fieldManager={manager}" + ("&force=true" if force else "")
    return k.request("PATCH", f"{path}/{obj['metadata']['name']}{q}", json.dumps(obj).encode(), APPLY)


def test_discovery_serves_builtins_and_stored_crds_to_kubectl(k):
    """Aggregated discovery (https://kubernetes.io/docs/concepts/overview/kubernetes-api/#aggregated-discovery)
    lists every resource with its short names; a CRD's group appears once the CRD is stored."""
    out = k.kubectl("api-resources").stdout
    assert any(line.split()[:2] == ["sensorpipelines", "sp"] for line in out.splitlines()), out
    assert any(line.split()[:2] == ["deployments", "deploy"] for line in out.splitlines()), out
    code, body, headers = k.request("GET", "/apis", accept="application/json;g=apidiscovery.k8s.io;v=v2;"
                                                          "as=APIGroupDiscoveryList,application/json")
    assert code == 200 and headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    groups = {g["metadata"]["name"]: g for g in body["items"]}
    sp = groups["sensorpipe.io"]["versions"][0]["resources"][0]
    assert {s["subresource"] for s in sp["subresources"]} == {"status", "scale"}
    assert k.request("GET", "/version")[1]["minor"] == "32"


def test_list_with_label_and_field_selectors_and_paging(k):
    """Label selectors (=, !=, in, notin, exists), field selectors on metadata.name, and limit/continue
    (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/,
    https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks)."""
    for i, tier in enumerate(["a", "b", "c"]):
        assert k.request("POST", CM, configmap(f"sel-{i}", {"i": str(i)}, labels={"tier": tier, "sel": "yes"}))[0] == 201

    def names(q):
        code, body, _ = k.request("GET", f"{CM}?{q}")
        assert code == 200, body
        return sorted(o["metadata"]["name"] for o in body["items"])

    assert names("labelSelector=sel,tier%3Da") == ["sel-0"]
    assert names("labelSelector=sel,tier!%3Da") == ["sel-1", "sel-2"]
    assert names("labelSelector=tier+in+(a,c)") == ["sel-0", "sel-2"]
    assert names("labelSelector=sel,tier+notin+(a)") == ["sel-1", "sel-2"]
    assert names("fieldSelector=metadata.name%3Dsel-1") == ["sel-1"]
    code, page, _ = k.request("GET", f"{CM}?labelSelector=sel&limit=2")
    assert len(page["items"]) == 2 and page["metadata"]["continue"]
    code, rest, _ = k.request("GET", f"{CM}?labelSelector=sel&limit=2&continue={page['metadata']['continue']}")
    assert [o["metadata"]["name"] for o in rest["items"]] == ["sel-2"] and "continue" not in rest["metadata"]


def test_watch_resumes_from_a_resource_version_and_translates_selector_transitions(k):
    """A watch from resourceVersion N sends every later change; an object leaving the selector arrives as DELETED
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes)."""
    code, created, _ = k.request("POST", CM, configmap("w-1", {"v": "1"}, labels={"watch": "me"}))
    rv = created["metadata"]["resourceVersion"]
    k.request("PATCH", f"{CM}/w-1", {"data": {"v": "2"}}, "application/merge-patch+json")
    k.request("PATCH", f"{CM}/w-1", {"metadata": {"labels": {"watch": "no"}}}, "application/merge-patch+json")
    events = list(k.watch(f"{CM}?watch=true&labelSelector=watch%3Dme&resourceVersion={rv}&timeoutSeconds=1"))
    assert [(e["type"], e["object"]["data"]["v"]) for e in events] == [("MODIFIED", "2"), ("DELETED", "2")]


def test_watch_bookmarks_carry_the_current_resource_version(k):
    """With allowWatchBookmarks the server may send BOOKMARK events holding only apiVersion, kind and
    metadata.resourceVersion (https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks)."""
    _, listed, _ = k.request("GET", CM)
    rv = listed["metadata"]["resourceVersion"]

    def later_write():
        time.sleep(0.3)
        k.request("POST", CM, configmap("bm-1", {}))

    threading.Thread(target=later_write).start()
    events = list(k.watch(f"{CM}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=3"))
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks, events
    assert marks[-1]["object"]["kind"] == "ConfigMap" and marks[-1]["object"]["apiVersion"] == "v1"
    added = [e for e in events if e["type"] == "ADDED"]
    assert int(marks[-1]["object"]["metadata"]["resourceVersion"]) >= int(added[0]["object"]["metadata"]["resourceVersion"])


def test_a_too_old_resource_version_is_an_error_event_not_an_http_error(tmp_path):
    """Resuming from a compacted resourceVersion answers HTTP 200 and one ERROR event with a 410 Expired Status
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#410-gone-responses), which client-go and
    kube-runtime answer with a fresh list."""
    with kube_double(tmp_path, history=5) as k:
        rvs = [k.request("POST", CM, configmap(f"old-{i}", {}))[1]["metadata"]["resourceVersion"] for i in range(8)]
        events = list(k.watch(f"{CM}?watch=true&resourceVersion={rvs[0]}&timeoutSeconds=2"))
        assert len(events) == 1 and events[0]["type"] == "ERROR", events
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
        fresh = list(k.watch(f"{CM}?watch=true&resourceVersion={rvs[-2]}&timeoutSeconds=1"))
        assert [e["object"]["metadata"]["name"] for e in fresh] == ["old-7"]


def test_server_side_apply_owns_fields_per_manager(k):
    """Server-side apply (https://kubernetes.io/docs/reference/using-api/server-side-apply/): a second manager
    setting a field to another value conflicts (409, FieldManagerConflict); the same value is shared ownership;
    force takes the field over; a field its only applier stops applying is removed, a co-owned one stays."""
    code, _, _ = apply(k, CM, configmap("ssa", {"a": "1", "b": "1", "c": "1"}), "alice")
    assert code == 201
    code, body, _ = apply(k, CM, configmap("ssa", {"a": "2"}), "bob")
    assert code == 409 and body["reason"] == "Conflict", body
    cause = body["details"]["causes"][0]
    assert (cause["reason"], cause["field"]) == ("FieldManagerConflict", ".data.a"), cause
    assert cause["message"] == 'conflict with "alice" using v1', cause
    code, shared, _ = apply(k, CM, configmap("ssa", {"b": "1"}), "bob")
    assert code == 200
    code, forced, _ = apply(k, CM, configmap("ssa", {"a": "2", "b": "1"}), "bob", force=True)
    assert code == 200 and forced["data"]["a"] == "2"
    # alice stops applying a (now bob's), b (shared) and c (hers alone): only c goes.
    code, after, _ = apply(k, CM, configmap("ssa", {}), "alice")
    assert code == 200 and after["data"] == {"a": "2", "b": "1"}, after["data"]
    owners = {e["manager"]: e["fieldsV1"] for e in after["metadata"]["managedFields"]}
    assert owners["bob"] == {"f:data": {"f:a": {}, "f:b": {}}}


def test_an_unchanged_apply_keeps_the_resource_version_and_sends_no_event(k):
    """No-op writes do not change resourceVersion (apiserver skips the storage update when nothing changed;
    https://kubernetes.io/docs/reference/using-api/server-side-apply/ — controllers re-apply every reconcile)."""
    _, first, _ = apply(k, CM, configmap("noop", {"x": "1"}), "ctl")
    _, second, _ = apply(k, CM, configmap("noop", {"x": "1"}), "ctl")
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    events = list(k.watch(f"{CM}?watch=true&fieldSelector=metadata.name%3Dnoop"
                          f"&resourceVersion={first['metadata']['resourceVersion']}&timeoutSeconds=1"))
    assert events == []


def test_keyed_lists_merge_by_key_under_apply_and_strategic_merge(k):
    """Containers are a list map keyed by name (`patchMergeKey`/`listType=map` in the Go types): strategic merge
    and apply update one element without replacing the others
    (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/)."""
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "keyed"},
           "spec": {"selector": {"matchLabels": {"app": "k"}}, "template": {
               "metadata": {"labels": {"app": "k"}},
               "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}}
    path = "/apis/apps/v1/namespaces/default/deployments"
    assert apply(k, path, dep, "ctl")[0] == 201
    code, patched, _ = k.request("PATCH", f"{path}/keyed", {"spec": {"template": {"spec": {
        "containers": [{"name": "b", "image": "b:2"}]}}}}, "application/strategic-merge-patch+json")
    assert code == 200
    assert [(c["name"], c["image"]) for c in patched["spec"]["template"]["spec"]["containers"]] == \
        [("a", "a:1"), ("b", "b:2")]
    assert patched["spec"]["replicas"] == 1  # defaulted like the API server does


def test_json_patch_test_of_a_missing_field_against_null_succeeds(k):
    """The API server's JSON patch treats `test` of an absent path against null as a match; kube-runtime's
    finalizer helper adds its first finalizer that way (kube-runtime src/finalizer.rs)."""
    k.request("POST", CM, configmap("jp", {}))
    code, body, _ = k.request("PATCH", f"{CM}/jp", [{"op": "test", "path": "/metadata/finalizers", "value": None},
                                                   {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]}],
                              "application/json-patch+json")
    assert code == 200 and body["metadata"]["finalizers"] == ["a/b"], body
    code, body, _ = k.request("PATCH", f"{CM}/jp", [{"op": "test", "path": "/metadata/finalizers/0", "value": "x"}],
                              "application/json-patch+json")
    assert code == 422
    k.request("PATCH", f"{CM}/jp", {"metadata": {"finalizers": None}}, "application/merge-patch+json")


def test_status_and_generation_follow_the_subresource_rules(k):
    """With a status subresource, the main resource ignores status and /status ignores everything else;
    metadata.generation moves with spec changes only
    (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#status-subresource)."""
    code, created, _ = apply(k, SP, {**pipeline("gen"), "status": {"phase": "Fake"}}, "kubectl")
    assert code == 201 and "status" not in created and created["metadata"]["generation"] == 1
    code, st, _ = k.request("PATCH", f"{SP}/gen/status", {"spec": {"deletionPolicy": "Delete"},
                                                          "status": {"phase": "Running"}},
                            "application/merge-patch+json")
    assert code == 200 and st["status"]["phase"] == "Running" and st["spec"]["deletionPolicy"] == "Retain"
    assert st["metadata"]["generation"] == 1
    code, meta, _ = k.request("PATCH", f"{SP}/gen", {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "X"}},
                              "application/merge-patch+json")
    assert meta["metadata"]["generation"] == 1 and meta["status"]["phase"] == "Running"
    code, spec, _ = k.request("PATCH", f"{SP}/gen", {"spec": {"deletionPolicy": "Delete"}},
                              "application/merge-patch+json")
    assert spec["metadata"]["generation"] == 2


def test_scale_subresource_reads_and_writes_the_replica_paths(k):
    """`kubectl scale` patches /scale; the CRD's specReplicasPath receives it and an autoscaling/v1 Scale comes
    back (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#scale-subresource)."""
    spec = pipeline("scaled")
    spec["spec"]["workers"] = {"replicas": 1}
    apply(k, SP, spec, "kubectl")
    k.kubectl("scale", "sp/scaled", "--replicas=3")
    code, scale, _ = k.request("GET", f"{SP}/scaled/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    assert k.request("GET", f"{SP}/scaled")[1]["spec"]["workers"]["replicas"] == 3


def test_printer_columns_come_back_as_a_table(k):
    """`kubectl get` asks for a Table; the server evaluates the CRD's additionalPrinterColumns
    (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#additional-printer-columns)."""
    apply(k, SP, pipeline("cols"), "kubectl")
    k.request("PATCH", f"{SP}/cols/status", {"status": {"phase": "Running", "readyReplicas": 2, "desiredReplicas": 2,
                                                        "lag": {"records": 17},
                                                        "conditions": [{"type": "Ready", "status": "True"}]}},
              "application/merge-patch+json")
    out = k.kubectl("get", "sp", "cols").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "PHASE", "REPLICAS", "DESIRED", "LAG", "AGE"]
    assert out[1].split()[:6] == ["cols", "True", "Running", "2", "2", "17"]


def test_finalizers_hold_deletion_and_owner_references_collect_dependents(k):
    """Deleting an object with finalizers sets deletionTimestamp and waits; removing the last finalizer deletes it
    (https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/). Dependents whose owners are
    gone are deleted in the background
    (https://kubernetes.io/docs/concepts/architecture/garbage-collection/#background-deletion)."""
    _, owner, _ = k.request("POST", CM, configmap("owner", {}, finalizers=["example.com/hold"]))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    k.request("POST", CM, configmap("child", {}, ownerReferences=[ref]))
    code, marked, _ = k.request("DELETE", f"{CM}/owner")
    assert code == 200 and marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["generation"] == owner["metadata"]["generation"] + 1
    assert k.request("GET", f"{CM}/owner")[0] == 200 and k.request("GET", f"{CM}/child")[0] == 200
    code, body, _ = k.request("PATCH", f"{CM}/owner", {"metadata": {"finalizers": ["example.com/new", "example.com/hold"]}},
                              "application/merge-patch+json")
    assert code == 422, "no new finalizers once deletion started"
    k.request("PATCH", f"{CM}/owner", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert k.request("GET", f"{CM}/owner")[0] == 404
    wait_until(lambda: k.request("GET", f"{CM}/child")[0] == 404, 5, "the dependent to be collected", 0.1)


def test_events_are_served_in_both_views_and_shown_by_describe(k):
    """An events.k8s.io/v1 Event is also a core/v1 Event (regarding ↔ involvedObject, note ↔ message), and
    `kubectl describe` finds it by involvedObject field selectors
    (https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/)."""
    _, sp, _ = apply(k, SP, pipeline("evented"), "kubectl")
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "evented.1"},
          "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "sensorpipe-operator",
          "reportingInstance": "op-1", "action": "Scale", "reason": "ScaledUp", "type": "Normal",
          "note": "lag 9000 records over target 5000: 1 -> 2 workers",
          "regarding": {"apiVersion": "sensorpipe.io/v1alpha1", "kind": "SensorPipeline", "name": "evented",
                        "namespace": "default", "uid": sp["metadata"]["uid"]}}
    assert k.request("POST", "/apis/events.k8s.io/v1/namespaces/default/events", ev)[0] == 201
    code, core, _ = k.request("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Devented")
    assert [e["message"] for e in core["items"]] == [ev["note"]]
    out = k.kubectl("describe", "sp", "evented").stdout
    assert "ScaledUp" in out and "lag 9000 records over target 5000" in out, out


def test_schema_validation_rejects_bad_specs_and_strict_unknown_fields(k):
    """The CRD's structural schema is enforced: a wrong type is 422 Invalid; under fieldValidation=Strict
    (kubectl's default) an unknown field is an error, otherwise it is pruned
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)."""
    bad = pipeline("bad")
    bad["spec"]["input"]["partitions"] = "many"
    p = k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert p.returncode != 0 and "spec.input.partitions" in p.stderr, p.stderr
    unknown = pipeline("unknown")
    unknown["spec"]["input"]["colour"] = "blue"
    p = k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(unknown), check=False)
    assert p.returncode != 0 and 'unknown field "spec.input.colour"' in p.stderr, p.stderr
    code, pruned, headers = k.request("POST", SP + "?fieldValidation=Warn", unknown)
    assert code == 201 and "colour" not in pruned["spec"]["input"] and "colour" in headers.get("Warning", "")


def test_leases_conflict_between_holders_until_forced(k):
    """Leader election with server-side apply: a second identity applying holderIdentity conflicts until it
    forces (kube-lease-manager's lock protocol; https://kubernetes.io/docs/concepts/architecture/leases/)."""
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
             "spec": {"holderIdentity": "op-a", "leaseDurationSeconds": 15}}
    assert apply(k, path, lease, "op-a")[0] == 201
    lease["spec"]["holderIdentity"] = "op-b"
    assert apply(k, path, lease, "op-b")[0] == 409
    code, taken, _ = apply(k, path, lease, "op-b", force=True)
    assert code == 200 and taken["spec"]["holderIdentity"] == "op-b"


RUNNER_SCRIPT = """
import http.server, os, sys
with open("env.txt", "w") as f:
    f.write(os.environ["POD_NAME"] + " " + os.environ["GREETING"] + " " + open(sys.argv[2]).read())
http.server.HTTPServer((sys.argv[1].split(":")[0], int(sys.argv[1].split(":")[1])),
                       http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_the_runner_runs_scales_rolls_restarts_and_stops_deployments(tmp_path):
    """Deployments become local processes: env from values, fieldRefs and ConfigMaps, ConfigMap volumes, readiness
    from the probe, status written back (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/),
    a template change rolls, scale and delete stop processes, an exited process is restarted."""
    script = tmp_path / "serve.py"
    script.write_text(RUNNER_SCRIPT)
    launcher = tmp_path / "serve"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    launcher.chmod(0o755)
    with kube_double(tmp_path / "double", runner={"example.com/serve": str(launcher)}) as k:
        objs = [configmap("settings", {"greeting": "hello", "file.txt": "from-volume"}),
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                     "metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{
                         "name": "web", "image": "example.com/serve:1.0", "args": ["0.0.0.0:8080", "/cfg/file.txt"],
                         "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                 {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings",
                                                                                      "key": "greeting"}}}],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                         "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
                         "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}]}}}}]
        k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objs))
        k.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        status = k.request("GET", "/apis/apps/v1/namespaces/default/deployments/web")[1]["status"]
        assert (status["readyReplicas"], status["updatedReplicas"], status["observedGeneration"]) == (2, 2, 1)
        targets = json.loads((k.pods_dir / "targets.json").read_text())
        assert len(targets) == 2 and len({t["targets"][0] for t in targets}) == 2
        envs = sorted(p.read_text() for p in k.pods_dir.glob("*/env.txt"))
        assert [e.split(" ", 1)[1] for e in envs] == ["hello from-volume"] * 2
        assert sorted(e.split()[0] for e in envs) == sorted(t["labels"]["pod"] for t in targets)

        first = {t["labels"]["pod"] for t in targets}
        k.kubectl("set", "env", "deployment/web", "EXTRA=1")
        k.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        wait_until(lambda: len(json.loads((k.pods_dir / "targets.json").read_text())) == 2, 30, "old pods gone")
        second = {t["labels"]["pod"] for t in json.loads((k.pods_dir / "targets.json").read_text())}
        assert not first & second, "a template change replaces every replica"

        victim = next(iter(k.pods("web").values()))
        log = pathlib.Path(victim["log"])
        assert log.read_text().count("starting ") == 1
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: log.read_text().count("starting ") == 2, 30, "the killed replica to be restarted")

        k.kubectl("scale", "deployment/web", "--replicas=1")
        wait_until(lambda: len(json.loads((k.pods_dir / "targets.json").read_text())) == 1, 30, "scale down")
        k.kubectl("delete", "deployment/web")
        wait_until(lambda: json.loads((k.pods_dir / "targets.json").read_text()) == [], 30, "processes stopped")
        assert subprocess.run(["pgrep", "-f", str(script)], capture_output=True).returncode == 1, "no process left"


PROBE = ("id -u; id -G; stat -c '%a %u:%g' /secret/key; cat /secret/key >/dev/null && echo key-readable; "
         "touch /probe 2>&1 || true; echo done; exec sleep 300")


def probe_deployment(name: str, image: str, pod_security: dict, container_security: dict | None = None) -> dict:
    """A Deployment whose one container reports its ids, a Secret file's mode, owner and readability, and whether
    its root filesystem is writable, then waits."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"automountServiceAccountToken": False, "securityContext": pod_security,
                         "containers": [{"name": "probe", "image": image, "command": ["/bin/sh", "-c", PROBE],
                                         "securityContext": container_security or {},
                                         "resources": {"limits": {"memory": "64Mi"}},
                                         "volumeMounts": [{"name": "s", "mountPath": "/secret", "readOnly": True}]}],
                         "volumes": [{"name": "s", "secret": {"secretName": "probe-secret", "defaultMode": 0o400}}]}}}}


def test_containers_get_volumes_and_security_contexts_as_the_kubelet_gives_them(tmp_path, container_images):
    """The runner's container mode (kube_double/containers.py): a Secret file with defaultMode 0400 is root's and
    unreadable by a non-root container unless the pod's fsGroup makes it group-owned and group-readable (the
    kubelet's SetVolumeOwnership, https://kubernetes.io/docs/tasks/configure-pod-container/security-context/);
    readOnlyRootFilesystem makes / read-only; runAsNonRoot with uid 0 is refused before start."""
    image = container_images["worker"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe-secret"},
              "stringData": {"key": "not-for-everyone"}}
    nonroot = {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True}
    objs = [secret,
            probe_deployment("without-fsgroup", image, nonroot, {"readOnlyRootFilesystem": True}),
            probe_deployment("with-fsgroup", image, {**nonroot, "fsGroup": 2000}),
            probe_deployment("as-root", image, {"runAsUser": 0, "runAsNonRoot": True})]
    with kube_double(tmp_path / "double", containers=True) as k:
        k.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objs))

        def output(deployment: str) -> str:
            """What the container printed (the log after the runner's own "starting" line, which quotes the
            command), once it is complete; or the runner's refusal."""
            pods = k.pods(deployment)
            text = pathlib.Path(next(iter(pods.values()))["log"]).read_text() if pods else ""
            if "--- cannot start" in text:
                return text
            printed = text.partition(" starting ")[2].partition("\n")[2]
            return "\n" + printed if printed.endswith("done\n") else ""

        without = wait_until(lambda: output("without-fsgroup"), 60, "the probe without fsGroup")
        assert "\n65532\n65532\n400 0:0\n" in without, without
        assert "Permission denied" in without and "key-readable" not in without, without
        assert "Read-only file system" in without, without
        with_group = wait_until(lambda: output("with-fsgroup"), 60, "the probe with fsGroup")
        assert "\n65532\n65532 2000\n440 0:2000\nkey-readable\n" in with_group, with_group
        assert "Read-only file system" not in with_group, with_group
        as_root = wait_until(lambda: output("as-root"), 60, "the runAsNonRoot refusal")
        assert "cannot start: container has runAsNonRoot and image will run as root" in as_root, as_root
        assert "not-for-everyone" not in (k.work / "double.log").read_text()
