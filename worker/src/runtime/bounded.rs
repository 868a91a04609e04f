//! Transactional producer calls with a deadline of their own.
//!
//! librdkafka 2.12 can block inside a transactional call long past the timeout it was given: when the broker
//! that coordinates the group dies and drops out of the cluster metadata, `send_offsets_to_transaction` waits
//! for a broker state change that may never come (confluentinc/librdkafka#5456, #5511; an abort hanging the same
//! way is #3779). On the poll thread that would stall every partition of the worker, silently, until the
//! liveness probe kills it. So each such call runs on a helper thread, and when it overruns by `GRACE`, the poll
//! thread stops waiting: the caller gives the producer up (the helper thread keeps it until the call returns, if
//! ever) and makes a new one with the same transactional id, whose `init_transactions` fences the stuck one and
//! ends its transaction on the broker.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rdkafka::error::KafkaResult;

use super::kafka::OutputProducer;

/// How long past its own timeout a call may run before it counts as stuck.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// A call that did not return within its timeout plus [`GRACE`].
#[derive(Debug, thiserror::Error)]
#[error("{call} did not return within {limit:?}; the producer is given up")]
pub(crate) struct Stuck {
    pub call: &'static str,
    pub limit: Duration,
}

/// Runs `f` on `producer` in a helper thread and waits at most `timeout + GRACE` for it (`timeout` being the
/// limit passed to librdkafka inside `f`).
pub(crate) fn call<T: Send + 'static>(
    producer: &Arc<OutputProducer>,
    call: &'static str,
    timeout: Duration,
    f: impl FnOnce(&OutputProducer) -> KafkaResult<T> + Send + 'static,
) -> Result<KafkaResult<T>, Stuck> {
    let limit = timeout + GRACE;
    let (tx, rx) = mpsc::sync_channel(1);
    let p = producer.clone();
    let spawned = std::thread::Builder::new().name(format!("txn-{call}")).spawn(move || {
        // The receiver is gone when the caller gave up waiting; nothing to report then.
        let _ = tx.send(f(&p));
    });
    if let Err(e) = spawned {
        // No thread to be had (resource limits): as good as stuck, the caller starts over with a new producer.
        tracing::error!(error = %e, call, "no helper thread for a transactional call");
        return Err(Stuck { call, limit: Duration::ZERO });
    }
    rx.recv_timeout(limit).map_err(|_| Stuck { call, limit })
}

#[cfg(test)]
mod tests {
    //! On librdkafka's mock cluster: a real broker cannot be made to keep a group coordinator down while it stays
    //! the coordinator, which is what makes `send_offsets_to_transaction` outlive its timeout.

    use std::time::Instant;

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::producer::{BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;
    use crate::runtime::kafka::DeliveryContext;
    use crate::runtime::metrics::Metrics;

    fn producer(bootstrap: &str, id: &str) -> Arc<OutputProducer> {
        let metrics = Arc::new(Metrics::new("test", 10).unwrap());
        let p: OutputProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", id)
            .create_with_context(DeliveryContext::new(metrics))
            .unwrap();
        Arc::new(p)
    }

    #[test]
    fn a_call_past_its_timeout_gives_the_poll_thread_back_and_a_new_producer_takes_over() {
        let cluster = MockCluster::new(3).unwrap();
        cluster.create_topic("out", 1, 3).unwrap();
        cluster.create_topic("in", 1, 3).unwrap();
        cluster.coordinator(MockCoordinator::Transaction("t".into()), 1).unwrap();
        cluster.coordinator(MockCoordinator::Group("g".into()), 2).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "g").create().unwrap();
        let group = Arc::new(consumer.group_metadata().unwrap());
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("in", 0, Offset::Offset(42)).unwrap();

        let first = producer(&bootstrap, "t");
        first.init_transactions(Duration::from_secs(10)).unwrap();
        first.begin_transaction().unwrap();
        first.send(BaseRecord::<[u8], [u8]>::to("out").payload(b"x")).map_err(|(e, _)| e).unwrap();
        first.flush(Duration::from_secs(10)).unwrap();
        cluster.broker_down(2).unwrap();

        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let (g, o) = (group.clone(), offsets.clone());
        let result = call(&first, "send_offsets", timeout, move |p| p.send_offsets_to_transaction(&o, &g, timeout));
        let took = started.elapsed();
        assert!(took < timeout + GRACE + Duration::from_secs(2), "the caller waited {took:?}");
        // librdkafka 2.12.1 ignores the timeout here (confluentinc/librdkafka#5456): the call is still running.
        // Should a later librdkafka return in time, this is `Ok(Err(timeout))` and the workaround can go.
        assert!(matches!(result, Err(Stuck { call: "send_offsets", .. })), "{result:?}");

        cluster.broker_up(2).unwrap();
        let second = producer(&bootstrap, "t");
        second.init_transactions(Duration::from_secs(10)).unwrap();
        second.begin_transaction().unwrap();
        second.send(BaseRecord::<[u8], [u8]>::to("out").payload(b"y")).map_err(|(e, _)| e).unwrap();
        second.send_offsets_to_transaction(&offsets, &group, Duration::from_secs(10)).unwrap();
        second.commit_transaction(Duration::from_secs(10)).unwrap();
    }
}
