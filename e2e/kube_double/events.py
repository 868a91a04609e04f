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


def to_core(ev: dict) -> dict:
    out = {"apiVersion": "v1", "kind": "Event"}
    for f in _SAME:
        if f in ev:
            out[f] = ev[f]
    for new, old in _RENAMED:
        if new in ev:
            out[old] = ev[new]
    if "source" not in out and ev.get("reportingController"):
        out["source"] = {"component": ev["reportingController"]}
    return out


def from_core(ev: dict) -> dict:
    if ev.get("apiVersion") == API_VERSION:
        return dict(ev)
    out = {"apiVersion": API_VERSION, "kind": "Event"}
    for f in _SAME:
        if f in ev:
            out[f] = ev[f]
    for new, old in _RENAMED:
        if old in ev:
            out[new] = ev[old]
    if "reportingController" not in out and (ev.get("source") or {}).get("component"):
        out["reportingController"] = ev["source"]["component"]
    return out
