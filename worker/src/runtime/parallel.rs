//! Partitions on several cores: each restored partition gets a queue of its own from librdkafka (split off the
//! consumer's queue), and the poll loop drains those queues on a pool of processing threads, one partition per
//! thread at a time, so records of a partition (and of each sensor) are still processed in order.
//!
//! Why split queues rather than one polled batch handed out: librdkafka fills the consumer's queue a fetch
//! response at a time, up to `max.partition.fetch.bytes` of one partition in a row (thousands of records), so a
//! batch taken from it would mostly hold one partition and leave the other cores idle.
//!
//! A partition is split in the rebalance callback, just before librdkafka is told to assign it and so before
//! anything of it is fetched: its records never enter the consumer's queue (none is seen twice or out of order),
//! and a partition assigned again after a revoke gets a new queue, as librdkafka never hands a split partition
//! back to the consumer's queue. Restoring, and processing once restored, both read the partition's own queue.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::consumer::base_consumer::PartitionQueue;

use super::Shared;
use super::group::GroupContext;
use super::partition::TaskId;

/// A partition's own queue.
pub(crate) type TaskQueue = PartitionQueue<GroupContext>;

/// Wakes the poll loop when any of its queues (the consumers' and the partitions') gets something, so an idle
/// loop sleeps without adding latency to the next record.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: Mutex<bool>,
    signal: Condvar,
}

impl Wake {
    pub(crate) fn notify(&self) {
        *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.signal.notify_one();
    }

    /// Returns at once if something arrived since the last wait, else after a notification or `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*pending {
            pending = self.signal.wait_timeout(pending, timeout).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        *pending = false;
    }
}

/// The processing pool, or none with one thread (the poll thread then processes, as a hand-off would only cost).
pub(crate) fn pool(threads: usize) -> anyhow::Result<Option<rayon::ThreadPool>> {
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("process-{i}")).build()?;
    Ok(Some(pool))
}

/// Splits the task's partition off the consumer's queue; `None` if librdkafka does not know the partition (it
/// is then served from the consumer's queue, as before the split).
pub(crate) fn split(
    shared: &Shared,
    consumer: &Arc<BaseConsumer<GroupContext>>,
    task: TaskId,
) -> Option<Arc<TaskQueue>> {
    let mut queue = consumer.split_partition_queue(task.topic(shared), task.partition)?;
    let wake = shared.wake.clone();
    queue.set_nonempty_callback(move || wake.notify());
    Some(Arc::new(queue))
}

/// Runs `work` on every task, on the pool when there is one and more than one task has something to do.
pub(crate) fn each<T, W>(pool: Option<&rayon::ThreadPool>, tasks: Vec<T>, work: W) -> usize
where
    T: Send,
    W: Fn(T) -> usize + Sync,
{
    use rayon::prelude::*;
    match pool {
        Some(pool) if tasks.len() > 1 => pool.install(|| tasks.into_par_iter().map(&work).sum()),
        _ => tasks.into_iter().map(work).sum(),
    }
}

/// Runs `work` on every item at the same time, each on a thread of its own: for blocking calls to the brokers
/// (transaction commits, fencing), whose waits add up when made one after another. Results in input order.
pub(crate) fn concurrently<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(work).collect();
    }
    // Each thread takes its item from a slot, so an item whose thread could not start is still there to do here.
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|item| Mutex::new(Some(item))).collect();
    let take = |i: usize| slots[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let (take, work) = (&take, &work);
    std::thread::scope(|s| {
        let running: Vec<_> = (0..slots.len())
            .map(|i| {
                let spawned =
                    std::thread::Builder::new().name("broker-call".into()).spawn_scoped(s, move || take(i).map(work));
                spawned
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "no thread for a parallel broker call; calling in turn"),
                    )
                    .ok()
            })
            .collect();
        running
            .into_iter()
            .enumerate()
            .filter_map(|(i, handle)| match handle {
                Some(h) => h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => take(i).map(work),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn concurrent_calls_overlap_and_keep_their_order() {
        let started = Instant::now();
        let out = concurrently((0..4).collect(), |i: u64| {
            std::thread::sleep(Duration::from_millis(200));
            i * 10
        });
        assert_eq!(out, [0, 10, 20, 30]);
        // One after another they would take 800 ms.
        assert!(started.elapsed() < Duration::from_millis(700), "{:?}", started.elapsed());
    }

    #[test]
    fn each_task_is_worked_on_once_on_the_pool() {
        let pool = pool(2).unwrap();
        let mut counts = [0usize; 8];
        let total = each(pool.as_ref(), counts.iter_mut().collect(), |c| {
            *c += 1;
            3
        });
        assert_eq!(total, 24);
        assert_eq!(counts, [1; 8]);
        assert!(super::pool(1).unwrap().is_none());
    }

    #[test]
    fn a_notification_before_the_wait_is_not_missed() {
        let wake = Wake::default();
        wake.notify();
        let started = Instant::now();
        wake.wait(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Consumed: the next wait times out.
        let started = Instant::now();
        wake.wait(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
