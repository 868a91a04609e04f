"""The write and read semantics behind every REST call: create, get, list, update, the patch types and server-side
apply, status and scale subresources, generation, finalizers and deletion, and background garbage collection.

Rules follow https://kubernetes.io/docs/reference/using-api/api-concepts/ and the apiserver's registry strategies:
status changes only through /status when the kind has that subresource; generation moves on spec changes and
on deletion marking, never on status or metadata; a write that changes nothing keeps the resourceVersion and sends
no watch event."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import datetime, timezone

import yaml

from . import events, fields, patches, schema
from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from .resources import Kind, Registry
from .store import Store

CORE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(obj: dict, kind: Kind, with_status: bool) -> dict:
    """What generation tracks: everything but metadata (and status when it has its own subresource)."""
    return {k: v for k, v in obj.items()
            if k not in ("metadata", "apiVersion", "kind") and (with_status or k != "status")}


def _comparable(obj: dict) -> dict:
    md = dict(obj.get("metadata") or {})
    md.pop("resourceVersion", None)
    md["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in md.get("managedFields") or []]
    return {**obj, "metadata": md}


def _get_path(obj: dict, dotted: str):
    cur = obj
    for p in dotted.strip(".").split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def _set_path(obj: dict, dotted: str, value) -> None:
    parts = dotted.strip(".").split(".")
    cur = obj
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


class Api:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry
        self._gc_pending = False
        ns_kind = self.kind("", "v1", "namespaces")
        for name in CORE_NAMESPACES:
            self.create(ns_kind, None, {"metadata": {"name": name}}, "kube-apiserver")

    # --- lookup --------------------------------------------------------------------------------------------------

    def kind(self, group: str, version: str, plural: str) -> Kind:
        k = self.registry.find(group, version, plural)
        if k is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
        return k

    def key(self, kind: Kind) -> tuple[str, str]:
        return events.STORAGE_KEY if kind.plural == "events" else kind.key

    def view(self, kind: Kind, obj: dict) -> dict:
        """The stored object as `kind`'s API version presents it."""
        if kind.plural == "events" and kind.group == "":
            return events.to_core(obj)
        return {**obj, "apiVersion": kind.api_version, "kind": kind.kind}

    def _stored(self, kind: Kind, namespace: str | None, name: str) -> dict:
        obj = self.store.get(self.key(kind), namespace or "", name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict:
        return self.view(kind, self._stored(kind, namespace, name))

    def list(self, kind: Kind, namespace: str | None, match) -> tuple[list[dict], str]:
        items = [self.view(kind, o) for o in self.store.list(self.key(kind), namespace)]
        return [o for o in items if match(o)], str(self.store.rv)

    # --- writes --------------------------------------------------------------------------------------------------

    def _namespace_ok(self, kind: Kind, namespace: str | None) -> None:
        if not kind.namespaced:
            return
        ns = self.store.get(("", "namespaces"), "", namespace or "")
        if ns is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {namespace} because it is "
                                             "being terminated")

    def _validate(self, kind: Kind, obj: dict, validation: str) -> list[str]:
        """Defaults, prunes and validates a custom resource; returns warnings."""
        if kind.schema is None:
            return []
        schema.default(obj, kind.schema)
        unknown = schema.prune(obj, kind.schema)
        name = obj["metadata"].get("name", "")
        if unknown and validation == "Strict":
            raise ApiError(400, "BadRequest", f'{kind.kind} in version "{kind.version}" cannot be handled as a '
                           f'{kind.kind}: strict decoding error: ' + ", ".join(f'unknown field "{u[1:]}"'
                                                                              for u in unknown))
        problems = schema.validate(obj, kind.schema)
        if problems:
            raise invalid(kind, name, problems)
        return [f'unknown field "{u[1:]}"' for u in unknown] if validation == "Warn" else []

    def create(self, kind: Kind, namespace: str | None, body: dict, manager: str, *, validation: str = "Warn",
               dry_run: bool = False, managed: bool = True) -> dict:
        obj = events.from_core(body) if kind.plural == "events" and kind.group == "" else copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise invalid(kind, "", ["metadata.name: Required value: name or generateName is required"])
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        if kind.namespaced:
            if md.get("namespace") not in (None, "", namespace):
                raise bad_request(f"the namespace of the provided object ({md.get('namespace')}) does not match "
                                  f"the namespace sent on the request ({namespace})")
            md["namespace"] = namespace
            self._namespace_ok(kind, namespace)
        else:
            md.pop("namespace", None)
        if self.store.get(self.key(kind), md.get("namespace", ""), md["name"]) is not None:
            raise already_exists(kind, md["name"])
        obj["apiVersion"] = events.API_VERSION if kind.plural == "events" else kind.api_version
        obj["kind"] = kind.kind
        if kind.status:
            obj.pop("status", None)
        md.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            md.pop(k, None)
        _defaults(kind, obj)
        warnings = self._validate(kind, obj, validation)
        if managed:
            md.pop("managedFields", None)
            fields.record_update(kind, None, obj, manager)
        if dry_run:
            return self.view(kind, obj)
        self.store.write(self.key(kind), obj, None, "ADDED")
        self._after_write(kind, obj, None)
        obj = self.view(kind, obj)
        if warnings:
            obj["_warnings"] = warnings  # the server turns these into Warning headers
        return obj

    def _commit(self, kind: Kind, old: dict, new: dict, manager: str | None, subresource: str,
                validation: str = "Warn", dry_run: bool = False) -> dict:
        """Writes `new` over `old` under the subresource rules; `manager=None` means managed fields are already
        computed (apply)."""
        name = old["metadata"]["name"]
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name, "the object has been modified; please apply your changes to the latest "
                                       "version and try again")
        md = new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "resourceVersion"):
            if k in old["metadata"]:
                md[k] = old["metadata"][k]
            else:
                md.pop(k, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status"),
                   "metadata": {**old["metadata"], "managedFields": md.get("managedFields",
                                                                          old["metadata"].get("managedFields"))}}
            if new["status"] is None:
                new.pop("status")
        elif kind.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if old["metadata"].get("deletionTimestamp"):
            added = set(md.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(422, "Invalid", f'{kind.kind} "{name}" is invalid: metadata.finalizers: Forbidden: '
                                               "no new finalizers can be added if the object is being deleted")
        warnings = self._validate(kind, new, validation) if subresource != "status" else []
        if manager is not None:
            fields.record_update(kind, old, new, manager, subresource)
        if _body(new, kind, not kind.status) != _body(old, kind, not kind.status):
            md["generation"] = old["metadata"].get("generation", 1) + 1
        if _comparable(new) == _comparable(old):
            return self.view(kind, old)  # a no-op: same resourceVersion, no event
        if dry_run:
            return self.view(kind, new)
        if md.get("deletionTimestamp") and not md.get("finalizers") and kind.plural != "namespaces":
            self.store.write(self.key(kind), new, old, "DELETED")
        else:
            self.store.write(self.key(kind), new, old, "MODIFIED")
        self._after_write(kind, new, old)
        out = self.view(kind, new)
        if warnings:
            out["_warnings"] = warnings
        return out

    def update(self, kind: Kind, namespace: str | None, name: str, body: dict, manager: str, subresource: str = "",
               validation: str = "Warn", dry_run: bool = False) -> dict:
        old = self._stored(kind, namespace, name)
        if kind.plural == "events" and kind.group == "":
            body = events.from_core(body)
        return self._commit(kind, old, copy.deepcopy(body), manager, subresource, validation, dry_run)

    def patch(self, kind: Kind, namespace: str | None, name: str, content_type: str, raw: bytes, manager: str,
              subresource: str = "", force: bool = False, validation: str = "Warn", dry_run: bool = False) -> dict:
        ctype = content_type.split(";")[0].strip()
        try:
            body = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding patch: {e}") from e
        if ctype == "application/apply-patch+yaml":
            if not isinstance(body, dict):
                raise bad_request("an apply patch is an object")
            return self._apply(kind, namespace, name, body, manager, subresource, force, validation, dry_run)
        if force:
            raise bad_request("force is only allowed for apply patches")
        old = self._stored(kind, namespace, name)
        current = self.view(kind, old) if kind.plural == "events" else copy.deepcopy(old)
        try:
            if ctype == "application/merge-patch+json":
                new = patches.merge_patch(current, body)
            elif ctype == "application/json-patch+json":
                new = patches.json_patch(current, body)
            elif ctype == "application/strategic-merge-patch+json":
                if kind.schema is not None:
                    raise ApiError(415, "UnsupportedMediaType", "strategic merge patch is not supported for custom "
                                                                "resources; use a merge or JSON patch")
                new = patches.strategic_merge_patch(current, body)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: "
                                                            f"{ctype}")
        except patches.PatchError as e:
            raise ApiError(422, "Invalid", str(e)) from e
        if not isinstance(new, dict):
            raise bad_request("the patch does not produce an object")
        if kind.plural == "events" and kind.group == "":
            new = events.from_core(new)
        return self._commit(kind, old, new, manager, subresource, validation, dry_run)

    def _apply(self, kind: Kind, namespace, name, body, manager, subresource, force, validation, dry_run) -> dict:
        if body.get("apiVersion") != kind.api_version or body.get("kind") != kind.kind:
            raise bad_request(f"apply patch apiVersion/kind {body.get('apiVersion')}/{body.get('kind')} does not "
                              f"match {kind.api_version}/{kind.kind}")
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise bad_request("the name of the object does not match the name on the URL")
        old = self.store.get(self.key(kind), namespace or "", name)
        if old is None:
            if subresource:
                raise not_found(kind, name)
            body = {**body, "metadata": {**(body.get("metadata") or {}), "name": name}}
            created = copy.deepcopy(body)
            created["metadata"].pop("managedFields", None)
            obj = fields.apply(kind, {"metadata": {}}, created, manager, "", force)
            obj["metadata"]["name"] = name
            return self.create(kind, namespace, obj, manager, validation=validation, dry_run=dry_run, managed=False)
        try:
            new = fields.apply(kind, copy.deepcopy(old), body, manager, subresource, force)
        except fields.ApplyConflict as e:
            raise ApiError(409, "Conflict", str(e), {
                "causes": [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}" using {v}',
                            "field": f} for m, v, f in e.conflicts]}) from e
        return self._commit(kind, old, new, None, subresource, validation, dry_run)

    # --- scale -----------------------------------------------------------------------------------------------------

    def get_scale(self, kind: Kind, namespace: str | None, name: str) -> dict:
        if kind.scale is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({kind.plural}/scale)")
        obj = self._stored(kind, namespace, name)
        md = obj["metadata"]
        selector = _get_path(obj, kind.scale.label_selector) if kind.scale.label_selector else None
        if kind.kind == "Deployment":
            selector = ",".join(f"{k}={v}" for k, v in
                                ((_get_path(obj, "spec.selector.matchLabels") or {}).items()))
        status = {"replicas": _get_path(obj, kind.scale.status_replicas) or 0}
        if selector:
            status["selector"] = selector
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in md},
                "spec": {"replicas": _get_path(obj, kind.scale.spec_replicas) or 0}, "status": status}

    def set_scale(self, kind: Kind, namespace: str | None, name: str, content_type: str, raw: bytes,
                  manager: str, put: bool) -> dict:
        current = self.get_scale(kind, namespace, name)
        body = yaml.safe_load(raw) if raw else {}
        ctype = content_type.split(";")[0].strip()
        if put:
            new = body
        elif ctype == "application/json-patch+json":
            new = patches.json_patch(current, body)
        else:
            new = patches.merge_patch(current, body)
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(kind, name, [f"spec.replicas: Invalid value: {replicas!r}: must be a non-negative integer"])
        old = self._stored(kind, namespace, name)
        obj = copy.deepcopy(old)
        _set_path(obj, kind.scale.spec_replicas, replicas)
        self._commit(kind, old, obj, manager, "")
        return self.get_scale(kind, namespace, name)

    # --- deletion and garbage collection ----------------------------------------------------------------------------

    def delete(self, kind: Kind, namespace: str | None, name: str, propagation: str | None = None,
               preconditions: dict | None = None, dry_run: bool = False) -> dict:
        old = self._stored(kind, namespace, name)
        md = old["metadata"]
        if preconditions:
            for k in ("uid", "resourceVersion"):
                if preconditions.get(k) and preconditions[k] != md.get(k):
                    raise conflict(kind, name, f"Precondition failed: {k} in precondition: {preconditions[k]}, "
                                               f"{k} in object meta: {md.get(k)}")
        if md.get("deletionTimestamp"):
            return self.view(kind, old)
        finalizers = list(md.get("finalizers") or [])
        if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if propagation == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if dry_run:
            return self.view(kind, old)
        if finalizers or kind.plural == "namespaces":
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0,
                                   generation=md.get("generation", 1) + 1)
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            if kind.plural == "namespaces":
                new.setdefault("status", {})["phase"] = "Terminating"
            self.store.write(self.key(kind), new, old, "MODIFIED")
            self._schedule_gc()
            return self.view(kind, new)
        gone = copy.deepcopy(old)
        self.store.write(self.key(kind), gone, old, "DELETED")
        self._after_write(kind, gone, old, deleted=True)
        return self.view(kind, gone)

    def _after_write(self, kind: Kind, obj: dict, old: dict | None, deleted: bool = False) -> None:
        if kind.plural == "customresourcedefinitions":
            self._crd_changed(obj, deleted or bool(obj["metadata"].get("deletionTimestamp")
                                                   and not obj["metadata"].get("finalizers")))
        if deleted or obj["metadata"].get("deletionTimestamp") or (old or {}).get("metadata", {}).get(
                "ownerReferences") != obj["metadata"].get("ownerReferences"):
            self._schedule_gc()

    def _crd_changed(self, crd: dict, deleted: bool) -> None:
        name = crd["metadata"]["name"]
        if deleted:
            for k in self.registry.drop_crd(name):
                for o in self.store.list(k.key):
                    self.store.write(k.key, copy.deepcopy(o), o, "DELETED")
            return
        self.registry.set_crd(crd)
        if not any(c.get("type") == "Established" for c in (crd.get("status") or {}).get("conditions") or []):
            old = crd
            new = copy.deepcopy(crd)
            t = now()
            new["status"] = {"acceptedNames": crd["spec"]["names"], "storedVersions": [
                v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
                "conditions": [{"type": t_, "status": "True", "reason": r, "message": m, "lastTransitionTime": t}
                               for t_, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                                ("Established", "InitialNamesAccepted",
                                                 "the initial names have been accepted"))]}
            self.store.write(self.key(self.kind("apiextensions.k8s.io", "v1", "customresourcedefinitions")), new,
                             old, "MODIFIED")

    def _schedule_gc(self) -> None:
        if self._gc_pending:
            return
        self._gc_pending = True
        try:
            asyncio.get_running_loop().call_later(0.05, self.collect)
        except RuntimeError:  # no loop yet (start-up): nothing to collect
            self._gc_pending = False

    def collect(self) -> None:
        """One garbage collector pass (https://kubernetes.io/docs/concepts/architecture/garbage-collection/):
        dependents of absent owners go (background), foreground owners wait for their dependents, orphaning
        owners release them, terminating namespaces empty."""
        self._gc_pending = False
        kinds = {k.key: k for k in self.registry.all() if k.plural != "events" or k.group}
        live = {(o["metadata"].get("namespace", ""), o["metadata"]["uid"]): (k, o)
                for k in kinds.values() for o in self.store.list(k.key)}
        uids = {uid for _, uid in live}
        again = False
        for (ns, _), (k, o) in list(live.items()):
            md = o["metadata"]
            refs = md.get("ownerReferences") or []
            if refs and not any(r.get("uid") in uids for r in refs):
                if not md.get("deletionTimestamp"):
                    self.delete(k, ns or None, md["name"])
                    again = True
            if md.get("deletionTimestamp"):
                dependents = [(dk, d) for (_, _), (dk, d) in live.items()
                              if any(r.get("uid") == md["uid"] for r in d["metadata"].get("ownerReferences") or [])]
                fins = list(md.get("finalizers") or [])
                if "orphan" in fins:
                    for dk, d in dependents:
                        nd = copy.deepcopy(d)
                        nd["metadata"]["ownerReferences"] = [r for r in nd["metadata"]["ownerReferences"]
                                                             if r.get("uid") != md["uid"]]
                        self._commit(dk, d, nd, "garbage-collector", "")
                    self._drop_finalizer(k, o, "orphan")
                elif "foregroundDeletion" in fins:
                    if dependents:
                        for dk, d in dependents:
                            self.delete(dk, d["metadata"].get("namespace"), d["metadata"]["name"], "Foreground")
                        again = True
                    else:
                        self._drop_finalizer(k, o, "foregroundDeletion")
                if k.plural == "namespaces":
                    inside = [(ik, i) for (ins, _), (ik, i) in live.items() if ins == md["name"] and ik.namespaced]
                    for ik, i in inside:
                        self.delete(ik, md["name"], i["metadata"]["name"])
                    for e in self.store.list(events.STORAGE_KEY, md["name"]):
                        self.store.write(events.STORAGE_KEY, copy.deepcopy(e), e, "DELETED")
                    if inside:
                        again = True
                    elif not md.get("finalizers"):
                        self.store.write(k.key, copy.deepcopy(o), o, "DELETED")
        if again:
            self._schedule_gc()

    def _drop_finalizer(self, kind: Kind, obj: dict, finalizer: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        self._commit(kind, obj, new, "garbage-collector", "")


def _defaults(kind: Kind, obj: dict) -> None:
    """The few built-in defaults users see and controllers read."""
    spec = obj.get("spec")
    if kind.kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    if kind.kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("clusterIP", "None" if spec.get("clusterIP") == "None" else "10.96.0.10")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
    if kind.kind == "Namespace":
        obj.setdefault("status", {})["phase"] = "Active"
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
