//! Which owned cases partitions apply records here, without the cases hop, and the records that
//! wait for one to get there. Pure: the pipeline sends the fences and applies what this returns.
//!
//! Why: the hop (produce the record onto the cases topic, read it back, parse its origin headers,
//! decode it again) was most of the pipeline thread's time. A record whose case lies in a cases
//! partition this instance owns can be applied at once — every record, with one replica.
//!
//! Why not at once after an assignment: the partition may still hold records routed before it,
//! by the previous owner of an input partition or by ourselves. Applying a later record of the same
//! input partition first would invert the two (which contact becomes a case's requester depends on
//! that order). So an owned partition starts **awaiting**: the pipeline writes a fence record to
//! it, through the same ordered producer as every hop record, and records routed to it meanwhile
//! are **held**, in order. When the fence comes back through the consumer, everything before it has
//! been applied; the held records are applied, in order, and the partition is **local**.
//!
//! Held records count as in flight, so they are bounded: past `cap` held in all, the next records
//! of an awaiting partition take the hop after all (behind the held ones in the log, so still in
//! order), and once the held have fallen to half the cap a new fence is sent and holding resumes.
//! A partition that is revoked forgets everything; its next owner starts awaiting again.

use std::collections::VecDeque;
use std::time::Instant;

use super::FastMap;

enum Mode<T> {
    /// Fences sent and not seen yet, oldest first, each with the records held behind it. While
    /// `hopping`, records take the hop and no fence is open for them.
    Awaiting {
        fences: VecDeque<(u64, Vec<T>)>,
        hopping: bool,
        since: Instant,
        /// When the newest fence was last sent.
        sent: Instant,
    },
    Local,
}

/// What to do with a record routed to a cases partition.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<T> {
    /// Apply it now, here.
    Local(T),
    /// It waits for a fence. If `send_fence` is set, send a fence with that number to the
    /// partition now (it is the one this record waits for).
    Held { send_fence: Option<u64> },
    /// Send it through the cases topic, as when the partition is not ours.
    Hop(T),
}

pub struct LocalRoutes<T> {
    modes: FastMap<i32, Mode<T>>,
    held: usize,
    cap: usize,
    next_fence: u64,
}

impl<T> LocalRoutes<T> {
    /// Holds at most `cap` records in all (at least 1).
    pub fn new(cap: usize) -> Self {
        LocalRoutes {
            modes: FastMap::default(),
            held: 0,
            cap: cap.max(1),
            next_fence: 0,
        }
    }

    fn fence(&mut self) -> u64 {
        self.next_fence += 1;
        self.next_fence
    }

    /// Cases partition `partition` is owned and its state restored: returns the fence to send to it.
    pub fn owned(&mut self, partition: i32) -> u64 {
        let f = self.fence();
        self.revoked(partition);
        self.modes.insert(
            partition,
            Mode::Awaiting {
                fences: VecDeque::from([(f, Vec::new())]),
                hopping: false,
                since: Instant::now(),
                sent: Instant::now(),
            },
        );
        f
    }

    /// Where a record whose case lies in `partition` goes.
    pub fn route(&mut self, partition: i32, record: T) -> Route<T> {
        let (cap, held) = (self.cap, self.held);
        // The number a new fence would get (`self.fence()` cannot run while a mode is borrowed).
        let fence = self.next_fence + 1;
        match self.modes.get_mut(&partition) {
            None => Route::Hop(record),
            Some(Mode::Local) => Route::Local(record),
            Some(Mode::Awaiting {
                fences,
                hopping,
                sent,
                ..
            }) => {
                if *hopping {
                    if held > cap / 2 {
                        return Route::Hop(record);
                    }
                    *hopping = false;
                    fences.push_back((fence, vec![record]));
                    *sent = Instant::now();
                    self.next_fence = fence;
                    self.held += 1;
                    return Route::Held {
                        send_fence: Some(fence),
                    };
                }
                if held >= cap {
                    *hopping = true;
                    return Route::Hop(record);
                }
                match fences.back_mut() {
                    Some((_, behind)) => behind.push(record),
                    None => unreachable!("a partition awaits a fence only while one is open"),
                }
                self.held += 1;
                Route::Held { send_fence: None }
            }
        }
    }

    /// Fence `fence` came back from `partition`: returns the records held behind it (and behind
    /// any earlier fence not seen, which cannot happen with an ordered producer), to apply now,
    /// in order. A fence that is not ours, or no longer awaited, returns nothing.
    pub fn fence_seen(&mut self, partition: i32, fence: u64) -> Vec<T> {
        let Some(Mode::Awaiting {
            fences, hopping, ..
        }) = self.modes.get_mut(&partition)
        else {
            return Vec::new();
        };
        if !fences.iter().any(|(f, _)| *f == fence) {
            return Vec::new();
        }
        let mut ready = Vec::new();
        while let Some((f, behind)) = fences.pop_front() {
            ready.extend(behind);
            if f == fence {
                break;
            }
        }
        let local = fences.is_empty() && !*hopping;
        if local {
            self.modes.insert(partition, Mode::Local);
        }
        self.held -= ready.len();
        ready
    }

    /// The partition is no longer ours: what it held is dropped (those records were taken in from
    /// input partitions revoked with it, and are read again by their next owner).
    pub fn revoked(&mut self, partition: i32) {
        if let Some(Mode::Awaiting { fences, .. }) = self.modes.remove(&partition) {
            self.held -= fences.iter().map(|(_, b)| b.len()).sum::<usize>();
        }
    }

    /// Forgets every partition.
    pub fn clear(&mut self) {
        self.modes.clear();
        self.held = 0;
    }

    /// Fences to send again, as `(partition, fence)`: the newest fence of each partition that has
    /// waited longer than `after` since it was last sent. A fence can be missed: a consumer
    /// without a committed offset that starts at the end (`auto.offset.reset = latest`) may find
    /// its start past a fence written just after the assignment, and the records held for it would
    /// wait for ever. Sent again, the fence comes after that start; a copy read after the
    /// original finds nothing to release.
    pub fn overdue(&mut self, now: Instant, after: std::time::Duration) -> Vec<(i32, u64)> {
        let mut again = Vec::new();
        for (&partition, mode) in &mut self.modes {
            if let Mode::Awaiting { fences, sent, .. } = mode {
                if let Some((fence, _)) = fences.back() {
                    if now.duration_since(*sent) > after {
                        *sent = now;
                        again.push((partition, *fence));
                    }
                }
            }
        }
        again
    }

    /// Since when `partition` has awaited its fences, if it does.
    pub fn awaiting_since(&self, partition: i32) -> Option<Instant> {
        match self.modes.get(&partition) {
            Some(Mode::Awaiting { since, .. }) => Some(*since),
            _ => None,
        }
    }

    /// Whether `partition` applies here without waiting.
    pub fn is_local(&self, partition: i32) -> bool {
        matches!(self.modes.get(&partition), Some(Mode::Local))
    }

    /// Whether any owned partition still awaits a fence.
    pub fn any_awaiting(&self) -> bool {
        self.modes
            .values()
            .any(|m| matches!(m, Mode::Awaiting { .. }))
    }

    /// Records held in all.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_not_owned_takes_the_hop() {
        let mut l = LocalRoutes::new(10);
        assert_eq!(l.route(3, "a"), Route::Hop("a"));
    }

    #[test]
    fn records_wait_for_the_fence_then_apply_in_order_and_later_ones_at_once() {
        let mut l = LocalRoutes::new(10);
        let f = l.owned(0);
        assert_eq!(l.route(0, "a"), Route::Held { send_fence: None });
        assert_eq!(l.route(0, "b"), Route::Held { send_fence: None });
        assert_eq!(l.held(), 2);
        assert!(!l.is_local(0));
        assert_eq!(l.fence_seen(0, f), vec!["a", "b"]);
        assert!(l.is_local(0));
        assert_eq!(l.held(), 0);
        assert_eq!(l.route(0, "c"), Route::Local("c"));
    }

    #[test]
    fn a_fence_that_is_not_ours_or_not_awaited_releases_nothing() {
        let mut l = LocalRoutes::new(10);
        let f = l.owned(0);
        l.route(0, "a");
        assert!(l.fence_seen(0, f + 7).is_empty(), "someone else's fence");
        assert!(l.fence_seen(1, f).is_empty(), "another partition");
        assert!(!l.is_local(0));
        assert_eq!(l.fence_seen(0, f), vec!["a"]);
        assert!(l.fence_seen(0, f).is_empty(), "seen twice");
    }

    #[test]
    fn past_the_cap_records_take_the_hop_and_holding_resumes_behind_a_new_fence() {
        let mut l = LocalRoutes::new(4);
        let first = l.owned(0);
        for r in ["a", "b", "c", "d"] {
            assert_eq!(l.route(0, r), Route::Held { send_fence: None });
        }
        // Full: the next records go by the hop, behind the four held (which the first fence
        // releases before them, since it precedes them in the log).
        assert_eq!(l.route(0, "e"), Route::Hop("e"));
        assert_eq!(l.route(0, "f"), Route::Hop("f"));
        assert_eq!(l.fence_seen(0, first), vec!["a", "b", "c", "d"]);
        assert!(!l.is_local(0), "the hop records are not applied yet");
        // Below half the cap: a new fence goes after the hop records, and the record waits for it.
        let Route::Held {
            send_fence: Some(second),
        } = l.route(0, "g")
        else {
            panic!("expected a new fence");
        };
        assert_eq!(l.route(0, "h"), Route::Held { send_fence: None });
        assert_eq!(l.fence_seen(0, second), vec!["g", "h"]);
        assert!(l.is_local(0));
        assert_eq!(l.route(0, "i"), Route::Local("i"));
    }

    #[test]
    fn the_cap_counts_every_partition_and_a_revoke_frees_what_it_held() {
        let mut l = LocalRoutes::new(2);
        l.owned(0);
        let f1 = l.owned(1);
        assert_eq!(l.route(0, "a"), Route::Held { send_fence: None });
        assert_eq!(l.route(1, "b"), Route::Held { send_fence: None });
        assert_eq!(l.route(1, "c"), Route::Hop("c"));
        l.revoked(0);
        assert_eq!(l.held(), 1);
        assert_eq!(l.route(0, "d"), Route::Hop("d"), "no longer ours");
        assert_eq!(l.fence_seen(1, f1), vec!["b"]);
        assert_eq!(l.held(), 0);
        assert!(!l.is_local(1), "hopping since the cap was reached");
    }

    #[test]
    fn a_fence_not_back_in_time_is_sent_again_and_either_copy_releases_the_records_once() {
        use std::time::Duration;
        let mut l = LocalRoutes::new(10);
        let f = l.owned(0);
        l.route(0, "a");
        let now = Instant::now();
        assert!(l.overdue(now, Duration::from_secs(5)).is_empty());
        let later = now + Duration::from_secs(6);
        assert_eq!(l.overdue(later, Duration::from_secs(5)), vec![(0, f)]);
        assert!(
            l.overdue(later, Duration::from_secs(5)).is_empty(),
            "not again until it waited once more"
        );
        assert_eq!(l.fence_seen(0, f), vec!["a"]);
        assert!(l.fence_seen(0, f).is_empty(), "the other copy");
        assert!(l
            .overdue(later + Duration::from_secs(60), Duration::from_secs(5))
            .is_empty());
    }

    #[test]
    fn owning_a_partition_again_starts_over_behind_a_new_fence() {
        let mut l = LocalRoutes::new(10);
        let f = l.owned(0);
        l.fence_seen(0, f);
        assert!(l.is_local(0));
        let g = l.owned(0);
        assert_ne!(f, g);
        assert_eq!(l.route(0, "a"), Route::Held { send_fence: None });
        assert!(l.fence_seen(0, f).is_empty(), "the old fence is stale");
        assert_eq!(l.fence_seen(0, g), vec!["a"]);
    }
}
