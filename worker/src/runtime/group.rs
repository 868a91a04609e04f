//! The consumer-group loop: one thread polls the input, routes each record to its partition's task, commits
//! batches on a timer, and reacts to rebalances (commit what is revoked, restore what is assigned).
//!
//! Rebalance callbacks run inside `poll` on this same thread, so the tasks sit behind a mutex that is never held
//! across `poll` and never contended.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::kafka::{self, OutputProducer};
use super::partition::{CommitError, Input, PartitionTask, RETRY_BACKOFF, TaskError};
use super::{Delivery, Shared, restore};

#[derive(Default)]
pub(crate) struct Tasks {
    map: BTreeMap<i32, PartitionTask>,
    /// At-least-once: one idempotent producer for all partitions.
    alo: Option<OutputProducer>,
}

pub(crate) struct GroupContext {
    shared: Arc<Shared>,
    tasks: Mutex<Tasks>,
}

impl std::fmt::Debug for GroupContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupContext").finish_non_exhaustive()
    }
}

/// Why the loop stopped other than by a shutdown request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

impl GroupContext {
    fn lock(&self) -> MutexGuard<'_, Tasks> {
        // A panic while holding the lock ends the process anyway; recover the data rather than poison-cascade.
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        let mut tasks = self.lock();
        let Some(topic) = stats.topics.get(&self.shared.cfg.topics.input) else { return };
        for (p, ps) in &topic.partitions {
            if let Some(task) = tasks.map.get_mut(p) {
                let end = if ps.ls_offset >= 0 { ps.ls_offset } else { ps.hi_offset };
                if end >= 0 {
                    task.high_watermark = Some(end);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&error)]).inc();
        tracing::warn!(error = %error, reason, "consumer error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let shared = &self.shared;
        let lost = consumer.assignment_lost();
        shared.metrics.rebalances.with_label_values(&[if lost { "lost" } else { "revoke" }]).inc();
        let mut tasks = self.lock();
        let partitions: Vec<i32> =
            tpl.elements().iter().filter(|e| e.topic() == shared.cfg.topics.input).map(|e| e.partition()).collect();
        if !lost {
            // Hand over cleanly: what was processed is committed, so the next owner resumes right after it.
            if let Err(e) = commit_partitions(shared, consumer, &mut tasks, Some(&partitions)) {
                tracing::warn!(error = %e, "commit on revoke failed; the next owner redoes the batch");
            }
        }
        for p in partitions {
            if let Some(mut task) = tasks.map.remove(&p) {
                if task.pending > 0 {
                    task.abort(shared);
                }
                shared.metrics.forget_partition(&shared.cfg.topics.input, p);
            }
        }
        shared.metrics.assigned_partitions.set(tasks.map.len() as i64);
        tracing::info!(lost, assigned = ?tasks.map.keys().collect::<Vec<_>>(), "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        let Rebalance::Assign(tpl) = rebalance else {
            if let Rebalance::Error(e) = rebalance {
                tracing::warn!(error = %e, "rebalance error");
            }
            return;
        };
        shared.metrics.rebalances.with_label_values(&["assign"]).inc();
        let mut tasks = self.lock();
        for e in tpl.elements().iter().filter(|e| e.topic() == shared.cfg.topics.input) {
            tasks.map.entry(e.partition()).or_insert_with(|| PartitionTask::new(e.partition()));
        }
        // Fence every new partition now, not at its first record: a crashed owner's open transactions are
        // aborted at once, so they stop holding back read_committed readers of the outputs (the last stable
        // offset), and no committed offset is read for a restore while another assigned partition still has a
        // zombie transaction open (some brokers hide offsets committed after such a transaction began). A
        // failure here is retried when the partition's first record is prepared.
        for task in tasks.map.values_mut().filter(|t| t.producer.is_none()) {
            if let Err(e) = task.ensure_producer(shared) {
                shared.metrics.kafka_errors.with_label_values(&[e.kind()]).inc();
                tracing::warn!(partition = task.partition, error = %e, "fencing older owners failed; retried later");
            }
        }
        shared.metrics.assigned_partitions.set(tasks.map.len() as i64);
        shared.health.assigned.store(true, Ordering::Relaxed);
        tracing::info!(assigned = ?tasks.map.keys().collect::<Vec<_>>(), "partitions assigned");
    }
}

/// Commits pending batches (all partitions, or `only` these).
fn commit_partitions(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    tasks: &mut Tasks,
    only: Option<&[i32]>,
) -> Result<(), RunError> {
    let selected = |p: i32| only.is_none_or(|o| o.contains(&p));
    match shared.cfg.delivery {
        Delivery::ExactlyOnce => {
            let Some(group) = consumer.group_metadata().map(Arc::new) else { return Ok(()) };
            let mut aborted = Vec::new();
            for task in tasks.map.values_mut().filter(|t| selected(t.partition) && t.pending > 0) {
                loop {
                    match task.commit_transaction(shared, &group) {
                        Ok(()) => break,
                        Err(CommitError::Retry(e)) if !shared.health.stopping.load(Ordering::Relaxed) => {
                            tracing::warn!(partition = task.partition, error = %e, "commit not acknowledged; retrying");
                            std::thread::sleep(RETRY_BACKOFF);
                        }
                        // Aborted, stuck, or fenced (either a newer owner has the partition and the coming rebalance
                        // takes the task away, or the transaction outlived `transaction.timeout.ms` while the
                        // partition is still ours; as Kafka Streams does with a migrated task, the batch is
                        // dropped and redone with a new producer).
                        Err(e) => {
                            tracing::warn!(partition = task.partition, error = %e, "batch aborted; redoing it");
                            task.abort(shared);
                            aborted.push((task.partition, task.committed));
                            break;
                        }
                    }
                }
            }
            for (p, committed) in aborted {
                rewind(shared, consumer, p, committed);
            }
        }
        Delivery::AtLeastOnce => {
            let Some(producer) = tasks.alo.as_ref() else { return Ok(()) };
            let mut offsets = TopicPartitionList::new();
            for task in tasks.map.values_mut().filter(|t| selected(t.partition) && t.pending > 0) {
                task.snapshot_at_least_once(shared, producer)?;
                if let Some(next) = task.next_offset {
                    offsets.add_partition_offset(&shared.cfg.topics.input, task.partition, Offset::Offset(next))?;
                }
            }
            if offsets.count() == 0 {
                return Ok(());
            }
            let started = Instant::now();
            // Offsets follow delivery: nothing is committed before every output so far is acknowledged.
            while !kafka::flush(producer, shared.kafka_timeout)? {
                tracing::warn!("outputs not acknowledged yet; offsets wait");
                if shared.health.stopping.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            match consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => {
                    shared.metrics.transactions.with_label_values(&["committed"]).inc();
                    shared.metrics.commit_duration.observe(started.elapsed().as_secs_f64());
                    for task in tasks.map.values_mut().filter(|t| selected(t.partition) && t.pending > 0) {
                        task.committed = task.next_offset;
                        task.pending = 0;
                    }
                }
                Err(e) => {
                    shared.metrics.transactions.with_label_values(&["failed"]).inc();
                    tracing::warn!(error = %e, "offset commit failed; retried with the next batch");
                }
            }
        }
    }
    for task in tasks.map.values_mut() {
        task.flush_counters(shared);
        task.observe(shared);
    }
    Ok(())
}

/// Positions the consumer back at `offset` (the last commit) after a batch was abandoned.
fn rewind(shared: &Shared, consumer: &BaseConsumer<GroupContext>, partition: i32, offset: Option<i64>) {
    let to = offset.map_or(Offset::Stored, Offset::Offset);
    if let Err(e) = consumer.seek(&shared.cfg.topics.input, partition, to, shared.kafka_timeout) {
        tracing::warn!(partition, error = %e, "seek after abort failed");
    }
}

/// The committed offset of `partition`, if the group has one.
fn committed_offset(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    partition: i32,
) -> KafkaResult<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&shared.cfg.topics.input, partition);
    let committed = consumer.committed_offsets(tpl, shared.kafka_timeout)?;
    Ok(committed.find_partition(&shared.cfg.topics.input, partition).and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

/// What to do with the record that triggered a restore.
enum Prepared {
    Process,
    Skip,
}

/// Makes a task ready for `first`: fences older owners, reads where the group really stands (after fencing, so
/// a zombie cannot commit behind our back), restores the state as of there.
fn prepare(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    task: &mut PartitionTask,
    first: i64,
) -> Result<Prepared, TaskError> {
    shared.health.restoring.fetch_add(1, Ordering::Relaxed);
    let result = (|| {
        if consumer.assignment_lost() {
            // The group has taken the partition away and the rebalance saying so is still to be served: making a
            // producer now would fence its new owner. The record is not processed; a later owner, or this worker
            // when given the partition again, resumes from the committed offset.
            return Ok(Prepared::Skip);
        }
        task.ensure_producer(shared)?;
        let resume = committed_offset(shared, consumer, task.partition)?.unwrap_or(first);
        let (engine, _) = restore::restore(shared, task.partition, resume)?;
        task.engine = Some(engine);
        task.committed = Some(resume);
        task.next_offset = Some(resume);
        task.resume_at = Some(resume);
        if resume < first {
            consumer.seek(&shared.cfg.topics.input, task.partition, Offset::Offset(resume), shared.kafka_timeout)?;
            return Ok(Prepared::Skip);
        }
        Ok(if first < resume { Prepared::Skip } else { Prepared::Process })
    })();
    shared.health.restoring.fetch_sub(1, Ordering::Relaxed);
    result
}

fn handle(shared: &Shared, consumer: &BaseConsumer<GroupContext>, tasks: &mut Tasks, m: &BorrowedMessage<'_>) {
    let partition = m.partition();
    let Some(task) = tasks.map.get_mut(&partition) else { return };
    if task.engine.is_none() {
        match prepare(shared, consumer, task, m.offset()) {
            Ok(Prepared::Process) => {}
            Ok(Prepared::Skip) => return,
            Err(e) => {
                shared.metrics.kafka_errors.with_label_values(&[e.kind()]).inc();
                tracing::warn!(partition, error = %e, "restore failed; retrying");
                task.engine = None;
                rewind(shared, consumer, partition, Some(m.offset()));
                std::thread::sleep(RETRY_BACKOFF);
                return;
            }
        }
    }
    if task.resume_at.is_some_and(|r| m.offset() < r) {
        return;
    }
    let input = Input {
        offset: m.offset(),
        key: m.key(),
        payload: m.payload().unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis(),
    };
    if let Err(e) = task.process(shared, tasks.alo.as_ref(), &input) {
        shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&e)]).inc();
        tracing::warn!(partition, error = %e, "producing outputs failed; redoing the batch");
        task.abort(shared);
        let committed = task.committed;
        rewind(shared, consumer, partition, committed);
    }
}

/// Creates the group consumer with its context.
pub(crate) fn consumer(shared: Arc<Shared>) -> KafkaResult<BaseConsumer<GroupContext>> {
    let alo = match shared.cfg.delivery {
        Delivery::AtLeastOnce => Some(
            kafka::producer(&shared.cfg, None)
                .create_with_context(kafka::DeliveryContext { metrics: shared.metrics.clone() })?,
        ),
        Delivery::ExactlyOnce => None,
    };
    let ctx = GroupContext { shared: shared.clone(), tasks: Mutex::new(Tasks { map: BTreeMap::new(), alo }) };
    kafka::group_consumer(&shared.cfg).create_with_context(ctx)
}

/// Runs until `shared.health.stopping` is set, then commits and leaves the group.
pub(crate) fn run(shared: &Shared, consumer: BaseConsumer<GroupContext>) -> Result<(), RunError> {
    consumer.subscribe(&[&shared.cfg.topics.input])?;
    let mut last_commit = Instant::now();
    let mut last_error_log = Instant::now() - Duration::from_secs(60);
    let ctx = consumer.context();
    // Clock reads were a tenth of the worker's CPU when taken per record: the heartbeat and the commit timer are
    // checked once per `HOUSEKEEPING_EVERY` records, and whenever the input is idle.
    const HOUSEKEEPING_EVERY: u32 = 256;
    let mut records = 0u32;
    while !shared.health.stopping.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(50));
        let got_record = matches!(polled, Some(Ok(_)));
        match polled {
            Some(Ok(m)) => handle(shared, &consumer, &mut ctx.lock(), &m),
            Some(Err(e)) => {
                shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&e)]).inc();
                // Broker outages repeat this every poll; one line per 10 s is enough.
                if last_error_log.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, "consume error");
                    last_error_log = Instant::now();
                }
            }
            None => {}
        }
        records += u32::from(got_record);
        if got_record && records < HOUSEKEEPING_EVERY {
            continue;
        }
        records = 0;
        shared.health.beat();
        let mut tasks = ctx.lock();
        let pending: u64 = tasks.map.values().map(|t| t.pending).sum();
        if last_commit.elapsed() >= shared.cfg.commit_interval || pending >= shared.cfg.max_batch {
            commit_partitions(shared, &consumer, &mut tasks, None)?;
            if let Some(p) = &tasks.alo {
                p.poll(Duration::ZERO);
            }
            last_commit = Instant::now();
        }
    }
    tracing::info!("shutting down: committing and leaving the group");
    commit_partitions(shared, &consumer, &mut ctx.lock(), None)?;
    consumer.unsubscribe();
    // Serve the revoke that unsubscribing causes, then close.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && consumer.assignment().map(|a| a.count() > 0).unwrap_or(false) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    drop(consumer);
    Ok(())
}
