//! Durations in the pipeline spec, written as Kubernetes users write them: `30s`, `5m`, `1h30m`, `500ms`.
//!
//! Parsing is humantime's; the schema carries a pattern so the API server rejects garbage before we see it.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time with millisecond resolution, the engine's unit of event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Self = Self(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// Milliseconds, saturating at `i64::MAX` so arithmetic on event times cannot overflow into negatives.
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Display for Duration {
    /// Compact Go-style text in hours and smaller units, zero parts omitted: `48h`, `1h30m`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            let n = ms / size
                % if size == 3_600_000 {
                    u128::MAX
                } else if size == 1 {
                    1000
                } else {
                    60
                };
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed == "0" {
            return Ok(Self::ZERO);
        }
        humantime::parse_duration(trimmed)
            .map(Self)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like 30s, 5m, 1h30m or 500ms"))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            // A bound for Kubernetes' CEL cost estimate of the rules that parse durations; "1d23h59m59s999ms" is 16.
            "maxLength": 32,
            "pattern": "^(0|([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+)$",
            "description": "A duration such as 30s, 5m, 1h30m or 500ms."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration::from_secs(300));
        assert_eq!("1h30m".parse::<Duration>().unwrap(), Duration::from_secs(5400));
        assert_eq!("500ms".parse::<Duration>().unwrap(), Duration::from_millis(500));
        assert_eq!("0".parse::<Duration>().unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = "five minutes".parse::<Duration>().unwrap_err();
        assert!(err.contains("30s, 5m"), "{err}");
    }

    #[test]
    fn displays_compactly_and_round_trips() {
        for text in ["5m", "1h30m", "500ms", "0s", "48h", "1m0.5s"] {
            let d: Duration = text.parse().unwrap();
            let shown = d.to_string();
            assert_eq!(shown.parse::<Duration>().unwrap(), d, "{text} shown as {shown}");
        }
        assert_eq!("2d".parse::<Duration>().unwrap().to_string(), "48h");
        assert_eq!("1m0.5s".parse::<Duration>().unwrap().to_string(), "1m500ms");
    }
}
