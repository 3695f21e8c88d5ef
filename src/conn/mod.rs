//! One connection, one way through: accept ([`accept`]) → preamble ([`preamble`]: PROXY v1/v2,
//! before any transport, because it comes first on the wire) → transport ([`transport`]: plain
//! TCP or unix, or TLS; the connection's [`Facts`], set once) → protocol ([`http1`]: the
//! gate, hyper, parking; [`http2`]: hyper's h2; chosen once in [`Pipeline`]) → the service stack
//! ([`service`]: client identity, accounting, deadline, panic guard, the app; the same under
//! every protocol, which it sees only as an [`Exchange`](service::Exchange)) → one
//! [`RequestEnd`](crate::RequestEnd) event per request ([`request_end`](crate::request_end)).
//!
//! The worker's open connections, the `worker_connections` cap, reclaiming and draining are
//! [`drain`]'s; parking idle ones worker-wide is [`parking`]'s. [`Pipeline`] holds what every
//! connection of a worker shares and runs the steps in order for each.
//!
//! Who writes what, per connection: the transport's [`Facts`] are read-only once set; the
//! worker's [`drain::Slot`] is written by the service stack (requests started and ended), the
//! protocol (bytes read, writes stalled) and the worker's sweeps (parking, reclaim), each its
//! own fields; what a protocol and the service stack tell each other (for HTTP/1, its link
//! between the gate and the stack) stays inside the protocol, behind its `Exchange`. One
//! guard, [`drain::Open`], counts an open connection, in the worker and on the scoreboard.

pub(crate) mod accept;
pub(crate) mod body_rate;
pub(crate) mod drain;
pub(crate) mod http1;
pub(crate) mod http2;
pub(crate) mod parking;
pub(crate) mod preamble;
pub(crate) mod service;
pub(crate) mod stall;
pub(crate) mod transport;

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use self::drain::{Conns, DRAIN_LINGER, Open, Tally};
use self::http2::preface::read_until_known;
use self::preamble::Expect;
use self::service::{Requests, Stack};
use self::transport::{Alpn, Facts, Prefixed, TlsFacts, Transport};
use crate::app::HttpService;
use crate::config::{AllowList, Http2Config, HttpConfig};
use crate::request_end::Sink;

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

/// How long closing a connection that ended in its preamble may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection of a worker shares, and the steps each goes through.
pub(crate) struct Pipeline<S> {
    service: Rc<S>,
    pub(crate) requests: Rc<Requests>,
    pub(crate) conns: Conns,
    /// `worker_connections`.
    pub(crate) limit: usize,
    /// HTTP/1's settings and limits, shared by its connections.
    http1: http1::Protocol,
    /// HTTP/2's, shared likewise.
    http2: http2::Protocol,
    /// `http.h2c`: whether a cleartext connection may start with HTTP/2's preface.
    h2c: bool,
    /// Peers that must (and the only ones that may) start with a PROXY protocol header;
    /// `None` when `proxy_protocol` is off.
    proxy: Option<AllowList>,
    /// `header_timeout`, which bounds the preamble too.
    header_timeout: Option<Duration>,
}

impl<S: HttpService> Pipeline<S> {
    pub(crate) fn new(
        service: S,
        requests: Rc<Requests>,
        conns: Conns,
        limit: usize,
        config: &HttpConfig,
        h2: &Http2Config,
        sink: Option<Rc<Sink>>,
    ) -> Self {
        Pipeline {
            service: Rc::new(service),
            requests,
            conns,
            limit,
            http1: http1::Protocol::new(config, sink.clone()),
            http2: http2::Protocol::new(config, h2, sink),
            h2c: config.h2c,
            proxy: config.proxy_protocol.then(|| config.proxy_allow_ips.clone()),
            header_timeout: crate::config::ServerConfig::limit(config.header_timeout),
        }
    }

    /// Serves one accepted connection in a task of its own.
    pub(crate) fn spawn<I>(self: &Rc<Self>, io: I, facts: Facts, transport: &Transport)
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let open = self.conns.open(Some(Rc::clone(&self.requests) as Rc<dyn Tally>));
        let transport = transport.clone();
        tokio::task::spawn_local(Rc::clone(self).serve(io, facts, transport, Instant::now(), open));
    }

    /// Resolves a moment after the worker starts draining.
    async fn drained(&self) {
        self.conns.draining().await;
        tokio::time::sleep(DRAIN_LINGER).await;
    }

    /// The steps, in order, for a connection that started at `since`; `open` counts it until
    /// the end.
    async fn serve<I>(
        self: Rc<Self>,
        mut io: I,
        mut facts: Facts,
        transport: Transport,
        since: Instant,
        open: Open,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let mut early = Vec::new();
        if let Some(allowed) = &self.proxy {
            let expect = match facts.peer {
                Some(peer) if !allowed.allows(peer.ip()) => Expect::NoHeader,
                // A unix socket's peer is a local process: the proxy in front, if any.
                _ => Expect::Header,
            };
            let deadline = self.header_timeout.map(|t| since + t);
            let read = tokio::select! {
                biased;
                read = preamble::read(&mut io, expect, deadline) => read,
                () = self.drained() => Err(preamble::Ended::Closed),
            };
            match read {
                Ok((source, rest)) => {
                    facts.proxied = source;
                    early = rest;
                }
                Err(ended) => {
                    if let preamble::Ended::Refused(why) = ended {
                        tracing::debug!("{why}");
                    }
                    let close =
                        std::future::poll_fn(|cx| std::pin::Pin::new(&mut io).poll_shutdown(cx));
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                    return;
                }
            }
        }
        // The transport: TLS adds its facts, and then carries the protocol's bytes.
        match transport {
            Transport::Plain => self.protocol(io, facts, since, early, open).await,
            Transport::Tls(acceptor) => {
                let deadline = self.header_timeout.map(|t| since + t);
                let done = transport::handshake(&acceptor, io, early, deadline, self.drained());
                match transport::counted(done.await, self.requests.board.counters()) {
                    Ok((io, tls)) => {
                        facts.tls = Some(tls);
                        self.protocol(io, facts, since, Vec::new(), open).await;
                    }
                    Err(e) => tracing::debug!("tls handshake failed: {e}"),
                }
            }
        }
    }

    /// The protocol, over the transport's bytes, with `early` already read of them.
    async fn protocol<I>(
        &self,
        mut io: I,
        facts: Facts,
        since: Instant,
        mut early: Vec<u8>,
        open: Open,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let slot = Rc::clone(open.slot());
        // The protocol, the one place it is chosen: under TLS by ALPN (`h2` is HTTP/2; a
        // client that offered no ALPN speaks HTTP/1.1); on a cleartext connection, by
        // HTTP/2's preface when `h2c` is on; else HTTP/1.
        let protocol = match (&facts.tls, self.h2c) {
            (Some(TlsFacts { alpn: Some(Alpn::H2), .. }), _) => Protocol::Http2,
            (Some(_), _) | (None, false) => Protocol::Http1,
            (None, true) => match self.sniff(&mut io, &mut early, since).await {
                Some(protocol) => protocol,
                None => {
                    // Closed, nothing in time, or drained before a byte told.
                    let close =
                        std::future::poll_fn(|cx| std::pin::Pin::new(&mut io).poll_shutdown(cx));
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                    return;
                }
            },
        };
        let stack = Stack {
            service: Rc::clone(&self.service),
            requests: Rc::clone(&self.requests),
            slot,
            facts: Rc::new(facts),
        };
        match protocol {
            Protocol::Http1 => self.http1.serve(io, stack, since, early, &self.conns).await,
            Protocol::Http2 => {
                self.http2.serve(Prefixed::new(early, io), stack, since, &self.conns).await;
            }
        }
        drop(open);
    }

    /// Reads a cleartext connection's first bytes into `early` until they tell its protocol
    /// (see [`http2::preface`]), within `header_timeout` of `since`; `None` if the connection
    /// ends, the time runs out or the worker drains first.
    async fn sniff<I>(&self, io: &mut I, early: &mut Vec<u8>, since: Instant) -> Option<Protocol>
    where
        I: AsyncRead + Unpin,
    {
        let known = async {
            match self.header_timeout {
                Some(t) => {
                    let at = (since + t).into();
                    tokio::time::timeout_at(at, read_until_known(io, early)).await.ok().flatten()
                }
                None => read_until_known(io, early).await,
            }
        };
        tokio::select! {
            biased;
            known = known => known,
            () = self.drained() => None,
        }
    }
}

/// The protocols a connection may speak, chosen once per connection in [`Pipeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}
