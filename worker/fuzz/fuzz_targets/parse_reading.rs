//! Fuzzes the reading parser with every timestamp unit: it must never panic, and whatever it accepts must be a
//! plausible reading (finite values, an event time in range, a non-empty sensor id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorpipe_worker::model::{FieldMapping, TimestampUnit};
use sensorpipe_worker::parse::{MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, ReadingParser};

fuzz_target!(|data: &[u8]| {
    for unit in [TimestampUnit::EpochSeconds, TimestampUnit::EpochMillis, TimestampUnit::Rfc3339] {
        let parser = ReadingParser::new(&FieldMapping {
            sensor_id: "sensor_id".into(),
            timestamp: "timestamp".into(),
            timestamp_unit: unit,
            metrics: vec!["temperature".into(), "humidity".into()],
            zone: Some("zone".into()),
            sensor_zones: Default::default(),
            labels: vec!["floor".into()],
        });
        if let Ok(r) = parser.parse(data) {
            assert!(!r.sensor.is_empty());
            assert!((MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&r.ts_ms));
            assert!(r.values.iter().flatten().all(|v| v.is_finite()));
            assert!(r.values.iter().any(Option::is_some));
        }
    }
});
