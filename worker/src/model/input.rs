//! How a reading is read from a record: the `format` and field mapping of `spec.input`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest number of metrics one pipeline may read; readings keep their values inline, so this bounds memory.
pub const MAX_METRICS: usize = 8;
/// The largest number of label fields (besides the zone) one pipeline may read.
pub const MAX_LABELS: usize = 4;
/// The longest field name (a JSON member name) a mapping, rule or aggregation may refer to.
pub const MAX_FIELD_NAME: usize = 253;

/// Encoding and field mapping of the input records.
// No `deny_unknown_fields`: the CRD flattens this into `spec.input` next to the topic settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputFormat {
    /// Encoding of the record value. Only `json` (one JSON object per record) is supported today.
    #[serde(default)]
    pub format: Format,
    /// Which fields of a record hold the sensor id, the event time, the metrics, the zone and the labels.
    pub fields: FieldMapping,
}

/// Encoding of the record value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// One JSON object per record, for example `{"sensor_id":"room_101","temperature":25.3,"timestamp":1673018400}`.
    #[default]
    Json,
}

/// Names of the top-level JSON fields of a reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldMapping {
    /// Field holding the sensor id (a string or an integer). Required in every reading.
    #[serde(default = "default_sensor_id")]
    #[schemars(length(min = 1, max = MAX_FIELD_NAME))]
    pub sensor_id: String,
    /// Field holding the event time of the reading. Required in every reading.
    #[serde(default = "default_timestamp")]
    #[schemars(length(min = 1, max = MAX_FIELD_NAME))]
    pub timestamp: String,
    /// How the event time is written: `epochSeconds` (integer or fractional), `epochMillis` (integer) or
    /// `rfc3339` (a string such as `2023-01-06T15:20:00Z`).
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// Numeric fields to read as metrics, for example `[temperature, humidity]`. Rules and aggregations refer to
    /// these names. A reading must carry at least one of them; a missing or null metric is simply absent. At most
    /// 8.
    #[schemars(length(min = 1, max = MAX_METRICS), inner(length(min = 1, max = MAX_FIELD_NAME)))]
    pub metrics: Vec<String>,
    /// Field holding the zone (room group, floor, wing) of the sensor, if readings carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_FIELD_NAME))]
    pub zone: Option<String>,
    /// Zone of each sensor id, for readings that do not carry a zone field (a small sensor registry).
    /// A zone in the reading wins over this map.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensor_zones: BTreeMap<String, String>,
    /// Further string fields to read as labels (for example `building`, `floor`); aggregations can group by them.
    /// At most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LABELS), inner(length(min = 1, max = MAX_FIELD_NAME)))]
    pub labels: Vec<String>,
}

fn default_sensor_id() -> String {
    "sensor_id".to_owned()
}

fn default_timestamp() -> String {
    "timestamp".to_owned()
}

/// Encoding of the event time field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimestampUnit {
    /// Seconds since the Unix epoch, integer or fractional.
    #[default]
    EpochSeconds,
    /// Milliseconds since the Unix epoch, integer.
    EpochMillis,
    /// An RFC 3339 date-time string with offset, for example `2023-01-06T15:20:00.250Z`.
    Rfc3339,
}
