"""Events live once, as events.k8s.io/v1, and are also served through the core/v1 view (`kubectl describe` reads
that one, with `involvedObject.*` field selectors), converted field by field as the API server does
(k8s.io/kubernetes pkg/apis/events/v1 conversion)."""

from __future__ import annotations

STORAGE_KEY = ("events.k8s.io", "events")
API_VERSION = "events.k8s.io/v1"

# events.k8s.io/v1 field ↔ core/v1 field
_RENAMED = (("regarding", "involvedObject"), ("note", "message"), ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"), ("deprecatedCount", "count"),
            ("deprecatedSource", "source"), ("reportingController", "reportingComponent"))
_SAME = ("metadata", "eventTime", "series", "action", "reason", "related", "type", "reportingInstance")


def _convert(ev: dict, api_version: str, renames) -> dict:
    out = {"apiVersion": api_version, "kind": "Event"}
    out.update((f, ev[f]) for f in _SAME if f in ev)
    out.update((dst, ev[src]) for src, dst in renames if src in ev)
    return out


def to_core(ev: dict) -> dict:
    out = _convert(ev, "v1", _RENAMED)
    if "source" not in out and ev.get("reportingController"):
        out["source"] = {"component": ev["reportingController"]}
    return out


def from_core(ev: dict) -> dict:
    if ev.get("apiVersion") == API_VERSION:
        return dict(ev)
    out = _convert(ev, API_VERSION, [(old, new) for new, old in _RENAMED])
    if "reportingController" not in out and (ev.get("source") or {}).get("component"):
        out["reportingController"] = ev["source"]["component"]
    return out
