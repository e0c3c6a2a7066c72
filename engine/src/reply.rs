//! One-shot reply slots: how a stage answers a caller that is blocked waiting for
//! exactly one result (a write's outcome, a read index, a membership change).
//!
//! A bounded(1) crossbeam channel would do the job, but a blocked `recv` first spins
//! and calls `sched_yield` before it parks. With one waiting caller per in-flight
//! request (an HTTP worker each, dozens under load) that spinning took a sixth of a
//! 2-core machine's CPU in the 3-node HTTP benchmark (`peer-bench.sh`). Here the
//! caller parks on a condition variable at once, and the answering stage pays one lock
//! and one wake-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use crossbeam_channel::RecvTimeoutError;
#[cfg(test)]
use crossbeam_channel::TryRecvError;
use parking_lot::{Condvar, Mutex};

enum State<T> {
    Waiting,
    Sent(T),
    // The receiver took the value.
    Taken,
    // The sender went away without answering.
    Dropped,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    answered: Condvar,
}

/// The answering side; the first `try_send` wins, dropping it unanswered disconnects.
pub(crate) struct Sender<T>(Arc<Slot<T>>);

/// The waiting side.
pub(crate) struct Receiver<T>(Arc<Slot<T>>);

/// A new, empty reply slot.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Waiting),
        answered: Condvar::new(),
    });
    (Sender(Arc::clone(&slot)), Receiver(slot))
}

impl<T> Sender<T> {
    /// Delivers `value`, or hands it back if an answer was already given. Never blocks
    /// for longer than the slot's lock is held (a few instructions).
    pub(crate) fn try_send(&self, value: T) -> Result<(), T> {
        let mut state = self.0.state.lock();
        if !matches!(*state, State::Waiting) {
            return Err(value);
        }
        *state = State::Sent(value);
        drop(state);
        self.0.answered.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        if matches!(*state, State::Waiting) {
            *state = State::Dropped;
            drop(state);
            self.0.answered.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// Takes the answer if it is there (tests look without waiting).
    #[cfg(test)]
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = self.0.state.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Sent(value) => Ok(value),
            State::Waiting => {
                *state = State::Waiting;
                Err(TryRecvError::Empty)
            }
            State::Dropped | State::Taken => {
                *state = State::Dropped;
                Err(TryRecvError::Disconnected)
            }
        }
    }

    /// Waits up to `timeout` for the answer.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        // A timeout too large to add is as good as none; a century is far past any
        // caller's patience.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
        let mut state = self.0.state.lock();
        // Bounded by the deadline: every turn either returns or waits until it.
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Sent(value) => return Ok(value),
                State::Dropped | State::Taken => {
                    *state = State::Dropped;
                    return Err(RecvTimeoutError::Disconnected);
                }
                State::Waiting => *state = State::Waiting,
            }
            if self.0.answered.wait_until(&mut state, deadline).timed_out()
                && matches!(*state, State::Waiting)
            {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_wins_and_arrives() {
        let (tx, rx) = channel();
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Err(2));
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(1));
        // Taken: nothing more will come.
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_waiter_is_woken_by_another_thread() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.try_send("done").unwrap();
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("done"));
        t.join().unwrap();
    }

    #[test]
    fn timeout_and_disconnect_are_told_apart() {
        let (tx, rx) = channel::<u8>();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        );
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    }
}
