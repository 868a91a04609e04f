//! The built-in autoscaler (pure): consumer lag observed over time → the number of workers, with reasons.
//!
//! Like the Kubernetes HPA, and KEDA's Kafka scaler for the lag-per-worker target:
//! - lag is averaged over `window` so one burst does not scale;
//! - records target: `ceil(avg lag / lagRecordsTarget)` workers (the target is lag per worker);
//!   seconds target: `ceil(current × avg age of the oldest unprocessed record / lagSecondsTarget)`;
//!   the larger wins;
//! - clamped to `[minReplicas, maxReplicas]` and to the input's partition count (more workers would idle);
//! - stabilization: a scale-up takes the smallest recommendation of the last `scaleUpStabilization`, a
//!   scale-down the largest of the last `scaleDownStabilization`, so an oscillating lag does not flap;
//! - scale to zero after `idleFor` without lag; back to one (or more) when lag passes the activation threshold.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::validate::Autoscaling;

/// One observation of the pipeline's lag.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub lag_records: i64,
    /// Age of the oldest unprocessed record, seconds (0 without lag).
    pub lag_seconds: f64,
}

/// What the autoscaler decided, and why (the text of the Event and the Autoscaling condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    /// Bounded CamelCase word: `ScaleUp`, `ScaleDown`, `ScaleToZero`, `Activate`, `Steady`, `Capped`.
    pub reason: &'static str,
    pub message: String,
}

/// Autoscaler memory for one pipeline (kept by the operator between reconciles; lost on restart, which only
/// delays a decision by one window).
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    samples: VecDeque<Sample>,
    recommendations: VecDeque<(Instant, i32)>,
    lag_since: Option<Instant>,
    idle_since: Option<Instant>,
}

impl Autoscaler {
    /// Records `sample` and decides the replica count, given the current one and the input's partition count.
    pub fn decide(&mut self, spec: &Autoscaling, sample: Sample, current: i32, partitions: i32) -> Decision {
        let now = sample.at;
        self.samples.push_back(sample);
        while self.samples.front().is_some_and(|s| now.duration_since(s.at) > spec.window) {
            self.samples.pop_front();
        }
        let n = self.samples.len().max(1) as f64;
        let avg_records = self.samples.iter().map(|s| s.lag_records as f64).sum::<f64>() / n;
        let avg_seconds = self.samples.iter().map(|s| s.lag_seconds).sum::<f64>() / n;
        if sample.lag_records > 0 {
            self.idle_since = None;
            self.lag_since.get_or_insert(now);
        } else {
            self.lag_since = None;
            self.idle_since.get_or_insert(now);
        }

        let cap = spec.max_replicas.min(partitions.max(1));
        let floor = spec.min_replicas.min(cap);
        let by_records = spec.lag_records_target.map(|t| (avg_records / t as f64).ceil() as i32);
        let by_seconds =
            spec.lag_seconds_target.map(|t| (f64::from(current.max(1)) * avg_seconds / t as f64).ceil() as i32);
        let raw = by_records.unwrap_or(0).max(by_seconds.unwrap_or(0));
        let mut wanted = raw.clamp(floor.max(1), cap.max(1));

        // Scale to zero and back.
        if let Some((activation, idle_for)) = spec.scale_to_zero {
            if current == 0 {
                if sample.lag_records < activation {
                    return self.record(
                        now,
                        Decision {
                            replicas: 0,
                            reason: "Steady",
                            message: format!(
                                "no workers; lag {} records is below the activation threshold {activation}",
                                sample.lag_records
                            ),
                        },
                    );
                }
                self.recommendations.clear();
                return self.record(
                    now,
                    Decision {
                        replicas: wanted,
                        reason: "Activate",
                        message: format!(
                            "lag {} records passed the activation threshold {activation}",
                            sample.lag_records
                        ),
                    },
                );
            }
            if self.idle_since.is_some_and(|t| now.duration_since(t) >= idle_for) {
                return self.record(
                    now,
                    Decision {
                        replicas: 0,
                        reason: "ScaleToZero",
                        message: format!("no lag for {}", humantime(idle_for)),
                    },
                );
            }
        }

        // Stabilization over past recommendations (this one included).
        self.recommendations.push_back((now, wanted));
        let keep = spec.scale_up_stabilization.max(spec.scale_down_stabilization);
        while self.recommendations.front().is_some_and(|(t, _)| now.duration_since(*t) > keep) {
            self.recommendations.pop_front();
        }
        let within = |d: Duration| {
            self.recommendations.iter().filter(move |(t, _)| now.duration_since(*t) <= d).map(|(_, r)| *r)
        };
        if wanted > current {
            wanted = within(spec.scale_up_stabilization).min().unwrap_or(wanted).max(current);
        } else if wanted < current {
            wanted = within(spec.scale_down_stabilization).max().unwrap_or(wanted).min(current);
        }

        let targets = describe_targets(spec, avg_records, avg_seconds);
        let (reason, message) = if wanted > current {
            ("ScaleUp", format!("{targets}: {current} → {wanted} workers"))
        } else if wanted < current {
            ("ScaleDown", format!("{targets}: {current} → {wanted} workers"))
        } else if raw > cap && current == cap {
            (
                "Capped",
                format!(
                    "{targets}: would need {raw} workers; capped at {cap} (maxReplicas {} / {partitions} input partitions)",
                    spec.max_replicas
                ),
            )
        } else {
            ("Steady", format!("{targets}: {current} workers"))
        };
        Decision { replicas: wanted, reason, message }
    }

    fn record(&mut self, now: Instant, d: Decision) -> Decision {
        self.recommendations.push_back((now, d.replicas));
        d
    }
}

fn describe_targets(spec: &Autoscaling, avg_records: f64, avg_seconds: f64) -> String {
    let mut parts = Vec::new();
    if let Some(t) = spec.lag_records_target {
        parts.push(format!("average lag {avg_records:.0} records (target {t} per worker)"));
    }
    if let Some(t) = spec.lag_seconds_target {
        parts.push(format!("average lag {avg_seconds:.1} s (target {t} s)"));
    }
    parts.join(", ")
}

fn humantime(d: Duration) -> String {
    sensorpipe_worker::model::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Autoscaling {
        Autoscaling {
            min_replicas: 1,
            max_replicas: 8,
            lag_records_target: Some(1000),
            lag_seconds_target: None,
            window: Duration::from_secs(60),
            scale_up_stabilization: Duration::ZERO,
            scale_down_stabilization: Duration::from_secs(300),
            scale_to_zero: None,
        }
    }

    /// Feeds `lags` one every 15 s; returns the replica count after each, applying each decision.
    fn run(spec: &Autoscaling, lags: &[i64], partitions: i32, start: i32) -> Vec<i32> {
        let t0 = Instant::now();
        let mut a = Autoscaler::default();
        let mut current = start;
        lags.iter()
            .enumerate()
            .map(|(i, &lag)| {
                let at = t0 + Duration::from_secs(15 * i as u64);
                current =
                    a.decide(spec, Sample { at, lag_records: lag, lag_seconds: 0.0 }, current, partitions).replicas;
                current
            })
            .collect()
    }

    #[test]
    fn scales_up_with_lag_averaged_over_the_window() {
        // 60 s window = 5 samples at 15 s: one 10k burst averages to 2k → 2 workers, not 10.
        let got = run(&spec(), &[0, 0, 0, 0, 10_000], 10, 1);
        assert_eq!(got.last(), Some(&2));
        let got = run(&spec(), &[6000; 6], 10, 1);
        assert_eq!(got.last(), Some(&6));
    }

    #[test]
    fn never_above_partitions_or_max() {
        assert_eq!(run(&spec(), &[1_000_000; 5], 3, 1).last(), Some(&3));
        assert_eq!(run(&spec(), &[1_000_000; 5], 100, 1).last(), Some(&8));
    }

    #[test]
    fn capped_decision_says_why() {
        let mut a = Autoscaler::default();
        let d = a.decide(&spec(), Sample { at: Instant::now(), lag_records: 50_000, lag_seconds: 0.0 }, 3, 3);
        assert_eq!((d.replicas, d.reason), (3, "Capped"));
        assert!(d.message.contains("3 input partitions"), "{}", d.message);
    }

    #[test]
    fn oscillating_lag_does_not_flap() {
        // Lag alternating between high and low every sample: the count rises once and holds.
        let lags: Vec<i64> = (0..40).map(|i| if i % 2 == 0 { 4000 } else { 0 }).collect();
        let got = run(&spec(), &lags, 10, 1);
        let changes = got.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 2, "flapped: {got:?}");
    }

    #[test]
    fn scales_down_only_after_the_stabilization_window() {
        // 2 minutes of lag (4 workers), then none: down only after 5 minutes of low recommendations.
        let mut lags = vec![4000; 8];
        lags.extend(vec![0; 30]);
        let got = run(&spec(), &lags, 10, 1);
        let peak = *got.iter().max().unwrap();
        let peak_at = got.iter().position(|&r| r == peak).unwrap();
        let first_down = peak_at + got[peak_at..].iter().position(|&r| r < peak).unwrap();
        // Lag ends at sample 8; the window (60 s) forgets it by sample 12; 300 s more is 20 samples.
        assert!(first_down >= 8 + 20, "scaled down at sample {first_down}: {got:?}");
        assert_eq!(got.last(), Some(&1));
    }

    #[test]
    fn seconds_target_scales_proportionally() {
        let mut s = spec();
        s.lag_records_target = None;
        s.lag_seconds_target = Some(30);
        let mut a = Autoscaler::default();
        let d = a.decide(&s, Sample { at: Instant::now(), lag_records: 10, lag_seconds: 90.0 }, 2, 10);
        assert_eq!((d.replicas, d.reason), (6, "ScaleUp"));
    }

    #[test]
    fn scales_to_zero_when_idle_and_back_on_activation() {
        let mut s = spec();
        s.min_replicas = 0;
        s.scale_down_stabilization = Duration::ZERO;
        s.scale_to_zero = Some((100, Duration::from_secs(60)));
        let t0 = Instant::now();
        let mut a = Autoscaler::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let d = a.decide(&s, Sample { at: at(0), lag_records: 0, lag_seconds: 0.0 }, 1, 4);
        assert_eq!(d.replicas, 1, "not idle long enough yet");
        let d = a.decide(&s, Sample { at: at(61), lag_records: 0, lag_seconds: 0.0 }, 1, 4);
        assert_eq!((d.replicas, d.reason), (0, "ScaleToZero"));
        let d = a.decide(&s, Sample { at: at(75), lag_records: 50, lag_seconds: 0.0 }, 0, 4);
        assert_eq!((d.replicas, d.reason), (0, "Steady"), "below activation");
        let d = a.decide(&s, Sample { at: at(90), lag_records: 2500, lag_seconds: 0.0 }, 0, 4);
        assert_eq!(d.reason, "Activate");
        assert!(d.replicas >= 1);
    }
}
