"""`kubectl get` asks for `as=Table;g=meta.k8s.io;v=v1`: the server renders the columns. For a custom resource they
are Name plus the CRD's additionalPrinterColumns (JSONPath evaluated here, dates shown as ages the way the API
server's table convertor does), or Name and Age when the CRD declares none."""

from __future__ import annotations

from datetime import datetime, timezone

from jsonpath_ng.ext import parse

from .resources import Kind

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def human_age(ts: str) -> str:
    """Like apimachinery's duration.HumanDuration: seconds under 2 minutes, then minutes, hours, days."""
    try:
        then = datetime.fromisoformat(ts)  # Time and MicroTime ("...T10:00:00.123456Z")
    except (TypeError, ValueError):
        return "<unknown>"
    s = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def _cell(obj: dict, column: dict):
    path = column["jsonPath"]
    found = [m.value for m in parse("$" + path).find(obj)]
    if not found:
        return None
    value = found[0]
    if column.get("type") == "date":
        return human_age(value)
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def _age(o: dict) -> str:
    return human_age(o["metadata"].get("creationTimestamp", ""))


def _event_object(e: dict) -> str:
    ref = e.get("involvedObject") or {}
    return f"{ref.get('kind', '').lower()}/{ref.get('name', '')}"


# The columns the API server prints for the built-in kinds users look at here (k8s.io/kubernetes
# pkg/printers/internalversion/printers.go); other built-in kinds get Name and Age.
BUILT_IN_COLUMNS = {
    ("apps", "Deployment"): (
        ("Ready", lambda o: f"{o.get('status', {}).get('readyReplicas', 0)}/{o.get('spec', {}).get('replicas', 0)}"),
        ("Up-to-date", lambda o: o.get("status", {}).get("updatedReplicas", 0)),
        ("Available", lambda o: o.get("status", {}).get("availableReplicas", 0)),
        ("Age", _age)),
    ("coordination.k8s.io", "Lease"): (
        ("Holder", lambda o: o.get("spec", {}).get("holderIdentity", "")), ("Age", _age)),
    ("", "Namespace"): (("Status", lambda o: o.get("status", {}).get("phase", "")), ("Age", _age)),
    ("", "Event"): (
        ("Last Seen", lambda e: human_age(e.get("lastTimestamp") or (e.get("series") or {}).get("lastObservedTime")
                                          or e.get("eventTime") or "")),
        ("Type", lambda e: e.get("type", "")), ("Reason", lambda e: e.get("reason", "")),
        ("Object", _event_object), ("Message", lambda e: e.get("message", ""))),
}


def table(kind: Kind, objects: list[dict], resource_version: str, include_object: str = "Metadata") -> dict:
    builtin = BUILT_IN_COLUMNS.get((kind.group, kind.kind)) if kind.schema is None else None
    if builtin:
        columns = [{"name": n, "type": "string"} for n, _ in builtin]
        cells = [f for _, f in builtin]
    else:
        columns = list(kind.printer_columns) or [_AGE]
        cells = [lambda o, c=c: _cell(o, c) for c in columns]
    rows = []
    for o in objects:
        ref = {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]}
        rows.append({"cells": [o["metadata"]["name"]] + [f(o) for f in cells],
                     "object": o if include_object == "Object" else ref})
    defs = [_NAME] + [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                       "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in columns]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": defs, "rows": rows}
