//! The wire under hyper's h2: the connection's bytes pass through here, both ways. Reads go
//! through the frame scanner ([`Scanner`]), which ends the connection on a request body over
//! `max_body_size` or on a flood (resets, control frames beyond the client's budget): hyper
//! never reads the frame at fault, and the connection's driver is told ([`Stop`]). A header
//! block left open for `header_timeout` is a read error (no frame can be read meanwhile
//! anyway). Writes go through the scanner too (responses pay for control frames), and those
//! that cannot proceed are a stall under `send_timeout` ([`Stall`], as HTTP/1's), which also
//! lets a worker at `worker_connections` reclaim the connection.
//!
//! The wire is shared with the connection's driver, which gets it back once hyper has let go
//! of the connection, to write a GOAWAY of its own ([`Wire::goaway`]): hyper says GOAWAY only
//! with `NO_ERROR` when asked to end a connection, and waits for a PING that a flooding or
//! silent client never answers.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::frames::{Breach, Scanner};
use crate::conn::drain::Slot;
use crate::conn::stall::Stall;

/// GOAWAY's error codes the worker writes itself.
pub(crate) const NO_ERROR: u32 = 0x0;
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How much a closing connection reads (and drops) of what the client still sends, so that
/// its GOAWAY is not lost to the reset a close with unread bytes causes.
const LINGER_READ: usize = 1 << 20;

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

    fn set(&self, breach: Breach) {
        self.breach.set(Some(breach));
        self.notify.notify_one();
    }
}

/// One connection's wire: hyper reads and writes through one handle, the driver keeps
/// another.
pub(crate) struct Wire<I>(Rc<RefCell<Inner<I>>>);

impl<I> Clone for Wire<I> {
    fn clone(&self) -> Self {
        Wire(Rc::clone(&self.0))
    }
}

struct Inner<I> {
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
    /// Told when the scanner found a breach: the connection is then ended with GOAWAY, and
    /// nothing more is read.
    stop: Rc<Stop>,
    stopped: bool,
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
        Wire(Rc::new(RefCell::new(Inner {
            io,
            scanner,
            slot,
            header_timeout,
            block_timer: None,
            send_timeout,
            stall: Stall::default(),
            stop,
            stopped: false,
        })))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Wire<I> {
    /// Once hyper has let go of the connection (this is the last handle): writes a GOAWAY of
    /// the worker's own with `code`, naming the last stream the client opened (all of which
    /// have been served or cut), if what hyper wrote ended where a frame ends; then closes,
    /// reading what the client still sends for a moment, all within `within`.
    pub(crate) async fn goaway(self, code: u32, within: Duration) {
        let Ok(inner) = Rc::try_unwrap(self.0) else { return };
        let Inner { mut io, scanner, .. } = inner.into_inner();
        if !scanner.sent_whole_frames() {
            return;
        }
        let mut frame = vec![0, 0, 8, 0x7, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&scanner.last_stream().to_be_bytes());
        frame.extend_from_slice(&code.to_be_bytes());
        let close = async {
            io.write_all(&frame).await?;
            io.shutdown().await?;
            let mut scratch = [0u8; 16 * 1024];
            let mut read = 0;
            while read < LINGER_READ {
                match io.read(&mut scratch).await? {
                    0 => break,
                    n => read += n,
                }
            }
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(within, close).await;
    }
}

impl<I> Inner<I> {
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

    /// The scanner found `breach`: nothing more is read, and the driver is told (a flood is
    /// logged there, outside h2's span).
    fn breached(&mut self, breach: Breach) {
        self.stopped = true;
        if !breach.is_flood() {
            tracing::debug!("http/2 connection ending: {}", breach.describe());
        }
        self.stop.set(breach);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Wire<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.0.borrow_mut();
        let this = &mut *inner;
        if this.stopped {
            // Nothing more is read; the connection ends (see `Stop`).
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
                    this.breached(breach);
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
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_block_timer(cx).map(Err),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Wire<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.0.borrow_mut();
        let this = &mut *inner;
        match Pin::new(&mut this.io).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) => {
                this.scanner.sent(&bytes[..n]);
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.borrow_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.borrow_mut().io).poll_shutdown(cx)
    }
}
