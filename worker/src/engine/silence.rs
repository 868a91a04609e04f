//! Silent sensors, in event time: each known sensor has a deadline (last reading + timeout) that fires when the
//! partition watermark passes it, so a quiet sensor is noticed through its partition neighbours' readings.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SilenceTracker {
    /// Per sensor: event time of its newest reading seen by the rules, `i64::MIN` before the first.
    last_seen: Vec<i64>,
    silent: Vec<bool>,
    /// (deadline, sensor) of every sensor that is not silent yet.
    deadlines: BTreeSet<(i64, u32)>,
}

impl SilenceTracker {
    /// A reading of `sensor` at `ts` (in event-time order). Returns the previous last-seen time when this reading
    /// ends a silence.
    pub(crate) fn on_reading(&mut self, sensor: u32, ts: i64, timeout_ms: i64) -> Option<i64> {
        let i = sensor as usize;
        if i >= self.last_seen.len() {
            self.last_seen.resize(i + 1, i64::MIN);
            self.silent.resize(i + 1, false);
        }
        let previous = self.last_seen[i];
        if previous != i64::MIN {
            self.deadlines.remove(&(previous.saturating_add(timeout_ms), sensor));
        }
        let last = previous.max(ts);
        self.last_seen[i] = last;
        self.deadlines.insert((last.saturating_add(timeout_ms), sensor));
        std::mem::take(&mut self.silent[i]).then_some(previous)
    }

    /// Pops the earliest deadline that is due: strictly before `before`, or at/before it when `inclusive`.
    /// Returns (deadline, sensor, last seen).
    pub(crate) fn pop_due(&mut self, before: i64, inclusive: bool) -> Option<(i64, u32, i64)> {
        let &(deadline, sensor) = self.deadlines.first()?;
        let due = if inclusive { deadline <= before } else { deadline < before };
        if !due {
            return None;
        }
        self.deadlines.pop_first();
        self.silent[sensor as usize] = true;
        Some((deadline, sensor, self.last_seen[sensor as usize]))
    }

    pub(crate) fn silent_count(&self) -> usize {
        self.silent.iter().filter(|s| **s).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_fires_once_and_a_new_reading_resolves_it() {
        let mut t = SilenceTracker::default();
        assert_eq!(t.on_reading(0, 1000, 500), None);
        assert_eq!(t.pop_due(1500, false), None, "a reading exactly at the deadline would still count");
        assert_eq!(t.pop_due(1500, true), Some((1500, 0, 1000)));
        assert_eq!(t.pop_due(10_000, true), None, "fires once");
        assert_eq!(t.silent_count(), 1);
        assert_eq!(t.on_reading(0, 9000, 500), Some(1000));
        assert_eq!(t.silent_count(), 0);
        assert_eq!(t.pop_due(9500, true), Some((9500, 0, 9000)));
    }

    #[test]
    fn readings_push_the_deadline_out() {
        let mut t = SilenceTracker::default();
        t.on_reading(3, 0, 100);
        t.on_reading(3, 90, 100);
        assert_eq!(t.pop_due(150, true), None);
        assert_eq!(t.pop_due(190, true), Some((190, 3, 90)));
    }
}
