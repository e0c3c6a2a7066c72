//! Byte budgets for bounded queues. A crossbeam queue bounds how many items wait in
//! it; a [`ByteBudget`] bounds how many bytes they add up to. Whoever enqueues
//! charges the item's bytes first ([`ByteBudget::try_charge`]) and refuses the item
//! when the budget is spent; the charge travels with the item ([`Charged`]) and is
//! given back when the consumer drops the item or takes it apart, so the consumer's
//! code needs no bookkeeping of its own.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A number of bytes shared by every item of one queue.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    used_bytes: AtomicU64,
    max_bytes: u64,
}

impl ByteBudget {
    /// A budget of `max_bytes`.
    pub(crate) fn new(max_bytes: u64) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used_bytes: AtomicU64::new(0),
            max_bytes,
        })
    }

    /// Bytes charged and not yet given back.
    #[cfg(test)]
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Acquire)
    }

    /// Charges `bytes`, or refuses (`None`) if that would take the budget past its
    /// limit.
    pub(crate) fn try_charge(self: &Arc<Self>, bytes: u64) -> Option<Charge> {
        let charged = self
            .used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&after| after <= self.max_bytes)
            });
        charged.ok().map(|_| Charge {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Charges `value`'s `bytes` and wraps it, or gives it back when over budget.
    pub(crate) fn try_wrap<T>(self: &Arc<Self>, value: T, bytes: u64) -> Result<Charged<T>, T> {
        match self.try_charge(bytes) {
            Some(charge) => Ok(Charged {
                value,
                _charge: charge,
            }),
            None => Err(value),
        }
    }
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self
            .budget
            .used_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
        debug_assert!(
            before >= self.bytes,
            "a budget gives back only what it lent"
        );
    }
}

/// An item holding its share of a queue's byte budget until it is dropped or taken
/// apart with [`Charged::into_inner`]. Reads as the item itself.
#[derive(Debug)]
pub(crate) struct Charged<T> {
    value: T,
    _charge: Charge,
}

impl<T> Charged<T> {
    /// The item, giving its bytes back to the budget.
    pub(crate) fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Charged<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_gives_back_on_drop() {
        let b = ByteBudget::new(10);
        let a = b.try_wrap(vec![1u8; 6], 6).unwrap();
        assert_eq!(b.used_bytes(), 6);
        // Over the limit: refused, and the item comes back untouched.
        assert_eq!(b.try_wrap(vec![2u8; 5], 5).unwrap_err(), vec![2u8; 5]);
        let c = b.try_charge(4).unwrap();
        assert_eq!(b.used_bytes(), 10);
        assert!(b.try_charge(1).is_none());
        assert!(b.try_charge(u64::MAX).is_none());
        assert_eq!(a.len(), 6);
        assert_eq!(a.into_inner(), vec![1u8; 6]);
        assert_eq!(b.used_bytes(), 4);
        drop(c);
        assert_eq!(b.used_bytes(), 0);
        assert!(b.try_charge(10).is_some());
        assert_eq!(b.used_bytes(), 0);
    }
}
