//! Group commit in the style of raft-engine's write barrier.
//!
//! Writers queue their work. The first writer to arrive while no group is in flight
//! becomes the leader: it takes everything queued, performs the whole group (one write,
//! one sync) and hands each follower its result. Writers that arrive while a group is
//! in flight wait; when the leader finishes it promotes the oldest of them to lead the
//! next group, which by then holds everyone who arrived during the previous sync. Under
//! load the number of syncs therefore stays near (writes / writers), and with a single
//! writer the overhead is one uncontended lock.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};

/// Merges concurrent submissions of `T` into groups performed by one leader, each
/// submitter receiving its own `R`.
#[derive(Debug)]
pub(crate) struct WriteBarrier<T, R> {
    queue: Mutex<Queue<T, R>>,
    wake: Condvar,
}

#[derive(Debug)]
struct Queue<T, R> {
    next_ticket: u64,
    waiting: Vec<(u64, T)>,
    results: HashMap<u64, R>,
    /// Whether a leader is currently performing a group.
    leader_active: bool,
    /// The ticket promoted to lead the next group.
    promoted: Option<u64>,
}

impl<T, R> Default for WriteBarrier<T, R> {
    fn default() -> Self {
        WriteBarrier {
            queue: Mutex::new(Queue {
                next_ticket: 0,
                waiting: Vec::new(),
                results: HashMap::new(),
                leader_active: false,
                promoted: None,
            }),
            wake: Condvar::new(),
        }
    }
}

impl<T, R> WriteBarrier<T, R> {
    /// Submits `item` and returns its result. If this caller ends up leading, `perform`
    /// is called with the whole group (in arrival order) and must return one result per
    /// item, in the same order; otherwise `perform` is dropped unused.
    pub fn submit(&self, item: T, perform: impl FnOnce(Vec<T>) -> Vec<R>) -> R {
        let mut q = self.queue.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push((ticket, item));
        if q.leader_active {
            loop {
                self.wake.wait(&mut q);
                if let Some(r) = q.results.remove(&ticket) {
                    return r;
                }
                if q.promoted == Some(ticket) {
                    q.promoted = None;
                    break;
                }
            }
        } else {
            q.leader_active = true;
        }

        // This caller leads: take the whole queue as one group.
        let group: Vec<(u64, T)> = std::mem::take(&mut q.waiting);
        drop(q);
        let (tickets, items): (Vec<u64>, Vec<T>) = group.into_iter().unzip();
        let results = perform(items);

        let mut q = self.queue.lock();
        let mut mine = None;
        for (t, r) in tickets.into_iter().zip(results) {
            if t == ticket {
                mine = Some(r);
            } else {
                q.results.insert(t, r);
            }
        }
        match q.waiting.first() {
            Some(&(next, _)) => q.promoted = Some(next),
            None => q.leader_active = false,
        }
        drop(q);
        self.wake.notify_all();
        // `perform` returns one result per item by contract and our ticket was in the
        // group, so `mine` is set; the fallback only guards a broken `perform`.
        mine.unwrap_or_else(|| unreachable_result())
    }
}

#[cold]
fn unreachable_result<R>() -> R {
    // A `perform` that returns fewer results than items is a bug in this crate; there is
    // no meaningful result to hand back, and silently inventing one could report an
    // unwritten batch as durable.
    panic!("write barrier: group performer returned too few results")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_submitter_gets_its_own_result_and_groups_form() {
        let barrier = Arc::new(WriteBarrier::<u64, u64>::default());
        let groups = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let barrier = barrier.clone();
                let groups = groups.clone();
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let v = t * 1000 + i;
                        let r = barrier.submit(v, |items| {
                            groups.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            items.into_iter().map(|x| x * 2).collect()
                        });
                        assert_eq!(r, v * 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let groups = groups.load(Ordering::Relaxed);
        assert!(groups < 1600, "no grouping happened: {groups} groups");
    }
}
