//! Which input offsets may be committed: a per-partition, in-order, two-phase acknowledgement tracker.
//!
//! Why two phases: an input record causes commands (phase 1) and state writes (phase 2). If the state
//! were written before the commands were acknowledged, a crash in between would restore a state that
//! already contains the record's effect; the replayed record would be skipped as a duplicate and its
//! commands never sent. So a record's state is sent only once all its commands are acknowledged.
//!
//! Why in order: state writes for one partition must reach the state topic in input order, or
//! compaction would keep an older value of a case. So a record's state is sent only after every
//! earlier record of its partition has sent its own.
//!
//! The committable offset of a partition is the contiguous watermark: one past the last record such
//! that it and every record before it are fully acknowledged. Never a later offset past an unfinished
//! earlier one. This module is pure; the pipeline feeds it acknowledgements.
//!
//! Why state writes are coalesced: a pass of [`PartitionTracker::advance`] releases the state writes
//! of every record whose commands are now acknowledged. When two of them write the same key, only
//! the later write is sent (compaction keeps only the last value anyway; on a backfill, consecutive
//! records touch the same case and customer again and again). The earlier record then finishes only
//! with the record that holds its write: its offset is never committed before the value that
//! contains its effect is acknowledged.
//!
//! Why records are keyed by an intake sequence number, not by offset: a consumer can go back (an
//! offset reset to an end the broker reports late, a log truncated by an unclean leader election),
//! and the same offset then arrives twice. Keyed by offset, acknowledgements found the wrong entry and
//! the partition never completed again: commits stopped and intake paused for good (seen on Tansu
//! with `auto.offset.reset = latest`). "Before" means "taken in earlier", whatever the offsets say.
//!
//! Why an entry may have no offset and a link instead: a record applied without the cases hop
//! ([`super::local`]) is tracked twice. In its cases partition's tracker, so that partition's state
//! writes keep one order whichever path each record took; there it has no offset of its own. And in
//! its input partition's tracker, waiting for one acknowledgement: the link, given when the
//! cases-partition entry finishes ([`Ready::then`]).

use std::collections::VecDeque;
use std::hash::Hash;

use super::FastMap;

/// A state write: what it writes to. Two writes with the same key replace each other.
pub trait Keyed {
    type Key<'a>: Hash + Eq
    where
        Self: 'a;
    fn key(&self) -> Self::Key<'_>;
}

/// "Then acknowledge record `seq` of the partition the pipeline numbers `tp`": what a finished
/// entry without an offset of its own passes on (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Then {
    pub tp: u32,
    pub seq: i64,
}

struct Entry<T, S> {
    seq: i64,
    /// `None` for a record of another partition tracked here for its state writes' order.
    offset: Option<i64>,
    then: Option<Then>,
    phase1_left: usize,
    phase2: Option<Vec<T>>,
    phase2_left: usize,
    phase2_sent: bool,
    /// The last record holding a state write that replaced one of this record's: it finishes no
    /// earlier than that one (its own sequence number when none did).
    held_until: i64,
    /// What the pipeline keeps with the record while it is in flight (its original, for dead letters).
    source: S,
}

impl<T, S> Entry<T, S> {
    fn acknowledged(&self) -> bool {
        self.phase1_left == 0 && self.phase2_sent && self.phase2_left == 0
    }
}

/// One input partition's records between intake and full acknowledgement.
///
/// Every operation is amortised O(1) in the records in flight: acknowledgements find their entry
/// by its sequence number's distance from the front (they are consecutive), and `advance` resumes
/// where its last pass stopped instead of walking entries that already sent their state (a linear
/// walk made a backlog of 20,000 in-flight records quadratic).
pub struct PartitionTracker<T, S = ()> {
    entries: VecDeque<Entry<T, S>>,
    /// How many leading entries have sent their phase 2 (the next pass starts there).
    sent: usize,
    /// The sequence number of the next record taken in.
    next_seq: i64,
}

impl<T, S> Default for PartitionTracker<T, S> {
    fn default() -> Self {
        PartitionTracker {
            entries: VecDeque::new(),
            sent: 0,
            next_seq: 0,
        }
    }
}

/// What the pipeline must do next for a partition.
pub struct Ready<T> {
    /// Phase-2 records to send now, with the sequence number of the record they belong to, in
    /// intake order.
    pub send: Vec<(i64, Vec<T>)>,
    /// The offset of the last record now fully acknowledged (store it; the commit is offset + 1).
    pub done_through: Option<i64>,
    /// Records of other partitions to acknowledge now: their entries here finished.
    pub then: Vec<Then>,
}

impl<T: Keyed, S> PartitionTracker<T, S> {
    /// An empty tracker whose first record gets `next_seq`: for a partition taken back after a
    /// revoke, so that late acknowledgements of its earlier records match nothing.
    pub fn starting_at(next_seq: i64) -> Self {
        PartitionTracker {
            next_seq,
            ..PartitionTracker::default()
        }
    }

    /// Whether record `seq` is still tracked (taken in here and not finished).
    pub fn holds(&self, seq: i64) -> bool {
        self.index_of(seq).is_some()
    }

    /// Where record `seq` is in `entries`: sequence numbers are consecutive from the front (records
    /// are taken in one at a time and leave only from the front), so it is an offset, not a search.
    fn index_of(&self, seq: i64) -> Option<usize> {
        let front = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    /// The sequence number the next record taken in gets: its outputs' acknowledgements name it.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// The record at `offset` entered the pipeline as number `seq` (from [`Self::next_seq`]), with
    /// `phase1` outputs already sent and `phase2` waiting; `source` is kept with it until it finishes.
    pub fn begin(&mut self, seq: i64, offset: i64, phase1: usize, phase2: Vec<T>, source: S) {
        self.begin_entry(seq, Some(offset), None, phase1, phase2, source);
    }

    /// Like [`Self::begin`], for a record of another partition: no offset here, and `then` is
    /// passed on when it finishes.
    pub fn begin_linked(&mut self, seq: i64, then: Then, phase1: usize, phase2: Vec<T>, source: S) {
        self.begin_entry(seq, None, Some(then), phase1, phase2, source);
    }

    fn begin_entry(
        &mut self,
        seq: i64,
        offset: Option<i64>,
        then: Option<Then>,
        phase1: usize,
        phase2: Vec<T>,
        source: S,
    ) {
        assert_eq!(seq, self.next_seq, "records are taken in one at a time");
        self.next_seq += 1;
        self.entries.push_back(Entry {
            seq,
            offset,
            then,
            phase1_left: phase1,
            phase2: Some(phase2),
            phase2_left: 0,
            phase2_sent: false,
            held_until: seq,
            source,
        });
    }

    /// What record `seq` was taken in with, while it is in flight.
    pub fn source(&self, seq: i64) -> Option<&S> {
        self.entries.get(self.index_of(seq)?).map(|e| &e.source)
    }

    /// One output of record `seq` was acknowledged.
    pub fn ack(&mut self, seq: i64, phase: u8) {
        if let Some(e) = self.entry(seq) {
            if phase == 1 {
                e.phase1_left = e.phase1_left.saturating_sub(1);
            } else {
                e.phase2_left = e.phase2_left.saturating_sub(1);
            }
        }
    }

    /// Adds outputs to phase 1 of record `seq` (e.g. a dead letter after a failed command).
    pub fn add_phase1(&mut self, seq: i64, n: usize) {
        if let Some(e) = self.entry(seq) {
            e.phase1_left += n;
        }
    }

    fn entry(&mut self, seq: i64) -> Option<&mut Entry<T, S>> {
        let i = self.index_of(seq)?;
        self.entries.get_mut(i)
    }

    /// Moves the partition forward: which phase-2 records to send (coalesced by key within this
    /// pass), and how far it is done.
    pub fn advance(&mut self) -> Ready<T> {
        let from = self.sent;
        for e in self.entries.range(from..) {
            if e.phase1_left > 0 {
                break; // later records must not write state before this one
            }
            self.sent += 1;
        }
        let pass = from..self.sent;
        // One record's writes have distinct keys already; only a longer pass is coalesced.
        let mut plan = if pass.len() > 1 {
            self.coalesce(pass.clone())
        } else {
            Vec::new()
        }
        .into_iter();
        let mut send = Vec::new();
        for i in pass {
            let seq = self.entries[i].seq;
            let (keep, held_until) = plan.next().unwrap_or_else(|| (Vec::new(), seq));
            let mut keep = keep.into_iter();
            let e = &mut self.entries[i];
            let records: Vec<T> = e
                .phase2
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|_| keep.next().unwrap_or(true))
                .collect();
            e.phase2_left = records.len();
            e.phase2_sent = true;
            e.held_until = held_until;
            if !records.is_empty() {
                send.push((e.seq, records));
            }
        }
        let mut then = Vec::new();
        let done_through = self.finish(&mut then);
        Ready {
            send,
            done_through,
            then,
        }
    }

    /// For each record of `pass`, which of its writes to keep (those no later record of the pass
    /// replaces) and the last record holding one it lost.
    fn coalesce(&self, pass: std::ops::Range<usize>) -> Vec<(Vec<bool>, i64)> {
        let mut last: FastMap<T::Key<'_>, i64> = FastMap::default();
        for e in self.entries.range(pass.clone()) {
            for r in e.phase2.iter().flatten() {
                last.insert(r.key(), e.seq);
            }
        }
        self.entries
            .range(pass)
            .map(|e| {
                let mut held_until = e.seq;
                let keep = e
                    .phase2
                    .iter()
                    .flatten()
                    .map(|r| {
                        let writer = last[&r.key()];
                        held_until = held_until.max(writer);
                        writer == e.seq
                    })
                    .collect();
                (keep, held_until)
            })
            .collect()
    }

    /// Removes the acknowledged records at the front, a record held by a later one only together
    /// with it; returns the offset of the last one removed that has one, and adds the links of
    /// those removed to `then`.
    fn finish(&mut self, then: &mut Vec<Then>) -> Option<i64> {
        let mut done_through = None;
        'front: while !self.entries.is_empty() {
            let mut until = self.entries[0].held_until;
            let mut i = 0;
            loop {
                let Some(e) = self.entries.get(i) else {
                    break 'front; // cannot happen: a holder is taken in after what it holds
                };
                if !e.acknowledged() {
                    break 'front;
                }
                until = until.max(e.held_until);
                if e.seq >= until {
                    break;
                }
                i += 1;
            }
            for e in self.entries.drain(..=i) {
                done_through = e.offset.or(done_through);
                then.extend(e.then);
            }
            self.sent -= i + 1;
        }
        super::release_drained(&mut self.entries);
        done_through
    }

    /// The oldest unfinished record, as a sentence: what a stuck partition waits for.
    pub fn head(&self) -> Option<String> {
        self.entries.front().map(|e| {
            format!(
                "{} waits for {} command acknowledgement(s) and {} state acknowledgement(s){}{}",
                match (e.offset, e.then) {
                    (Some(offset), _) => format!("offset {offset}"),
                    (None, Some(then)) =>
                        format!("a record applied here from input record #{}", then.seq),
                    (None, None) => "a record".to_string(),
                },
                e.phase1_left,
                e.phase2_left,
                if e.phase2_sent {
                    ""
                } else {
                    "; its state is not sent yet"
                },
                if e.held_until > e.seq {
                    "; a later record's state write holds its effect"
                } else {
                    ""
                }
            )
        })
    }

    /// Records not yet fully acknowledged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keyed for &str {
        type Key<'a>
            = &'a str
        where
            Self: 'a;
        fn key(&self) -> &str {
            self
        }
    }

    impl Keyed for i64 {
        type Key<'a> = i64;
        fn key(&self) -> i64 {
            *self
        }
    }

    /// Takes in the record at `offset`; returns its sequence number.
    fn take<T: Keyed>(
        t: &mut PartitionTracker<T>,
        offset: i64,
        phase1: usize,
        phase2: Vec<T>,
    ) -> i64 {
        let seq = t.next_seq();
        t.begin(seq, offset, phase1, phase2, ());
        seq
    }

    #[test]
    fn state_waits_for_the_records_commands_and_commits_follow_the_contiguous_watermark() {
        let mut t = PartitionTracker::default();
        let ten = take(&mut t, 10, 2, vec!["state-10"]);
        let eleven = take(&mut t, 11, 1, vec!["state-11"]);
        t.ack(eleven, 1); // record 11's command first: its state must still wait for record 10
        let r = t.advance();
        assert!(r.send.is_empty() && r.done_through.is_none());
        t.ack(ten, 1);
        t.ack(ten, 1);
        let r = t.advance();
        assert_eq!(
            r.send,
            vec![(ten, vec!["state-10"]), (eleven, vec!["state-11"])],
            "state in input order"
        );
        assert_eq!(r.done_through, None, "state not yet acknowledged");
        t.ack(eleven, 2);
        assert_eq!(
            t.advance().done_through,
            None,
            "11 is done but 10 is not: never commit past it"
        );
        t.ack(ten, 2);
        assert_eq!(t.advance().done_through, Some(11));
        assert!(t.is_empty());
    }

    #[test]
    fn records_without_outputs_complete_at_once_in_order() {
        let mut t: PartitionTracker<&str> = PartitionTracker::default();
        take(&mut t, 5, 0, vec![]);
        let six = take(&mut t, 6, 1, vec![]);
        take(&mut t, 7, 0, vec![]);
        assert_eq!(t.advance().done_through, Some(5));
        t.ack(six, 1);
        assert_eq!(t.advance().done_through, Some(7));
    }

    #[test]
    fn a_dead_letter_added_to_phase_one_holds_the_record_until_acknowledged() {
        let mut t = PartitionTracker::default();
        let one = take(&mut t, 1, 1, vec!["s"]);
        t.add_phase1(one, 1);
        t.ack(one, 1);
        assert!(t.advance().send.is_empty());
        t.ack(one, 1);
        assert_eq!(t.advance().send.len(), 1);
    }

    #[test]
    fn a_partition_whose_consumer_goes_back_still_completes_and_commits_where_it_is() {
        // Offsets 27710..=27712 are taken in, then the consumer is reset to 27710 and takes them in
        // again (as Tansu's late end made it do): each acknowledgement must reach its own record.
        let mut t = PartitionTracker::default();
        let first: Vec<i64> = (27710..=27712)
            .map(|o| take(&mut t, o, 1, vec![o]))
            .collect();
        let again: Vec<i64> = (27710..=27713)
            .map(|o| take(&mut t, o, 1, vec![o]))
            .collect();
        for seq in first.iter().chain(&again) {
            t.ack(*seq, 1);
        }
        let r = t.advance();
        let order: Vec<i64> = r.send.iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(
            order,
            vec![27710, 27711, 27712, 27713],
            "each state key once, from the last record that writes it"
        );
        for seq in first.iter().chain(&again) {
            t.ack(*seq, 2);
        }
        assert_eq!(
            t.advance().done_through,
            Some(27713),
            "done through the last record taken in"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_state_write_replaced_by_a_later_records_is_not_sent_and_its_record_finishes_with_that_one()
    {
        let mut t = PartitionTracker::default();
        let a = take(&mut t, 1, 1, vec!["case-1", "customer-7"]);
        let b = take(&mut t, 2, 1, vec!["case-1"]);
        let c = take(&mut t, 3, 1, vec!["case-2"]);
        let d = take(&mut t, 4, 1, vec!["customer-7"]);
        for seq in [a, b, c, d] {
            t.ack(seq, 1);
        }
        let r = t.advance();
        assert_eq!(
            r.send,
            vec![
                (b, vec!["case-1"]),
                (c, vec!["case-2"]),
                (d, vec!["customer-7"])
            ],
            "record 1's two writes are replaced by records 2 and 4"
        );
        assert_eq!(r.done_through, None);
        t.ack(b, 2);
        t.ack(c, 2);
        assert_eq!(
            t.advance().done_through,
            None,
            "record 1's customer write is record 4's: offsets 1..3 wait for it"
        );
        assert!(t
            .head()
            .unwrap()
            .contains("a later record's state write holds its effect"));
        t.ack(d, 2);
        assert_eq!(t.advance().done_through, Some(4));
        assert!(t.is_empty());
    }

    #[test]
    fn writes_released_in_different_passes_are_all_sent() {
        let mut t = PartitionTracker::default();
        let a = take(&mut t, 1, 1, vec!["case-1"]);
        let b = take(&mut t, 2, 1, vec!["case-1"]);
        t.ack(a, 1);
        assert_eq!(t.advance().send, vec![(a, vec!["case-1"])]);
        t.ack(b, 1);
        assert_eq!(
            t.advance().send,
            vec![(b, vec!["case-1"])],
            "already sent, so not replaced"
        );
        t.ack(b, 2);
        assert_eq!(
            t.advance().done_through,
            None,
            "record 1 still waits for its own write"
        );
        t.ack(a, 2);
        assert_eq!(t.advance().done_through, Some(2));
    }

    #[test]
    fn after_a_revoke_late_acknowledgements_match_no_record_taken_in_since() {
        let mut t = PartitionTracker::default();
        let before = take(&mut t, 40, 1, vec!["old"]);
        // Revoked, then assigned back: the records are forgotten, the numbering goes on.
        let mut t = PartitionTracker::starting_at(t.next_seq());
        let after = take(&mut t, 40, 1, vec!["new"]);
        assert_ne!(before, after);
        assert!(!t.holds(before) && t.holds(after));
        t.ack(before, 1); // the old record's late acknowledgement
        assert!(
            t.advance().send.is_empty(),
            "the new record's state still waits for its own command"
        );
        t.ack(after, 1);
        assert_eq!(t.advance().send, vec![(after, vec!["new"])]);
    }

    #[test]
    fn each_state_is_sent_once_in_order_while_earlier_states_still_wait_for_acks() {
        let mut t = PartitionTracker::default();
        for offset in 0..1_000 {
            take(&mut t, offset, 1, vec![offset]);
        }
        let mut sent = Vec::new();
        let mut done = None;
        // Commands are acknowledged in order; state acks lag 100 records behind. (Offsets start at
        // 0 here, so each record's sequence number is its offset.)
        for offset in 0..1_000 {
            t.ack(offset, 1);
            let r = t.advance();
            sent.extend(r.send.into_iter().flat_map(|(_, s)| s));
            if offset >= 100 {
                t.ack(offset - 100, 2);
            }
            done = t.advance().done_through.or(done);
        }
        assert_eq!(sent, (0..1_000).collect::<Vec<_>>(), "once each, in order");
        assert_eq!(done, Some(899));
        for offset in 900..1_000 {
            t.ack(offset, 2);
        }
        assert_eq!(t.advance().done_through, Some(999));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_tracker_that_held_a_burst_gives_its_buffer_back_once_every_record_is_done() {
        let mut t = PartitionTracker::default();
        for offset in 0..5_000 {
            take(&mut t, offset, 1, vec![offset]);
        }
        assert!(t.entries.capacity() >= 5_000);
        for offset in 0..5_000 {
            t.ack(offset, 1);
        }
        t.advance();
        for offset in 0..5_000 {
            t.ack(offset, 2);
        }
        assert_eq!(t.advance().done_through, Some(4_999));
        assert!(t.is_empty());
        assert_eq!(t.entries.capacity(), 0, "the drained tracker's buffer");
    }

    #[test]
    fn a_linked_record_keeps_its_place_in_the_state_order_and_passes_its_link_on_when_done() {
        let mut t: PartitionTracker<&str> = PartitionTracker::default();
        let hop = take(&mut t, 40, 1, vec!["case/a"]);
        let then = Then { tp: 7, seq: 3 };
        let local = t.next_seq();
        t.begin_linked(local, then, 1, vec!["case/a"], ());
        let after = take(&mut t, 41, 0, vec![]);
        t.ack(local, 1);
        let r = t.advance();
        assert!(
            r.send.is_empty(),
            "its state waits for the earlier record's commands"
        );
        t.ack(hop, 1);
        let r = t.advance();
        // One pass releases both writes of case/a: only the later is sent, and the earlier record
        // finishes with it.
        assert_eq!(r.send, vec![(local, vec!["case/a"])]);
        assert!(r.then.is_empty() && r.done_through.is_none());
        t.ack(local, 2);
        let r = t.advance();
        assert_eq!(
            r.then,
            vec![then],
            "the link, once its state is acknowledged"
        );
        assert_eq!(
            r.done_through,
            Some(41),
            "the linked entry has no offset of its own"
        );
        let _ = after;
        assert!(t.is_empty());
    }

    #[test]
    fn a_partition_of_linked_records_alone_stores_no_offset() {
        let mut t: PartitionTracker<&str> = PartitionTracker::default();
        for n in 0..3 {
            let seq = t.next_seq();
            t.begin_linked(seq, Then { tp: 1, seq: n }, 0, vec![], ());
        }
        let r = t.advance();
        assert_eq!(r.done_through, None);
        assert_eq!(r.then.iter().map(|l| l.seq).collect::<Vec<_>>(), [0, 1, 2]);
    }
}
