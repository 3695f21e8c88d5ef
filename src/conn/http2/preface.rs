//! Telling HTTP/2 with prior knowledge (h2c) from HTTP/1 on a cleartext connection: by its
//! first bytes, against HTTP/2's 24-byte preface. The bytes read to tell go back in front of
//! the connection for the protocol that serves it (the transport's `Prefixed`).

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::conn::Protocol;

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a cleartext connection say, as far as they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// A prefix of the preface so far: more bytes will tell.
    Incomplete,
    /// The preface, whole: HTTP/2.
    Http2,
    /// Anything else: HTTP/1 (or garbage, which HTTP/1's gate answers).
    Http1,
}

/// Pure: `early`, the bytes read so far, against the preface. An HTTP/1 request tells at its
/// first byte that differs (every method but `PRI` at the first).
pub(crate) fn sniff(early: &[u8]) -> Sniff {
    let n = early.len().min(PREFACE.len());
    if early[..n] != PREFACE[..n] {
        Sniff::Http1
    } else if n == PREFACE.len() {
        Sniff::Http2
    } else {
        Sniff::Incomplete
    }
}

/// Reads into `early` until it tells the protocol; `None` if the connection ends first (or
/// fails). With bytes already there (from the preamble's read), an HTTP/1 request costs no
/// read at all.
pub(crate) async fn read_until_known<I: AsyncRead + Unpin>(
    io: &mut I,
    early: &mut Vec<u8>,
) -> Option<Protocol> {
    loop {
        if !early.is_empty() {
            match sniff(early) {
                Sniff::Incomplete => {}
                Sniff::Http1 => return Some(Protocol::Http1),
                Sniff::Http2 => return Some(Protocol::Http2),
            }
        }
        let mut chunk = [0u8; 512];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => early.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_tells_at_the_first_byte_that_differs() {
        let table: [(&[u8], Sniff); 7] = [
            (b"G", Sniff::Http1),
            (b"GET / HTTP/1.1\r\n", Sniff::Http1),
            (b"\r\n", Sniff::Http1),
            (b"P", Sniff::Incomplete),
            (b"PRI * HTTP/2.0\r\n", Sniff::Incomplete),
            (b"POST / HTTP/1.1\r\n", Sniff::Http1),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", Sniff::Http2),
        ];
        for (early, expected) in table {
            assert_eq!(sniff(early), expected, "{:?}", String::from_utf8_lossy(early));
        }
        assert_eq!(sniff(PREFACE), Sniff::Http2);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nXX"), Sniff::Http1);
    }
}
