//! A worker's side of the endpoint: it accepts on the inherited metrics sockets until it
//! drains, and answers each connection's one request with hyper: `GET /metrics` (or `HEAD`;
//! `[metrics] path`) the rendered metrics, any other path `404`, another method `405`. One request per
//! connection (Prometheus opens a connection per scrape when told to close), a short header
//! timeout, and a bound on the whole exchange: a scrape never holds a worker's descriptors or
//! its drain for long.

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::{SCRAPES_AT_ONCE, Source, render};
use crate::conn::accept::{Acceptor, accept_failed};
use crate::conn::drain::Conns;
use crate::listener::Listener;

/// How long a scrape's request head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole scrape may take, head, rendering and response.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker that drained waits for the scrapes it is answering before it exits.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a worker looks whether a new master serves beside its own (see
/// [`successor_serves`]); between two looks, both masters' workers may answer.
const SUCCESSOR_POLL: Duration = Duration::from_millis(250);

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A worker's endpoint: what it reads, and the scrapes it is answering.
pub(crate) struct Endpoint {
    source: Source,
    in_flight: Cell<usize>,
    /// Wakes the accept loops, and the worker's exit, as a scrape ends.
    one_done: Notify,
}

/// Starts accepting on the metrics `sockets` until the worker drains (`conns`); `Err` if a
/// socket cannot be used by the worker's runtime.
pub(super) fn serve(
    sockets: Vec<Listener>,
    source: Source,
    conns: &Conns,
) -> std::io::Result<Rc<Endpoint>> {
    let endpoint = Rc::new(Endpoint { source, in_flight: Cell::new(0), one_done: Notify::new() });
    let acceptors = sockets.into_iter().map(Acceptor::new).collect::<Result<Vec<_>, _>>()?;
    for acceptor in acceptors {
        tokio::task::spawn_local(accept_loop(acceptor, Rc::clone(&endpoint), conns.clone()));
    }
    Ok(endpoint)
}

impl Endpoint {
    /// Waits, [`FINISH_TIMEOUT`] at most and never past `deadline` (the end of the worker's
    /// `graceful_timeout`), for the scrapes under way: a worker that drained finishes them
    /// before it exits, so that a reload cuts none; but a scrape that never ends (a client
    /// that sends nothing) must not keep the worker past the time the master kills it, which
    /// would lose its exit hooks and its last access log lines.
    pub(crate) async fn finished(&self, deadline: tokio::time::Instant) {
        let all_done = async {
            while self.in_flight.get() > 0 {
                self.one_done.notified().await;
            }
        };
        let deadline = deadline.min(tokio::time::Instant::now() + FINISH_TIMEOUT);
        let _ = tokio::time::timeout_at(deadline, all_done).await;
    }

    /// Answers one request.
    fn answer(&self, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: String| {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response
        };
        let path = &self.source.path;
        if request.uri().path() != path {
            return reply(StatusCode::NOT_FOUND, format!("not found: the metrics are at {path}\n"));
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
            response.headers_mut().insert(header::ALLOW, "GET, HEAD".parse().expect("valid"));
            return response;
        }
        let report = self.source.scoreboard.report();
        let text = render::render(&report, &self.source.queues(), env!("CARGO_PKG_VERSION"));
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(header::CONTENT_TYPE, CONTENT_TYPE.parse().expect("valid"));
        response
    }
}

/// Accepts scrapes until the worker drains, [`SCRAPES_AT_ONCE`] at a time, and none while a
/// new master serves beside this worker's (a manual binary upgrade not yet committed: its
/// workers answer, and go on counting); then drops the socket, this worker's copy.
async fn accept_loop(acceptor: Acceptor, endpoint: Rc<Endpoint>, conns: Conns) {
    let scoreboard = &endpoint.source.scoreboard;
    loop {
        if scoreboard.successor_serves() {
            tracing::info!("a new master serves: leaving the metrics to its workers");
            while scoreboard.successor_serves() {
                tokio::select! {
                    biased;
                    () = conns.draining() => return,
                    () = tokio::time::sleep(SUCCESSOR_POLL) => {}
                }
            }
            tracing::info!("the new master is gone: answering the metrics again");
        }
        if endpoint.in_flight.get() >= SCRAPES_AT_ONCE {
            tokio::select! {
                biased;
                () = conns.draining() => return,
                () = endpoint.one_done.notified() => continue,
            }
        }
        let accepted = tokio::select! {
            biased;
            () = conns.draining() => return,
            () = successor_serves(scoreboard) => continue,
            accepted = accept(&acceptor) => accepted,
        };
        match accepted {
            Ok(stream) => {
                endpoint.in_flight.set(endpoint.in_flight.get() + 1);
                tokio::task::spawn_local(scrape(stream, Rc::clone(&endpoint)));
            }
            Err(_) if crate::signals::listeners_released() => return,
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Returns once a new master serves beside this worker's: then every counter must come from
/// one master only, the new one, or each scrape could swing them between the two masters'
/// counts, which Prometheus takes for a counter reset each time. Polled: the master's only
/// way to tell its workers is the scoreboard, and a look every [`SUCCESSOR_POLL`] is a load.
async fn successor_serves(scoreboard: &crate::scoreboard::Scoreboard) {
    while !scoreboard.successor_serves() {
        tokio::time::sleep(SUCCESSOR_POLL).await;
    }
}

/// An accepted connection, over TCP or a unix socket.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(acceptor: &Acceptor) -> std::io::Result<Stream> {
    Ok(match acceptor {
        Acceptor::Tcp(l) => {
            let (stream, _) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Stream::Tcp(stream)
        }
        Acceptor::Unix(l) => Stream::Unix(l.accept().await?.0),
    })
}

/// Answers one scrape, within [`SCRAPE_TIMEOUT`].
async fn scrape(stream: Stream, endpoint: Rc<Endpoint>) {
    match stream {
        Stream::Tcp(s) => exchange(s, &endpoint).await,
        Stream::Unix(s) => exchange(s, &endpoint).await,
    }
    endpoint.in_flight.set(endpoint.in_flight.get() - 1);
    endpoint.one_done.notify_waiters();
    // A permit for an accept loop that is not waiting yet, at the limit.
    endpoint.one_done.notify_one();
}

async fn exchange<I>(io: I, endpoint: &Rc<Endpoint>)
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(false);
    let service = hyper::service::service_fn(|request| {
        let response = endpoint.answer(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http.serve_connection(TokioIo::new(io), service);
    // A bad request is answered (400) and closed by hyper; its error says nothing new.
    if let Ok(Err(e)) = tokio::time::timeout(SCRAPE_TIMEOUT, connection).await {
        tracing::debug!("metrics connection: {e}");
    }
}
