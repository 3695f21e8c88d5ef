//! The gate: every byte a client sends passes through it before hyper sees it, and a request
//! reaches hyper (and the app) only once its head has passed the `[http]` limits and the
//! strict framing rules of RFC 9112. hyper parses well but leaves policy to the server; the
//! gate is that policy, in one place. This file is its IO: reading through the [`Scanner`],
//! and writing (write-ahead, `send_timeout`, pipelined batches, its own answers).
//!
//! The gate holds a request's head back until it is complete, then checks it (see
//! [`super::head`]): CRLF line ends, the request-line and field sizes and count (414, 431) and
//! the head's (431, below what hyper would refuse on its own), the version (505), the target's
//! form and characters (RFC 3986), no `CONNECT` (501), exactly one `Host` in HTTP/1.1,
//! `Content-Length` that is plain digits and not contradicted, no `Content-Length` beside
//! `Transfer-Encoding`, `chunked` last and once, and the body size (413) before the body is
//! read. A head that fails is never seen by hyper: the gate answers it itself, after any
//! response hyper still owes for earlier pipelined requests, and closes; that answer is the
//! request's end event. A few heads pass and are still refused, by hyper with a bare answer
//! of its own (a target `http::Uri` cannot hold: see [`super::head::hyper_refusal`]): their
//! end events are the gate's too, sent when hyper's connection ends with its parse error.
//!
//! It then follows the body's framing to find where the next request starts (see
//! [`super::chunked`]): a malformed body, one over `max_body_size`, or one that stalls for
//! `body_timeout`, ends the input there and is recorded on the connection's [`Link`], so that
//! the response becomes a `400`, `413` or `408` (see [`crate::conn::service`]) or, if it had
//! started, the connection is closed: a handler never gets a truncated body as if it were
//! whole.
//!
//! Timers: `header_timeout` from a head's first byte to its end (408 if anything came, then
//! close), and for a new connection's first request from the connection's start (closed
//! quietly if nothing came); `keepalive` between requests (closed quietly); `body_timeout`
//! between a body's bytes, and `body_min_rate` over stretches longer than that (see
//! [`super::body_rate`]), both from when the app asks for the body (408); `send_timeout` while
//! a response cannot be written because the client is not reading (closed: see `Stall`). A
//! client that ends its side in the middle of a body has sent a truncated request: 400, as for
//! a malformed one.
//!
//! On the way out, the gate writes the responses to a pipelined batch together (hyper flushes
//! after each; see `Gate::hold_back`), and it parks a connection idle between requests: hyper
//! is told the input ended, so that its connection and buffers can go until the next request
//! (see [`Gate::parked`]). It tells the [`Link`] what it writes, and at hyper's flush what it
//! holds back, so that a response is reported complete only once its last byte is written.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use http::{StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::conn::stall::Stall;

use super::link::Link;
use super::scanner::{Limits, Refusal, Scanner, Stop, Wait};
use crate::conn::drain::Slot;
use crate::conn::transport::Facts;
use crate::request_end::{AnsweredBy, Ending, RequestEnd, Target};

pin_project_lite::pin_project! {
    /// A client connection seen through the gate.
    pub(crate) struct Gate<I> {
        #[pin]
        io: I,
        pub(super) s: Scanner,
        // What is known of the connection's ends: for the events of refused requests.
        facts: Rc<Facts>,
        // How much of the gate's own answer is written.
        replied: usize,
        timer: Option<Pin<Box<Sleep>>>,
        eof: bool,
        // When hyper last wrote to the client, and whether the client is not reading (the
        // socket is full): a connection still sending a response is not idle. Before any
        // write, the connection's start: never later, or it would move the first request's
        // `header_timeout` (see `Scanner::deadline`) past a PROXY preamble read before it.
        last_write: Instant,
        // A write happened since `last_write` was read.
        wrote: bool,
        write_blocked: bool,
        // Responses held back while hyper answers more pipelined requests (see `hold_back`),
        // and how much of them is written.
        pub(super) out: Vec<u8>,
        out_written: usize,
        // Handed hyper an end of input to park the connection (see `Gate::parked`).
        parked: bool,
        // A write the client is not reading, for send_timeout.
        stall: Stall,
    }
}

/// What one connection's gate is given.
pub(crate) struct Parts {
    pub(crate) slot: Rc<Slot>,
    pub(crate) link: Rc<Link>,
    pub(crate) facts: Rc<Facts>,
    pub(crate) limits: Rc<Limits>,
    /// When the connection started: its first request's `header_timeout` counts from then.
    pub(crate) since: Instant,
    /// Bytes read after the preamble, the start of the first request.
    pub(crate) early: Vec<u8>,
}

impl<I> Gate<I> {
    pub(crate) fn new(io: I, parts: Parts) -> Self {
        let Parts { slot, link, facts, limits, since, early } = parts;
        let s = Scanner::new(slot, link, limits, since, early);
        Gate {
            io,
            facts,
            replied: 0,
            timer: None,
            eof: false,
            last_write: since,
            wrote: false,
            write_blocked: false,
            out: Vec::new(),
            out_written: 0,
            parked: false,
            stall: Stall::default(),
            s,
        }
    }

    /// Hands a refused request's end to the hooks, once the connection is done with the
    /// gate's answer: whole if it was written, cut if not.
    pub(crate) fn report_refusal(&mut self) {
        let Some(refusal) = self.s.refused.take() else { return };
        let head = self.s.reply.len() as u64 - refusal.body;
        let written = (self.replied as u64).saturating_sub(head);
        let ending =
            if self.replied == self.s.reply.len() { Ending::Complete } else { Ending::Cut };
        self.emit_refusal(&refusal, written, ending);
    }

    /// Hands the end of a head that hyper refused to the hooks, once hyper's connection ended
    /// with `error`: a head the gate let through (see [`super::head::hyper_refusal`]), so it
    /// is the gate's to report. hyper answers the first head it cannot read, the one after
    /// every request it started, and returns its parse error only once its answer is flushed
    /// and the connection shut down (an error in doing so is a shutdown error instead: then
    /// the answer was cut).
    pub(crate) fn report_hyper_refusal(&mut self, error: &hyper::Error) {
        if self.s.limits.sink.is_none() {
            return;
        }
        let number = self.s.slot.started() + 1;
        let foreseen = self.s.foreseen.take().filter(|(n, _)| *n == number).map(|(_, r)| r);
        let (refusal, ending) = match foreseen {
            Some(refusal) if error.is_parse() => (refusal, Ending::Complete),
            Some(refusal) if error.is_shutdown() => (refusal, Ending::Cut),
            None if error.is_parse() => {
                // Not foreseen: hyper's parser found something the gate's rules and
                // `head::hyper_refusal` do not know of. Still one event for the request.
                tracing::debug!("hyper refused a head the gate let through: {error}");
                let status = if error.is_parse_too_large() {
                    StatusCode::URI_TOO_LONG
                } else {
                    StatusCode::BAD_REQUEST
                };
                (Refusal { status, line: None, since: Instant::now(), body: 0 }, Ending::Complete)
            }
            _ => return,
        };
        self.emit_refusal(&refusal, 0, ending);
    }

    fn emit_refusal(&self, refusal: &Refusal, written: u64, ending: Ending) {
        let Some(sink) = self.s.limits.sink.as_ref() else { return };
        let (method, target, version) = match &refusal.line {
            Some((m, t, v)) => (Some(&**m), Target::Raw(t), version(v)),
            None => (None, Target::None, None),
        };
        sink.emit(&RequestEnd {
            method,
            target,
            version,
            status: Some(refusal.status),
            request_body_bytes: 0,
            response_body_bytes: written,
            duration: refusal.since.elapsed(),
            client: self.facts.client_ip(),
            peer: self.facts.client(),
            referer: None,
            user_agent: None,
            request_headers: &[],
            response_headers: &[],
            worker: sink.worker(),
            answered_by: AnsweredBy::Gate,
            ending,
        });
    }
}

/// An HTTP version as a request line writes it, if it is one.
fn version(v: &str) -> Option<Version> {
    Some(match v {
        "HTTP/0.9" => Version::HTTP_09,
        "HTTP/1.0" => Version::HTTP_10,
        "HTTP/1.1" => Version::HTTP_11,
        "HTTP/2.0" => Version::HTTP_2,
        "HTTP/3.0" => Version::HTTP_3,
        _ => return None,
    })
}

impl Scanner {
    /// Whether every request the gate let through has been answered; if not, the gate is
    /// woken when one starts or ends.
    fn answered(&self, heads: u64, waker: &Waker) -> bool {
        if self.slot.started() >= heads && !self.slot.busy() {
            return true;
        }
        self.link.wake_on_request(waker);
        false
    }

    /// Whether the request with this number has been handed to the service; if not, the gate
    /// is woken when a request starts or ends.
    fn dispatched(&self, number: u64, waker: &Waker) -> bool {
        if self.dispatched_now(number) {
            return true;
        }
        self.link.wake_on_request(waker);
        false
    }
}

impl<I: AsyncRead> AsyncRead for Gate<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let g = &mut *this.s;
        loop {
            // Give hyper what is cleared.
            if g.approved > 0 {
                let n = g.approved.min(buf.remaining());
                buf.put_slice(&g.raw[..n]);
                g.raw.drain(..n);
                g.approved -= n;
                g.scanned -= n;
                return Poll::Ready(Ok(()));
            }
            if g.stop.is_some() || *this.eof {
                // End of input. A body that ends early must end now, for hyper to tell the app;
                // otherwise only once hyper has answered every request it was given (hyper
                // gives up a response it owes when input ends between requests).
                let ended = match g.stop {
                    // The broken body's request must be the one hyper is reading.
                    Some(Stop::Body(_)) => g.dispatched(g.heads, cx.waker()),
                    _ => g.answered(g.heads, cx.waker()),
                };
                return if ended { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
            // Read more from the client, through the worker's buffer.
            let mut scratch = g.limits.scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            let polled = this.io.as_mut().poll_read(cx, &mut read);
            let n = read.filled().len();
            g.raw.extend_from_slice(read.filled());
            drop(scratch);
            match polled {
                Poll::Ready(Ok(())) if n == 0 => {
                    *this.eof = true;
                    if g.in_body() && g.stop.is_none() {
                        // The client ended its side with the body unfinished: no more can come,
                        // and the app must not wait for it (nor hold the connection open).
                        g.body_error(StatusCode::BAD_REQUEST);
                    }
                    continue;
                }
                Poll::Ready(Ok(())) => {
                    g.slot.bytes_read(n);
                    // One clock reading for all that this read brought.
                    g.read_at = Instant::now();
                    if g.in_body() {
                        // Body bytes are progress; a head is timed from its first byte.
                        g.since = g.read_at;
                        if let Some(rate) = g.limits.body_rate {
                            // (Bytes of a pipelined request after the body count too, until
                            // its head resets the bucket: harmless.)
                            g.body_wait.read(g.read_at, n as u64, rate);
                        }
                    }
                    g.scan();
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            // Nothing to read. A connection the worker's sweep found idle is parked: hyper is
            // told the input ended, and lets go of its buffers.
            if !*this.parked
                && this.out.is_empty()
                && g.parkable(*this.write_blocked)
                && g.slot.park_due()
            {
                *this.parked = true;
                g.slot.set_parked(true);
                g.raw = Vec::new();
                return Poll::Ready(Ok(()));
            }
            g.slot.remember_task(cx.waker());
            if std::mem::take(this.wrote) {
                // The clock is read for a write only when the gate comes to wait: a busy
                // connection writes once per request, and waits far less often.
                *this.last_write = Instant::now();
            }
            if g.limits.body_rate.is_some()
                && g.body_wait.since.is_none()
                && g.in_body()
                && g.dispatched_now(g.heads)
            {
                // The app wants the body, and the socket is empty: a wait begins.
                g.body_wait.wait(Instant::now());
            }
            // Wait, unless a timer has run out.
            let mut answering = None;
            let deadline = match g.deadline(*this.last_write, *this.write_blocked) {
                Wait::Until(deadline) => deadline,
                Wait::Forever => return Poll::Pending,
                // A request is being answered. hyper may be waiting here already when it ends;
                // rather than be woken at the end of every request (which costs throughput), the
                // gate looks again a keep-alive period after the last read.
                Wait::Answer => match g.limits.keepalive {
                    Some(keepalive) => {
                        answering = Some(keepalive);
                        g.read_at + keepalive
                    }
                    None => return Poll::Pending,
                },
                // Woken when the request is handed to the app, to start the body timer then.
                Wait::Dispatch(n) if !g.dispatched(n, cx.waker()) => return Poll::Pending,
                Wait::Dispatch(_) => continue,
            };
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            // A later deadline does not move the timer (that would cost a timer-wheel update
            // per request on a busy keep-alive connection): it fires early and is moved then.
            // While answering, any timer will do: when it fires, the next look is set from the
            // clock (the last read may be long past).
            if answering.is_none() && timer.deadline() > deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            ready!(timer.as_mut().poll(cx));
            if let Some(keepalive) = answering {
                // Still answering: look again later.
                timer.as_mut().reset((Instant::now() + keepalive).into());
                continue;
            }
            if Instant::now() < deadline {
                timer.as_mut().reset(deadline.into());
                continue;
            }
            *this.timer = None;
            g.timed_out();
        }
    }
}

impl<I> Gate<I> {
    /// Whether the gate parked the connection: idle between requests, it told hyper the input
    /// had ended, so that hyper's connection (with its read and write buffers, 16 KiB) could
    /// be dropped while the client thinks about its next request. The worker then waits on the
    /// gate alone, with no buffer at all, and serves the next request with a new hyper
    /// connection. That is what keeps an idle keep-alive connection to a few hundred bytes.
    pub(crate) fn parked(&self) -> bool {
        self.parked
    }

    /// Ends the parking: a new hyper connection reads from here, or the connection is closed.
    pub(crate) fn unpark(&mut self) {
        self.parked = false;
        self.s.slot.set_parked(false);
    }

    /// Whether a request (or the empty lines before one) is ready for hyper.
    pub(crate) fn has_request(&self) -> bool {
        self.s.approved > 0
    }

    /// Gives back bytes that a parked hyper connection had read but not used: hyper's next
    /// connection reads them first.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        self.s.raw.splice(0..0, bytes.iter().copied());
        self.s.approved += bytes.len();
        self.s.scanned += bytes.len();
    }
}

/// The most response bytes held back for pipelined requests before they are written anyway.
const HOLD_LIMIT: usize = 64 * 1024;

impl<I: AsyncWrite> Gate<I> {
    /// Whether a write may be held back: the response hyper wrote is complete, and hyper holds
    /// the next pipelined request already, which it answers without waiting for the client.
    /// Writing the responses of a pipelined batch together saves a send (and the client a
    /// wake-up) per request: hyper flushes after every response. Its own `pipeline_flush`
    /// setting does the same but buffers a large body whole.
    fn hold_back(&self, more: usize) -> bool {
        self.s.slot.started() < self.s.heads
            && !self.s.slot.busy()
            && self.out.len() + more <= HOLD_LIMIT
    }

    /// Bytes of hyper's output held back and not written yet.
    pub(super) fn held(&self) -> u64 {
        (self.out.len() - self.out_written) as u64
    }

    /// Whether a write joins what was held back, to be sent with it in one write.
    fn joins(&self, more: usize) -> bool {
        !self.out.is_empty() && self.out.len() + more <= HOLD_LIMIT
    }

    /// Writes what was held back.
    pub(super) fn poll_write_out(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while *this.out_written < this.out.len() {
            let polled = this.io.as_mut().poll_write(cx, &this.out[*this.out_written..]);
            let polled = wrote(polled, cx, this.s, this.wrote, this.write_blocked, this.stall);
            match ready!(polled)? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => *this.out_written += n,
            }
        }
        *this.out = Vec::new();
        *this.out_written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Gate<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.hold_back(buf.len()) || self.joins(buf.len()) {
            // Held back, or joined to what was, to be written at the flush.
            let this = self.as_mut().project();
            // Not written yet: still counted as unsent (see `Link::sent`), since it is
            // held in the worker all the same; it is counted off when written.
            this.out.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(self.as_mut().poll_write_out(cx))?;
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        wrote(polled, cx, this.s, this.wrote, this.write_blocked, this.stall)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        if self.hold_back(len) || self.joins(len) {
            let this = self.as_mut().project();
            for buf in bufs {
                this.out.extend_from_slice(buf);
            }
            return Poll::Ready(Ok(len));
        }
        ready!(self.as_mut().poll_write_out(cx))?;
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        wrote(polled, cx, this.s, this.wrote, this.write_blocked, this.stall)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.s.link.waiting() {
            // hyper has given the gate all it holds: the responses it was given end, in the
            // connection's output, after what the gate still holds back.
            self.s.link.flushed(self.held());
        }
        if self.hold_back(0) {
            return Poll::Ready(Ok(()));
        }
        ready!(self.as_mut().poll_write_out(cx))?;
        let this = self.project();
        ready!(this.io.poll_flush(cx))?;
        // hyper flushes once its own buffer is written, and the gate holds nothing back:
        // every byte of a body that hyper was given is written, or was dropped by hyper.
        this.s.link.all_sent();
        Poll::Ready(Ok(()))
    }

    /// Before the connection closes: what was held back, then the gate's own answer to a
    /// refused head, after all that hyper wrote.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.parked {
            // hyper ends its part; the connection stays open.
            return Poll::Ready(Ok(()));
        }
        ready!(self.as_mut().poll_write_out(cx))?;
        let mut this = self.project();
        while *this.replied < this.s.reply.len() {
            let polled = this.io.as_mut().poll_write(cx, &this.s.reply[*this.replied..]);
            let n = ready!(wrote(polled, cx, this.s, this.wrote, this.write_blocked, this.stall))?;
            if n == 0 {
                break;
            }
            *this.replied += n;
        }
        this.io.poll_shutdown(cx)
    }
}

/// Notes a write: progress, which also gives a response body held back for a slow reader
/// room again and tells which responses are written (see `Link::sent`), or a client that is
/// not reading, which fails the write once it has lasted `send_timeout`.
fn wrote(
    polled: Poll<io::Result<usize>>,
    cx: &mut Context<'_>,
    s: &Scanner,
    wrote: &mut bool,
    blocked: &mut bool,
    stall: &mut Stall,
) -> Poll<io::Result<usize>> {
    match &polled {
        Poll::Ready(Ok(n)) => {
            *wrote = true;
            *blocked = false;
            stall.resumed(&s.slot);
            s.link.sent(*n);
            if s.slot.evicted() {
                // Chosen to make room while stalled, and its slot is counted on: a write that
                // then went through does not undo that.
                return stall.poll(cx, s.limits.send_timeout, &s.slot).map(Err);
            }
        }
        Poll::Pending => {
            *blocked = true;
            return stall.poll(cx, s.limits.send_timeout, &s.slot).map(Err);
        }
        Poll::Ready(Err(_)) => {}
    }
    polled
}
