//! Idleness: when a partition has had no records for `eventTime.idleTimeout` of processing time, its watermark
//! moves on with the clock from where it stood at the last record (`watermark at the last record + time since
//! it`), so its windows close, its quiet sensors are reported silent, and the merge stage's minimum over all
//! partitions is not held back. A partition that never had a reading starts from the clock itself
//! (`now − maxOutOfOrderness`). Readings that arrive later and fall behind the advanced watermark are late, as in
//! Flink's idle sources.
//!
//! The engine reads no clock: the caller says what "now" is — the wall clock in the Kafka runtime (which also
//! checks that the consumer is caught up and its leader reachable, so an outage is not mistaken for silence),
//! the records' Kafka timestamps in `replay`.

/// Processing-time idleness of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Idleness {
    /// Processing time of the last record (or of the start, before any).
    last_record_ms: Option<i64>,
    /// The partition watermark just after that record.
    base: Option<i64>,
}

impl Idleness {
    /// A record was processed at `now_ms`, leaving the partition watermark at `watermark`.
    pub fn on_record(&mut self, now_ms: i64, watermark: Option<i64>) {
        self.last_record_ms = Some(now_ms);
        self.base = watermark;
    }

    /// Starts the idle clock without a record (a partition just assigned), unless it runs already.
    pub fn start(&mut self, now_ms: i64) {
        self.last_record_ms.get_or_insert(now_ms);
    }

    /// The watermark an idle partition has reached at `now_ms`, or `None` while it is not idle (or idleness is
    /// off: `timeout_ms` 0).
    pub fn watermark(&self, now_ms: i64, timeout_ms: i64, out_of_orderness_ms: i64) -> Option<i64> {
        let last = self.last_record_ms?;
        let quiet = now_ms.saturating_sub(last);
        if timeout_ms <= 0 || quiet < timeout_ms {
            return None;
        }
        Some(match self.base {
            Some(w) => w.saturating_add(quiet),
            None => now_ms.saturating_sub(out_of_orderness_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_after_the_timeout_then_moves_with_the_clock() {
        let mut i = Idleness::default();
        assert_eq!(i.watermark(1_000, 100, 10), None, "never started");
        i.on_record(1_000, Some(500));
        assert_eq!(i.watermark(1_099, 100, 10), None);
        assert_eq!(i.watermark(1_100, 100, 10), Some(600));
        assert_eq!(i.watermark(1_400, 100, 10), Some(900));
        assert_eq!(i.watermark(1_400, 0, 10), None, "0 turns idleness off");
    }

    #[test]
    fn a_partition_without_readings_follows_the_clock() {
        let mut i = Idleness::default();
        i.start(1_000);
        i.start(5_000);
        assert_eq!(i.watermark(1_200, 100, 10), Some(1_190));
    }
}
