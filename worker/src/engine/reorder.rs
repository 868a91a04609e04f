//! The reorder buffer: readings wait here until the watermark passes them, then leave in canonical event-time
//! order. Canonical means independent of arrival order — (time, sensor-name hash, sensor name, values, groups) —
//! which is what makes every permutation of the input within the out-of-orderness bound give identical outputs.
//!
//! The heap holds small keys; the readings themselves sit in a slab, so heap operations move 24 bytes, not 100.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

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
    heap: BinaryHeap<Reverse<Key>>,
    slab: Vec<Reading>,
    free: Vec<u32>,
}

impl ReorderBuffer {
    pub(crate) fn push(&mut self, hash: u64, reading: Reading) {
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

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
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
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.ts >= watermark {
                break;
            }
            if let Some(Reverse(k)) = self.heap.pop() {
                out.push((k.hash, self.slab[k.slot as usize]));
                self.free.push(k.slot);
            }
        }
        // Popped in (ts, hash) order already: this only orders equal keys, and is linear on sorted input.
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
        b.heap.into_iter().map(|Reverse(k)| (k.hash, b.slab[k.slot as usize])).collect()
    }
}
