//! The consumer-group loop: one thread polls the input (and, with a merge stage, the repartition topic), routes
//! each record to its task, commits batches on a timer, moves idle input partitions on, and reacts to rebalances
//! (commit what is revoked, restore what is assigned).
//!
//! Rebalance callbacks run inside `poll` on this same thread, so the tasks sit behind a mutex that is never held
//! across `poll` and never contended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::kafka::{self, OutputProducer};
use super::parallel;
use super::partition::{
    CommitError, FetchState, Input, PartitionTask, RETRY_BACKOFF, Stage, TaskEngine, TaskError, TaskId,
};
use super::{Delivery, Shared, now_ms, restore};

#[derive(Default)]
pub(crate) struct Tasks {
    map: BTreeMap<TaskId, PartitionTask>,
    /// At-least-once: one idempotent producer for all partitions.
    alo: Option<OutputProducer>,
    /// The loop's clock (ms), read once per housekeeping round rather than per record.
    now_ms: i64,
}

impl Tasks {
    fn input_count(&self) -> usize {
        self.map.keys().filter(|id| id.stage == Stage::Input).count()
    }
}

pub(crate) struct GroupContext {
    shared: Arc<Shared>,
    /// The stage whose topic this consumer reads.
    stage: Stage,
    tasks: Mutex<Tasks>,
    /// The consumer this is the context of, to split partition queues off in the rebalance callback (set once
    /// the consumer is made).
    consumer: OnceLock<Weak<BaseConsumer<GroupContext>>>,
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
    /// An error no retry fixes (see `kafka::is_fatal_for_worker`).
    #[error("{0}; exiting so that the orchestrator restarts the worker")]
    Fatal(String),
}

impl GroupContext {
    /// Gives every partition about to be assigned a queue of its own, before librdkafka starts fetching it: what
    /// it fetches then never enters the consumer's queue (no record of a partition is seen in two queues, out of
    /// order), and a partition assigned again after a revoke delivers to its new queue, as librdkafka never hands
    /// a split partition back to the consumer's queue.
    fn split_assigned(&self, tpl: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        let shared = &self.shared;
        let mut tasks = self.lock();
        for id in tpl.elements().iter().filter_map(|e| TaskId::of(shared, e.topic(), e.partition())) {
            let task = tasks.map.entry(id).or_insert_with(|| PartitionTask::new(id));
            if task.queue.is_none() {
                task.queue = parallel::split(shared, &consumer, id);
                if task.queue.is_none() {
                    tracing::warn!(partition = %id, "no queue of its own; served from the consumer's");
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tasks> {
        // A panic while holding the lock ends the process anyway; recover the data rather than poison-cascade.
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        let mut tasks = self.lock();
        let now = Instant::now();
        for (name, topic) in &stats.topics {
            for (p, ps) in &topic.partitions {
                let Some(task) = TaskId::of(&self.shared, name, *p).and_then(|id| tasks.map.get_mut(&id)) else {
                    continue;
                };
                let end = if ps.ls_offset >= 0 { ps.ls_offset } else { ps.hi_offset };
                if end >= 0 {
                    task.high_watermark = Some(end);
                }
                let leader_up = stats.brokers.values().any(|b| b.nodeid == ps.leader && b.state == "UP");
                task.fetch = FetchState {
                    caught_up: leader_up
                        && ps.fetch_state == "active"
                        && ps.fetchq_cnt == 0
                        && end >= 0
                        && ps.next_offset >= end,
                    end: (end >= 0).then_some(end),
                    at: Some(now),
                };
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
        let tpl = match rebalance {
            Rebalance::Revoke(tpl) => tpl,
            Rebalance::Assign(tpl) => return self.split_assigned(tpl),
            Rebalance::Error(_) => return,
        };
        let shared = &self.shared;
        let lost = consumer.assignment_lost();
        shared.metrics.rebalances.with_label_values(&[if lost { "lost" } else { "revoke" }]).inc();
        let mut tasks = self.lock();
        let partitions: Vec<TaskId> =
            tpl.elements().iter().filter_map(|e| TaskId::of(shared, e.topic(), e.partition())).collect();
        if !lost {
            // Hand over cleanly: what was processed is committed, so the next owner resumes right after it.
            if let Err(e) = commit_partitions(shared, consumer, &mut tasks, Some(&partitions)) {
                tracing::warn!(error = %e, "commit on revoke failed; the next owner redoes the batch");
            }
        }
        for id in partitions {
            if let Some(mut task) = tasks.map.remove(&id) {
                if task.pending > 0 {
                    task.abort(shared);
                }
                match id.stage {
                    Stage::Input => shared.metrics.forget_partition(id.topic(shared), id.partition),
                    Stage::Merge => {
                        shared.metrics.forget_merge_partition(id.topic(shared), id.partition);
                        let n = shared.repartition_partitions;
                        shared.metrics.forget_zone_gauges(|aggregation, zone| {
                            super::repartition::partition_of(aggregation, Some(zone).filter(|z| !z.is_empty()), n)
                                == id.partition
                        });
                    }
                }
            }
        }
        if self.stage == Stage::Input {
            shared.metrics.assigned_partitions.set(tasks.input_count() as i64);
        }
        tracing::info!(lost, assigned = %assigned(&tasks), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        let Rebalance::Assign(tpl) = rebalance else {
            if let Rebalance::Error(e) = rebalance {
                tracing::warn!(error = %e, "rebalance error");
            }
            return;
        };
        shared.metrics.rebalances.with_label_values(&["assign"]).inc();
        // A partition paused for a backoff (`give_up`) and then taken away must not come back paused: its new
        // task knows of no backoff to end.
        if let Err(e) = consumer.resume(tpl) {
            tracing::warn!(error = %e, "resuming assigned partitions failed");
        }
        let mut tasks = self.lock();
        let now = now_ms();
        for id in tpl.elements().iter().filter_map(|e| TaskId::of(shared, e.topic(), e.partition())) {
            tasks.map.entry(id).or_insert_with(|| PartitionTask::new(id)).idle.start(now);
        }
        // Fence every new partition now, not at its first record: a crashed owner's open transactions are
        // aborted at once, so they stop holding back read_committed readers of the outputs (the last stable
        // offset), and no committed offset is read for a restore while another assigned partition still has a
        // zombie transaction open (some brokers hide offsets committed after such a transaction began). A
        // failure here is retried when the partition's first record is prepared.
        // The partitions are fenced at the same time: one after another, their waits for the transaction
        // coordinator add up inside this callback, and the poll thread serves nothing else meanwhile.
        let fresh: Vec<&mut PartitionTask> = match shared.cfg.delivery {
            Delivery::ExactlyOnce => tasks.map.values_mut().filter(|t| t.producer.is_none()).collect(),
            Delivery::AtLeastOnce => Vec::new(),
        };
        let fenced = parallel::concurrently(fresh, |task| task.ensure_producer(shared).map_err(|e| (task.id(), e)));
        for (id, e) in fenced.into_iter().filter_map(Result::err) {
            fatal_check(shared, id, &e);
            shared.metrics.kafka_errors.with_label_values(&[e.kind()]).inc();
            tracing::warn!(partition = %id, error = %e, "fencing older owners failed; retried later");
        }
        if self.stage == Stage::Input {
            shared.metrics.assigned_partitions.set(tasks.input_count() as i64);
        }
        shared.health.assigned.store(true, Ordering::Relaxed);
        tracing::info!(assigned = %assigned(&tasks), "partitions assigned");
    }
}

/// The tasks held, for logs: input partitions as numbers, repartition partitions as `r<n>`.
fn assigned(tasks: &Tasks) -> String {
    let ids: Vec<String> = tasks.map.keys().map(ToString::to_string).collect();
    format!("[{}]", ids.join(", "))
}

/// Commits pending batches (all partitions, or `only` these).
fn commit_partitions(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    tasks: &mut Tasks,
    only: Option<&[TaskId]>,
) -> Result<(), RunError> {
    let selected = |id: TaskId| only.is_none_or(|o| o.contains(&id));
    match shared.cfg.delivery {
        Delivery::ExactlyOnce => {
            let Some(group) = consumer.group_metadata().map(Arc::new) else { return Ok(()) };
            // Each partition has its own transaction and producer, so their commits run at the same time: a commit
            // waits for the coordinator and for a marker on every partition written to, and one after another
            // these waits took most of a commit interval.
            let due: Vec<&mut PartitionTask> =
                tasks.map.values_mut().filter(|t| selected(t.id()) && t.pending > 0).collect();
            let commits =
                parallel::concurrently(due, |task| commit_task(shared, &group, task).map_err(|e| (task.id(), e)));
            for (id, e) in commits.into_iter().filter_map(Result::err) {
                let Some(task) = tasks.map.get_mut(&id) else { continue };
                if let CommitError::Fenced(k) = &e
                    && kafka::is_fatal_for_worker(k)
                {
                    shared.health.fail(format!("committing partition {id}: {k}"));
                }
                // Aborted, stuck, or fenced (either a newer owner has the partition and the coming rebalance
                // takes the task away, or the transaction outlived `transaction.timeout.ms` while the
                // partition is still ours; as Kafka Streams does with a migrated task, the batch is
                // dropped and redone with a new producer).
                give_up(shared, consumer, task, &e);
            }
        }
        Delivery::AtLeastOnce => {
            let Some(producer) = tasks.alo.as_ref() else { return Ok(()) };
            let mut offsets = TopicPartitionList::new();
            for task in tasks.map.values_mut().filter(|t| selected(t.id()) && t.pending > 0) {
                task.snapshot_at_least_once(shared, producer)?;
                if let Some(next) = task.next_offset {
                    offsets.add_partition_offset(task.id().topic(shared), task.partition, Offset::Offset(next))?;
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
            // An output the broker refused is not delivered: no offset is committed, and every partition with a
            // batch open redoes it (the producer is shared, so the refused output may be any partition's).
            if let Some(refused) = producer.context().take_refusal() {
                shared.metrics.transactions.with_label_values(&["failed"]).inc();
                for task in tasks.map.values_mut().filter(|t| t.pending > 0) {
                    give_up(shared, consumer, task, &refused);
                }
                return Ok(());
            }
            match consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => {
                    shared.metrics.transactions.with_label_values(&["committed"]).inc();
                    shared.metrics.commit_duration.observe(started.elapsed().as_secs_f64());
                    for task in tasks.map.values_mut().filter(|t| selected(t.id()) && t.pending > 0) {
                        task.committed_at_least_once();
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

/// Commits a task's open transaction, calling again while the broker has not finished it.
fn commit_task(
    shared: &Shared,
    group: &Arc<rdkafka::consumer::ConsumerGroupMetadata>,
    task: &mut PartitionTask,
) -> Result<(), CommitError> {
    loop {
        match task.commit_transaction(shared, group) {
            Err(CommitError::Retry(e)) if !shared.health.stopping.load(Ordering::Relaxed) => {
                tracing::warn!(partition = task.partition, error = %e, "commit not acknowledged; retrying");
                std::thread::sleep(RETRY_BACKOFF);
            }
            result => return result,
        }
    }
}

/// Gives up a task's batch: aborts it, rewinds the consumer to the last commit and pauses the partition for a
/// backoff that doubles with every batch given up in a row (`partition::backoff`), so a fault that repeats —
/// an output the broker refuses, a producer fenced again and again — costs a retry every 30 s at most.
fn give_up(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    task: &mut PartitionTask,
    why: &dyn std::fmt::Display,
) {
    // A send that failed because the transaction already failed says only "Erroneous state"; the refusal
    // behind it (its delivery report is served while aborting) says which topic and why.
    let refused = task.producer.as_ref().and_then(|p| p.context().take_refusal());
    let refused = refused.or(task.abort(shared));
    let why = refused.map_or_else(|| why.to_string(), |r| r.to_string());
    let delay = task.back_off(why.clone());
    let id = task.id();
    tracing::warn!(partition = %id, error = why, failures = task.failures, retry_in = ?delay,
        "batch given up; redone from the last commit after the backoff");
    rewind(shared, consumer, id, task.committed);
    if let Err(e) = consumer.pause(&one(shared, id)) {
        tracing::warn!(partition = %id, error = %e, "pausing the partition failed; its records wait unprocessed");
    }
}

fn one(shared: &Shared, id: TaskId) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(id.topic(shared), id.partition);
    tpl
}

/// Housekeeping of every task of a consumer: partitions whose backoff is over resume, and the stage's trouble
/// (batches failing again and again, a partition with lag and no progress) goes to /readyz, /healthz and the
/// `blocked_partitions` gauge.
fn tend_tasks(shared: &Shared, consumer: &BaseConsumer<GroupContext>, stage: Stage, tasks: &mut Tasks) {
    let now = Instant::now();
    let mut trouble = super::Trouble::default();
    let positions = consumer.position().ok();
    for (id, task) in &mut tasks.map {
        task.position =
            positions.as_ref().and_then(|tpl| tpl.find_partition(id.topic(shared), id.partition)).and_then(|e| match e
                .offset()
            {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if task.blocked_until.is_some_and(|t| t <= now) {
            task.blocked_until = None;
            if let Err(e) = consumer.resume(&one(shared, *id)) {
                tracing::warn!(partition = %id, error = %e, "resuming the partition failed; retried");
                task.blocked_until = Some(now + RETRY_BACKOFF);
            }
        }
        if task.failures >= 2 {
            trouble.blocked += 1;
            trouble.reason = trouble.reason.or_else(|| task.failure.clone());
        }
        match task.lag() {
            Some(0) => task.progress_at = now,
            Some(lag) if trouble.stalled.is_none() && now - task.progress_at > shared.cfg.stall_timeout => {
                trouble.stalled = Some(format!(
                    "partition {id} of {} has {lag} records of lag and committed nothing for {:?}{}",
                    id.topic(shared),
                    now - task.progress_at,
                    task.failure.as_deref().map(|f| format!("; last failure: {f}")).unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    let index = match stage {
        Stage::Input => 0,
        Stage::Merge => 1,
    };
    shared.health.set_trouble(index, trouble);
    shared.metrics.blocked_partitions.set(shared.health.blocked_count() as i64);
}

/// Positions the consumer back at `offset` (the last commit) after a batch was abandoned; false if it failed.
fn rewind(shared: &Shared, consumer: &BaseConsumer<GroupContext>, task: TaskId, offset: Option<i64>) -> bool {
    let to = offset.map_or(Offset::Stored, Offset::Offset);
    let sought = consumer.seek(task.topic(shared), task.partition, to, shared.kafka_timeout);
    if let Err(e) = &sought {
        tracing::warn!(partition = %task, error = %e, "seek after abort failed");
    }
    sought.is_ok()
}

/// The committed offset of the task's partition, if the group has one.
fn committed_offset(shared: &Shared, consumer: &BaseConsumer<GroupContext>, task: TaskId) -> KafkaResult<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(task.topic(shared), task.partition);
    let committed = consumer.committed_offsets(tpl, shared.kafka_timeout)?;
    Ok(committed.find_partition(task.topic(shared), task.partition).and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

/// Makes a task ready for `first` (its first record, or the end of an idle partition): fences older owners, reads
/// where the group really stands (after fencing, so a zombie cannot commit behind our back), and starts restoring
/// the state as of there with the partition paused; `finish_restores` resumes it there.
fn prepare(
    shared: &Arc<Shared>,
    consumer: &BaseConsumer<GroupContext>,
    task: &mut PartitionTask,
    first: i64,
) -> Result<(), TaskError> {
    if consumer.assignment_lost() {
        // The group has taken the partition away and the rebalance saying so is still to be served: making a
        // producer now would fence its new owner. A later owner, or this worker when given the partition again,
        // resumes from the committed offset.
        return Ok(());
    }
    task.ensure_producer(shared)?;
    let id = task.id();
    let resume = committed_offset(shared, consumer, id)?.unwrap_or(first);
    consumer.pause(&one(shared, id))?;
    task.restoring = Some(restore::Pending::start(shared.clone(), id, resume));
    Ok(())
}

/// A producer that cannot start for a reason no retry fixes (no permission for its `transactional.id`) ends the
/// worker.
fn fatal_check(shared: &Shared, id: TaskId, e: &TaskError) {
    if let TaskError::Kafka(k) = e
        && kafka::is_fatal_for_worker(k)
    {
        shared.health.fail(format!("starting the producer of partition {id}: {k}"));
    }
}

/// Installs the states whose restore is over and resumes their partitions at the offset they were restored as
/// of, on a queue of their own (`parallel`); a failed restore is retried after a pause.
fn finish_restores(shared: &Shared, consumer: &BaseConsumer<GroupContext>, tasks: &mut Tasks) {
    let now = Instant::now();
    let clock = tasks.now_ms;
    for (id, task) in &mut tasks.map {
        let Some(pending) = &task.restoring else { continue };
        // A restore is progress: a big state read for minutes must not look like a stalled partition.
        task.progress_at = now;
        let Some(result) = pending.take() else { continue };
        let resume = pending.resume;
        task.restoring = None;
        match result {
            Ok(mut engine) => {
                if !rewind(shared, consumer, *id, Some(resume)) {
                    // Records fetched before the restore might still be served after it: start over instead.
                    let delay = task.back_off("moving the consumer to the restored offset failed".into());
                    tracing::warn!(partition = %id, retry_in = ?delay, "restore not installed; retried after the backoff");
                    continue;
                }
                if let TaskEngine::Input(e) = &mut engine {
                    e.set_clock(clock);
                }
                task.engine = Some(engine);
                task.committed = Some(resume);
                task.next_offset = Some(resume);
                task.resume_at = Some(resume);
                if task.blocked_until.is_none()
                    && let Err(e) = consumer.resume(&one(shared, *id))
                {
                    tracing::warn!(partition = %id, error = %e, "resuming a restored partition failed; retried");
                    task.blocked_until = Some(now + RETRY_BACKOFF);
                }
            }
            Err(e) => {
                shared.metrics.kafka_errors.with_label_values(&[e.kind()]).inc();
                // Backs off like a batch given up: a log that ends before the committed offset fails every time.
                let delay = task.back_off(format!("restore failed: {e}"));
                tracing::warn!(partition = %id, error = %e, retry_in = ?delay, "restore failed; retried after the backoff");
                // The records fetched meanwhile were dropped: the partition resumes where it was paused for.
                rewind(shared, consumer, *id, Some(resume));
            }
        }
    }
}

/// A record from the consumer's own queue, of a partition whose queue could not be split off.
fn handle(shared: &Shared, consumer: &BaseConsumer<GroupContext>, tasks: &mut Tasks, m: &BorrowedMessage<'_>) {
    let Some(id) = TaskId::of(shared, m.topic(), m.partition()) else { return };
    let Tasks { map, alo, now_ms } = tasks;
    let Some(task) = map.get_mut(&id) else { return };
    handle_record(shared, consumer, alo.as_ref(), *now_ms, task, m);
}

/// Processes one record of the task's partition (`now`: the loop's clock).
fn handle_record(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    alo: Option<&OutputProducer>,
    now: i64,
    task: &mut PartitionTask,
    m: &BorrowedMessage<'_>,
) {
    let id = task.id();
    if task.blocked_until.is_some() || task.restoring.is_some() {
        // Fetched before the pause; the batch is redone from the committed offset once the partition resumes.
        return;
    }
    if task.engine.is_none() {
        if let Err(e) = prepare(&consumer.context().shared, consumer, task, m.offset()) {
            fatal_check(shared, id, &e);
            shared.metrics.kafka_errors.with_label_values(&[e.kind()]).inc();
            tracing::warn!(partition = %id, error = %e, "preparing a restore failed; retrying");
            rewind(shared, consumer, id, Some(m.offset()));
            task.blocked_until = Some(Instant::now() + RETRY_BACKOFF);
            task.failure = Some(format!("preparing a restore failed: {e}"));
            if let Err(e) = consumer.pause(&one(shared, id)) {
                tracing::warn!(partition = %id, error = %e, "pausing the partition failed");
            }
        }
        return;
    }
    // Already in the state: before the restored offset, or (never expected) served twice.
    if task.resume_at.is_some_and(|r| m.offset() < r) || task.next_offset.is_some_and(|n| m.offset() < n) {
        return;
    }
    let input = Input {
        offset: m.offset(),
        key: m.key(),
        payload: m.payload().unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis(),
    };
    if let Err(e) = task.process(shared, alo, &input, now) {
        shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&e)]).inc();
        give_up(shared, consumer, task, &format_args!("producing outputs failed: {e}"));
    }
}

/// Housekeeping of stage-1 tasks: the clock guard's clock, and idle partitions moved on (restoring a partition
/// that never had a record first, so an empty partition does not hold the merge stage back).
fn tend_inputs(shared: &Shared, consumer: &BaseConsumer<GroupContext>, tasks: &mut Tasks) {
    let now = now_ms();
    tasks.now_ms = now;
    let idle_on = shared.pipeline.idle_timeout_ms() > 0;
    let Tasks { map, alo, .. } = tasks;
    for (id, task) in map.iter_mut().filter(|(id, _)| id.stage == Stage::Input) {
        if let Some(TaskEngine::Input(e)) = &mut task.engine {
            e.set_clock(now);
        }
        let idle = shared.pipeline.idle_timeout_ms();
        if !idle_on || task.idle.watermark(now, idle, shared.pipeline.out_of_orderness_ms()).is_none() {
            continue;
        }
        if task.engine.is_none() {
            let Some(end) = task.fetch.end.filter(|_| task.fetch.caught_up) else { continue };
            if task.restoring.is_none()
                && task.blocked_until.is_none()
                && let Err(e) = prepare(&consumer.context().shared, consumer, task, end)
            {
                shared.metrics.kafka_errors.with_label_values(&[e.kind()]).inc();
                tracing::warn!(partition = %id, error = %e, "restoring an idle partition failed; retried later");
            }
            continue;
        }
        if let Err(e) = task.advance_idle(shared, alo.as_ref(), now) {
            shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&e)]).inc();
            give_up(shared, consumer, task, &format_args!("moving an idle partition on failed: {e}"));
        }
    }
}

/// Creates a group consumer with its context: the input's (`stage` Input, the pipeline's group) or the
/// repartition topic's (`stage` Merge, a group of its own, so each stage's partitions spread evenly over the
/// workers — one group over both topics balances their sum, and a worker could get merge tasks only).
pub(crate) fn consumer(shared: Arc<Shared>, stage: Stage) -> KafkaResult<Arc<BaseConsumer<GroupContext>>> {
    let alo = match shared.cfg.delivery {
        Delivery::AtLeastOnce => Some(
            kafka::producer(&shared.cfg, None)
                .create_with_context(kafka::DeliveryContext::new(shared.metrics.clone()))?,
        ),
        Delivery::ExactlyOnce => None,
    };
    let ctx = GroupContext {
        shared: shared.clone(),
        stage,
        tasks: Mutex::new(Tasks { map: BTreeMap::new(), alo, now_ms: now_ms() }),
        consumer: OnceLock::new(),
    };
    let group = match stage {
        Stage::Input => shared.cfg.group_id.clone(),
        Stage::Merge => shared.cfg.merge_group_id(),
    };
    let mut consumer: BaseConsumer<GroupContext> =
        kafka::group_consumer(&shared.cfg, &group).create_with_context(ctx)?;
    let wake = shared.wake.clone();
    consumer.set_nonempty_callback(move || wake.notify());
    let consumer = Arc::new(consumer);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    Ok(consumer)
}

/// Records taken from a consumer's own queue per round (rebalances, errors, partitions that could not be split).
const MAIN_DRAIN: usize = 256;

/// Records taken from a partition's own queue per round: enough that a round's cost is spread thin, few enough
/// that the commit timer is looked at every few milliseconds.
const PARTITION_DRAIN: usize = 1024;

/// Clock reads were a tenth of the worker's CPU when taken per record: the heartbeat, restores, the commit timer
/// and the other housekeeping run once per this many records, and whenever the loop is idle.
const HOUSEKEEPING_EVERY: usize = 256;

/// Processes what the partitions' own queues hold, each partition on one thread of the pool at a time.
fn drain_partitions(shared: &Shared, consumer: &BaseConsumer<GroupContext>, tasks: &mut Tasks) -> usize {
    let Tasks { map, alo, now_ms } = tasks;
    let (alo, now) = (alo.as_ref(), *now_ms);
    let split: Vec<&mut PartitionTask> = map.values_mut().filter(|t| t.queue.is_some()).collect();
    parallel::each(shared.pool.as_ref(), split, |task| drain_partition(shared, consumer, alo, now, task))
}

fn drain_partition(
    shared: &Shared,
    consumer: &BaseConsumer<GroupContext>,
    alo: Option<&OutputProducer>,
    now: i64,
    task: &mut PartitionTask,
) -> usize {
    static LAST_WARNING_MS: AtomicI64 = AtomicI64::new(0);
    let Some(queue) = task.queue.clone() else { return 0 };
    let mut taken = 0;
    while taken < PARTITION_DRAIN {
        match queue.poll(Duration::ZERO) {
            Some(Ok(m)) => handle_record(shared, consumer, alo, now, task, &m),
            Some(Err(e)) => {
                shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&e)]).inc();
                // A partition's fetch error repeats every round; one line per 10 s is enough.
                let last = LAST_WARNING_MS.load(Ordering::Relaxed);
                if now_ms() - last > 10_000 && LAST_WARNING_MS.swap(now_ms(), Ordering::Relaxed) == last {
                    tracing::warn!(partition = %task.id(), error = %e, "consume error");
                }
                break;
            }
            None => break,
        }
        taken += 1;
    }
    taken
}

/// Runs until `shared.health.stopping` is set, then commits and leaves the group(s). `merge`: the consumer of the
/// repartition topic, polled by the same loop (the stages share nothing but the loop and its pool).
pub(crate) fn run(
    shared: &Shared,
    input: Arc<BaseConsumer<GroupContext>>,
    merge: Option<Arc<BaseConsumer<GroupContext>>>,
) -> Result<(), RunError> {
    let result = poll_loop(shared, &input, merge.as_deref());
    // A task's own queue holds its consumer: without the tasks, the consumers can close (and leave the group at
    // once, on an error too).
    for c in std::iter::once(&input).chain(merge.as_ref()) {
        c.context().lock().map.clear();
    }
    result
}

fn poll_loop(
    shared: &Shared,
    input: &BaseConsumer<GroupContext>,
    merge: Option<&BaseConsumer<GroupContext>>,
) -> Result<(), RunError> {
    input.subscribe(&[&shared.cfg.topics.input])?;
    if let Some(m) = merge {
        m.subscribe(&[&shared.cfg.topics.repartition])?;
    }
    let consumers: Vec<&BaseConsumer<GroupContext>> = std::iter::once(input).chain(merge).collect();
    let mut last_commit = Instant::now();
    let mut last_error_log = Instant::now() - Duration::from_secs(60);
    let ctx = input.context();
    let mut log_error = |e: KafkaError| {
        shared.metrics.kafka_errors.with_label_values(&[kafka::error_kind(&e)]).inc();
        // Broker outages repeat this every poll; one line per 10 s is enough.
        if last_error_log.elapsed() > Duration::from_secs(10) {
            tracing::warn!(error = %e, "consume error");
            last_error_log = Instant::now();
        }
    };
    let mut since_housekeeping = 0usize;
    while !shared.health.stopping.load(Ordering::Relaxed) {
        let mut worked = 0usize;
        for c in &consumers {
            // The consumer's own queue also serves rebalances, statistics and errors, so it is polled every round.
            for _ in 0..MAIN_DRAIN {
                match c.poll(Duration::ZERO) {
                    Some(Ok(m)) => handle(shared, c, &mut c.context().lock(), &m),
                    Some(Err(e)) => {
                        log_error(e);
                        break;
                    }
                    None => break,
                }
                worked += 1;
            }
            worked += drain_partitions(shared, c, &mut c.context().lock());
        }
        since_housekeeping += worked;
        if worked > 0 && since_housekeeping < HOUSEKEEPING_EVERY {
            continue;
        }
        since_housekeeping = 0;
        if let Some(why) = shared.health.fatal() {
            return Err(RunError::Fatal(why));
        }
        shared.health.beat();
        for c in &consumers {
            finish_restores(shared, c, &mut c.context().lock());
        }
        tend_inputs(shared, input, &mut ctx.lock());
        for c in &consumers {
            tend_tasks(shared, c, c.context().stage, &mut c.context().lock());
        }
        let pending: u64 =
            consumers.iter().map(|c| c.context().lock().map.values().map(|t| t.pending).sum::<u64>()).sum();
        if last_commit.elapsed() >= shared.cfg.commit_interval || pending >= shared.cfg.max_batch {
            for c in &consumers {
                let mut tasks = c.context().lock();
                commit_partitions(shared, c, &mut tasks, None)?;
                if let Some(p) = &tasks.alo {
                    p.poll(Duration::ZERO);
                }
            }
            last_commit = Instant::now();
        }
        if worked == 0 {
            shared.wake.wait(Duration::from_millis(50));
        }
    }
    tracing::info!("shutting down: committing and leaving the group");
    for c in &consumers {
        commit_partitions(shared, c, &mut c.context().lock(), None)?;
        c.unsubscribe();
    }
    // Serve the revokes that unsubscribing causes, then close.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && consumers.iter().any(|c| c.assignment().map(|a| a.count() > 0).unwrap_or(false)) {
        for c in &consumers {
            let _ = c.poll(Duration::from_millis(25));
        }
    }
    Ok(())
}
