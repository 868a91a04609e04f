//! What the engine emits: anomalies, aggregates and dead letters. These JSON shapes are the product's output
//! contract (documented in docs/records.md); every anomaly and aggregate carries a deterministic `id`, so a replay
//! or a redelivery is recognisable downstream.

use std::collections::BTreeMap;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Severity;
use crate::reason::Reason;

/// Event times are carried as epoch milliseconds inside the engine and written as RFC 3339 in UTC.
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(ms: i64) -> String {
        jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
    }

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => super::serialize(ms, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| t.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Threshold,
    Spike,
    Silence,
}

impl AnomalyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold",
            Self::Spike => "spike",
            Self::Silence => "silence",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyState {
    Firing,
    Resolved,
}

impl AnomalyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One transition of an anomaly episode: every episode is one `firing` record and, once over, one `resolved`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Anomaly {
    /// `rule:sensor:event_time_ms:state`, the same however often the input is replayed.
    pub id: String,
    pub rule: String,
    pub kind: AnomalyKind,
    pub state: AnomalyState,
    pub severity: Severity,
    pub sensor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Metric the rule watches; absent for silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The reading's value that caused the transition; absent when a silence starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Threshold: the limit. Spike: the delta. Silence: the timeout in seconds.
    pub limit: f64,
    /// Event time of the transition: the reading's time, or last_seen + timeout when a silence starts.
    #[serde(with = "rfc3339_ms")]
    #[schemars(with = "String")]
    pub event_time: i64,
    /// Spike: the earlier reading the change is measured from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_ms::option")]
    #[schemars(with = "Option<String>")]
    pub baseline_time: Option<i64>,
    /// Silence: the last reading's event time before the sensor went quiet.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_ms::option")]
    #[schemars(with = "Option<String>")]
    pub last_seen: Option<i64>,
}

impl Anomaly {
    pub fn make_id(rule: &str, sensor: &str, event_time: i64, state: AnomalyState) -> String {
        format!("{rule}:{sensor}:{event_time}:{}", state.as_str())
    }
}

/// Statistics of one metric over one window and group; only the configured functions are present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

/// The final statistics of one window for one group, emitted once when the window closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Aggregate {
    /// `aggregation:key:window_start_ms`.
    pub id: String,
    pub aggregation: String,
    /// `sensor`, `zone` or a label name.
    pub group_by: String,
    /// The group's value; null for readings without one (no zone, no such label).
    pub key: Option<String>,
    #[serde(with = "rfc3339_ms")]
    #[schemars(with = "String")]
    pub window_start: i64,
    #[serde(with = "rfc3339_ms")]
    #[schemars(with = "String")]
    pub window_end: i64,
    /// Per metric; a metric no reading in the window carried is absent.
    pub stats: BTreeMap<String, MetricStats>,
}

impl Aggregate {
    pub fn make_id(aggregation: &str, key: Option<&str>, window_start: i64) -> String {
        format!("{aggregation}:{}:{window_start}", key.unwrap_or_default())
    }
}

/// A record the engine could not use, with why. The Kafka runtime sends the original bytes as the value and the
/// reason as a header; file outputs write this JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    pub reason: Reason,
    /// Human explanation, for whoever fixes the device or the mapping.
    pub detail: String,
    /// The original record, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original record, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Where the record came from: a line number, or a partition and offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl DeadLetter {
    pub fn new(reason: Reason, detail: String, payload: &[u8]) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(payload) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(payload))),
        };
        Self { reason, detail, payload, payload_base64, source: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_json_shape() {
        let a = Anomaly {
            id: Anomaly::make_id("overheat", "room_101", 1_673_018_400_000, AnomalyState::Firing),
            rule: "overheat".into(),
            kind: AnomalyKind::Threshold,
            state: AnomalyState::Firing,
            severity: Severity::Critical,
            sensor: "room_101".into(),
            zone: Some("floor-1".into()),
            metric: Some("temperature".into()),
            value: Some(31.5),
            limit: 30.0,
            event_time: 1_673_018_400_000,
            baseline: None,
            baseline_time: None,
            last_seen: None,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"id":"overheat:room_101:1673018400000:firing","rule":"overheat","kind":"threshold","state":"firing","severity":"critical","sensor":"room_101","zone":"floor-1","metric":"temperature","value":31.5,"limit":30.0,"event_time":"2023-01-06T15:20:00Z"}"#
        );
        assert_eq!(serde_json::from_str::<Anomaly>(&json).unwrap(), a);
    }

    #[test]
    fn dead_letters_keep_non_utf8_payloads_exactly() {
        let bytes = [0xff, 0x00, b'{'];
        let d = DeadLetter::new(Reason::MalformedJson, "x".into(), &bytes);
        assert!(d.payload.is_none());
        let back: DeadLetter = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(back.payload_base64.unwrap()).unwrap();
        assert_eq!(decoded, bytes);
    }
}
