//! The window of in-flight append messages to one follower, bounded by count and bytes.

use std::collections::VecDeque;

/// In-flight appends to one follower, each remembered by its last index and size.
/// Full when either `max_count` messages or `max_bytes` bytes are outstanding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflights {
    // (last index of the message, its payload bytes), in increasing index order.
    queue: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// An empty window; `max_bytes == 0` means no byte limit.
    pub fn new(max_count: usize, max_bytes: u64) -> Inflights {
        assert!(max_count > 0, "the inflight window must allow a message");
        Inflights {
            queue: VecDeque::with_capacity(max_count.min(64)),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    /// Whether no more messages may be sent.
    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_count || (self.max_bytes > 0 && self.bytes >= self.max_bytes)
    }

    /// Number of messages in flight.
    pub fn count(&self) -> usize {
        self.queue.len()
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records a message ending at `index` carrying `bytes`.
    pub fn add(&mut self, index: u64, bytes: u64) {
        assert!(!self.full(), "cannot add to a full inflight window");
        if let Some(&(last, _)) = self.queue.back() {
            assert!(
                index > last,
                "inflight indexes must increase: {index} after {last}"
            );
        }
        self.queue.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Frees the oldest message, if any (etcd's `FreeFirstOne`): lets a window whose
    /// appends were lost send again.
    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.queue.pop_front() {
            self.bytes -= b;
        }
    }

    /// Frees every message ending at or below `index`.
    pub fn free_to(&mut self, index: u64) {
        while let Some(&(i, b)) = self.queue.front() {
            if i > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= b;
        }
    }

    /// Frees everything.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_count_and_bytes() {
        let mut w = Inflights::new(3, 0);
        w.add(1, 10);
        w.add(2, 10);
        assert!(!w.full());
        w.add(3, 10);
        assert!(w.full());
        w.free_to(1);
        assert!(!w.full());
        assert_eq!(w.count(), 2);

        let mut w = Inflights::new(100, 25);
        w.add(1, 10);
        w.add(2, 10);
        assert!(!w.full());
        w.add(3, 10);
        assert!(w.full());
        w.free_to(2);
        assert_eq!(w.bytes(), 10);
        assert!(!w.full());
        w.reset();
        assert_eq!((w.count(), w.bytes()), (0, 0));
    }
}
