//! A worker's open connections ([`Conns`]): how many there are (and holding off accepting at
//! `worker_connections`), closing one whose client has stopped reading to make room for a new
//! one ([`Conns::reclaim_slot`]), and draining them: telling every one to finish, and knowing
//! when they have. Parking idle ones is in [`super::parking`].
//!
//! Each open connection has one [`Slot`], the worker's record of it, and one guard, [`Open`],
//! which counts it (here and on the scoreboard) for as long as its task lives. When the worker
//! drains, every response it starts says `Connection: close`, so a request in progress or
//! arriving is answered and its connection then closed; a connection on which nothing happens
//! for [`DRAIN_LINGER`] is closed (see `http1::drain_connection`). [`Conns::closed`] resolves
//! once the last guard is dropped. Single-threaded: the worker's runtime is `current_thread`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a draining worker keeps an idle connection open for a request that may be on its
/// way: a new connection's first request, or the next one of a client that sends back to back.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Shared by the worker and its connection tasks.
#[derive(Clone, Default)]
pub(crate) struct Conns {
    pub(super) inner: Rc<Inner>,
}

#[derive(Default)]
pub(super) struct Inner {
    /// Set once, when the worker starts draining.
    draining: Cell<bool>,
    /// Open connections.
    open: Cell<usize>,
    /// Wakes connection tasks when draining starts.
    drain: Notify,
    /// Wakes the worker when the last connection closes.
    all_closed: Notify,
    /// Wakes an accept loop waiting for a connection to close.
    one_closed: Notify,
    /// Connections that finished a request, with how many requests they had started at the
    /// last sweep (see [`Conns::park_idle`]).
    pub(super) finished: RefCell<Vec<(Rc<Slot>, Option<u64>)>>,
    /// Wakes the sweep when the first one is queued, or the first connection closes since
    /// memory was last given back.
    pub(super) queued: Notify,
    /// Connections closed since memory was last given back (see [`Conns::park_idle`]).
    pub(super) closed: Cell<usize>,
    /// Connections whose writes have stalled (the client is not reading), with their task's
    /// waker, for [`Conns::reclaim_slot`]. Some may have made progress or closed since.
    stalled: RefCell<Vec<(Rc<Slot>, Waker)>>,
    /// The length of `stalled` at which it is next pruned as a connection is added, so that
    /// connections that stalled once do not pile up there.
    prune_at: Cell<usize>,
}

/// One open connection, as the worker sees it: what the parking sweep, the reclaim and the
/// drain read. Each field has one writer, named on it.
pub(crate) struct Slot {
    /// The worker's connections.
    conns: Conns,
    /// Requests started, and those whose response is not finished. Written by the service
    /// stack ([`Slot::request_started`], [`Slot::request_finished`]).
    pub(super) started: Cell<u64>,
    pub(super) active: Cell<u32>,
    /// Bytes read from the client. Written by the protocol ([`Slot::bytes_read`]).
    read: Cell<u64>,
    /// Since when the connection's writes make no progress (the client is not reading).
    /// Written by the protocol ([`Slot::write_stalled`], [`Slot::write_resumed`]).
    stalled_since: Cell<Option<Instant>>,
    /// Set by the parking sweep for a connection idle long enough to be parked; cleared when
    /// a request starts.
    pub(super) park: Cell<bool>,
    /// In the queue of the parking sweep. Written by the sweep.
    pub(super) queued: Cell<bool>,
    /// Wakes the connection's task, for the protocol to park it once idle. Written by the
    /// protocol, taken by the sweep.
    pub(super) task: RefCell<Option<Waker>>,
    /// In the worker's list of stalled connections. Written by [`Conns`].
    listed: Cell<bool>,
    /// Told to close by [`Conns::reclaim_slot`], to make room for a new connection.
    evicted: Cell<bool>,
    /// Set while draining, when the drain waits on `changed`.
    watched: Cell<bool>,
    changed: Notify,
    /// Parked by its protocol (see [`Slot::set_parked`]). Written by the protocol, and by
    /// [`Open`] as the connection closes.
    parked: Cell<bool>,
    /// Where else the connection is counted, open and parked.
    tally: Option<Rc<dyn Tally>>,
}

/// Counts one open connection for as long as it lives, in the worker and on the scoreboard.
pub(crate) struct Open {
    slot: Rc<Slot>,
}

/// Where else open connections are counted (the worker's scoreboard slot, by the service
/// stack's requests): told when one opens and when it closes, and when it is parked and no
/// longer is (woken, or closed while parked). A trait, so that the drain does not depend on
/// the service stack that depends on it.
pub(crate) trait Tally {
    fn opened(&self);
    fn closed(&self);
    fn parked(&self);
    fn unparked(&self);
}

impl Open {
    /// The connection's slot.
    pub(crate) fn slot(&self) -> &Rc<Slot> {
        &self.slot
    }
}

impl Conns {
    /// Counts a new connection; `tally`, if given, counts it too.
    pub(crate) fn open(&self, tally: Option<Rc<dyn Tally>>) -> Open {
        self.inner.open.set(self.inner.open.get() + 1);
        if let Some(tally) = &tally {
            tally.opened();
        }
        Open { slot: Rc::new(Slot::new(self, tally)) }
    }

    /// At `worker_connections`, with a new connection waiting: closes the connection whose
    /// writes have stalled longest (its client is not reading), if that is at least
    /// `stalled_for`. True if one was told to close: its slot comes free once it has (see
    /// [`Conns::below`]). Without this, clients that do not read would keep new ones out
    /// for as long as `send_timeout`.
    pub(crate) fn reclaim_slot(&self, stalled_for: Duration) -> bool {
        let mut stalled = self.inner.stalled.borrow_mut();
        prune(&mut stalled);
        // All are stalled now: the earliest start is the longest stall.
        let longest = stalled
            .iter()
            .enumerate()
            .filter_map(|(at, (slot, _))| Some((at, slot.stalled_since.get()?)))
            .min_by_key(|&(_, since)| since);
        let Some((at, since)) = longest else { return false };
        let stalled_ms = since.elapsed().as_millis() as u64;
        if since.elapsed() < stalled_for {
            return false;
        }
        let (slot, task) = stalled.swap_remove(at);
        slot.listed.set(false);
        slot.evicted.set(true);
        task.wake();
        tracing::info!(
            stalled_ms,
            "worker_connections reached with a new connection waiting: closed a connection \
             whose client is not reading"
        );
        true
    }

    /// How many connections are open.
    pub(crate) fn open_count(&self) -> usize {
        self.inner.open.get()
    }

    /// Starts draining: every connection is told to finish.
    pub(crate) fn start_draining(&self) {
        self.inner.draining.set(true);
        self.inner.drain.notify_waiters();
    }

    /// Resolves once draining has started.
    pub(crate) async fn draining(&self) {
        // Single-threaded: nothing can call `start_draining` between this check and the first
        // poll of `notified`, which registers the waiter.
        if !self.inner.draining.get() {
            self.inner.drain.notified().await;
        }
    }

    /// Resolves once fewer than `limit` connections are open (`worker_connections`).
    pub(crate) async fn below(&self, limit: usize) {
        while self.inner.open.get() >= limit {
            self.inner.one_closed.notified().await;
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn closed(&self) {
        while self.inner.open.get() > 0 {
            self.inner.all_closed.notified().await;
        }
    }
}

/// Keeps of a list of stalled connections those still stalled (and open).
fn prune(stalled: &mut Vec<(Rc<Slot>, Waker)>) {
    stalled.retain(|(slot, _)| {
        let keep = slot.stalled_since.get().is_some();
        slot.listed.set(keep);
        keep
    });
}

impl Drop for Open {
    fn drop(&mut self) {
        let inner = &self.slot.conns.inner;
        // Not stalled any more: closed. Off the list of stalled connections at once, with the
        // waker it holds (which keeps the finished task's memory), rather than at the next
        // stall: after a wave of clients that did not read, nothing of theirs stays.
        self.slot.stalled_since.set(None);
        if self.slot.listed.get() {
            // (Never borrowed while a connection can close; if it were, the next prune does it.)
            if let Ok(mut stalled) = inner.stalled.try_borrow_mut() {
                prune(&mut stalled);
            }
        }
        // A connection that closes parked is not parked any more: each park has its unpark.
        self.slot.set_parked(false);
        if let Some(tally) = &self.slot.tally {
            tally.closed();
        }
        let open = inner.open.get() - 1;
        inner.open.set(open);
        inner.closed.set(inner.closed.get() + 1);
        // For the sweep, which watches a wave of closing connections (see `Release`).
        inner.queued.notify_one();
        inner.one_closed.notify_waiters();
        if open == 0 {
            inner.all_closed.notify_waiters();
        }
    }
}

impl Slot {
    fn new(conns: &Conns, tally: Option<Rc<dyn Tally>>) -> Slot {
        Slot {
            conns: conns.clone(),
            started: Cell::new(0),
            active: Cell::new(0),
            read: Cell::new(0),
            stalled_since: Cell::new(None),
            park: Cell::new(false),
            queued: Cell::new(false),
            task: RefCell::new(None),
            listed: Cell::new(false),
            evicted: Cell::new(false),
            watched: Cell::new(false),
            changed: Notify::new(),
            parked: Cell::new(false),
            tally,
        }
    }

    /// The protocol parked the connection (idle, its buffers let go), or ended that: counted
    /// once per change, whatever the protocol calls, so that every park has one unpark (the
    /// last one, if need be, as the connection closes: see [`Open`]).
    pub(crate) fn set_parked(&self, parked: bool) {
        if self.parked.replace(parked) == parked {
            return;
        }
        if let Some(tally) = &self.tally {
            if parked { tally.parked() } else { tally.unparked() }
        }
    }

    /// The worker's connections.
    pub(crate) fn conns(&self) -> &Conns {
        &self.conns
    }

    /// A request started: returns its number on the connection (1 for the first).
    pub(crate) fn request_started(&self) -> u64 {
        let number = self.started.get() + 1;
        self.started.set(number);
        self.park.set(false);
        self.active.set(self.active.get() + 1);
        self.wake();
        number
    }

    /// A request's response is finished (or abandoned).
    pub(crate) fn request_finished(&self) {
        self.active.set(self.active.get().saturating_sub(1));
        self.wake();
    }

    /// How many requests have started.
    pub(crate) fn started(&self) -> u64 {
        self.started.get()
    }

    /// A request is being answered.
    pub(crate) fn busy(&self) -> bool {
        self.active.get() > 0
    }

    /// `n` bytes were read from the client.
    pub(crate) fn bytes_read(&self, n: usize) {
        self.read.set(self.read.get() + n as u64);
        self.wake();
    }

    /// Bytes read from the client so far.
    pub(crate) fn read(&self) -> u64 {
        self.read.get()
    }

    /// Whether the sweep found the connection idle long enough to be parked.
    pub(crate) fn park_due(&self) -> bool {
        self.park.get()
    }

    /// Keeps the waker of the connection's task, for the parking sweep.
    pub(crate) fn remember_task(&self, waker: &Waker) {
        let mut task = self.task.borrow_mut();
        if !task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }

    /// The connection's writes stalled at `since`: the client is not reading. `task` is woken
    /// if the connection is to close to make room for a new one (see [`Slot::evicted`]).
    pub(crate) fn write_stalled(self: &Rc<Self>, since: Instant, task: &Waker) {
        self.stalled_since.set(Some(since));
        if !self.listed.replace(true) {
            let inner = &self.conns.inner;
            let mut stalled = inner.stalled.borrow_mut();
            if stalled.len() >= inner.prune_at.get() {
                prune(&mut stalled);
                inner.prune_at.set((stalled.len() * 2).max(64));
            }
            stalled.push((Rc::clone(self), task.clone()));
        }
    }

    /// A write made progress after stalling.
    pub(crate) fn write_resumed(&self) {
        self.stalled_since.set(None);
    }

    /// Whether the connection must close to make room for a new one.
    pub(crate) fn evicted(&self) -> bool {
        self.evicted.get()
    }

    /// Whether a response must close its connection: once the worker drains, a response
    /// carries `Connection: close`, so the client knows not to send on the connection again.
    pub(crate) fn closing(&self) -> bool {
        self.conns.inner.draining.get()
    }

    /// From now on, the drain is woken when a request starts or ends or bytes arrive.
    pub(crate) fn watch(&self) {
        self.watched.set(true);
    }

    /// Resolves at the next change the drain watches for (see [`Slot::watch`]).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn wake(&self) {
        if self.watched.get() {
            self.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_connection_that_closes_leaves_the_stalled_list_at_once() {
        let conns = Conns::default();
        let mut open: Vec<Open> = (0..3).map(|_| conns.open(None)).collect();
        let slots: Vec<Rc<Slot>> = open.iter().map(|o| Rc::clone(o.slot())).collect();
        for slot in &slots {
            slot.write_stalled(Instant::now(), Waker::noop());
        }
        assert_eq!(conns.inner.stalled.borrow().len(), 3);
        assert_eq!(conns.open_count(), 3);
        drop(open.remove(0));
        // Not at the next stall, nor at the next reclaim: now, with the waker it held.
        assert_eq!(conns.inner.stalled.borrow().len(), 2);
        assert!(!slots[0].listed.get());
        assert_eq!(conns.open_count(), 2);
        drop(open);
        assert!(conns.inner.stalled.borrow().is_empty());
        assert_eq!(conns.open_count(), 0);
    }

    /// Counts what it is told, as the scoreboard slot does.
    #[derive(Default)]
    struct Counts {
        open: Cell<i64>,
        parked: Cell<i64>,
    }

    impl Tally for Counts {
        fn opened(&self) {
            self.open.set(self.open.get() + 1);
        }
        fn closed(&self) {
            self.open.set(self.open.get() - 1);
        }
        fn parked(&self) {
            self.parked.set(self.parked.get() + 1);
        }
        fn unparked(&self) {
            self.parked.set(self.parked.get() - 1);
        }
    }

    #[test]
    fn every_park_has_one_unpark_whatever_the_protocol_calls_and_as_a_parked_connection_closes() {
        let conns = Conns::default();
        let counts = Rc::new(Counts::default());
        let tally = || Some(Rc::clone(&counts) as Rc<dyn Tally>);
        let (a, b) = (conns.open(tally()), conns.open(tally()));
        assert_eq!((counts.open.get(), counts.parked.get()), (2, 0));
        a.slot().set_parked(true);
        a.slot().set_parked(true);
        b.slot().set_parked(false);
        assert_eq!(counts.parked.get(), 1, "a change is counted once; no unpark without a park");
        a.slot().set_parked(false);
        a.slot().set_parked(false);
        assert_eq!(counts.parked.get(), 0);
        a.slot().set_parked(true);
        b.slot().set_parked(true);
        assert_eq!(counts.parked.get(), 2);
        // The slot outlives the connection (the parking sweep holds it): closing unparks.
        let kept = Rc::clone(a.slot());
        drop(a);
        assert_eq!((counts.open.get(), counts.parked.get()), (1, 1));
        drop(kept);
        drop(b);
        assert_eq!((counts.open.get(), counts.parked.get()), (0, 0));
    }
}
