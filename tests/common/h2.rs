//! A raw HTTP/2 client, bytes written by hand (mini-redis style): the preface, frames with
//! request heads encoded as HPACK literals (no table, no Huffman), and a frame reader. For the
//! tests that must send what no well-behaved client sends (resets in bursts, CONTINUATION
//! floods) and see exactly which frames come back (GOAWAY, RST_STREAM, SETTINGS); and the
//! nghttp2 tools (`h2load`, `nghttp`) found on PATH, as `prometheus` is.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use super::WAIT;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// GOAWAY's and RST_STREAM's error codes the tests look for.
pub const NO_ERROR: u32 = 0;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's last stream id and error code.
    pub fn goaway(&self) -> Option<(u32, u32)> {
        (self.kind == GOAWAY && self.payload.len() >= 8).then(|| {
            let last = u32::from_be_bytes(self.payload[0..4].try_into().unwrap()) & 0x7fff_ffff;
            (last, u32::from_be_bytes(self.payload[4..8].try_into().unwrap()))
        })
    }

    /// An RST_STREAM's error code.
    pub fn reset(&self) -> Option<u32> {
        (self.kind == RST_STREAM && self.payload.len() == 4)
            .then(|| u32::from_be_bytes(self.payload[..4].try_into().unwrap()))
    }

    /// A SETTINGS frame's values, by id.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes(c[2..6].try_into().unwrap()))
            })
            .collect()
    }

    /// Whether a HEADERS frame's block starts with `:status: 200` (HPACK static index 8, as
    /// h2 writes it).
    pub fn is_200(&self) -> bool {
        self.kind == HEADERS && self.payload.first() == Some(&0x88)
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of `fields`, each a literal without indexing with a new name (RFC 7541
/// §6.2.2): no state in either side's table. Names and values under 127 bytes.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A GET of `path`'s head, whole, ending its stream.
pub fn get(stream: u32, path: &str) -> Vec<u8> {
    let head = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ]);
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &head)
}

/// A connection that has sent the preface and its (empty) SETTINGS.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn open(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw { stream };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        raw.send(&hello);
        raw
    }

    /// Writes `bytes`; false if the server has closed the connection.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next frame; `None` at the end of the connection (EOF or reset).
    pub fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        if let Err(e) = self.stream.read_exact(&mut head) {
            assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "no frame within {WAIT:?}"
            );
            return None;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).ok()?;
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        Some(Frame { kind: head[3], flags: head[4], stream, payload })
    }

    /// Frames until one matches `want`, acknowledging the server's SETTINGS and PINGs on the
    /// way; all of them, the matching one last. Panics if the connection ends first.
    pub fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut seen = Vec::new();
        loop {
            let Some(f) = self.read() else { panic!("the connection ended; frames: {seen:?}") };
            self.ack(&f);
            let done = want(&f);
            seen.push(f);
            if done {
                return seen;
            }
        }
    }

    /// Every frame up to the end of the connection.
    pub fn until_closed(&mut self) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(f) = self.read() {
            self.ack(&f);
            seen.push(f);
        }
        seen
    }

    fn ack(&mut self, f: &Frame) {
        // Ignoring errors: the server may have closed already.
        if f.kind == SETTINGS && f.flags & 1 == 0 {
            let _ = self.stream.write_all(&frame(SETTINGS, 1, 0, &[]));
        } else if f.kind == PING && f.flags & 1 == 0 {
            let _ = self.stream.write_all(&frame(PING, 1, 0, &f.payload));
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }
}

/// `name` from the nghttp2 tools (`h2load`, `nghttp`): its path, or `None` (after saying why)
/// outside CI; panics in CI, where `.ci/run` installs them.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is needed (apt-get install nghttp2-client)"
        );
        eprintln!(
            "SKIPPED: {name} is not on PATH (apt-get install --no-install-recommends \
             nghttp2-client); set CI=1 to make this a failure"
        );
    }
    found
}
