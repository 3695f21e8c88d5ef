//! Everything a worker does after `fork`: leave the master behind, build its own single-threaded
//! tokio runtime, build the app, serve the inherited listeners (through [`crate::conn`]) and
//! the metrics endpoint if on ([`crate::metrics`]), beat, watch its memory, drain on `TERM`,
//! and exit. A worker never returns into the master's code:
//! [`run`] ends in `process::exit`.
//!
//! Exit codes a worker uses: 0 after a stop, [`EXIT_BOOT_FAILED`] when the app could not be
//! built, 1 after an unexpected internal failure.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::LocalSet;

use crate::app::{Factory, Retire, WorkerContext};
use crate::config::ServerConfig;
use crate::conn::Pipeline;
use crate::conn::accept::{Acceptor, accept_loop};
use crate::conn::drain::Conns;
use crate::conn::service::Requests;
use crate::conn::transport::Transport;
use crate::ipc::{Message, Outbox};
use crate::listener::Listener;
use crate::process;
use crate::scoreboard::{Board, MemoryLevel, Scoreboard};

/// Exit code of a worker whose app factory failed or panicked.
pub const EXIT_BOOT_FAILED: i32 = 3;

/// What a new worker takes from the master.
pub(crate) struct Setup<'f, F> {
    pub(crate) ctx: WorkerContext,
    /// The app's sockets, each with whether it serves TLS.
    pub(crate) listeners: Vec<(Listener, bool)>,
    /// The metrics endpoint's sockets: none with `[metrics] bind` unset.
    pub(crate) metrics: Vec<Listener>,
    pub(crate) master: Pid,
    /// The master's signal mask, restored once the worker's handlers are in place.
    pub(crate) signal_mask: SigSet,
    pub(crate) outbox: Outbox,
    pub(crate) factory: &'f F,
    /// The scoreboard, and the worker's slot on it.
    pub(crate) scoreboard: Scoreboard,
    pub(crate) slot: usize,
    /// `max_requests` plus this worker's jitter; `None` for no limit.
    pub(crate) recycle_after: Option<u64>,
}

/// Runs a worker to its end, in the child of a fork. Signals are still blocked, as the master
/// forked with them blocked; they are unblocked once the worker's own handlers are in place.
pub(crate) fn run<F: Factory>(setup: Setup<'_, F>) -> ! {
    // Before anything is logged: the worker's lines go to its generation's log file.
    crate::logging::set_worker(setup.ctx.id());
    crate::logging::in_child(setup.ctx.config().log.file.as_deref());
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
    let listening: Vec<_> = setup
        .listeners
        .iter()
        .map(|(l, _)| l)
        .chain(&setup.metrics)
        .map(Listener::raw_fd)
        .collect();
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
    let Setup {
        ctx,
        listeners,
        metrics,
        outbox,
        factory,
        master,
        signal_mask,
        scoreboard,
        slot,
        recycle_after,
    } = setup;
    // Peers are looked for among four times as many slots as workers: room for a reload's two
    // generations and successors; workers added with TTIN beyond that are not balanced against.
    let peer_slots = (ctx.config().server.workers.resolve() * 4).max(64);
    let board = Board::new(scoreboard.all(), slot, peer_slots);
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
    // Before the factory, so that its hook comes first; and before signals are unblocked, so
    // that a USR1 from then on reopens its file.
    let log = &ctx.config().log;
    let hooks = ctx.request_end_hooks();
    let access_log =
        match crate::access_log::install(log.access.as_deref(), &log.access_format, hooks) {
            Ok(log) => log,
            Err(e) => return boot_failed(format!("cannot open the access log: {e}")),
        };
    // Requests are counted only for the metrics, and only with them on.
    if !metrics.is_empty() {
        crate::metrics::count_requests(hooks, board.counters());
    }
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
    let sink = ctx.request_end_hooks().take(ctx.id());
    let requests = Rc::new(Requests::new(
        board,
        ServerConfig::limit(server.request_timeout),
        recycle_after,
        ctx.config().http.forwarded_allow_ips.clone(),
        ctx.wants_client(),
        sink.clone(),
    ));
    let conns = Conns::default();
    // rustls' config, built here from the pairs the master checked: the master holds no live
    // TLS state, and nothing is read from disk.
    let tls = match ctx.config().tls_material().map(|m| m.server_config()).transpose() {
        Ok(tls) => tls.map(tokio_rustls::TlsAcceptor::from),
        Err(e) => return boot_failed(format!("cannot set up TLS: {e}")),
    };
    // A worker that issues no session tickets keeps no ticket keys in its memory.
    crate::tls::tickets::forget_unless_used();
    let mut acceptors = Vec::with_capacity(listeners.len());
    let mut transports = Vec::with_capacity(listeners.len());
    for (listener, is_tls) in listeners {
        let transport = match (&tls, is_tls) {
            (Some(tls), true) => Transport::Tls(tls.clone()),
            _ => Transport::Plain,
        };
        transports.push(transport);
        match Acceptor::new(listener) {
            Ok(a) => acceptors.push(Rc::new(a)),
            // Orphaned while booting: the sockets are gone, and so is the master.
            Err(_) if crate::signals::listeners_released() => return 0,
            Err(e) => return boot_failed(format!("cannot use an inherited listener: {e}")),
        }
    }
    let pipeline = Rc::new(Pipeline::new(
        service,
        Rc::clone(&requests),
        conns.clone(),
        server.worker_connections as usize,
        &ctx.config().http,
        &ctx.config().http2,
        sink,
    ));
    let config = &ctx.config().metrics;
    let endpoint = match crate::metrics::start(metrics, scoreboard, config, &acceptors, &conns) {
        Ok(endpoint) => endpoint,
        Err(_) if crate::signals::listeners_released() => return 0,
        Err(e) => return boot_failed(format!("cannot use the inherited metrics socket: {e}")),
    };
    for (acceptor, transport) in acceptors.into_iter().zip(transports) {
        tokio::task::spawn_local(accept_loop(acceptor, transport, Rc::clone(&pipeline)));
    }
    requests.board.booted();
    if let Err(e) = requests.board.watch_memory(server.max_worker_memory) {
        // The master sees it too, and logs the limit as too low.
        tracing::warn!(limit_mib = server.max_worker_memory, "max_worker_memory not watched: {e}");
    }
    tokio::task::spawn_local(heartbeat(Rc::clone(&requests), heartbeat_interval(server)));
    let sweeper = conns.clone();
    tokio::task::spawn_local(async move { sweeper.park_idle().await });
    outbox.send(Message::Ready { worker: ctx.id() });
    let outbox = Rc::new(outbox);
    tokio::task::spawn_local(ask_for_successor(Rc::clone(&requests), Rc::clone(&outbox), ctx.id()));
    tokio::task::spawn_local(retire_when_asked(
        Arc::clone(ctx.retire()),
        Rc::clone(&outbox),
        ctx.id(),
    ));
    tokio::task::spawn_local(watch_memory(Rc::clone(&requests), conns.clone(), outbox, ctx.id()));

    term.recv().await;
    let grace = server.graceful_timeout.0;
    if nix::unistd::getppid() != master {
        tracing::warn!(
            master = master.as_raw(),
            "the master is gone: draining, and exiting within graceful_timeout ({} s) + 1 s",
            grace.as_secs_f64()
        );
    }
    tracing::debug!(connections = conns.open_count(), "draining");
    requests.board.draining();
    conns.start_draining();
    // The master kills the worker `KILL_MARGIN` after this: the scrapes too must end by it.
    let deadline = tokio::time::Instant::now() + grace;
    if tokio::time::timeout_at(deadline, conns.closed()).await.is_err() {
        tracing::warn!(
            connections = conns.open_count(),
            "graceful_timeout reached, closing the remaining connections"
        );
    }
    if let Some(endpoint) = endpoint {
        endpoint.finished(deadline).await;
    }
    ctx.at_exit().run();
    // The requests that ended while draining are logged.
    if let Some(log) = access_log {
        log.flush();
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
        // Ticket keys move on with the clock even in a worker that issues none for a while.
        crate::tls::tickets::advance();
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

/// Once the app asks for the worker's replacement, tells the master; the worker serves on until
/// the master tells it to stop, once the successor is ready.
async fn retire_when_asked(retire: Arc<Retire>, outbox: Rc<Outbox>, worker: u64) {
    retire.asked.notified().await;
    let reason = retire.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let reason = reason.unwrap_or_else(|| "the app asked".into());
    tell_master(&outbox, Message::Retire { worker, reason }).await;
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
async fn watch_memory(requests: Rc<Requests>, conns: Conns, outbox: Rc<Outbox>, worker: u64) {
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
                connections = conns.open_count(),
                "over twice max_worker_memory: no longer accepting, finishing what it has until \
                 its successor is ready"
            );
            conns.start_draining();
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
