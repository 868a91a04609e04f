//! Silent sensors, in event time: each known sensor has a deadline (last reading + timeout) that fires when the
//! partition watermark passes it, so a quiet sensor is noticed through its partition neighbours' readings.
//!
//! A reading only updates `last_seen`; the deadline queue holds one entry per non-silent sensor, possibly older
//! than its real deadline, and a stale entry is pushed again when it surfaces. So a reading costs O(1) and the
//! queue stays as small as the number of sensors.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// Min-queue of (deadline, sensor); a plain list in snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(i64, u32)>", into = "Vec<(i64, u32)>")]
struct DeadlineQueue(BinaryHeap<Reverse<(i64, u32)>>);

impl From<Vec<(i64, u32)>> for DeadlineQueue {
    fn from(v: Vec<(i64, u32)>) -> Self {
        Self(v.into_iter().map(Reverse).collect())
    }
}

impl From<DeadlineQueue> for Vec<(i64, u32)> {
    fn from(q: DeadlineQueue) -> Self {
        q.0.into_iter().map(|Reverse(e)| e).collect()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SilenceTracker {
    /// Per sensor: event time of its newest reading seen by the rules (`i64::MIN` before the first), and whether
    /// it is silent now. One vector, so a reading touches one cache line.
    sensors: Vec<(i64, bool)>,
    /// (deadline, sensor): one entry per known, non-silent sensor, at or before its real deadline.
    queue: DeadlineQueue,
}

impl SilenceTracker {
    fn heap(&mut self) -> &mut BinaryHeap<Reverse<(i64, u32)>> {
        &mut self.queue.0
    }

    /// A reading of `sensor` at `ts` (in event-time order). Returns the previous last-seen time when this reading
    /// ends a silence.
    pub(crate) fn on_reading(&mut self, sensor: u32, ts: i64, timeout_ms: i64) -> Option<i64> {
        let i = sensor as usize;
        if i >= self.sensors.len() {
            self.sensors.resize(i + 1, (i64::MIN, false));
        }
        let (previous, silent) = self.sensors[i];
        let last = previous.max(ts);
        self.sensors[i] = (last, false);
        let returning = silent;
        if previous == i64::MIN || returning {
            let deadline = last.saturating_add(timeout_ms);
            self.heap().push(Reverse((deadline, sensor)));
        }
        returning.then_some(previous)
    }

    /// Pops the earliest deadline that is due: strictly before `before`, or at/before it when `inclusive`.
    /// Returns (deadline, sensor, last seen).
    pub(crate) fn pop_due(&mut self, before: i64, inclusive: bool, timeout_ms: i64) -> Option<(i64, u32, i64)> {
        loop {
            let &Reverse((queued, sensor)) = self.heap().peek()?;
            let due = |d: i64| if inclusive { d <= before } else { d < before };
            if !due(queued) {
                return None;
            }
            self.heap().pop();
            let last_seen = self.sensors[sensor as usize].0;
            let deadline = last_seen.saturating_add(timeout_ms);
            if deadline > queued {
                self.heap().push(Reverse((deadline, sensor)));
                continue;
            }
            self.sensors[sensor as usize].1 = true;
            return Some((deadline, sensor, last_seen));
        }
    }

    pub(crate) fn silent_count(&self) -> usize {
        self.sensors.iter().filter(|(_, silent)| *silent).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_fires_once_and_a_new_reading_resolves_it() {
        let mut t = SilenceTracker::default();
        assert_eq!(t.on_reading(0, 1000, 500), None);
        assert_eq!(t.pop_due(1500, false, 500), None, "a reading exactly at the deadline would still count");
        assert_eq!(t.pop_due(1500, true, 500), Some((1500, 0, 1000)));
        assert_eq!(t.pop_due(10_000, true, 500), None, "fires once");
        assert_eq!(t.silent_count(), 1);
        assert_eq!(t.on_reading(0, 9000, 500), Some(1000));
        assert_eq!(t.silent_count(), 0);
        assert_eq!(t.pop_due(9500, true, 500), Some((9500, 0, 9000)));
    }

    #[test]
    fn readings_push_the_deadline_out() {
        let mut t = SilenceTracker::default();
        t.on_reading(3, 0, 100);
        t.on_reading(3, 90, 100);
        assert_eq!(t.pop_due(150, true, 100), None);
        assert_eq!(t.pop_due(190, true, 100), Some((190, 3, 90)));
    }

    #[test]
    fn survives_a_snapshot_round_trip() {
        let mut t = SilenceTracker::default();
        t.on_reading(0, 0, 100);
        t.on_reading(1, 50, 100);
        let bytes = postcard::to_stdvec(&t).unwrap();
        let mut back: SilenceTracker = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.pop_due(1000, true, 100), Some((100, 0, 0)));
        assert_eq!(back.pop_due(1000, true, 100), Some((150, 1, 50)));
    }
}
