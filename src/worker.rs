//! Everything a worker does after `fork`: leave the master behind, build its own single-threaded
//! tokio runtime, build the app, serve the inherited listeners with hyper, drain on `TERM`, and
//! exit. A worker never returns into the master's code: [`run`] ends in `process::exit`.
//!
//! Exit codes a worker uses: 0 after a stop, [`EXIT_BOOT_FAILED`] when the app could not be
//! built, 1 after an unexpected internal failure.

use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::LocalSet;

use crate::config::Config;
use crate::error::BoxError;
use crate::ipc::{Message, Outbox};
use crate::listener::Listener;
use crate::process;
use crate::service::{AppService, HttpService};
use crate::shutdown::Shutdown;

/// Exit code of a worker whose app factory failed or panicked.
pub const EXIT_BOOT_FAILED: i32 = 3;

/// What an app factory is told about the worker it runs in.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    id: u64,
    generation: u64,
    config: Arc<Config>,
}

impl WorkerContext {
    pub(crate) fn new(id: u64, generation: u64, config: Arc<Config>) -> Self {
        WorkerContext { id, generation, config }
    }

    /// The worker's id: 1 for the first worker the master started, and counting up, never
    /// reused.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The generation: 1 at start, one more at each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// The effective configuration this worker was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// What a new worker takes from the master.
pub(crate) struct Setup<'f, F> {
    pub(crate) ctx: WorkerContext,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) master: Pid,
    /// The master's signal mask, restored once the worker's handlers are in place.
    pub(crate) signal_mask: SigSet,
    pub(crate) outbox: Outbox,
    pub(crate) factory: &'f F,
}

/// Runs a worker to its end, in the child of a fork. Signals are still blocked, as the master
/// forked with them blocked; they are unblocked once the worker's own handlers are in place.
pub(crate) fn run<F, S, E>(setup: Setup<'_, F>) -> !
where
    F: Fn(&WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
    let span = tracing::info_span!("worker", id = setup.ctx.id, pid = std::process::id());
    let _entered = span.enter();
    crate::service::install_panic_hook();
    // A panic has been logged by the hook; it ends the worker with code 1.
    let code = catch_unwind(AssertUnwindSafe(|| boot_and_serve(setup))).unwrap_or(1);
    std::process::exit(code)
}

fn boot_and_serve<F, S, E>(setup: Setup<'_, F>) -> i32
where
    F: Fn(&WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
    if !watch_parent(setup.master) {
        return 0;
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

async fn serve<F, S, E>(setup: Setup<'_, F>) -> i32
where
    F: Fn(&WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
    let Setup { ctx, listeners, outbox, factory, master, signal_mask } = setup;
    // Listen for TERM before unblocking signals, so that a TERM sent while the worker boots is
    // held until now and then drains it, instead of being lost.
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return EXIT_BOOT_FAILED;
        }
    };
    if let Err(e) = crate::signals::restore(&signal_mask) {
        tracing::error!("cannot restore the signal mask: {e}");
        return EXIT_BOOT_FAILED;
    }

    let service = match catch_unwind(AssertUnwindSafe(|| factory(&ctx))) {
        Ok(Ok(service)) => AppService(Rc::new(service)),
        Ok(Err(e)) => {
            tracing::error!("app failed to start: {}", e.into());
            return EXIT_BOOT_FAILED;
        }
        Err(_) => {
            tracing::error!("app factory panicked");
            return EXIT_BOOT_FAILED;
        }
    };

    // The kernel forgets the parent-death signal when a process changes its user or group, as
    // an app factory that drops privileges does: ask again.
    if !watch_parent(master) {
        return 0;
    }

    let shutdown = Shutdown::default();
    let http = Rc::new(http_builder());
    for listener in listeners {
        let acceptor = match Acceptor::new(listener) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("cannot use an inherited listener: {e}");
                return EXIT_BOOT_FAILED;
            }
        };
        tokio::task::spawn_local(accept_loop(
            acceptor,
            service.clone(),
            http.clone(),
            shutdown.clone(),
        ));
    }
    outbox.send(Message::Ready { worker: ctx.id });

    term.recv().await;
    let grace = ctx.config.server.graceful_timeout.0;
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

fn http_builder() -> http1::Builder {
    let mut http = http1::Builder::new();
    // The timer drives hyper's header read timeout (30 s by default), which keeps a client
    // that sends its request head byte by byte from holding a connection forever.
    http.timer(TokioTimer::new()).keep_alive(true);
    http
}

/// One inherited listening socket, turned over to the worker's runtime.
enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    fn new(listener: Listener) -> io::Result<Acceptor> {
        Ok(match listener {
            Listener::Tcp(l) => Acceptor::Tcp(TcpListener::from_std(l)?),
            Listener::Unix(l, _) => Acceptor::Unix(UnixListener::from_std(l)?),
        })
    }
}

/// Accepts connections until the worker drains; then drops the listener, which closes this
/// worker's copy of the socket.
async fn accept_loop<S: HttpService>(
    acceptor: Acceptor,
    service: AppService<S>,
    http: Rc<http1::Builder>,
    shutdown: Shutdown,
) {
    loop {
        let draining = shutdown.draining();
        match &acceptor {
            Acceptor::Tcp(l) => {
                let accepted = tokio::select! {
                    biased;
                    () = draining => return,
                    accepted = l.accept() => accepted,
                };
                match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        spawn_connection(stream, &service, &http, &shutdown);
                    }
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
                    Ok((stream, _peer)) => spawn_connection(stream, &service, &http, &shutdown),
                    Err(e) => accept_failed(e).await,
                }
            }
        }
    }
}

/// Out of file descriptors or memory, accepting again at once would spin: pause a little.
async fn accept_failed(e: io::Error) {
    if e.kind() == io::ErrorKind::ConnectionAborted || e.kind() == io::ErrorKind::Interrupted {
        return;
    }
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn spawn_connection<I, S>(
    io: I,
    service: &AppService<S>,
    http: &Rc<http1::Builder>,
    shutdown: &Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
    S: HttpService,
{
    let tracked = shutdown.track();
    let conn = http.serve_connection(TokioIo::new(io), service.clone());
    let shutdown = shutdown.clone();
    tokio::task::spawn_local(async move {
        let _tracked = tracked;
        if let Err(e) = drive(conn, &shutdown).await {
            tracing::debug!("connection closed: {e}");
        }
    });
}

/// Drives one connection; when the worker drains, a request in flight is finished (its
/// response carries `Connection: close`) and an idle keep-alive connection is closed.
async fn drive<C>(conn: C, shutdown: &Shutdown) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>> + GracefulConnection,
{
    let mut conn = pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.draining() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// A hyper connection that can be asked to finish gracefully.
trait GracefulConnection {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::Connection<I, AppService<S>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: HttpService,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}
