//! The wire under hyper's h2: the connection's bytes pass through here, both ways. Reads go
//! through the frame scanner ([`Scanner`]), which ends the connection on a request body over
//! `max_body_size` or on a flood, resets or control frames beyond the client's budgets (hyper
//! never reads the frame at fault; the connection is told to stop, [`Stop`]), or on a header block
//! left open for `header_timeout` (a read error: no frame can be read meanwhile anyway). Writes that cannot
//! proceed are a stall under `send_timeout` ([`Stall`], as HTTP/1's), which also lets a worker
//! at `worker_connections` reclaim the connection.
//!
//! A request body late for `body_timeout` or `body_min_rate`
//! ([`Uploads`](super::uploads::Uploads), told the windows h2 opens by what is written,
//! [`Scanner::sent`]) ends its stream alone: the wire hands hyper, between two of the
//! client's frames, an empty HEADERS frame without END_STREAM on that stream, as if
//! the client had sent trailers that do not end the body: a malformed message, which h2 answers
//! as RFC 9113 §8.1.1 says, by resetting the stream (`RST_STREAM(PROTOCOL_ERROR)`), with all
//! its bookkeeping (the app's read of the body fails, frames the client still sends on the
//! stream are dropped and their flow control counted). h2 has no API to reset a stream from
//! outside its task.
//!
//! What is written is shown to the scanner too, once: responses pay for the client's control
//! frames, the server's PINGs for its acknowledgements, and the windows h2 opens and the
//! streams it resets are told to the request bodies' pacing. A flood (resets or control frames beyond
//! the client's budget) ends the connection at once: the driver, told by [`Stop`], drops hyper
//! and says the last GOAWAY itself ([`super::goaway`]).

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::frames::{Breach, Scanner};
use crate::conn::drain::Slot;
use crate::conn::stall::Stall;

/// How the wire tells the connection's driver that the scanner found a breach.
#[derive(Default)]
pub(crate) struct Stop {
    notify: Notify,
    breach: Cell<Option<Breach>>,
}

impl Stop {
    /// The breach, once one is found.
    pub(crate) async fn found(&self) -> Breach {
        loop {
            if let Some(breach) = self.breach.get() {
                return breach;
            }
            self.notify.notified().await;
        }
    }

    /// The breach, once one is found and it is a flood; never, if it is not.
    pub(crate) async fn flood(&self) -> Breach {
        let breach = self.found().await;
        if !breach.is_flood() {
            // Nothing more is read: no other breach can come.
            std::future::pending::<()>().await;
        }
        breach
    }

    /// Whether the connection is ending for a request body over `max_body_size`.
    pub(crate) fn body_refused(&self) -> bool {
        matches!(self.breach.get(), Some(Breach::Body(_)))
    }

    fn set(&self, breach: Breach) {
        self.breach.set(Some(breach));
        self.notify.notify_one();
    }
}

/// One connection's wire.
pub(crate) struct Wire<I> {
    io: I,
    scanner: Scanner,
    slot: Rc<Slot>,
    /// `header_timeout`, for a header block left open.
    header_timeout: Option<Duration>,
    /// Armed while a header block is open.
    block_timer: Option<Pin<Box<Sleep>>>,
    /// `send_timeout`.
    send_timeout: Option<Duration>,
    stall: Stall,
    /// Told when the scanner found a breach: the connection is then ended with GOAWAY (at
    /// once on a flood; on a body over the limit, the responses under way are given a moment
    /// to be written), and nothing more is read.
    stop: Rc<Stop>,
    stopped: bool,
    /// Armed for the first request body to be late.
    pace_timer: Option<Pin<Box<Sleep>>>,
}

impl<I> Wire<I> {
    pub(crate) fn new(
        io: I,
        scanner: Scanner,
        slot: Rc<Slot>,
        header_timeout: Option<Duration>,
        send_timeout: Option<Duration>,
        stop: Rc<Stop>,
    ) -> Self {
        Wire {
            io,
            scanner,
            slot,
            header_timeout,
            block_timer: None,
            send_timeout,
            stall: Stall::default(),
            stop,
            stopped: false,
            pace_timer: None,
        }
    }

    /// Ready once the first request body in progress is late.
    fn poll_pace_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.scanner.uploads().deadline() else {
            self.pace_timer = None;
            return Poll::Pending;
        };
        let deadline = deadline.into();
        let timer =
            self.pace_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// Ends the streams whose request bodies are late at `now`, if the client's bytes so far
    /// end between two frames: for each, a frame h2 resets the stream for (see the module's
    /// header), put in `buf`, as many as it has room for. Whether any was.
    fn cut_late(&mut self, buf: &mut ReadBuf<'_>, now: Instant) -> bool {
        if !self.scanner.between_frames()
            || self.scanner.uploads().deadline().is_none_or(|at| at > now)
        {
            return false;
        }
        let late = self.scanner.uploads().late(now, buf.remaining() / CUT.len());
        for &stream in &late {
            tracing::debug!(
                stream,
                "http/2 request body late for body_timeout or body_min_rate, resetting its stream"
            );
            let mut frame = CUT;
            frame[5..].copy_from_slice(&stream.to_be_bytes());
            buf.put_slice(&frame);
        }
        !late.is_empty()
    }

    /// What the wire holds once hyper has let go of it: the connection, and the scanner.
    pub(crate) fn into_parts(self) -> (I, Scanner) {
        (self.io, self.scanner)
    }

    /// An error once a header block has been open for `header_timeout`.
    fn poll_block_timer(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let (Some(since), Some(timeout)) = (self.scanner.block_since(), self.header_timeout) else {
            self.block_timer = None;
            return Poll::Pending;
        };
        let deadline = (since + timeout).into();
        let timer =
            self.block_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!("http/2 header block open for header_timeout, closing");
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "header_timeout reached"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The frame a late body's stream is ended with: HEADERS, an empty block, END_HEADERS without
/// END_STREAM; its stream id goes in the last four bytes.
const CUT: [u8; 9] = [0, 0, 0, 0x1, 0x4, 0, 0, 0, 0];

impl<I: AsyncRead + Unpin> AsyncRead for Wire<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.stopped {
            // Nothing more is read; the connection ends (see `Wire::stop`).
            return Poll::Pending;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                let now = Instant::now();
                if let Err((at, breach)) = this.scanner.feed(read, now) {
                    // What precedes the frame at fault is hyper's (a request's head, which its
                    // layer may refuse: a 413 written while the connection ends); the frame
                    // and all after it are not: the app never reads past the limit.
                    buf.set_filled(before + at);
                    this.stopped = true;
                    if !breach.is_flood() {
                        // A flood is logged by the driver, outside h2's span.
                        tracing::debug!("http/2 connection ending: {}", breach.describe());
                    }
                    this.stop.set(breach);
                    return if at > 0 { Poll::Ready(Ok(())) } else { Poll::Pending };
                }
                if this.slot.closing() {
                    // For the drain, which closes a connection on which nothing comes.
                    this.slot.bytes_read(read.len());
                }
                if let (Some(since), Some(timeout)) =
                    (this.scanner.block_since(), this.header_timeout)
                {
                    // A block that drips in, one small CONTINUATION at a time.
                    if now.duration_since(since) >= timeout {
                        buf.set_filled(before);
                        return this.poll_block_timer(cx).map(Err);
                    }
                }
                if !read.is_empty() {
                    // A late body among busy streams: its timer is only polled while the
                    // socket is empty.
                    this.cut_late(buf, now);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Poll::Ready(e) = this.poll_block_timer(cx) {
                    return Poll::Ready(Err(e));
                }
                if this.poll_pace_timer(cx).is_ready() && this.cut_late(buf, Instant::now()) {
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Wire<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) => {
                this.scanner.sent(&bytes[..n.min(bytes.len())], Instant::now());
                this.stall.resumed(&this.slot);
                if this.slot.evicted() {
                    return this.stall.poll(cx, this.send_timeout, &this.slot).map(Err);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => this.stall.poll(cx, this.send_timeout, &this.slot).map(Err),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
