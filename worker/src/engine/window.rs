//! Tumbling and hopping event-time windows aligned to the epoch. Accumulators are mergeable (count, sum, min,
//! max); a window is emitted once, when the partition's frontier (watermark − allowed lateness) passes its end,
//! whether or not its keys are still sending.

use std::collections::BTreeMap;

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

use super::intern::NONE;
use super::plan::AggregationPlan;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Acc {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Default for Acc {
    fn default() -> Self {
        Self { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Acc {
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Open windows of one aggregation: window start → group key → one accumulator per aggregated metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowState {
    open: BTreeMap<i64, AHashMap<u32, Vec<Acc>>>,
}

/// A closed window of one group.
#[derive(Debug)]
pub(crate) struct Closed {
    pub(crate) start: i64,
    pub(crate) key: u32,
    pub(crate) accs: Vec<Acc>,
}

impl WindowState {
    /// Adds a reading's metric values (NaN = absent) to every window containing `ts`.
    pub(crate) fn add(&mut self, plan: &AggregationPlan, ts: i64, key: u32, values: &[f64]) {
        if plan.metrics.iter().all(|&m| values[m].is_nan()) {
            return;
        }
        // Latest window start containing ts, then step back while the window still covers ts.
        let mut start = ts.div_euclid(plan.advance_ms) * plan.advance_ms;
        while start > ts - plan.size_ms {
            let groups = self.open.entry(start).or_default();
            let accs = groups.entry(key).or_insert_with(|| vec![Acc::default(); plan.metrics.len()]);
            for (acc, &m) in accs.iter_mut().zip(&plan.metrics) {
                let v = values[m];
                if !v.is_nan() {
                    acc.add(v);
                }
            }
            start -= plan.advance_ms;
        }
    }

    /// Removes and returns every window ending at or before `frontier`, oldest first.
    pub(crate) fn close(&mut self, plan: &AggregationPlan, frontier: i64, out: &mut Vec<Closed>) {
        while let Some(entry) = self.open.first_entry() {
            if entry.key().saturating_add(plan.size_ms) > frontier {
                break;
            }
            let start = *entry.key();
            for (key, accs) in entry.remove() {
                out.push(Closed { start, key, accs });
            }
        }
    }

    /// The start of the oldest open window.
    pub(crate) fn first_start(&self) -> Option<i64> {
        self.open.keys().next().copied()
    }

    /// Every group key of an open window.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.open.values().flat_map(|g| g.keys().copied())
    }

    /// Renumbers the group keys (`map[old]`; NONE, "no group", stays); every key must be mapped.
    pub(crate) fn remap_keys(&mut self, map: &[u32]) {
        let remap = |k: u32| if k == NONE { NONE } else { map[k as usize] };
        for groups in self.open.values_mut() {
            *groups = std::mem::take(groups).into_iter().map(|(k, accs)| (remap(k), accs)).collect();
        }
    }

    pub(crate) fn open_windows(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn open_groups(&self) -> usize {
        self.open.values().map(|g| g.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::GroupBy;
    use crate::model::Function;

    fn plan(size_ms: i64, advance_ms: i64) -> AggregationPlan {
        AggregationPlan {
            name: "a".into(),
            group_by_name: "zone".into(),
            group_by: GroupBy::Slot(0),
            size_ms,
            advance_ms,
            metrics: vec![0],
            functions: vec![Function::Avg],
        }
    }

    fn closed(state: &mut WindowState, plan: &AggregationPlan, frontier: i64) -> Vec<(i64, u32, u64, f64)> {
        let mut out = Vec::new();
        state.close(plan, frontier, &mut out);
        let mut v: Vec<_> = out.into_iter().map(|c| (c.start, c.key, c.accs[0].count, c.accs[0].sum)).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }

    #[test]
    fn tumbling_windows_close_at_their_end() {
        let p = plan(100, 100);
        let mut s = WindowState::default();
        for (ts, v) in [(0, 1.0), (99, 2.0), (100, 4.0), (250, 8.0)] {
            s.add(&p, ts, 7, &[v]);
        }
        assert!(closed(&mut s, &p, 99).is_empty());
        assert_eq!(closed(&mut s, &p, 100), vec![(0, 7, 2, 3.0)]);
        assert_eq!(closed(&mut s, &p, 1000), vec![(100, 7, 1, 4.0), (200, 7, 1, 8.0)]);
        assert_eq!(s.open_windows(), 0);
    }

    #[test]
    fn hopping_windows_count_each_reading_size_over_advance_times() {
        let p = plan(300, 100);
        let mut s = WindowState::default();
        s.add(&p, 250, 1, &[5.0]);
        let starts: Vec<_> = closed(&mut s, &p, i64::MAX).into_iter().map(|c| c.0).collect();
        assert_eq!(starts, vec![0, 100, 200]);
    }

    #[test]
    fn negative_times_align_too() {
        let p = plan(100, 100);
        let mut s = WindowState::default();
        s.add(&p, -1, 1, &[5.0]);
        assert_eq!(closed(&mut s, &p, 0), vec![(-100, 1, 1, 5.0)]);
    }

    #[test]
    fn readings_without_the_metrics_open_no_window() {
        let p = plan(100, 100);
        let mut s = WindowState::default();
        s.add(&p, 5, 1, &[f64::NAN]);
        assert_eq!(s.open_windows(), 0);
    }
}
