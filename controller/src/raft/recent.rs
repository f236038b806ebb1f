//! The newest entries of a replica's log, kept in memory beside the disk.
//!
//! raft-rs reads the log through `Storage` far more often than it writes it: the entries of
//! every append it sends each follower, and `term(i)` on each answer it gets and each append
//! it takes. From disk each read is a redb transaction, an unseal (the log is encrypted at
//! rest) and a parse; nearly all of them ask for the few entries just written. Those are
//! answered from here; older ones (a follower far behind) still come from disk.

use std::collections::VecDeque;

use raft::prelude::Entry;

/// At most this many entries are kept.
const MAX_ENTRIES: usize = 4096;
/// At most this many bytes of entry data are kept (beyond the one newest entry).
const MAX_BYTES: usize = 8 << 20;

/// A contiguous run of the log's newest entries: what is on disk, never anything else.
#[derive(Debug, Default)]
pub struct RecentEntries {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl RecentEntries {
    /// After `entries` (contiguous) were written to the log, replacing whatever it held
    /// from the first of them on.
    pub fn appended(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first.index) {
            let dropped = self.entries.pop_back().expect("not empty");
            self.bytes -= size(&dropped);
        }
        if self
            .entries
            .back()
            .is_some_and(|last| last.index + 1 != first.index)
        {
            // Not adjacent to what is kept: only the new run is known to be contiguous.
            self.clear();
        }
        for entry in entries {
            self.bytes += size(entry);
            self.entries.push_back(entry.clone());
        }
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1)
        {
            let dropped = self.entries.pop_front().expect("not empty");
            self.bytes -= size(&dropped);
        }
    }

    /// After the log dropped every entry up to `index` (a snapshot covers them).
    pub fn compacted(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            let dropped = self.entries.pop_front().expect("not empty");
            self.bytes -= size(&dropped);
        }
    }

    /// After the log was replaced (a snapshot from the leader).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entry `index`, if kept.
    pub fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        let offset = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(offset)
    }

    /// Entries `low..high` within `max_size` as `Storage::entries` gives them, if every
    /// one of them is kept.
    pub fn range(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        if low >= high {
            return Some(Vec::new());
        }
        self.get(low)?;
        self.get(high - 1)?;
        let offset = (low - self.entries.front()?.index) as usize;
        let count = (high - low) as usize;
        let mut limit = SizeLimit::new(max_size);
        Some(
            self.entries
                .range(offset..offset + count)
                .take_while(|entry| limit.admits(entry))
                .cloned()
                .collect(),
        )
    }
}

fn size(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len()
}

/// How many entries a read returns, as raft-rs's storages limit it: at least one, then as
/// many as fit in `max` (their encoded sizes). The log's disk path and [`RecentEntries`]
/// both read through it.
pub struct SizeLimit {
    max: Option<u64>,
    total: u64,
    admitted: bool,
}

impl SizeLimit {
    pub fn new(max: Option<u64>) -> SizeLimit {
        SizeLimit {
            max,
            total: 0,
            admitted: false,
        }
    }

    /// Whether `entry`, next in order, is returned; once one is not, none after it is.
    pub fn admits(&mut self, entry: &Entry) -> bool {
        self.total += u64::from(protobuf::Message::compute_size(entry));
        let fits = !self.admitted || self.max.is_none_or(|max| self.total <= max);
        self.admitted = true;
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 10].into(),
            ..Entry::default()
        }
    }

    fn indexes_and_terms(recent: &RecentEntries, low: u64, high: u64) -> Option<Vec<(u64, u64)>> {
        recent
            .range(low, high, None)
            .map(|es| es.iter().map(|e| (e.index, e.term)).collect())
    }

    #[test]
    fn a_conflicting_append_replaces_the_suffix_and_a_gap_starts_afresh() {
        let mut recent = RecentEntries::default();
        recent.appended(&[entry(5, 1), entry(6, 1), entry(7, 1)]);
        assert_eq!(recent.get(6).map(|e| e.term), Some(1));
        assert_eq!(recent.get(4), None);
        assert_eq!(recent.get(8), None);

        // A new leader's entries from 6 on replace 6 and 7.
        recent.appended(&[entry(6, 2)]);
        assert_eq!(indexes_and_terms(&recent, 5, 7), Some(vec![(5, 1), (6, 2)]));
        assert_eq!(recent.get(7), None);
        assert_eq!(recent.bytes, 20);

        // Not adjacent: what was kept may not be the log's any more.
        recent.appended(&[entry(9, 2)]);
        assert_eq!(recent.get(5), None);
        assert_eq!(indexes_and_terms(&recent, 9, 10), Some(vec![(9, 2)]));
        // A range reaching past what is kept is not answered here.
        assert_eq!(indexes_and_terms(&recent, 8, 10), None);
    }

    #[test]
    fn compaction_and_the_bounds_drop_the_oldest() {
        let mut recent = RecentEntries::default();
        let many: Vec<Entry> = (1..=MAX_ENTRIES as u64 + 10).map(|i| entry(i, 1)).collect();
        recent.appended(&many);
        assert_eq!(recent.entries.len(), MAX_ENTRIES);
        assert_eq!(recent.get(10), None);
        assert!(recent.get(11).is_some());
        recent.compacted(100);
        assert_eq!(recent.get(100), None);
        assert!(recent.get(101).is_some());
        assert_eq!(recent.bytes, recent.entries.len() * 10);

        // One entry bigger than the byte bound is still kept, alone.
        let mut big = entry(MAX_ENTRIES as u64 + 11, 1);
        big.data = vec![0; MAX_BYTES + 1].into();
        recent.appended(&[big]);
        assert_eq!(recent.entries.len(), 1);
    }

    #[test]
    fn a_range_is_limited_by_size_but_gives_at_least_one_entry() {
        let mut recent = RecentEntries::default();
        recent.appended(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let one = u64::from(protobuf::Message::compute_size(&entry(1, 1)));
        assert_eq!(recent.range(1, 4, Some(0)).unwrap().len(), 1);
        assert_eq!(recent.range(1, 4, Some(2 * one)).unwrap().len(), 2);
        assert_eq!(recent.range(1, 4, None).unwrap().len(), 3);
        assert_eq!(recent.range(2, 2, None), Some(vec![]));
    }
}
