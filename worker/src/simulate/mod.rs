//! Synthetic smart-building sensors: a daily temperature cycle with noise per sensor, plus injected episodes
//! (overheating, spikes, slow drifts, stuck and silent sensors), out-of-order, late and malformed records. The
//! same seed gives the same bytes, and [`GroundTruth`] says what was injected. Episode sizes fit the reference
//! rules of `examples/smart-building.yaml` (above 30 °C, more than 10 °C within 5 minutes, silence after minutes).

mod scenario;
mod truth;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

pub use truth::{Episode, EpisodeKind, GroundTruth};

use crate::reason::Reason;
use scenario::Plan;

const MINUTE: i64 = 60_000;

/// What to simulate. Defaults: 100 sensors in 5 zones for one day from 2023-01-07, a reading every 10 s.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub sensors: usize,
    pub zones: usize,
    pub start_ms: i64,
    pub duration_ms: i64,
    /// Time between two readings of one sensor; whole seconds (timestamps are epoch seconds).
    pub interval_ms: i64,
    pub seed: u64,
    pub overheats: usize,
    pub spike_rises: usize,
    pub spike_falls: usize,
    pub drifts: usize,
    pub stuck: usize,
    pub silences: usize,
    /// Fraction of records delivered late but within `max_delay_ms` (at most the pipeline's out-of-orderness).
    pub out_of_order: f64,
    pub max_delay_ms: i64,
    /// Fraction of records delivered after the pipeline's out-of-orderness plus allowed lateness.
    pub late: f64,
    /// Fraction of records replaced by a malformed one (each dead-letter reason in turn).
    pub malformed: f64,
    /// The pipeline's event-time settings, to place late records beyond them and compute the truth.
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            sensors: 100,
            zones: 5,
            start_ms: 1_673_049_600_000,
            duration_ms: 24 * 60 * MINUTE,
            interval_ms: 10_000,
            seed: 42,
            overheats: 6,
            spike_rises: 4,
            spike_falls: 4,
            drifts: 4,
            stuck: 4,
            silences: 6,
            out_of_order: 0.05,
            max_delay_ms: 5_000,
            late: 0.001,
            malformed: 0.001,
            out_of_orderness_ms: 10_000,
            allowed_lateness_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Serialize)]
struct Record<'a> {
    sensor_id: &'a str,
    timestamp: i64,
    temperature: f64,
    humidity: f64,
    pressure: f64,
    zone: &'a str,
    status: &'static str,
}

/// One line waiting for its arrival time.
struct InFlight {
    arrival: i64,
    seq: u64,
    /// Event time if the engine will see a valid reading, `None` for a malformed line.
    ts: Option<i64>,
    line: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.arrival, self.seq) == (o.arrival, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.arrival, self.seq).cmp(&(o.arrival, o.seq))
    }
}

/// Generates the records in delivery order, calling `emit` with each JSON line (no newline), and returns what
/// was injected.
pub fn generate(cfg: &SimConfig, mut emit: impl FnMut(&[u8]) -> std::io::Result<()>) -> Result<GroundTruth, SimError> {
    validate(cfg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let plan = Plan::new(cfg, &mut rng)?;
    let mut truth = GroundTruth { episodes: plan.episodes(cfg), ..GroundTruth::default() };
    let late_delay = cfg.out_of_orderness_ms + cfg.allowed_lateness_ms + 3 * cfg.interval_ms;

    let mut heap: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut max_ts = i64::MIN;
    let mut malformed_turn = 0usize;
    let end = cfg.start_ms + cfg.duration_ms;
    let mut tick = cfg.start_ms;
    while tick < end {
        for sensor in &plan.sensors {
            let ts = tick + sensor.phase_ms;
            if ts >= end {
                continue;
            }
            // Draw the same amount of randomness for every slot, so one choice never shifts the others.
            let noise: [f64; 3] =
                [rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0)];
            let (roll_order, roll_late, roll_bad, delay_frac) =
                (rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>(), rng.random::<f64>());
            let Some(temperature) = plan.temperature(sensor, ts, noise[0]) else {
                continue;
            };
            let quiet = plan.is_quiet(sensor, ts);
            let record = Record {
                sensor_id: &sensor.id,
                timestamp: ts / 1000,
                temperature: round2(temperature),
                humidity: round2(scenario::humidity(sensor, ts, noise[1])),
                pressure: round2(scenario::pressure(sensor, ts, noise[2])),
                zone: &sensor.zone,
                status: "ok",
            };
            let (mut line, mut valid_ts, mut arrival) =
                (serde_json::to_vec(&record).map_err(std::io::Error::other)?, Some(ts), ts);
            if quiet && roll_bad < cfg.malformed {
                let reason = MALFORMED[malformed_turn % MALFORMED.len()];
                malformed_turn += 1;
                line = malformed(&record, reason);
                valid_ts = None;
                *truth.dead_letters.entry(reason.as_str().to_owned()).or_default() += 1;
            } else if quiet && roll_late < cfg.late {
                arrival = ts + late_delay;
            } else if roll_order < cfg.out_of_order {
                arrival = ts + 1 + (delay_frac * (cfg.max_delay_ms - 1) as f64) as i64;
                truth.out_of_order += 1;
            }
            seq += 1;
            heap.push(Reverse(InFlight { arrival, seq, ts: valid_ts, line }));
        }
        tick += cfg.interval_ms;
        // Everything generated later has event time, hence arrival, at or after `tick`.
        while heap.peek().is_some_and(|Reverse(f)| f.arrival < tick) {
            if let Some(Reverse(f)) = heap.pop() {
                deliver(cfg, &f, &mut max_ts, &mut truth);
                emit(&f.line)?;
            }
        }
    }
    while let Some(Reverse(f)) = heap.pop() {
        deliver(cfg, &f, &mut max_ts, &mut truth);
        emit(&f.line)?;
    }
    Ok(truth)
}

/// Follows the partition watermark the way the engine does, to know which records will be too late.
fn deliver(cfg: &SimConfig, f: &InFlight, max_ts: &mut i64, truth: &mut GroundTruth) {
    truth.records += 1;
    let Some(ts) = f.ts else { return };
    if *max_ts != i64::MIN && ts < *max_ts - cfg.out_of_orderness_ms - cfg.allowed_lateness_ms {
        *truth.dead_letters.entry(Reason::Late.as_str().to_owned()).or_default() += 1;
        return;
    }
    *max_ts = (*max_ts).max(ts);
}

const MALFORMED: [Reason; 5] =
    [Reason::MalformedJson, Reason::MissingField, Reason::WrongType, Reason::NonFinite, Reason::TimestampOutOfRange];

fn malformed(r: &Record<'_>, reason: Reason) -> Vec<u8> {
    let text = match reason {
        Reason::MalformedJson => {
            format!(r#"{{"sensor_id":"{}","timestamp":{},"temperature":{}"#, r.sensor_id, r.timestamp, r.temperature)
        }
        Reason::MissingField => format!(r#"{{"sensor_id":"{}","temperature":{}}}"#, r.sensor_id, r.temperature),
        Reason::WrongType => {
            format!(
                r#"{{"sensor_id":"{}","timestamp":{},"temperature":"{}"}}"#,
                r.sensor_id, r.timestamp, r.temperature
            )
        }
        Reason::NonFinite => {
            format!(r#"{{"sensor_id":"{}","timestamp":{},"temperature":NaN}}"#, r.sensor_id, r.timestamp)
        }
        // Not generated: `late` comes from arrival order, `timestamp_in_future` from the reader's clock, `too_large`
        // from the runtime's producer limit.
        Reason::TimestampOutOfRange | Reason::Late | Reason::TimestampInFuture | Reason::TooLarge => {
            format!(r#"{{"sensor_id":"{}","timestamp":0,"temperature":{}}}"#, r.sensor_id, r.temperature)
        }
    };
    text.into_bytes()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn validate(cfg: &SimConfig) -> Result<(), SimError> {
    let bad = |m: &str| Err(SimError::Invalid(m.to_owned()));
    if cfg.sensors == 0 || cfg.zones == 0 {
        return bad("need at least one sensor and one zone");
    }
    if cfg.interval_ms < 1000 || cfg.interval_ms % 1000 != 0 {
        return bad("the interval must be whole seconds");
    }
    if cfg.duration_ms <= 0 {
        return bad("the duration must be positive");
    }
    if cfg.max_delay_ms < 1 || cfg.max_delay_ms > cfg.out_of_orderness_ms {
        return bad("the maximum delay must be between 1ms and the pipeline's out-of-orderness");
    }
    for (name, f) in [("out-of-order", cfg.out_of_order), ("late", cfg.late), ("malformed", cfg.malformed)] {
        if !(0.0..=1.0).contains(&f) {
            return Err(SimError::Invalid(format!("the {name} fraction must be between 0 and 1")));
        }
    }
    Ok(())
}
