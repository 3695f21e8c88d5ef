//! HTTP/1: the gate in front of hyper, hyper's connection, and parking. [`Protocol::serve`]
//! runs one connection's requests through the service stack: hyper's connection (and its
//! buffers) exists only while there is something to do: it is made when the [`Gate`] has a
//! request for it, and dropped when the gate parks the connection after it has been idle for a
//! while (see [`Gate::parked`]). While the worker drains, [`drain_connection`] finishes what is
//! in progress and closes the rest.
//!
//! The bookkeeping between the gate and the service stack ([`Link`]) stays inside this
//! protocol: the stack sees it only as its [`Exchange`](super::service::Exchange). HTTP/2 sits
//! beside this module ([`super::http2`]), with its own.

mod chunked;
mod gate;
mod head;
mod link;
mod scanner;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::gate::{Gate, Parts};
use self::link::Link;
use self::scanner::Limits;
use super::drain::{Conns, DRAIN_LINGER, Slot};
use super::service::{AppService, Stack};
use crate::app::HttpService;
use crate::config::HttpConfig;
use crate::request_end::Sink;

/// hyper's `max_buf_size`, which the worker sets: its read buffer must hold the largest head
/// the gate lets through. (It also bounds how much of a response hyper copies into its write
/// buffer.) hyper's default, 8 KiB + 400 KiB.
pub(crate) const HYPER_BUFFER: usize = 8192 + 4096 * 100;
const _: () = assert!(head::HEAD_LIMIT + scanner::BLANK_LIMIT < HYPER_BUFFER);

/// How long closing a connection may take to write the gate's last answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every HTTP/1 connection of a worker shares.
pub(crate) struct Protocol {
    /// hyper's settings.
    http: http1::Builder,
    /// The `[http]` limits every request passes.
    limits: Rc<Limits>,
}

impl Protocol {
    /// The worker's HTTP/1, under `config`; the gate hands the requests it refuses to `sink`.
    pub(crate) fn new(config: &HttpConfig, sink: Option<Rc<Sink>>) -> Self {
        Protocol { http: builder(config), limits: Rc::new(Limits::new(config, sink)) }
    }

    /// Serves a connection's requests through `stack` until the connection ends. `since` is
    /// when it started (its first request's `header_timeout` counts from then), `early` what
    /// was read of it after its preamble.
    pub(crate) async fn serve<I, S>(
        &self,
        io: I,
        stack: Stack<S>,
        since: Instant,
        early: Vec<u8>,
        conns: &Conns,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        S: HttpService,
    {
        let link = Rc::new(Link::default());
        let slot = Rc::clone(&stack.slot);
        let parts = Parts {
            slot: Rc::clone(&slot),
            link: Rc::clone(&link),
            facts: Rc::clone(&stack.facts),
            limits: Rc::clone(&self.limits),
            since,
            early,
        };
        let service = stack.over(Rc::clone(&link));
        let gate = Gate::new(io, parts);
        let mut gate = serve(gate, &self.http, &service, (&slot, &link), conns).await;
        gate.report_refusal();
    }
}

/// The hyper settings every connection of the worker is served with.
fn builder(config: &HttpConfig) -> http1::Builder {
    let mut http = http1::Builder::new();
    // hyper refuses more than 100 fields with a bare 431 of its own: a head the gate let
    // through must fit. Only when needed: beyond 100, hyper allocates its field table per head.
    let fields = config.limit_request_fields as usize;
    if fields > 100 {
        http.max_headers(fields);
    }
    // Likewise a head larger than hyper's buffer: the gate's cap is below it.
    http.max_buf_size(HYPER_BUFFER);
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

/// Serves a connection (its slot and link) until it ends; returns the gate, done with (for
/// [`Gate::report_refusal`]).
async fn serve<I, S>(
    mut gate: Gate<I>,
    http: &http1::Builder,
    service: &AppService<S, Link>,
    (slot, link): (&Slot, &Link),
    conns: &Conns,
) -> Gate<I>
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
    S: HttpService,
{
    loop {
        if !wait_for_request(&mut gate, conns).await {
            // Closed, timed out, refused (the gate's answer is written now) or drained.
            gate.unpark();
            let close = std::future::poll_fn(|cx| Pin::new(&mut gate).poll_shutdown(cx));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            return gate;
        }
        gate.unpark();
        let mut conn =
            Box::pin(http.serve_connection(TokioIo::new(gate), service.for_connection()));
        let result = drain_connection(conns, conn.as_mut(), slot).await;
        let parts = Pin::into_inner(conn).into_parts();
        gate = parts.io.into_inner();
        // What hyper held and had not written is gone with it.
        link.hyper_ended(result.is_ok(), gate.held());
        if let Err(e) = result {
            tracing::debug!("connection closed: {e}");
            gate.report_hyper_refusal(&e);
            return gate;
        }
        if !gate.parked() {
            // hyper ended the connection, and shut it down.
            return gate;
        }
        if !parts.read_buf.is_empty() {
            gate.unread(&parts.read_buf);
        }
    }
}

/// Waits, with no hyper connection, until the gate has a request: false if the connection
/// ended instead. A draining worker waits [`DRAIN_LINGER`] at most.
async fn wait_for_request<I>(gate: &mut Gate<I>, conns: &Conns) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let ready =
        std::future::poll_fn(|cx| Pin::new(&mut *gate).poll_read(cx, &mut ReadBuf::new(&mut [])));
    let drained = async {
        conns.draining().await;
        tokio::time::sleep(DRAIN_LINGER).await;
    };
    tokio::select! {
        biased;
        read = ready => read.is_ok() && gate.has_request(),
        () = drained => false,
    }
}

/// Drives one hyper connection to its end. Once the worker drains, every response it starts
/// says `Connection: close` (see [`Slot::closing`]), so a connection with a request in
/// progress, or one that arrives, ends after that response. A response already on its way
/// without it is let through, and the client's next request is answered with it. Only a
/// connection on which nothing is happening for [`DRAIN_LINGER`] is closed by the worker.
async fn drain_connection<C>(conns: &Conns, mut conn: Pin<&mut C>, slot: &Slot) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>> + GracefulConnection,
{
    tokio::select! {
        biased;
        result = conn.as_mut() => return result,
        () = conns.draining() => {}
    }
    slot.watch();
    // Nothing in progress and no byte arrived since: the connection is quiet.
    let mut quiet_since = Instant::now();
    let mut seen = slot.read();
    let mut was_active = false;
    loop {
        let active = slot.busy();
        if active || was_active || slot.read() != seen {
            // A request is in progress or just finished, or bytes are arriving.
            seen = slot.read();
            quiet_since = Instant::now();
            was_active = active;
        } else if quiet_since.elapsed() >= DRAIN_LINGER {
            break;
        }
        let changed = slot.changed();
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

/// A hyper connection that can be asked to finish gracefully.
trait GracefulConnection {
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
