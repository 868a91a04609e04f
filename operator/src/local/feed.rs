//! Reads what the workers write — anomalies and aggregates, committed ones only — into the live state, prints
//! each anomaly to the terminal as it fires or resolves, and pushes every change to open pages.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use sensorpipe_worker::records::{Aggregate, Anomaly, AnomalyKind, AnomalyState};
use tokio::sync::broadcast;

use super::live::{Live, Update};

/// The two output topics the page shows.
#[derive(Clone, Debug)]
pub struct FeedTopics {
    pub anomalies: String,
    pub aggregates: String,
}

/// Consumes both topics from their start (everything this run produced) until `stop`; a blocking loop for a
/// dedicated thread. Records that do not parse are counted and skipped: the workers wrote them, so this only
/// happens with a foreign producer on the topic.
pub fn run(
    properties: &BTreeMap<String, String>,
    topics: &FeedTopics,
    live: &Arc<Mutex<Live>>,
    updates: &broadcast::Sender<Update>,
    stop: &Arc<AtomicBool>,
    print: bool,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    config
        .set("group.id", "sensorpipe-local-feed")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = config.create().context("cannot create the output reader")?;
    let mut assignment = TopicPartitionList::new();
    for topic in [&topics.anomalies, &topics.aggregates] {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read the metadata of {topic}"))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment).context("cannot read the output topics")?;
    let mut skipped = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let Ok(message) = message else { continue };
        let Some(payload) = message.payload() else { continue };
        let mut live = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let update = if message.topic() == topics.anomalies {
            serde_json::from_slice::<Anomaly>(payload).map(|a| {
                if print {
                    print_anomaly(&a);
                }
                live.add_anomaly(&a)
            })
        } else {
            serde_json::from_slice::<Aggregate>(payload).map(|a| Update::Window(live.add_aggregate(&a)))
        };
        drop(live);
        let Ok(update) = update else {
            skipped += 1;
            continue;
        };
        // No page open is fine.
        let _ = updates.send(update);
    }
    if skipped > 0 {
        tracing::warn!(skipped, "output records that are not sensorpipe records were skipped");
    }
    Ok(())
}

/// One line per transition, e.g.
/// `2026-11-23T14:05:00Z  FIRING    critical  overheat  room_101 (floor-1)  temperature 31.2 above 30`.
fn print_anomaly(a: &Anomaly) {
    let state = match a.state {
        AnomalyState::Firing => "FIRING  ",
        AnomalyState::Resolved => "resolved",
    };
    let zone = a.zone.as_deref().map(|z| format!(" ({z})")).unwrap_or_default();
    let line = format!(
        "{}  {state}  {:<8}  {}  {}{zone}  {}\n",
        sensorpipe_worker::records::rfc3339_ms::format(a.event_time),
        a.severity.as_str(),
        a.rule,
        a.sensor,
        describe(a),
    );
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// What the reading did, in the rule's terms.
fn describe(a: &Anomaly) -> String {
    let metric = a.metric.as_deref().unwrap_or_default();
    match (a.kind, a.value, a.baseline) {
        (AnomalyKind::Spike, Some(v), Some(from)) => format!("{metric} {from:.1} → {v:.1} (change over {})", a.limit),
        (AnomalyKind::Spike, Some(v), None) => format!("{metric} {v:.1} (change back under {})", a.limit),
        (AnomalyKind::Threshold, Some(v), _) => format!("{metric} {v:.1} (limit {})", a.limit),
        (AnomalyKind::Silence, _, _) => format!("no reading for {} s", a.limit),
        (_, None, _) => String::new(),
    }
}
