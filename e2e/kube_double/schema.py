"""What the API server does with a custom resource's structural schema on every write
(https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/): defaulting,
pruning of unknown fields (an error under `fieldValidation=Strict`), and validation of types, enums, bounds and
required fields. `x-kubernetes-validations` (CEL) rules are not evaluated here."""

from __future__ import annotations

import copy
import json

import jsonschema

_META_KEEP = ("apiVersion", "kind", "metadata")


def _props(schema: dict) -> dict:
    return schema.get("properties") or {}


def default(obj, schema: dict | None):
    """Fills `default`s in place, like the API server does when it reads or writes an object."""
    if schema is None:
        return
    if isinstance(obj, dict):
        for name, sub in _props(schema).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                default(obj[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, v in obj.items():
                if name not in _props(schema):
                    default(v, extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for v in obj:
            default(v, schema["items"])


def prune(obj, schema: dict | None, path: str = "", top: bool = True) -> list[str]:
    """Removes fields the schema does not declare, in place; returns their paths (`.spec.foo`)."""
    if schema is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    unknown: list[str] = []
    if isinstance(obj, dict):
        props = _props(schema)
        extra = schema.get("additionalProperties")
        for name in list(obj):
            if top and name in _META_KEEP:
                continue
            if name in props:
                unknown += prune(obj[name], props[name], f"{path}.{name}", False)
            elif isinstance(extra, dict):
                unknown += prune(obj[name], extra, f"{path}.{name}", False)
            elif extra is True or schema.get("x-kubernetes-int-or-string") or schema.get("type") != "object":
                continue
            else:
                unknown.append(f"{path}.{name}")
                del obj[name]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(obj):
            unknown += prune(v, schema["items"], f"{path}[{i}]", False)
    return unknown


def _json_schema(schema):
    """OpenAPI v3 → JSON Schema: `nullable`, and int-or-string, which carries no type."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out


def validate(obj: dict, schema: dict | None) -> list[str]:
    """Messages in the API server's shape (`spec.input.partitions: Invalid value: ...`), metadata excluded."""
    if schema is None:
        return []
    body = {k: v for k, v in obj.items() if k not in _META_KEEP}
    s = _json_schema({**schema, "properties": {k: v for k, v in _props(schema).items() if k not in _META_KEEP}})
    errors = sorted(jsonschema.Draft4Validator(s).iter_errors(body), key=lambda e: list(e.absolute_path))
    out = []
    for e in errors:
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        out.append(f"{where}: Invalid value: {json.dumps(e.instance)}: {where} in body: {e.message}")
    return out
