//! Per-subscriber accounting of one course stream: which `seq`s arrived live, which
//! were fetched by gap repair, which never came, and when a repair is due.
//!
//! The slow-consumer policy (PROTOCOL.md section 5): a socket whose buffer is full
//! misses the live copy; the event stays stored, and the client notices the jump in
//! `seq` and asks `join {courseId, since: lastSeq}` for what it missed. An event may
//! then come both live and replayed ("overlap", expected); the same `seq` twice live
//! is a duplicate (a bug).

/// What a live arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// First time this `seq` is seen; `repair_since` is set when it reveals a gap and
    /// no repair is running: ask `join {since}`.
    Fresh { repair_since: Option<i64> },
    /// Seen before through a repair.
    Overlap,
    /// Seen live before: a duplicate delivery.
    Duplicate,
    /// At or below the join cursor (before this subscriber's window).
    Old,
}

#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// The join cursor: expected events are those after it.
    base: i64,
    seen: Vec<u64>,
    seen_live: Vec<u64>,
    /// Highest `seq` seen by any path.
    pub max_seen: i64,
    /// Whether a repair `join` is in flight.
    pub repairing: bool,
    pub live: u64,
    pub repaired: u64,
    pub overlap: u64,
    pub duplicates: u64,
    pub gaps: u64,
}

fn test_bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|word| word & (1 << (i % 64)) != 0)
}

fn set_bit(bits: &mut Vec<u64>, i: usize) {
    if bits.len() <= i / 64 {
        bits.resize(i / 64 + 1, 0);
    }
    bits[i / 64] |= 1 << (i % 64);
}

impl SeqTracker {
    pub fn new(base: i64) -> Self {
        Self { base, max_seen: base, ..Self::default() }
    }

    pub fn base(&self) -> i64 {
        self.base
    }

    fn index(&self, seq: i64) -> Option<usize> {
        usize::try_from(seq - self.base - 1).ok()
    }

    pub fn has(&self, seq: i64) -> bool {
        self.index(seq).is_some_and(|i| test_bit(&self.seen, i))
    }

    /// A `message` event arrived live.
    pub fn on_live(&mut self, seq: i64) -> Live {
        let Some(i) = self.index(seq) else { return Live::Old };
        if test_bit(&self.seen_live, i) {
            self.duplicates += 1;
            return Live::Duplicate;
        }
        set_bit(&mut self.seen_live, i);
        if test_bit(&self.seen, i) {
            self.overlap += 1;
            return Live::Overlap;
        }
        set_bit(&mut self.seen, i);
        self.live += 1;
        let gap = seq > self.max_seen + 1 && self.first_missing(seq).is_some();
        self.max_seen = self.max_seen.max(seq);
        if gap {
            self.gaps += 1;
        }
        Live::Fresh { repair_since: if gap { self.start_repair(seq) } else { None } }
    }

    /// An event came in a repair page; true if it was new.
    pub fn on_replayed(&mut self, seq: i64) -> bool {
        let Some(i) = self.index(seq) else { return false };
        if test_bit(&self.seen, i) {
            self.overlap += 1;
            return false;
        }
        set_bit(&mut self.seen, i);
        self.repaired += 1;
        self.max_seen = self.max_seen.max(seq);
        true
    }

    /// The first `seq` in `(base, upto]` not seen yet.
    pub fn first_missing(&self, upto: i64) -> Option<i64> {
        let count = usize::try_from(upto - self.base).unwrap_or(0);
        let mut i = 0;
        while i < count {
            let word = self.seen.get(i / 64).copied().unwrap_or(0);
            if word == u64::MAX && i % 64 == 0 {
                i += 64;
                continue;
            }
            if word & (1 << (i % 64)) == 0 {
                return Some(self.base + 1 + i as i64);
            }
            i += 1;
        }
        None
    }

    /// `seq`s in `(base, upto]` never seen (lost, if nothing repairs them).
    pub fn missing(&self, upto: i64) -> u64 {
        let count = usize::try_from(upto - self.base).unwrap_or(0);
        let mut seen = 0u64;
        for (w, word) in self.seen.iter().enumerate() {
            let start = w * 64;
            if start >= count {
                break;
            }
            let valid = (count - start).min(64);
            let mask = if valid == 64 { u64::MAX } else { (1u64 << valid) - 1 };
            seen += u64::from((word & mask).count_ones());
        }
        count as u64 - seen
    }

    /// `seq`s in `(base, upto]` that did not arrive live (repaired or lost).
    pub fn missed_live(&self, upto: i64) -> u64 {
        let count = usize::try_from(upto - self.base).unwrap_or(0) as u64;
        let live = (0..count as usize).filter(|&i| test_bit(&self.seen_live, i)).count() as u64;
        count - live
    }

    /// Starts a repair if none runs and something up to `upto` is missing: the
    /// `since` to ask for.
    pub fn start_repair(&mut self, upto: i64) -> Option<i64> {
        if self.repairing {
            return None;
        }
        let first = self.first_missing(upto)?;
        self.repairing = true;
        Some(first - 1)
    }

    /// A repair page arrived. `has_more`: ask again from `cursor`. Otherwise the repair
    /// ends, and another starts if a later gap opened meanwhile (up to `upto`).
    pub fn repair_page_done(&mut self, cursor: i64, has_more: bool, upto: i64) -> Option<i64> {
        if has_more {
            self.repairing = true;
            return Some(cursor);
        }
        self.repairing = false;
        self.start_repair(upto.max(self.max_seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_delivery_needs_no_repair() {
        let mut t = SeqTracker::new(10);
        for seq in 11..=20 {
            assert_eq!(t.on_live(seq), Live::Fresh { repair_since: None });
        }
        assert_eq!(t.on_live(5), Live::Old);
        assert_eq!((t.live, t.missing(20), t.missed_live(20), t.gaps), (10, 0, 0, 0));
    }

    #[test]
    fn a_jump_asks_for_the_gap_and_a_repair_fills_it() {
        let mut t = SeqTracker::new(0);
        t.on_live(1);
        t.on_live(2);
        // 3..=5 were dropped for this socket: 6 reveals it.
        assert_eq!(t.on_live(6), Live::Fresh { repair_since: Some(2) });
        // More gaps while the repair runs do not start a second one.
        assert_eq!(t.on_live(8), Live::Fresh { repair_since: None });
        assert_eq!(t.missing(8), 4);
        // The page holds 3..=8 (7 and 8 too: they were committed when it was read).
        for seq in 3..=8 {
            t.on_replayed(seq);
        }
        assert_eq!((t.repaired, t.overlap), (4, 2));
        assert_eq!(t.repair_page_done(8, false, 8), None);
        assert!(!t.repairing);
        // 7 comes live after the repair fetched it: overlap, not a duplicate.
        assert_eq!(t.on_live(7), Live::Overlap);
        assert_eq!(t.on_live(7), Live::Duplicate);
        assert_eq!(t.missing(8), 0);
        assert_eq!(t.missed_live(8), 3, "3, 4 and 5 did not come live");
    }

    #[test]
    fn paged_repairs_continue_and_later_gaps_restart() {
        let mut t = SeqTracker::new(100);
        assert_eq!(t.on_live(101), Live::Fresh { repair_since: None });
        assert_eq!(t.on_live(400), Live::Fresh { repair_since: Some(101) });
        for seq in 102..=201 {
            t.on_replayed(seq);
        }
        assert_eq!(t.repair_page_done(201, true, 400), Some(201));
        for seq in 202..=301 {
            t.on_replayed(seq);
        }
        // A later gap opened meanwhile (live 500 after 400); the first page ends the
        // first repair only when hasMore is false.
        assert_eq!(t.on_live(500), Live::Fresh { repair_since: None });
        assert_eq!(t.repair_page_done(301, false, 500), Some(301));
        for seq in 302..=499 {
            t.on_replayed(seq);
        }
        assert_eq!(t.repair_page_done(499, false, 500), None);
        assert_eq!(t.missing(500), 0);
        assert_eq!(t.first_missing(500), None);
    }

    #[test]
    fn the_tail_is_found_at_the_end() {
        let mut t = SeqTracker::new(0);
        for seq in 1..=130 {
            t.on_live(seq);
        }
        // 131..=140 were committed but never reached this socket.
        assert_eq!(t.missing(140), 10);
        assert_eq!(t.first_missing(140), Some(131));
        assert_eq!(t.start_repair(140), Some(130));
        assert_eq!(t.start_repair(140), None, "one repair at a time");
    }
}
