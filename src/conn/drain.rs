//! A worker's open connections: how many there are (and holding off accepting at
//! `worker_connections`), and draining them: telling every one to finish, and knowing when they
//! have.
//!
//! Each connection task holds a [`Tracked`] guard and is driven by
//! [`Shutdown::drain_connection`]. When the worker drains, every response it starts says
//! `Connection: close`, so a request in progress or arriving is answered and its connection then
//! closed; a connection on which nothing happens for [`DRAIN_LINGER`] is closed.
//! [`Shutdown::closed`] resolves once the last guard is dropped.
//!
//! Parking: [`Shutdown::park_idle`], one sweep per worker, wakes the connections that have been
//! idle [`PARK_AFTER`] since their last request, for the gate to park them (hyper's connection
//! and its buffers dropped until the next request; see `Gate::parked`). The same sweep gives
//! memory back to the system after a wave of connections has closed (see `Release`).
//! Single-threaded: the worker's runtime is `current_thread`.
//!
//! A response body is handed to hyper only while less than [`WRITE_AHEAD`] of what the
//! connection was given is unwritten (see [`ConnState::poll_send_room`]): hyper would
//! otherwise copy up to 400 KiB of a body into its buffer for a client that is not reading,
//! and keep it. What a client that stops reading holds is then that, plus the last piece of
//! body handed over, plus a head.
//!
//! At `worker_connections`, a connection whose client has stopped reading may be closed to
//! make room for a new one (see [`Shutdown::reclaim_slot`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
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
    /// Wakes an accept loop waiting for a connection to close.
    one_closed: Notify,
    /// Connections that finished a request, with how many requests they had started at the
    /// last sweep (see [`Shutdown::park_idle`]).
    finished: std::cell::RefCell<Vec<(Rc<ConnState>, Option<u64>)>>,
    /// Wakes the sweep when the first one is queued, or the first connection closes since
    /// memory was last given back.
    queued: Notify,
    /// Connections closed since memory was last given back (see [`Shutdown::park_idle`]).
    closed: Cell<usize>,
    /// Connections whose writes have stalled (the client is not reading), with their task's
    /// waker, for [`Shutdown::reclaim_slot`]. Some may have made progress or closed since.
    stalled: std::cell::RefCell<Vec<(Rc<ConnState>, std::task::Waker)>>,
    /// The length of `stalled` at which it is next pruned as a connection is added, so that
    /// connections that stalled once do not pile up there.
    prune_at: Cell<usize>,
}

/// Counts one open connection for as long as it lives.
pub(crate) struct Tracked {
    inner: Rc<Inner>,
    conn: Rc<ConnState>,
}

impl Shutdown {
    /// Counts a new connection.
    pub(crate) fn track(&self, conn: &Rc<ConnState>) -> Tracked {
        self.inner.open.set(self.inner.open.get() + 1);
        Tracked { inner: Rc::clone(&self.inner), conn: Rc::clone(conn) }
    }

    /// At `worker_connections`, with a new connection waiting: closes the connection whose
    /// writes have stalled longest (its client is not reading), if that is at least
    /// `stalled_for`. True if one was told to close: its slot comes free once it has (see
    /// [`Shutdown::below`]). Without this, clients that do not read would keep new ones out
    /// for as long as `send_timeout`.
    pub(crate) fn reclaim_slot(&self, stalled_for: Duration) -> bool {
        let mut stalled = self.inner.stalled.borrow_mut();
        prune(&mut stalled);
        // All are stalled now: the earliest start is the longest stall.
        let longest = stalled
            .iter()
            .enumerate()
            .filter_map(|(at, (conn, _))| Some((at, conn.stalled_since.get()?)))
            .min_by_key(|&(_, since)| since);
        let Some((at, since)) = longest else { return false };
        let stalled_ms = since.elapsed().as_millis() as u64;
        if since.elapsed() < stalled_for {
            return false;
        }
        let (conn, task) = stalled.swap_remove(at);
        conn.listed.set(false);
        conn.evicted.set(true);
        task.wake();
        tracing::info!(
            stalled_ms,
            "worker_connections reached with a new connection waiting: closed a connection \
             whose client is not reading"
        );
        true
    }

    /// Has the connection looked at by the next sweep of [`Shutdown::park_idle`]: it finished a
    /// request, and may stay idle. Cheap enough for every request: a connection is queued
    /// once, however many requests it finishes before the sweep.
    pub(crate) fn queue_for_parking(&self, conn: &Rc<ConnState>) {
        if conn.queued.replace(true) {
            return;
        }
        let mut finished = self.inner.finished.borrow_mut();
        if finished.is_empty() {
            self.inner.queued.notify_one();
        }
        finished.push((Rc::clone(conn), None));
    }

    /// Runs for the worker's life: every [`PARK_AFTER`], wakes the connections that have been
    /// idle for a whole sweep period (no request started since the last sweep, none in
    /// progress), for the gate to park them (see [`crate::gate::Gate::parked`]). One timer for
    /// the worker, and no clock reading per request: a connection kept busy by its client is
    /// looked at once per sweep and left alone. It also gives memory back to the system once
    /// a wave of closing connections is over.
    pub(crate) async fn park_idle(&self) {
        let mut release = Release::default();
        loop {
            if self.inner.finished.borrow().is_empty() && !release.watching(self.inner.closed.get())
            {
                self.inner.queued.notified().await;
            }
            tokio::time::sleep(PARK_AFTER).await;
            let mut woken = 0;
            self.inner.finished.borrow_mut().retain_mut(|(conn, seen)| {
                if Rc::strong_count(conn) == 1 {
                    // Closed.
                    conn.queued.set(false);
                    return false;
                }
                let started = conn.started.get();
                if conn.active.get() > 0 || *seen != Some(started) {
                    *seen = Some(started);
                    return true;
                }
                conn.queued.set(false);
                conn.park.set(true);
                if let Some(task) = conn.task.borrow_mut().take() {
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
fn prune(stalled: &mut Vec<(Rc<ConnState>, std::task::Waker)>) {
    stalled.retain(|(conn, _)| {
        let keep = conn.stalled_since.get().is_some();
        conn.listed.set(keep);
        keep
    });
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Not stalled any more: closed. Off the list of stalled connections at once, with the
        // waker it holds (which keeps the finished task's memory), rather than at the next
        // stall: after a wave of clients that did not read, nothing of theirs stays.
        self.conn.stalled_since.set(None);
        if self.conn.listed.get() {
            // (Never borrowed while a connection can close; if it were, the next prune does it.)
            if let Ok(mut stalled) = self.inner.stalled.try_borrow_mut() {
                prune(&mut stalled);
            }
        }
        let open = self.inner.open.get() - 1;
        self.inner.open.set(open);
        self.inner.closed.set(self.inner.closed.get() + 1);
        // For the sweep, which watches a wave of closing connections (see `Release`).
        self.inner.queued.notify_one();
        self.inner.one_closed.notify_waiters();
        if open == 0 {
            self.inner.all_closed.notify_waiters();
        }
    }
}

/// How far one connection is in its requests, so that draining finishes a request that is
/// arriving instead of cutting it: a connection closed just as a client sends on it loses that
/// request (the client sees a reset or an early EOF).
///
/// Fed by the [`crate::gate`] under hyper and by the service when a request starts and ends;
/// read by [`Shutdown::drain_connection`] and the gate.
pub(crate) struct ConnState {
    /// The worker's draining state.
    shutdown: Shutdown,
    /// Requests the service has been called for.
    started: Cell<u64>,
    /// Requests whose response is not finished.
    active: Cell<u32>,
    /// The gate, waiting for the last response before it ends the input.
    gate: std::cell::RefCell<Option<std::task::Waker>>,
    /// Bytes read from the client.
    read: Cell<u64>,
    /// The client's address: the socket's peer, or what a trusted PROXY header said.
    peer: Cell<Option<std::net::SocketAddr>>,
    /// Set by [`Shutdown::park_idle`] for a connection idle long enough to be parked.
    park: Cell<bool>,
    /// The request (by number) whose body the gate let through: the body timer starts when
    /// the service is called for it.
    body_pending: Cell<u64>,
    /// Why a request's body could not be read whole (see [`crate::gate`]): the request's
    /// number on the connection (1 for the first), and the status to answer.
    body_error: Cell<Option<(u64, http::StatusCode)>>,
    /// When the service was last called for a request.
    started_at: Cell<Instant>,
    /// Set while draining, when someone waits on `changed`.
    watched: Cell<bool>,
    /// In the queue of [`Shutdown::park_idle`].
    queued: Cell<bool>,
    /// Wakes the connection's task, for the gate to park it once idle.
    task: std::cell::RefCell<Option<std::task::Waker>>,
    changed: Notify,
    /// Response body bytes handed to hyper and not yet written to the client, in hyper's
    /// buffer or held back by the gate (less the heads', which the count does not tell apart:
    /// a few hundred bytes per response). Set to zero when nothing is left (see
    /// [`ConnState::all_sent`]).
    unsent: Cell<usize>,
    /// A response body waiting for the client to read, until `unsent` is below
    /// [`WRITE_AHEAD`].
    writable: Cell<Option<std::task::Waker>>,
    /// Since when the connection's writes make no progress (the client is not reading).
    stalled_since: Cell<Option<Instant>>,
    /// In the worker's list of stalled connections (see [`Shutdown::reclaim_slot`]).
    listed: Cell<bool>,
    /// Told to close by [`Shutdown::reclaim_slot`], to make room for a new connection.
    evicted: Cell<bool>,
}

impl ConnState {
    pub(crate) fn new(shutdown: &Shutdown, peer: Option<std::net::SocketAddr>) -> Self {
        ConnState {
            peer: Cell::new(peer),
            shutdown: shutdown.clone(),
            started: Cell::new(0),
            active: Cell::new(0),
            gate: std::cell::RefCell::new(None),
            read: Cell::new(0),
            park: Cell::new(false),
            body_pending: Cell::new(0),
            body_error: Cell::new(None),
            started_at: Cell::new(Instant::now()),
            watched: Cell::new(false),
            queued: Cell::new(false),
            task: std::cell::RefCell::new(None),
            changed: Notify::new(),
            unsent: Cell::new(0),
            writable: Cell::new(None),
            stalled_since: Cell::new(None),
            listed: Cell::new(false),
            evicted: Cell::new(false),
        }
    }

    /// Whether a response body may give hyper more: only while less than [`WRITE_AHEAD`] of
    /// what it gave is unwritten; if not, the body's task is woken once the client has read
    /// enough. hyper copies body bytes into its own buffer until 400 KiB wait there, and
    /// writes only then: for a client that does not read, that buffer is what the worker
    /// spends on it. With this, hyper writes after each chunk that reaches `WRITE_AHEAD`.
    pub(crate) fn poll_send_room(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.unsent.get() < WRITE_AHEAD {
            return std::task::Poll::Ready(());
        }
        self.writable.set(Some(cx.waker().clone()));
        std::task::Poll::Pending
    }

    /// A response body gave hyper `n` bytes to write.
    pub(crate) fn to_send(&self, n: usize) {
        self.unsent.set(self.unsent.get() + n);
    }

    /// `n` bytes were written to the client.
    pub(crate) fn sent(&self, n: usize) {
        let unsent = self.unsent.get().saturating_sub(n);
        self.unsent.set(unsent);
        if unsent < WRITE_AHEAD {
            if let Some(body) = self.writable.take() {
                body.wake();
            }
        }
    }

    /// Everything hyper was given has been written, or is gone with hyper's connection: no
    /// byte of a body is waiting for the client. The count is set right here, so that it
    /// cannot drift: hyper writes no more of a body than its `Content-Length` says and drops
    /// the rest, which was counted and will never be written (nor counted off); a count left
    /// that high would hold the connection's next responses back for ever.
    pub(crate) fn all_sent(&self) {
        if self.unsent.get() != 0 {
            self.unsent.set(0);
            if let Some(body) = self.writable.take() {
                body.wake();
            }
        }
    }

    /// The connection's writes stalled at `since`: the client is not reading. `task` is woken
    /// if the connection is to close to make room for a new one (see [`ConnState::evicted`]).
    pub(crate) fn write_stalled(self: &Rc<Self>, since: Instant, task: &std::task::Waker) {
        self.stalled_since.set(Some(since));
        if !self.listed.replace(true) {
            let inner = &self.shutdown.inner;
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
        self.shutdown.inner.draining.get()
    }

    /// The service was called for a request.
    /// The service was called for a request; returns its number on the connection.
    pub(crate) fn request_started(&self) -> u64 {
        let number = self.started.get() + 1;
        self.started.set(number);
        if self.body_pending.get() == number {
            self.started_at.set(Instant::now());
        }
        self.park.set(false);
        self.active.set(self.active.get() + 1);
        if let Some(gate) = self.gate.borrow_mut().take() {
            gate.wake();
        }
        self.wake();
        number
    }

    /// A request's response is finished (or abandoned).
    pub(crate) fn request_finished(&self) {
        self.active.set(self.active.get().saturating_sub(1));
        if let Some(gate) = self.gate.borrow_mut().take() {
            gate.wake();
        }
        self.wake();
    }

    /// Whether every request the gate let through has been answered; if not, the gate is
    /// woken when one starts or ends.
    pub(crate) fn answered(&self, heads: u64, waker: &std::task::Waker) -> bool {
        if self.started.get() >= heads && self.active.get() == 0 {
            return true;
        }
        *self.gate.borrow_mut() = Some(waker.clone());
        false
    }

    /// Whether the request with this number has been handed to the service; if not, the gate
    /// is woken when a request starts or ends.
    pub(crate) fn dispatched(&self, number: u64, waker: &std::task::Waker) -> bool {
        if self.started.get() >= number {
            return true;
        }
        *self.gate.borrow_mut() = Some(waker.clone());
        false
    }

    /// Whether the request with this number has been handed to the service.
    pub(crate) fn dispatched_now(&self, number: u64) -> bool {
        self.started.get() >= number
    }

    /// The worker's connections.
    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Keeps the waker of the connection's task, for [`Shutdown::park_idle`].
    pub(crate) fn remember_task(&self, waker: &std::task::Waker) {
        let mut task = self.task.borrow_mut();
        if !task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }

    /// Whether every request the gate let through has been answered.
    pub(crate) fn answered_now(&self, heads: u64) -> bool {
        self.started.get() >= heads && self.active.get() == 0
    }

    /// How many requests the service was called for.
    pub(crate) fn started(&self) -> u64 {
        self.started.get()
    }

    /// When the service was last called for a request.
    pub(crate) fn started_at(&self) -> Instant {
        self.started_at.get()
    }

    /// The client's address (`None` on a unix socket).
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer.get()
    }

    /// The client's address, as a trusted PROXY protocol header gave it.
    pub(crate) fn set_peer(&self, peer: std::net::SocketAddr) {
        self.peer.set(Some(peer));
    }

    /// A request is being answered.
    pub(crate) fn busy(&self) -> bool {
        self.active.get() > 0
    }

    /// Whether the sweep found the connection idle long enough to be parked.
    pub(crate) fn park_due(&self) -> bool {
        self.park.get()
    }

    /// The gate let through a request with a body: its number.
    pub(crate) fn expect_body(&self, number: u64) {
        self.body_pending.set(number);
    }

    /// Records that request `number`'s body is broken: its response must say so.
    pub(crate) fn set_body_error(&self, number: u64, status: http::StatusCode) {
        self.body_error.set(Some((number, status)));
    }

    /// Why request `number`'s body could not be read whole, if it could not.
    pub(crate) fn body_error(&self, number: u64) -> Option<http::StatusCode> {
        self.body_error.get().filter(|(n, _)| *n == number).map(|(_, s)| s)
    }

    pub(crate) fn bytes_read(&self, n: usize) {
        self.read.set(self.read.get() + n as u64);
        self.wake();
    }

    fn wake(&self) {
        if self.watched.get() {
            self.changed.notify_waiters();
        }
    }
}

/// How long a draining worker keeps an idle connection open for a request that may be on its
/// way: a new connection's first request, or the next one of a client that sends back to back.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// How long a connection is idle between requests before it is parked: long enough that a
/// client sending back to back never is, short enough that a burst of new connections, each
/// idle after a request, never holds many hyper buffers at once.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(50);

/// When the sweep of [`Shutdown::park_idle`] gives memory back to the system
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
/// that stopped reading held up to about 75 KiB (see [`WRITE_AHEAD`]), so 64 of them about
/// 5 MiB; and one `malloc_trim` per 64 connections closed costs each at most a fraction of a
/// millisecond.
const RELEASE_AFTER_CLOSING: usize = 64;

/// How often, at most, memory is given back.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// How far a response body may run ahead of the client: hyper is given another frame of a
/// body only while less than this of what the connection was given is unwritten (in hyper's
/// buffer or held back by the gate), so a client that stops reading holds in the worker less
/// than this, plus the last frame (at most `service::FRAME_MAX`, 256 KiB; a static file's
/// chunks are 64 KiB), plus a response head: about 75 KiB for a static file, where hyper alone
/// held 480 KiB. Responses the gate holds back for a pipelined batch (64 KiB at most) count
/// until they are written. The kernel's socket buffer is the real write-ahead: a client that
/// reads loses nothing but larger writes (one per 64 KiB chunk), and small frames are still
/// written several at once.
pub(crate) const WRITE_AHEAD: usize = 16 * 1024;

impl Shutdown {
    /// Drives one connection to its end. Once the worker drains, every response it starts says
    /// `Connection: close` (see [`ConnState::closing`]), so a connection with a request in
    /// progress, or one that arrives, ends after that response. A response already on its way
    /// without it is let through, and the client's next request is answered with it. Only a
    /// connection on which nothing is happening for [`DRAIN_LINGER`] is closed by the worker.
    pub(crate) async fn drain_connection<C>(
        &self,
        mut conn: Pin<&mut C>,
        state: &ConnState,
    ) -> hyper::Result<()>
    where
        C: Future<Output = hyper::Result<()>> + GracefulConnection,
    {
        tokio::select! {
            biased;
            result = conn.as_mut() => return result,
            () = self.draining() => {}
        }
        state.watched.set(true);
        // Nothing in progress and no byte arrived since: the connection is quiet.
        let mut quiet_since = Instant::now();
        let mut seen = state.read.get();
        let mut was_active = false;
        loop {
            let active = state.active.get() > 0;
            if active || was_active || state.read.get() != seen {
                // A request is in progress or just finished, or bytes are arriving.
                seen = state.read.get();
                quiet_since = Instant::now();
                was_active = active;
            } else if quiet_since.elapsed() >= DRAIN_LINGER {
                break;
            }
            let changed = state.changed.notified();
            tokio::select! {
                result = conn.as_mut() => return result,
                () = changed => {}
                () = tokio::time::sleep_until((quiet_since + DRAIN_LINGER).into()) => {}
            }
        }
        // Nothing is coming: hyper closes a connection that is idle between requests.
        conn.as_mut().graceful_shutdown();
        conn.await
    }
}

/// A hyper connection that can be asked to finish gracefully.
pub(crate) trait GracefulConnection {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

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
    fn a_stalled_connection_that_closes_leaves_the_stalled_list_at_once() {
        let shutdown = Shutdown::default();
        let conns: Vec<Rc<ConnState>> =
            (0..3).map(|_| Rc::new(ConnState::new(&shutdown, None))).collect();
        let mut tracked: Vec<Tracked> = conns.iter().map(|c| shutdown.track(c)).collect();
        for conn in &conns {
            conn.write_stalled(Instant::now(), std::task::Waker::noop());
        }
        assert_eq!(shutdown.inner.stalled.borrow().len(), 3);
        drop(tracked.remove(0));
        // Not at the next stall, nor at the next reclaim: now, with the waker it held.
        assert_eq!(shutdown.inner.stalled.borrow().len(), 2);
        assert!(!conns[0].listed.get());
        drop(tracked);
        assert!(shutdown.inner.stalled.borrow().is_empty());
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
        // Many connections parked at once, each letting go of hyper's buffers.
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
