//! The worker's Prometheus metrics (`sensorpipe_worker_*`), documented in docs/metrics.md.
//!
//! Labels are bounded: topic, partition, rule, severity, reason, aggregation, and zone/metric/function for the
//! facility gauges, which are capped by `--zone-gauge-limit`. Never a sensor id or an error message.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::records::Aggregate;

/// Every metric of one worker process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub records_consumed: IntCounterVec,
    pub records_produced: IntCounterVec,
    pub ingest_to_emit: Histogram,
    pub event_to_emit: HistogramVec,
    pub lag_records: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub watermark_delay: GaugeVec,
    pub anomalies: IntCounterVec,
    pub aggregates: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub late_records: IntCounterVec,
    pub open_windows: IntGaugeVec,
    pub buffered_readings: IntGaugeVec,
    pub sensors: IntGaugeVec,
    pub group_values: IntGaugeVec,
    pub idle_advances: IntCounter,
    pub merge_partials: IntCounterVec,
    pub merge_open_windows: IntGaugeVec,
    pub active_anomalies: IntGaugeVec,
    pub assigned_partitions: IntGauge,
    pub rebalances: IntCounterVec,
    pub transactions: IntCounterVec,
    pub commit_duration: Histogram,
    pub restores: IntCounterVec,
    pub restore_duration: Histogram,
    pub restore_last_duration: Gauge,
    pub snapshot_bytes: IntGauge,
    pub restore_replayed: IntCounter,
    pub kafka_errors: IntCounterVec,
    pub blocked_partitions: IntGauge,
    pub up: Gauge,
    zone_aggregate: GaugeVec,
    zone_anomalies: IntCounterVec,
    zone_gauges_dropped: IntCounter,
    zone_series: Mutex<HashSet<[String; 4]>>,
    zone_anomaly_series: Mutex<HashSet<[String; 3]>>,
    zone_limit: usize,
}

/// Latency buckets from a millisecond to an hour: a healthy pipeline sits in the first few, a replay of history
/// or a stalled one in the last.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("sensorpipe").subsystem("worker")
}

fn hopts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace("sensorpipe").subsystem("worker").buckets(buckets.to_vec())
}

impl Metrics {
    /// `pipeline` becomes a constant label of every series.
    pub fn new(pipeline: &str, zone_limit: usize) -> Result<Self, prometheus::Error> {
        let labels = [("pipeline".to_owned(), pipeline.to_owned())].into_iter().collect();
        let registry = Registry::new_custom(None, Some(labels))?;
        let m = Self {
            records_consumed: IntCounterVec::new(
                opts("records_consumed_total", "Input records consumed, by outcome (reading, dead_letter)."),
                &["topic", "outcome"],
            )?,
            records_produced: IntCounterVec::new(
                opts(
                    "records_produced_total",
                    "Output records acknowledged by the broker (delivered) or not (failed).",
                ),
                &["topic", "outcome"],
            )?,
            ingest_to_emit: Histogram::with_opts(hopts(
                "ingest_to_emit_seconds",
                "From the input record's Kafka timestamp to the output it caused being handed to the producer.",
                LATENCY_BUCKETS,
            ))?,
            event_to_emit: HistogramVec::new(
                hopts(
                    "event_to_emit_seconds",
                    "From event time (anomaly time, window end) to the output being handed to the producer.",
                    LATENCY_BUCKETS,
                ),
                &["kind"],
            )?,
            lag_records: IntGaugeVec::new(
                opts("consumer_lag_records", "Records in the partition not yet processed (high watermark - position)."),
                &["topic", "partition"],
            )?,
            lag_seconds: GaugeVec::new(
                opts(
                    "consumer_lag_seconds",
                    "Age of the oldest unprocessed record: now - Kafka timestamp of the last processed record while \
                     the partition has lag, else 0.",
                ),
                &["topic", "partition"],
            )?,
            watermark_delay: GaugeVec::new(
                opts("watermark_delay_seconds", "Wall clock minus the partition's event-time watermark."),
                &["partition"],
            )?,
            anomalies: IntCounterVec::new(
                opts("anomalies_total", "Anomaly records emitted, by rule, severity and state (firing, resolved)."),
                &["rule", "severity", "state"],
            )?,
            aggregates: IntCounterVec::new(
                opts("aggregates_total", "Window aggregates emitted, by aggregation."),
                &["aggregation"],
            )?,
            dead_letters: IntCounterVec::new(
                opts("dead_letters_total", "Input records sent to the dead-letter topic, by reason."),
                &["reason"],
            )?,
            late_records: IntCounterVec::new(
                opts(
                    "late_records_total",
                    "Readings behind the watermark: within_allowed_lateness (windows only) or beyond (dead letter).",
                ),
                &["reason"],
            )?,
            open_windows: IntGaugeVec::new(opts("open_windows", "Windows open in the engine state."), &["partition"])?,
            buffered_readings: IntGaugeVec::new(
                opts("buffered_readings", "Readings waiting in the reorder buffer for the watermark."),
                &["partition"],
            )?,
            sensors: IntGaugeVec::new(opts("sensors", "Sensors known to the engine state."), &["partition"])?,
            group_values: IntGaugeVec::new(
                opts("group_values", "Zone and label values known to the engine state."),
                &["partition"],
            )?,
            idle_advances: IntCounter::with_opts(opts(
                "idle_advances_total",
                "Watermark moves of idle input partitions (no records for eventTime.idleTimeout).",
            ))?,
            merge_partials: IntCounterVec::new(
                opts(
                    "merge_partials_total",
                    "Partial zone/label windows received by the merge stage, by result (added, replaced, too_late, \
                     unknown_aggregation).",
                ),
                &["result"],
            )?,
            merge_open_windows: IntGaugeVec::new(
                opts(
                    "merge_open_windows",
                    "Zone/label windows the merge stage holds, waiting for a partition's frontier.",
                ),
                &["partition"],
            )?,
            active_anomalies: IntGaugeVec::new(
                opts(
                    "active_anomalies",
                    "Open anomaly episodes: sensors firing a threshold or spike rule, or silent, by rule.",
                ),
                &["partition", "rule"],
            )?,
            assigned_partitions: IntGauge::with_opts(opts("assigned_partitions", "Input partitions owned now."))?,
            rebalances: IntCounterVec::new(
                opts("rebalances_total", "Consumer group rebalance events, by kind (assign, revoke, lost)."),
                &["kind"],
            )?,
            transactions: IntCounterVec::new(
                opts(
                    "transactions_total",
                    "Kafka transactions (exactlyOnce) or offset commits (atLeastOnce), by outcome.",
                ),
                &["outcome"],
            )?,
            commit_duration: Histogram::with_opts(hopts(
                "commit_duration_seconds",
                "Time to commit one batch (transaction commit, or flush + offset commit).",
                LATENCY_BUCKETS,
            ))?,
            restores: IntCounterVec::new(
                opts(
                    "restores_total",
                    "Partition state restores, by source (snapshot, migrated, empty, incompatible).",
                ),
                &["source"],
            )?,
            restore_duration: Histogram::with_opts(hopts(
                "restore_duration_seconds",
                "Time to rebuild one partition's state.",
                LATENCY_BUCKETS,
            ))?,
            restore_last_duration: Gauge::with_opts(opts(
                "restore_last_duration_seconds",
                "Time this worker's most recent partition restore took (a restore is rare: the histogram's rate is \
                 empty most of the time, this gauge is not).",
            ))?,
            snapshot_bytes: IntGauge::with_opts(opts(
                "snapshot_last_bytes",
                "Size of the most recent state snapshot this worker wrote (what a restore of that partition reads).",
            ))?,
            restore_replayed: IntCounter::with_opts(opts(
                "restore_replayed_records_total",
                "Input records re-read to rebuild state after a snapshot (outputs suppressed).",
            ))?,
            kafka_errors: IntCounterVec::new(
                opts("kafka_errors_total", "Errors reported by the Kafka client, by category."),
                &["kind"],
            )?,
            blocked_partitions: IntGauge::with_opts(opts(
                "blocked_partitions",
                "Partitions whose batches failed twice or more in a row (an output refused, a commit aborted): \
                 paused for a backoff of up to 30 s between retries, and /readyz fails while there is one.",
            ))?,
            up: Gauge::with_opts(opts("ready", "1 when the worker is assigned and restored (what /readyz says)."))?,
            zone_aggregate: GaugeVec::new(
                opts("zone_aggregate", "Latest closed window value per zone (or other group) of an aggregation."),
                &["aggregation", "zone", "metric", "function"],
            )?,
            zone_anomalies: IntCounterVec::new(
                opts("zone_anomalies_total", "Anomaly records emitted per zone, by rule and state (firing, resolved)."),
                &["zone", "rule", "state"],
            )?,
            zone_gauges_dropped: IntCounter::with_opts(opts(
                "zone_gauges_dropped_total",
                "Zone series (aggregate gauges, zone anomaly counters) not exported because --zone-gauge-limit \
                 series of that family exist.",
            ))?,
            zone_series: Mutex::new(HashSet::new()),
            zone_anomaly_series: Mutex::new(HashSet::new()),
            zone_limit,
            registry,
        };
        m.register()?;
        m.initialise_known_series();
        Ok(m)
    }

    fn register(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.records_consumed.clone()))?;
        r.register(Box::new(self.records_produced.clone()))?;
        r.register(Box::new(self.ingest_to_emit.clone()))?;
        r.register(Box::new(self.event_to_emit.clone()))?;
        r.register(Box::new(self.lag_records.clone()))?;
        r.register(Box::new(self.lag_seconds.clone()))?;
        r.register(Box::new(self.watermark_delay.clone()))?;
        r.register(Box::new(self.anomalies.clone()))?;
        r.register(Box::new(self.aggregates.clone()))?;
        r.register(Box::new(self.dead_letters.clone()))?;
        r.register(Box::new(self.late_records.clone()))?;
        r.register(Box::new(self.open_windows.clone()))?;
        r.register(Box::new(self.buffered_readings.clone()))?;
        r.register(Box::new(self.sensors.clone()))?;
        r.register(Box::new(self.group_values.clone()))?;
        r.register(Box::new(self.idle_advances.clone()))?;
        r.register(Box::new(self.merge_partials.clone()))?;
        r.register(Box::new(self.merge_open_windows.clone()))?;
        r.register(Box::new(self.active_anomalies.clone()))?;
        r.register(Box::new(self.assigned_partitions.clone()))?;
        r.register(Box::new(self.rebalances.clone()))?;
        r.register(Box::new(self.transactions.clone()))?;
        r.register(Box::new(self.commit_duration.clone()))?;
        r.register(Box::new(self.restores.clone()))?;
        r.register(Box::new(self.restore_duration.clone()))?;
        r.register(Box::new(self.restore_last_duration.clone()))?;
        r.register(Box::new(self.snapshot_bytes.clone()))?;
        r.register(Box::new(self.restore_replayed.clone()))?;
        r.register(Box::new(self.kafka_errors.clone()))?;
        r.register(Box::new(self.blocked_partitions.clone()))?;
        r.register(Box::new(self.up.clone()))?;
        r.register(Box::new(self.zone_aggregate.clone()))?;
        r.register(Box::new(self.zone_anomalies.clone()))?;
        r.register(Box::new(self.zone_gauges_dropped.clone()))?;
        // process_* (start time, CPU, memory, open files): restarts and resource use per worker.
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(())
    }

    /// Series of bounded, known label values exist from the start at 0, so rates and alerts work before the
    /// first event (an absent series is not a zero).
    fn initialise_known_series(&self) {
        for reason in crate::reason::Reason::ALL {
            self.dead_letters.with_label_values(&[reason.as_str()]);
        }
        for reason in ["within_allowed_lateness", "beyond_allowed_lateness"] {
            self.late_records.with_label_values(&[reason]);
        }
        for result in ["added", "replaced", "too_late", "unknown_aggregation"] {
            self.merge_partials.with_label_values(&[result]);
        }
        for kind in ["assign", "revoke", "lost"] {
            self.rebalances.with_label_values(&[kind]);
        }
        for outcome in ["committed", "aborted", "failed"] {
            self.transactions.with_label_values(&[outcome]);
        }
        for source in ["snapshot", "migrated", "empty", "incompatible"] {
            self.restores.with_label_values(&[source]);
        }
        for kind in
            ["transport", "timeout", "fenced", "unknown_topic", "auth", "queue_full", "stuck", "other", "client"]
        {
            self.kafka_errors.with_label_values(&[kind]);
        }
    }

    /// The per-topic series of this pipeline's topics, at 0 from the start (like `initialise_known_series`), so a
    /// "failed deliveries" panel or alert has a series before the first failure.
    pub fn initialise_topics(&self, topics: &super::config::Topics) {
        for outcome in ["reading", "dead_letter"] {
            self.records_consumed.with_label_values(&[&topics.input, outcome]);
        }
        for topic in [&topics.anomalies, &topics.aggregates, &topics.dead_letter, &topics.state, &topics.repartition] {
            for outcome in ["delivered", "failed"] {
                self.records_produced.with_label_values(&[topic, outcome]);
            }
        }
    }

    /// Sets the facility gauges from a closed window, within the series limit.
    pub fn observe_aggregate(&self, a: &Aggregate) {
        let zone = a.key.as_deref().unwrap_or("");
        for (metric, stats) in &a.stats {
            let values = [("avg", stats.avg), ("min", stats.min), ("max", stats.max), ("sum", stats.sum)]
                .into_iter()
                .chain([("count", stats.count.map(|c| c as f64))]);
            for (function, value) in values {
                let Some(value) = value else { continue };
                let labels = [a.aggregation.as_str(), zone, metric.as_str(), function];
                if self.admit(&self.zone_series, labels) {
                    self.zone_aggregate.with_label_values(&labels).set(value);
                }
            }
        }
    }

    /// Drops the facility gauges of the groups `owned_elsewhere` says this worker no longer emits (their merge
    /// partition went to another worker), so each zone's gauge lives on exactly one worker.
    pub fn forget_zone_gauges(&self, owned_elsewhere: impl Fn(&str, &str) -> bool) {
        let Ok(mut series) = self.zone_series.lock() else { return };
        series.retain(|labels| {
            let gone = owned_elsewhere(&labels[0], &labels[1]);
            if gone {
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                let _ = self.zone_aggregate.remove_label_values(&l);
            }
            !gone
        });
    }

    /// Counts an anomaly under its zone (an anomaly without one counts under `""`), within the series limit.
    pub fn observe_zone_anomaly(&self, zone: Option<&str>, rule: &str, state: &str) {
        let labels = [zone.unwrap_or(""), rule, state];
        if self.admit(&self.zone_anomaly_series, labels) {
            self.zone_anomalies.with_label_values(&labels).inc();
        }
    }

    /// Whether a zone series may be exported: it already is, or its family is below `--zone-gauge-limit`
    /// (then it is remembered). A refused one is counted in `zone_gauges_dropped_total`.
    fn admit<const N: usize>(&self, family: &Mutex<HashSet<[String; N]>>, labels: [&str; N]) -> bool {
        let Ok(mut series) = family.lock() else { return false };
        let key = labels.map(str::to_owned);
        if series.contains(&key) {
            return true;
        }
        if series.len() >= self.zone_limit {
            self.zone_gauges_dropped.inc();
            return false;
        }
        series.insert(key);
        true
    }

    /// Drops the series of a repartition partition this worker no longer merges.
    pub fn forget_merge_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let _ = self.lag_records.remove_label_values(&[topic, &p]);
        let _ = self.lag_seconds.remove_label_values(&[topic, &p]);
        let _ = self.merge_open_windows.remove_label_values(&[&p]);
    }

    /// Drops the per-partition series of a partition this worker no longer owns.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let _ = self.lag_records.remove_label_values(&[topic, &p]);
        let _ = self.lag_seconds.remove_label_values(&[topic, &p]);
        let _ = self.watermark_delay.remove_label_values(&[&p]);
        let _ = self.open_windows.remove_label_values(&[&p]);
        let _ = self.buffered_readings.remove_label_values(&[&p]);
        let _ = self.sensors.remove_label_values(&[&p]);
        let _ = self.group_values.remove_label_values(&[&p]);
        use prometheus::core::Collector;
        let rules: Vec<String> = self
            .active_anomalies
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.name() == "partition" && l.value() == p))
            .filter_map(|m| m.get_label().iter().find(|l| l.name() == "rule").map(|l| l.value().to_owned()))
            .collect();
        for rule in rules {
            let _ = self.active_anomalies.remove_label_values(&[&p, &rule]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::MetricStats;
    use std::collections::BTreeMap;

    fn agg(zone: &str, avg: f64) -> Aggregate {
        let stats = MetricStats { avg: Some(avg), min: None, max: None, count: Some(3), sum: None };
        Aggregate {
            id: String::new(),
            aggregation: "zone-5m".into(),
            group_by: "zone".into(),
            key: Some(zone.into()),
            window_start: 0,
            window_end: 1,
            stats: BTreeMap::from([("temperature".to_owned(), stats)]),
        }
    }

    #[test]
    fn zone_gauges_are_capped_and_the_overflow_is_counted() {
        let m = Metrics::new("p", 2).unwrap();
        m.observe_aggregate(&agg("floor-1", 21.5));
        m.observe_aggregate(&agg("floor-2", 22.5));
        m.observe_aggregate(&agg("floor-1", 23.0));
        let text = String::from_utf8(m.render()).unwrap();
        // Label order in the exposition is the library's business; match on the labels, not their order.
        let value = |labels: &[&str]| -> Option<String> {
            text.lines()
                .filter(|l| l.starts_with("sensorpipe_worker_zone_aggregate{"))
                .find(|l| labels.iter().all(|want| l.contains(want)))
                .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
        };
        assert_eq!(value(&[r#"zone="floor-1""#, r#"function="avg""#, r#"pipeline="p""#]).as_deref(), Some("23"));
        assert_eq!(value(&[r#"zone="floor-1""#, r#"function="count""#]).as_deref(), Some("3"));
        assert!(!text.contains("floor-2"), "{text}");
        assert_eq!(m.zone_gauges_dropped.get(), 2);
    }

    #[test]
    fn zone_anomaly_counters_are_capped_too() {
        let m = Metrics::new("p", 2).unwrap();
        m.observe_zone_anomaly(Some("floor-1"), "overheat", "firing");
        m.observe_zone_anomaly(Some("floor-1"), "overheat", "firing");
        m.observe_zone_anomaly(None, "sensor-silent", "firing");
        m.observe_zone_anomaly(Some("floor-2"), "overheat", "firing");
        assert_eq!(m.zone_anomalies.with_label_values(&["floor-1", "overheat", "firing"]).get(), 2);
        assert_eq!(m.zone_anomalies.with_label_values(&["", "sensor-silent", "firing"]).get(), 1);
        assert_eq!(m.zone_gauges_dropped.get(), 1);
    }

    #[test]
    fn a_revoked_partition_loses_its_active_anomaly_series_and_only_those() {
        let m = Metrics::new("p", 10).unwrap();
        m.active_anomalies.with_label_values(&["0", "overheat"]).set(2);
        m.active_anomalies.with_label_values(&["0", "sensor-silent"]).set(1);
        m.active_anomalies.with_label_values(&["1", "overheat"]).set(3);
        m.forget_partition("temperature_readings", 0);
        let text = String::from_utf8(m.render()).unwrap();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("sensorpipe_worker_active_anomalies{")).collect();
        assert_eq!(series.len(), 1, "{text}");
        assert!(series[0].contains(r#"partition="1""#) && series[0].ends_with(" 3"), "{text}");
    }
}
