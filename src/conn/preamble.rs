//! The preamble: what a connection may carry before any transport, the PROXY protocol header
//! (v1 or v2, as HAProxy and AWS NLB send). It is read here, before a transport (TLS, later)
//! starts, because on the wire it comes before a TLS handshake. With `proxy_protocol` on, a
//! peer in `proxy_allow_ips` must start with one (a unix socket's peer, a local process, is
//! taken for the proxy in front); any other peer must not. A header that is missing,
//! malformed or not allowed, or does not arrive within `header_timeout` of the connection's
//! start, closes the connection quietly.
//!
//! [`scan`] is pure (bytes in, a decision out); [`read`] drives it on the socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::io::{AsyncRead, ReadBuf};

/// The signature that starts a PROXY protocol v2 header.
const PROXY_V2: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Whether a connection's peer must send a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// From a peer in `proxy_allow_ips`: a header must come first.
    Header,
    /// From any other peer: a header is refused.
    NoHeader,
}

/// What the first bytes of a connection are, as far as they have been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preamble {
    /// More bytes are needed to tell.
    Incomplete,
    /// A missing or malformed header, or one from a peer not allowed to send it.
    Refused(&'static str),
    /// The preamble is `len` bytes (0 for none); the client's address, if a header gave one
    /// (not for a health check: `LOCAL`, `UNKNOWN`).
    Done { len: usize, source: Option<SocketAddr> },
}

/// Reads a connection's first bytes, `data` (never empty), for a preamble.
pub(crate) fn scan(data: &[u8], expect: Expect) -> Preamble {
    let v1 = b"PROXY ".starts_with(&data[..data.len().min(6)]);
    let v2 = PROXY_V2.starts_with(&data[..data.len().min(12)]);
    if expect == Expect::NoHeader {
        if (v1 && data.len() < 6) || (v2 && data.len() < 12) {
            return Preamble::Incomplete;
        }
        if v1 || v2 {
            return Preamble::Refused("a PROXY header from a peer not in proxy_allow_ips");
        }
        return Preamble::Done { len: 0, source: None };
    }
    let malformed = Preamble::Refused("a missing or malformed PROXY header");
    let parsed = if data.len() >= 6 && data.starts_with(b"PROXY ") {
        parse_v1(data)
    } else if data.len() >= 12 && data.starts_with(&PROXY_V2) {
        parse_v2(data)
    } else if v1 || v2 {
        return Preamble::Incomplete;
    } else {
        return malformed;
    };
    match parsed {
        Parsed::Incomplete => Preamble::Incomplete,
        Parsed::Invalid => malformed,
        Parsed::Header { len, source } => Preamble::Done { len, source },
    }
}

/// A PROXY protocol header, as far as it has been read.
enum Parsed {
    Incomplete,
    Invalid,
    Header { len: usize, source: Option<SocketAddr> },
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n` (at most 107 bytes).
fn parse_v1(data: &[u8]) -> Parsed {
    let Some(end) = data.windows(2).take(107).position(|w| w == b"\r\n") else {
        return if data.len() >= 107 { Parsed::Invalid } else { Parsed::Incomplete };
    };
    let Ok(line) = std::str::from_utf8(&data[..end]) else { return Parsed::Invalid };
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let port = |p: &str| {
                p.bytes().all(|b| b.is_ascii_digit()).then(|| p.parse::<u16>().ok()).flatten()
            };
            let (Ok(src), Ok(_), Some(sport), Some(_)) =
                (src.parse::<IpAddr>(), dst.parse::<IpAddr>(), port(sport), port(dport))
            else {
                return Parsed::Invalid;
            };
            if src.is_ipv4() != (*family == "TCP4") {
                return Parsed::Invalid;
            }
            Some(SocketAddr::new(src, sport))
        }
        _ => return Parsed::Invalid,
    };
    Parsed::Header { len: end + 2, source }
}

/// The binary v2 header: signature, version and command, family, length, addresses.
fn parse_v2(data: &[u8]) -> Parsed {
    if data.len() < 16 {
        return Parsed::Incomplete;
    }
    let len = 16 + u16::from_be_bytes([data[14], data[15]]) as usize;
    if data.len() < len {
        return Parsed::Incomplete;
    }
    let body = &data[16..len];
    let source = match (data[12], data[13]) {
        // LOCAL: the proxy's own connection (a health check).
        (0x20, _) => None,
        (0x21, 0x11) if body.len() >= 12 => {
            let ip = IpAddr::from([body[0], body[1], body[2], body[3]]);
            Some(SocketAddr::new(ip, u16::from_be_bytes([body[8], body[9]])))
        }
        (0x21, 0x21) if body.len() >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            Some(SocketAddr::new(IpAddr::from(octets), u16::from_be_bytes([body[32], body[33]])))
        }
        // UNSPEC, or a unix socket on the proxy's side: no address to report.
        (0x21, 0x00 | 0x31 | 0x32) => None,
        _ => return Parsed::Invalid,
    };
    Parsed::Header { len, source }
}

/// Why a connection ended in its preamble. Every one closes quietly.
#[derive(Debug)]
pub(crate) enum Ended {
    Refused(&'static str),
    /// The client closed, or reading failed.
    Closed,
    /// Nothing whole came within `header_timeout` of the connection's start.
    TimedOut,
}

/// Reads a connection's preamble from `io`, by `deadline` if there is one. On success: the
/// client's address if a header gave one, and the bytes read after the preamble (the start of
/// the first request), for the protocol to read first.
pub(crate) async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    expect: Expect,
    deadline: Option<Instant>,
) -> Result<(Option<SocketAddr>, Vec<u8>), Ended> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let mut buf = ReadBuf::new(&mut chunk);
        let read = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf));
        let read = match deadline {
            Some(at) => {
                tokio::time::timeout_at(at.into(), read).await.map_err(|_| Ended::TimedOut)?
            }
            None => read.await,
        };
        match read {
            Ok(()) if !buf.filled().is_empty() => data.extend_from_slice(buf.filled()),
            _ => return Err(Ended::Closed),
        }
        match scan(&data, expect) {
            Preamble::Incomplete => {}
            Preamble::Refused(why) => return Err(Ended::Refused(why)),
            Preamble::Done { len, source } => {
                data.drain(..len);
                return Ok((source, data));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_are_read_or_refused() {
        use Expect::*;
        let v4 = |ip: [u8; 4], port| Some(SocketAddr::from((ip, port)));
        let v2_tcp4 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x04\x57\x00\x50GET";
        let malformed = Preamble::Refused("a missing or malformed PROXY header");
        let table: &[(&[u8], Expect, Preamble)] = &[
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\nGET",
                Header,
                Preamble::Done { len: 36, source: v4([1, 2, 3, 4], 1111) },
            ),
            (b"PROXY UNKNOWN\r\n", Header, Preamble::Done { len: 15, source: None }),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1111", Header, Preamble::Incomplete),
            (b"PRO", Header, Preamble::Incomplete),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1111 80\r\n", Header, malformed),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 80\r\n", Header, malformed),
            (b"GET / HTTP/1.1\r\n", Header, malformed),
            (v2_tcp4, Header, Preamble::Done { len: 28, source: v4([1, 2, 3, 4], 1111) }),
            (&v2_tcp4[..20], Header, Preamble::Incomplete),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
                Header,
                Preamble::Done { len: 16, source: None },
            ),
            (b"\r\n\r\n\0\r\nQUIT\n\x22\x11\x00\x00", Header, malformed),
            (b"GET / HTTP/1.1\r\n", NoHeader, Preamble::Done { len: 0, source: None }),
            (b"PROX", NoHeader, Preamble::Incomplete),
            (b"\r\n", NoHeader, Preamble::Incomplete),
            (b"\r\nGET", NoHeader, Preamble::Done { len: 0, source: None }),
            (
                b"PROXY TCP4",
                NoHeader,
                Preamble::Refused("a PROXY header from a peer not in proxy_allow_ips"),
            ),
        ];
        for (data, expect, want) in table {
            assert_eq!(
                scan(data, *expect),
                *want,
                "{:?} {expect:?}",
                String::from_utf8_lossy(data)
            );
        }
    }
}
