//! A bounded set of disjoint byte ranges, used to check that a structured read
//! reply covers its request exactly once.

use alloc::vec::Vec;

/// Most separate ranges tracked for one read; a server that fragments a reply
/// further, out of order, gets the command failed rather than our memory.
pub(crate) const MAX_RANGES: usize = 4096;

/// Disjoint, sorted, merged ranges `[start, end)` relative to the request.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    ranges: Vec<(u64, u64)>,
    covered: u64,
}

/// Why a range could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeError {
    /// It overlaps a range already present.
    Overlap,
    /// Too many separate ranges.
    TooFragmented,
}

impl RangeSet {
    /// Total bytes covered.
    pub(crate) fn covered(&self) -> u64 {
        self.covered
    }

    /// Adds `[start, end)`; `start < end` is required by the caller.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> Result<(), RangeError> {
        // Index of the first range whose end is > start.
        let i = self.ranges.partition_point(|r| r.1 <= start);
        if let Some(r) = self.ranges.get(i) {
            if r.0 < end {
                return Err(RangeError::Overlap);
            }
        }
        let merge_prev = i > 0 && self.ranges[i - 1].1 == start;
        let merge_next = i < self.ranges.len() && self.ranges[i].0 == end;
        match (merge_prev, merge_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = end,
            (false, true) => self.ranges[i].0 = start,
            (false, false) => {
                if self.ranges.len() >= MAX_RANGES {
                    return Err(RangeError::TooFragmented);
                }
                self.ranges.insert(i, (start, end));
            }
        }
        self.covered += end - start;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_detects_overlap() {
        let mut s = RangeSet::default();
        s.insert(10, 20).unwrap();
        s.insert(0, 10).unwrap();
        s.insert(30, 40).unwrap();
        assert_eq!(s.insert(15, 31), Err(RangeError::Overlap));
        assert_eq!(s.insert(39, 41), Err(RangeError::Overlap));
        assert_eq!(s.insert(5, 6), Err(RangeError::Overlap));
        s.insert(20, 30).unwrap();
        assert_eq!(s.ranges, alloc::vec![(0, 40)]);
        assert_eq!(s.covered(), 40);
    }

    #[test]
    fn fragmentation_is_bounded() {
        let mut s = RangeSet::default();
        for i in 0..MAX_RANGES as u64 {
            s.insert(i * 2, i * 2 + 1).unwrap();
        }
        let n = MAX_RANGES as u64 * 2;
        assert_eq!(s.insert(n + 1, n + 2), Err(RangeError::TooFragmented));
        // Filling a gap merges and is still allowed.
        s.insert(1, 2).unwrap();
    }
}
