//! Small helpers shared by the log and the storage.

use crate::types::Entry;

/// Truncates `entries` so their total size stays within `max_size` bytes, always
/// keeping at least the first entry so progress is possible with oversized entries.
pub fn limit_size(entries: &mut Vec<Entry>, max_size: u64) {
    if max_size == u64::MAX || entries.len() <= 1 {
        return;
    }
    let mut size = 0u64;
    let keep = entries
        .iter()
        .take_while(|e| {
            size = size.saturating_add(e.size_bytes());
            size <= max_size
        })
        .count()
        .max(1);
    entries.truncate(keep);
}

/// Total size of `entries` in bytes as counted by [`Entry::size_bytes`].
pub fn entries_size(entries: &[Entry]) -> u64 {
    entries.iter().map(Entry::size_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_size_keeps_one_and_respects_budget() {
        let mk = |n: usize| -> Vec<Entry> {
            (1..=n as u64)
                .map(|i| Entry::new(1, i, vec![0; 76]))
                .collect()
        };
        let mut e = mk(5);
        limit_size(&mut e, 0);
        assert_eq!(e.len(), 1);
        let mut e = mk(5);
        limit_size(&mut e, 250);
        assert_eq!(e.len(), 2);
        let mut e = mk(5);
        limit_size(&mut e, u64::MAX);
        assert_eq!(e.len(), 5);
    }
}
