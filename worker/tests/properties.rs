//! Property tests of the engine's guarantees:
//! - any delivery order within the out-of-orderness bound gives identical outputs;
//! - every emitted window equals a batch recomputation over the same readings;
//! - snapshot + restore at any point gives the same outputs as never stopping;
//! - threshold and spike episodes alternate firing/resolved per sensor and rule (no flapping duplicates);
//! - arbitrary bytes never panic and always leave a trace (a reading or a dead letter).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use sensorpipe_worker::engine::{Outputs, Pipeline};
use sensorpipe_worker::records::AnomalyState;

const T0: i64 = 1_673_049_600_000;
const OOO_MS: i64 = 10_000;

fn pipeline() -> Pipeline {
    common::pipeline(
        r#"
input:
  fields: {metrics: [temperature, humidity], zone: zone, timestampUnit: epochMillis}
processing:
  eventTime: {maxOutOfOrderness: 10s, allowedLateness: 5s}
  thresholds:
    - {name: hot, metric: temperature, above: 30, clear: 28, minCount: 2}
    - {name: dry, metric: humidity, below: 20, for: 3s}
  spikes:
    - {name: jump, metric: temperature, delta: 8, within: 20s}
  silence: {timeout: 15s}
  aggregations:
    - {name: zone, window: {size: 30s}, groupBy: zone}
    - {name: hop, window: {type: hopping, size: 20s, advance: 5s}, groupBy: sensor, functions: [avg, min, max, count, sum]}
"#,
    )
}

#[derive(Clone, Debug)]
struct R {
    sensor: u8,
    ts: i64,
    temperature: f64,
    humidity: Option<f64>,
    zone: u8,
}

impl R {
    fn json(&self) -> Vec<u8> {
        let humidity = self.humidity.map(|h| format!(r#","humidity":{h}"#)).unwrap_or_default();
        format!(
            r#"{{"sensor_id":"s{}","timestamp":{},"temperature":{}{humidity},"zone":"z{}"}}"#,
            self.sensor, self.ts, self.temperature, self.zone
        )
        .into_bytes()
    }
}

/// Readings of a few sensors over a few minutes with values around the rule limits, in event-time order.
fn readings() -> impl Strategy<Value = Vec<R>> {
    prop::collection::vec((0u8..4, 0i64..4000, 15.0f64..40.0, prop::option::of(5.0f64..40.0), 0u8..2), 1..120).prop_map(
        |raw| {
            let mut ts = T0;
            raw.into_iter()
                .map(|(sensor, step, t, h, zone)| {
                    ts += step;
                    R { sensor, ts, temperature: (t * 10.0).round() / 10.0, humidity: h, zone }
                })
                .collect()
        },
    )
}

/// A delivery order: each reading delayed by less than the out-of-orderness bound.
fn delivery(rs: &[R], delays: &[i64]) -> Vec<Vec<u8>> {
    let mut order: Vec<(i64, usize)> =
        rs.iter().enumerate().map(|(i, r)| (r.ts + delays[i % delays.len()], i)).collect();
    order.sort();
    order.into_iter().map(|(_, i)| rs[i].json()).collect()
}

/// Outputs as the guarantee states them: anomalies in emission order (event-time order), aggregates in emission
/// order per aggregation. Different aggregations close their windows independently, so how their records
/// interleave depends on when the watermark moved.
fn normalized(mut out: Outputs) -> Outputs {
    out.aggregates.sort_by(|a, b| a.aggregation.cmp(&b.aggregation));
    out
}

fn dbg(v: &[impl std::fmt::Debug]) -> Vec<String> {
    v.iter().map(|x| format!("{x:?}")).collect()
}

/// Compares without printing pages of records on failure.
fn same(a: &Outputs, b: &Outputs) -> Result<(), TestCaseError> {
    let first_diff =
        |x: Vec<String>, y: Vec<String>| {
            x.iter().zip(&y).position(|(p, q)| p != q).map(|i| (x[i].clone(), y[i].clone())).or_else(|| {
                (x.len() != y.len()).then(|| (format!("{} records", x.len()), format!("{} records", y.len())))
            })
        };
    for (what, diff) in [
        ("anomalies", first_diff(dbg(&a.anomalies), dbg(&b.anomalies))),
        ("aggregates", first_diff(dbg(&a.aggregates), dbg(&b.aggregates))),
        ("dead letters", first_diff(dbg(&a.dead_letters), dbg(&b.dead_letters))),
    ] {
        if let Some((x, y)) = diff {
            return Err(TestCaseError::fail(format!("{what} differ:\n  {x}\n  {y}")));
        }
    }
    Ok(())
}

fn assert_alternating(out: &Outputs) {
    let mut last: BTreeMap<(&str, &str), AnomalyState> = BTreeMap::new();
    for a in &out.anomalies {
        let prev = last.insert((&a.rule, &a.sensor), a.state);
        let ok = match (prev, a.state) {
            (None, AnomalyState::Firing) => true,
            (Some(p), s) => p != s,
            (None, AnomalyState::Resolved) => false,
        };
        assert!(ok, "{} {} went {prev:?} -> {:?}", a.rule, a.sensor, a.state);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_order_within_the_bound_gives_identical_outputs(
        rs in readings(),
        delays in prop::collection::vec(0i64..=OOO_MS, 1..50),
    ) {
        let p = pipeline();
        let in_order: Vec<_> = rs.iter().map(R::json).collect();
        let expected = normalized(common::run(&p, &in_order));
        let shuffled = normalized(common::run(&p, &delivery(&rs, &delays)));
        same(&shuffled, &expected)?;
        assert_alternating(&expected);
    }

    #[test]
    fn windows_equal_a_batch_recomputation(rs in readings()) {
        let p = pipeline();
        let out = common::run(&p, &rs.iter().map(R::json).collect::<Vec<_>>());
        prop_assert!(out.dead_letters.is_empty());
        // Batch: (aggregation, key, window start) -> temperature values.
        let mut batch: BTreeMap<(String, String, i64), Vec<f64>> = BTreeMap::new();
        for r in &rs {
            let start = r.ts.div_euclid(30_000) * 30_000;
            batch.entry(("zone".into(), format!("z{}", r.zone), start)).or_default().push(r.temperature);
            let mut s = r.ts.div_euclid(5_000) * 5_000;
            while s > r.ts - 20_000 {
                batch.entry(("hop".into(), format!("s{}", r.sensor), s)).or_default().push(r.temperature);
                s -= 5_000;
            }
        }
        let streamed: BTreeMap<_, _> = out
            .aggregates
            .iter()
            .map(|a| ((a.aggregation.clone(), a.key.clone().unwrap(), a.window_start), a.stats["temperature"].clone()))
            .collect();
        prop_assert_eq!(streamed.len(), out.aggregates.len(), "each window emitted once");
        prop_assert_eq!(streamed.keys().collect::<Vec<_>>(), batch.keys().collect::<Vec<_>>());
        for (key, values) in &batch {
            let s = &streamed[key];
            let sum: f64 = values.iter().sum();
            let avg = sum / values.len() as f64;
            prop_assert_eq!(s.count, Some(values.len() as u64));
            prop_assert_eq!(s.min, values.iter().copied().reduce(f64::min));
            prop_assert_eq!(s.max, values.iter().copied().reduce(f64::max));
            prop_assert!((s.avg.unwrap() - avg).abs() <= 1e-9 * avg.abs().max(1.0), "{:?} vs {}", s.avg, avg);
        }
    }

    #[test]
    fn snapshot_and_restore_anywhere_changes_nothing(
        rs in readings(),
        delays in prop::collection::vec(0i64..=OOO_MS, 1..50),
        cut in 0usize..120,
    ) {
        let p = pipeline();
        let records = delivery(&rs, &delays);
        let expected = normalized(common::run(&p, &records));
        let cut = cut.min(records.len());
        let mut out = Outputs::default();
        let mut first = p.engine();
        for r in &records[..cut] {
            first.process(r, &mut out);
        }
        let snapshot = first.snapshot();
        drop(first);
        let mut second = p.restore(&snapshot).unwrap();
        for r in &records[cut..] {
            second.process(r, &mut out);
        }
        second.flush(&mut out);
        same(&normalized(out), &expected)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..40)) {
        let p = pipeline();
        let mut e = p.engine();
        let mut out = Outputs::default();
        for r in &records {
            let (dead_before, read_before) = (out.dead_letters.len(), e.stats().readings);
            e.process(r, &mut out);
            let (dead, read) = (out.dead_letters.len() - dead_before, e.stats().readings - read_before);
            prop_assert_eq!(dead + read as usize, 1, "each record is read or dead-lettered, once");
        }
    }
}

#[test]
fn a_snapshot_does_not_restore_into_another_pipeline() {
    let p = pipeline();
    let other = common::reference();
    let snapshot = p.engine().snapshot();
    let err = other.restore(&snapshot).unwrap_err().to_string();
    assert!(err.contains("different input mapping or event-time settings"), "{err}");
    assert!(p.restore(b"garbage").is_err());
    assert!(p.restore(&snapshot[..snapshot.len() - 1]).is_err());
}
