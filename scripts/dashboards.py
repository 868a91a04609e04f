"""Generates the chart's Grafana dashboards (charts/sensorpipe/dashboards/*.json) with Grafana's Foundation SDK.

Run through scripts/generate.sh, which checks the committed JSON for drift. Two dashboards:
- pipeline-health: throughput, lag, latency, scaling, delivery, data quality and the operator's view of one
  pipeline, for platform operators;
- facility: per-zone trends from the workers' zone gauges, anomalies per zone and rule, sensors firing or silent,
  for facility managers.

Worker series carry `pipeline` (the SensorPipeline's name) and the scrape's `namespace`; operator series carry
`pipeline` as namespace/name. Every query here is parsed, checked against the exported metric names and run
against a real Prometheus scraping a worker by e2e/test_chart_monitoring.py.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, LegendDisplayMode, StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DashboardCursorSync,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
W = 'namespace="$namespace", pipeline="$pipeline"'  # a worker series of the chosen pipeline
OP = 'pipeline="$namespace/$pipeline"'  # the operator's series of the chosen pipeline


def query(expr: str, legend: str = "__auto", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DS)
    return q.instant() if instant else q.range()


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery, stacked: bool = False,
          span: int = 8) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(span)
        .height(8)
        .fill_opacity(10)
        .legend(_legend())
    )
    if stacked:
        p = p.stacking(_stacking())
    for ref, q in zip("ABCDEFGH", queries):
        p = p.with_target(q.ref_id(ref))
    return p


def big(title: str, description: str, unit: str, q: prometheus.Dataquery, span: int = 4) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(span)
        .height(5)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(q.ref_id("A"))
    )


def _legend() -> VizLegendOptions:
    return VizLegendOptions().display_mode(LegendDisplayMode.LIST).show_legend(True)


def _stacking() -> StackingConfig:
    return StackingConfig().mode(StackingMode.NORMAL)


def variables(d: dashboard.Dashboard, extra: list | None = None) -> dashboard.Dashboard:
    d = d.with_variable(
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )
    d = d.with_variable(
        dashboard.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DS)
        .query("label_values(sensorpipe_worker_assigned_partitions, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    d = d.with_variable(
        dashboard.QueryVariable("pipeline")
        .label("Pipeline")
        .datasource(DS)
        .query('label_values(sensorpipe_worker_assigned_partitions{namespace="$namespace"}, pipeline)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    for v in extra or []:
        d = d.with_variable(v)
    return d


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["sensorpipe"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
    )


def pipeline_health() -> dashboard.Dashboard:
    d = variables(base(
        "sensorpipe-pipeline-health",
        "sensorpipe / Pipeline health",
        "Throughput, lag, latency, scaling and delivery of one SensorPipeline (docs/metrics.md, docs/operator.md).",
    ))
    rate = "[$__rate_interval]"

    d = d.with_row(dashboard.Row("Throughput"))
    d = d.with_panel(graph(
        "Input records", "Input records processed per second: readings, and records sent to the dead-letter topic.",
        "reqps",
        query(f"sum by (outcome) (rate(sensorpipe_worker_records_consumed_total{{{W}}}{rate}))", "{{outcome}}"),
        stacked=True,
    ))
    d = d.with_panel(graph(
        "Output records", "Records the broker acknowledged per second, by topic (anomalies, aggregates, dead "
        "letters, state snapshots).", "reqps",
        query(f'sum by (topic) (rate(sensorpipe_worker_records_produced_total{{{W}, outcome="delivered"}}{rate}))',
              "{{topic}}"),
        query(f'sum(rate(sensorpipe_worker_records_produced_total{{{W}, outcome="failed"}}{rate}))', "failed"),
        stacked=True,
    ))
    d = d.with_panel(graph(
        "Committed throughput (operator)", "Input records the consumer group committed per second, as the "
        "operator measures it between two observations.", "reqps",
        query(f"sensorpipe_operator_pipeline_throughput_records_per_second{{{OP}}}", "committed"),
    ))

    d = d.with_row(dashboard.Row("Lag"))
    d = d.with_panel(graph(
        "Lag per partition (records)", "Records in each input partition not processed yet, from the worker that "
        "owns it.", "short",
        query(f"max by (partition) (sensorpipe_worker_consumer_lag_records{{{W}}})", "partition {{partition}}"),
        stacked=True,
    ))
    d = d.with_panel(graph(
        "Lag per partition (seconds)", "Age of the oldest unprocessed record of each partition.", "s",
        query(f"max by (partition) (sensorpipe_worker_consumer_lag_seconds{{{W}}})", "partition {{partition}}"),
    ))
    d = d.with_panel(graph(
        "Group lag (operator)", "Consumer-group lag the autoscaler acts on: records and the age of the oldest "
        "unprocessed record.", "short",
        query(f"sensorpipe_operator_pipeline_lag_records{{{OP}}}", "records"),
        query(f"sensorpipe_operator_pipeline_lag_seconds{{{OP}}}", "seconds"),
    ))

    d = d.with_row(dashboard.Row("Latency"))
    d = d.with_panel(graph(
        "Processing latency", "From an input record's Kafka timestamp to the output it caused (p50, p99).", "s",
        query(f"histogram_quantile(0.5, sum by (le) (rate(sensorpipe_worker_ingest_to_emit_seconds_bucket{{{W}}}"
              f"{rate})))", "p50"),
        query(f"histogram_quantile(0.99, sum by (le) (rate(sensorpipe_worker_ingest_to_emit_seconds_bucket{{{W}}}"
              f"{rate})))", "p99"),
    ))
    d = d.with_panel(graph(
        "Event time to output (p99)", "From event time to output, by kind; includes maxOutOfOrderness and, for "
        "aggregates, the window length's wait for the watermark.", "s",
        query(f"histogram_quantile(0.99, sum by (le, kind) (rate(sensorpipe_worker_event_to_emit_seconds_bucket"
              f"{{{W}}}{rate})))", "{{kind}}"),
    ))
    d = d.with_panel(graph(
        "Watermark delay", "Wall clock minus each partition's event-time watermark.", "s",
        query(f"max by (partition) (sensorpipe_worker_watermark_delay_seconds{{{W}}})", "partition {{partition}}"),
    ))

    d = d.with_row(dashboard.Row("Workers and scaling"))
    d = d.with_panel(graph(
        "Replicas", "Workers the operator wants (autoscaler or spec), ready ones, and workers Prometheus sees "
        "ready.", "short",
        query(f"sensorpipe_operator_pipeline_desired_replicas{{{OP}}}", "desired"),
        query(f"sensorpipe_operator_pipeline_ready_replicas{{{OP}}}", "ready (Deployment)"),
        query(f"sum(sensorpipe_worker_ready{{{W}}})", "ready (scraped)"),
    ))
    d = d.with_panel(graph(
        "Scaling and rebalances", "Autoscaler replica changes by reason and consumer-group rebalance events.",
        "short",
        query(f"sum by (reason) (increase(sensorpipe_operator_scale_events_total{{{OP}}}{rate}))", "{{reason}}"),
        query(f"sum by (kind) (increase(sensorpipe_worker_rebalances_total{{{W}}}{rate}))", "rebalance {{kind}}"),
    ))
    d = d.with_panel(graph(
        "Partitions per worker", "Input partitions each worker owns.", "short",
        query(f"sum by (pod) (sensorpipe_worker_assigned_partitions{{{W}}})", "{{pod}}"),
        stacked=True,
    ))

    d = d.with_row(dashboard.Row("Delivery"))
    d = d.with_panel(graph(
        "Transactions", "exactlyOnce: transactions committed and aborted per second; atLeastOnce: offset "
        "commits.", "ops",
        query(f"sum by (outcome) (rate(sensorpipe_worker_transactions_total{{{W}}}{rate}))", "{{outcome}}"),
    ))
    d = d.with_panel(graph(
        "Commit and restore time", "Time to commit one batch (p99), and the slowest worker's most recent restore "
        "of a partition's state (restores are rare: a rate of their histogram would be empty most of the time).",
        "s",
        query(f"histogram_quantile(0.99, sum by (le) (rate(sensorpipe_worker_commit_duration_seconds_bucket"
              f"{{{W}}}{rate})))", "commit p99"),
        query(f"max(sensorpipe_worker_restore_last_duration_seconds{{{W}}})", "last restore"),
    ))
    d = d.with_panel(graph(
        "Kafka errors", "Errors the Kafka clients reported, by kind.", "ops",
        query(f"sum by (kind) (rate(sensorpipe_worker_kafka_errors_total{{{W}}}{rate}))", "{{kind}}"),
    ))

    d = d.with_row(dashboard.Row("Data quality"))
    d = d.with_panel(graph(
        "Dead letters by reason", "Input records sent to the dead-letter topic per second; each carries the "
        "reason as a header.", "reqps",
        query(f"sum by (reason) (rate(sensorpipe_worker_dead_letters_total{{{W}}}{rate}))", "{{reason}}"),
        stacked=True,
    ))
    d = d.with_panel(graph(
        "Late readings", "Readings behind the watermark: still aggregated (within allowedLateness) or dead "
        "letters (beyond).", "reqps",
        query(f"sum by (reason) (rate(sensorpipe_worker_late_records_total{{{W}}}{rate}))", "{{reason}}"),
        stacked=True,
    ))
    d = d.with_panel(graph(
        "State restores", "Partition state rebuilds by source (snapshot, empty, incompatible).", "short",
        query(f"sum by (source) (increase(sensorpipe_worker_restores_total{{{W}}}{rate}))", "{{source}}"),
    ))

    d = d.with_row(dashboard.Row("Operator and resources"))
    d = d.with_panel(graph(
        "Reconcile errors", "Failed reconciles and problems the operator found for this pipeline, by reason.",
        "short",
        query(f"sum by (reason) (increase(sensorpipe_operator_reconcile_errors_total{{{OP}}}{rate}))", "{{reason}}"),
    ))
    d = d.with_panel(graph(
        "Conditions", "The pipeline's status conditions: 1 while True.", "short",
        query(f"max by (condition) (sensorpipe_operator_pipeline_condition{{{OP}}})", "{{condition}}"),
    ))
    d = d.with_panel(graph(
        "Worker memory", "Resident memory of each worker process.", "bytes",
        query(f"sum by (pod) (process_resident_memory_bytes{{{W}}})", "{{pod}}"),
    ))
    return d


def facility() -> dashboard.Dashboard:
    W_ = W
    extra = [
        dashboard.QueryVariable("aggregation")
        .label("Aggregation")
        .datasource(DS)
        .query(f"label_values(sensorpipe_worker_zone_aggregate{{{W_}}}, aggregation)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED),
        dashboard.QueryVariable("metric")
        .label("Metric")
        .datasource(DS)
        .query(f'label_values(sensorpipe_worker_zone_aggregate{{{W_}, aggregation="$aggregation"}}, metric)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .current(VariableOption(selected=True, text="All", value="$__all")),
        dashboard.QueryVariable("zone")
        .label("Zone")
        .datasource(DS)
        .query(f'label_values(sensorpipe_worker_zone_aggregate{{{W_}, aggregation="$aggregation"}}, zone)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all")),
    ]
    d = variables(base(
        "sensorpipe-facility",
        "sensorpipe / Facility",
        "Per-zone trends and anomalies of one SensorPipeline, from the workers' zone gauges and anomaly counters.",
    ), extra)
    zone_avg = (
        f'avg by (zone) (sensorpipe_worker_zone_aggregate{{{W}, aggregation="$aggregation", metric=~"$metric", '
        f'function="avg", zone=~"$zone"}})'
    )

    d = d.with_row(dashboard.Row("Now"))
    d = d.with_panel(big(
        "Sensors firing or silent", "Sensors with an open anomaly episode now, by rule (silence: sensors that "
        "stopped reporting).", "short",
        query(f"sum by (rule) (sensorpipe_worker_active_anomalies{{{W}}})", "{{rule}}", instant=True), span=8,
    ))
    d = d.with_panel(big(
        "Sensors reporting", "Sensors known to the pipeline's state.", "short",
        query(f"sum(sensorpipe_worker_sensors{{{W}}})", "sensors", instant=True),
    ))
    d = d.with_panel(big(
        "Anomalies in the last hour", "Anomalies that started in the last hour.", "short",
        query(f'sum(increase(sensorpipe_worker_anomalies_total{{{W}, state="firing"}}[1h]))', "anomalies",
              instant=True),
        span=4,
    ))
    d = d.with_panel(big(
        "$metric now per zone", "Average of the latest final window per zone (merged over every input partition).", "none",
        query(zone_avg, "{{zone}}", instant=True), span=8,
    ).repeat("metric").repeat_direction("h"))

    d = d.with_row(dashboard.Row("Trends"))
    d = d.with_panel(graph(
        "$metric per zone", "Final window average per zone over time (the aggregation's windows, e.g. 5 minutes, merged over every input partition).",
        "none", query(zone_avg, "{{zone}}"), span=12,
    ).repeat("metric").repeat_direction("h"))
    d = d.with_panel(graph(
        "$metric range per zone", "Lowest and highest reading per zone in each window.", "none",
        query(f'min by (zone) (sensorpipe_worker_zone_aggregate{{{W}, aggregation="$aggregation", '
              f'metric=~"$metric", function="min", zone=~"$zone"}})', "{{zone}} min"),
        query(f'max by (zone) (sensorpipe_worker_zone_aggregate{{{W}, aggregation="$aggregation", '
              f'metric=~"$metric", function="max", zone=~"$zone"}})', "{{zone}} max"),
        span=12,
    ).repeat("metric").repeat_direction("h"))

    d = d.with_row(dashboard.Row("Anomalies"))
    d = d.with_panel(graph(
        "Anomalies per zone and rule", "Anomalies that started, per zone and rule ('' = sensors without a zone).",
        "short",
        query(f'sum by (zone, rule) (increase(sensorpipe_worker_zone_anomalies_total{{{W}, state="firing", '
              f'zone=~"$zone"}}[$__rate_interval]))', "{{zone}} {{rule}}"),
        stacked=True, span=12,
    ))
    d = d.with_panel(graph(
        "Firing and resolved by rule", "Anomaly transitions per rule and severity: firing when an episode starts, "
        "resolved when it ends.", "short",
        query(f"sum by (rule, severity, state) (increase(sensorpipe_worker_anomalies_total{{{W}}}[$__rate_interval]))",
              "{{rule}} ({{severity}}) {{state}}"),
        span=12,
    ))
    return d


DASHBOARDS = {"pipeline-health": pipeline_health, "facility": facility}


def render() -> dict[str, str]:
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {}
    for name, build in DASHBOARDS.items():
        model = json.loads(encoder.encode(build().build()))
        # Stable panel ids, so links to a panel (viewPanel=N) survive regeneration.
        for n, panel in enumerate(model["panels"], start=1):
            panel["id"] = n
        out[name] = json.dumps(model, sort_keys=True, indent=2) + "\n"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=pathlib.Path)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.out_dir / f"{name}.json").write_text(text)


if __name__ == "__main__":
    main()
