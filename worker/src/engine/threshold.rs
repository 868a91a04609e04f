//! Level rules with hysteresis: Normal → Pending (breaching, not yet long enough) → Firing → Normal once the value
//! is back past the clear level. One `firing` and one `resolved` per episode; oscillation between the limit and
//! the clear level changes nothing.

use serde::{Deserialize, Serialize};

use super::plan::ThresholdPlan;
use crate::records::AnomalyState;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    #[default]
    Normal,
    Pending,
    Firing,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ThresholdState {
    phase: Phase,
    /// Consecutive breaching readings of the pending episode.
    count: u32,
    /// Event time of the first breaching reading of the pending episode.
    since: i64,
}

impl ThresholdState {
    /// An episode is open (fired and not resolved yet).
    pub(crate) fn is_firing(&self) -> bool {
        self.phase == Phase::Firing
    }

    /// Feeds one reading (in event-time order) and returns the transition it causes, if any.
    pub(crate) fn observe(&mut self, plan: &ThresholdPlan, ts: i64, value: f64) -> Option<AnomalyState> {
        let breaching = if plan.above { value > plan.limit } else { value < plan.limit };
        let cleared = if plan.above { value <= plan.clear } else { value >= plan.clear };
        match self.phase {
            Phase::Firing => {
                if cleared {
                    self.phase = Phase::Normal;
                    return Some(AnomalyState::Resolved);
                }
                None
            }
            Phase::Normal | Phase::Pending if !breaching => {
                self.phase = Phase::Normal;
                None
            }
            Phase::Normal | Phase::Pending => {
                if self.phase == Phase::Normal {
                    self.phase = Phase::Pending;
                    self.count = 0;
                    self.since = ts;
                }
                self.count = self.count.saturating_add(1);
                if self.count >= plan.min_count && ts.saturating_sub(self.since) >= plan.for_ms {
                    self.phase = Phase::Firing;
                    return Some(AnomalyState::Firing);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn plan(above: bool, limit: f64, clear: f64, for_ms: i64, min_count: u32) -> ThresholdPlan {
        ThresholdPlan {
            name: "t".into(),
            metric: 0,
            above,
            limit,
            clear,
            for_ms,
            min_count,
            severity: Severity::Warning,
        }
    }

    fn run(plan: &ThresholdPlan, series: &[(i64, f64)]) -> Vec<(i64, AnomalyState)> {
        let mut s = ThresholdState::default();
        series.iter().filter_map(|&(ts, v)| s.observe(plan, ts, v).map(|t| (ts, t))).collect()
    }

    #[test]
    fn fires_once_and_resolves_once() {
        let p = plan(true, 30.0, 30.0, 0, 1);
        let out = run(&p, &[(0, 25.0), (10, 31.0), (20, 32.0), (30, 33.0), (40, 29.0), (50, 28.0)]);
        assert_eq!(out, vec![(10, AnomalyState::Firing), (40, AnomalyState::Resolved)]);
    }

    #[test]
    fn hysteresis_stops_flapping() {
        let p = plan(true, 30.0, 28.0, 0, 1);
        let series: Vec<_> = (0..100).map(|i| (i, if i % 2 == 0 { 30.5 } else { 29.5 })).collect();
        assert_eq!(run(&p, &series), vec![(0, AnomalyState::Firing)]);
        let mut with_end = series.clone();
        with_end.push((100, 27.9));
        assert_eq!(run(&p, &with_end), vec![(0, AnomalyState::Firing), (100, AnomalyState::Resolved)]);
    }

    #[test]
    fn the_limit_itself_is_not_a_breach() {
        let p = plan(true, 30.0, 30.0, 0, 1);
        assert!(run(&p, &[(0, 30.0)]).is_empty());
        let below = plan(false, 5.0, 5.0, 0, 1);
        assert_eq!(
            run(&below, &[(0, 5.0), (1, 4.9), (2, 5.0)]),
            vec![(1, AnomalyState::Firing), (2, AnomalyState::Resolved)]
        );
    }

    #[test]
    fn minimum_duration_and_count_must_both_hold() {
        let p = plan(true, 30.0, 30.0, 30, 2);
        // Breach at 0 and 10, dips at 20: the pending episode restarts at 30 and fires at 60 (30 ms later).
        let out = run(&p, &[(0, 31.0), (10, 31.0), (20, 29.0), (30, 31.0), (40, 31.0), (50, 31.0), (60, 31.0)]);
        assert_eq!(out, vec![(60, AnomalyState::Firing)]);
        let count_only = plan(true, 30.0, 30.0, 0, 3);
        assert_eq!(run(&count_only, &[(0, 31.0), (1, 31.0), (2, 31.0)]), vec![(2, AnomalyState::Firing)]);
    }
}
