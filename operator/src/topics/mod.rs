//! The Kafka side of a pipeline: what its topics should look like compared with what the broker has
//! ([`plan`], pure), and the admin client that reads and changes them ([`admin`]).

pub mod admin;
pub mod plan;

pub use admin::{AdminError, KafkaAdmin, Lag, ObservedTopic};
pub use plan::{TopicAction, TopicIssue, plan_topics};
