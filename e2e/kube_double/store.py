"""Objects, the resourceVersion clock, the event history watches resume from, and label/field selectors.

One global resourceVersion counter like etcd's revision; the history is bounded, so a watch that resumes from a
version older than what it holds gets `410 Expired` (as an ERROR event, the way the API server sends it)."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass


@dataclass
class Event:
    rv: int
    key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict
    old: dict | None


class Store:
    def __init__(self, history: int = 5000) -> None:
        self.rv = 100
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self.history: deque[Event] = deque(maxlen=history)
        self.watchers: set[asyncio.Queue] = set()

    def oldest_resumable(self) -> int:
        """The oldest resourceVersion a watch can resume from: every event after it is still held."""
        if len(self.history) < (self.history.maxlen or 0):
            return 0
        return self.history[0].rv - 1

    def get(self, key, namespace: str, name: str) -> dict | None:
        return self.objects.get(key, {}).get((namespace, name))

    def list(self, key, namespace: str | None = None) -> list[dict]:
        items = self.objects.get(key, {})
        return [o for (ns, _), o in sorted(items.items()) if namespace is None or ns == namespace]

    def write(self, key, obj: dict, old: dict | None, kind: str) -> dict:
        """Stores `obj` with a new resourceVersion and tells the watches."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        md = obj["metadata"]
        where = (md.get("namespace", ""), md["name"])
        if kind == "DELETED":
            self.objects.get(key, {}).pop(where, None)
        else:
            self.objects.setdefault(key, {})[where] = obj
        ev = Event(self.rv, key, kind, obj, old)
        self.history.append(ev)
        for q in self.watchers:
            q.put_nowait(ev)
        return obj


# --- selectors -------------------------------------------------------------------------------------------------

_REQ = re.compile(r"\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*")


class SelectorError(ValueError):
    pass


def _split(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_matcher(selector: str | None):
    if not selector:
        return lambda labels: True
    reqs = []
    for part in _split(selector):
        m = _REQ.fullmatch(part)
        if not m:
            raise SelectorError(f"unable to parse requirement: {part!r}")
        neg, key, op, val, setop, values = m.groups()
        reqs.append((neg, key, op, val, setop, [v.strip() for v in (values or "").split(",") if v.strip()]))

    def match(labels: dict) -> bool:
        for neg, key, op, val, setop, values in reqs:
            have = labels.get(key)
            if op in ("=", "=="):
                ok = have == val
            elif op == "!=":
                ok = have != val
            elif setop == "in":
                ok = have in values
            elif setop == "notin":
                ok = have not in values
            else:
                ok = (key in labels) != bool(neg)
            if not ok:
                return False
        return True

    return match


def field_value(obj: dict, path: str):
    cur = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_matcher(selector: str | None):
    if not selector:
        return lambda obj: True
    reqs = []
    for part in _split(selector):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        reqs.append(m.groups())
    return lambda obj: all((field_value(obj, p) == v) == (op != "!=") for p, op, v in reqs)


def matcher(labels: str | None, fields: str | None, namespace: str | None):
    lm, fm = label_matcher(labels), field_matcher(fields)

    def match(obj: dict | None) -> bool:
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if namespace is not None and md.get("namespace", "") != namespace:
            return False
        return lm(md.get("labels") or {}) and fm(obj)

    return match
