//! What the engine does with readings: `spec.processing` — event time, detection rules and aggregations.
//!
//! These types are the CRD's schema too (the operator embeds them), so their doc comments are the
//! `kubectl explain` text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;
use super::input::{MAX_FIELD_NAME, MAX_METRICS};

/// The most threshold rules, spike rules or aggregations one pipeline may have. The CRD states it as `maxItems`:
/// Kubernetes estimates the cost of the CEL rules inside a list from its bound, and refuses an unbounded one.
pub const MAX_RULES: usize = 64;

/// Detection rules and aggregations applied to every reading, in event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Processing {
    /// How far readings may arrive out of order, and how long windows wait for late ones.
    #[serde(default)]
    pub event_time: EventTime,
    /// Level rules: a metric above or below a limit, with hysteresis and a minimum duration. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULES))]
    pub thresholds: Vec<ThresholdRule>,
    /// Rate-of-change rules: a metric moving by more than `delta` within a time span. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULES))]
    pub spikes: Vec<SpikeRule>,
    /// A known sensor that sends nothing for `timeout` (in event time) is reported as silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<SilenceRule>,
    /// Windowed statistics (avg, min, max, count, sum) per sensor, zone or label. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULES))]
    pub aggregations: Vec<Aggregation>,
    /// A sensor, zone or label value not seen for this long (in event time) is forgotten, after its silence was
    /// reported, so state stays bounded as sensors come and go. It must be longer than every rule's and window's
    /// time span. Default 24h.
    #[serde(default = "default_state_retention")]
    pub state_retention: Duration,
}

fn default_state_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for Processing {
    fn default() -> Self {
        Self {
            event_time: EventTime::default(),
            thresholds: Vec::new(),
            spikes: Vec::new(),
            silence: None,
            aggregations: Vec::new(),
            state_retention: default_state_retention(),
        }
    }
}

/// Event-time settings of a partition.
///
/// The partition watermark is the newest event time seen minus `maxOutOfOrderness`. Detection rules see readings
/// in event-time order once the watermark passes them, so their alerts lag the data by `maxOutOfOrderness`.
/// A window closes once the watermark passes its end plus `allowedLateness`; a reading older than
/// watermark − `allowedLateness` goes to the dead-letter output with reason `late`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTime {
    /// How far behind the newest reading of its partition a reading may arrive and still be evaluated by the
    /// detection rules in order. Default 10s.
    #[serde(default = "default_out_of_orderness")]
    pub max_out_of_orderness: Duration,
    /// Extra time windows stay open after the watermark passed their end. A reading arriving in this span is still
    /// aggregated, but the detection rules have moved past it. Default 0s.
    #[serde(default)]
    pub allowed_lateness: Duration,
    /// A partition that receives nothing for this long (processing time, while its consumer is caught up and its
    /// leader reachable) stops holding back windows: its watermark then moves on with the wall clock, so its last
    /// windows close and its quiet sensors are reported silent. `0s` turns idleness off. Default 1m.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// A reading timestamped more than this far ahead of the worker's clock is dead-lettered with reason
    /// `timestamp_in_future` and moves no watermark (one device set to 2099 would otherwise end every window
    /// and silence every sensor of its partition). `0s` turns the guard off. Default 10m.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: Duration,
}

fn default_out_of_orderness() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_clock_skew() -> Duration {
    Duration::from_secs(600)
}

impl Default for EventTime {
    fn default() -> Self {
        Self {
            max_out_of_orderness: default_out_of_orderness(),
            allowed_lateness: Duration::ZERO,
            idle_timeout: default_idle_timeout(),
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

/// How urgent an anomaly is; a bounded set so it can be a metric label and an Alertmanager label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A level rule. Exactly one of `above` and `below` is set. One `firing` record is emitted when the condition has
/// held for `for` and `minCount` readings, one `resolved` record when the value is back past `clear`: values
/// oscillating between the limit and the clear level never flap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// CEL rules (`x-kubernetes-validations`) let the API server reject these mistakes at `kubectl apply`; the same
// checks run in `validate` for files that never meet an API server.
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.above) != has(self.below)", "message": "set exactly one of above and below"},
    {"rule": "!has(self.clear) || !has(self.above) || self.clear <= self.above",
     "message": "clear must be at or below the limit for an `above` rule"},
    {"rule": "!has(self.clear) || !has(self.below) || self.clear >= self.below",
     "message": "clear must be at or above the limit for a `below` rule"}
]))]
pub struct ThresholdRule {
    /// Rule name, unique in the pipeline (lowercase letters, digits, `-`, `_`; at most 63); it names the anomalies it
    /// emits.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Metric the rule watches; one of `input.fields.metrics`.
    #[schemars(length(min = 1, max = MAX_FIELD_NAME))]
    pub metric: String,
    /// Fire when the metric is strictly above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fire when the metric is strictly below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Resolve only once the metric is back at or past this level (at or below it for `above`, at or above it for
    /// `below`). Defaults to the limit itself (no hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// Minimum time the condition must hold, from its first breaching reading, before firing. Default 0s.
    #[serde(default, rename = "for")]
    pub for_duration: Duration,
    /// Minimum number of consecutive breaching readings before firing. Default 1.
    #[serde(default = "one")]
    pub min_count: u32,
    /// Severity of the anomalies. Default `warning`.
    #[serde(default)]
    pub severity: Severity,
}

fn one() -> u32 {
    1
}

/// Which way a spike must go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// An increase by more than `delta`.
    Rise,
    /// A decrease by more than `delta`.
    Fall,
    /// Either.
    #[default]
    Any,
}

/// A rate-of-change rule: fires when a reading differs by more than `delta` from an earlier reading of the same
/// sensor at most `within` before it; resolves at the first reading for which no such earlier reading exists.
/// A slow drift that takes longer than `within` never fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpikeRule {
    /// Rule name, unique in the pipeline (at most 63 characters).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Metric the rule watches; one of `input.fields.metrics`.
    #[schemars(length(min = 1, max = MAX_FIELD_NAME))]
    pub metric: String,
    /// Change that counts as a spike, strictly exceeded, in the metric's unit (for example 10 for 10 °C). Positive.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 0.0", "message": "delta must be positive"}]))]
    pub delta: f64,
    /// Time span the change must happen within, for example 5m.
    pub within: Duration,
    /// `rise`, `fall` or `any` (default).
    #[serde(default)]
    pub direction: Direction,
    /// Severity of the anomalies. Default `warning`.
    #[serde(default)]
    pub severity: Severity,
}

/// A sensor that has reported before and then sends nothing for `timeout` of partition event time fires a
/// `silence` anomaly (failed sensor, dead battery, lost network); it resolves when the sensor reports again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SilenceRule {
    /// Rule name. Default `silence`.
    #[serde(default = "default_silence_name")]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Event time without a reading after which a sensor counts as silent.
    pub timeout: Duration,
    /// Severity of the anomalies. Default `warning`.
    #[serde(default)]
    pub severity: Severity,
}

fn default_silence_name() -> String {
    "silence".to_owned()
}

/// Windowed statistics over readings, emitted once per window and group when the window closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregation {
    /// Aggregation name, unique in the pipeline (at most 63 characters); it names the records it emits.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Window shape.
    pub window: Window,
    /// What to group by: `sensor`, `zone`, or the name of one of `input.fields.labels`. Default `zone`.
    #[serde(default = "default_group_by")]
    #[schemars(length(min = 1, max = MAX_FIELD_NAME))]
    pub group_by: String,
    /// Metrics to aggregate; default all of `input.fields.metrics`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_METRICS), inner(length(min = 1, max = MAX_FIELD_NAME)))]
    pub metrics: Vec<String>,
    /// Statistics to emit per metric; default `[avg, min, max, count]`.
    #[serde(default = "default_functions")]
    #[schemars(length(max = 5))]
    pub functions: Vec<Function>,
}

fn default_group_by() -> String {
    "zone".to_owned()
}

fn default_functions() -> Vec<Function> {
    vec![Function::Avg, Function::Min, Function::Max, Function::Count]
}

/// An event-time window, aligned to the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// `duration()` is CEL's Go-style parser, which has no `d` unit: sizes written in days are left to `validate`.
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.type) && self.type == 'hopping' ? has(self.advance) : !has(self.advance)",
     "message": "a hopping window needs advance; a tumbling window must not set it"},
    {"rule": "self.size.contains('d') || duration(self.size) > duration('0s')", "message": "size must be positive"},
    {"rule": "!has(self.advance) || self.size.contains('d') || self.advance.contains('d') || (duration(self.advance) > duration('0s') && duration(self.advance) <= duration(self.size))",
     "message": "advance must be positive and at most size"}
]))]
pub struct Window {
    /// `tumbling` (default): back-to-back windows of `size`. `hopping`: windows of `size` starting every
    /// `advance`, so each reading falls into size/advance windows.
    #[serde(default, rename = "type")]
    pub kind: WindowKind,
    /// Window length, for example 5m.
    pub size: Duration,
    /// Distance between window starts of a hopping window; at most `size`, and `size` must be a multiple of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<Duration>,
}

/// Window shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowKind {
    #[default]
    Tumbling,
    Hopping,
}

/// A statistic of a metric over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Function {
    Avg,
    Min,
    Max,
    Count,
    Sum,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Count => "count",
            Self::Sum => "sum",
        }
    }
}
