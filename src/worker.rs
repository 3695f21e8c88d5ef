//! Everything a worker does after `fork`: leave the master behind, build its own single-threaded
//! tokio runtime, build the app, serve the inherited listeners with hyper, drain on `TERM`, and
//! exit. A worker never returns into the master's code: [`run`] ends in `process::exit`.
//!
//! Exit codes a worker uses: 0 after a stop, [`EXIT_BOOT_FAILED`] when the app could not be
//! built, 1 after an unexpected internal failure.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::LocalSet;

use crate::app::{Factory, HttpService, WorkerContext};
use crate::config::{HttpConfig, ServerConfig};
use crate::gate::{Gate, Limits};
use crate::ipc::{Message, Outbox};
use crate::listener::Listener;
use crate::process;
use crate::scoreboard::{Board, MemoryLevel, Slot};
use crate::service::{AppService, Requests};
use crate::shutdown::{ConnState, DRAIN_LINGER, Shutdown};

/// Exit code of a worker whose app factory failed or panicked.
pub const EXIT_BOOT_FAILED: i32 = 3;

/// What a new worker takes from the master.
pub(crate) struct Setup<'f, F> {
    pub(crate) ctx: WorkerContext,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) master: Pid,
    /// The master's signal mask, restored once the worker's handlers are in place.
    pub(crate) signal_mask: SigSet,
    pub(crate) outbox: Outbox,
    pub(crate) factory: &'f F,
    /// The scoreboard, and the worker's slot on it.
    pub(crate) slots: &'static [Slot],
    pub(crate) slot: usize,
    /// `max_requests` plus this worker's jitter; `None` for no limit.
    pub(crate) recycle_after: Option<u64>,
}

/// Runs a worker to its end, in the child of a fork. Signals are still blocked, as the master
/// forked with them blocked; they are unblocked once the worker's own handlers are in place.
pub(crate) fn run<F: Factory>(setup: Setup<'_, F>) -> ! {
    let span = tracing::info_span!("worker", id = setup.ctx.id(), pid = std::process::id());
    let _entered = span.enter();
    crate::panics::install_panic_hook();
    // A panic has been logged by the hook; it ends the worker with code 1.
    let code = catch_unwind(AssertUnwindSafe(|| boot_and_serve(setup))).unwrap_or(1);
    std::process::exit(code)
}

fn boot_and_serve<F: Factory>(setup: Setup<'_, F>) -> i32 {
    if !watch_parent(setup.master) {
        return 0;
    }
    // The master would kill it this long after telling it to stop; an orphan kills itself,
    // and lets go of the listening sockets at once.
    let orphan_limit = setup.ctx.config().server.graceful_timeout.0 + crate::process::KILL_MARGIN;
    let listening: Vec<_> = setup.listeners.iter().map(Listener::raw_fd).collect();
    if let Err(e) = crate::signals::bound_orphan_life(setup.master, orphan_limit, &listening) {
        tracing::warn!("cannot bound what this worker does once its master is gone: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot build the worker's runtime: {e}");
            return EXIT_BOOT_FAILED;
        }
    };
    LocalSet::new().block_on(&runtime, serve(setup))
}

async fn serve<F: Factory>(setup: Setup<'_, F>) -> i32 {
    let Setup { ctx, listeners, outbox, factory, master, signal_mask, slots, slot, recycle_after } =
        setup;
    // Peers are looked for among four times as many slots as workers: room for a reload's two
    // generations and successors; workers added with TTIN beyond that are not balanced against.
    let board = Board::new(slots, slot, (ctx.config().server.workers.resolve() * 4).max(64));
    let boot_failed = |reason: String| {
        // The master logs it with the worker's exit (once, for a streak of identical ones);
        // the worker says it itself when the master cannot be told.
        if outbox.send(Message::BootFailed { worker: ctx.id(), reason: reason.clone() }) {
            tracing::debug!("{reason}");
        } else {
            tracing::error!("{reason}");
        }
        EXIT_BOOT_FAILED
    };
    // Listen for TERM before unblocking signals, so that a TERM sent while the worker boots is
    // held until now and then drains it, instead of being lost.
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => return boot_failed(format!("cannot listen for SIGTERM: {e}")),
    };
    if let Err(e) = crate::signals::restore(&signal_mask) {
        return boot_failed(format!("cannot restore the signal mask: {e}"));
    }

    let service = match crate::app::build(factory, &ctx).await {
        Ok(service) => service,
        Err(reason) => return boot_failed(reason),
    };

    // The kernel forgets the parent-death signal when a process changes its user or group, as
    // an app factory that drops privileges does: ask again.
    if !watch_parent(master) {
        return 0;
    }

    let server = &ctx.config().server;
    let requests = Rc::new(Requests::new(
        board,
        ServerConfig::limit(server.request_timeout),
        recycle_after,
        ctx.config().http.forwarded_allow_ips.clone(),
        ctx.wants_client(),
    ));
    let shutdown = Shutdown::default();
    let service = AppService::new(service, Rc::clone(&requests), &shutdown);
    let http = Rc::new(http_builder(&ctx.config().http));
    let mut acceptors = Vec::with_capacity(listeners.len());
    for listener in listeners {
        match Acceptor::new(listener) {
            Ok(a) => acceptors.push(a),
            // Orphaned while booting: the sockets are gone, and so is the master.
            Err(_) if crate::signals::listeners_released() => return 0,
            Err(e) => return boot_failed(format!("cannot use an inherited listener: {e}")),
        }
    }
    let limit = server.worker_connections as usize;
    let limits = Rc::new(Limits::new(&ctx.config().http));
    for acceptor in acceptors {
        let conns = Connections {
            service: service.for_connection(Rc::new(ConnState::new(&shutdown, None))),
            http: Rc::clone(&http),
            shutdown: shutdown.clone(),
            requests: Rc::clone(&requests),
            limit,
            limits: Rc::clone(&limits),
        };
        tokio::task::spawn_local(accept_loop(acceptor, conns));
    }
    requests.board.booted();
    if let Err(e) = requests.board.watch_memory(server.max_worker_memory) {
        // The master sees it too, and logs the limit as too low.
        tracing::warn!(limit_mib = server.max_worker_memory, "max_worker_memory not watched: {e}");
    }
    tokio::task::spawn_local(heartbeat(Rc::clone(&requests), heartbeat_interval(server)));
    let sweeper = shutdown.clone();
    tokio::task::spawn_local(async move { sweeper.park_idle().await });
    outbox.send(Message::Ready { worker: ctx.id() });
    let outbox = Rc::new(outbox);
    tokio::task::spawn_local(ask_for_successor(Rc::clone(&requests), Rc::clone(&outbox), ctx.id()));
    tokio::task::spawn_local(watch_memory(
        Rc::clone(&requests),
        shutdown.clone(),
        outbox,
        ctx.id(),
    ));

    term.recv().await;
    let grace = server.graceful_timeout.0;
    if nix::unistd::getppid() != master {
        tracing::warn!(
            master = master.as_raw(),
            "the master is gone: draining, and exiting within graceful_timeout ({} s) + 1 s",
            grace.as_secs_f64()
        );
    }
    tracing::debug!(connections = shutdown.open(), "draining");
    shutdown.start();
    if tokio::time::timeout(grace, shutdown.closed()).await.is_err() {
        tracing::warn!(
            connections = shutdown.open(),
            "graceful_timeout reached, closing the remaining connections"
        );
    }
    0
}

/// How often a worker beats: often enough that the master sees a hang soon after `timeout`,
/// and at least every second, for the scoreboard's readers.
fn heartbeat_interval(server: &ServerConfig) -> Duration {
    match ServerConfig::limit(server.timeout) {
        Some(timeout) => (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        None => Duration::from_secs(1),
    }
}

/// Beats for as long as the worker's event loop runs: a loop blocked by a handler stops it.
async fn heartbeat(requests: Rc<Requests>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        requests.board.beat();
    }
}

/// Once the worker has served its `max_requests`, asks the master for a successor; the worker
/// serves on until the master tells it to stop, once the successor is ready.
async fn ask_for_successor(requests: Rc<Requests>, outbox: Rc<Outbox>, worker: u64) {
    requests.recycle.notified().await;
    // The limit it reached; it may have started a few more since.
    let served = requests.recycle_after.unwrap_or_else(|| requests.board.served());
    tracing::debug!(served, "max_requests reached, asking for a successor");
    tell_master(&outbox, Message::Recycle { worker, requests: served }).await;
}

/// Acts on the worker's resident memory against `max_worker_memory` (as found when a request
/// starts or the worker beats, see [`crate::scoreboard::Board::watch_memory`]). Over the limit,
/// the master is told at once, and the worker is recycled like any other: it serves on until
/// its successor is ready, so that capacity does not drop while the successor boots (or cannot
/// boot). Over the ceiling (twice the limit), it stops taking new work at once, to bound its
/// memory however long that takes: it stops accepting and, as when draining, every response it
/// starts from then says `Connection: close`; it finishes what it has and waits for the
/// master's `TERM`. That is the only case where the worker leaves before its successor is
/// ready; the alternative is the kernel's OOM killer.
async fn watch_memory(requests: Rc<Requests>, shutdown: Shutdown, outbox: Rc<Outbox>, worker: u64) {
    let memory = &requests.board.memory;
    let mut told = false;
    loop {
        memory.changed.notified().await;
        let (level, rss_kib) = (memory.level(), memory.rss_kib());
        let over_ceiling = level == MemoryLevel::OverCeiling;
        if over_ceiling {
            tracing::warn!(
                rss_mib = rss_kib / 1024,
                limit_mib = memory.limit_mib(),
                connections = shutdown.open(),
                "over twice max_worker_memory: no longer accepting, finishing what it has until \
                 its successor is ready"
            );
            shutdown.start();
        }
        if !told && level >= MemoryLevel::OverLimit {
            told = true;
            tracing::debug!(
                rss_mib = rss_kib / 1024,
                limit_mib = memory.limit_mib(),
                "over max_worker_memory: asking for a successor, serving on until it is ready"
            );
            tell_master(&outbox, Message::OverMemory { worker, rss_kib }).await;
        }
        if over_ceiling {
            return;
        }
    }
}

/// Sends a message to the master without blocking the worker's thread: while the master's
/// queue is full (it is busy, and will read), tries again a little later.
async fn tell_master(outbox: &Outbox, message: Message) {
    loop {
        match outbox.try_send(&message) {
            Ok(()) => return,
            // The master's queue is full: it is busy, and will read.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return tracing::warn!("cannot tell the master {message:?}: {e}"),
        }
    }
}

/// Asks for `TERM` when the master dies, so that the worker drains and exits rather than serve
/// unsupervised. False if the master is already gone.
fn watch_parent(master: Pid) -> bool {
    match process::die_with_parent(master, Signal::SIGTERM) {
        Ok(alive) => alive,
        Err(e) => {
            tracing::warn!("cannot set the parent-death signal: {e}");
            true
        }
    }
}

fn http_builder(config: &HttpConfig) -> http1::Builder {
    let mut http = http1::Builder::new();
    // hyper refuses more than 100 fields with a bare 431 of its own: a head the gate let
    // through must fit. Only when needed: beyond 100, hyper allocates its field table per head.
    let fields = config.limit_request_fields as usize;
    if fields > 100 {
        http.max_headers(fields);
    }
    // Likewise a head larger than hyper's buffer: the gate's cap is below it.
    http.max_buf_size(crate::gate::HYPER_BUFFER);
    // The gate enforces header_timeout and keepalive, with a 408 where one is due; hyper's own
    // header timer would close silently.
    http.timer(TokioTimer::new()).keep_alive(true).header_read_timeout(None);
    // Responses are copied into one buffer and written with write(2), rather than queued as
    // slices for writev(2): for the small responses that make most of the traffic, hyper's
    // queue costs more than the copy (about 6% of a request's instructions). A large body is
    // copied too, in chunks bounded by hyper's buffer size.
    http.writev(false);
    http
}

/// One inherited listening socket, turned over to the worker's runtime.
enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    /// Whether a connection is waiting to be accepted: the socket is readable now. One
    /// `poll(2)`, which accepts nothing: the connection stays for whichever worker accepts.
    fn has_waiting(&self) -> bool {
        use std::os::fd::AsFd;
        let fd = match self {
            Acceptor::Tcp(l) => l.as_fd(),
            Acceptor::Unix(l) => l.as_fd(),
        };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    fn new(listener: Listener) -> io::Result<Acceptor> {
        Ok(match listener {
            Listener::Tcp(l) => Acceptor::Tcp(TcpListener::from_std(l)?),
            Listener::Unix(l, _) => Acceptor::Unix(UnixListener::from_std(l)?),
        })
    }
}

impl Drop for Acceptor {
    /// The socket is about to be closed (its number freed): an orphaned worker must no longer
    /// release it (see [`crate::signals::bound_orphan_life`]).
    fn drop(&mut self) {
        let fd = match self {
            Acceptor::Tcp(l) => l.as_raw_fd(),
            Acceptor::Unix(l) => l.as_raw_fd(),
        };
        crate::signals::listener_closing(fd);
    }
}

/// What an accept loop needs to serve the connections it accepts.
struct Connections<S> {
    service: AppService<S>,
    http: Rc<http1::Builder>,
    shutdown: Shutdown,
    requests: Rc<Requests>,
    /// `worker_connections`.
    limit: usize,
    /// The `[http]` limits every request passes.
    limits: Rc<Limits>,
}

/// Accepts connections until the worker drains; then drops the listener, which closes this
/// worker's copy of the socket. At `worker_connections`, it waits for one to close, leaving new
/// connections to the other workers.
async fn accept_loop<S: HttpService>(acceptor: Acceptor, conns: Connections<S>) {
    let mut deferred = 0;
    loop {
        let draining = conns.shutdown.draining();
        if deferred < ACCEPT_DEFERRALS && conns.requests.board.busier_than_peers() {
            // Leave the next connections to a less busy worker, a moment at most: a peer that
            // does not take them (busy, or hung) does not keep them waiting long.
            deferred += 1;
            tokio::select! {
                biased;
                () = draining => return,
                () = tokio::time::sleep(ACCEPT_DEFERRAL) => continue,
            }
        }
        deferred = 0;
        if conns.shutdown.open() >= conns.limit {
            tracing::debug!(limit = conns.limit, "worker_connections reached, not accepting");
            tokio::select! {
                biased;
                () = draining => return,
                () = conns.shutdown.below(conns.limit) => {}
                () = reclaim_slot(&acceptor, &conns.shutdown) => {}
            }
            continue;
        }
        match &acceptor {
            Acceptor::Tcp(l) => {
                let accepted = tokio::select! {
                    biased;
                    () = draining => return,
                    accepted = l.accept() => accepted,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        note_accepted();
                        let _ = stream.set_nodelay(true);
                        conns.spawn(stream, Some(peer));
                    }
                    // An orphan that has let go of its sockets: it is draining.
                    Err(_) if crate::signals::listeners_released() => return,
                    Err(e) => accept_failed(e).await,
                }
            }
            Acceptor::Unix(l) => {
                let accepted = tokio::select! {
                    biased;
                    () = draining => return,
                    accepted = l.accept() => accepted,
                };
                match accepted {
                    Ok((stream, _peer)) => {
                        note_accepted();
                        conns.spawn(stream, None);
                    }
                    Err(_) if crate::signals::listeners_released() => return,
                    Err(e) => accept_failed(e).await,
                }
            }
        }
    }
}

/// At `worker_connections`: every [`RECLAIM_CHECK`], if a new connection is waiting (and no
/// other worker took it), closes a connection whose client has not read for
/// [`RECLAIM_STALLED_AFTER`], if there is one (see [`Shutdown::reclaim_slot`]); resolves once
/// one was told to close. Never resolves if none ever qualifies: a slot freed otherwise ends
/// the wait (see [`Shutdown::below`]).
async fn reclaim_slot(acceptor: &Acceptor, shutdown: &Shutdown) {
    loop {
        tokio::time::sleep(RECLAIM_CHECK).await;
        if acceptor.has_waiting() && shutdown.reclaim_slot(RECLAIM_STALLED_AFTER) {
            return;
        }
    }
}

/// How often a worker at `worker_connections` looks for a new connection waiting.
const RECLAIM_CHECK: Duration = Duration::from_millis(250);
/// How long a write must have been blocked before its connection may be closed for a new one,
/// at `worker_connections`, the longest blocked first: far shorter than `send_timeout`. Write
/// progress comes in steps of part of the socket's send buffer, so a client that reads slowly
/// (tens of KB/s with a send buffer of megabytes) can also sit blocked that long: at the cap,
/// with no client that has stopped reading, such a download may be the one closed.
const RECLAIM_STALLED_AFTER: Duration = Duration::from_secs(1);

/// How long, and how many times in a row, a worker busier than its peers lets them accept first.
const ACCEPT_DEFERRAL: Duration = Duration::from_millis(1);
const ACCEPT_DEFERRALS: u32 = 3;

/// Counts a connection on the scoreboard for as long as it is open, however its task ends.
struct OpenConnection(Rc<Requests>);

impl OpenConnection {
    fn new(requests: &Rc<Requests>) -> Self {
        requests.board.connection_opened();
        OpenConnection(Rc::clone(requests))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.board.connection_closed();
    }
}

/// Out of file descriptors or memory, accepting again at once would spin: pause a little.
/// Failures are logged at most once every [`ACCEPT_LOG_EVERY`], and so is the recovery: a
/// worker out of descriptors under load fails every pause, and accepts again each time a
/// connection closes, and a line each time would flood the log without saying more.
async fn accept_failed(e: io::Error) {
    if e.kind() == io::ErrorKind::ConnectionAborted || e.kind() == io::ErrorKind::Interrupted {
        return;
    }
    if let Some(suppressed) = ACCEPT_FAILURES.with(|f| f.failed(Instant::now())) {
        let hint = match e.raw_os_error() {
            Some(nix::libc::EMFILE | nix::libc::ENFILE) => {
                "; out of file descriptors: raise the open-files limit or lower worker_connections"
            }
            _ => "",
        };
        tracing::warn!(
            suppressed,
            "accept failed: {e}{hint}; retrying every {} ms, logged at most every {} s",
            ACCEPT_PAUSE.as_millis(),
            ACCEPT_LOG_EVERY.as_secs()
        );
    }
    tokio::time::sleep(ACCEPT_PAUSE).await;
}

/// A connection was accepted: says so, with how many accepts failed, if accepting had been
/// failing (at most once every [`ACCEPT_LOG_EVERY`]).
fn note_accepted() {
    if let Some(failures) = ACCEPT_FAILURES.with(AcceptFailures::accepted) {
        tracing::info!(failures, "accepting again after failed accepts");
    }
}

/// How long an accept loop pauses after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often at most a worker logs that accepting fails, and that it accepts again.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

thread_local! {
    /// The worker's accept failures, for all its listeners: the worker is single-threaded.
    static ACCEPT_FAILURES: AcceptFailures = const { AcceptFailures::new() };
}

/// Accept failures, and what the log has said of them: a pure record, told the time, which
/// decides what to log; the callers log it.
struct AcceptFailures {
    /// When a failure was last logged, and the failures since that were not.
    failure_logged: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
    /// When a recovery was last logged, and the failures since that (some may have been
    /// followed by successes already: the count is kept until a recovery line reports it).
    recovery_logged: Cell<Option<Instant>>,
    unreported: Cell<u64>,
}

impl AcceptFailures {
    const fn new() -> Self {
        AcceptFailures {
            failure_logged: Cell::new(None),
            suppressed: Cell::new(0),
            recovery_logged: Cell::new(None),
            unreported: Cell::new(0),
        }
    }

    /// An accept failed at `now`: `Some(suppressed)` if it is to be logged, with the number of
    /// failures not logged since the last failure line.
    fn failed(&self, now: Instant) -> Option<u64> {
        self.unreported.set(self.unreported.get() + 1);
        if within(self.failure_logged.get(), now) {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.failure_logged.set(Some(now));
        Some(self.suppressed.replace(0))
    }

    /// An accept succeeded: `Some(failures)` if that is to be logged, with the number of
    /// failures since the last recovery line. One comparison when nothing failed.
    fn accepted(&self) -> Option<u64> {
        if self.unreported.get() == 0 {
            return None;
        }
        self.accepted_at(Instant::now())
    }

    fn accepted_at(&self, now: Instant) -> Option<u64> {
        if self.unreported.get() == 0 || within(self.recovery_logged.get(), now) {
            return None;
        }
        self.recovery_logged.set(Some(now));
        Some(self.unreported.replace(0))
    }
}

/// Whether a line logged at `logged` is less than [`ACCEPT_LOG_EVERY`] before `now`.
fn within(logged: Option<Instant>, now: Instant) -> bool {
    logged.is_some_and(|t| now.saturating_duration_since(t) < ACCEPT_LOG_EVERY)
}

impl<S: HttpService> Connections<S> {
    /// Serves one accepted connection in a task of its own.
    fn spawn<I>(&self, io: I, peer: Option<std::net::SocketAddr>)
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let state = Rc::new(ConnState::new(&self.shutdown, peer));
        let tracked = self.shutdown.track(&state);
        let gate = Gate::new(io, Rc::clone(&state), Rc::clone(&self.limits));
        let open = OpenConnection::new(&self.requests);
        let (http, service, shutdown) = (
            Rc::clone(&self.http),
            self.service.for_connection(Rc::clone(&state)),
            self.shutdown.clone(),
        );
        tokio::task::spawn_local(async move {
            let _counted = (tracked, open);
            serve_connection(gate, &http, &service, &shutdown, &state).await;
        });
    }
}

/// Serves a connection's requests. hyper's connection (and its buffers) exists only while
/// there is something to do: it is made when the gate has a request for it, and dropped when
/// the gate parks the connection after it has been idle for a while (see [`Gate::parked`]).
async fn serve_connection<I, S>(
    mut gate: Gate<I>,
    http: &http1::Builder,
    service: &AppService<S>,
    shutdown: &Shutdown,
    state: &Rc<ConnState>,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
    S: HttpService,
{
    loop {
        if !wait_for_request(&mut gate, shutdown).await {
            // Closed, timed out, refused (the gate's answer is written now) or drained.
            gate.unpark();
            let close = std::future::poll_fn(|cx| Pin::new(&mut gate).poll_shutdown(cx));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            return;
        }
        gate.unpark();
        let mut conn = Box::pin(
            http.serve_connection(TokioIo::new(gate), service.for_connection(Rc::clone(state))),
        );
        let result = shutdown.drain_connection(conn.as_mut(), state).await;
        let parts = Pin::into_inner(conn).into_parts();
        gate = parts.io.into_inner();
        // What hyper held and had not written is gone with it.
        state.all_sent();
        if let Err(e) = result {
            return tracing::debug!("connection closed: {e}");
        }
        if !gate.parked() {
            // hyper ended the connection, and shut it down.
            return;
        }
        if !parts.read_buf.is_empty() {
            gate.unread(&parts.read_buf);
        }
    }
}

/// How long closing a connection may take to write the gate's last answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits, with no hyper connection, until the gate has a request: false if the connection
/// ended instead. A draining worker waits [`DRAIN_LINGER`] at most.
async fn wait_for_request<I>(gate: &mut Gate<I>, shutdown: &Shutdown) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let ready =
        std::future::poll_fn(|cx| Pin::new(&mut *gate).poll_read(cx, &mut ReadBuf::new(&mut [])));
    let drained = async {
        shutdown.draining().await;
        tokio::time::sleep(DRAIN_LINGER).await;
    };
    tokio::select! {
        biased;
        read = ready => read.is_ok() && gate.has_request(),
        () = drained => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_and_recoveries_are_each_logged_once_a_window_with_true_counts() {
        let f = AcceptFailures::new();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(f.accepted_at(at(0)), None, "nothing failed");
        assert_eq!(f.failed(at(0)), Some(0), "the first failure is logged");
        for ms in 1..20 {
            assert_eq!(f.failed(at(ms * 100)), None);
        }
        // Churn: a connection closes, one accept succeeds, the next fails, every 100 ms.
        assert_eq!(f.accepted_at(at(2_000)), Some(20), "the first recovery is logged");
        for ms in 21..100 {
            assert_eq!(f.failed(at(ms * 100)), None);
            assert_eq!(f.accepted_at(at(ms * 100 + 50)), None, "once a window");
        }
        // The next window: one failure line, counting every failure not logged (the 19 of the
        // first streak and the 79 of the churn), and one recovery line, counting every failure
        // since the last recovery line.
        assert_eq!(f.failed(at(10_000)), Some(19 + 79));
        assert_eq!(f.accepted_at(at(12_000)), Some(80));
        assert_eq!(f.accepted_at(at(12_100)), None, "nothing failed since");
        assert_eq!(f.failed(at(20_000)), Some(0));
        assert_eq!(f.accepted_at(at(22_000)), Some(1));
    }
}
