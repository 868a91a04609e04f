//! State across releases and spec edits.
//!
//! `tests/fixtures/snapshot-v3/` holds what this release wrote: a pipeline, an input, and the snapshots of a
//! partition engine and of a merge stage taken at `CUT` records. Every later release must restore them and go on
//! exactly as the engine that wrote them would have. A fixture of an existing format is never regenerated: a new
//! format gets a new directory (`cargo test -p sensorpipe-worker --test snapshot_compat -- --ignored
//! write_golden_snapshots` writes the current format's, for a new directory name set in `GOLDEN`).
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod common;

use std::path::PathBuf;

use sensorpipe_worker::engine::{MergeEngine, Outputs, PartialWindow, Pipeline, SnapshotError, SourceProgress};
use sensorpipe_worker::records::{Aggregate, Anomaly};

/// The fixture directory of the current snapshot format.
const GOLDEN: &str = "snapshot-v3";
/// Records of the input processed before the snapshots were taken.
const CUT: usize = 700;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(GOLDEN).join(name)
}

fn yaml() -> String {
    std::fs::read_to_string(fixture("pipeline.yaml")).unwrap()
}

fn input() -> Vec<Vec<u8>> {
    std::fs::read(fixture("input.jsonl"))
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The fixture's input: 12 sensors in 3 zones, a reading a minute for two hours, every seventh one late by up to
/// 8 s, room 3 overheating in the second hour (across the cut), room 7 jumping by 12 °C, room 11 silent for 20
/// minutes.
fn generate_input() -> String {
    let mut lines = String::new();
    let start = 1_673_049_600i64;
    for minute in 0..120i64 {
        for sensor in 0..12i64 {
            if sensor == 11 && (40..60).contains(&minute) {
                continue;
            }
            let mut t = 20.0 + (sensor as f64) * 0.5 + ((minute % 10) as f64) * 0.1;
            if sensor == 3 && (50..80).contains(&minute) {
                t = 33.5;
            }
            if sensor == 7 && minute == 90 {
                t += 12.0;
            }
            let late = if (minute + sensor) % 7 == 0 { 8 } else { 0 };
            let ts = start + minute * 60 + sensor - late;
            lines.push_str(&format!(
                "{{\"sensor_id\":\"room_{sensor}\",\"timestamp\":{ts},\"temperature\":{t:.1},\"humidity\":{h},\"zone\":\"floor-{z}\"}}\n",
                h = 40 + (minute + sensor) % 50,
                z = sensor % 3
            ));
        }
    }
    lines
}

#[derive(Clone, Debug)]
enum Event {
    Partial(PartialWindow),
    Progress(SourceProgress),
}

/// What the merge stage receives from two input partitions (sensors split by parity) given the whole input.
fn merge_events(p: &Pipeline, records: &[Vec<u8>]) -> Vec<Event> {
    let mut engines = [p.engine(), p.engine()];
    for (source, e) in engines.iter_mut().enumerate() {
        e.emit_partials(source as i32);
    }
    let mut events = Vec::new();
    let mut out = Outputs::default();
    for (i, r) in records.iter().enumerate() {
        let source = i % 12 % 2;
        engines[source].process(r, &mut out);
        events.extend(out.partials.drain(..).map(Event::Partial));
        if let Some(frontier) = engines[source].frontier() {
            events.push(Event::Progress(SourceProgress { source: source as i32, sources: 2, frontier }));
        }
        out.clear();
    }
    events
}

fn apply(m: &mut MergeEngine, events: &[Event]) -> Vec<Aggregate> {
    let mut out = Vec::new();
    for e in events {
        match e.clone() {
            Event::Partial(p) => drop(m.add(p)),
            Event::Progress(p) => m.progress(p, &mut out),
        }
    }
    out
}

/// What an engine that has seen `records[..from]` emits for `records[from..]`, flushed at the end.
fn continue_fresh(p: &Pipeline, records: &[Vec<u8>], from: usize) -> (Vec<Anomaly>, Vec<Aggregate>) {
    let mut e = p.engine();
    let mut out = Outputs::default();
    records[..from].iter().for_each(|r| e.process(r, &mut out));
    out.clear();
    records[from..].iter().for_each(|r| e.process(r, &mut out));
    e.flush(&mut out);
    (out.anomalies, out.aggregates)
}

#[test]
#[ignore = "writes the golden snapshots of the current format; run by hand for a new format"]
fn write_golden_snapshots() {
    std::fs::create_dir_all(fixture("")).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/smart-building.yaml"), fixture("pipeline.yaml"))
        .unwrap();
    std::fs::write(fixture("input.jsonl"), generate_input()).unwrap();
    let p = common::pipeline(&yaml());
    let records = input();
    let mut e = p.engine();
    let mut out = Outputs::default();
    records[..CUT].iter().for_each(|r| e.process(r, &mut out));
    std::fs::write(fixture("partition.snapshot"), e.snapshot()).unwrap();
    let events = merge_events(&p, &records);
    let mut m = p.merge_engine();
    apply(&mut m, &events[..events.len() / 2]);
    std::fs::write(fixture("merge.snapshot"), m.snapshot()).unwrap();
}

#[test]
fn the_golden_partition_snapshot_restores_and_continues_exactly() {
    let p = common::pipeline(&yaml());
    let records = input();
    let (anomalies, aggregates) = continue_fresh(&p, &records, CUT);
    assert!(!anomalies.is_empty() && !aggregates.is_empty(), "the fixture's second half must have outputs");
    let (mut restored, migration) =
        p.restore_migrating(&std::fs::read(fixture("partition.snapshot")).unwrap()).unwrap();
    assert!(migration.is_empty(), "{migration:?}");
    let mut out = Outputs::default();
    records[CUT..].iter().for_each(|r| restored.process(r, &mut out));
    restored.flush(&mut out);
    assert_eq!(out.anomalies, anomalies);
    assert_eq!(out.aggregates, aggregates);
}

#[test]
fn the_golden_merge_snapshot_restores_and_continues_exactly() {
    let p = common::pipeline(&yaml());
    let events = merge_events(&p, &input());
    let cut = events.len() / 2;
    let mut fresh = p.merge_engine();
    apply(&mut fresh, &events[..cut]);
    let expected = apply(&mut fresh, &events[cut..]);
    assert!(!expected.is_empty());
    let (mut restored, migration) = p.restore_merge(&std::fs::read(fixture("merge.snapshot")).unwrap()).unwrap();
    assert!(migration.is_empty(), "{migration:?}");
    assert_eq!(apply(&mut restored, &events[cut..]), expected);
}

#[test]
fn a_spec_edit_keeps_the_state_of_every_rule_it_did_not_change() {
    let yaml = yaml();
    let p = common::pipeline(&yaml);
    let records = input();
    let mut e = p.engine();
    let mut out = Outputs::default();
    records[..CUT].iter().for_each(|r| e.process(r, &mut out));
    let snapshot = e.snapshot();
    // Edited: `humid` gets another limit, and a per-sensor aggregation is added; `overheat` (firing for room 3
    // at the cut), the spike, the silence rule and the zone windows are unchanged.
    let edited = yaml.replace("above: 80\n        clear: 75", "above: 85\n        clear: 80").replace(
        "  outputs:",
        "      - name: sensor-10m\n        window: {type: tumbling, size: 10m}\n        groupBy: sensor\n        \
         metrics: [temperature]\n        functions: [avg]\n  outputs:",
    );
    assert_ne!(edited, yaml);
    let q = common::pipeline(&edited);
    let (mut restored, migration) = q.restore_migrating(&snapshot).unwrap();
    assert_eq!(migration.reset, ["humid", "sensor-10m"]);
    assert_eq!(migration.dropped, ["humid"]);
    out.clear();
    records[CUT..].iter().for_each(|r| restored.process(r, &mut out));
    restored.flush(&mut out);
    // The unchanged rules go on as if nothing happened: the open overheat episode is not reported again, the
    // zone windows open at the cut are complete.
    let (anomalies, aggregates) = continue_fresh(&p, &records, CUT);
    let kept = |a: &&Anomaly| a.rule != "humid";
    assert!(anomalies.iter().any(|a| a.rule == "overheat"), "the fixture must end an overheat episode after the cut");
    assert_eq!(
        out.anomalies.iter().filter(kept).collect::<Vec<_>>(),
        anomalies.iter().filter(kept).collect::<Vec<_>>()
    );
    let zone = |a: &&Aggregate| a.aggregation == "zone-5m";
    assert_eq!(
        out.aggregates.iter().filter(zone).collect::<Vec<_>>(),
        aggregates.iter().filter(zone).collect::<Vec<_>>()
    );
    // The new aggregation starts with the restore: its first windows hold only readings after the cut.
    assert!(out.aggregates.iter().any(|a| a.aggregation == "sensor-10m"));
}

#[test]
fn an_edit_of_the_input_fields_or_event_time_cannot_carry_state() {
    let yaml = yaml();
    let snapshot = common::pipeline(&yaml).engine().snapshot();
    let edited = yaml.replace("maxOutOfOrderness: 10s", "maxOutOfOrderness: 20s");
    assert_ne!(edited, yaml);
    let err = common::pipeline(&edited).restore(&snapshot).unwrap_err();
    assert!(matches!(err, SnapshotError::DifferentPipeline { .. }), "{err}");
    // Settings that shape no state change nothing.
    let idle = yaml.replace("allowedLateness: 30s", "allowedLateness: 30s\n      idleTimeout: 5m");
    assert_ne!(idle, yaml);
    let (_, migration) = common::pipeline(&idle).restore_migrating(&snapshot).unwrap();
    assert!(migration.is_empty(), "{migration:?}");
}
