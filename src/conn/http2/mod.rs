//! HTTP/2: hyper's h2 server on the worker's `LocalSet`, under the `[http2]` settings and the
//! `[http]` limits as far as they map. [`Protocol::serve`] serves one connection: hyper runs
//! each stream in a task of its own through [`LocalExec`] (the app's service is `!Send`); the
//! request layer ([`request`]) applies the head limits and hands the request to the same
//! service stack as HTTP/1's, which sees the connection's streams as one
//! [`Exchange`](super::service::Exchange) ([`streams`]).
//!
//! Under hyper, the [`wire`] passes the connection's bytes through a frame scanner
//! ([`frames`]) for the limits h2 has no setting for (a body without `Content-Length` over
//! `max_body_size`, budgets of stream resets and of control frames, a header block left open),
//! and holds writes to `send_timeout`. A flood ends its connection at once with
//! `GOAWAY(ENHANCE_YOUR_CALM)`, which the worker says itself ([`goaway`]).
//!
//! The connection's life, in [`drive`]: no request within `header_timeout` of the accept, or
//! no stream open for `keepalive`, and it ends with GOAWAY; a draining worker sends GOAWAY at
//! once (hyper's graceful shutdown: `GOAWAY(2^31-1)`, a PING round trip, then the last stream
//! id it accepted; the worker names that stream itself if the PING is not answered in time)
//! and lets the open streams finish. h2 connections are never parked: h2's
//! state (HPACK tables, windows) cannot be dropped and rebuilt as HTTP/1's connection is.
//!
//! How a connection comes here: on a cleartext listener with `http.h2c`, by its preface
//! ([`preface`]); under TLS, by ALPN `h2` (`tls.http2`). The protocol gets an `AsyncRead + AsyncWrite`
//! and the connection's facts, and knows nothing of the transport.

mod frames;
mod goaway;
mod heads;
pub(crate) mod preface;
mod request;
mod streams;
mod uploads;
mod watch;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use self::frames::{Bounds, Breach, Scanner};
use self::goaway::{ENHANCE_YOUR_CALM, NO_ERROR, Shared};
use self::request::{Layer, Limits};
use self::streams::Streams;
use self::uploads::Pace;
use self::watch::Watched;
use self::wire::{Stop, Wire};
use super::drain::{Conns, DRAIN_LINGER, Slot};
use super::service::Stack;
use crate::app::HttpService;
use crate::config::{Http2Config, HttpConfig, ServerConfig};
use crate::request_end::Sink;

/// How long a connection ending on its own (idle, or no request in time) may take to say
/// GOAWAY and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection that broke a limit (see [`frames`]) has to write the responses under
/// way before it is closed: it reads nothing more, so a stream still waiting for its request
/// body is cut then.
const BREACH_LINGER: Duration = Duration::from_secs(1);

/// How long a draining connection's client has to answer the GOAWAY's PING, once its streams
/// are done: hyper waits for it before it names the last stream it served and closes; without
/// it, the worker does both itself.
const DRAIN_PING_WAIT: Duration = Duration::from_secs(2);

/// How long a connection closed by the worker itself has to take its last GOAWAY.
const GOAWAY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a PING sent by `keepalive_ping` may go unanswered.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The most header list a request may have, whatever the limits: HTTP/1's cap on a head.
const HEAD_CAP: u64 = 384 * 1024;

/// Runs the tasks hyper's h2 server hands it (one per stream) on the worker's `LocalSet`:
/// hyper needs an `Executor` for its stream futures, which are `!Send` as the app's service
/// is; this one takes any future, and holds each to `send_timeout` ([`watch`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LocalExec {
    send_timeout: Option<Duration>,
}

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(Watched::new(fut, self.send_timeout));
    }
}

/// What every HTTP/2 connection of a worker shares.
pub(crate) struct Protocol {
    /// hyper's settings.
    http: http2::Builder<LocalExec>,
    /// The `[http]` head limits every request passes.
    limits: Rc<Limits>,
    /// `header_timeout`: from the accept to the connection's first request.
    header_timeout: Option<Duration>,
    /// `keepalive`: how long a connection may have no stream open.
    keepalive: Option<Duration>,
    /// `send_timeout`.
    send_timeout: Option<Duration>,
    /// What the frame scanner holds each connection to.
    bounds: Bounds,
    /// `max_send_buf`.
    send_buf: usize,
}

impl Protocol {
    /// The worker's HTTP/2, under `http` and `http2`; refused requests' ends go to `sink`.
    pub(crate) fn new(http: &HttpConfig, http2: &Http2Config, sink: Option<Rc<Sink>>) -> Self {
        Protocol {
            http: builder(http, http2),
            limits: Rc::new(Limits::new(http, sink)),
            header_timeout: ServerConfig::limit(http.header_timeout),
            keepalive: ServerConfig::limit(http.keepalive),
            send_timeout: ServerConfig::limit(http.send_timeout),
            bounds: bounds(http, http2),
            send_buf: http2.max_send_buf as usize,
        }
    }

    /// Serves a connection's streams through `stack` until the connection ends. `since` is
    /// when it was accepted.
    pub(crate) async fn serve<I, S>(&self, io: I, stack: Stack<S>, since: Instant, conns: &Conns)
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        S: HttpService,
    {
        let stop = Rc::new(Stop::default());
        let streams =
            Rc::new(Streams::new(self.limits.sink.is_some(), self.send_buf, Rc::clone(&stop)));
        let slot = Rc::clone(&stack.slot);
        let facts = Rc::clone(&stack.facts);
        let layer = Layer {
            stack: stack.over(Rc::clone(&streams)),
            streams,
            limits: Rc::clone(&self.limits),
            facts: Rc::clone(&facts),
        };
        let wire = Shared::new(Wire::new(
            io,
            Scanner::new(self.bounds),
            Rc::clone(&slot),
            self.header_timeout,
            self.send_timeout,
            Rc::clone(&stop),
        ));
        let times = Times { since, header_timeout: self.header_timeout, keepalive: self.keepalive };
        let ended = {
            let conn = self.http.serve_connection(TokioIo::new(wire.clone()), layer);
            drive(std::pin::pin!(conn), &slot, conns, &stop, times).await
        };
        // hyper's connection, and its handle on the wire, are gone.
        match ended {
            Ended::Hyper(Ok(())) => {}
            Ended::Hyper(Err(e)) => tracing::debug!("http/2 connection closed: {e}"),
            Ended::Flood(breach) => {
                let peer = facts.client().map_or_else(|| "a unix socket".into(), |p| p.to_string());
                tracing::warn!(
                    "http/2 flood from {peer}: {}; connection ended with GOAWAY(ENHANCE_YOUR_CALM)",
                    breach.describe()
                );
                wire.goaway(ENHANCE_YOUR_CALM, GOAWAY_TIMEOUT).await;
            }
            Ended::Unanswered => wire.goaway(NO_ERROR, GOAWAY_TIMEOUT).await,
        }
    }
}

/// hyper's h2 settings from `[http2]`, with `[http]`'s head limits.
fn builder(http: &HttpConfig, h2: &Http2Config) -> http2::Builder<LocalExec> {
    let send_timeout = ServerConfig::limit(http.send_timeout);
    let mut b = http2::Builder::new(LocalExec { send_timeout });
    // h2 counts a field as its name, its value and 32 bytes (RFC 7541 §4.1); beyond the list
    // size it answers 431 itself. The layer checks each field and the count exactly.
    let field = match http.limit_request_field_size {
        0 => HEAD_CAP,
        n => n + 32,
    };
    let list = http.limit_request_fields.saturating_mul(field).min(HEAD_CAP) as u32;
    b.timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_header_list_size(list)
        .initial_stream_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window)
        .max_send_buf_size(h2.max_send_buf as usize)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams as usize)
        .max_local_error_reset_streams(Some(h2.max_local_error_reset_streams as usize))
        .keep_alive_interval(ServerConfig::limit(h2.keepalive_ping))
        .keep_alive_timeout(PING_TIMEOUT);
    b
}

/// What the frame scanner holds a connection to: `max_body_size` for each stream's body (h2
/// checks a declared length itself), and a reset budget of twice the streams a client may
/// have open, at least 200, per 10 s: a client that cancels now and then (a browser leaving a
/// page) never meets it; one that opens and resets streams at its own pace, each starting a
/// handler (which h2's `max_pending_accept_reset_streams`, counting only streams reset
/// before they are served, does not see), does.
fn bounds(http: &HttpConfig, h2: &Http2Config) -> Bounds {
    let streams = h2.max_concurrent_streams;
    Bounds {
        body: http.max_body_size,
        resets: (2 * streams).max(200),
        tracked: 2 * streams as usize,
        pace: Pace::new(http.body_timeout.0, http.body_min_rate, h2.initial_stream_window),
    }
}

/// How [`drive`] ended a connection.
enum Ended {
    /// hyper ended it, or was given its time to.
    Hyper(hyper::Result<()>),
    /// A flood: hyper is dropped at once, and the worker says `GOAWAY(ENHANCE_YOUR_CALM)`
    /// itself (hyper, asked to end a connection, says `NO_ERROR`).
    Flood(Breach),
    /// A draining connection whose client has not answered the GOAWAY's PING: hyper, which
    /// names the last stream it served only once it has, is dropped, and the worker names it.
    Unanswered,
}

/// The timers of one connection.
#[derive(Clone, Copy)]
struct Times {
    since: Instant,
    header_timeout: Option<Duration>,
    keepalive: Option<Duration>,
}

/// Drives a connection to its end: ends it (GOAWAY) when no request came within
/// `header_timeout`, when it has had no stream open for `keepalive`, or when the worker
/// drains; then lets its open streams finish. A flood ends it at once.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    slot: &Slot,
    conns: &Conns,
    stop: &Stop,
    times: Times,
) -> Ended
where
    C: Future<Output = hyper::Result<()>> + Graceful,
{
    slot.watch();
    let mut idle_since = times.since;
    let mut was_busy = false;
    let mut seen = slot.started();
    let end = loop {
        let busy = slot.busy();
        // A request that started and ended between two looks counts too.
        if (was_busy && !busy) || slot.started() != seen {
            idle_since = Instant::now();
            seen = slot.started();
        }
        was_busy = busy;
        let deadline = if slot.started() == 0 {
            times.header_timeout.map(|t| times.since + t)
        } else if busy {
            None
        } else {
            times.keepalive.map(|t| idle_since + t)
        };
        let changed = slot.changed();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            result = conn.as_mut() => return Ended::Hyper(result),
            () = conns.draining() => break None,
            breach = stop.found() => {
                if breach.is_flood() {
                    return Ended::Flood(breach);
                }
                break Some(BREACH_LINGER);
            }
            () = changed => {}
            () = timer => break Some(CLOSE_TIMEOUT),
        }
    };
    conn.as_mut().graceful_shutdown();
    let Some(linger) = end else {
        return drain(conn, slot, stop).await;
    };
    tokio::select! {
        result = tokio::time::timeout(linger, conn) => Ended::Hyper(result.unwrap_or(Ok(()))),
        breach = stop.flood() => Ended::Flood(breach),
    }
}

/// Drives a draining connection, which has said GOAWAY, to its end: hyper ends it once its
/// open streams are done (within the worker's `graceful_timeout`) and the client has answered
/// the GOAWAY's PING. Once no stream is in progress, a client that sends nothing more is
/// closed after [`DRAIN_LINGER`], as an idle HTTP/1 connection is (the wire counts what is read
/// while the worker drains), and one that has not answered the PING within
/// [`DRAIN_PING_WAIT`] of the GOAWAY, whatever it sends, too: the worker then says the last
/// GOAWAY itself. A flood ends it at once, as before the drain.
async fn drain<C>(mut conn: Pin<&mut C>, slot: &Slot, stop: &Stop) -> Ended
where
    C: Future<Output = hyper::Result<()>>,
{
    let goaway = Instant::now();
    // Since when no stream has been in progress, and since when the client has sent nothing.
    let mut idle_since = goaway;
    let mut quiet_since = goaway;
    let mut seen = slot.read();
    let mut was_busy = false;
    loop {
        let busy = slot.busy();
        let now = Instant::now();
        if busy || was_busy {
            // A stream is in progress or just ended.
            idle_since = now;
            quiet_since = now;
            seen = slot.read();
        } else if slot.read() != seen {
            quiet_since = now;
            seen = slot.read();
        }
        // A stream's last bytes may still be going out for a moment after it ended.
        let settled = now >= idle_since + DRAIN_LINGER;
        let quiet = now >= quiet_since + DRAIN_LINGER;
        let unanswered = now >= goaway + DRAIN_PING_WAIT;
        if !busy && settled && (quiet || unanswered) {
            return Ended::Unanswered;
        }
        was_busy = busy;
        let wake = if busy {
            now + DRAIN_LINGER
        } else {
            (quiet_since + DRAIN_LINGER)
                .min((goaway + DRAIN_PING_WAIT).max(idle_since + DRAIN_LINGER))
        };
        let changed = slot.changed();
        tokio::select! {
            result = conn.as_mut() => return Ended::Hyper(result),
            breach = stop.flood() => return Ended::Flood(breach),
            () = changed => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// A connection that can be asked to finish gracefully.
trait Graceful {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http2::Connection<I, S, LocalExec>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    LocalExec: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}
