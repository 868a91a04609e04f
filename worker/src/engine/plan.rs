//! A validated pipeline definition compiled for the hot path: metric names resolved to indices, durations to
//! milliseconds.

use std::collections::BTreeMap;

use super::snapshot::Signature;
use crate::model::{Direction, Function, PipelineDefinition, Severity, WindowKind};
use crate::parse::ReadingParser;

#[derive(Clone, Debug)]
pub(crate) struct ThresholdPlan {
    pub(crate) name: String,
    pub(crate) metric: usize,
    pub(crate) above: bool,
    pub(crate) limit: f64,
    pub(crate) clear: f64,
    pub(crate) for_ms: i64,
    pub(crate) min_count: u32,
    pub(crate) severity: Severity,
}

#[derive(Clone, Debug)]
pub(crate) struct SpikePlan {
    pub(crate) name: String,
    pub(crate) metric: usize,
    pub(crate) delta: f64,
    pub(crate) within_ms: i64,
    pub(crate) direction: Direction,
    pub(crate) severity: Severity,
}

#[derive(Clone, Debug)]
pub(crate) struct SilencePlan {
    pub(crate) name: String,
    pub(crate) timeout_ms: i64,
    pub(crate) severity: Severity,
}

/// Which reading attribute an aggregation groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupBy {
    Sensor,
    /// Index into the reading's group slots: 0 is the zone, 1.. the labels.
    Slot(usize),
}

#[derive(Clone, Debug)]
pub(crate) struct AggregationPlan {
    pub(crate) name: String,
    pub(crate) group_by_name: String,
    pub(crate) group_by: GroupBy,
    pub(crate) size_ms: i64,
    pub(crate) advance_ms: i64,
    /// Indices of the aggregated metrics.
    pub(crate) metrics: Vec<usize>,
    pub(crate) functions: Vec<Function>,
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) parser: ReadingParser,
    pub(crate) metric_names: Vec<String>,
    pub(crate) sensor_zones: BTreeMap<String, String>,
    pub(crate) out_of_orderness_ms: i64,
    pub(crate) lateness_ms: i64,
    /// Processing time without records after which a partition counts as idle; 0 = never.
    pub(crate) idle_timeout_ms: i64,
    /// How far ahead of the reader's clock an event time may be; 0 = unchecked.
    pub(crate) max_clock_skew_ms: i64,
    /// Event time after which an unseen sensor or group value is forgotten.
    pub(crate) retention_ms: i64,
    pub(crate) thresholds: Vec<ThresholdPlan>,
    pub(crate) spikes: Vec<SpikePlan>,
    pub(crate) silence: Option<SilencePlan>,
    pub(crate) aggregations: Vec<AggregationPlan>,
    /// What a snapshot of this plan's state is built with (`snapshot`): which parts of a snapshot taken with
    /// another definition can be restored.
    pub(crate) signature: Signature,
}

impl Plan {
    /// Compiles a definition that passed [`crate::model::validate`].
    pub(crate) fn compile(def: &PipelineDefinition) -> Self {
        let fields = &def.input.fields;
        let metric = |name: &str| fields.metrics.iter().position(|m| m == name).unwrap_or(0);
        let p = &def.processing;
        let thresholds = p
            .thresholds
            .iter()
            .map(|t| {
                let (above, limit) = match (t.above, t.below) {
                    (Some(limit), _) => (true, limit),
                    (None, Some(limit)) => (false, limit),
                    (None, None) => (true, f64::INFINITY),
                };
                ThresholdPlan {
                    name: t.name.clone(),
                    metric: metric(&t.metric),
                    above,
                    limit,
                    clear: t.clear.unwrap_or(limit),
                    for_ms: t.for_duration.as_millis_i64(),
                    min_count: t.min_count.max(1),
                    severity: t.severity,
                }
            })
            .collect();
        let spikes = p
            .spikes
            .iter()
            .map(|s| SpikePlan {
                name: s.name.clone(),
                metric: metric(&s.metric),
                delta: s.delta,
                within_ms: s.within.as_millis_i64(),
                direction: s.direction,
                severity: s.severity,
            })
            .collect();
        let silence = p.silence.as_ref().map(|s| SilencePlan {
            name: s.name.clone(),
            timeout_ms: s.timeout.as_millis_i64(),
            severity: s.severity,
        });
        let aggregations = p
            .aggregations
            .iter()
            .map(|a| {
                let group_by = match a.group_by.as_str() {
                    "sensor" => GroupBy::Sensor,
                    "zone" => GroupBy::Slot(0),
                    label => GroupBy::Slot(1 + fields.labels.iter().position(|l| l == label).unwrap_or(0)),
                };
                let size_ms = a.window.size.as_millis_i64();
                let advance_ms = match a.window.kind {
                    WindowKind::Tumbling => size_ms,
                    WindowKind::Hopping => a.window.advance.map_or(size_ms, |d| d.as_millis_i64()),
                };
                let metrics = if a.metrics.is_empty() {
                    (0..fields.metrics.len()).collect()
                } else {
                    a.metrics.iter().map(|m| metric(m)).collect()
                };
                let mut functions = a.functions.clone();
                functions.sort();
                functions.dedup();
                AggregationPlan {
                    name: a.name.clone(),
                    group_by_name: a.group_by.clone(),
                    group_by,
                    size_ms,
                    advance_ms,
                    metrics,
                    functions,
                }
            })
            .collect();
        let signature = Signature {
            core: fingerprint(&(fields, &p.event_time.max_out_of_orderness, &p.event_time.allowed_lateness)),
            thresholds: p.thresholds.iter().map(|t| (t.name.clone(), fingerprint(t))).collect(),
            spikes: p.spikes.iter().map(|s| (s.name.clone(), fingerprint(s))).collect(),
            silence: p.silence.as_ref().map(|s| (s.name.clone(), fingerprint(s))),
            aggregations: p.aggregations.iter().map(|a| (a.name.clone(), fingerprint(a))).collect(),
            whole: fingerprint(def),
        };
        Self {
            parser: ReadingParser::new(fields),
            metric_names: fields.metrics.clone(),
            sensor_zones: fields.sensor_zones.clone(),
            out_of_orderness_ms: p.event_time.max_out_of_orderness.as_millis_i64(),
            lateness_ms: p.event_time.allowed_lateness.as_millis_i64(),
            idle_timeout_ms: p.event_time.idle_timeout.as_millis_i64(),
            max_clock_skew_ms: p.event_time.max_clock_skew.as_millis_i64(),
            retention_ms: p.state_retention.as_millis_i64(),
            thresholds,
            spikes,
            silence,
            aggregations,
            signature,
        }
    }
}

/// xxh3 of a definition's canonical JSON.
fn fingerprint<T: serde::Serialize + ?Sized>(def: &T) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(def).unwrap_or_default())
}
