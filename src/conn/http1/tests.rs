//! The gate's tests that need more than one of its parts: the fuzz test over every scanner,
//! and the write side's accounting. Each pure scanner has its own table-driven tests.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;

use super::gate::{Gate, Parts};
use super::head;
use super::link::Link;
use super::scanner::{Limits, Phase, Scanner};
use crate::config::HttpConfig;
use crate::conn::WRITE_AHEAD;
use crate::conn::drain::Conns;
use crate::conn::preamble::{self, Expect};
use crate::conn::service::Exchange;

/// xorshift64*: a fixed seed gives the same inputs on every run, without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A byte, mostly one that means something to the scanners.
    fn byte(&mut self) -> u8 {
        const TELLING: &[u8] = b"\r\n\r\n:; \t%=\"\\/?#*0aF9zZ\x00\x7f\x80\xce\xb4\xe9\xff";
        match self.below(3) {
            0 => self.next() as u8,
            _ => TELLING[self.below(TELLING.len())],
        }
    }
}

/// Valid requests and bodies, the seeds of the mutations.
const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /abcde\xce\xb4 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET https:/\xc3\xa9x HTTP/1.1\r\nHost: t\r\n\r\n",
    b"\r\nGET http://t:80/a?b=%41 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\nCONNECT t:443 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.2\r\nHost: t\r\n\r\n",
    b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\\\"e\"\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-T: v\r\nHost-Y: w\r\n\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x04\x57\x00\x50GET / HTTP/1.1\r\nHost: t\r\n\r\n",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if at < input.len() => input[at] = rng.byte(),
            1 => input.insert(at, rng.byte()),
            2 if at < input.len() => drop(input.remove(at)),
            3 => {
                let end = (at + rng.below(32)).min(input.len());
                let copy = input[at..end].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, copy);
            }
            4 => input.truncate(at),
            // A multi-byte character: only valid UTF-8 gets past httparse into a `&str`.
            5 if rng.below(2) == 0 => {
                let c = ["é", "δ", "€", "😀"][rng.below(4)];
                input.splice(at..at, c.bytes());
            }
            _ => input.extend_from_slice(SEEDS[rng.below(SEEDS.len())]),
        }
    }
}

/// A scanner in its first phase, or in a chunked body's, under default or tiny limits.
fn scanner(rng: &mut Rng) -> Scanner {
    let mut http = HttpConfig::default();
    if rng.below(3) == 0 {
        http.limit_request_line = 1 + rng.below(40) as u64;
        http.limit_request_fields = 1 + rng.below(4) as u64;
        http.limit_request_field_size = rng.below(30) as u64;
        http.max_body_size = rng.below(40) as u64;
    }
    let slot = Rc::clone(Conns::default().open(None).slot());
    let limits = Rc::new(Limits::new(&http, None));
    let mut s = Scanner::new(slot, Rc::default(), limits, Instant::now(), Vec::new());
    if rng.below(3) == 0 {
        s.heads = 1;
        s.phase = Phase::Chunked;
    }
    s
}

/// Feeds `input` in pieces of random size, and takes what is cleared as hyper would.
fn feed(rng: &mut Rng, s: &mut Scanner, input: &[u8]) {
    let mut at = 0;
    while at < input.len() && s.stop.is_none() {
        let n = 1 + rng.below((input.len() - at).min(64));
        s.raw.extend_from_slice(&input[at..at + n]);
        at += n;
        s.scan();
        assert!(s.approved <= s.scanned && s.scanned <= s.raw.len());
        let taken = s.approved;
        s.raw.drain(..taken);
        s.approved = 0;
        s.scanned -= taken;
    }
}

/// No input panics the scanners: arbitrary bytes, and mutations of valid requests, fed to
/// the head and chunk scanners (and so to `check_head`) in pieces of any size, and to the
/// PROXY preamble's. A fixed seed
/// and a bounded count keep it quick and repeatable; a failure prints its input.
#[test]
fn no_input_panics_the_scanners() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    for i in 0..20_000 {
        let mut input = if i % 4 == 0 {
            (0..rng.below(300)).map(|_| rng.byte()).collect()
        } else {
            SEEDS[rng.below(SEEDS.len())].to_vec()
        };
        if i % 4 != 0 && i % 8 != 1 {
            mutate(&mut rng, &mut input);
        }
        let mut s = scanner(&mut rng);
        let seed = rng.0;
        let fed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            feed(&mut rng, &mut s, &input);
            let fields = input.iter().filter(|&&b| b == b'\n').count();
            let _ = head::check_head(&input, fields, rng.below(40) as u64);
            let _ = head::request_line(&input);
            let _ = preamble::scan(&input, Expect::Header);
            let _ = preamble::scan(&input, Expect::NoHeader);
        }));
        assert!(
            fed.is_ok(),
            "iteration {i} (rng state {seed:#x}) panicked on {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

/// A client that reads whatever it is sent.
struct Reader;

impl AsyncWrite for Reader {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Bytes the gate holds back for a pipelined batch are still unwritten: they count against
/// the write-ahead until they are written, and then once only.
#[test]
fn held_back_bytes_count_against_the_write_ahead_once() {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let conns = Conns::default();
    let open = conns.open(None);
    let slot = Rc::clone(open.slot());
    let link = Rc::new(Link::default());
    let parts = Parts {
        slot: Rc::clone(&slot),
        link: Rc::clone(&link),
        facts: Rc::default(),
        limits: Rc::new(Limits::new(&HttpConfig::default(), None)),
        since: Instant::now(),
        early: Vec::new(),
    };
    let mut gate = Gate::new(Reader, parts);
    // The first of two pipelined requests is answered; the second is not started yet.
    gate.s.heads = 2;
    slot.request_started();
    slot.request_finished();
    // Its body, and its response as hyper writes it: held back, to go with the next one.
    link.handed(WRITE_AHEAD);
    let first = vec![b'a'; WRITE_AHEAD + 100];
    assert!(matches!(Pin::new(&mut gate).poll_write(&mut cx, &first), Poll::Ready(Ok(_))));
    assert!(!gate.out.is_empty(), "held back");
    assert!(link.poll_send_room(&mut cx).is_pending(), "held back, yet not counted");
    // The second response: its head joins what is held back, its first frame is in hyper.
    slot.request_started();
    link.handed(WRITE_AHEAD + 4096);
    assert!(matches!(Pin::new(&mut gate).poll_write(&mut cx, &[b'h'; 100]), Poll::Ready(_)));
    assert!(matches!(Pin::new(&mut gate).poll_write_out(&mut cx), Poll::Ready(Ok(()))));
    assert!(gate.out.is_empty());
    // Only the first response and the head were written: the frame still waits in hyper.
    assert!(link.poll_send_room(&mut cx).is_pending(), "written bytes counted twice");
    // hyper writes it and flushes: nothing is left.
    let frame = vec![b'b'; WRITE_AHEAD + 4096];
    assert!(matches!(Pin::new(&mut gate).poll_write(&mut cx, &frame), Poll::Ready(Ok(_))));
    assert!(matches!(Pin::new(&mut gate).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    assert!(link.poll_send_room(&mut cx).is_ready());
}
