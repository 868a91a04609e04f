//! Rebuilding a task's state after an assignment or an aborted batch: an input partition's engine (stage 1) or
//! a repartition partition's merge stage (stage 2), the same way.
//!
//! The state at input offset `C` (where the consumer resumes) is the newest snapshot taken at an offset `S ≤ C`,
//! plus the input records `[S, C)` processed again with their outputs discarded — they were committed with the
//! batches that first produced them. The engine is deterministic and reads no clock, so replaying the same
//! records from the same state gives the same state; a snapshot is a function of the offset it was taken at,
//! which also makes a snapshot from an aborted transaction (visible on brokers that do not filter them) valid.
//! See docs/runtime.md.
//!
//! A restore runs on a thread of its own ([`Pending`]) while its partition is paused, so the group loop goes on
//! polling — the group's `max.poll.interval.ms`, the other partitions' batches and their transactions' timeouts
//! never wait for a big state to be read. It holds at most two snapshots in memory (the best so far and the one
//! being reassembled), and it fails rather than returns a state short of the committed offset.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::Shared;
use super::kafka;
use super::partition::{SNAPSHOT_CHUNK_HEADER, SNAPSHOT_OFFSET_HEADER, Stage, TaskEngine, TaskId};
use super::repartition;
use crate::engine::Outputs;

/// Where a restored state came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Snapshot,
    /// A snapshot of an earlier compatible definition: unchanged rules and aggregations kept their state, the
    /// others started empty.
    Migrated,
    /// No usable snapshot: the state starts empty at the resume offset.
    Empty,
    /// A snapshot of a definition with other input fields or event-time bounds: the state starts empty at the
    /// resume offset.
    Incompatible,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Snapshot => "snapshot",
            Source::Migrated => "migrated",
            Source::Empty => "empty",
            Source::Incompatible => "incompatible",
        }
    }
}

/// Why a restore gave no state.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The log ends before the committed offset: the records the state must include are not there (the topic
    /// was recreated, or an unclean leader election truncated it).
    #[error(
        "the replay of {topic}/{partition} ended at offset {reached}, before the committed offset {resume}: the log \
         was truncated or recreated; reset the group's offsets to go on without that state"
    )]
    Short { topic: String, partition: i32, reached: i64, resume: i64 },
    /// The partition was taken away while restoring.
    #[error("cancelled")]
    Cancelled,
    #[error("the restore thread ended without a result")]
    Lost,
}

impl RestoreError {
    /// The metric label of the error (`kafka_errors_total{kind}`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            RestoreError::Kafka(e) => kafka::error_kind(e),
            RestoreError::Short { .. } => "restore_short",
            RestoreError::Cancelled | RestoreError::Lost => "restore",
        }
    }
}

/// A restore in progress on its own thread; dropping it (the partition was revoked) cancels the read.
pub(crate) struct Pending {
    /// The input offset the state is restored as of, where the consumer resumes.
    pub resume: i64,
    cancel: Arc<AtomicBool>,
    result: mpsc::Receiver<Result<TaskEngine, RestoreError>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("resume", &self.resume).finish_non_exhaustive()
    }
}

impl Pending {
    /// Starts restoring `task` as of `resume`; `/readyz` fails until it is done.
    pub(crate) fn start(shared: Arc<Shared>, task: TaskId, resume: i64) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, result) = mpsc::sync_channel(1);
        shared.health.restoring.fetch_add(1, Ordering::Relaxed);
        let (flag, counted) = (cancel.clone(), shared.clone());
        let spawned = std::thread::Builder::new().name(format!("restore-{task}")).spawn(move || {
            let restored = restore(&shared, task, resume, &flag).map(|(engine, _)| engine);
            shared.health.restoring.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(restored);
        });
        if let Err(e) = spawned {
            // The closure (and its sender) is gone: `take` answers `Lost`, and the partition retries.
            tracing::error!(partition = %task, error = %e, "starting a restore thread failed");
            counted.health.restoring.fetch_sub(1, Ordering::Relaxed);
        }
        Self { resume, cancel, result }
    }

    /// The result, once the restore is over.
    pub(crate) fn take(&self) -> Option<Result<TaskEngine, RestoreError>> {
        match self.result.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(RestoreError::Lost)),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// A task's empty state.
fn fresh(shared: &Shared, task: TaskId) -> TaskEngine {
    match task.stage {
        Stage::Input => TaskEngine::Input(shared.pipeline.engine()),
        Stage::Merge => TaskEngine::Merge(shared.pipeline.merge_engine()),
    }
}

fn decode(
    shared: &Shared,
    task: TaskId,
    bytes: &[u8],
) -> Result<(TaskEngine, crate::engine::Migration), crate::engine::SnapshotError> {
    match task.stage {
        Stage::Input => shared.pipeline.restore_migrating(bytes).map(|(e, m)| (TaskEngine::Input(e), m)),
        Stage::Merge => shared.pipeline.restore_merge(bytes).map(|(e, m)| (TaskEngine::Merge(e), m)),
    }
}

/// The state of `task` as of offset `resume` of its topic.
pub(crate) fn restore(
    shared: &Shared,
    task: TaskId,
    resume: i64,
    cancel: &AtomicBool,
) -> Result<(TaskEngine, Source), RestoreError> {
    let started = Instant::now();
    let partition = task.to_string();
    let (engine, source, from) = match latest_snapshot(shared, task, resume, cancel)? {
        Some((offset, bytes)) => match decode(shared, task, &bytes) {
            Ok((engine, migration)) if migration.is_empty() => (engine, Source::Snapshot, offset),
            Ok((engine, migration)) => {
                tracing::info!(partition, reset = ?migration.reset, dropped = ?migration.dropped,
                    "snapshot of an earlier definition: unchanged rules keep their state, these start empty");
                (engine, Source::Migrated, offset)
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "snapshot not usable; starting with empty state");
                (fresh(shared, task), Source::Incompatible, resume)
            }
        },
        None => (fresh(shared, task), Source::Empty, resume),
    };
    let mut engine = engine;
    if let TaskEngine::Input(e) = &mut engine
        && shared.merge
    {
        e.emit_partials(task.partition);
    }
    let replayed = if from < resume { replay(shared, task, from, resume, &mut engine, cancel)? } else { 0 };
    let m = &shared.metrics;
    m.restores.with_label_values(&[source.as_str()]).inc();
    m.restore_replayed.inc_by(replayed);
    m.restore_duration.observe(started.elapsed().as_secs_f64());
    m.restore_last_duration.set(started.elapsed().as_secs_f64());
    tracing::info!(
        partition,
        resume,
        snapshot_offset = from,
        replayed,
        source = source.as_str(),
        ms = started.elapsed().as_millis() as u64,
        "state restored"
    );
    Ok((engine, source))
}

fn header<'a>(m: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// A snapshot being reassembled from its chunks.
struct Building {
    offset: i64,
    total: usize,
    bytes: Vec<u8>,
    next: usize,
}

/// The newest complete snapshot of `task` taken at an offset ≤ `resume`.
fn latest_snapshot(
    shared: &Shared,
    task: TaskId,
    resume: i64,
    cancel: &AtomicBool,
) -> Result<Option<(i64, Vec<u8>)>, RestoreError> {
    let topic = &shared.cfg.topics.state;
    let state_partition = task.partition % shared.state_partitions.max(1);
    let consumer: BaseConsumer = kafka::reader(&shared.cfg, false).create()?;
    // From the low watermark as an explicit offset: assigning `Beginning` costs librdkafka an extra half-second
    // offset lookup per restore (measured: 513 ms to the end of an empty partition, 14 ms this way).
    let (low, high) = consumer.fetch_watermarks(topic, state_partition, shared.kafka_timeout)?;
    if high <= low {
        return Ok(None); // nothing was ever snapshotted here (or all of it expired): no read at all
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, state_partition, Offset::Offset(low.max(0)))?;
    consumer.assign(&tpl)?;
    let prefix = task.snapshot_prefix();
    let mut best: Option<(i64, Vec<u8>)> = None;
    let mut building: Option<Building> = None;
    for message in read_until(&consumer, (topic, state_partition), i64::MAX, shared.kafka_timeout, cancel) {
        let message = message?;
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or_default();
        if !key.starts_with(&prefix) {
            continue;
        }
        let offset = header(&message, SNAPSHOT_OFFSET_HEADER).and_then(|v| v.parse::<i64>().ok());
        let chunk = header(&message, SNAPSHOT_CHUNK_HEADER).and_then(|v| {
            let (i, n) = v.split_once('/')?;
            Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?))
        });
        let (Some(offset), Some((index, total))) = (offset, chunk) else { continue };
        let payload = message.payload().unwrap_or_default();
        if index == 0 {
            building = Some(Building { offset, total, bytes: Vec::new(), next: 0 });
        }
        // Chunks of one snapshot are consecutive records of one transaction; anything else breaks the set.
        match building.as_mut() {
            Some(b) if b.offset == offset && b.total == total && b.next == index => {
                b.bytes.extend_from_slice(payload);
                b.next += 1;
            }
            _ => {
                building = None;
                continue;
            }
        }
        if index + 1 == total
            && let Some(b) = building.take()
            && b.offset <= resume
            && best.as_ref().is_none_or(|(o, _)| b.offset >= *o)
        {
            best = Some((b.offset, b.bytes));
        }
    }
    Ok(best)
}

/// Processes the records `[from, to)` of the task's partition into its state, discarding outputs; fails when the
/// log ends before `to`.
fn replay(
    shared: &Shared,
    task: TaskId,
    from: i64,
    to: i64,
    engine: &mut TaskEngine,
    cancel: &AtomicBool,
) -> Result<u64, RestoreError> {
    let partition = task.partition;
    let consumer: BaseConsumer = kafka::reader(&shared.cfg, true).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(task.topic(shared), partition, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mut out = Outputs::default();
    let mut n = 0u64;
    let mut first = true;
    let mut next = from;
    for message in read_until(&consumer, (task.topic(shared), partition), to, shared.kafka_timeout, cancel) {
        let message = message?;
        next = message.offset() + 1;
        if first && message.offset() > from {
            tracing::warn!(
                partition,
                from,
                first = message.offset(),
                "input before the first available offset is gone (retention); state may miss those records"
            );
        }
        first = false;
        if message.offset() >= to {
            break;
        }
        let payload = message.payload().unwrap_or_default();
        match engine {
            TaskEngine::Input(e) => e.process(payload, &mut out),
            TaskEngine::Merge(m) => drop(repartition::apply(m, payload, &mut out.aggregates)),
        }
        out.clear();
        n += 1;
    }
    if next < to {
        // The read ended at the partition's end below `to`. What is left may be only transaction markers and
        // aborted records, which a read_committed reader never sees: the consumer's position, or else the end of
        // the log, says whether `to` is really there.
        let position =
            consumer.position()?.find_partition(task.topic(shared), partition).and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        let reached = match position {
            Some(p) if p >= to => p,
            _ => consumer.fetch_watermarks(task.topic(shared), partition, shared.kafka_timeout)?.1,
        };
        if reached < to {
            return Err(RestoreError::Short { topic: task.topic(shared).to_owned(), partition, reached, resume: to });
        }
    }
    Ok(n)
}

fn is_transport(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
    )
}

/// Messages of the single assigned partition `topic`/`partition` up to (not including) offset `end`, or until the
/// partition's end (the end-of-partition event: the high watermark, or the last stable offset when reading
/// committed records). Gives up with a timeout error when nothing arrives for `idle` and the partition's leader
/// does not answer either; a leader that answers means a slow read, not a lost one — a broker quota throttling
/// the restore's client id, or an open transaction holding the last stable offset — and starting over would
/// read everything again at the same pace. Ends with `Cancelled` once `cancel` is set.
fn read_until<'a>(
    consumer: &'a BaseConsumer,
    (topic, partition): (&'a str, i32),
    end: i64,
    idle: Duration,
    cancel: &'a AtomicBool,
) -> impl Iterator<Item = Result<rdkafka::message::BorrowedMessage<'a>, RestoreError>> + 'a {
    let mut last_progress = Instant::now();
    let mut done = false;
    std::iter::from_fn(move || {
        while !done {
            if cancel.load(Ordering::Relaxed) {
                done = true;
                return Some(Err(RestoreError::Cancelled));
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    if m.offset() + 1 >= end {
                        done = true;
                    }
                    if m.offset() >= end {
                        return None;
                    }
                    return Some(Ok(m));
                }
                Some(Err(KafkaError::PartitionEOF(_))) => done = true,
                Some(Err(e)) if !is_transport(&e) => return Some(Err(e.into())),
                // A broker of the bootstrap list being down is news, not a failure of this read: librdkafka goes
                // on with the others (and the partition's new leader), so it counts as an empty poll.
                _ if last_progress.elapsed() > idle => match consumer.fetch_watermarks(topic, partition, idle) {
                    Ok((_, high)) => {
                        tracing::warn!(topic, partition, high_watermark = high, waited = ?last_progress.elapsed(),
                            "a restore read got no record for the Kafka timeout although the partition's leader \
                             answers: throttled by a client quota on the `…-restore` client id, or an open \
                             transaction holds the last stable offset; still reading");
                        last_progress = Instant::now();
                    }
                    Err(_) => {
                        done = true;
                        return Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut).into()));
                    }
                },
                _ => {}
            }
        }
        None
    })
}
