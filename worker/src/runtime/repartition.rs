//! The repartition topic between the two stages of zone and label windows (docs/engine.md, "Merge stage").
//!
//! Stage 1 (an input partition's task) produces each partial window to the repartition partition its
//! (aggregation, group) hashes to, and its frontier to *every* repartition partition whenever the frontier passes
//! a zone or label window end — in the same transaction as its input offset, after the partials it covers. Stage 2
//! (a repartition partition's task) merges them ([`MergeEngine`]) and emits each window once, final, when the
//! minimum frontier over all input partitions has passed it: Flink's per-channel watermarks, carried in the topic.
//!
//! Records are JSON (`{"partial": …}` / `{"progress": …}`), readable with any Kafka tool.

use serde::{Deserialize, Serialize};

use crate::engine::{MergeEngine, Merged, PartialWindow, SourceProgress};
use crate::records::Aggregate;

/// One record of the repartition topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RepartitionRecord {
    Partial(PartialWindow),
    Progress(SourceProgress),
}

/// A record to produce, by reference (same JSON as [`RepartitionRecord`]).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outgoing<'a> {
    Partial(&'a PartialWindow),
    Progress(&'a SourceProgress),
}

/// The repartition partition of a group: every partial of one (aggregation, group) meets in one place. xxh3 of
/// the names, so every worker, version and restart agrees.
pub(crate) fn partition_of(aggregation: &str, key: Option<&str>, partitions: i32) -> i32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(aggregation.as_bytes());
    h.update(&[0]);
    if let Some(k) = key {
        h.update(&[1]);
        h.update(k.as_bytes());
    }
    (h.digest() % u64::from(partitions.max(1).unsigned_abs())) as i32
}

/// The record key of a partial: aggregation and group (compaction is off; the key is for people reading the topic).
pub(crate) fn partial_key(p: &PartialWindow) -> String {
    format!("{}/{}", p.aggregation, p.key.as_deref().unwrap_or(""))
}

/// What applying a repartition record to a merge stage did.
#[derive(Debug, PartialEq)]
pub(crate) enum Applied {
    Partial(Merged),
    Progress,
    /// Not a repartition record (written by something else); the reason for the dead letter.
    Invalid(String),
}

/// Applies one repartition record; final windows go to `out`.
pub(crate) fn apply(merge: &mut MergeEngine, payload: &[u8], out: &mut Vec<Aggregate>) -> Applied {
    match serde_json::from_slice::<RepartitionRecord>(payload) {
        Ok(RepartitionRecord::Partial(p)) => Applied::Partial(merge.add(p)),
        Ok(RepartitionRecord::Progress(p)) => {
            merge.progress(p, out);
            Applied::Progress
        }
        Err(e) => Applied::Invalid(format!("not a sensorpipe repartition record: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_tagged_json() {
        let r = RepartitionRecord::Progress(SourceProgress { source: 3, sources: 8, frontier: 42 });
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(text, r#"{"progress":{"source":3,"sources":8,"frontier":42}}"#);
        assert_eq!(serde_json::from_str::<RepartitionRecord>(&text).ok(), Some(r));
    }

    #[test]
    fn partial_sums_survive_json_bit_exactly() {
        use crate::engine::MetricAcc;
        // Sums whose nearest double a fast float parser can miss.
        for sum in [21.356481481481485, 0.1 + 0.2, 1e16 + 2.0, 3459.7300000000005, f64::MIN_POSITIVE] {
            let acc = MetricAcc { count: 3, sum, min: sum / 3.0, max: sum * 7.0 };
            let p = PartialWindow {
                aggregation: "a".into(),
                key: Some("z".into()),
                window_start: 0,
                source: 1,
                metrics: vec![Some(acc), None],
            };
            let text = serde_json::to_vec(&Outgoing::Partial(&p)).unwrap_or_default();
            match serde_json::from_slice::<RepartitionRecord>(&text) {
                Ok(RepartitionRecord::Partial(back)) => assert_eq!(back, p),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn groups_spread_over_the_partitions_and_stay_put() {
        let mut seen = std::collections::BTreeSet::new();
        for z in 0..100 {
            let p = partition_of("zone_avg", Some(&format!("floor-{z}")), 8);
            assert!((0..8).contains(&p));
            assert_eq!(p, partition_of("zone_avg", Some(&format!("floor-{z}")), 8));
            seen.insert(p);
        }
        assert_eq!(seen.len(), 8);
        assert_ne!(partition_of("a", None, 1000), partition_of("a", Some(""), 1000));
    }
}
