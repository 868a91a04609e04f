//! Rate-of-change rules. For each sensor, monotonic deques hold the running minimum and maximum of the last
//! `within` of readings, so a reading is compared against every earlier reading in the span in O(1) amortised.
//! The episode fires when a reading is more than `delta` away from one of them and resolves at the first reading
//! that no longer is.
//!
//! The deques are usually a few entries long (noise keeps them short), so they live inline in the sensor's
//! state and spill to the heap only for long monotonic runs: no pointer chase per reading.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::plan::SpikePlan;
use crate::model::Direction;
use crate::records::AnomalyState;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SpikeState {
    /// Increasing values: front is the minimum of the span (for rises).
    lows: Deque,
    /// Decreasing values: front is the maximum of the span (for falls).
    highs: Deque,
    active: bool,
}

type Deque = SmallVec<[(i64, f64); 3]>;

fn pop_front_older_than(d: &mut Deque, oldest: i64) {
    let stale = d.iter().take_while(|&&(t, _)| t < oldest).count();
    if stale > 0 {
        let len = d.len();
        d.copy_within(stale.., 0);
        d.truncate(len - stale);
    }
}

/// A transition and, when firing, the earlier reading (time, value) the change is measured from.
pub(crate) type SpikeTransition = (AnomalyState, Option<(i64, f64)>);

impl SpikeState {
    /// An episode is open (fired and not resolved yet).
    pub(crate) fn is_firing(&self) -> bool {
        self.active
    }

    /// Reads the oldest entry of each deque: brings the state, and a spilled deque's heap buffer, into cache
    /// ahead of [`Self::observe`] (see `touch_sensor_states`).
    pub(crate) fn touch(&self) -> i64 {
        self.lows.first().map_or(0, |e| e.0) ^ self.highs.first().map_or(0, |e| e.0)
    }

    pub(crate) fn observe(&mut self, plan: &SpikePlan, ts: i64, value: f64) -> Option<SpikeTransition> {
        let oldest = ts.saturating_sub(plan.within_ms);
        pop_front_older_than(&mut self.lows, oldest);
        pop_front_older_than(&mut self.highs, oldest);
        let rise = matches!(plan.direction, Direction::Rise | Direction::Any);
        let fall = matches!(plan.direction, Direction::Fall | Direction::Any);
        let rise_from = self.lows.first().copied().filter(|&(_, low)| rise && value - low > plan.delta);
        let fall_from = self.highs.first().copied().filter(|&(_, high)| fall && high - value > plan.delta);
        let baseline = match (rise_from, fall_from) {
            (Some(r), Some(f)) => Some(if value - r.1 >= f.1 - value { r } else { f }),
            (r, f) => r.or(f),
        };

        if rise {
            while self.lows.last().is_some_and(|&(_, v)| v >= value) {
                self.lows.pop();
            }
            self.lows.push((ts, value));
        }
        if fall {
            while self.highs.last().is_some_and(|&(_, v)| v <= value) {
                self.highs.pop();
            }
            self.highs.push((ts, value));
        }

        match (self.active, baseline) {
            (false, Some(b)) => {
                self.active = true;
                Some((AnomalyState::Firing, Some(b)))
            }
            (true, None) => {
                self.active = false;
                Some((AnomalyState::Resolved, None))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    const MIN: i64 = 60_000;

    fn plan(direction: Direction) -> SpikePlan {
        SpikePlan {
            name: "s".into(),
            metric: 0,
            delta: 10.0,
            within_ms: 5 * MIN,
            direction,
            severity: Severity::Warning,
        }
    }

    /// (reading time, transition, baseline) per transition.
    type Transitions = Vec<(i64, AnomalyState, Option<(i64, f64)>)>;

    fn run(plan: &SpikePlan, series: &[(i64, f64)]) -> Transitions {
        let mut s = SpikeState::default();
        series.iter().filter_map(|&(ts, v)| s.observe(plan, ts, v).map(|(st, b)| (ts, st, b))).collect()
    }

    #[test]
    fn a_jump_within_the_span_fires_and_resolves_when_it_leaves_the_span() {
        let series: Vec<_> = (0..20).map(|m| (m * MIN, if m < 3 { 20.0 } else { 31.0 })).collect();
        let out = run(&plan(Direction::Any), &series);
        assert_eq!(
            out,
            vec![(3 * MIN, AnomalyState::Firing, Some((2 * MIN, 20.0))), (8 * MIN, AnomalyState::Resolved, None)]
        );
    }

    #[test]
    fn the_span_is_inclusive_and_the_delta_strict() {
        let p = plan(Direction::Rise);
        assert_eq!(run(&p, &[(0, 20.0), (5 * MIN, 30.5)]).len(), 1);
        assert!(run(&p, &[(0, 20.0), (5 * MIN + 1, 30.5)]).is_empty());
        assert!(run(&p, &[(0, 20.0), (MIN, 30.0)]).is_empty(), "exactly delta is not a spike");
    }

    #[test]
    fn a_slow_drift_never_fires() {
        // +15 °C over an hour: at most 1.25 °C in any 5 minutes.
        let series: Vec<_> = (0..=60).map(|m| (m * MIN, 20.0 + m as f64 * 0.25)).collect();
        assert!(run(&plan(Direction::Any), &series).is_empty());
    }

    #[test]
    fn direction_filters() {
        let drop = [(0, 25.0), (MIN, 12.0)];
        assert!(run(&plan(Direction::Rise), &drop).is_empty());
        assert_eq!(run(&plan(Direction::Fall), &drop)[0].2, Some((0, 25.0)));
        assert_eq!(run(&plan(Direction::Any), &drop).len(), 1);
    }

    #[test]
    fn compares_against_the_extreme_of_the_span_not_just_the_previous_reading() {
        // Steps of 4 °C a minute: no two neighbours differ by 10, but 0 → 3 min does (12).
        let series = [(0, 20.0), (MIN, 24.0), (2 * MIN, 28.0), (3 * MIN, 32.0)];
        assert_eq!(run(&plan(Direction::Rise), &series), vec![(3 * MIN, AnomalyState::Firing, Some((0, 20.0)))]);
    }
}
