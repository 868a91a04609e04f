//! The reorder buffer: readings wait here until the watermark passes them, then leave in canonical event-time
//! order. Canonical means independent of arrival order — (time, sensor-name hash, sensor name, values, groups) —
//! which is what makes every permutation of the input within the out-of-orderness bound give identical outputs.
//!
//! Most readings arrive in event-time order, so they are appended to an in-order run (a queue: O(1) in and out,
//! sequential memory). Only a reading older than the run's newest goes to a heap, whose small keys point into a
//! slab of readings. Release merges both and sorts the batch canonically.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use serde::{Deserialize, Serialize};

use super::reading::Reading;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    ts: i64,
    /// xxh3 of the sensor name: a fixed, arrival-independent tie-break that compares as an integer.
    hash: u64,
    slot: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(u64, Reading)>", into = "Vec<(u64, Reading)>")]
pub(crate) struct ReorderBuffer {
    /// Readings in non-decreasing event time, with their sensor hash.
    run: VecDeque<(u64, Reading)>,
    heap: BinaryHeap<Reverse<Key>>,
    slab: Vec<Reading>,
    free: Vec<u32>,
}

impl ReorderBuffer {
    pub(crate) fn push(&mut self, hash: u64, reading: Reading) {
        if self.run.back().is_none_or(|(_, last)| reading.ts >= last.ts) {
            self.run.push_back((hash, reading));
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = reading;
                slot
            }
            None => {
                self.slab.push(reading);
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse(Key { ts: reading.ts, hash, slot }));
    }

    /// The earliest buffered event time.
    pub(crate) fn min_ts(&self) -> Option<i64> {
        let heap = self.heap.peek().map(|k| k.0.ts);
        self.run.front().map(|(_, r)| r.ts).into_iter().chain(heap).min()
    }

    pub(crate) fn len(&self) -> usize {
        self.run.len() + self.heap.len()
    }

    /// Moves every reading with `ts < watermark` into `out`, in canonical order. `full_cmp` breaks the rare ties
    /// the (time, hash) key leaves, using names and values the buffer does not know.
    pub(crate) fn release(
        &mut self,
        watermark: i64,
        out: &mut Vec<(u64, Reading)>,
        full_cmp: impl Fn(&(u64, Reading), &(u64, Reading)) -> Ordering,
    ) {
        let start = out.len();
        while self.run.front().is_some_and(|(_, r)| r.ts < watermark) {
            out.extend(self.run.pop_front());
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.ts >= watermark {
                break;
            }
            if let Some(Reverse(k)) = self.heap.pop() {
                out.push((k.hash, self.slab[k.slot as usize]));
                self.free.push(k.slot);
            }
        }
        // Two sorted-by-time runs: the sort merges them and orders equal times canonically.
        out[start..].sort_by(full_cmp);
        if self.heap.is_empty() {
            self.slab.clear();
            self.free.clear();
        }
    }
}

impl From<Vec<(u64, Reading)>> for ReorderBuffer {
    fn from(items: Vec<(u64, Reading)>) -> Self {
        let mut b = Self::default();
        for (hash, reading) in items {
            b.push(hash, reading);
        }
        b
    }
}

impl From<ReorderBuffer> for Vec<(u64, Reading)> {
    fn from(b: ReorderBuffer) -> Self {
        let heap = b.heap.into_iter().map(|Reverse(k)| (k.hash, b.slab[k.slot as usize]));
        b.run.into_iter().chain(heap).collect()
    }
}
