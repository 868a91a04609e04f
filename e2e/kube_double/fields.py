"""Field ownership for server-side apply: the fieldsV1 sets of `metadata.managedFields`, the merge of an applied
configuration, value-sensitive conflicts between managers, and the hand-over of fields on non-apply writes.

Modelled on sigs.k8s.io/structured-merge-diff as the API server uses it
(https://kubernetes.io/docs/reference/using-api/server-side-apply/): a set holds leaf fields, keyed list elements
(`k:{...}` with `.` for the element itself) and set members (`v:...`); a field is removed from the live object when
its applier stops applying it and nobody else owns it."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .resources import MERGE_KEYS, PORT_KEYS, SET_LISTS, Kind

Path = tuple[str, ...]

# Metadata the server owns; never part of a field set.
SERVER_METADATA = frozenset({
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink", "generateName",
})


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str, str]]):
        self.conflicts = conflicts  # (manager, apiVersion, field path as kubectl prints it)
        super().__init__(f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: "
                         + "; ".join(f'conflict with "{m}" using {v}: {f}' for m, v, f in conflicts))


def _dumps(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _schema_at(schema: dict | None, names: tuple[str, ...]) -> dict | None:
    for n in names:
        if schema is None:
            return None
        if schema.get("type") == "array":
            schema = schema.get("items")
            if schema is None:
                return None
        props = schema.get("properties")
        schema = props.get(n) if props else None
    return schema


def list_type(kind: Kind, names: tuple[str, ...], items: list) -> tuple[str, tuple[str, ...]]:
    """("atomic"|"set"|"map", map keys) for the list at `names` (field names from the object's root)."""
    last = names[-1] if names else ""
    if names[:1] == ("metadata",):
        if last in SET_LISTS:
            return "set", ()
        if last == "ownerReferences":
            return "map", ("uid",)
        return "atomic", ()
    if kind.schema is not None:  # a custom resource: only what its schema declares
        s = _schema_at(kind.schema, names) or {}
        lt = s.get("x-kubernetes-list-type", "atomic")
        return lt, tuple(s.get("x-kubernetes-list-map-keys") or ())
    if last == "ports" and items and isinstance(items[0], dict):
        for field, keys in PORT_KEYS.items():
            if field in items[0]:
                return "map", keys[:1]
    if last in MERGE_KEYS:
        return "map", MERGE_KEYS[last]
    if last in SET_LISTS:
        return "set", ()
    return "atomic", ()


def _key_of(item, keys: tuple[str, ...]) -> dict | None:
    if not isinstance(item, dict) or not all(k in item for k in keys):
        return None
    return {k: item[k] for k in keys}


def fieldset(obj: dict, kind: Kind, subresource: str = "") -> set[Path]:
    """The fields `obj` sets, as fieldsV1 paths. The main resource excludes status when the kind has a status
    subresource; the status subresource holds status only."""
    out: set[Path] = set()

    def walk(value, prefix: Path, names: tuple[str, ...]) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, prefix + (f"f:{k}",), names + (k,))
        elif isinstance(value, list) and value:
            lt, keys = list_type(kind, names, value)
            if lt == "set":
                out.update(prefix + (f"v:{_dumps(v)}",) for v in value)
            elif lt == "map" and all(_key_of(v, keys) is not None for v in value):
                for item in value:
                    kp = prefix + (f"k:{_dumps(_key_of(item, keys))}",)
                    out.add(kp + (".",))
                    for k, v in item.items():
                        walk(v, kp + (f"f:{k}",), names + (k,))
            else:
                out.add(prefix)
        else:
            out.add(prefix)

    for top, value in obj.items():
        if top in ("apiVersion", "kind"):
            continue
        if top == "metadata":
            for k, v in (value or {}).items():
                if k not in SERVER_METADATA:
                    walk(v, ("f:metadata", f"f:{k}"), ("metadata", k))
        elif kind.status and (top == "status") != (subresource == "status"):
            continue
        else:
            walk(value, (f"f:{top}",), (top,))
    return out


_MISSING = object()


def value_at(obj, path: Path):
    """The value at a fieldsV1 path, or _MISSING."""
    cur = obj
    for el in path:
        if el == ".":
            return cur
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return _MISSING
            cur = cur[el[2:]]
        elif el.startswith("k:"):
            want = json.loads(el[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next((i for i in cur if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())),
                       _MISSING)
            if cur is _MISSING:
                return _MISSING
        elif el.startswith("v:"):
            want = json.loads(el[2:])
            if not isinstance(cur, list) or want not in cur:
                return _MISSING
            return want
    return cur


def remove_path(obj, path: Path) -> None:
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if last == ".":
        container = value_at(obj, path[:-2]) if len(path) > 2 else obj
        element = value_at(obj, path[:-1])
        if isinstance(container, list) and element is not _MISSING:
            container.remove(element)
    elif last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("v:") and isinstance(parent, list):
        want = json.loads(last[2:])
        if want in parent:
            parent.remove(want)


def to_fields_v1(paths: set[Path]) -> dict:
    root: dict = {}
    for p in sorted(paths):
        node = root
        for el in p:
            node = node.setdefault(el, {})
    return root


def from_fields_v1(tree: dict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for el, sub in tree.items():
        p = prefix + (el,)
        if el == "." or not sub:
            out.add(p)
        else:
            out |= from_fields_v1(sub, p)
    return out


def merge(kind: Kind, live, applied, names: tuple[str, ...] = ()):
    """`applied` over `live`: maps merge, keyed lists merge by key, set lists unite, atomic values are replaced."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = merge(kind, live[k], v, names + (k,)) if k in live else v
        return out
    if isinstance(live, list) and isinstance(applied, list):
        lt, keys = list_type(kind, names, applied or live)
        if lt == "set":
            return list(live) + [v for v in applied if v not in live]
        if lt == "map" and all(_key_of(v, keys) is not None for v in live + applied):
            out = list(live)
            for item in applied:
                at = next((i for i, o in enumerate(out) if _key_of(o, keys) == _key_of(item, keys)), None)
                if at is None:
                    out.append(item)
                else:
                    out[at] = merge(kind, out[at], item, names)
            return out
    return applied


def path_string(path: Path) -> str:
    """A field path as the API server prints it in conflicts: `.spec.containers[name="worker"].image`."""
    out = ""
    for el in path:
        if el.startswith("f:"):
            out += "." + el[2:]
        elif el.startswith("k:"):
            out += "[" + ",".join(f"{k}={_dumps(v)}" for k, v in json.loads(el[2:]).items()) + "]"
        elif el.startswith("v:"):
            out += f"[={el[2:]}]"
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entries(obj: dict) -> list[dict]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _ident(e: dict) -> tuple:
    return e.get("manager"), e.get("operation"), e.get("subresource", "")


def _set_entry(kept: list[dict], previous: list[dict], manager: str, operation: str, subresource: str,
               api_version: str, paths: set[Path]) -> list[dict]:
    """`kept` (the other managers' entries) plus this manager's entry for `paths`."""
    out = [e for e in kept if _ident(e) != (manager, operation, subresource)]
    if paths:
        e = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": _now(),
             "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
        if subresource:
            e["subresource"] = subresource
        old = next((x for x in previous if _ident(x) == (manager, operation, subresource)), None)
        if old is not None and old.get("fieldsV1") == e["fieldsV1"]:
            e["time"] = old.get("time", e["time"])  # an unchanged set is not a write (no-op applies stay no-ops)
        out.append(e)
    return out


def apply(kind: Kind, live: dict, applied: dict, manager: str, subresource: str, force: bool) -> dict:
    """The object after `manager` applies `applied` to `live` (raises ApplyConflict unless `force`)."""
    entries = _entries(live)
    applied_set = fieldset(applied, kind, subresource)
    mine = (manager, "Apply", subresource)
    conflicts: list[tuple[dict, Path]] = []
    for e in entries:
        if _ident(e) == mine:
            continue
        for p in from_fields_v1(e.get("fieldsV1") or {}) & applied_set:
            if p[-1] == ".":
                continue
            lv = value_at(live, p)
            if lv is not _MISSING and lv != value_at(applied, p):
                conflicts.append((e, p))
    if conflicts and not force:
        raise ApplyConflict([(e["manager"], e.get("apiVersion", ""), path_string(p)) for e, p in conflicts])
    taken = {p for _, p in conflicts}
    others: set[Path] = set()
    kept = []
    for e in entries:
        if _ident(e) == mine:
            continue
        s = from_fields_v1(e.get("fieldsV1") or {}) - taken
        others |= s
        if s:
            kept.append({**e, "fieldsV1": to_fields_v1(s)})
    old_mine = next((from_fields_v1(e.get("fieldsV1") or {}) for e in entries if _ident(e) == mine), set())
    body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
    if kind.status and subresource != "status":
        body.pop("status", None)
    if subresource == "status":
        body = {"status": applied.get("status", {})}
    body["metadata"] = {k: v for k, v in (applied.get("metadata") or {}).items() if k not in SERVER_METADATA}
    new = merge(kind, live, body)
    for p in sorted(old_mine - applied_set, key=len, reverse=True):
        stem = p[:-1] if p[-1] == "." else p
        if not any(q[:len(stem)] == stem for q in others):
            remove_path(new, p)
    new.setdefault("metadata", {})["managedFields"] = _set_entry(kept, entries, manager, "Apply", subresource,
                                                                 kind.api_version, applied_set)
    return new


def record_update(kind: Kind, old: dict | None, new: dict, manager: str, subresource: str = "") -> None:
    """Non-apply writes (create, update, patches) hand the fields they change to their manager, in place."""
    old_set = fieldset(old, kind, subresource) if old else set()
    new_set = fieldset(new, kind, subresource)
    changed = {p for p in new_set if p not in old_set or (p[-1] != "." and value_at(old, p) != value_at(new, p))}
    gone = old_set - new_set
    entries = []
    for e in _entries(old or {}):
        s = from_fields_v1(e.get("fieldsV1") or {}) - changed - gone
        if _ident(e) == (manager, "Update", subresource):
            continue
        if s:
            entries.append({**e, "fieldsV1": to_fields_v1(s)})
    mine = next((from_fields_v1(e.get("fieldsV1") or {}) for e in _entries(old or {})
                 if _ident(e) == (manager, "Update", subresource)), set())
    mine = (mine - gone) | changed
    new.setdefault("metadata", {})["managedFields"] = _set_entry(
        entries, _entries(old or {}), manager, "Update", subresource, kind.api_version, mine)
