//! One task: an input partition (stage 1: the engine) or a repartition partition (stage 2: the merge of zone and
//! label windows), with its transactional producer (exactly-once) and where it stands in its topic's log.
//!
//! Outputs of a record are produced as soon as the engine emits them; they become visible when the batch commits
//! (exactly-once: one transaction with the consumed offset, the frontier for the merge stage when it moved past a
//! window end, and now and then a state snapshot; at-least-once: the offset is committed after the outputs were
//! acknowledged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{Producer, PurgeConfig};

use super::bounded::{self, Stuck};
use super::kafka::{self, OutputProducer, Refused};
use super::repartition::{self, Applied};
use super::{Shared, now_ms};
use crate::engine::{Idleness, MergeEngine, Outputs, PartialWindow, PartitionEngine, SourceProgress};
use crate::reason::Reason;
use crate::records::DeadLetter;

/// Header names on dead letters and snapshots.
pub const REASON_HEADER: &str = "sensorpipe.reason";
pub const DETAIL_HEADER: &str = "sensorpipe.detail";
pub const SOURCE_HEADER: &str = "sensorpipe.source";
pub const ORIGINAL_SIZE_HEADER: &str = "sensorpipe.original.size";
pub const ORIGINAL_XXH3_HEADER: &str = "sensorpipe.original.xxh3";
pub(crate) const SNAPSHOT_OFFSET_HEADER: &str = "sensorpipe.snapshot.offset";
pub(crate) const SNAPSHOT_CHUNK_HEADER: &str = "sensorpipe.snapshot.chunk";

/// How much of a record too large to be a dead letter is kept (reason `too_large`).
pub(crate) const DEAD_LETTER_PREFIX: usize = 64 * 1024;

/// Snapshots are split into records of at most this size (the broker's default message size limit is 1 MB).
pub(crate) const SNAPSHOT_CHUNK: usize = 512 * 1024;

/// One input record as the task needs it.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Kafka timestamp (ms), when the record has one.
    pub timestamp_ms: Option<i64>,
}

/// Which stage a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Stage {
    /// An input partition: the engine.
    Input,
    /// A repartition partition: the merge of zone and label windows.
    Merge,
}

/// A task: a stage and a partition of that stage's topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TaskId {
    pub stage: Stage,
    pub partition: i32,
}

impl TaskId {
    /// The task of a partition of `topic`, if it is one of ours.
    pub(crate) fn of(shared: &Shared, topic: &str, partition: i32) -> Option<Self> {
        let topics = &shared.cfg.topics;
        if topic == topics.input {
            Some(Self { stage: Stage::Input, partition })
        } else if shared.merge && topic == topics.repartition {
            Some(Self { stage: Stage::Merge, partition })
        } else {
            None
        }
    }

    /// The topic the task consumes.
    pub(crate) fn topic(self, shared: &Shared) -> &str {
        match self.stage {
            Stage::Input => &shared.cfg.topics.input,
            Stage::Merge => &shared.cfg.topics.repartition,
        }
    }

    pub(crate) fn transactional_id(self, shared: &Shared) -> String {
        match self.stage {
            Stage::Input => format!("{}-{}", shared.cfg.transactional_id_prefix, self.partition),
            Stage::Merge => format!("{}-r{}", shared.cfg.transactional_id_prefix, self.partition),
        }
    }

    /// Key prefix of the task's snapshot chunks in the state topic.
    pub(crate) fn snapshot_prefix(self) -> String {
        match self.stage {
            Stage::Input => format!("p{}/", self.partition),
            Stage::Merge => format!("r{}/", self.partition),
        }
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stage {
            Stage::Input => write!(f, "{}", self.partition),
            Stage::Merge => write!(f, "r{}", self.partition),
        }
    }
}

/// The state of a task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per task, so size does not matter; a Box would cost a hop per record
pub(crate) enum TaskEngine {
    Input(PartitionEngine),
    Merge(MergeEngine),
}

impl TaskEngine {
    fn snapshot(&self) -> Vec<u8> {
        match self {
            TaskEngine::Input(e) => e.snapshot(),
            TaskEngine::Merge(m) => m.snapshot(),
        }
    }
}

/// Stage 1: how far the input partition's consumer is, from librdkafka's statistics, to tell an idle partition
/// from one the worker cannot fetch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FetchState {
    /// Fetching from a reachable leader, nothing queued, and the fetch position at the partition's end.
    pub caught_up: bool,
    /// The partition's end (the last stable offset: the consumer reads committed records).
    pub end: Option<i64>,
    pub at: Option<Instant>,
}

impl FetchState {
    /// Caught up, according to statistics at most 3 intervals old.
    fn fresh_caught_up(&self) -> bool {
        self.caught_up && self.at.is_some_and(|t| t.elapsed() < Duration::from_secs(3))
    }
}

pub(crate) struct PartitionTask {
    pub partition: i32,
    pub stage: Stage,
    /// `None` until the state is restored (first record after assignment, or after an aborted batch).
    pub engine: Option<TaskEngine>,
    /// The restore under way, its partition paused meanwhile.
    pub restoring: Option<super::restore::Pending>,
    /// The partition's own queue, split off the consumer's once the state is restored (`parallel`).
    pub queue: Option<Arc<super::parallel::TaskQueue>>,
    /// Exactly-once: this partition's transactional producer, created on first use (which fences older owners).
    /// Shared with the helper thread of a transactional call (`bounded`), which may outlive a producer given up.
    pub producer: Option<Arc<OutputProducer>>,
    in_txn: bool,
    /// How far the open transaction's commit got before an attempt was cut short (a timeout): a retry goes on
    /// from there, since librdkafka wants a timed-out `commit_transaction` called again, not the steps before it
    /// (a second `send_offsets` then fails, and aborting a commit that in fact completed would redo the batch).
    commit_progress: CommitProgress,
    /// Records before this offset are already reflected in the state (skipped when seen again).
    pub resume_at: Option<i64>,
    /// The offset after the last processed record.
    pub next_offset: Option<i64>,
    /// The offset after the last committed batch.
    pub committed: Option<i64>,
    /// Records processed since the last commit.
    pub pending: u64,
    /// When the last snapshot was committed; `None` until the first, so the first commit after a restore always
    /// carries one (a committed offset must never be newer than every snapshot: the state would restore empty).
    last_snapshot: Option<Instant>,
    pub last_timestamp_ms: Option<i64>,
    pub high_watermark: Option<i64>,
    /// The consumer's position: past the last record handed to the worker and past the transaction markers
    /// after it, which the worker never sees. A transactional topic's partition ends in a marker, so without this
    /// an idle partition of the repartition topic would show a lag of 1 for good (and fail /healthz).
    pub position: Option<i64>,
    /// Stage 1: processing-time idleness of the input partition.
    pub idle: Idleness,
    pub fetch: FetchState,
    /// Stage 1: the frontier last committed to the merge stage, and the one in the open transaction.
    published: Option<i64>,
    publishing: Option<i64>,
    /// The open transaction moved an idle partition's watermark: it must carry a snapshot, since a restore
    /// replays records only and would not redo the move.
    force_snapshot: bool,
    out: Outputs,
    value: Vec<u8>,
    consumed: [u64; 2],
    /// Batches given up in a row (aborted, refused, stuck); 0 after a commit. Sets the backoff.
    pub failures: u32,
    /// While set, the partition is paused and its batch waits to be redone (capped exponential backoff).
    pub blocked_until: Option<Instant>,
    /// Why the last batch was given up.
    pub failure: Option<String>,
    /// The last commit, or when the task last had no lag: a task with lag and no progress for the stall timeout
    /// fails /healthz.
    pub progress_at: Instant,
}

/// The steps of a commit already done for the open transaction.
#[derive(Clone, Copy, Debug, Default)]
struct CommitProgress {
    /// A snapshot is in the transaction.
    snapshot: bool,
    /// The frontier for the merge stage is in the transaction (if it had moved past a window end).
    progress: bool,
    /// The input offset is in the transaction.
    offsets: bool,
    /// `commit_transaction` was called.
    committing: bool,
}

/// What went wrong while committing a partition.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// The batch was aborted; its records must be processed again from the last commit.
    #[error("transaction aborted: {0}")]
    Aborted(KafkaError),
    /// A fatal producer error: a newer owner fenced it, or its transaction outlived `transaction.timeout.ms` and
    /// the coordinator moved the epoch on. The producer cannot be used again.
    #[error("fenced: {0}")]
    Fenced(KafkaError),
    /// The broker did not answer in time; the batch stays open and is retried.
    #[error("commit not finished yet: {0}")]
    Retry(KafkaError),
    /// A call never returned; the producer was given up and the batch must be processed again.
    #[error(transparent)]
    Stuck(#[from] Stuck),
    /// The broker refused an output of the batch (too large for the topic, topic deleted, no ACL): the batch is
    /// aborted and redone after a backoff, since committing it would lose the output.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Why a partition could not be made ready (producer, committed offset, restore).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Stuck(#[from] Stuck),
}

impl TaskError {
    /// The metric label of the error (`kafka_errors_total{kind}`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TaskError::Kafka(e) => kafka::error_kind(e),
            TaskError::Stuck(_) => "stuck",
        }
    }
}

impl PartitionTask {
    pub(crate) fn new(id: TaskId) -> Self {
        Self {
            partition: id.partition,
            stage: id.stage,
            engine: None,
            restoring: None,
            queue: None,
            producer: None,
            in_txn: false,
            commit_progress: CommitProgress::default(),
            resume_at: None,
            next_offset: None,
            committed: None,
            pending: 0,
            last_snapshot: None,
            last_timestamp_ms: None,
            high_watermark: None,
            position: None,
            idle: Idleness::default(),
            fetch: FetchState::default(),
            published: None,
            publishing: None,
            force_snapshot: false,
            out: Outputs::default(),
            value: Vec::with_capacity(512),
            consumed: [0; 2],
            failures: 0,
            blocked_until: None,
            failure: None,
            progress_at: Instant::now(),
        }
    }

    pub(crate) fn id(&self) -> TaskId {
        TaskId { stage: self.stage, partition: self.partition }
    }

    /// Exactly-once: creates this partition's transactional producer and runs `init_transactions`, which aborts
    /// whatever a previous owner (a crashed or zombie worker) left open and fences it from committing.
    pub(crate) fn ensure_producer(&mut self, shared: &Shared) -> Result<(), TaskError> {
        if self.producer.is_some() || shared.cfg.delivery != super::Delivery::ExactlyOnce {
            return Ok(());
        }
        let id = self.id().transactional_id(shared);
        let producer: Arc<OutputProducer> = Arc::new(
            kafka::producer(&shared.cfg, Some(&id))
                .create_with_context(kafka::DeliveryContext::new(shared.metrics.clone()))?,
        );
        let timeout = shared.kafka_timeout;
        bounded::call(&producer, "init_transactions", timeout, move |p| p.init_transactions(timeout))??;
        self.producer = Some(producer);
        Ok(())
    }

    /// Forgets a producer whose call never returned (see `bounded`); the next `ensure_producer` fences it.
    fn give_up_producer(&mut self, shared: &Shared, stuck: &Stuck) {
        tracing::error!(partition = self.partition, error = %stuck, "replacing the producer");
        shared.metrics.kafka_errors.with_label_values(&["stuck"]).inc();
        self.producer = None;
    }

    /// Begins the transaction (exactly-once) if none is open.
    fn begin(&mut self) -> KafkaResult<()> {
        if let Some(p) = &self.producer
            && !self.in_txn
        {
            p.begin_transaction()?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Processes one record: engine or merge stage, then outputs to the producer (`alo`: the shared
    /// at-least-once producer). `now_ms`: the loop's clock.
    pub(crate) fn process(
        &mut self,
        shared: &Shared,
        alo: Option<&OutputProducer>,
        record: &Input<'_>,
        now_ms: i64,
    ) -> KafkaResult<()> {
        let own = self.producer.clone();
        let Some(producer) = own.as_deref().or(alo) else { return Ok(()) };
        if self.engine.is_none() {
            return Ok(());
        }
        self.begin()?;
        let id = self.id();
        let out = &mut self.out;
        match self.engine.as_mut() {
            Some(TaskEngine::Input(engine)) => {
                let late_before = engine.late_for_rules();
                engine.process(record.payload, out);
                let late_for_rules = engine.late_for_rules() - late_before;
                if late_for_rules > 0 {
                    shared.metrics.late_records.with_label_values(&["within_allowed_lateness"]).inc_by(late_for_rules);
                }
                self.idle.on_record(now_ms, engine.watermark());
            }
            Some(TaskEngine::Merge(merge)) => match repartition::apply(merge, record.payload, &mut out.aggregates) {
                Applied::Partial(result) => shared.metrics.merge_partials.with_label_values(&[result.as_str()]).inc(),
                Applied::Progress => {}
                Applied::Invalid(detail) => {
                    out.dead_letters.push(DeadLetter::new(Reason::MalformedJson, detail, record.payload))
                }
            },
            None => {}
        }
        self.consumed[usize::from(!out.dead_letters.is_empty())] += 1;
        let result = emit(shared, producer, &mut self.value, out, Some(record), id);
        out.clear();
        result?;
        self.next_offset = Some(record.offset + 1);
        self.last_timestamp_ms = record.timestamp_ms.or(self.last_timestamp_ms);
        self.pending += 1;
        Ok(())
    }

    /// Publishes counters gathered per record, once per batch.
    pub(crate) fn flush_counters(&mut self, shared: &Shared) {
        let id = self.id();
        let topic = id.topic(shared);
        let [ok, dead] = std::mem::take(&mut self.consumed);
        shared.metrics.records_consumed.with_label_values(&[topic, "reading"]).inc_by(ok);
        shared.metrics.records_consumed.with_label_values(&[topic, "dead_letter"]).inc_by(dead);
    }

    fn snapshot_due(&self, shared: &Shared) -> bool {
        self.force_snapshot || self.last_snapshot.is_none_or(|t| t.elapsed() >= shared.cfg.snapshot_interval)
    }

    /// Stage 1: moves an idle partition's watermark on with the clock (see `engine::Idleness`), when that changes
    /// something — a reading released, a silence due, a window closed, or a frontier the merge stage waits for —
    /// not on every tick, since each move is committed with a snapshot. Returns whether it moved.
    pub(crate) fn advance_idle(
        &mut self,
        shared: &Shared,
        alo: Option<&OutputProducer>,
        now_ms: i64,
    ) -> KafkaResult<bool> {
        let pipeline = &shared.pipeline;
        if !self.fetch.fresh_caught_up() || self.pending > 0 {
            return Ok(false);
        }
        let Some(TaskEngine::Input(engine)) = &self.engine else { return Ok(false) };
        let Some(w) = self.idle.watermark(now_ms, pipeline.idle_timeout_ms(), pipeline.out_of_orderness_ms()) else {
            return Ok(false);
        };
        let frontier = w.saturating_sub(engine.lateness_ms());
        let due = engine.next_due().is_some_and(|d| w >= d)
            || (shared.merge && pipeline.merge_window_ends_in(self.published.max(engine.frontier()), frontier));
        if !due || engine.watermark().is_some_and(|current| current >= w) {
            return Ok(false);
        }
        let own = self.producer.clone();
        let Some(producer) = own.as_deref().or(alo) else { return Ok(false) };
        self.begin()?;
        let Some(TaskEngine::Input(engine)) = &mut self.engine else { return Ok(false) };
        engine.advance_watermark(w, &mut self.out);
        let id = self.id();
        let result = emit(shared, producer, &mut self.value, &self.out, None, id);
        self.out.clear();
        result?;
        shared.metrics.idle_advances.inc();
        self.force_snapshot = true;
        // Counts as work in the batch, so the batch commits (with the snapshot, and the frontier if it moved).
        self.pending += 1;
        Ok(true)
    }

    /// Stage 1: the partition's frontier to every repartition partition, when it passed a zone or label window
    /// end since the last one committed. Produced after the batch's partials, in the same transaction.
    fn produce_progress(&mut self, shared: &Shared, producer: &OutputProducer) -> KafkaResult<()> {
        let Some(TaskEngine::Input(engine)) = &self.engine else { return Ok(()) };
        let Some(frontier) = engine.frontier().filter(|_| shared.merge) else { return Ok(()) };
        if !shared.pipeline.merge_window_ends_in(self.published, frontier) {
            return Ok(());
        }
        let progress = SourceProgress { source: self.partition, sources: shared.input_partitions, frontier };
        self.value.clear();
        serde_json::to_writer(&mut self.value, &repartition::Outgoing::Progress(&progress))
            .map_err(|e| KafkaError::MessageProduction(json_error(&e)))?;
        let key = format!("progress/{}", self.partition);
        for p in 0..shared.repartition_partitions {
            kafka::send(producer, &shared.cfg.topics.repartition, Some(p), Some(key.as_bytes()), &self.value, None)?;
        }
        self.publishing = Some(frontier);
        Ok(())
    }

    /// Produces the engine state, in chunks, keyed by input partition, tagged with the offset it covers.
    fn produce_snapshot(&self, shared: &Shared, producer: &OutputProducer) -> KafkaResult<()> {
        let (Some(engine), Some(offset)) = (&self.engine, self.next_offset) else { return Ok(()) };
        let bytes = engine.snapshot();
        shared.metrics.snapshot_bytes.set(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
        let chunks: Vec<&[u8]> = bytes.chunks(SNAPSHOT_CHUNK).collect();
        let offset_text = offset.to_string();
        for (i, chunk) in chunks.iter().enumerate() {
            let key = format!("{}c{i}", self.id().snapshot_prefix());
            let chunk_text = format!("{i}/{}", chunks.len());
            let h = kafka::headers(&[
                (SNAPSHOT_OFFSET_HEADER, offset_text.as_bytes()),
                (SNAPSHOT_CHUNK_HEADER, chunk_text.as_bytes()),
            ]);
            let partition = self.partition % shared.state_partitions.max(1);
            kafka::send(producer, &shared.cfg.topics.state, Some(partition), Some(key.as_bytes()), chunk, Some(h))?;
        }
        Ok(())
    }

    /// Exactly-once: commits the open transaction with the input offset (and a snapshot when due).
    pub(crate) fn commit_transaction(
        &mut self,
        shared: &Shared,
        group: &Arc<ConsumerGroupMetadata>,
    ) -> Result<(), CommitError> {
        let (Some(producer), Some(next)) = (self.producer.clone(), self.next_offset) else { return Ok(()) };
        if self.pending == 0 || !self.in_txn {
            return Ok(());
        }
        let result = self.commit_steps(shared, &producer, group, next);
        match &result {
            Err(CommitError::Stuck(stuck)) => self.give_up_producer(shared, stuck),
            // librdkafka: a producer with a fatal error must be destroyed. `prepare` makes the next one, and only
            // while the group still assigns the partition, so a zombie never fences the partition's new owner.
            Err(CommitError::Fenced(_)) => self.producer = None,
            _ => {}
        }
        result
    }

    fn commit_steps(
        &mut self,
        shared: &Shared,
        producer: &Arc<OutputProducer>,
        group: &Arc<ConsumerGroupMetadata>,
        next: i64,
    ) -> Result<(), CommitError> {
        let classify = |e: KafkaError| -> CommitError {
            match &e {
                KafkaError::Transaction(t) if t.is_fatal() => CommitError::Fenced(e),
                KafkaError::Transaction(t) if t.txn_requires_abort() => CommitError::Aborted(e),
                KafkaError::Transaction(t) if t.is_retriable() => CommitError::Retry(e),
                _ => CommitError::Aborted(e),
            }
        };
        let started = Instant::now();
        if !self.commit_progress.committing {
            if !self.commit_progress.progress {
                self.produce_progress(shared, producer).map_err(CommitError::Aborted)?;
                self.commit_progress.progress = true;
            }
            if !self.commit_progress.snapshot && self.snapshot_due(shared) {
                self.produce_snapshot(shared, producer).map_err(CommitError::Aborted)?;
                self.commit_progress.snapshot = true;
            }
            if !self.commit_progress.offsets {
                let mut offsets = TopicPartitionList::new();
                offsets
                    .add_partition_offset(self.id().topic(shared), self.partition, Offset::Offset(next))
                    .map_err(CommitError::Aborted)?;
                let (group, timeout) = (group.clone(), shared.kafka_timeout);
                bounded::call(producer, "send_offsets", timeout, move |p| {
                    p.send_offsets_to_transaction(&offsets, &group, timeout)
                })?
                .map_err(classify)?;
                self.commit_progress.offsets = true;
            }
            // Outputs acknowledged first, so the flush inside `commit_transaction` has nothing left to wait for.
            if !kafka::flush(producer, shared.kafka_timeout).map_err(CommitError::Aborted)? {
                return Err(CommitError::Retry(KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)));
            }
            // `commit_transaction` would fail too, but without saying which output and why.
            if let Some(refused) = producer.context().take_refusal() {
                return Err(CommitError::Refused(refused));
            }
            self.commit_progress.committing = true;
        }
        let timeout = shared.kafka_timeout;
        bounded::call(producer, "commit_transaction", timeout, move |p| p.commit_transaction(timeout))?
            .map_err(classify)?;
        shared.metrics.commit_duration.observe(started.elapsed().as_secs_f64());
        shared.metrics.transactions.with_label_values(&["committed"]).inc();
        self.in_txn = false;
        self.committed = Some(next);
        self.pending = 0;
        self.succeeded();
        if std::mem::take(&mut self.commit_progress).snapshot {
            self.last_snapshot = Some(Instant::now());
            self.force_snapshot = false;
        }
        self.published = self.publishing.take().or(self.published);
        Ok(())
    }

    /// Abandons the open transaction (exactly-once) and the state built since the last commit; the records are
    /// processed again from `committed`.
    /// Returns the first output of the batch that the broker refused, if one was.
    pub(crate) fn abort(&mut self, shared: &Shared) -> Option<Refused> {
        let mut refused = None;
        if let Some(p) = &self.producer
            && self.in_txn
        {
            let aborted = abort_transaction(p, shared.kafka_timeout);
            // Refusals of this batch's outputs (their reports served while aborting) are answered by redoing
            // it; they must not fail the next one.
            refused = p.context().take_refusal();
            match aborted {
                Ok(Ok(())) => shared.metrics.transactions.with_label_values(&["aborted"]).inc(),
                Err(stuck) => self.give_up_producer(shared, &stuck),
                Ok(Err(e)) => {
                    // Any further call on this producer would fail ("conflicting API call in progress"). A new
                    // one with the same transactional id aborts the open transaction on the broker and fences
                    // this one (`init_transactions` in `ensure_producer`).
                    tracing::warn!(partition = self.partition, error = %e, "abort failed; replacing the producer");
                    self.producer = None;
                }
            }
        }
        self.in_txn = false;
        self.commit_progress = CommitProgress::default();
        self.engine = None;
        self.pending = 0;
        self.next_offset = self.committed;
        self.last_snapshot = None;
        self.publishing = None;
        self.force_snapshot = false;
        refused
    }

    /// At-least-once: a snapshot rides along before the flush that precedes the offset commit.
    /// At-least-once: the frontier for the merge stage rides along too.
    pub(crate) fn snapshot_at_least_once(&mut self, shared: &Shared, producer: &OutputProducer) -> KafkaResult<()> {
        if self.pending > 0 {
            self.produce_progress(shared, producer)?;
            if self.snapshot_due(shared) {
                self.produce_snapshot(shared, producer)?;
                self.last_snapshot = Some(Instant::now());
                self.force_snapshot = false;
            }
        }
        Ok(())
    }

    /// At-least-once: the offsets were committed after the outputs were acknowledged.
    pub(crate) fn committed_at_least_once(&mut self) {
        self.committed = self.next_offset;
        self.pending = 0;
        self.succeeded();
        self.published = self.publishing.take().or(self.published);
    }

    /// A batch committed: the backoff starts over.
    fn succeeded(&mut self) {
        self.failures = 0;
        self.failure = None;
        self.progress_at = Instant::now();
    }

    /// The batch was given up (after `abort`): the partition waits `backoff(failures)` before it is redone, so an
    /// output the broker keeps refusing costs a retry every 30 s at most, not a hot loop of restores.
    pub(crate) fn back_off(&mut self, why: String) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff(self.failures);
        self.blocked_until = Some(Instant::now() + delay);
        self.failure = Some(why);
        delay
    }

    /// The records the partition has and has not processed, when known.
    pub(crate) fn lag(&self) -> Option<i64> {
        let processed = self.next_offset.or(self.committed)?.max(self.position.unwrap_or(i64::MIN));
        Some((self.high_watermark? - processed).max(0))
    }

    /// Updates the per-partition gauges.
    pub(crate) fn observe(&self, shared: &Shared) {
        let m = &shared.metrics;
        let p = self.partition.to_string();
        let id = self.id();
        let topic = id.topic(shared);
        if let Some(lag) = self.lag() {
            m.lag_records.with_label_values(&[topic, &p]).set(lag);
            let seconds = match (lag, self.last_timestamp_ms) {
                (0, _) | (_, None) => 0.0,
                (_, Some(ts)) => ((now_ms() - ts).max(0) as f64) / 1000.0,
            };
            m.lag_seconds.with_label_values(&[topic, &p]).set(seconds);
        }
        if let Some(TaskEngine::Merge(merge)) = &self.engine {
            m.merge_open_windows.with_label_values(&[&p]).set(merge.open_windows() as i64);
        }
        if let Some(TaskEngine::Input(engine)) = &self.engine {
            if let Some(w) = engine.watermark() {
                m.watermark_delay.with_label_values(&[&p]).set(((now_ms() - w).max(0) as f64) / 1000.0);
            }
            let stats = engine.stats();
            m.open_windows.with_label_values(&[&p]).set(stats.open_windows as i64);
            m.buffered_readings.with_label_values(&[&p]).set(stats.buffered as i64);
            m.sensors.with_label_values(&[&p]).set(stats.sensors as i64);
            m.group_values.with_label_values(&[&p]).set(stats.groups as i64);
            for (rule, open) in engine.active_anomalies() {
                m.active_anomalies.with_label_values(&[&p, rule]).set(open as i64);
            }
        }
    }
}

/// Aborts the open transaction as librdkafka requires of a producer without a background poll thread: the
/// outstanding outputs are purged and their delivery reports served first (`abort_transaction` waits for them,
/// and nothing else would serve them while it blocks), and an abort that timed out is called again rather than
/// followed by another API call.
fn abort_transaction(producer: &Arc<OutputProducer>, timeout: Duration) -> Result<KafkaResult<()>, Stuck> {
    producer.purge(PurgeConfig::default().queue().inflight());
    let mut attempts = 0;
    loop {
        if let Err(e) = kafka::flush(producer, timeout) {
            return Ok(Err(e));
        }
        match bounded::call(producer, "abort_transaction", timeout, move |p| p.abort_transaction(timeout))? {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 3 => attempts += 1,
            other => return Ok(other),
        }
    }
}

/// Produces the outputs of one input record (`record`), or of an idle partition's watermark move (`None`).
fn emit(
    shared: &Shared,
    producer: &OutputProducer,
    value: &mut Vec<u8>,
    out: &Outputs,
    record: Option<&Input<'_>>,
    task: TaskId,
) -> KafkaResult<()> {
    if out.is_empty() {
        return Ok(());
    }
    let m = &shared.metrics;
    let topics = &shared.cfg.topics;
    let now = now_ms();
    let since_ingest = record.and_then(|r| r.timestamp_ms).map(|ts| ((now - ts).max(0) as f64) / 1000.0);
    let since = |event_ms: i64| ((now - event_ms).max(0) as f64) / 1000.0;
    for a in &out.anomalies {
        value.clear();
        serde_json::to_writer(&mut *value, a).map_err(|e| KafkaError::MessageProduction(json_error(&e)))?;
        kafka::send(producer, &topics.anomalies, None, Some(a.sensor.as_bytes()), value, None)?;
        m.anomalies.with_label_values(&[&a.rule, a.severity.as_str(), a.state.as_str()]).inc();
        m.observe_zone_anomaly(a.zone.as_deref(), &a.rule, a.state.as_str());
        m.event_to_emit.with_label_values(&["anomaly"]).observe(since(a.event_time));
    }
    for a in &out.aggregates {
        value.clear();
        serde_json::to_writer(&mut *value, a).map_err(|e| KafkaError::MessageProduction(json_error(&e)))?;
        let key = a.key.as_deref().unwrap_or(&a.aggregation);
        kafka::send(producer, &topics.aggregates, None, Some(key.as_bytes()), value, None)?;
        m.aggregates.with_label_values(&[&a.aggregation]).inc();
        m.event_to_emit.with_label_values(&["aggregate"]).observe(since(a.window_end));
        m.observe_aggregate(a);
    }
    for p in &out.partials {
        produce_partial(shared, producer, value, p)?;
    }
    if let Some(record) = record {
        for d in &out.dead_letters {
            let source = format!("{}/{}@{}", task.topic(shared), task.partition, record.offset);
            let size = record.payload.len() + record.key.map_or(0, <[u8]>::len) + d.detail.len() + source.len();
            let reason = if size > shared.dead_letter_limit {
                // As it is, the dead letter could never be produced (the batch would be redone for ever): a
                // prefix goes instead, with what identifies the original.
                let detail = format!(
                    "first reason {}: {}; the record of {} bytes is cut to its first {DEAD_LETTER_PREFIX} bytes",
                    d.reason,
                    d.detail,
                    record.payload.len()
                );
                let size = record.payload.len().to_string();
                let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(record.payload));
                let h = kafka::headers(&[
                    (REASON_HEADER, Reason::TooLarge.as_str().as_bytes()),
                    (DETAIL_HEADER, detail.as_bytes()),
                    (SOURCE_HEADER, source.as_bytes()),
                    (ORIGINAL_SIZE_HEADER, size.as_bytes()),
                    (ORIGINAL_XXH3_HEADER, hash.as_bytes()),
                ]);
                let prefix = &record.payload[..record.payload.len().min(DEAD_LETTER_PREFIX)];
                kafka::send(producer, &topics.dead_letter, None, record.key, prefix, Some(h))?;
                Reason::TooLarge
            } else {
                let h = kafka::headers(&[
                    (REASON_HEADER, d.reason.as_str().as_bytes()),
                    (DETAIL_HEADER, d.detail.as_bytes()),
                    (SOURCE_HEADER, source.as_bytes()),
                ]);
                kafka::send(producer, &topics.dead_letter, None, record.key, record.payload, Some(h))?;
                d.reason
            };
            m.dead_letters.with_label_values(&[reason.as_str()]).inc();
            if d.reason == Reason::Late {
                m.late_records.with_label_values(&["beyond_allowed_lateness"]).inc();
            }
        }
    }
    if let Some(s) = since_ingest {
        for _ in 0..out.len() {
            m.ingest_to_emit.observe(s);
        }
    }
    Ok(())
}

/// Stage 1: one partial window to the repartition partition of its group.
fn produce_partial(
    shared: &Shared,
    producer: &OutputProducer,
    value: &mut Vec<u8>,
    p: &PartialWindow,
) -> KafkaResult<()> {
    value.clear();
    serde_json::to_writer(&mut *value, &repartition::Outgoing::Partial(p))
        .map_err(|e| KafkaError::MessageProduction(json_error(&e)))?;
    let partition = repartition::partition_of(&p.aggregation, p.key.as_deref(), shared.repartition_partitions);
    let key = repartition::partial_key(p);
    kafka::send(producer, &shared.cfg.topics.repartition, Some(partition), Some(key.as_bytes()), value, None)
}

fn json_error(_: &serde_json::Error) -> rdkafka::types::RDKafkaErrorCode {
    // Serialising our own records cannot fail (no maps with non-string keys, no failing Serialize impls).
    rdkafka::types::RDKafkaErrorCode::InvalidMessage
}

/// The wait before the `failures`-th retry of a batch given up: 250 ms, doubling, at most 30 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(30);
    FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(CAP)
}

/// How long to wait between retries of a commit the broker did not finish.
pub(crate) const RETRY_BACKOFF: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_to_half_a_minute() {
        let waits: Vec<u128> = (1..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }
}
