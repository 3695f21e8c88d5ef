//! The transport: how a connection's bytes travel once its preamble is read: plain (TCP or a
//! unix socket) or TLS ([`Transport`]), between the preamble and the protocol. What is known of
//! the connection's two ends ([`Facts`]) is settled here, once, and read-only for the
//! connection's life: the protocol and the service stack read it, nothing writes it again.
//!
//! Under TLS, the handshake ([`handshake`]) counts against `header_timeout` (one clock from
//! accept to the first request head) and ends when the worker drains; a client that speaks
//! plain HTTP to a TLS port is told so in plain HTTP ([`PLAIN_ON_TLS`]). Every failure closes
//! that connection only, logged at debug level: scanners would flood a log at warn, and
//! counted by how it ended ([`Failed::outcome`]) in the metrics.

mod prefixed;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::scoreboard::counters::{Counters, Handshake};

pub(crate) use self::prefixed::Prefixed;

/// How a listener's connections are carried.
#[derive(Clone)]
pub(crate) enum Transport {
    /// As they come.
    Plain,
    /// TLS, with the worker's rustls config.
    Tls(TlsAcceptor),
}

/// The protocol a TLS connection agreed on by ALPN (see [`crate::tls::alpn`] for what is
/// offered); the protocol is chosen by a `match` on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// `http/1.1`.
    Http11,
    /// `h2`: HTTP/2 over TLS.
    H2,
}

/// What the TLS handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsFacts {
    /// The protocol version, as on the wire (0x0303 for TLS 1.2, 0x0304 for 1.3).
    pub(crate) version: u16,
    /// The ALPN protocol agreed, if the client offered any.
    pub(crate) alpn: Option<Alpn>,
    /// Whether the session was resumed (a ticket).
    pub(crate) resumed: bool,
}

/// What is known of a connection's ends, set once before its first request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The socket's peer (`None` on a unix socket).
    pub(crate) peer: Option<SocketAddr>,
    /// The address of the listener that accepted it (`None` on a unix socket). For a
    /// listener bound to a wildcard (`0.0.0.0:80`), that wildcard, not the address the client
    /// reached: that one takes a `getsockname(2)` per connection, and nothing needs it yet. A
    /// reader that does should read it here, from the socket, once, rather than make every
    /// connection pay for it.
    pub(crate) listener: Option<SocketAddr>,
    /// The client's address as a trusted PROXY protocol header gave it.
    pub(crate) proxied: Option<SocketAddr>,
    /// The TLS session, on a TLS listener.
    pub(crate) tls: Option<TlsFacts>,
}

impl Facts {
    /// The client's address, as the transport knows it: what a trusted PROXY header said, or
    /// the socket's peer. (Forwarding headers, read per request, may say more: see
    /// [`super::service::client::identify`].)
    pub(crate) fn client(&self) -> Option<SocketAddr> {
        self.proxied.or(self.peer)
    }

    /// The client's IP, as the transport knows it.
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client().map(|a| crate::config::canonical(a.ip()))
    }
}

/// The answer to plain HTTP sent to a TLS port, in plain HTTP, then the connection is closed:
/// nginx's (its 497, sent as a 400), so that someone who typed `http://` sees why.
pub(crate) const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 49\r\n\r\n\
The plain HTTP request was sent to an HTTPS port\n";

/// Whether the first byte of a connection is plain HTTP's: a method's letter. A TLS record
/// starts with its content type (22 for a handshake), never a letter.
fn looks_like_plain_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Why a handshake did not complete; the connection is closed either way.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failed {
    #[error("closed before the handshake")]
    Eof,
    #[error("plain HTTP on a TLS port, answered 400")]
    PlainHttp,
    #[error("not done by header_timeout")]
    Timeout,
    #[error("the worker is draining")]
    Draining,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Failed {
    /// How the metrics count it (see [`Handshake`]).
    pub(crate) fn outcome(&self) -> Handshake {
        match self {
            Failed::Eof | Failed::Draining => Handshake::Closed,
            Failed::PlainHttp => Handshake::PlaintextHttp,
            Failed::Timeout => Handshake::Timeout,
            // tokio-rustls reports what rustls refused as `InvalidData`; the rest is the
            // connection's end (an EOF inside a record, a reset).
            Failed::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Handshake::ProtocolError
            }
            Failed::Io(_) => Handshake::Closed,
        }
    }
}

/// `done`, once counted in `counters` by how it ended.
pub(crate) fn counted<T>(done: Result<T, Failed>, counters: &Counters) -> Result<T, Failed> {
    counters.handshake(done.as_ref().map_or_else(Failed::outcome, |_| Handshake::Ok));
    done
}

/// Runs the TLS handshake on `io`, whose first bytes (after a PROXY header) are `early`,
/// until `deadline` at most, or until `drained` resolves.
pub(crate) async fn handshake<I>(
    acceptor: &TlsAcceptor,
    mut io: I,
    mut early: Vec<u8>,
    deadline: Option<Instant>,
    drained: impl Future<Output = ()>,
) -> Result<(TlsStream<Prefixed<I>>, TlsFacts), Failed>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let steps = async {
        if early.is_empty() {
            // One read, not a peek: a peek would spin on a client that sends one byte and
            // waits.
            let mut first = [0u8; 512];
            let n = io.read(&mut first).await?;
            if n == 0 {
                return Err(Failed::Eof);
            }
            early.extend_from_slice(&first[..n]);
        }
        if looks_like_plain_http(early[0]) {
            io.write_all(PLAIN_ON_TLS).await?;
            let _ = io.shutdown().await;
            return Err(Failed::PlainHttp);
        }
        let stream = acceptor.accept(Prefixed::new(early, io)).await?;
        let (_, conn) = stream.get_ref();
        let facts = TlsFacts {
            version: conn.protocol_version().map_or(0, u16::from),
            alpn: match conn.alpn_protocol() {
                Some(b"http/1.1") => Some(Alpn::Http11),
                Some(b"h2") => Some(Alpn::H2),
                _ => None,
            },
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        Ok((stream, facts))
    };
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        done = steps => done,
        () = until => Err(Failed::Timeout),
        () = drained => Err(Failed::Draining),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_proxied_source_else_the_peer() {
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "[::ffff:192.0.2.7]:80".parse().unwrap();
        let facts = |peer, proxied| Facts { peer, listener: None, proxied, tls: None };
        let table = [
            (facts(Some(a), None), Some(a)),
            (facts(Some(a), Some(b)), Some(b)),
            (facts(None, None), None),
        ];
        for (facts, client) in table {
            assert_eq!(facts.client(), client);
        }
        let proxied = facts(Some(a), Some(b));
        assert_eq!(proxied.client_ip(), Some("192.0.2.7".parse().unwrap()), "canonical");
    }

    #[test]
    fn plain_http_is_told_from_a_tls_record_at_the_first_byte() {
        for first in *b"GPHDOCT" {
            assert!(looks_like_plain_http(first));
        }
        assert!(!looks_like_plain_http(0x16), "a handshake record");
        assert!(!looks_like_plain_http(0x80), "an SSLv2 hello");
        let body = PLAIN_ON_TLS.split(|b| *b == b'\n').next_back();
        let head = std::str::from_utf8(PLAIN_ON_TLS).unwrap();
        let (_, after) = head.split_once("\r\n\r\n").unwrap();
        assert_eq!(after.len(), 49, "Content-Length");
        assert!(body.is_some());
    }
}
