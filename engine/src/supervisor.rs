//! Supervision of a node's threads: each stage runs under [`spawn_stage`], which turns
//! how it ended (a clean close, a fatal error it returned, or a panic) into the node's
//! one [`StopReason`], kept in [`Shared`].
//!
//! Owns the rule that a node fails as a whole: the first fatal cause is recorded
//! *before* the dead stage's channel ends close, so every other stage, which ends when
//! it sees them close (or is woken by [`Shared::fail`]), and every caller woken by
//! that finds the cause recorded and reports it, never a bare "closed". A stage that
//! ends while nobody stopped the node is itself a broken invariant, and fatal.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Fatal, FatalKind, StopReason};
use crate::shared::Shared;
use crate::thread_policy::{self, ThreadPolicy};

/// A long-running thread of a node.
pub(crate) trait Stage: Send + 'static {
    /// Runs until the node stops (`Closed`, or the node's fatal reason once another
    /// stage failed) or this stage hits a fatal error (`Fatal`).
    fn run(&mut self) -> StopReason;

    /// Answers whatever still waits on this stage, once it ended for `reason` (the
    /// node's reason, recorded already). Called after a panic too, so it only drains
    /// queues and must not rely on the state `run` left.
    fn stopped(&mut self, _reason: &StopReason) {}
}

/// Starts `stage` on a thread named `name` (with the scheduler hint `policy`) under
/// supervision.
pub(crate) fn spawn_stage<S: Stage>(
    shared: Arc<Shared>,
    name: String,
    policy: Option<ThreadPolicy>,
    mut stage: S,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        if let Some(policy) = policy {
            thread_policy::apply_to_current_thread(policy);
        }
        // The stage is borrowed, not moved, into the guarded call: its channel ends
        // outlive a panic and close only below, once the cause is recorded.
        let ended = catch_unwind(AssertUnwindSafe(|| stage.run()));
        record_end(&shared, ended);
        let reason = shared.stop_reason().unwrap_or(StopReason::Closed);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| stage.stopped(&reason))) {
            log::error!(
                "node {}: draining a stopped stage panicked: {}",
                shared.id,
                panic_message(payload.as_ref())
            );
        }
        drop(stage);
    })
}

/// Runs `f` (a short-lived job on a thread of the node's own, e.g. writing a snapshot)
/// and turns a panic in it into the node's fatal stop. `None` after a panic.
pub(crate) fn guarded<T>(shared: &Shared, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            shared.fail(panicked(payload.as_ref()));
            None
        }
    }
}

fn record_end(shared: &Shared, ended: std::thread::Result<StopReason>) {
    match ended {
        Ok(StopReason::Closed) => {
            if shared.stop_reason().is_none() {
                shared.fail(Fatal::here(
                    FatalKind::Invariant,
                    "the stage ended while the node was running",
                ));
            }
        }
        // Perhaps only passing on the node's reason (woken by `fail`): `fail` then
        // changes nothing.
        Ok(StopReason::Fatal(fatal)) => shared.fail(fatal),
        Err(payload) => shared.fail(panicked(payload.as_ref())),
    }
}

// The fatal error of a panic on the calling thread.
fn panicked(payload: &(dyn Any + Send)) -> Fatal {
    Fatal::here(FatalKind::Panic, panic_message(payload))
}

/// The message a panic was raised with (`panic!` with a literal or a format string).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let literal = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "plain");
        let n = 3;
        let formatted = catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "formatted 3");
        let other = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "a panic without a message");
    }
}
