//! How the engine's threads ask the scheduler to treat them.
//!
//! The stages hand work to each other all the time: the raft stage wakes the persist
//! stage and the peers, the apply stage wakes every caller whose write it applied. On
//! Linux a woken thread normally preempts the one that woke it, so a stage handing
//! out a batch was switched out after each hand-off and back in to finish the batch;
//! in a 3-node cluster on 2 cores that was a third of all context switches. Stage
//! threads therefore run as `SCHED_BATCH`: same CPU share as any other thread, but a
//! woken stage waits for the CPU it lands on to free up rather than preempting (the
//! policy exists for exactly such throughput-bound work; no privilege is needed).
//!
//! Snapshot writing is background work whose only deadline is the log's growth, so
//! its thread also lowers its priority (nice 10): when the CPU is short, requests go
//! first. Three nodes of a cluster reach the snapshot index together, and their three
//! snapshots at once otherwise showed as a spike in request latency.
//!
//! Both are hints: a refusal is logged and ignored, and other systems ignore them.

/// The scheduling treatment of one engine thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadPolicy {
    /// Raft, persist and apply stages.
    Stage,
    /// Writing a snapshot.
    Background,
}

// Nice value of background threads: about a tenth of a normal thread's share of a
// busy CPU, so they still progress.
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 10;

/// Applies `policy` to the calling thread.
pub(crate) fn apply_to_current_thread(policy: ThreadPolicy) {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system calls on the calling thread (pid 0 / its own tid) with a
        // valid parameter block; they change nothing but its scheduling.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            log::debug!("SCHED_BATCH refused: {}", std::io::Error::last_os_error());
        }
        if policy == ThreadPolicy::Background {
            // SAFETY: as above; on Linux the nice value is per thread, named by tid.
            let rc = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE)
            };
            if rc != 0 {
                log::debug!(
                    "lowering a background thread's priority was refused: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_background_thread_runs_batch_at_a_lower_priority() {
        let seen = std::thread::spawn(|| {
            apply_to_current_thread(ThreadPolicy::Background);
            // SAFETY: queries about the calling thread only.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, tid),
                )
            }
        })
        .join()
        .unwrap();
        assert_eq!(seen, (libc::SCHED_BATCH, BACKGROUND_NICE));
        // The test's own thread is untouched.
        // SAFETY: a query about the calling thread.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
