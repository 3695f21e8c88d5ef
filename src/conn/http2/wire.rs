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
//! client's frames, a PRIORITY frame making that stream depend on itself, which RFC 9113
//! §5.3.1 makes a stream error: h2 resets the stream (`RST_STREAM(PROTOCOL_ERROR)`), with all
//! its bookkeeping (the app's read of the body fails, frames the client still sends on the
//! stream are dropped and their flow control counted). h2 has no API to reset a stream from
//! outside its task. The frame is sound whatever h2 knows of the stream: h2 rejects it while
//! decoding, before looking the stream up, and resets a stream it has already closed or
//! forgotten (one it refused beyond `max_concurrent_streams`, whose refusal is still queued
//! behind a stalled response) as one it holds, never the connection. (An empty HEADERS, seen
//! as malformed trailers, did the same for a stream h2 holds, but one it no longer held was a
//! new stream below its next id to h2: a connection error, `GOAWAY(PROTOCOL_ERROR)`. A
//! RST_STREAM is ignored for such a stream, but a stream h2 holds would then be closed by the
//! client to h2, and DATA the client sends before it learns of the reset a connection error.)
//! A frame can be put in only where the client's bytes end between frames; if they have
//! stopped inside one (or inside a header block) for `body_timeout` while a body is late,
//! h2 can read nothing more on the connection, and it is closed (a read error, as for a header
//! block left open).
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
use super::heads::PRIORITY;
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
    /// Frames put in for late bodies that hyper's buffer had no room for yet: handed on before
    /// any more of the client's bytes (hyper may leave a byte of room).
    cuts: Vec<u8>,
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
            cuts: Vec::new(),
        }
    }

    /// Ready once the first request body in progress is late and a frame can be put in
    /// (true), or once it is late and the client's bytes have stopped for `body_timeout`
    /// where none can (false).
    fn poll_pace_timer(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(mut deadline) = self.scanner.uploads().deadline() else {
            self.pace_timer = None;
            return Poll::Pending;
        };
        let grace = self.scanner.uploads().timeout();
        if let Some(since) = self.scanner.stuck_since() {
            // Bytes that keep coming soon reach a frame's end: the cut waits for it.
            match since.checked_add(grace) {
                Some(stuck) => deadline = deadline.max(stuck),
                None => {
                    self.pace_timer = None;
                    return Poll::Pending;
                }
            }
        }
        let deadline = deadline.into();
        let timer =
            self.pace_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(self.scanner.between_frames()),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ends the streams whose request bodies are late at `now`, if the client's bytes so far
    /// end between two frames: for each, a frame h2 resets the stream for (see the module's
    /// header), put in `buf` as far as it has room, the rest kept for the next reads
    /// ([`Wire::hand_cuts`]). Whether any was.
    fn cut_late(&mut self, buf: &mut ReadBuf<'_>, now: Instant) -> bool {
        if !self.scanner.between_frames()
            || self.scanner.uploads().deadline().is_none_or(|at| at > now)
        {
            return false;
        }
        let late = self.scanner.uploads().late(now, usize::MAX);
        for &stream in &late {
            tracing::debug!(
                stream,
                "http/2 request body late for body_timeout or body_min_rate, resetting its stream"
            );
            self.cuts.extend_from_slice(&cut(stream));
        }
        self.hand_cuts(buf);
        !late.is_empty()
    }

    /// Puts in `buf` what it has room for of the frames kept for late bodies. Whether any
    /// were kept.
    fn hand_cuts(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.cuts.is_empty() {
            return false;
        }
        let n = buf.remaining().min(self.cuts.len());
        buf.put_slice(&self.cuts[..n]);
        self.cuts.drain(..n);
        true
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

/// The frame a late body's `stream` is ended with: PRIORITY (a 5-byte payload: the stream
/// depended on, a weight), no flags, on `stream`, depending on `stream`.
fn cut(stream: u32) -> [u8; 14] {
    let mut frame = [0, 0, 5, PRIORITY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    frame[5..9].copy_from_slice(&stream.to_be_bytes());
    frame[9..13].copy_from_slice(&stream.to_be_bytes());
    frame
}

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
        if buf.remaining() > 0 && this.hand_cuts(buf) {
            // They follow the client's last frame: none of its bytes may come between.
            return Poll::Ready(Ok(()));
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
                match this.poll_pace_timer(cx) {
                    Poll::Ready(true) if this.cut_late(buf, Instant::now()) => Poll::Ready(Ok(())),
                    Poll::Ready(false) => {
                        tracing::debug!(
                            "http/2 request body late for body_timeout or body_min_rate, and the \
                             client's bytes stopped inside a frame or header block: no stream \
                             can be reset alone, closing"
                        );
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "body_timeout reached inside a frame",
                        )))
                    }
                    _ => Poll::Pending,
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::http2::heads::{END_HEADERS, GOAWAY, HEADERS, RST_STREAM, SETTINGS, frame};
    use crate::conn::http2::preface::PREFACE;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Cuts that hyper's buffer has no room for are handed on in the next reads, before any
    /// more of the client's bytes, none dropped.
    #[tokio::test]
    async fn cuts_are_kept_for_a_buffer_with_little_room() {
        use crate::conn::http2::frames::Bounds;
        use crate::conn::http2::uploads::Pace;
        let (io, mut client) = tokio::io::duplex(1 << 16);
        let pace = Pace::new(Duration::from_millis(50), 0, 65_535);
        let scanner = Scanner::new(Bounds { body: 0, resets: 10, tracked: 8, pace });
        let stop = Rc::new(Stop::default());
        let conns = crate::conn::drain::Conns::default();
        let open = conns.open(None);
        let mut wire = Wire::new(io, scanner, Rc::clone(open.slot()), None, None, stop);
        let head = |stream| frame(HEADERS, END_HEADERS, stream, &[0x82, 0x86, 0x84]);
        let mut sent = PREFACE.to_vec();
        sent.extend(head(1));
        sent.extend(head(3));
        client.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        let read = async {
            while got.len() < sent.len() + 2 * 14 {
                let mut room = [0u8; 5];
                let mut buf = ReadBuf::new(&mut room);
                std::future::poll_fn(|cx| Pin::new(&mut wire).poll_read(cx, &mut buf))
                    .await
                    .unwrap();
                got.extend_from_slice(buf.filled());
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.expect("both cuts");
        assert_eq!(got[..sent.len()], sent[..]);
        let mut cuts = [cut(1), cut(3)].concat();
        if got[sent.len() + 8] == 3 {
            cuts = [cut(3), cut(1)].concat();
        }
        assert_eq!(got[sent.len()..], cuts[..]);
    }

    /// h2 itself, as the worker drives it, handed the cut for a stream it holds and for one
    /// it refused (beyond `max_concurrent_streams`, never stored): each stream is reset, the
    /// connection serves on. (An empty HEADERS on the refused stream was a connection error.)
    #[tokio::test]
    async fn the_cut_resets_a_stream_h2_holds_or_refused_never_the_connection() {
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let never = hyper::service::service_fn(|_| {
            std::future::pending::<
                Result<hyper::Response<http_body_util::Empty<bytes::Bytes>>, io::Error>,
            >()
        });
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .max_concurrent_streams(1)
            .serve_connection(hyper_util::rt::TokioIo::new(server), never);
        tokio::spawn(conn);
        // GET / without END_STREAM: a body is to follow. HPACK's static table: :method GET,
        // :scheme http, :path /.
        let head = |stream| frame(HEADERS, END_HEADERS, stream, &[0x82, 0x86, 0x84]);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(head(1));
        bytes.extend(head(3));
        bytes.extend(cut(3));
        bytes.extend(cut(1));
        client.write_all(&bytes).await.unwrap();
        let mut resets = Vec::new();
        let read = async {
            loop {
                let mut head = [0u8; 9];
                client.read_exact(&mut head).await.unwrap();
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0; len];
                client.read_exact(&mut payload).await.unwrap();
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                match head[3] {
                    GOAWAY => panic!("GOAWAY: {payload:?}"),
                    RST_STREAM => resets.push((stream, payload)),
                    _ => {}
                }
                if resets.len() == 3 {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.expect("three resets");
        let code = |c: u32| c.to_be_bytes().to_vec();
        // REFUSED_STREAM, then the cut's PROTOCOL_ERROR for both.
        assert_eq!(resets, [(3, code(7)), (3, code(1)), (1, code(1))]);
    }
}
