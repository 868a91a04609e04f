//! The second stage of an aggregation grouped by zone or by label.
//!
//! Readings are keyed by sensor, so one zone's readings reach every input partition. Each partition's engine folds
//! its share into *partial* windows ([`PartialWindow`]); this stage merges the partials of all input partitions
//! into one final [`Aggregate`] per (aggregation, group, window). A window is final once every input partition
//! has reported a frontier at or past the window's end ([`SourceProgress`]): a partition sends its partial of a
//! window before it reports a frontier past that window's end, in the same ordered stream, so nothing more of
//! that partition can arrive for it. This is Flink's per-channel watermark: the merged frontier is the minimum
//! over the sources.
//!
//! Partials are kept per source and folded in source order when the window is emitted, so the result does not
//! depend on how the sources' records interleaved (floating-point sums depend on order), and a partial that
//! arrives twice from one source (an at-least-once redelivery) replaces itself instead of counting twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::snapshot::Migration;
use super::window::Acc;
use crate::records::Aggregate;

/// One input partition's share of one window of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialWindow {
    pub aggregation: String,
    /// The group's value; `None` for readings without one.
    pub key: Option<String>,
    pub window_start: i64,
    /// The input partition the partial comes from.
    pub source: i32,
    /// Per aggregated metric, in the aggregation's metric order; `None` when no reading carried the metric.
    pub metrics: Vec<Option<MetricAcc>>,
}

/// count, sum, min and max of one metric in one partial. The floats travel as decimal strings: serde_json's
/// default number parser may miss the nearest double by an ulp, and a merged sum must be bit-exact (the same
/// input gives the same record, whichever way it went).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricAcc {
    pub count: u64,
    #[serde(with = "exact_f64")]
    pub sum: f64,
    #[serde(with = "exact_f64")]
    pub min: f64,
    #[serde(with = "exact_f64")]
    pub max: f64,
}

/// An f64 as its shortest round-trip decimal string, parsed back with Rust's correctly rounded parser.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(|_| D::Error::custom(format!("not a number: {text:?}")))
    }
}

impl MetricAcc {
    /// The accumulator of a closed window, `None` when no reading carried the metric.
    pub(super) fn of(acc: &Acc) -> Option<Self> {
        (acc.count > 0).then_some(Self { count: acc.count, sum: acc.sum, min: acc.min, max: acc.max })
    }

    fn fold_into(&self, acc: &mut Acc) {
        acc.count += self.count;
        acc.sum += self.sum;
        acc.min = acc.min.min(self.min);
        acc.max = acc.max.max(self.max);
    }
}

/// An input partition's frontier: every partial it will send for windows ending at or before `frontier` has been
/// sent. `sources` is the number of input partitions the sender knows of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProgress {
    pub source: i32,
    pub sources: i32,
    pub frontier: i64,
}

/// What happened to a record given to the merge stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    Added,
    /// The same source's partial of the same window was there already and was replaced.
    Replaced,
    /// The window was emitted already (a redelivery after its frontier passed); nothing changed.
    TooLate,
    /// The aggregation is not one of this pipeline's (a partial from another definition); nothing changed.
    UnknownAggregation,
}

impl Merged {
    /// The metric label (`merge_partials_total{result}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Merged::Added => "added",
            Merged::Replaced => "replaced",
            Merged::TooLate => "too_late",
            Merged::UnknownAggregation => "unknown_aggregation",
        }
    }
}

/// Open windows, keyed so that the oldest window end comes first.
type WindowKey = (i64, usize, Option<String>, i64);

/// Everything the merge stage remembers; exactly what its snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct MergeState {
    frontiers: BTreeMap<i32, i64>,
    sources: i32,
    /// The merged frontier windows were emitted up to.
    emitted: Option<i64>,
    /// (window end, aggregation index, key, window start) → source → metrics.
    open: BTreeMap<WindowKey, BTreeMap<i32, Vec<Option<MetricAcc>>>>,
}

/// The merge stage of one repartition partition.
#[derive(Debug)]
pub struct MergeEngine {
    plan: Arc<Plan>,
    state: MergeState,
}

impl MergeEngine {
    pub(super) fn new(plan: Arc<Plan>) -> Self {
        Self { plan, state: MergeState::default() }
    }

    /// Adds one partial.
    pub fn add(&mut self, partial: PartialWindow) -> Merged {
        let Some(index) = self.plan.aggregations.iter().position(|a| a.name == partial.aggregation) else {
            return Merged::UnknownAggregation;
        };
        let end = partial.window_start.saturating_add(self.plan.aggregations[index].size_ms);
        if self.state.emitted.is_some_and(|f| end <= f) {
            return Merged::TooLate;
        }
        let window = (end, index, partial.key, partial.window_start);
        match self.state.open.entry(window).or_default().insert(partial.source, partial.metrics) {
            Some(_) => Merged::Replaced,
            None => Merged::Added,
        }
    }

    /// Records a source's frontier and emits, oldest first, every window the merged frontier has passed.
    pub fn progress(&mut self, p: SourceProgress, out: &mut Vec<Aggregate>) {
        let f = self.state.frontiers.entry(p.source).or_insert(p.frontier);
        *f = (*f).max(p.frontier);
        self.state.sources = self.state.sources.max(p.sources).max(p.source + 1);
        let Some(merged) = self.merged_frontier() else { return };
        while let Some(entry) = self.state.open.first_entry() {
            let (end, index, key, start) = entry.key().clone();
            if end > merged {
                break;
            }
            let by_source = entry.remove();
            let agg = &self.plan.aggregations[index];
            let mut accs = vec![Acc::default(); agg.metrics.len()];
            for metrics in by_source.values() {
                for (acc, m) in accs.iter_mut().zip(metrics) {
                    if let Some(m) = m {
                        m.fold_into(acc);
                    }
                }
            }
            out.push(super::finalize(&self.plan, agg, key.as_deref(), start, &accs));
        }
        self.state.emitted = Some(self.state.emitted.map_or(merged, |e| e.max(merged)));
    }

    /// The minimum frontier over every source, once each of them has reported one.
    pub fn merged_frontier(&self) -> Option<i64> {
        let all = (0..self.state.sources).all(|s| self.state.frontiers.contains_key(&s));
        if !all || self.state.sources == 0 {
            return None;
        }
        self.state.frontiers.values().copied().min()
    }

    /// Windows waiting for a source's frontier.
    pub fn open_windows(&self) -> usize {
        self.state.open.len()
    }

    /// The state, encoded like a partition engine's (`snapshot`).
    pub fn snapshot(&self) -> Vec<u8> {
        super::snapshot::encode_merge(&self.state, &self.plan.signature)
    }

    /// The merge stage as of a snapshot; windows of aggregations changed since are dropped.
    pub(super) fn restore(plan: Arc<Plan>, bytes: &[u8]) -> Result<(Self, Migration), super::SnapshotError> {
        let decoded = super::snapshot::decode_merge(bytes, &plan.signature)?;
        let mut state = decoded.state;
        if !decoded.map.keeps_all() {
            let open = std::mem::take(&mut state.open);
            let new_index = |old: usize| decoded.map.aggregations.iter().position(|o| *o == Some(old));
            state.open = open
                .into_iter()
                .filter_map(|((end, old, key, start), by_source)| Some(((end, new_index(old)?, key, start), by_source)))
                .collect();
        }
        Ok((Self { plan, state }, decoded.migration))
    }
}
