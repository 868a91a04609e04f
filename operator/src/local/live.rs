//! What the live page shows, kept from the output topics: per-zone window statistics (final: the workers merge
//! a zone's windows across input partitions), the recent anomaly feed, which episodes are
//! open, and the pipeline's throughput, lag and replicas. Pure: the feed and the stats loop write into it, the web
//! server reads snapshots of it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sensorpipe_worker::records::{Aggregate, Anomaly, AnomalyState, MetricStats};
use serde::Serialize;

/// How many windows per zone the page keeps (60 five-minute windows: the last five simulated hours).
pub const WINDOWS_KEPT: usize = 60;
/// How many anomalies the feed keeps.
pub const ANOMALIES_KEPT: usize = 100;

/// One final window of one group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    pub aggregation: String,
    /// The zone (or label, or sensor) the aggregation groups by; `""` for readings without one.
    pub key: String,
    /// Epoch milliseconds.
    pub window_end: i64,
    pub stats: BTreeMap<String, MetricStats>,
}

/// Throughput, lag and workers, refreshed every second.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Input records processed per second by all workers.
    pub throughput: f64,
    pub lag_records: i64,
    pub lag_seconds: f64,
    pub replicas: u32,
    pub ready_replicas: u32,
    pub records_processed: u64,
}

/// Everything the page shows ([`Live::snapshot`] is what is sent to it).
#[derive(Debug, Default)]
pub struct Live {
    pub pipeline: String,
    pub broker: String,
    pub delivery: String,
    /// The pipeline's metrics in the order its spec lists them (the first is the page's headline).
    pub metrics: Vec<String>,
    windows: BTreeMap<(String, String, i64), Window>,
    pub anomalies: VecDeque<Anomaly>,
    /// `rule/sensor` of episodes firing now.
    firing: BTreeSet<String>,
    pub stats: Stats,
    pub anomalies_total: u64,
    pub aggregates_total: u64,
}

/// What changed, as pushed to open pages.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Update {
    Window(Window),
    Anomaly { anomaly: Anomaly, firing_now: usize },
    Stats(Stats),
}

impl Live {
    pub fn new(pipeline: &str, broker: &str, delivery: &str) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            broker: broker.to_owned(),
            delivery: delivery.to_owned(),
            ..Self::default()
        }
    }

    /// Keeps a final window (the workers merge zone windows across partitions). A window delivered again (the
    /// at-least-once redelivery after a worker restart) replaces itself.
    pub fn add_aggregate(&mut self, a: &Aggregate) -> Window {
        self.aggregates_total += 1;
        let key = a.key.clone().unwrap_or_default();
        let window = Window {
            aggregation: a.aggregation.clone(),
            key: key.clone(),
            window_end: a.window_end,
            stats: a.stats.clone(),
        };
        self.windows.insert((a.aggregation.clone(), key, a.window_end), window.clone());
        self.forget_old_windows(&a.aggregation, &window.key);
        window
    }

    fn forget_old_windows(&mut self, aggregation: &str, key: &str) {
        let ends: Vec<i64> =
            self.windows.keys().filter(|(a, k, _)| a == aggregation && k == key).map(|(_, _, end)| *end).collect();
        for end in ends.iter().take(ends.len().saturating_sub(WINDOWS_KEPT)) {
            self.windows.remove(&(aggregation.to_owned(), key.to_owned(), *end));
        }
    }

    pub fn add_anomaly(&mut self, a: &Anomaly) -> Update {
        self.anomalies_total += 1;
        let episode = format!("{}/{}", a.rule, a.sensor);
        match a.state {
            AnomalyState::Firing => self.firing.insert(episode),
            AnomalyState::Resolved => self.firing.remove(&episode),
        };
        self.anomalies.push_front(a.clone());
        self.anomalies.truncate(ANOMALIES_KEPT);
        Update::Anomaly { anomaly: a.clone(), firing_now: self.firing.len() }
    }

    /// The windows kept, oldest first per group.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.values()
    }

    /// The page's initial state.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "pipeline": self.pipeline,
            "broker": self.broker,
            "delivery": self.delivery,
            "metrics": self.metrics,
            "windows": self.windows().collect::<Vec<_>>(),
            "anomalies": self.anomalies,
            "firingNow": self.firing.len(),
            "stats": self.stats,
            "anomaliesTotal": self.anomalies_total,
            "aggregatesTotal": self.aggregates_total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(zone: &str, end: i64, avg: f64, min: f64, max: f64, count: u64) -> Aggregate {
        let stats = MetricStats { avg: Some(avg), min: Some(min), max: Some(max), count: Some(count), sum: None };
        Aggregate {
            id: String::new(),
            aggregation: "zone-5m".into(),
            group_by: "zone".into(),
            key: Some(zone.into()),
            window_start: end - 300_000,
            window_end: end,
            stats: BTreeMap::from([("temperature".to_owned(), stats)]),
        }
    }

    #[test]
    fn a_window_delivered_again_replaces_itself() {
        let mut live = Live::new("building-a", "embedded", "atLeastOnce");
        live.add_aggregate(&part("floor-1", 300_000, 21.0, 19.0, 26.0, 4));
        let w = live.add_aggregate(&part("floor-1", 300_000, 21.0, 19.0, 26.0, 4));
        let t = &w.stats["temperature"];
        assert_eq!((t.avg, t.min, t.max, t.count), (Some(21.0), Some(19.0), Some(26.0), Some(4)));
        live.add_aggregate(&part("floor-2", 300_000, 18.0, 18.0, 18.0, 1));
        assert_eq!(live.windows().count(), 2);
        assert_eq!(live.aggregates_total, 3);
    }

    #[test]
    fn only_the_latest_windows_of_a_zone_are_kept() {
        let mut live = Live::new("p", "b", "d");
        for i in 0..(WINDOWS_KEPT as i64 + 5) {
            live.add_aggregate(&part("z", (i + 1) * 300_000, 20.0, 20.0, 20.0, 1));
        }
        let ends: Vec<i64> = live.windows().map(|w| w.window_end).collect();
        assert_eq!(ends.len(), WINDOWS_KEPT);
        assert_eq!(ends.first(), Some(&(6 * 300_000)));
    }

    #[test]
    fn episodes_count_as_firing_until_resolved() {
        let json = |state: &str, sensor: &str| {
            serde_json::from_value::<Anomaly>(serde_json::json!({
                "id": "x", "rule": "overheat", "kind": "threshold", "state": state, "severity": "critical",
                "sensor": sensor, "limit": 30.0, "event_time": "2026-01-01T00:00:00Z"
            }))
            .unwrap()
        };
        let mut live = Live::new("p", "b", "d");
        live.add_anomaly(&json("firing", "room_1"));
        live.add_anomaly(&json("firing", "room_2"));
        live.add_anomaly(&json("resolved", "room_1"));
        assert_eq!(live.snapshot()["firingNow"], 1);
        assert_eq!(live.anomalies.front().map(|a| a.state), Some(AnomalyState::Resolved));
        assert_eq!(live.snapshot()["anomalies"].as_array().map(Vec::len), Some(3));
    }
}
