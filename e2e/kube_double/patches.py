"""The three non-apply patch types the API server accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
strategic merge patch (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/),
the last as far as kubectl's and client libraries' patches of built-in kinds need it."""

from __future__ import annotations

import copy

import jsonpatch
import jsonpointer

from .resources import MERGE_KEYS, PORT_KEYS


class PatchError(Exception):
    pass


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(target: dict, ops: list) -> dict:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        # The API server's json-patch library treats `test` of a missing path against null as a match; kube-rs'
        # finalizer helper relies on it (`test /metadata/finalizers null` on an object without finalizers).
        if op.get("op") == "test" and op.get("value") is None:
            try:
                if jsonpointer.resolve_pointer(doc, op["path"], None) is None:
                    continue
            except jsonpointer.JsonPointerException:
                continue
        try:
            doc = jsonpatch.apply_patch(doc, [op])
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise PatchError(str(e)) from e
    return doc


def _merge_key(name: str, items: list) -> str | None:
    if name == "ports":
        for field in PORT_KEYS:
            if any(isinstance(i, dict) and field in i for i in items):
                return field
    keys = MERGE_KEYS.get(name)
    return keys[0] if keys else None


def strategic_merge_patch(target, patch, name: str = ""):
    """Lists with a patch merge key merge by that key (`$patch: delete` removes an element, `$patch: replace`
    replaces the list); `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList` directives are honoured
    as far as ordering does not matter."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: v for k, v in patch.items() if k != "$patch"}
        if patch.get("$patch") == "delete":
            return None
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
                continue
            if k.startswith("$deleteFromPrimitiveList/"):
                field = k.split("/", 1)[1]
                out[field] = [x for x in out.get(field) or [] if x not in v]
                continue
            if v is None:
                out.pop(k, None)
            elif isinstance(v, list) and isinstance(out.get(k), list):
                out[k] = _merge_list(out[k], v, k)
            else:
                merged = strategic_merge_patch(out.get(k), v, k)
                if merged is None:
                    out.pop(k, None)
                else:
                    out[k] = merged
        return out
    return copy.deepcopy(patch)


def _merge_list(live: list, patch: list, name: str) -> list:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    key = _merge_key(name, live + patch)
    if key is None or not all(isinstance(i, dict) for i in live + patch):
        return copy.deepcopy(patch)
    out = list(live)
    for item in patch:
        at = next((n for n, o in enumerate(out) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if at is not None:
                out.pop(at)
        elif at is None:
            out.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            out[at] = strategic_merge_patch(out[at], item, name)
    return out
