//! librdkafka client settings and contexts shared by the runtime's clients.
//!
//! Order of settings: our defaults, then the user's properties, then what correctness depends on (these cannot be
//! overridden: manual offsets, read_committed, idempotence, the transactional id).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::config::{Delivery, RuntimeConfig};
use super::metrics::Metrics;

fn with_user(mut c: ClientConfig, cfg: &RuntimeConfig) -> ClientConfig {
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    c
}

/// A group consumer (of the input topic, or of the repartition topic in a group of its own).
pub(crate) fn group_consumer(cfg: &RuntimeConfig, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", format!("sensorpipe-{}", cfg.name))
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        // librdkafka pauses fetching for a second once its queue is full by default; that caps throughput.
        .set("fetch.queue.backoff.ms", "1")
        // The limits of prefetched records apply to each partition once its queue is split off (`parallel`),
        // so they are a partition's share of what the one queue for all held before (100 000 records by
        // default, 250 MB of resident memory for four split partitions against 90 MB).
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "25000");
    let mut c = with_user(c, cfg);
    c.set("group.id", group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    c
}

/// A consumer without a group for reading a partition range (state snapshots, replay of input).
/// `committed_only`: read_committed (input, like the group consumer) or read_uncommitted (snapshots: any complete
/// snapshot is valid for its offset, see restore.rs, and the last stable offset of some brokers lags).
pub(crate) fn reader(cfg: &RuntimeConfig, committed_only: bool) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", format!("sensorpipe-{}-restore", cfg.name))
        .set("fetch.queue.backoff.ms", "1")
        // A restore reads to the end of a partition; the default 500 ms fetch wait made each end-of-partition cost
        // half a second, and a restore several of them while its partition's processing stood still.
        .set("fetch.wait.max.ms", "10");
    let mut c = with_user(c, cfg);
    c.set("group.id", format!("{}-restore", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // An offset that retention removed meanwhile resumes at the oldest record, never at the end.
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", if committed_only { "read_committed" } else { "read_uncommitted" });
    c
}

/// An output producer: transactional for one input partition (exactly-once), or idempotent with no delivery
/// timeout (at-least-once: outputs are retried until the broker takes them, never dropped).
pub(crate) fn producer(cfg: &RuntimeConfig, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", format!("sensorpipe-{}", cfg.name))
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "1048576");
    let mut c = with_user(c, cfg);
    c.set("enable.idempotence", "true");
    if cfg.delivery == Delivery::AtLeastOnce {
        // After the user's properties: a delivery timeout would drop outputs whose input offsets then commit.
        c.set("message.timeout.ms", "0");
    }
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    c
}

/// Counts delivery outcomes of one producer and keeps the first output the broker refused since it was last
/// asked (`take_refusal`): a batch with a refused output must not commit its offsets.
#[derive(Debug)]
pub(crate) struct DeliveryContext {
    pub metrics: Arc<Metrics>,
    refused: Mutex<Option<Refused>>,
}

/// An output that was not delivered: the topic and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("outputs to topic {topic} are refused: {error}")]
pub(crate) struct Refused {
    pub topic: String,
    pub error: KafkaError,
}

impl DeliveryContext {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics, refused: Mutex::new(None) }
    }

    /// The first refusal since the last call, if any.
    pub(crate) fn take_refusal(&self) -> Option<Refused> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.with_label_values(&[error_kind(&error)]).inc();
        tracing::warn!(error = %error, reason, "producer error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        use rdkafka::message::Message;
        match result {
            Ok(m) => self.metrics.records_produced.with_label_values(&[m.topic(), "delivered"]).inc(),
            // Outputs of an aborted transaction, purged on purpose before `abort_transaction`.
            Err((e, _))
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                ) => {}
            Err((e, m)) => {
                self.metrics.records_produced.with_label_values(&[m.topic(), "failed"]).inc();
                let mut refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if refused.is_none() {
                    // One line per batch, not per output: the task logs the refusal when it gives the batch up.
                    *refused = Some(Refused { topic: m.topic().to_owned(), error: e.clone() });
                }
            }
        }
    }
}

pub(crate) type OutputProducer = BaseProducer<DeliveryContext>;

/// A bounded category of a client error, for metric labels.
pub(crate) fn error_kind(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => "transport",
        Some(
            RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::OperationTimedOut,
        ) => "timeout",
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::Fenced) => {
            "fenced"
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => "unknown_topic",
        Some(
            RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => "auth",
        Some(RDKafkaErrorCode::QueueFull) => "queue_full",
        Some(_) => "other",
        None => "client",
    }
}

/// A fatal transactional error that a new producer would meet again — the worker's own identity or permissions
/// (`transactional.id` or cluster authorization, an unsupported broker), an invalid transaction state — answered
/// by exiting non-zero. Fencing is not one: a newer owner has the partition, or the coordinator timed the
/// transaction out, and that task alone drops its batch and redoes it with a new producer (as Kafka Streams
/// handles a migrated task).
pub(crate) fn is_fatal_for_worker(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => !matches!(
            t.code(),
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        ),
        _ => false,
    }
}

/// Sends a record, waiting while the producer queue is full: the backpressure that bounds memory when the broker
/// or the outputs are slow.
pub(crate) fn send(
    producer: &OutputProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: Option<OwnedHeaders>,
) -> KafkaResult<()> {
    let mut record = BaseRecord::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// `key: value` headers.
pub(crate) fn headers(pairs: &[(&str, &[u8])]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new_with_capacity(pairs.len()), |h, (key, value)| {
        h.insert(Header { key, value: Some(*value) })
    })
}

/// The sleep between two looks at a flushing producer's acknowledgements.
const FLUSH_WAIT: Duration = Duration::from_micros(250);

/// Flushes a producer; `Ok(false)` when the timeout passed with records still unacknowledged.
pub(crate) fn flush(producer: &OutputProducer, timeout: Duration) -> KafkaResult<bool> {
    // rdkafka's `flush` waits for delivery reports in 100 ms polls, which made every commit take ≥ 100 ms and
    // capped a worker at a few batches per second. Sending at once (a zero-timeout flush) and then serving the
    // reports as they come ends as soon as the last output is acknowledged.
    match producer.flush(Duration::ZERO) {
        Ok(()) => return Ok(true),
        Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
        Err(e) => return Err(e),
    }
    // A timed `poll` spins once it has served an event (the time left rounds down to a 0 ms wait until its
    // deadline), which made the commits' waits a tenth of the worker's CPU; so what is there is served at once
    // and the wait between is a short sleep.
    let deadline = std::time::Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(FLUSH_WAIT);
    }
}
