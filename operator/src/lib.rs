//! sensorpipe operator: the control plane. Reconciles SensorPipeline resources into Kafka topics, worker
//! Deployments and status, as a pipeline: dereference → [`validate`] (pure) → [`build`] (pure) → apply → status.
//! The CRD ([`crd`]) embeds the worker's processing model ([`sensorpipe_worker::model`]).

pub mod autoscale;
pub mod build;
pub mod controller;
pub mod crd;
pub mod health;
pub mod http;
pub mod local;
pub mod metrics;
pub mod topics;
pub mod validate;

pub use sensorpipe_worker::model;
