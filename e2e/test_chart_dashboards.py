"""The chart's Grafana dashboards and the metrics they and the alert rules read.

- Every PromQL expression parses, by Prometheus' own parser (`promtool check rules` over them as recording rules)
  and by promql-parser, whose syntax tree gives the metric names.
- Every metric a dashboard or alert uses is exported: worker metrics by a real worker's /metrics, operator metrics
  by the table in docs/operator.md (which operator/src/metrics.rs tests against the registry). A renamed metric
  fails here.
- With a real Prometheus scraping a real worker that processes simulated readings on Apache Kafka, every panel query and
  variable over worker metrics returns data. Queries over the operator's metrics need a running operator, which
  needs a Kubernetes API: the cluster journey (e2e with the API test double) runs those.
"""

from __future__ import annotations

import math
import re
import subprocess
import time

import promql_parser
import pytest
import yaml

from chart_support import ROOT, dashboard_queries, dashboards, rule_groups
from kafka_io import create_topics, http_get, unique_pipeline, wait_until, worker
from prometheus_server import instant, prometheus, set_targets

# What Grafana substitutes, for a pipeline `building-a` in namespace `facilities` (examples/smart-building.yaml).
VARIABLES = {
    "$namespace": "facilities", "$pipeline": "building-a", "$aggregation": "zone-5m", "$metric": "temperature",
    "$zone": ".*", "$__rate_interval": "1m", "$__interval": "15s",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def substitute(expr: str, pipeline: str = VARIABLES["$pipeline"]) -> str:
    values = {**VARIABLES, "$pipeline": pipeline}
    # Longest names first, so $__rate_interval is not read as $__r… of another variable.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def family(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def alert_exprs() -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for g in rule_groups()["groups"] for r in g["rules"]]


def documented_operator_metrics() -> set[str]:
    text = (ROOT / "docs" / "operator.md").read_text()
    return set(re.findall(r"^\| `(sensorpipe_operator_[a-z_]+)`", text, re.M))


QUERIES = dashboard_queries()


def test_the_dashboards_are_complete_and_consistent():
    models = dashboards()
    assert set(models) == {"pipeline-health", "facility"}
    assert len({m["uid"] for m in models.values()}) == 2
    for name, model in models.items():
        assert "sensorpipe" in model["tags"], name
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert {"namespace", "pipeline"} <= set(variables), name
        for panel in model["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel.get("description"), (name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs) and all(refs), (name, panel["title"])
            for t in panel["targets"]:
                assert 'pipeline="$pipeline"' in t["expr"] or 'pipeline="$namespace/$pipeline"' in t["expr"], \
                    (name, panel["title"], t["expr"])
    health = " ".join(p["title"] for p in models["pipeline-health"]["panels"])
    for topic in ["Input records", "Output records", "Lag per partition (records)", "Lag per partition (seconds)",
                  "Processing latency", "Replicas", "rebalances", "Transactions", "Dead letters", "Late readings",
                  "Reconcile errors"]:
        assert topic in health, topic
    facility = " ".join(p["title"] for p in models["facility"]["panels"])
    for topic in ["$metric per zone", "$metric now per zone", "Anomalies per zone and rule",
                  "Sensors firing or silent"]:
        assert topic in facility, topic


@pytest.mark.parametrize("source,title,expr", QUERIES + [("alerts", a, e) for a, e in alert_exprs()],
                         ids=[f"{d}:{t}" for d, t, _ in QUERIES] + [f"alerts:{a}" for a, _ in alert_exprs()])
def test_every_expression_parses(source, title, expr):
    promql_parser.parse(substitute(expr))


def test_prometheus_parses_every_dashboard_expression(tmp_path):
    rules = [{"record": f"sensorpipe:dashboard_check:{i}", "expr": substitute(e)} for i, (_, _, e) in
             enumerate(QUERIES)]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def used_metrics() -> dict[str, set[str]]:
    """Metric family → where it is used."""
    used: dict[str, set[str]] = {}
    for source, title, expr in QUERIES + [("alerts", a, e) for a, e in alert_exprs()]:
        for name in metric_names(substitute(expr)):
            used.setdefault(family(name), set()).add(f"{source}: {title}")
    return used


def test_operator_metrics_used_are_documented_exports():
    operator = {m: w for m, w in used_metrics().items() if m.startswith("sensorpipe_operator_")}
    assert operator, "the dashboards and alerts use no operator metric?"
    missing = {m: sorted(w) for m, w in operator.items() if m not in documented_operator_metrics()}
    assert not missing, f"not exported by the operator: {missing}"


def test_a_renamed_metric_would_be_caught():
    assert metric_names('sum(rate(sensorpipe_worker_recods_consumed_total{pipeline="x"}[1m]))') == {
        "sensorpipe_worker_recods_consumed_total"}
    assert family("sensorpipe_worker_commit_duration_seconds_bucket") == "sensorpipe_worker_commit_duration_seconds"


# --- a real Prometheus scraping a real worker -------------------------------------------------------------------



def finite(result: list[dict]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def test_with_a_real_prometheus_every_worker_query_returns_data(worker_bin, kafka, example_pipeline, tmp_path):
    """Two workers share the input (the second joins mid-run and leaves again, so rebalances and restores happen
    while Prometheus scrapes); readings keep arriving while the queries run, so rates and quantiles have samples."""
    pipe = unique_pipeline(example_pipeline, tmp_path)
    bs = kafka.bootstrap
    with prometheus(tmp_path) as prom:
        create_topics(bs, {pipe.input: 4, pipe.anomalies: 2, pipe.aggregates: 2, pipe.dead_letters: 1, pipe.state: 4,
                           pipe.repartition: 4})
        producer = subprocess.Popen(
            [str(worker_bin), "simulate", "--sensors", "30", "--duration", "12h", "--topic", pipe.input,
             "--bootstrap-servers", bs, "--rate", "1500"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with worker(worker_bin, pipe.path, bs, tmp_path / "worker-0.log") as (_, port0):
                set_targets(tmp_path, {"building-a-worker-0": port0})
                wait_until(lambda: instant(prom, 'up{pod="building-a-worker-0"} == 1'), 30, "first scrape")
                # Zone gauges appear once the first 5-minute windows close, anomalies once episodes start.
                wait_until(lambda: instant(prom, "sensorpipe_worker_zone_aggregate") and instant(
                    prom, "sensorpipe_worker_zone_anomalies_total"), 90, "zone series")
                with worker(worker_bin, pipe.path, bs, tmp_path / "worker-1.log") as (_, port1):
                    set_targets(tmp_path, {"building-a-worker-0": port0, "building-a-worker-1": port1})
                    wait_until(lambda: instant(
                        prom, 'sensorpipe_worker_assigned_partitions{pod="building-a-worker-1"} > 0'), 60,
                        "the second worker to take partitions")
                    time.sleep(5)  # several samples of everything within the rate windows
                    exposition = http_get(port0, "/metrics")[1] + http_get(port1, "/metrics")[1]
                # The second worker's partitions come back to the first, which restores them while scraped (the
                # second one's restores came before its first scrape: Kafka assigns at once).
                wait_until(lambda: instant(
                    prom, 'increase(sensorpipe_worker_restore_duration_seconds_count{pod="building-a-worker-0"}[1m])'
                          ' > 0'), 60, "the first worker to restore the partitions it got back")
                results = {(s, t, e): instant(prom, substitute(e, pipe.name)) for s, t, e in QUERIES
                           if not any(n.startswith("sensorpipe_operator_") for n in metric_names(substitute(e)))}
        finally:
            producer.kill()
            producer.wait()

    exported = set(re.findall(r"^# TYPE (\w+) ", exposition, re.M))
    worker_used = {m: w for m, w in used_metrics().items() if not m.startswith("sensorpipe_operator_")}
    missing = {m: sorted(w) for m, w in worker_used.items() if m not in exported}
    assert not missing, f"not exported by the worker: {missing}"

    empty = [f"{s}: {t}: {e}" for (s, t, e), r in results.items() if not r]
    assert not empty, "queries without data:\n" + "\n".join(empty)
    no_value = [f"{s}: {t}: {e}" for (s, t, e), r in results.items() if not finite(r)]
    assert not no_value, "queries with only NaN:\n" + "\n".join(no_value)
    skipped = [(s, t) for s, t, e in QUERIES if (s, t, e) not in results]
    assert all("operator" in t.lower() or t in OPERATOR_PANELS for _, t in skipped), skipped


# Panels whose every query reads the operator's metrics (checked by the cluster journey, not here).
OPERATOR_PANELS = {"Committed throughput (operator)", "Group lag (operator)", "Reconcile errors", "Conditions",
                   "Scaling and rebalances", "Replicas"}
