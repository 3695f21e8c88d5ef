//! Parking idle connections, worker-wide: one sweep per worker ([`Conns::park_idle`]) wakes
//! the connections that have been idle [`PARK_AFTER`] since their last request, for their
//! protocol to park them (HTTP/1: hyper's connection and its buffers dropped until the next
//! request; see `http1::Gate::parked`). The same sweep gives memory back to the system after
//! a wave of connections has parked or closed ([`Release`]).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::drain::{Conns, Slot};

/// How long a connection is idle between requests before it is parked: long enough that a
/// client sending back to back never is, short enough that a burst of new connections, each
/// idle after a request, never holds many hyper buffers at once.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(50);

impl Conns {
    /// Has the connection looked at by the next sweep of [`Conns::park_idle`]: it finished a
    /// request, and may stay idle. Cheap enough for every request: a connection is queued
    /// once, however many requests it finishes before the sweep.
    #[inline]
    pub(crate) fn queue_for_parking(&self, slot: &Rc<Slot>) {
        if slot.queued.replace(true) {
            return;
        }
        let mut finished = self.inner.finished.borrow_mut();
        if finished.is_empty() {
            self.inner.queued.notify_one();
        }
        finished.push((Rc::clone(slot), None));
    }

    /// Runs for the worker's life: every [`PARK_AFTER`], wakes the connections that have been
    /// idle for a whole sweep period (no request started since the last sweep, none in
    /// progress), for their protocol to park them. One timer for the worker, and no clock
    /// reading per request: a connection kept busy by its client is looked at once per sweep
    /// and left alone. It also gives memory back to the system once a wave of closing
    /// connections is over.
    pub(crate) async fn park_idle(&self) {
        let mut release = Release::default();
        loop {
            if self.inner.finished.borrow().is_empty() && !release.watching(self.inner.closed.get())
            {
                self.inner.queued.notified().await;
            }
            tokio::time::sleep(PARK_AFTER).await;
            let mut woken = 0;
            self.inner.finished.borrow_mut().retain_mut(|(slot, seen)| {
                if Rc::strong_count(slot) == 1 {
                    // Closed.
                    slot.queued.set(false);
                    return false;
                }
                let started = slot.started.get();
                if slot.active.get() > 0 || *seen != Some(started) {
                    *seen = Some(started);
                    return true;
                }
                slot.queued.set(false);
                slot.park.set(true);
                if let Some(task) = slot.task.borrow_mut().take() {
                    task.wake();
                    woken += 1;
                }
                false
            });
            if release.due(woken, self.inner.closed.get(), Instant::now()) {
                // Once the woken connections have parked (they run before this task runs
                // again), what their buffers took is given back.
                tokio::task::yield_now().await;
                crate::process::release_free_memory();
                self.inner.closed.set(0);
            }
        }
    }
}

/// When the sweep of [`Conns::park_idle`] gives memory back to the system
/// (`malloc_trim`): after a wave of connections parked at once, or after a wave of closing
/// ones (clients that stopped reading, timed out together, leave their buffers free in the
/// allocator) is over, none having closed for a sweep period; never while connections keep
/// closing, since new ones would take that memory again. `malloc_trim` walks the allocator's
/// free lists and returns their pages: on a large, fragmented heap that took 9 to 16 ms, an
/// event-loop stall, and the pages are faulted in again by new connections. So it is done only
/// for a wave worth it: [`RELEASE_AFTER_PARKING`] parked in one sweep, or
/// [`RELEASE_AFTER_CLOSING`] closed since memory was last given back, the latter at most once
/// per [`RELEASE_INTERVAL`]: a worker whose connections close a few at a time trims once per
/// `RELEASE_AFTER_CLOSING` of them, not once a second. (glibc's `mallinfo2` would say how much is free, but it walks the same lists.)
#[derive(Debug, Default)]
struct Release {
    /// Connections closed (since memory was last given back) as of the last sweep.
    closed_then: usize,
    /// When memory was last given back.
    at: Option<Instant>,
}

impl Release {
    /// Whether the sweep must run again without waiting for news: connections closed since the
    /// last sweep (the wave may go on), or enough did for memory to be given back once it is
    /// over. False for a few connections closed, with none since the last sweep.
    fn watching(&self, closed: usize) -> bool {
        closed != self.closed_then || closed >= RELEASE_AFTER_CLOSING
    }

    /// After a sweep that woke `woken` connections to park, with `closed` connections closed
    /// since memory was last given back: whether to give it back now.
    fn due(&mut self, woken: usize, closed: usize, now: Instant) -> bool {
        let wave_over = closed >= RELEASE_AFTER_CLOSING && closed == self.closed_then;
        self.closed_then = closed;
        // Parked connections let go of their buffers all at once, and a wave of them may
        // come every sweep while connections go idle: each is given back at once, or idle
        // connections would keep what the last waves freed. Closes trickle in, so a wave of
        // them is given back at most once per RELEASE_INTERVAL.
        let due = woken >= RELEASE_AFTER_PARKING
            || wave_over
                && self.at.is_none_or(|at| now.saturating_duration_since(at) >= RELEASE_INTERVAL);
        if due {
            self.at = Some(now);
            self.closed_then = 0;
        }
        due
    }
}

/// How many connections parked at once make it worth giving memory back to the system: each
/// lets go of hyper's buffers (16 KiB).
const RELEASE_AFTER_PARKING: usize = 256;

/// How many closed connections make it worth giving memory back to the system: a connection
/// that stopped reading held up to about 75 KiB (see [`super::WRITE_AHEAD`]), so 64 of them
/// about 5 MiB; and one `malloc_trim` per 64 connections closed costs each at most a fraction
/// of a millisecond.
const RELEASE_AFTER_CLOSING: usize = 64;

/// How often, at most, memory is given back.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    /// Sweeps that each see `closed` connections closed so far and `woken` parked; returns the
    /// sweeps (by index) after which memory was given back.
    fn releases(sweeps: &[(usize, usize)], every: Duration) -> Vec<usize> {
        let mut release = Release::default();
        let start = Instant::now();
        let mut closed_base = 0;
        let mut given = Vec::new();
        for (i, &(woken, closed)) in sweeps.iter().enumerate() {
            // `closed` counts from the start; the worker's count restarts at each release.
            if release.due(woken, closed - closed_base, start + every * i as u32) {
                given.push(i);
                closed_base = closed;
            }
        }
        given
    }

    #[test]
    fn memory_is_given_back_after_a_wave_worth_it_only() {
        let sweep = PARK_AFTER;
        // A lightly loaded worker: a connection closes now and then. Never trimmed for one, nor
        // for a few: once per RELEASE_AFTER_CLOSING of them.
        let trickle: Vec<(usize, usize)> = (0..400).map(|i| (0, i / 5)).collect();
        let given = releases(&trickle, sweep);
        assert_eq!(given.len(), 400 / 5 / RELEASE_AFTER_CLOSING, "{given:?}");
        // 100 clients that stopped reading, closed together: given back once it is over.
        let wave = [(0, 0), (0, 60), (0, 100), (0, 100), (0, 100)];
        assert_eq!(releases(&wave, sweep), [3]);
        // Two such waves within RELEASE_INTERVAL: the second waits.
        let waves = [(0, 100), (0, 100), (0, 200), (0, 200), (0, 200)];
        assert_eq!(releases(&waves, sweep), [1]);
        assert_eq!(releases(&waves, RELEASE_INTERVAL), [1, 3]);
        // Many connections parked at once, each letting go of hyper's buffers: every such
        // wave, however close together (the last must not keep what it freed).
        let parked = [(RELEASE_AFTER_PARKING, 0), (RELEASE_AFTER_PARKING, 0), (10, 0)];
        assert_eq!(releases(&parked, sweep), [0, 1]);
    }

    #[test]
    fn the_sweep_sleeps_once_closing_connections_are_not_worth_watching() {
        let mut release = Release::default();
        assert!(!release.watching(0));
        assert!(release.watching(3), "a wave may be starting");
        release.due(0, 3, Instant::now());
        assert!(!release.watching(3), "three, and none since the last sweep");
        assert!(release.watching(RELEASE_AFTER_CLOSING), "worth giving back once over");
    }
}
