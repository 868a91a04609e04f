//! Everything the engine keeps per sensor, in one record: a reading touches one sensor's state in several
//! places (tie-break hash, zone, rule states, silence), and keeping them adjacent turns several cache misses
//! into one or two when a partition has more sensors than the cache holds.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::intern::NONE;
use super::spike::SpikeState;
use super::threshold::ThresholdState;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SensorState {
    /// xxh3 of the sensor name: the canonical tie-break of the reorder buffer.
    pub(crate) hash: u64,
    /// The latest zone seen (for silence anomalies), or NONE.
    pub(crate) zone: u32,
    /// The zone `input.fields.sensorZones` gives this sensor, or NONE; looked up once, when the sensor is first seen.
    pub(crate) mapped_zone: u32,
    /// Silent right now (a silence episode is open).
    pub(crate) silent: bool,
    /// Event time of the newest reading the rules saw, `i64::MIN` before the first.
    pub(crate) last_seen: i64,
    /// One per threshold rule, in plan order.
    pub(crate) thresholds: SmallVec<[ThresholdState; 2]>,
    /// One per spike rule, in plan order.
    pub(crate) spikes: SmallVec<[SpikeState; 1]>,
}

impl SensorState {
    pub(crate) fn new(hash: u64, mapped_zone: u32, thresholds: usize, spikes: usize) -> Self {
        Self {
            hash,
            zone: NONE,
            mapped_zone,
            silent: false,
            last_seen: i64::MIN,
            thresholds: SmallVec::from_elem(ThresholdState::default(), thresholds),
            spikes: (0..spikes).map(|_| SpikeState::default()).collect(),
        }
    }
}
