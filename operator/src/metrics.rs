//! Operator metrics (`sensorpipe_operator_*`), labelled only by bounded values: pipeline (namespace/name of a
//! SensorPipeline), error reason (a fixed set of CamelCase words), decision reason.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub reconcile_errors: IntCounterVec,
    pub lag_records: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub throughput: GaugeVec,
    pub desired_replicas: IntGaugeVec,
    pub ready_replicas: IntGaugeVec,
    pub scale_events: IntCounterVec,
    pub condition: IntGaugeVec,
    pub leader: prometheus::IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let pipeline = &["pipeline"];
        let m = Self {
            reconciles: IntCounterVec::new(
                Opts::new("sensorpipe_operator_reconciles_total", "Reconciles run, by pipeline."),
                pipeline,
            )?,
            reconcile_duration: HistogramVec::new(
                HistogramOpts::new("sensorpipe_operator_reconcile_duration_seconds", "Time one reconcile took.")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                pipeline,
            )?,
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    "sensorpipe_operator_reconcile_errors_total",
                    "Reconciles that failed or found a problem, by pipeline and reason (InvalidSpec, KafkaUnavailable, \
                     KafkaRefused, ResourceConflict, NotSupported, InputTopicMissing, KubeApi).",
                ),
                &["pipeline", "reason"],
            )?,
            lag_records: IntGaugeVec::new(
                Opts::new(
                    "sensorpipe_operator_pipeline_lag_records",
                    "Consumer-group lag on the input topic, records.",
                ),
                pipeline,
            )?,
            lag_seconds: GaugeVec::new(
                Opts::new(
                    "sensorpipe_operator_pipeline_lag_seconds",
                    "Age of the oldest unprocessed input record, seconds (0 without lag).",
                ),
                pipeline,
            )?,
            throughput: GaugeVec::new(
                Opts::new(
                    "sensorpipe_operator_pipeline_throughput_records_per_second",
                    "Input records the workers committed per second between the last two observations.",
                ),
                pipeline,
            )?,
            desired_replicas: IntGaugeVec::new(
                Opts::new("sensorpipe_operator_pipeline_desired_replicas", "Workers the operator wants."),
                pipeline,
            )?,
            ready_replicas: IntGaugeVec::new(
                Opts::new("sensorpipe_operator_pipeline_ready_replicas", "Workers ready."),
                pipeline,
            )?,
            scale_events: IntCounterVec::new(
                Opts::new(
                    "sensorpipe_operator_scale_events_total",
                    "Replica changes made by the autoscaler, by pipeline and reason (ScaleUp, ScaleDown, \
                     ScaleToZero, Activate).",
                ),
                &["pipeline", "reason"],
            )?,
            condition: IntGaugeVec::new(
                Opts::new(
                    "sensorpipe_operator_pipeline_condition",
                    "1 while the pipeline's status condition is True, else 0, by condition (Ready, TopicsReady, \
                     WorkersReady, Autoscaling, Degraded).",
                ),
                &["pipeline", "condition"],
            )?,
            leader: prometheus::IntGauge::new(
                "sensorpipe_operator_leader",
                "1 while this operator instance holds the leader lease and reconciles, else 0.",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.reconciles.clone()))?;
        m.registry.register(Box::new(m.reconcile_duration.clone()))?;
        m.registry.register(Box::new(m.reconcile_errors.clone()))?;
        m.registry.register(Box::new(m.lag_records.clone()))?;
        m.registry.register(Box::new(m.lag_seconds.clone()))?;
        m.registry.register(Box::new(m.throughput.clone()))?;
        m.registry.register(Box::new(m.desired_replicas.clone()))?;
        m.registry.register(Box::new(m.ready_replicas.clone()))?;
        m.registry.register(Box::new(m.scale_events.clone()))?;
        m.registry.register(Box::new(m.condition.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(m)
    }

    /// Removes a deleted pipeline's series.
    pub fn forget(&self, pipeline: &str) {
        for g in [&self.lag_records, &self.desired_replicas, &self.ready_replicas] {
            let _ = g.remove_label_values(&[pipeline]);
        }
        for g in [&self.lag_seconds, &self.throughput] {
            let _ = g.remove_label_values(&[pipeline]);
        }
        for c in crate::crd::condition_types::ALL {
            let _ = self.condition.remove_label_values(&[pipeline, c]);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding into a String only fails on invalid UTF-8, which metric names and labels here never are.
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercised() -> Metrics {
        let m = Metrics::new().unwrap();
        let p = "facilities/building-a";
        m.reconciles.with_label_values(&[p]).inc();
        m.reconcile_duration.with_label_values(&[p]).observe(0.2);
        m.reconcile_errors.with_label_values(&[p, "KafkaUnavailable"]).inc();
        m.lag_records.with_label_values(&[p]).set(1200);
        m.lag_seconds.with_label_values(&[p]).set(4.5);
        m.throughput.with_label_values(&[p]).set(800.0);
        m.desired_replicas.with_label_values(&[p]).set(3);
        m.ready_replicas.with_label_values(&[p]).set(2);
        m.scale_events.with_label_values(&[p, "ScaleUp"]).inc();
        m.condition.with_label_values(&[p, "Ready"]).set(1);
        m.leader.set(1);
        m
    }

    /// docs/operator.md lists exactly the exported families.
    #[test]
    fn documented_metrics_are_the_exported_ones() {
        let docs = include_str!("../../docs/operator.md");
        let documented: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `sensorpipe_operator_"))
            .filter_map(|rest| rest.split('`').next())
            .collect();
        let exported: std::collections::BTreeSet<String> = exercised()
            .registry
            .gather()
            .iter()
            .filter_map(|f| f.name().strip_prefix("sensorpipe_operator_").map(str::to_owned))
            .collect();
        let exported: std::collections::BTreeSet<&str> = exported.iter().map(String::as_str).collect();
        assert_eq!(documented, exported);
    }

    /// Prometheus' own linter accepts the exposition (installed by scripts/test.sh from Debian's prometheus).
    #[test]
    fn promtool_finds_nothing_to_lint() {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool not found: install Debian's prometheus package (scripts/test.sh does)");
        child.stdin.take().unwrap().write_all(exercised().render().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim().is_empty(), "{text}");
    }
}
