//! Simulate a day of the reference building, replay it through the reference pipeline, and check the engine
//! found exactly what the simulator injected: every overheating, spike and silence episode, no anomaly outside
//! them, and the dead letters the simulator planted, reason by reason.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use sensorpipe_worker::engine::Outputs;
use sensorpipe_worker::records::{Anomaly, AnomalyKind, AnomalyState};
use sensorpipe_worker::replay::replay;
use sensorpipe_worker::simulate::{GroundTruth, SimConfig, generate};

fn simulate(cfg: &SimConfig) -> (Vec<u8>, GroundTruth) {
    let mut data = Vec::new();
    let truth = generate(cfg, |line| {
        data.extend_from_slice(line);
        data.push(b'\n');
        Ok(())
    })
    .unwrap();
    (data, truth)
}

fn day() -> SimConfig {
    SimConfig {
        sensors: 40,
        zones: 4,
        overheats: 5,
        spike_rises: 4,
        spike_falls: 4,
        drifts: 4,
        stuck: 4,
        silences: 5,
        ..SimConfig::default()
    }
}

#[test]
fn replay_of_a_simulated_day_finds_every_injected_anomaly_and_nothing_else() {
    let cfg = day();
    let (data, truth) = simulate(&cfg);
    let mut out = Outputs::default();
    let summary = replay(&common::reference(), &data[..], &mut out).unwrap();
    assert_eq!(summary.records, truth.records);

    // Every expected kind of every episode: one firing and one resolved, for that sensor, inside the episode.
    let mut matched = vec![false; out.anomalies.len()];
    for ep in &truth.episodes {
        for kind in &ep.expect {
            let found: Vec<(usize, &Anomaly)> = out
                .anomalies
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.sensor == ep.sensor && a.kind == *kind && (ep.start..=ep.end).contains(&a.event_time)
                })
                .collect();
            let states: Vec<_> = found.iter().map(|(_, a)| a.state).collect();
            assert_eq!(
                states,
                vec![AnomalyState::Firing, AnomalyState::Resolved],
                "{kind:?} of {ep:?}: found {:#?}",
                found.iter().map(|(_, a)| a).collect::<Vec<_>>()
            );
            for (i, _) in found {
                matched[i] = true;
            }
        }
    }
    let unexplained: Vec<_> = out.anomalies.iter().zip(&matched).filter(|(_, m)| !**m).map(|(a, _)| a).collect();
    assert!(unexplained.is_empty(), "anomalies no episode explains: {unexplained:#?}");

    // Drifts and stuck sensors exist in the data and produce nothing.
    assert!(truth.episodes.iter().any(|e| e.expect.is_empty()));
    for kind in [AnomalyKind::Threshold, AnomalyKind::Spike, AnomalyKind::Silence] {
        assert!(out.anomalies.iter().any(|a| a.kind == kind), "no {kind:?} at all");
    }

    // Dead letters, reason by reason, exactly as planted.
    assert_eq!(summary.dead_letters_by_reason, truth.dead_letters);
    assert!(truth.dead_letters.len() >= 6, "every reason planted: {:?}", truth.dead_letters);
    assert!(truth.out_of_order > 1000, "the day is shuffled: {}", truth.out_of_order);

    // Every zone gets a 5-minute aggregate for each of the 288 windows of the day.
    assert_eq!(out.aggregates.len(), 4 * 288);
}

#[test]
fn simulation_and_replay_are_deterministic() {
    let cfg = SimConfig {
        sensors: 10,
        zones: 2,
        duration_ms: 6 * 3_600_000,
        overheats: 1,
        spike_rises: 1,
        spike_falls: 1,
        drifts: 1,
        stuck: 1,
        silences: 1,
        ..SimConfig::default()
    };
    let (a, truth_a) = simulate(&cfg);
    let (b, truth_b) = simulate(&cfg);
    assert_eq!(a, b);
    assert_eq!(truth_a, truth_b);
    let (c, _) = simulate(&SimConfig { seed: 7, ..cfg });
    assert_ne!(a, c);

    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for run in ["one", "two"] {
        let path = dir.path().join(run);
        let mut sink = sensorpipe_worker::replay::DirectorySink::create(&path).unwrap();
        replay(&common::reference(), &a[..], &mut sink).unwrap();
        sink.finish().unwrap();
        files.push(path);
    }
    for name in ["anomalies.jsonl", "aggregates.jsonl", "dead_letters.jsonl"] {
        let one = std::fs::read(files[0].join(name)).unwrap();
        let two = std::fs::read(files[1].join(name)).unwrap();
        assert!(!one.is_empty(), "{name} is empty");
        assert_eq!(one, two, "{name} differs between runs");
    }
}

#[test]
fn a_shuffled_day_gives_the_same_outputs_as_the_same_day_in_event_time_order() {
    // 5 % of the records arrive up to the whole out-of-orderness bound late; nothing is beyond the bound.
    let cfg = SimConfig {
        sensors: 30,
        zones: 3,
        duration_ms: 12 * 3_600_000,
        late: 0.0,
        malformed: 0.0,
        out_of_order: 0.05,
        max_delay_ms: 10_000,
        ..day()
    };
    let (shuffled, truth) = simulate(&cfg);
    assert!(truth.out_of_order > 1000);
    let mut lines: Vec<&[u8]> = shuffled.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let ts = |l: &[u8]| serde_json::from_slice::<serde_json::Value>(l).unwrap()["timestamp"].as_i64().unwrap();
    lines.sort_by_cached_key(|l| ts(l));
    let ordered = lines.join(&b'\n');

    let (mut a, mut b) = (Outputs::default(), Outputs::default());
    replay(&common::reference(), &shuffled[..], &mut a).unwrap();
    replay(&common::reference(), &ordered[..], &mut b).unwrap();
    assert!(!a.anomalies.is_empty() && !a.aggregates.is_empty());
    assert!(a.dead_letters.is_empty());
    assert_eq!(a, b);
}
