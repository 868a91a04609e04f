//! sensorpipe operator: the control plane. Reconciles SensorPipeline resources into Kafka topics, worker
//! Deployments and status. The CRD embeds the worker's processing model ([`sensorpipe_worker::model`]).

pub use sensorpipe_worker::model;
