//! Why a record went to the dead-letter output: a bounded set, used as a Kafka header, a JSON field and a metric
//! label.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The value is not valid JSON (or not UTF-8).
    MalformedJson,
    /// The sensor id or the timestamp is absent or null, or none of the configured metrics is present.
    MissingField,
    /// A field has the wrong JSON type (a metric given as a string, a record that is not an object, ...).
    WrongType,
    /// A metric is NaN or infinite (written as `NaN`/`Infinity`, as Python's json module does, or out of range).
    NonFinite,
    /// The event time is before 2000-01-01 or from 2100 on: an unset or broken device clock.
    TimestampOutOfRange,
    /// The event time is older than the partition watermark minus the allowed lateness.
    Late,
    /// The event time is more than `eventTime.maxClockSkew` ahead of the worker's clock: a device clock set wrong.
    TimestampInFuture,
    /// The dead letter (the original record plus its headers) would exceed the largest record the producer may
    /// send: a prefix is sent instead, with the original size, its xxh3 and the first reason in headers. Set by
    /// the Kafka runtime, never by the engine.
    TooLarge,
}

impl Reason {
    /// Every reason, in declaration order, so `reason as usize` indexes arrays laid out like this one.
    pub const ALL: [Reason; 8] = [
        Self::MalformedJson,
        Self::MissingField,
        Self::WrongType,
        Self::NonFinite,
        Self::TimestampOutOfRange,
        Self::Late,
        Self::TimestampInFuture,
        Self::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::NonFinite => "non_finite",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::Late => "late",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }
}
