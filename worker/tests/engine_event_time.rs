//! Engine behaviour in event time: watermark, lateness, reordering, silence and window closing, through the
//! public API with real JSON records.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use common::{ids, pipeline, reading, run};
use sensorpipe_worker::engine::Outputs;
use sensorpipe_worker::reason::Reason;
use sensorpipe_worker::records::AnomalyState;

const T0: f64 = 1_673_049_600.0;

fn spec(event_time: &str, rules: &str) -> String {
    format!("input:\n  fields: {{metrics: [temperature], zone: zone}}\nprocessing:\n  eventTime: {event_time}\n{rules}")
}

const OVERHEAT: &str = "  thresholds:\n  - {name: hot, metric: temperature, above: 30}\n";
const WINDOWS: &str = "  aggregations:\n  - {name: w, window: {size: 60s}, groupBy: zone}\n";

#[test]
fn readings_out_of_order_within_the_bound_are_evaluated_in_event_time_order() {
    let p = pipeline(&spec("{maxOutOfOrderness: 10s}", OVERHEAT));
    // In event time the sensor goes 25 → 31 → 25 → 31: two episodes. Delivered shuffled within 10 s.
    let in_order = [(0.0, 25.0), (5.0, 31.0), (10.0, 25.0), (15.0, 31.0), (40.0, 25.0)];
    let shuffled = [(5.0, 31.0), (0.0, 25.0), (15.0, 31.0), (10.0, 25.0), (40.0, 25.0)];
    let make = |s: &[(f64, f64)]| s.iter().map(|&(t, v)| reading("a", T0 + t, v, "z")).collect::<Vec<_>>();
    let a = run(&p, &make(&in_order));
    let b = run(&p, &make(&shuffled));
    assert_eq!(a, b);
    let states: Vec<_> = a.anomalies.iter().map(|x| x.state).collect();
    use AnomalyState::*;
    assert_eq!(states, vec![Firing, Resolved, Firing, Resolved]);
}

#[test]
fn detection_waits_for_the_watermark() {
    let p = pipeline(&spec("{maxOutOfOrderness: 10s}", OVERHEAT));
    let mut e = p.engine();
    let mut out = Outputs::default();
    e.process(&reading("a", T0, 31.0, "z"), &mut out);
    assert!(out.anomalies.is_empty(), "not evaluated before the watermark passes it");
    e.process(&reading("b", T0 + 9.0, 20.0, "z"), &mut out);
    assert!(out.anomalies.is_empty());
    e.process(&reading("b", T0 + 10.0, 20.0, "z"), &mut out);
    assert!(out.anomalies.is_empty(), "a reading exactly at the watermark may still have company");
    e.process(&reading("b", T0 + 11.0, 20.0, "z"), &mut out);
    assert_eq!(ids(&out), vec![format!("hot:a:{}:firing", (T0 * 1000.0) as i64)]);
    assert_eq!(e.watermark(), Some(((T0 + 1.0) * 1000.0) as i64));
}

#[test]
fn too_late_readings_go_to_the_dead_letters_and_late_ones_still_count_in_windows() {
    let p = pipeline(&spec("{maxOutOfOrderness: 0s, allowedLateness: 30s}", &format!("{OVERHEAT}{WINDOWS}")));
    let mut e = p.engine();
    let mut out = Outputs::default();
    e.process(&reading("a", T0 + 50.0, 20.0, "z"), &mut out);
    // 20 s behind the watermark: within the lateness, aggregated but not seen by the rules.
    e.process(&reading("a", T0 + 30.0, 35.0, "z"), &mut out);
    // 31 s behind: too late.
    e.process(&reading("a", T0 + 19.0, 20.0, "z"), &mut out);
    assert_eq!(out.dead_letters.len(), 1);
    assert_eq!(out.dead_letters[0].reason, Reason::Late);
    assert!(out.anomalies.is_empty(), "late readings do not drive the rules");
    assert_eq!(e.stats().late_for_rules, 1);
    // The window [0, 60) closes when the frontier (watermark − 30 s) reaches 60 s.
    e.process(&reading("a", T0 + 89.0, 20.0, "z"), &mut out);
    assert!(out.aggregates.is_empty());
    e.process(&reading("a", T0 + 90.0, 20.0, "z"), &mut out);
    assert_eq!(out.aggregates.len(), 1);
    let t = &out.aggregates[0].stats["temperature"];
    assert_eq!((t.count, t.max), (Some(2), Some(35.0)));
}

#[test]
fn a_silent_sensor_is_noticed_through_its_neighbours_and_resolved_when_it_returns() {
    let p = pipeline(&spec("{maxOutOfOrderness: 0s}", "  silence: {timeout: 60s}\n"));
    let mut records = Vec::new();
    for t in (0..=300).step_by(10) {
        records.push(reading("chatty", T0 + t as f64, 20.0, "z"));
        if !(30..200).contains(&t) {
            records.push(reading("quiet", T0 + t as f64, 20.0, "z"));
        }
    }
    let out = run(&p, &records);
    let quiet: Vec<_> = out.anomalies.iter().filter(|a| a.sensor == "quiet").collect();
    assert_eq!(quiet.len(), 2, "{:#?}", out);
    let ms = |s: f64| ((T0 + s) * 1000.0) as i64;
    assert_eq!(
        (quiet[0].state, quiet[0].event_time, quiet[0].last_seen),
        (AnomalyState::Firing, ms(80.0), Some(ms(20.0)))
    );
    assert_eq!((quiet[1].state, quiet[1].event_time), (AnomalyState::Resolved, ms(200.0)));
    assert!(out.anomalies.iter().all(|a| a.sensor == "quiet"));
}

#[test]
fn a_reading_exactly_at_the_timeout_keeps_the_sensor_alive() {
    let p = pipeline(&spec("{maxOutOfOrderness: 0s}", "  silence: {timeout: 60s}\n"));
    let records: Vec<_> = [0.0, 60.0, 120.0].iter().map(|&t| reading("a", T0 + t, 20.0, "z")).collect();
    assert!(run(&p, &records).anomalies.is_empty());
}

#[test]
fn windows_of_keys_that_went_silent_still_close() {
    let p = pipeline(&spec("{maxOutOfOrderness: 0s}", WINDOWS));
    let mut e = p.engine();
    let mut out = Outputs::default();
    e.process(&reading("a", T0 + 10.0, 20.0, "east"), &mut out);
    // Only the west zone keeps sending; east's window closes on the partition watermark.
    for t in [20.0, 59.0, 60.0] {
        e.process(&reading("b", T0 + t, 22.0, "west"), &mut out);
    }
    let keys: Vec<_> = out.aggregates.iter().map(|a| a.key.clone().unwrap()).collect();
    assert_eq!(keys, vec!["east", "west"]);
    assert_eq!(out.aggregates[0].stats["temperature"].avg, Some(20.0));
}

#[test]
fn flush_emits_open_windows_once() {
    let p = pipeline(&spec("{maxOutOfOrderness: 5s, allowedLateness: 1m}", WINDOWS));
    let mut e = p.engine();
    let mut out = Outputs::default();
    e.process(&reading("a", T0 + 10.0, 20.0, "z"), &mut out);
    e.process(&reading("a", T0 + 70.0, 24.0, "z"), &mut out);
    assert!(out.aggregates.is_empty());
    e.flush(&mut out);
    e.flush(&mut out);
    assert_eq!(out.aggregates.len(), 2);
    assert_eq!(out.aggregates[1].stats["temperature"].avg, Some(24.0));
}

#[test]
fn hopping_windows_emit_each_reading_in_size_over_advance_windows() {
    let p = pipeline(&spec(
        "{maxOutOfOrderness: 0s}",
        "  aggregations:\n  - {name: h, window: {type: hopping, size: 3m, advance: 1m}, groupBy: sensor, functions: [count, sum]}\n",
    ));
    let out = run(&p, &[reading("a", T0 + 150.0, 2.0, "z")]);
    assert_eq!(out.aggregates.len(), 3);
    for a in &out.aggregates {
        assert_eq!(a.key.as_deref(), Some("a"));
        assert_eq!(a.stats["temperature"].sum, Some(2.0));
        assert_eq!(a.stats["temperature"].avg, None, "only the configured functions");
    }
}

#[test]
fn readings_without_a_zone_are_grouped_under_a_null_key_and_the_sensor_map_fills_in() {
    let yaml = "input:\n  fields:\n    metrics: [temperature]\n    zone: zone\n    sensorZones: {a: lobby}\nprocessing:\n  eventTime: {maxOutOfOrderness: 0s}\n  aggregations:\n  - {name: w, window: {size: 60s}}\n";
    let p = pipeline(yaml);
    let records = vec![
        br#"{"sensor_id":"a","timestamp":1673049600,"temperature":1}"#.to_vec(),
        br#"{"sensor_id":"b","timestamp":1673049600,"temperature":2}"#.to_vec(),
        br#"{"sensor_id":"a","timestamp":1673049600,"temperature":3,"zone":"roof"}"#.to_vec(),
    ];
    let out = run(&p, &records);
    let keys: Vec<_> = out.aggregates.iter().map(|a| a.key.clone()).collect();
    assert_eq!(keys, vec![None, Some("lobby".to_owned()), Some("roof".to_owned())]);
    assert_eq!(out.aggregates[0].id, "w::1673049600000");
}

#[test]
fn bad_records_never_stop_the_partition() {
    let p = common::reference();
    let mut e = p.engine();
    let mut out = Outputs::default();
    for bad in [&b"\xff\xfe"[..], b"", b"{}", b"null", b"{\"sensor_id\":\"a\"}", b"[[[[[[", b"{\"sensor_id\":1e5}"] {
        e.process(bad, &mut out);
    }
    assert_eq!(out.dead_letters.len(), 7);
    e.process(&reading("a", T0, 35.0, "z"), &mut out);
    e.process(&reading("a", T0 + 60.0, 35.0, "z"), &mut out);
    e.flush(&mut out);
    assert!(out.anomalies.iter().any(|a| a.rule == "overheat"));
}

#[test]
fn open_episodes_are_counted_per_rule_until_they_resolve() {
    let rules = format!(
        "{OVERHEAT}  spikes:\n  - {{name: jump, metric: temperature, delta: 10, within: 5m}}\n  silence: {{name: quiet, \
         timeout: 60s}}\n"
    );
    let p = pipeline(&spec("{maxOutOfOrderness: 0s}", &rules));
    let mut engine = p.engine();
    let mut out = Outputs::default();
    // "a" overheats at once (also a jump from 20), "b" stays normal, "c" goes silent after its first reading.
    for (sensor, t, v) in [("a", 0.0, 20.0), ("b", 0.0, 20.0), ("c", 0.0, 20.0), ("a", 10.0, 35.0), ("b", 10.0, 21.0)] {
        engine.process(&reading(sensor, T0 + t, v, "z"), &mut out);
    }
    for t in (20..=120).step_by(10) {
        engine.process(&reading("b", T0 + f64::from(t), 21.0, "z"), &mut out);
    }
    assert_eq!(engine.active_anomalies(), vec![("hot", 1), ("jump", 1), ("quiet", 2)], "{:#?}", out.anomalies);
    // "a" comes back to normal and reports again; "c" stays silent.
    engine.process(&reading("a", T0 + 130.0, 25.0, "z"), &mut out);
    engine.process(&reading("b", T0 + 140.0, 21.0, "z"), &mut out);
    assert_eq!(engine.active_anomalies(), vec![("hot", 0), ("jump", 0), ("quiet", 1)], "{:#?}", out.anomalies);
}
