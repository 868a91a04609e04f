"""Rendering the Helm chart with the real Helm engine (helm-python-sdk, Helm v4's Go code), shared by the chart,
alert and dashboard tests."""

from __future__ import annotations

import pathlib
import re

import helm_python
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "sensorpipe"
RELEASE, NAMESPACE = "sensorpipe", "sensorpipe"


def ci_value_sets() -> dict[str, dict]:
    """The value sets in charts/sensorpipe/ci/, by file name."""
    return {p.name: yaml.safe_load(p.read_text()) or {} for p in sorted((CHART / "ci").glob("*.yaml"))}


def render(values: dict | None = None) -> dict[str, str]:
    """Template path → rendered text, as `helm install` would render it."""
    chart = helm_python.Chart.load(str(CHART))
    try:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()


def objects(values: dict | None = None) -> list[dict]:
    """Every object the chart would create."""
    out = []
    for path, text in render(values).items():
        if path.endswith(".txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def rule_groups(values: dict | None = None) -> dict:
    """The PrometheusRule's groups as a plain rules file (`promtool` does not read the PrometheusRule wrapper)."""
    merged = {"monitoring": {"prometheusRule": {"enabled": True}}}
    if values:
        merged = merge_values(merged, values)
    rule = one(objects(merged), "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def merge_values(a: dict, b: dict) -> dict:
    """Deep merge like Helm's values coalescing (b wins)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_values(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dashboards() -> dict[str, dict]:
    """The dashboards' JSON models, by file name."""
    import json
    return {p.stem: json.loads(p.read_text()) for p in sorted((CHART / "dashboards").glob("*.json"))}


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every panel target and every query variable."""
    out = []
    for name, model in dashboards().items():
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                out.append((name, panel["title"], target["expr"]))
        for var in model["templating"]["list"]:
            if var["type"] == "query":
                m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"])
                out.append((name, f"variable {var['name']}", m.group(1) if m else var["query"]))
    return out
