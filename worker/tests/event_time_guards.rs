//! Event-time guards of the engine: the clock guard (`timestamp_in_future`), idle partitions moving on with the
//! clock, and bounded state under sensor churn (`processing.stateRetention`).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use common::{pipeline, reading};
use sensorpipe_worker::engine::{Idleness, Outputs};
use sensorpipe_worker::reason::Reason;
use sensorpipe_worker::records::AnomalyKind;

const T0_S: f64 = 1_673_049_600.0;
const T0_MS: i64 = 1_673_049_600_000;

#[test]
fn a_far_future_reading_is_dead_lettered_and_moves_no_watermark() {
    let p = pipeline(
        "input:\n  fields: {metrics: [temperature], zone: zone}\nprocessing:\n  silence: {name: quiet, timeout: 60s}\n",
    );
    let mut e = p.engine();
    e.set_clock(T0_MS + 5_000);
    let mut out = Outputs::default();
    e.process(&reading("a", T0_S, 21.0, "z"), &mut out);
    e.process(&reading("b", T0_S + 1.0, 21.0, "z"), &mut out);
    let before = e.watermark();
    // 2099: within the parser's range, far ahead of the clock.
    e.process(&reading("broken", 4_070_908_800.0, 21.0, "z"), &mut out);
    assert_eq!(out.dead_letters.len(), 1);
    assert_eq!(out.dead_letters[0].reason, Reason::TimestampInFuture);
    assert!(out.dead_letters[0].detail.contains("maxClockSkew"), "{}", out.dead_letters[0].detail);
    assert_eq!(e.watermark(), before);
    assert!(out.anomalies.is_empty(), "no burst of silences: {:?}", out.anomalies);
    out.clear();
    // Within the skew (default 10 m) is accepted; later readings are not late.
    e.process(&reading("a", T0_S + 300.0, 21.0, "z"), &mut out);
    e.process(&reading("b", T0_S + 301.0, 21.0, "z"), &mut out);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
}

#[test]
fn an_idle_partition_closes_its_windows_and_reports_its_sensors_silent() {
    let p = pipeline(
        "input:\n  fields: {metrics: [temperature], zone: zone}\nprocessing:\n  eventTime: {idleTimeout: 30s}\n  \
         silence: {name: quiet, timeout: 120s}\n  aggregations:\n  \
         - {name: zone_avg, window: {size: 60s}, groupBy: zone, functions: [avg]}\n",
    );
    let mut e = p.engine();
    let mut idle = Idleness::default();
    let mut out = Outputs::default();
    for i in 0..20 {
        e.process(&reading("a", T0_S + f64::from(i), 20.0, "z"), &mut out);
        idle.on_record(T0_MS + i64::from(i) * 1000, e.watermark());
    }
    assert!(out.aggregates.is_empty());
    let (timeout, ooo) = (p.idle_timeout_ms(), p.out_of_orderness_ms());
    let last = T0_MS + 19_000;
    assert_eq!(idle.watermark(last + 29_999, timeout, ooo), None, "not idle yet");
    // Three minutes without records: the watermark has moved on by as much.
    let w = idle.watermark(last + 180_000, timeout, ooo).unwrap();
    e.advance_watermark(w, &mut out);
    assert_eq!(out.aggregates.len(), 1, "the open window is emitted");
    let silences: Vec<_> = out.anomalies.iter().filter(|a| a.kind == AnomalyKind::Silence).collect();
    assert_eq!(silences.len(), 1, "{:?}", out.anomalies);
    assert_eq!(silences[0].sensor, "a");
}

#[test]
fn sensors_that_come_and_go_are_forgotten_and_state_stays_flat() {
    let p = pipeline(
        "input:\n  fields: {metrics: [temperature], zone: zone}\nprocessing:\n  stateRetention: 10m\n  \
         silence: {name: quiet, timeout: 2m}\n  aggregations:\n  \
         - {name: per_sensor, window: {size: 60s}, groupBy: sensor, functions: [avg]}\n  \
         - {name: per_zone, window: {size: 60s}, groupBy: zone, functions: [avg]}\n",
    );
    let mut e = p.engine();
    let mut out = Outputs::default();
    let mut sizes = Vec::new();
    let mut silences = 0usize;
    // 50 sensors live at any time; every 5 minutes all of them are replaced by new ones in new zones: in 10
    // hours, 6000 sensors and 1200 zones come and go.
    for minute in 0..600i64 {
        let generation = minute / 5;
        for s in 0..50i64 {
            for second in (0..60).step_by(20) {
                let ts = T0_S + (minute * 60 + second) as f64;
                e.process(
                    &reading(&format!("g{generation}-s{s}"), ts, 21.0, &format!("g{generation}-z{}", s % 10)),
                    &mut out,
                );
            }
        }
        silences += out.anomalies.iter().filter(|a| a.kind == AnomalyKind::Silence).count();
        out.clear();
        if minute % 60 == 59 {
            let st = e.stats();
            sizes.push((st.sensors, st.groups));
        }
    }
    // Retention 10 m of 5-minute generations: at most about three generations (150 sensors, 30 zones) remembered.
    for (sensors, groups) in &sizes {
        assert!(*sensors <= 200 && *groups <= 40, "state grows: {sizes:?}");
    }
    // Every generation but the last was reported silent before being forgotten.
    assert!(silences >= 50 * 119, "{silences} silences");
    // A forgotten sensor that comes back is a new sensor, with nothing left over.
    e.process(&reading("g0-s1", T0_S + 36_000.0, 21.0, "g0-z1"), &mut out);
    assert!(out.dead_letters.is_empty());
}

#[test]
fn a_retention_shorter_than_a_rule_is_refused() {
    let err = sensorpipe_worker::model::load_pipeline(
        "input:\n  fields: {metrics: [temperature]}\nprocessing:\n  stateRetention: 1m\n  silence: {name: quiet, timeout: 5m}\n",
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("processing.stateRetention") && err.contains("silence.timeout"), "{err}");
}

#[test]
fn replay_takes_its_clock_from_kafka_timestamps_and_applies_both_guards() {
    let p = pipeline(
        "input:\n  fields: {metrics: [temperature], zone: zone}\nprocessing:\n  eventTime: {idleTimeout: 30s}\n  \
         silence: {name: quiet, timeout: 120s}\n",
    );
    let line = |kafka_ms: i64, r: Vec<u8>| format!("{kafka_ms}\t{}\n", String::from_utf8(r).unwrap());
    let mut input = String::new();
    for i in 0..10 {
        input += &line(T0_MS + i * 1000, reading("a", T0_S + i as f64, 20.0, "z"));
    }
    input += &line(T0_MS + 10_000, reading("broken", 4_070_908_800.0, 20.0, "z"));
    // Ten minutes later: the partition was idle, its watermark moved on and "a" fell silent before this reading.
    input += &line(T0_MS + 610_000, reading("b", T0_S + 610.0, 20.0, "z"));
    let mut out = Outputs::default();
    let run = |input: &str, out: &mut Outputs| {
        sensorpipe_worker::replay::replay_with(&p, input.as_bytes(), out, false).unwrap()
    };
    let summary = run(&input, &mut out);
    assert_eq!(summary.dead_letters_by_reason.get("timestamp_in_future"), Some(&1), "{summary:?}");
    let silent: Vec<_> = out.anomalies.iter().filter(|a| a.kind == AnomalyKind::Silence).map(|a| &a.sensor).collect();
    assert_eq!(silent, ["a"]);
    // Without timestamps there is no clock and no guard: the 2099 reading moves the watermark, the next reading is
    // late — what the guard prevents.
    let plain: String = input.lines().map(|l| format!("{}\n", l.split_once('\t').unwrap().1)).collect();
    let mut out = Outputs::default();
    let summary = run(&plain, &mut out);
    assert_eq!(summary.dead_letters_by_reason.get("late"), Some(&1), "{summary:?}");
    assert_eq!(summary.dead_letters_by_reason.get("timestamp_in_future"), None);
}
