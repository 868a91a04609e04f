//! sensorpipe worker: the data plane.
//!
//! - [`model`]: the processing model (the `spec.input` format and `spec.processing` of a SensorPipeline).
//! - [`parse`]: record bytes → reading.
//! - [`engine`]: the pure event-time engine, one instance per input partition.
//! - [`records`]: the output records (anomalies, aggregates, dead letters).
//! - [`replay`]: backtest a pipeline over a JSONL file.
//! - [`simulate`]: synthetic smart-building sensors with a ground truth.
//! - [`runtime`]: the engine in a Kafka consumer group (exactly-once or at-least-once), metrics, health.

pub mod engine;
pub mod model;
pub mod parse;
pub mod reason;
pub mod records;
pub mod replay;
pub mod runtime;
pub mod simulate;
