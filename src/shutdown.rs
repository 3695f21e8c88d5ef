//! Draining a worker: telling every open connection to finish, and knowing when they have.
//!
//! Each connection task holds a [`Tracked`] guard and watches [`Shutdown::draining`]. When the
//! worker drains, a connection with a request in flight finishes that response (sent with
//! `Connection: close`) and an idle keep-alive connection closes; [`Shutdown::closed`] resolves
//! once the last guard is dropped. Single-threaded: the worker's runtime is `current_thread`.

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

/// Shared by the worker and its connection tasks.
#[derive(Clone, Default)]
pub(crate) struct Shutdown {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set once, when the worker starts draining.
    draining: Cell<bool>,
    /// Open connections.
    open: Cell<usize>,
    /// Wakes connection tasks when draining starts.
    drain: Notify,
    /// Wakes the worker when the last connection closes.
    all_closed: Notify,
}

/// Counts one open connection for as long as it lives.
pub(crate) struct Tracked {
    inner: Rc<Inner>,
}

impl Shutdown {
    /// Counts a new connection.
    pub(crate) fn track(&self) -> Tracked {
        self.inner.open.set(self.inner.open.get() + 1);
        Tracked { inner: Rc::clone(&self.inner) }
    }

    /// How many connections are open.
    pub(crate) fn open(&self) -> usize {
        self.inner.open.get()
    }

    /// Starts draining: every connection is told to finish.
    pub(crate) fn start(&self) {
        self.inner.draining.set(true);
        self.inner.drain.notify_waiters();
    }

    /// Resolves once draining has started.
    pub(crate) async fn draining(&self) {
        // Single-threaded: nothing can call `start` between this check and the first poll of
        // `notified`, which registers the waiter.
        if !self.inner.draining.get() {
            self.inner.drain.notified().await;
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn closed(&self) {
        while self.inner.open.get() > 0 {
            self.inner.all_closed.notified().await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let open = self.inner.open.get() - 1;
        self.inner.open.set(open);
        if open == 0 {
            self.inner.all_closed.notify_waiters();
        }
    }
}
