//! The sensors and their episodes: who is where, the normal daily cycle, and what each episode does to it.

use std::f64::consts::TAU;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::truth::{Episode, EpisodeKind};
use super::{MINUTE, SimConfig, SimError};

const DAY: f64 = 86_400_000.0;
/// Each sensor's time is cut into slots holding at most one episode, so episodes never overlap.
const SLOT: i64 = 180 * MINUTE;
/// No malformed or late records this close to an episode, so the rules see every reading that matters.
const MARGIN: i64 = 10 * MINUTE;

#[derive(Clone, Debug)]
pub(super) struct Sensor {
    pub(super) id: String,
    pub(super) zone: String,
    pub(super) phase_ms: i64,
    base: f64,
    cycle_phase: f64,
    episode: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Injected {
    kind: EpisodeKind,
    sensor: usize,
    start: i64,
    /// Ramp up, hold, ramp down (ms); `size` is the change in °C (signed).
    up: i64,
    hold: i64,
    down: i64,
    size: f64,
    stuck_value: f64,
}

impl Injected {
    fn end(&self) -> i64 {
        self.start + self.up + self.hold + self.down
    }

    /// 0 outside the episode, 1 at full strength.
    fn envelope(&self, t: i64) -> f64 {
        let s = self.start;
        if t < s || t >= self.end() {
            0.0
        } else if t < s + self.up {
            (t - s) as f64 / self.up as f64
        } else if t < s + self.up + self.hold {
            1.0
        } else {
            1.0 - (t - s - self.up - self.hold) as f64 / self.down as f64
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) sensors: Vec<Sensor>,
    injected: Vec<Injected>,
    interval_ms: i64,
}

fn normal(sensor: &Sensor, t: i64) -> f64 {
    sensor.base + 1.5 * (TAU * t as f64 / DAY + sensor.cycle_phase).sin()
}

pub(super) fn humidity(sensor: &Sensor, t: i64, noise: f64) -> f64 {
    47.0 + 6.0 * (TAU * t as f64 / DAY + sensor.cycle_phase + 3.0).sin() + 0.5 * noise
}

pub(super) fn pressure(sensor: &Sensor, t: i64, noise: f64) -> f64 {
    1013.0 + 3.0 * (TAU * t as f64 / DAY + sensor.cycle_phase + 1.0).sin() + 0.1 * noise
}

impl Plan {
    pub(super) fn new(cfg: &SimConfig, rng: &mut ChaCha8Rng) -> Result<Self, SimError> {
        let per_zone = cfg.sensors.div_ceil(cfg.zones);
        let mut sensors: Vec<Sensor> = (0..cfg.sensors)
            .map(|i| {
                let (zone, room) = (i % cfg.zones + 1, i / cfg.zones + 1);
                let width = if per_zone < 100 { 2 } else { per_zone.to_string().len() };
                Sensor {
                    id: format!("room_{zone}{room:0width$}"),
                    zone: format!("floor-{zone}"),
                    phase_ms: rng.random_range(0..cfg.interval_ms / 1000) * 1000,
                    base: rng.random_range(20.0..22.0),
                    cycle_phase: rng.random_range(0.0..TAU),
                    episode: Vec::new(),
                }
            })
            .collect();

        let slots = (cfg.duration_ms / SLOT).max(0) as usize;
        let mut cells: Vec<(usize, usize)> = (0..cfg.sensors).flat_map(|s| (0..slots).map(move |k| (s, k))).collect();
        cells.shuffle(rng);
        let kinds = [
            (EpisodeKind::Overheat, cfg.overheats),
            (EpisodeKind::SpikeRise, cfg.spike_rises),
            (EpisodeKind::SpikeFall, cfg.spike_falls),
            (EpisodeKind::Drift, cfg.drifts),
            (EpisodeKind::Stuck, cfg.stuck),
            (EpisodeKind::Silence, cfg.silences),
        ];
        let wanted: usize = kinds.iter().map(|(_, n)| n).sum();
        if wanted > cells.len() {
            return Err(SimError::Invalid(format!(
                "{wanted} episodes do not fit: {} sensors × {slots} slots of 3 hours",
                cfg.sensors
            )));
        }
        let mut cells = cells.into_iter();
        let mut injected = Vec::new();
        for (kind, count) in kinds {
            for (sensor, slot) in cells.by_ref().take(count) {
                let start = cfg.start_ms + slot as i64 * SLOT + MARGIN + rng.random_range(0..MARGIN);
                let s = &sensors[sensor];
                let level = normal(s, start);
                let mut e = Injected { kind, sensor, start, up: 0, hold: 0, down: 0, size: 0.0, stuck_value: 0.0 };
                match kind {
                    EpisodeKind::Overheat => {
                        e.up = 10 * MINUTE;
                        e.hold = rng.random_range(15..=30) * MINUTE;
                        e.down = 10 * MINUTE;
                        e.size = rng.random_range(32.0..36.0) - level;
                    }
                    EpisodeKind::SpikeRise => {
                        e.hold = 10 * MINUTE;
                        e.down = 15 * MINUTE;
                        e.size = rng.random_range(12.0..14.0_f64).max(33.0 - level);
                    }
                    EpisodeKind::SpikeFall => {
                        e.hold = 10 * MINUTE;
                        e.down = 15 * MINUTE;
                        e.size = -rng.random_range(12.0..15.0);
                    }
                    EpisodeKind::Drift => {
                        e.up = 70 * MINUTE;
                        e.hold = 10 * MINUTE;
                        e.down = 70 * MINUTE;
                        e.size = -rng.random_range(11.0..13.0);
                    }
                    EpisodeKind::Stuck => {
                        e.hold = 60 * MINUTE;
                        e.stuck_value = level;
                    }
                    EpisodeKind::Silence => e.hold = rng.random_range(10..=20) * MINUTE,
                }
                sensors[sensor].episode.push(injected.len());
                injected.push(e);
            }
        }
        Ok(Self { sensors, injected, interval_ms: cfg.interval_ms })
    }

    /// The temperature reading at `t`, or `None` while the sensor is silent.
    pub(super) fn temperature(&self, sensor: &Sensor, t: i64, noise: f64) -> Option<f64> {
        let mut value = normal(sensor, t) + 0.2 * noise;
        for e in sensor.episode.iter().map(|&i| &self.injected[i]) {
            if t < e.start || t >= e.end() {
                continue;
            }
            match e.kind {
                EpisodeKind::Silence => return None,
                EpisodeKind::Stuck => value = e.stuck_value,
                _ => value += e.size * e.envelope(t),
            }
        }
        Some(value)
    }

    /// Whether `t` is far enough from every episode of `sensor` to drop or damage the reading harmlessly.
    pub(super) fn is_quiet(&self, sensor: &Sensor, t: i64) -> bool {
        sensor.episode.iter().map(|&i| &self.injected[i]).all(|e| t < e.start - MARGIN || t >= e.end() + MARGIN)
    }

    pub(super) fn episodes(&self, cfg: &SimConfig) -> Vec<Episode> {
        let mut out: Vec<Episode> = self
            .injected
            .iter()
            .map(|e| {
                let s = &self.sensors[e.sensor];
                Episode {
                    kind: e.kind,
                    sensor: s.id.clone(),
                    zone: s.zone.clone(),
                    start: e.start - self.interval_ms,
                    end: (e.end() + self.interval_ms).min(cfg.start_ms + cfg.duration_ms),
                    expect: e.kind.expected().to_vec(),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.start, &a.sensor).cmp(&(b.start, &b.sensor)));
        out
    }
}
