//! The reorder buffer: readings wait here until the watermark passes them, then leave in canonical event-time
//! order. Canonical means independent of arrival order — (time, sensor-name hash, sensor name, values, groups) —
//! which is what makes every permutation of the input within the out-of-orderness bound give identical outputs.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use super::reading::Reading;

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Pending {
    ts: i64,
    /// xxh3 of the sensor name: a fixed, arrival-independent tie-break that compares as an integer.
    hash: u64,
    reading: Reading,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ts, self.hash).cmp(&(other.ts, other.hash))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(i64, u64, Reading)>", into = "Vec<(i64, u64, Reading)>")]
pub(crate) struct ReorderBuffer {
    heap: BinaryHeap<Reverse<Pending>>,
}

impl ReorderBuffer {
    pub(crate) fn push(&mut self, hash: u64, reading: Reading) {
        self.heap.push(Reverse(Pending { ts: reading.ts, hash, reading }));
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
            if let Some(Reverse(p)) = self.heap.pop() {
                out.push((p.hash, p.reading));
            }
        }
        // Already ordered by (ts, hash); this only reorders equal keys, and is linear on sorted input.
        out[start..].sort_by(full_cmp);
    }
}

impl From<Vec<(i64, u64, Reading)>> for ReorderBuffer {
    fn from(items: Vec<(i64, u64, Reading)>) -> Self {
        Self { heap: items.into_iter().map(|(ts, hash, reading)| Reverse(Pending { ts, hash, reading })).collect() }
    }
}

impl From<ReorderBuffer> for Vec<(i64, u64, Reading)> {
    fn from(b: ReorderBuffer) -> Self {
        b.heap.into_iter().map(|Reverse(p)| (p.ts, p.hash, p.reading)).collect()
    }
}
