//! Snapshot encoding of a partition's state: a magic, a format version and the pipeline fingerprint, then the
//! state in postcard. A snapshot only restores into the pipeline definition it was taken with. The merge stage's
//! state has a magic of its own, so neither kind is ever restored as the other.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::State;
use super::merge::MergeState;

// Version 2: retention sweep schedule in the state.
const MAGIC: &[u8; 4] = b"SPS2";
const MERGE_MAGIC: &[u8; 4] = b"SPM1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a sensorpipe engine snapshot (bad header)")]
    BadHeader,
    #[error(
        "snapshot was taken with a different pipeline definition (fingerprint {found:016x}, expected {expected:016x})"
    )]
    DifferentPipeline { found: u64, expected: u64 },
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

pub(super) fn encode(state: &State, fingerprint: u64) -> Vec<u8> {
    encode_with(MAGIC, state, fingerprint)
}

pub(super) fn decode(bytes: &[u8], expected: u64) -> Result<State, SnapshotError> {
    decode_with(MAGIC, bytes, expected)
}

pub(super) fn encode_merge(state: &MergeState, fingerprint: u64) -> Vec<u8> {
    encode_with(MERGE_MAGIC, state, fingerprint)
}

pub(super) fn decode_merge(bytes: &[u8], expected: u64) -> Result<MergeState, SnapshotError> {
    decode_with(MERGE_MAGIC, bytes, expected)
}

fn encode_with<T: Serialize + ?Sized>(magic: &[u8; 4], state: &T, fingerprint: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(magic);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    // Serializing plain owned data into a Vec cannot fail; an empty body would be caught as corrupt on restore.
    out.extend(postcard::to_stdvec(state).unwrap_or_default());
    out
}

fn decode_with<T: DeserializeOwned>(magic: &[u8; 4], bytes: &[u8], expected: u64) -> Result<T, SnapshotError> {
    let rest = bytes.strip_prefix(magic.as_slice()).ok_or(SnapshotError::BadHeader)?;
    let (fp, body) = rest.split_at_checked(8).ok_or(SnapshotError::BadHeader)?;
    let mut fp_bytes = [0u8; 8];
    fp_bytes.copy_from_slice(fp);
    let found = u64::from_le_bytes(fp_bytes);
    if found != expected {
        return Err(SnapshotError::DifferentPipeline { found, expected });
    }
    postcard::from_bytes(body).map_err(|e| SnapshotError::Corrupt(e.to_string()))
}
