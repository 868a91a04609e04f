//! The engine's internal reading: interned ids and inline values, `Copy`, so buffering and sorting are cheap.

use serde::{Deserialize, Serialize};

use crate::model::{MAX_LABELS, MAX_METRICS};

/// Group slots: 0 is the zone, 1.. are the labels.
pub(crate) const GROUP_SLOTS: usize = 1 + MAX_LABELS;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reading {
    pub(crate) ts: i64,
    pub(crate) sensor: u32,
    /// NaN marks an absent metric: real values are always finite (the parser rejects the rest).
    pub(crate) values: [f64; MAX_METRICS],
    /// Interned zone and label values, [`super::intern::NONE`] when absent.
    pub(crate) groups: [u32; GROUP_SLOTS],
}

impl Reading {
    pub(crate) fn value(&self, metric: usize) -> Option<f64> {
        let v = self.values[metric];
        (!v.is_nan()).then_some(v)
    }
}
