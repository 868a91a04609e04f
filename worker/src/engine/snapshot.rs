//! Snapshot encoding of a partition's state, and what a snapshot carries across an upgrade or a spec edit.
//!
//! Format 3 (this one): a magic (`SPS3` for a partition engine, `SPM3` for the merge stage), then postcard of the
//! state's [`Signature`] followed by the state. The signature says what the state was built with: a *core*
//! fingerprint (the input's field mapping and the event-time bounds, which every part of the state depends on)
//! and one fingerprint per rule and aggregation, by name. A snapshot restores into a definition with the same
//! core; the state of each threshold, spike, silence rule and aggregation is kept when its name and definition
//! are unchanged and starts empty otherwise ([`Migration`] says which). A different core cannot be restored
//! (`DifferentPipeline`): the state starts empty.
//!
//! Compatibility: a release reads the formats of the releases before it. Each format has a golden snapshot in
//! `worker/tests/fixtures/` that the tests restore; a change to a serialized struct needs a new format number
//! and a decoder for the old one. Format 2 (`SPS2`/`SPM1`, one fingerprint of the whole definition, written
//! before per-rule signatures) is read when the definition is unchanged.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::State;
use super::merge::MergeState;

const MAGIC: &[u8; 4] = b"SPS3";
const MERGE_MAGIC: &[u8; 4] = b"SPM3";
const MAGIC_V2: &[u8; 4] = b"SPS2";
const MERGE_MAGIC_V2: &[u8; 4] = b"SPM1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a sensorpipe engine snapshot (bad header)")]
    BadHeader,
    #[error(
        "snapshot was taken with a different input mapping or event-time settings (fingerprint {found:016x}, \
         expected {expected:016x})"
    )]
    DifferentPipeline { found: u64, expected: u64 },
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

/// What a state was built with (see the module header).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Signature {
    /// Input fields and event-time bounds.
    pub(crate) core: u64,
    /// (name, fingerprint of the definition), in plan order.
    pub(crate) thresholds: Vec<(String, u64)>,
    pub(crate) spikes: Vec<(String, u64)>,
    pub(crate) silence: Option<(String, u64)>,
    pub(crate) aggregations: Vec<(String, u64)>,
    /// The whole definition, as format 2 recorded it.
    #[serde(skip)]
    pub(crate) whole: u64,
}

impl Signature {
    /// For each of this signature's rules, the index of the same rule (same name, same definition) in `old`.
    fn carried(old: &[(String, u64)], new: &[(String, u64)]) -> Vec<Option<usize>> {
        new.iter().map(|n| old.iter().position(|o| o == n)).collect()
    }

    pub(crate) fn map_from(&self, old: &Signature) -> RuleMap {
        RuleMap {
            thresholds: Self::carried(&old.thresholds, &self.thresholds),
            spikes: Self::carried(&old.spikes, &self.spikes),
            silence: self.silence.is_some() && self.silence == old.silence,
            aggregations: Self::carried(&old.aggregations, &self.aggregations),
        }
    }
}

/// Where each rule of the current plan finds its state in a snapshot (`None`: it starts empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleMap {
    pub(crate) thresholds: Vec<Option<usize>>,
    pub(crate) spikes: Vec<Option<usize>>,
    /// The silence rule's state (silent flags, deadlines) is kept.
    pub(crate) silence: bool,
    pub(crate) aggregations: Vec<Option<usize>>,
}

impl RuleMap {
    fn identity(sig: &Signature) -> Self {
        Self {
            thresholds: (0..sig.thresholds.len()).map(Some).collect(),
            spikes: (0..sig.spikes.len()).map(Some).collect(),
            silence: true,
            aggregations: (0..sig.aggregations.len()).map(Some).collect(),
        }
    }

    /// Whether every rule keeps its state: the state can be used as it is.
    pub(crate) fn keeps_all(&self) -> bool {
        self.thresholds.iter().chain(&self.spikes).chain(&self.aggregations).all(Option::is_some) && self.silence
    }
}

/// What a restore kept and reset, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// Rules and aggregations (by name) whose state started empty: new, or changed since the snapshot.
    pub reset: Vec<String>,
    /// Rules and aggregations of the snapshot that the definition no longer has.
    pub dropped: Vec<String>,
}

impl Migration {
    fn between(old: &Signature, new: &Signature, map: &RuleMap) -> Self {
        let names = |rules: &[(String, u64)], kept: &[Option<usize>]| -> Vec<String> {
            rules.iter().zip(kept).filter(|(_, k)| k.is_none()).map(|((n, _), _)| n.clone()).collect()
        };
        let mut reset = names(&new.thresholds, &map.thresholds);
        reset.extend(names(&new.spikes, &map.spikes));
        reset.extend(new.silence.iter().filter(|_| !map.silence).map(|(n, _)| n.clone()));
        reset.extend(names(&new.aggregations, &map.aggregations));
        let gone = |old_rules: &[(String, u64)], kept: &[Option<usize>]| -> Vec<String> {
            (0..old_rules.len()).filter(|i| !kept.contains(&Some(*i))).map(|i| old_rules[i].0.clone()).collect()
        };
        let mut dropped = gone(&old.thresholds, &map.thresholds);
        dropped.extend(gone(&old.spikes, &map.spikes));
        dropped.extend(old.silence.iter().filter(|_| !map.silence).map(|(n, _)| n.clone()));
        dropped.extend(gone(&old.aggregations, &map.aggregations));
        Self { reset, dropped }
    }

    /// Nothing was reset or dropped.
    pub fn is_empty(&self) -> bool {
        self.reset.is_empty() && self.dropped.is_empty()
    }
}

/// A decoded snapshot: the state and how its rules map onto the current plan.
pub(crate) struct Decoded<T> {
    pub(crate) state: T,
    pub(crate) map: RuleMap,
    pub(crate) migration: Migration,
}

pub(super) fn encode(state: &State, sig: &Signature) -> Vec<u8> {
    encode_with(MAGIC, sig, state)
}

pub(super) fn decode(bytes: &[u8], sig: &Signature) -> Result<Decoded<State>, SnapshotError> {
    decode_with(MAGIC, MAGIC_V2, bytes, sig)
}

pub(super) fn encode_merge(state: &MergeState, sig: &Signature) -> Vec<u8> {
    encode_with(MERGE_MAGIC, sig, state)
}

pub(super) fn decode_merge(bytes: &[u8], sig: &Signature) -> Result<Decoded<MergeState>, SnapshotError> {
    decode_with(MERGE_MAGIC, MERGE_MAGIC_V2, bytes, sig)
}

fn encode_with<T: Serialize + ?Sized>(magic: &[u8; 4], sig: &Signature, state: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(magic);
    // Serializing plain owned data into a Vec cannot fail; an empty body would be caught as corrupt on restore.
    out.extend(postcard::to_stdvec(&(sig, state)).unwrap_or_default());
    out
}

fn decode_with<T: DeserializeOwned>(
    magic: &[u8; 4],
    magic_v2: &[u8; 4],
    bytes: &[u8],
    sig: &Signature,
) -> Result<Decoded<T>, SnapshotError> {
    if let Some(body) = bytes.strip_prefix(magic.as_slice()) {
        let (old, state): (Signature, T) =
            postcard::from_bytes(body).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if old.core != sig.core {
            return Err(SnapshotError::DifferentPipeline { found: old.core, expected: sig.core });
        }
        let map = sig.map_from(&old);
        let migration = Migration::between(&old, sig, &map);
        return Ok(Decoded { state, map, migration });
    }
    let rest = bytes.strip_prefix(magic_v2.as_slice()).ok_or(SnapshotError::BadHeader)?;
    let (fp, body) = rest.split_at_checked(8).ok_or(SnapshotError::BadHeader)?;
    let found = u64::from_le_bytes(fp.try_into().map_err(|_| SnapshotError::BadHeader)?);
    if found != sig.whole {
        return Err(SnapshotError::DifferentPipeline { found, expected: sig.whole });
    }
    let state = postcard::from_bytes(body).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    Ok(Decoded { state, map: RuleMap::identity(sig), migration: Migration::default() })
}
