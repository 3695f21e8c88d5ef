//! Accepting: one loop per inherited listening socket ([`accept_loop`]), which hands each
//! connection to the worker's [`Pipeline`]. A loop holds off at `worker_connections` (leaving
//! new connections to the other workers, or closing one whose client stopped reading to make
//! room), lets less busy peers accept first, and stops when the worker drains. Failed accepts
//! are paused on and logged at most once a window ([`AcceptFailures`]).

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};

use super::Pipeline;
use super::drain::Conns;
use super::transport::{Facts, Transport};
use crate::app::HttpService;
use crate::listener::Listener;

/// One inherited listening socket, turned over to the worker's runtime.
pub(crate) enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    /// The listening socket.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Acceptor::Tcp(l) => l.as_fd(),
            Acceptor::Unix(l) => l.as_fd(),
        }
    }

    /// Whether a connection is waiting to be accepted: the socket is readable now. One
    /// `poll(2)`, which accepts nothing: the connection stays for whichever worker accepts.
    fn has_waiting(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(self.fd(), nix::poll::PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    pub(crate) fn new(listener: Listener) -> io::Result<Acceptor> {
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

/// Accepts connections until the worker drains; then drops the listener, which closes this
/// worker's copy of the socket (the metrics, which look at its queue, hold it only weakly).
/// At `worker_connections`, it waits for one to close, leaving new connections to the other
/// workers.
pub(crate) async fn accept_loop<S: HttpService>(
    acceptor: Rc<Acceptor>,
    transport: Transport,
    pipeline: Rc<Pipeline<S>>,
) {
    // Read once, not per connection (see `Facts::listener`).
    let listener = match &*acceptor {
        Acceptor::Tcp(l) => l.local_addr().ok(),
        Acceptor::Unix(_) => None,
    };
    let mut deferred = 0;
    loop {
        let conns = &pipeline.conns;
        let draining = conns.draining();
        if deferred < ACCEPT_DEFERRALS && pipeline.requests.board.busier_than_peers() {
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
        if conns.open_count() >= pipeline.limit {
            tracing::debug!(limit = pipeline.limit, "worker_connections reached, not accepting");
            tokio::select! {
                biased;
                () = draining => return,
                () = conns.below(pipeline.limit) => {}
                () = reclaim_slot(&acceptor, conns) => {}
            }
            continue;
        }
        match &*acceptor {
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
                        let facts = Facts { peer: Some(peer), listener, proxied: None, tls: None };
                        pipeline.spawn(stream, facts, &transport);
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
                        pipeline.spawn(stream, Facts::default(), &transport);
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
/// [`RECLAIM_STALLED_AFTER`], if there is one (see [`Conns::reclaim_slot`]); resolves once
/// one was told to close. Never resolves if none ever qualifies: a slot freed otherwise ends
/// the wait (see [`Conns::below`]).
async fn reclaim_slot(acceptor: &Acceptor, conns: &Conns) {
    loop {
        tokio::time::sleep(RECLAIM_CHECK).await;
        if acceptor.has_waiting() && conns.reclaim_slot(RECLAIM_STALLED_AFTER) {
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

/// Out of file descriptors or memory, accepting again at once would spin: pause a little.
/// Failures are logged at most once every [`ACCEPT_LOG_EVERY`], and so is the recovery: a
/// worker out of descriptors under load fails every pause, and accepts again each time a
/// connection closes, and a line each time would flood the log without saying more.
pub(crate) async fn accept_failed(e: io::Error) {
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
