//! Turning record bytes into a reading, without allocating on the common path.
//!
//! The field names are configuration, so there is no derived struct: a `DeserializeSeed` walks the JSON object
//! once, keeps the configured fields (borrowed from the input where JSON escapes allow) and skips the rest. Every
//! failure maps to a dead-letter [`Reason`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::model::{FieldMapping, MAX_LABELS, MAX_METRICS, TimestampUnit};
use crate::reason::Reason;

/// Earliest accepted event time: 2000-01-01T00:00:00Z. Earlier readings come from devices with unset clocks.
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// First rejected event time: 2100-01-01T00:00:00Z.
pub const MAX_EVENT_TIME_MS: i64 = 4_102_444_800_000;

/// A reading as it came in. `values[i]` is `None` when metric `i` is absent or null.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedReading<'a> {
    pub sensor: Cow<'a, str>,
    pub ts_ms: i64,
    pub values: [Option<f64>; MAX_METRICS],
    pub zone: Option<Cow<'a, str>>,
    pub labels: [Option<Cow<'a, str>>; MAX_LABELS],
}

/// Why a record could not be read, with a human detail (never used as a metric label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub reason: Reason,
    pub detail: String,
}

impl ParseError {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Sensor,
    Timestamp,
    Metric(usize),
    Zone,
    Label(usize),
}

/// Reads readings laid out as one pipeline's field mapping says.
#[derive(Clone, Debug)]
pub struct ReadingParser {
    slots: Vec<(String, Slot)>,
    metric_names: Vec<String>,
    unit: TimestampUnit,
    sensor_field: String,
    timestamp_field: String,
    zone_field: String,
    label_fields: Vec<String>,
}

/// A JSON value, kept only as far as classifying it needs.
enum Raw<'a> {
    Null,
    Bool,
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Composite,
}

impl Raw<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool => "a boolean",
            Raw::Int(_) | Raw::UInt(_) | Raw::Float(_) => "a number",
            Raw::Str(_) => "a string",
            Raw::Composite => "an object or array",
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Composite)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Composite)
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// A metric's JSON value, classified as it is read (no intermediate copy of the value).
#[derive(Clone, Copy)]
enum Metric {
    Number(f64),
    Null,
    /// A string such as "NaN" or "Infinity".
    NonFiniteWord,
    Wrong(&'static str),
}

struct MetricSeed;

impl<'de> DeserializeSeed<'de> for MetricSeed {
    type Value = Metric;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Metric, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetricSeed {
    type Value = Metric;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E>(self, v: f64) -> Result<Metric, E> {
        Ok(if v.is_finite() { Metric::Number(v) } else { Metric::NonFiniteWord })
    }
    fn visit_i64<E>(self, v: i64) -> Result<Metric, E> {
        Ok(Metric::Number(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Metric, E> {
        Ok(Metric::Number(v as f64))
    }
    fn visit_unit<E>(self) -> Result<Metric, E> {
        Ok(Metric::Null)
    }
    fn visit_none<E>(self) -> Result<Metric, E> {
        Ok(Metric::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Metric, E> {
        Ok(Metric::Wrong("a boolean"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Metric, E> {
        Ok(if is_non_finite_word(v) { Metric::NonFiniteWord } else { Metric::Wrong("a string") })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Metric, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Metric::Wrong("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metric, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Metric::Wrong("an object"))
    }
}

/// The configured fields of one record, raw.
struct Collected<'a> {
    sensor: Option<Raw<'a>>,
    timestamp: Option<Raw<'a>>,
    metrics: [Option<Metric>; MAX_METRICS],
    zone: Option<Raw<'a>>,
    labels: [Option<Raw<'a>>; MAX_LABELS],
}

/// Walks the top level, filling `out` in place (moving the collected fields through serde's results cost a
/// tenth of the parse in copies). Its value: `None` for an object, else what the record is instead.
struct ObjectSeed<'p, 'c, 'de> {
    parser: &'p ReadingParser,
    out: &'c mut Collected<'de>,
}

/// What a record that is not a JSON object is.
type NotObject = Option<&'static str>;

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = NotObject;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<NotObject, D::Error> {
        d.deserialize_any(self)
    }
}

/// Object keys as raw bytes: matching against the configured names needs no UTF-8 validation, which would
/// otherwise cost as much as the rest of the key handling.
struct Key<'a>(Cow<'a, [u8]>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        d.deserialize_bytes(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = NotObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NotObject, A::Error> {
        let c = self.out;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.parser.slot(&key.0) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(Slot::Metric(i)) => c.metrics[i] = Some(map.next_value_seed(MetricSeed)?),
                Some(slot) => {
                    let raw = map.next_value_seed(RawSeed)?;
                    let target = match slot {
                        Slot::Sensor => &mut c.sensor,
                        Slot::Timestamp => &mut c.timestamp,
                        Slot::Zone => &mut c.zone,
                        Slot::Label(i) => &mut c.labels[i],
                        Slot::Metric(_) => continue,
                    };
                    *target = Some(raw);
                }
            }
        }
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NotObject, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some("an array"))
    }
    fn visit_str<E>(self, _: &str) -> Result<NotObject, E> {
        Ok(Some("a string"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<NotObject, E> {
        Ok(Some("a number"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<NotObject, E> {
        Ok(Some("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<NotObject, E> {
        Ok(Some("a number"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<NotObject, E> {
        Ok(Some("a boolean"))
    }
    fn visit_unit<E>(self) -> Result<NotObject, E> {
        Ok(Some("null"))
    }
}

impl ReadingParser {
    pub fn new(fields: &FieldMapping) -> Self {
        let mut slots = vec![(fields.sensor_id.clone(), Slot::Sensor), (fields.timestamp.clone(), Slot::Timestamp)];
        slots.extend(fields.metrics.iter().enumerate().map(|(i, m)| (m.clone(), Slot::Metric(i))));
        slots.extend(fields.zone.iter().map(|z| (z.clone(), Slot::Zone)));
        slots.extend(fields.labels.iter().enumerate().map(|(i, l)| (l.clone(), Slot::Label(i))));
        Self {
            slots,
            metric_names: fields.metrics.clone(),
            unit: fields.timestamp_unit,
            sensor_field: fields.sensor_id.clone(),
            timestamp_field: fields.timestamp.clone(),
            zone_field: fields.zone.clone().unwrap_or_default(),
            label_fields: fields.labels.clone(),
        }
    }

    fn slot(&self, key: &[u8]) -> Option<Slot> {
        // A handful of names: a linear scan with a length pre-check beats hashing.
        self.slots.iter().find(|(name, _)| name.len() == key.len() && name.as_bytes() == key).map(|(_, s)| *s)
    }

    /// Parses one record value.
    pub fn parse<'a>(&self, payload: &'a [u8]) -> Result<ParsedReading<'a>, ParseError> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let mut c = Collected {
            sensor: None,
            timestamp: None,
            metrics: Default::default(),
            zone: None,
            labels: Default::default(),
        };
        let not_object = ObjectSeed { parser: self, out: &mut c }
            .deserialize(&mut de)
            .and_then(|top| de.end().map(|()| top))
            .map_err(|e| classify_json_error(payload, &e))?;
        if let Some(what) = not_object {
            return Err(ParseError::new(Reason::WrongType, format!("record is {what}, expected a JSON object")));
        }
        let Collected { sensor, timestamp, metrics, zone, labels } = c;

        let sensor = match text_field(sensor, &self.sensor_field)? {
            None => {
                return Err(ParseError::new(
                    Reason::MissingField,
                    format!("no sensor id field {:?}", self.sensor_field),
                ));
            }
            Some(s) if s.is_empty() => {
                return Err(ParseError::new(
                    Reason::MissingField,
                    format!("sensor id field {:?} is empty", self.sensor_field),
                ));
            }
            Some(s) => s,
        };

        let ts_ms = match timestamp {
            None | Some(Raw::Null) => {
                return Err(ParseError::new(
                    Reason::MissingField,
                    format!("no timestamp field {:?}", self.timestamp_field),
                ));
            }
            Some(raw) => self.event_time(raw)?,
        };
        if !(MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ts_ms) {
            return Err(ParseError::new(
                Reason::TimestampOutOfRange,
                format!("event time {ts_ms} ms is outside 2000-01-01..2100-01-01"),
            ));
        }

        let mut values = [None; MAX_METRICS];
        for (i, metric) in metrics.into_iter().enumerate() {
            let name = self.metric_names.get(i).map_or("", String::as_str);
            values[i] = match metric {
                None | Some(Metric::Null) => None,
                Some(Metric::Number(v)) => Some(v),
                Some(Metric::NonFiniteWord) => {
                    return Err(ParseError::new(Reason::NonFinite, format!("metric {name:?} is not a finite number")));
                }
                Some(Metric::Wrong(what)) => {
                    return Err(ParseError::new(
                        Reason::WrongType,
                        format!("metric {name:?} is {what}, expected a number"),
                    ));
                }
            };
        }
        if values.iter().all(Option::is_none) {
            return Err(ParseError::new(
                Reason::MissingField,
                format!("none of the metrics {:?} is present", self.metric_names),
            ));
        }

        let zone = text_field(zone, &self.zone_field)?;
        let mut out_labels: [Option<Cow<'a, str>>; MAX_LABELS] = Default::default();
        for ((out, raw), field) in out_labels.iter_mut().zip(labels).zip(&self.label_fields) {
            *out = text_field(raw, field)?;
        }
        Ok(ParsedReading { sensor, ts_ms, values, zone, labels: out_labels })
    }

    fn event_time(&self, raw: Raw<'_>) -> Result<i64, ParseError> {
        let field = &self.timestamp_field;
        let out_of_range =
            || ParseError::new(Reason::TimestampOutOfRange, format!("timestamp {field:?} is out of range"));
        match (self.unit, raw) {
            (TimestampUnit::EpochSeconds, Raw::Int(s)) => s.checked_mul(1000).ok_or_else(out_of_range),
            (TimestampUnit::EpochSeconds, Raw::UInt(s)) => {
                i64::try_from(s).ok().and_then(|s| s.checked_mul(1000)).ok_or_else(out_of_range)
            }
            (TimestampUnit::EpochSeconds, Raw::Float(s)) => float_ms(s * 1000.0).ok_or_else(out_of_range),
            (TimestampUnit::EpochMillis, Raw::Int(ms)) => Ok(ms),
            (TimestampUnit::EpochMillis, Raw::UInt(ms)) => i64::try_from(ms).map_err(|_| out_of_range()),
            (TimestampUnit::EpochMillis, Raw::Float(ms)) => float_ms(ms).ok_or_else(out_of_range),
            (TimestampUnit::Rfc3339, Raw::Str(s)) => s
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|e| ParseError::new(Reason::WrongType, format!("timestamp {field:?} is not RFC 3339: {e}"))),
            (unit, other) => Err(ParseError::new(
                Reason::WrongType,
                format!(
                    "timestamp {field:?} is {}, expected {}",
                    other.type_name(),
                    match unit {
                        TimestampUnit::Rfc3339 => "an RFC 3339 string",
                        _ => "a number",
                    }
                ),
            )),
        }
    }
}

fn float_ms(ms: f64) -> Option<i64> {
    // Beyond ±2^62 ms the reading is out of range anyway; the bound keeps the cast exact.
    (ms.is_finite() && ms.abs() < 4.6e18).then(|| ms.round() as i64)
}

/// A field holding text: a string, or an integer written as one (sensor ids like 42 are common); null is absent.
fn text_field<'a>(raw: Option<Raw<'a>>, field: &str) -> Result<Option<Cow<'a, str>>, ParseError> {
    match raw {
        None | Some(Raw::Null) => Ok(None),
        Some(Raw::Str(s)) => Ok(Some(s)),
        Some(Raw::Int(i)) => Ok(Some(Cow::Owned(i.to_string()))),
        Some(Raw::UInt(u)) => Ok(Some(Cow::Owned(u.to_string()))),
        Some(other) => Err(ParseError::new(
            Reason::WrongType,
            format!("field {field:?} is {}, expected a string or an integer", other.type_name()),
        )),
    }
}

fn is_non_finite_word(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "nan" | "inf" | "-inf" | "+inf" | "infinity" | "-infinity" | "+infinity"
    )
}

/// Python's `json.dumps` writes `NaN` and `Infinity` bare, and a literal like `1e999` overflows: both are
/// non-finite values rather than random garbage, and worth telling apart for whoever fixes the device.
fn classify_json_error(payload: &[u8], e: &serde_json::Error) -> ParseError {
    let detail = e.to_string();
    if detail.contains("number out of range") || has_bare_non_finite(payload) {
        return ParseError::new(Reason::NonFinite, format!("non-finite number in JSON ({detail})"));
    }
    ParseError::new(Reason::MalformedJson, detail)
}

fn has_bare_non_finite(payload: &[u8]) -> bool {
    [&b"NaN"[..], b"Infinity"].iter().any(|word| {
        payload.windows(word.len()).enumerate().any(|(i, w)| {
            w == *word && {
                let before = payload[..i].iter().rev().find(|b| !b.is_ascii_whitespace() && **b != b'-');
                matches!(before, Some(b':' | b'[' | b','))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(unit: TimestampUnit) -> ReadingParser {
        ReadingParser::new(&FieldMapping {
            sensor_id: "sensor_id".into(),
            timestamp: "timestamp".into(),
            timestamp_unit: unit,
            metrics: vec!["temperature".into(), "humidity".into()],
            zone: Some("zone".into()),
            sensor_zones: Default::default(),
            labels: vec!["floor".into()],
        })
    }

    fn reason_of(payload: &str) -> Reason {
        parser(TimestampUnit::EpochSeconds).parse(payload.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn reads_the_reference_reading() {
        let p = parser(TimestampUnit::EpochSeconds);
        let r = p.parse(br#"{"sensor_id":"room_101","temperature":25.3,"timestamp":1673018400}"#).unwrap();
        assert_eq!(r.sensor, "room_101");
        assert!(matches!(r.sensor, Cow::Borrowed(_)), "no allocation for plain ids");
        assert_eq!(r.ts_ms, 1_673_018_400_000);
        assert_eq!(r.values[0], Some(25.3));
        assert_eq!(r.values[1], None);
        assert_eq!(r.zone, None);
    }

    #[test]
    fn reads_zone_labels_integers_and_extra_fields() {
        let p = parser(TimestampUnit::EpochSeconds);
        let r = p
            .parse(br#"{"sensor_id":42,"timestamp":1673018400.25,"temperature":21,"humidity":40.5,"zone":"east","floor":3,"status":{"ok":true},"x":[1,2]}"#)
            .unwrap();
        assert_eq!(r.sensor, "42");
        assert_eq!(r.ts_ms, 1_673_018_400_250);
        assert_eq!(r.values[..2], [Some(21.0), Some(40.5)]);
        assert_eq!(r.zone.as_deref(), Some("east"));
        assert_eq!(r.labels[0].as_deref(), Some("3"));
    }

    #[test]
    fn reads_escaped_strings() {
        let p = parser(TimestampUnit::EpochSeconds);
        let r = p.parse(br#"{"sensor_id":"room\u005f101","timestamp":1673018400,"temperature":1}"#).unwrap();
        assert_eq!(r.sensor, "room_101");
    }

    #[test]
    fn reads_every_timestamp_unit() {
        let ms = parser(TimestampUnit::EpochMillis)
            .parse(br#"{"sensor_id":"a","timestamp":1673018400123,"temperature":1}"#)
            .unwrap();
        assert_eq!(ms.ts_ms, 1_673_018_400_123);
        let rfc = parser(TimestampUnit::Rfc3339)
            .parse(br#"{"sensor_id":"a","timestamp":"2023-01-06T15:20:00.5+01:00","temperature":1}"#)
            .unwrap();
        assert_eq!(rfc.ts_ms, 1_673_014_800_500);
    }

    #[test]
    fn every_reason_code_is_reachable() {
        assert_eq!(reason_of(r#"{"sensor_id":"a","#), Reason::MalformedJson);
        assert_eq!(reason_of("\u{0}garbage"), Reason::MalformedJson);
        assert_eq!(reason_of(r#"{"sensor_id":"a","temperature":1} trailing"#), Reason::MalformedJson);
        assert_eq!(reason_of(r#"{"timestamp":1673018400,"temperature":1}"#), Reason::MissingField);
        assert_eq!(reason_of(r#"{"sensor_id":"a","temperature":1}"#), Reason::MissingField);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":1673018400}"#), Reason::MissingField);
        assert_eq!(reason_of(r#"{"sensor_id":"","timestamp":1673018400,"temperature":1}"#), Reason::MissingField);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":1673018400,"temperature":"25.3"}"#), Reason::WrongType);
        assert_eq!(reason_of(r#"{"sensor_id":["a"],"timestamp":1673018400,"temperature":1}"#), Reason::WrongType);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":"yesterday","temperature":1}"#), Reason::WrongType);
        assert_eq!(
            reason_of(r#"{"sensor_id":"a","timestamp":1673018400,"temperature":1,"zone":{}}"#),
            Reason::WrongType
        );
        assert_eq!(reason_of(r#"[1,2]"#), Reason::WrongType);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":1673018400,"temperature":NaN}"#), Reason::NonFinite);
        assert_eq!(
            reason_of(r#"{"sensor_id":"a","timestamp":1673018400,"temperature": -Infinity}"#),
            Reason::NonFinite
        );
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":1673018400,"temperature":1e999}"#), Reason::NonFinite);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":1673018400,"temperature":"NaN"}"#), Reason::NonFinite);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":0,"temperature":1}"#), Reason::TimestampOutOfRange);
        assert_eq!(reason_of(r#"{"sensor_id":"a","timestamp":1e300,"temperature":1}"#), Reason::TimestampOutOfRange);
        assert_eq!(
            reason_of(r#"{"sensor_id":"a","timestamp":99999999999999,"temperature":1}"#),
            Reason::TimestampOutOfRange
        );
    }

    #[test]
    fn a_sensor_called_nan_is_not_a_non_finite_value() {
        assert_eq!(reason_of(r#"{"sensor_id":"NaN","timestamp":1673018400,"temperature":1"#), Reason::MalformedJson);
    }

    #[test]
    fn null_metrics_are_absent() {
        let p = parser(TimestampUnit::EpochSeconds);
        let r = p.parse(br#"{"sensor_id":"a","timestamp":1673018400,"temperature":null,"humidity":3}"#).unwrap();
        assert_eq!(r.values[..2], [None, Some(3.0)]);
    }
}
