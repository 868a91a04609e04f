"""What clients ask before anything else: /version, discovery (aggregated v2 and the legacy per-group documents) and
OpenAPI v3 — a document per group/version whose PATCH operations declare `fieldValidation`, which is how kubectl
decides the server validates fields itself (client-go's QueryParamVerifierV3)."""

from __future__ import annotations

import hashlib
import json

from .resources import Kind, Registry

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# kubectl 1.32 is the newest client here; the dispatcher picks the kubectl matching this minor version.
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.9-sensorpipe-double", "platform": "linux/amd64",
           "goVersion": "go1.23", "compiler": "gc", "buildDate": "2025-09-01T00:00:00Z"}

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource(k: Kind) -> dict:
    r = {"resource": k.plural, "singularResource": k.singular, "scope": "Namespaced" if k.namespaced else "Cluster",
         "verbs": VERBS, "responseKind": {"group": k.group, "version": k.version, "kind": k.kind}}
    if k.short_names:
        r["shortNames"] = list(k.short_names)
    if k.categories:
        r["categories"] = list(k.categories)
    subs = []
    if k.status:
        subs.append({"subresource": "status", "verbs": ["get", "patch", "update"],
                     "responseKind": {"group": k.group, "version": k.version, "kind": k.kind}})
    if k.scale:
        subs.append({"subresource": "scale", "verbs": ["get", "patch", "update"],
                     "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}})
    if subs:
        r["subresources"] = subs
    return r


def aggregated(reg: Registry, core: bool) -> dict:
    items = []
    for group, versions in reg.groups().items():
        if (group == "") != core:
            continue
        items.append({"metadata": {"name": group} if group else {},
                      "versions": [{"version": v, "resources": [_resource(k) for k in ks], "freshness": "Current"}
                                   for v, ks in versions.items()]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}


def api_versions(address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def _group(group: str, versions: list[str]) -> dict:
    gv = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gv, "preferredVersion": gv[0]}


def api_groups(reg: Registry) -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(g, list(vs)) for g, vs in reg.groups().items() if g]}


def api_group(reg: Registry, group: str) -> dict | None:
    vs = reg.groups().get(group)
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, list(vs))} if vs else None


def resource_list(reg: Registry, group: str, version: str) -> dict | None:
    kinds = reg.groups().get(group, {}).get(version)
    if not kinds:
        return None
    resources = []
    for k in kinds:
        base = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
                "verbs": VERBS, "shortNames": list(k.short_names), "categories": list(k.categories)}
        resources.append(base)
        if k.status:
            resources.append({**base, "name": f"{k.plural}/status", "verbs": ["get", "patch", "update"]})
        if k.scale:
            resources.append({**base, "name": f"{k.plural}/scale", "verbs": ["get", "patch", "update"],
                              "kind": "Scale", "group": "autoscaling", "version": "v1"})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_doc(reg: Registry, group: str, version: str) -> dict | None:
    kinds = reg.groups().get(group, {}).get(version)
    if not kinds:
        return None
    schemas, paths = {}, {}
    params = [{"name": n, "in": "query", "schema": {"type": "string"}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
    for k in kinds:
        gvk = {"group": k.group, "version": k.version, "kind": k.kind}
        name = f"io.sensorpipe.double.{k.group or 'core'}.{k.version}.{k.kind}"
        schema = dict(k.schema) if k.schema else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = schema
        item = f"/{_gv_path(k.group, k.version)}/" + ("namespaces/{namespace}/" if k.namespaced else "") \
            + k.plural + "/{name}"
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params,
              "responses": {"200": {"content": {"application/json": {
                  "schema": {"$ref": f"#/components/schemas/{name}"}}}}}}
        paths[item] = {"get": {**op, "x-kubernetes-action": "get"}, "put": {**op, "x-kubernetes-action": "put"},
                       "patch": {**op, "x-kubernetes-action": "patch"},
                       "delete": {**op, "x-kubernetes-action": "delete"}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]}, "paths": paths,
            "components": {"schemas": schemas}}


def openapi_index(reg: Registry) -> dict:
    out = {}
    for group, versions in reg.groups().items():
        for v in versions:
            doc = openapi_doc(reg, group, v)
            digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
            out[_gv_path(group, v)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(group, v)}?hash={digest}"}
    return {"paths": out}
