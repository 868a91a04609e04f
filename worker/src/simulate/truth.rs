//! The simulator's ground truth: what it injected, so a test can check the engine found exactly that.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::records::{AnomalyKind, rfc3339_ms};

/// What an episode does to a sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    /// Temperature ramps up to 32–36 °C over 10 minutes, holds, ramps back down: a threshold episode, no spike.
    Overheat,
    /// Temperature jumps up by 12–14 °C between two readings (above 30 °C too), holds 10 minutes, eases back.
    SpikeRise,
    /// Temperature drops by 12–15 °C between two readings, holds 10 minutes, eases back.
    SpikeFall,
    /// Temperature sinks by 11–13 °C over 70 minutes and comes back: a large change, but never within 5 minutes.
    Drift,
    /// The sensor repeats the same value for an hour: nothing to report for these rules.
    Stuck,
    /// The sensor sends nothing for 10–20 minutes.
    Silence,
}

impl EpisodeKind {
    /// Anomaly kinds the reference pipeline must report for this episode (and no others).
    pub fn expected(self) -> &'static [AnomalyKind] {
        match self {
            Self::Overheat => &[AnomalyKind::Threshold],
            Self::SpikeRise => &[AnomalyKind::Spike, AnomalyKind::Threshold],
            Self::SpikeFall => &[AnomalyKind::Spike],
            Self::Drift | Self::Stuck => &[],
            Self::Silence => &[AnomalyKind::Silence],
        }
    }
}

/// One injected episode; every anomaly it causes has its firing and resolved event times in `[start, end]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub kind: EpisodeKind,
    pub sensor: String,
    pub zone: String,
    #[serde(with = "rfc3339_ms")]
    pub start: i64,
    #[serde(with = "rfc3339_ms")]
    pub end: i64,
    /// Anomaly kinds the reference pipeline must report within `[start, end]`.
    pub expect: Vec<AnomalyKind>,
}

/// Everything the simulator injected into one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Records written, malformed and late ones included.
    pub records: u64,
    pub episodes: Vec<Episode>,
    /// Records that the reference pipeline must dead-letter, per reason code.
    pub dead_letters: BTreeMap<String, u64>,
    /// Records delivered out of order but within the out-of-orderness bound.
    pub out_of_order: u64,
}
