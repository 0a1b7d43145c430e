//! Routing input records in timestamp order across partitions, within a bounded window.
//!
//! Why: a backfill reads every input topic at once, and librdkafka hands records over one fetched
//! partition after another. Whole runs of contacts then arrive before the leads they belong to, and
//! each of them must be parked (written to the state topic, later re-applied and tombstoned). In the
//! end-to-end benchmark's larger backlog, 52,264 of 60,264 events parked: parking was most of the
//! connector's work. Kafka Streams meets the same problem by picking, across a task's partitions,
//! the head record with the smallest timestamp; this window does that for the route stage.
//!
//! Records wait here per input partition, in arrival order (a partition's own order is never
//! changed: versions and offset tracking rely on it). [`OrderWindow::pop`] hands out the head with
//! the smallest timestamp, ties in arrival order. The pipeline pops while the window holds more than
//! its byte bound, and whenever the consumer has nothing ready and no partition it still waits for
//! (see `docs/ARCHITECTURE.md`). Nothing here is state: a record in the window has not been taken in,
//! its offset is not stored, and on revoke or shutdown it is dropped and read again by the next owner.
//!
//! Plain values only, no Kafka: the pipeline gives each record a partition index, a timestamp and a
//! size.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::FastMap;

/// Records waiting to be routed, per input partition.
#[derive(Debug)]
pub struct OrderWindow<T> {
    queues: FastMap<u32, VecDeque<Held<T>>>,
    /// One entry per non-empty queue: its head's (timestamp, arrival, partition).
    heads: BinaryHeap<Reverse<(i64, u64, u32)>>,
    bytes: usize,
    limit_bytes: usize,
    arrivals: u64,
    len: usize,
}

#[derive(Debug)]
struct Held<T> {
    timestamp: i64,
    arrival: u64,
    size: usize,
    item: T,
}

impl<T> OrderWindow<T> {
    /// A window that holds at most `limit_bytes` (0: every record passes straight through).
    pub fn new(limit_bytes: usize) -> OrderWindow<T> {
        OrderWindow {
            queues: FastMap::default(),
            heads: BinaryHeap::new(),
            bytes: 0,
            limit_bytes,
            arrivals: 0,
            len: 0,
        }
    }

    /// Adds a record of partition `tp`. A record without a timestamp should come as `i64::MIN`: it
    /// goes out before any record with one.
    pub fn push(&mut self, tp: u32, timestamp: i64, size: usize, item: T) {
        let arrival = self.arrivals;
        self.arrivals += 1;
        let queue = self.queues.entry(tp).or_default();
        if queue.is_empty() {
            self.heads.push(Reverse((timestamp, arrival, tp)));
        }
        queue.push_back(Held {
            timestamp,
            arrival,
            size,
            item,
        });
        self.bytes += size;
        self.len += 1;
    }

    /// The record to route next: the head with the smallest timestamp.
    pub fn pop(&mut self) -> Option<(u32, T)> {
        let Reverse((_, _, tp)) = self.heads.pop()?;
        let queue = self.queues.get_mut(&tp).expect("a head has its queue");
        let held = queue.pop_front().expect("a head's queue is not empty");
        match queue.front() {
            Some(next) => self.heads.push(Reverse((next.timestamp, next.arrival, tp))),
            None => super::release_drained(queue),
        }
        self.bytes -= held.size;
        self.len -= 1;
        Some((tp, held.item))
    }

    /// Whether the window holds its bound or more (anything, with a bound of 0).
    pub fn is_over_limit(&self) -> bool {
        self.len > 0 && self.bytes >= self.limit_bytes.max(1)
    }

    /// Forgets every record, keeping the bound.
    pub fn clear(&mut self) {
        self.queues.clear();
        self.heads.clear();
        self.bytes = 0;
        self.len = 0;
    }

    /// Forgets partition `tp`'s records (it was revoked); returns how many.
    pub fn drop_partition(&mut self, tp: u32) -> usize {
        let Some(queue) = self.queues.remove(&tp) else {
            return 0;
        };
        let n = queue.len();
        self.bytes -= queue.iter().map(|h| h.size).sum::<usize>();
        self.len -= n;
        self.heads.retain(|Reverse((_, _, p))| *p != tp);
        n
    }

    /// Whether partition `tp` has a record waiting.
    pub fn holds(&self, tp: u32) -> bool {
        self.queues.get(&tp).is_some_and(|q| !q.is_empty())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut OrderWindow<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| w.pop().map(|(_, item)| item)).collect()
    }

    #[test]
    fn a_partition_queue_that_held_a_backfill_gives_its_buffer_back_once_drained() {
        let mut w = OrderWindow::new(usize::MAX);
        for i in 0..5_000 {
            w.push(0, i, 10, "record");
            w.push(1, i, 10, "record");
        }
        assert!(w.queues[&0].capacity() >= 5_000);
        // Partition 1 keeps a record; partition 0 drains.
        while w.len() > 1 {
            w.pop();
        }
        assert_eq!(w.queues[&0].capacity(), 0, "the drained queue's buffer");
        assert!(
            w.queues[&1].capacity() >= 5_000,
            "a queue still holding records keeps its buffer"
        );
        // A queue that only ever held a few records keeps its small buffer: no churn in steady state.
        w.push(2, 0, 10, "record");
        let small = w.queues[&2].capacity();
        w.pop();
        w.pop();
        assert_eq!(w.queues[&2].capacity(), small);
    }

    #[test]
    fn heads_go_out_in_timestamp_order_across_partitions() {
        let mut w = OrderWindow::new(1 << 20);
        // Partition 0 (contacts) arrives first, partition 1 (leads) after, as a fetch hands them over.
        w.push(0, 30, 10, "contact a");
        w.push(0, 40, 10, "contact b");
        w.push(1, 10, 10, "lead a");
        w.push(1, 35, 10, "lead b");
        assert_eq!(
            drain(&mut w),
            ["lead a", "contact a", "lead b", "contact b"]
        );
        assert!(w.is_empty() && w.bytes() == 0);
    }

    #[test]
    fn a_partitions_own_order_is_kept_even_when_its_timestamps_go_back() {
        let mut w = OrderWindow::new(1 << 20);
        w.push(0, 50, 1, "p0 first");
        w.push(0, 5, 1, "p0 second, older stamp");
        w.push(1, 20, 1, "p1");
        assert_eq!(drain(&mut w), ["p1", "p0 first", "p0 second, older stamp"]);
    }

    #[test]
    fn equal_timestamps_go_out_in_arrival_order_and_missing_ones_first() {
        let mut w = OrderWindow::new(1 << 20);
        w.push(2, 7, 1, "c");
        w.push(1, 7, 1, "b");
        w.push(3, i64::MIN, 1, "unstamped");
        assert_eq!(drain(&mut w), ["unstamped", "c", "b"]);
    }

    #[test]
    fn the_bound_counts_bytes_and_zero_passes_everything_through() {
        let mut w = OrderWindow::new(25);
        w.push(0, 1, 10, "a");
        w.push(1, 2, 10, "b");
        assert!(!w.is_over_limit());
        w.push(1, 3, 10, "c");
        assert!(w.is_over_limit());
        w.pop();
        assert!(!w.is_over_limit() && w.bytes() == 20);

        let mut off = OrderWindow::new(0);
        assert!(!off.is_over_limit());
        off.push(0, 1, 1, "x");
        assert!(off.is_over_limit());
    }

    #[test]
    fn clearing_forgets_every_record_and_keeps_the_bound() {
        let mut w = OrderWindow::new(15);
        w.push(0, 1, 10, "a");
        w.push(1, 2, 10, "b");
        w.clear();
        assert!(w.is_empty() && w.bytes() == 0 && !w.holds(0) && w.pop().is_none());
        w.push(1, 3, 10, "c");
        assert!(!w.is_over_limit());
        w.push(0, 4, 10, "d");
        assert!(w.is_over_limit());
        assert_eq!(drain(&mut w), ["c", "d"]);
    }

    #[test]
    fn a_revoked_partition_leaves_nothing_behind() {
        let mut w = OrderWindow::new(1 << 20);
        w.push(0, 1, 5, "p0 a");
        w.push(1, 2, 7, "p1 a");
        w.push(0, 3, 5, "p0 b");
        assert_eq!(w.drop_partition(0), 2);
        assert_eq!(w.drop_partition(0), 0);
        assert!(!w.holds(0) && w.holds(1));
        assert_eq!((w.len(), w.bytes()), (1, 7));
        assert_eq!(drain(&mut w), ["p1 a"]);
        // A partition that comes back starts afresh.
        w.push(0, 9, 5, "p0 again");
        assert_eq!(drain(&mut w), ["p0 again"]);
    }
}
