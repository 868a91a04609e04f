//! The merge stage of zone windows across input partitions (`engine::MergeEngine`): final only when every source
//! has passed the window, independent of interleaving, idempotent per source, restorable, and equal to one
//! engine that saw every reading.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use common::{pipeline, reading, run};
use sensorpipe_worker::engine::{MergeEngine, Merged, MetricAcc, PartialWindow, Pipeline, SourceProgress};
use sensorpipe_worker::records::Aggregate;

const T0_MS: i64 = 1_673_049_600_000;
const MINUTE: i64 = 60_000;

fn zone_pipeline() -> Pipeline {
    pipeline(
        "input:\n  fields: {metrics: [temperature], zone: zone}\nprocessing:\n  aggregations:\n  \
         - {name: zone_avg, window: {size: 60s}, groupBy: zone, functions: [avg, min, max, count, sum]}\n",
    )
}

fn acc(values: &[f64]) -> MetricAcc {
    MetricAcc {
        count: values.len() as u64,
        sum: values.iter().sum(),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

fn partial(source: i32, zone: &str, start: i64, values: &[f64]) -> PartialWindow {
    PartialWindow {
        aggregation: "zone_avg".into(),
        key: Some(zone.into()),
        window_start: start,
        source,
        metrics: vec![Some(acc(values))],
    }
}

fn progress(source: i32, frontier: i64) -> SourceProgress {
    SourceProgress { source, sources: 3, frontier }
}

#[test]
fn a_window_is_final_only_once_every_source_has_passed_its_end() {
    let p = zone_pipeline();
    let mut m = p.merge_engine();
    let mut out = Vec::new();
    assert_eq!(m.add(partial(0, "f1", T0_MS, &[20.0, 22.0])), Merged::Added);
    assert_eq!(m.add(partial(1, "f1", T0_MS, &[30.0])), Merged::Added);
    m.progress(progress(0, T0_MS + MINUTE), &mut out);
    m.progress(progress(1, T0_MS + 2 * MINUTE), &mut out);
    assert!(out.is_empty(), "source 2 has not reported: {out:?}");
    m.progress(progress(2, T0_MS + MINUTE - 1), &mut out);
    assert!(out.is_empty(), "source 2 is still inside the window: {out:?}");
    m.progress(progress(2, T0_MS + MINUTE), &mut out);
    assert_eq!(out.len(), 1);
    let s = &out[0].stats["temperature"];
    assert_eq!((s.count, s.min, s.max, s.sum), (Some(3), Some(20.0), Some(30.0), Some(72.0)));
    assert_eq!(s.avg, Some(24.0));
    assert_eq!(out[0].id, Aggregate::make_id("zone_avg", Some("f1"), T0_MS));
    assert_eq!(m.open_windows(), 0);
}

#[test]
fn the_order_in_which_sources_interleave_changes_no_bit() {
    let p = zone_pipeline();
    // Values whose float sum depends on the order of addition.
    let parts = [
        partial(0, "f1", T0_MS, &[0.1, 1e16]),
        partial(1, "f1", T0_MS, &[0.2, -1e16]),
        partial(2, "f1", T0_MS, &[0.3]),
        partial(2, "f2", T0_MS + MINUTE, &[19.5]),
    ];
    let run_in = |order: &[usize]| {
        let mut m = p.merge_engine();
        let mut out = Vec::new();
        for &i in order {
            m.add(parts[i].clone());
        }
        for s in [2, 0, 1] {
            m.progress(progress(s, T0_MS + 2 * MINUTE), &mut out);
        }
        out
    };
    let first = run_in(&[0, 1, 2, 3]);
    assert_eq!(first.len(), 2);
    for order in [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
        assert_eq!(run_in(&order), first, "order {order:?}");
    }
}

#[test]
fn a_redelivered_partial_replaces_itself_and_one_after_the_window_closed_is_dropped() {
    let p = zone_pipeline();
    let mut m = p.merge_engine();
    let mut out = Vec::new();
    m.add(partial(0, "f1", T0_MS, &[21.0]));
    assert_eq!(m.add(partial(0, "f1", T0_MS, &[21.0])), Merged::Replaced);
    for s in 0..3 {
        m.progress(progress(s, T0_MS + MINUTE), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].stats["temperature"].count, Some(1));
    assert_eq!(m.add(partial(1, "f1", T0_MS, &[25.0])), Merged::TooLate);
    let other = PartialWindow { aggregation: "nope".into(), ..partial(1, "f1", T0_MS + MINUTE, &[1.0]) };
    assert_eq!(m.add(other), Merged::UnknownAggregation);
}

/// Step `i` of a small run: partials and frontiers of three sources for one window.
fn step(m: &mut MergeEngine, out: &mut Vec<Aggregate>, i: usize) {
    match i {
        0 => drop(m.add(partial(0, "f1", T0_MS, &[20.0]))),
        1 => m.progress(progress(0, T0_MS + MINUTE), out),
        2 => drop(m.add(partial(1, "f1", T0_MS, &[24.0]))),
        3 => m.progress(progress(1, T0_MS + MINUTE), out),
        _ => m.progress(progress(2, T0_MS + MINUTE), out),
    }
}

const STEPS: usize = 5;

#[test]
fn a_restored_merge_stage_goes_on_exactly_where_it_stopped() {
    let p = zone_pipeline();
    let mut whole = p.merge_engine();
    let mut expected = Vec::new();
    (0..STEPS).for_each(|i| step(&mut whole, &mut expected, i));
    assert_eq!(expected.len(), 1);
    for cut in 0..=STEPS {
        let mut head = p.merge_engine();
        let mut out = Vec::new();
        (0..cut).for_each(|i| step(&mut head, &mut out, i));
        let (mut restored, _) = p.restore_merge(&head.snapshot()).unwrap();
        (cut..STEPS).for_each(|i| step(&mut restored, &mut out, i));
        assert_eq!(out, expected, "cut after {cut} steps");
    }
    // A partition engine's snapshot is not a merge stage's.
    assert!(p.restore_merge(&p.engine().snapshot()).is_err());
}

#[test]
fn merged_partials_equal_one_engine_that_saw_every_reading() {
    let p = zone_pipeline();
    // 3 sources, 4 zones, 5 windows; each reading goes to the source its sensor hashes to.
    let mut readings = Vec::new();
    let mut by_window: std::collections::BTreeMap<(i32, String, i64), Vec<f64>> = Default::default();
    for i in 0..600i64 {
        let sensor = i % 12;
        let zone = format!("z{}", sensor % 4);
        let ts = T0_MS + i * 500;
        let value = 18.0 + ((i * 37) % 100) as f64 / 7.0;
        readings.push(reading(&format!("s{sensor}"), ts as f64 / 1000.0, value, &zone));
        let start = ts - ts.rem_euclid(MINUTE);
        by_window.entry(((sensor % 3) as i32, zone, start)).or_default().push(value);
    }
    let truth: Vec<Aggregate> = run(&p, &readings).aggregates;
    let mut m = p.merge_engine();
    let mut out = Vec::new();
    for ((source, zone, start), values) in &by_window {
        m.add(partial(*source, zone, *start, values));
    }
    for s in 0..3 {
        m.progress(progress(s, i64::MAX), &mut out);
    }
    assert_eq!(out.len(), truth.len());
    for (got, want) in out.iter().zip(&truth) {
        assert_eq!((&got.id, &got.window_end), (&want.id, &want.window_end));
        let (g, w) = (&got.stats["temperature"], &want.stats["temperature"]);
        assert_eq!((g.count, g.min, g.max), (w.count, w.min, w.max), "{}", got.id);
        assert!((g.avg.unwrap() - w.avg.unwrap()).abs() <= 1e-9, "{}: {g:?} vs {w:?}", got.id);
    }
}

#[test]
fn partition_engines_in_partial_mode_feed_the_merge_stage_to_the_single_engine_result() {
    let p = zone_pipeline();
    let mut readings: Vec<(usize, Vec<u8>)> = Vec::new();
    for i in 0..900i64 {
        let sensor = i % 15;
        // Out of order within the default 10 s out-of-orderness.
        let ts = T0_MS + i * 400 - (i % 7) * 1_000;
        let value = 17.0 + ((i * 53) % 90) as f64 / 9.0;
        readings.push((
            (sensor % 3) as usize,
            reading(&format!("s{sensor}"), ts as f64 / 1000.0, value, &format!("z{}", sensor % 5)),
        ));
    }
    let all: Vec<Vec<u8>> = readings.iter().map(|(_, r)| r.clone()).collect();
    let truth = run(&p, &all).aggregates;

    let mut engines: Vec<_> = (0..3)
        .map(|s| {
            let mut e = p.engine();
            e.emit_partials(s);
            e
        })
        .collect();
    let mut m = p.merge_engine();
    let mut merged = Vec::new();
    let mut out = sensorpipe_worker::engine::Outputs::default();
    for (source, record) in &readings {
        engines[*source].process(record, &mut out);
        assert!(out.aggregates.is_empty(), "zone windows come out partial");
        for partial in out.partials.drain(..) {
            m.add(partial);
        }
        if let Some(frontier) = engines[*source].frontier() {
            m.progress(SourceProgress { source: *source as i32, sources: 3, frontier }, &mut merged);
        }
        out.clear();
    }
    for (s, e) in engines.iter_mut().enumerate() {
        e.flush(&mut out);
        for x in out.partials.drain(..) {
            m.add(x);
        }
        m.progress(SourceProgress { source: s as i32, sources: 3, frontier: i64::MAX }, &mut merged);
    }
    let key = |a: &Aggregate| (a.window_start, a.id.clone());
    let (mut merged, mut truth) = (merged, truth);
    merged.sort_by_key(key);
    truth.sort_by_key(key);
    assert_eq!(merged.len(), truth.len());
    assert!(merged.len() > 20, "{} windows", merged.len());
    for (g, w) in merged.iter().zip(&truth) {
        assert_eq!(g.id, w.id);
        let (g, w) = (&g.stats["temperature"], &w.stats["temperature"]);
        assert_eq!((g.count, g.min, g.max), (w.count, w.min, w.max));
        assert!((g.avg.unwrap() - w.avg.unwrap()).abs() <= 1e-9);
    }
}
