//! Silent sensors, in event time: each known sensor has a deadline (last reading + timeout) that fires when the
//! partition watermark passes it, so a quiet sensor is noticed through its partition neighbours' readings.
//!
//! A reading only updates the sensor's `last_seen`; the deadline queue holds one entry per non-silent sensor,
//! possibly older than its real deadline, and a stale entry is pushed again when it surfaces. So a reading costs
//! O(1) and the queue stays as small as the number of sensors.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use super::sensor::SensorState;

/// Min-queue of (deadline, sensor); a plain list in snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(i64, u32)>", into = "Vec<(i64, u32)>")]
pub(crate) struct SilenceQueue(BinaryHeap<Reverse<(i64, u32)>>);

impl From<Vec<(i64, u32)>> for SilenceQueue {
    fn from(v: Vec<(i64, u32)>) -> Self {
        Self(v.into_iter().map(Reverse).collect())
    }
}

impl From<SilenceQueue> for Vec<(i64, u32)> {
    fn from(q: SilenceQueue) -> Self {
        q.0.into_iter().map(|Reverse(e)| e).collect()
    }
}

impl SilenceQueue {
    /// A reading of `sensor` at `ts` (in event-time order). Returns the previous last-seen time when this reading
    /// ends a silence.
    pub(crate) fn on_reading(&mut self, state: &mut SensorState, sensor: u32, ts: i64, timeout_ms: i64) -> Option<i64> {
        let previous = state.last_seen;
        state.last_seen = previous.max(ts);
        let returning = std::mem::take(&mut state.silent);
        if previous == i64::MIN || returning {
            self.0.push(Reverse((state.last_seen.saturating_add(timeout_ms), sensor)));
        }
        returning.then_some(previous)
    }

    /// Queues a deadline for `sensor` (a restore under a new silence rule).
    pub(crate) fn schedule(&mut self, deadline: i64, sensor: u32) {
        self.0.push(Reverse((deadline, sensor)));
    }

    /// The earliest queued deadline (possibly older than its sensor's real one).
    pub(crate) fn earliest(&self) -> Option<i64> {
        self.0.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// Renumbers the sensors (`map[old]`), dropping the entries of sensors mapped to NONE (forgotten).
    pub(crate) fn remap(&mut self, map: &[u32]) {
        let entries = std::mem::take(&mut self.0).into_vec();
        self.0 = entries
            .into_iter()
            .filter_map(|Reverse((deadline, s))| {
                let new = map.get(s as usize).copied().unwrap_or(super::intern::NONE);
                (new != super::intern::NONE).then_some(Reverse((deadline, new)))
            })
            .collect();
    }

    /// Pops the earliest deadline due strictly before `before` and marks its sensor silent.
    /// Returns (deadline, sensor, last seen).
    pub(crate) fn pop_due(
        &mut self,
        before: i64,
        timeout_ms: i64,
        sensors: &mut [SensorState],
    ) -> Option<(i64, u32, i64)> {
        loop {
            let &Reverse((queued, sensor)) = self.0.peek()?;
            if queued >= before {
                return None;
            }
            self.0.pop();
            let state = &mut sensors[sensor as usize];
            let deadline = state.last_seen.saturating_add(timeout_ms);
            if deadline > queued {
                self.0.push(Reverse((deadline, sensor)));
                continue;
            }
            state.silent = true;
            return Some((deadline, sensor, state.last_seen));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::intern::NONE;

    fn sensors(n: usize) -> Vec<SensorState> {
        (0..n).map(|i| SensorState::new(i as u64, NONE, 0, 0)).collect()
    }

    #[test]
    fn a_deadline_fires_once_and_a_new_reading_resolves_it() {
        let (mut q, mut s) = (SilenceQueue::default(), sensors(1));
        assert_eq!(q.on_reading(&mut s[0], 0, 1000, 500), None);
        assert_eq!(q.pop_due(1500, 500, &mut s), None, "a reading exactly at the deadline would still count");
        assert_eq!(q.pop_due(1501, 500, &mut s), Some((1500, 0, 1000)));
        assert_eq!(q.pop_due(10_000, 500, &mut s), None, "fires once");
        assert!(s[0].silent);
        assert_eq!(q.on_reading(&mut s[0], 0, 9000, 500), Some(1000));
        assert!(!s[0].silent);
        assert_eq!(q.pop_due(9501, 500, &mut s), Some((9500, 0, 9000)));
    }

    #[test]
    fn readings_push_the_deadline_out() {
        let (mut q, mut s) = (SilenceQueue::default(), sensors(4));
        q.on_reading(&mut s[3], 3, 0, 100);
        q.on_reading(&mut s[3], 3, 90, 100);
        assert_eq!(q.pop_due(151, 100, &mut s), None);
        assert_eq!(q.pop_due(191, 100, &mut s), Some((190, 3, 90)));
    }

    #[test]
    fn survives_a_snapshot_round_trip() {
        let (mut q, mut s) = (SilenceQueue::default(), sensors(2));
        q.on_reading(&mut s[0], 0, 0, 100);
        q.on_reading(&mut s[1], 1, 50, 100);
        let mut back: SilenceQueue = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
        assert_eq!(back.pop_due(1000, 100, &mut s), Some((100, 0, 0)));
        assert_eq!(back.pop_due(1000, 100, &mut s), Some((150, 1, 50)));
    }
}
