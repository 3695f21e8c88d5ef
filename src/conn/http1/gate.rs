//! The gate: every byte a client sends passes through it before hyper sees it, and a request
//! reaches hyper (and the app) only once its head has passed the `[http]` limits and the
//! strict framing rules of RFC 9112. hyper parses well but leaves policy to the server; the
//! gate is that policy, in one place.
//!
//! The gate holds a request's head back until it is complete, then checks it: CRLF line ends,
//! the request-line and field sizes and count (414, 431) and the head's (431, below what hyper
//! would refuse on its own), the version (505), the target's form and characters (RFC 3986),
//! no `CONNECT` (501), exactly one `Host` in HTTP/1.1, `Content-Length` that is plain digits
//! and not contradicted, no `Content-Length` beside `Transfer-Encoding`, `chunked` last and
//! once, and the body size (413) before the body is read. A head that fails is never seen by
//! hyper: the gate answers it itself, after any response hyper still owes for earlier
//! pipelined requests, and closes.
//!
//! It then follows the body's framing to find where the next request starts, checking every
//! chunk-size line, extension, terminator and trailer field as it passes: a malformed body, one
//! over `max_body_size`, or one that stalls for `body_timeout`, ends the input there and is
//! recorded on the connection, so that the response becomes a `400`, `413` or `408` (see
//! [`crate::service`]) or, if it had started, the connection is closed: a handler never gets a
//! truncated body as if it were whole.
//!
//! Timers: `header_timeout` from a head's first byte to its end (408 if anything came, then
//! close), and for a new connection's first request from the connection's start (closed
//! quietly if nothing came); `keepalive` between requests (closed quietly); `body_timeout`
//! between a body's bytes, and `body_min_rate` over stretches longer than that (see
//! [`BodyWait`]), both from when the app asks for the body (408); `send_timeout` while a
//! response cannot be written because the client is not reading (closed: see `Stall`). A
//! client that ends its side in the middle of a body has sent a truncated request: 400, as for
//! a malformed one.
//!
//! On the way out, the gate writes the responses to a pipelined batch together (hyper flushes
//! after each; see `Gate::hold_back`), and it parks a connection idle between requests: hyper
//! is told the input ended, so that its connection and buffers can go until the next request
//! (see [`Gate::parked`]).

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use std::net::{IpAddr, SocketAddr};

use crate::client::AllowList;
use crate::config::HttpConfig;
use crate::shutdown::ConnState;

/// The `[http]` settings, as the gate uses them.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Longest request line, in bytes; `usize::MAX` for no limit.
    line: usize,
    fields: usize,
    /// Longest field line, in bytes; `usize::MAX` for no limit.
    field_size: usize,
    /// Largest body, in bytes; `u64::MAX` for no limit.
    max_body: u64,
    header_timeout: Option<Duration>,
    body_timeout: Option<Duration>,
    /// `body_min_rate` with `body_timeout`; `None` when either is off.
    body_rate: Option<BodyRate>,
    keepalive: Option<Duration>,
    send_timeout: Option<Duration>,
    /// Peers that must (and the only ones that may) start with a PROXY protocol header;
    /// `None` when `proxy_protocol` is off.
    proxy: Option<AllowList>,
    /// The worker's read buffer, shared by its connections (one thread reads at a time), so
    /// that an idle connection holds no buffer and a read zeroes nothing.
    scratch: std::cell::RefCell<Box<[u8]>>,
}

impl Limits {
    pub(crate) fn new(http: &HttpConfig) -> Limits {
        let or_max = |n: u64| if n == 0 { usize::MAX } else { n as usize };
        Limits {
            line: or_max(http.limit_request_line),
            fields: http.limit_request_fields as usize,
            field_size: or_max(http.limit_request_field_size),
            max_body: if http.max_body_size == 0 { u64::MAX } else { http.max_body_size },
            header_timeout: crate::config::ServerConfig::limit(http.header_timeout),
            body_timeout: crate::config::ServerConfig::limit(http.body_timeout),
            body_rate: (http.body_min_rate > 0 && !http.body_timeout.0.is_zero()).then(|| {
                BodyRate { per_second: http.body_min_rate, cap: nanos(http.body_timeout.0) }
            }),
            keepalive: crate::config::ServerConfig::limit(http.keepalive),
            send_timeout: crate::config::ServerConfig::limit(http.send_timeout),
            proxy: http.proxy_protocol.then(|| http.proxy_allow_ips.clone()),
            scratch: std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice()),
        }
    }
}

/// Where the gate is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At the start of a connection with `proxy_protocol` on: a PROXY header is expected
    /// (`required`, from an allowed peer) or refused.
    Proxy { required: bool },
    /// Between requests: the next byte starts a head.
    Idle,
    /// In a head that started at `approved`; `line` is where its current line starts
    /// (relative to the head), `lines` how many lines it has so far.
    Head { line: usize, lines: usize },
    /// In a body of this many more bytes.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
}

/// Where a chunked body's parser is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size: so many hex digits, this value.
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size: extensions, up to CR.
    Ext {
        at: Ext,
        value: u64,
    },
    /// Expecting the LF that ends a chunk-size line.
    SizeLf {
        value: u64,
    },
    /// In chunk data.
    Data(u64),
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// In a trailer section: this line's length, how many lines so far, and whether this
    /// line's colon has been seen.
    Trailer {
        len: usize,
        lines: usize,
        colon: bool,
    },
    /// Expecting the LF that ends a trailer line of this length.
    TrailerLf {
        len: usize,
        lines: usize,
    },
}

/// Where a chunk extension's parser is (RFC 9112 §7.1.1):
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, then CR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size or a value: a `;` must follow.
    Gap,
    /// After a `;`: whitespace, then a name.
    NameStart,
    Name,
    /// Whitespace after a name: `=` or `;` must follow.
    NameGap,
    /// After `=`: whitespace, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    Escaped,
    /// After a quoted string's closing quote.
    Closed,
}

impl Ext {
    /// The state after byte `b`, in the extensions of a chunk of `value` bytes: `None` if `b`
    /// cannot come here.
    fn next(self, b: u8, value: u64) -> Option<Chunk> {
        use Ext::*;
        let ws = b == b' ' || b == b'\t';
        let next = match self {
            Gap | NameStart | NameGap | ValueStart if ws => self,
            Name if ws => NameGap,
            Token | Closed if ws => Gap,
            Gap | Name | NameGap | Token | Closed if b == b';' => NameStart,
            Name | NameGap if b == b'=' => ValueStart,
            Name | Token | Closed if b == b'\r' => return Some(Chunk::SizeLf { value }),
            NameStart | Name if is_tchar(b) => Name,
            ValueStart | Token if is_tchar(b) => Token,
            ValueStart if b == b'"' => Quoted,
            Quoted if b == b'"' => Closed,
            Quoted if b == b'\\' => Escaped,
            // qdtext, and what a backslash may quote.
            Quoted | Escaped if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => Quoted,
            _ => return None,
        };
        Some(Chunk::Ext { at: next, value })
    }
}

/// How long the gate may wait for the client.
enum Wait {
    Until(Instant),
    Forever,
    /// Until the request in progress is answered.
    Answer,
    /// Until hyper hands the request with this number (whose body is arriving) to the app.
    Dispatch(u64),
}

/// Why the gate stopped the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A bad head: answered by the gate with this status, then closed.
    Head(StatusCode),
    /// A bad body: recorded on the connection for the response, then closed.
    Body(StatusCode),
    /// A quiet close (an idle connection timed out).
    Quiet,
}

/// What the gate knows of the client's byte stream.
struct Scanner {
    state: Rc<ConnState>,
    limits: Rc<Limits>,
    /// Bytes read and not yet given to hyper: the first `approved` are cleared for it, the
    /// first `scanned` have been looked at.
    raw: Vec<u8>,
    approved: usize,
    scanned: usize,
    phase: Phase,
    /// Bytes of the current body so far (for max_body_size on chunked bodies).
    body: u64,
    stop: Option<Stop>,
    /// The gate's own answer to a refused head.
    reply: Vec<u8>,
    /// When the current wait (a head, body progress, idleness) began.
    since: Instant,
    /// When the bytes being scanned were read.
    read_at: Instant,
    /// The waiting the current body's client may still cause, for `body_min_rate`.
    body_wait: BodyWait,
    /// No request has started on this connection yet.
    first: bool,
    /// Heads let through to hyper.
    heads: u64,
    /// Bytes of empty lines since the last head (see [`BLANK_LIMIT`]).
    blank: usize,
    /// Bytes of chunk extensions and of trailers in the current body (hyper allows 16 KiB of
    /// each; the gate less, so that it refuses first).
    extensions: usize,
    trailers: usize,
    /// The current trailer field's name, lowercased, as far as [`FIELD_NAME_MAX`] bytes: the
    /// bytes themselves may have gone to hyper before the name ends.
    field: [u8; FIELD_NAME_MAX],
    /// The current request closes the connection after its response (HTTP/1.0 without
    /// keep-alive, `Connection: close`): nothing after it is read.
    closing: bool,
}

pin_project_lite::pin_project! {
    /// A client connection seen through the gate.
    pub(crate) struct Gate<I> {
        #[pin]
        io: I,
        s: Scanner,
        // How much of the gate's own answer is written.
        replied: usize,
        timer: Option<Pin<Box<Sleep>>>,
        eof: bool,
        // When hyper last wrote to the client, and whether the client is not reading (the
        // socket is full): a connection still sending a response is not idle.
        last_write: Instant,
        // A write happened since `last_write` was read.
        wrote: bool,
        write_blocked: bool,
        // Responses held back while hyper answers more pipelined requests (see `hold_back`),
        // and how much of them is written.
        out: Vec<u8>,
        out_written: usize,
        // Handed hyper an end of input to park the connection (see `Gate::parked`).
        parked: bool,
        // A write the client is not reading, for send_timeout.
        stall: Stall,
    }
}

/// The waiting a body's client may still cause, for `body_min_rate`: a token bucket of
/// waiting time. `body_timeout` bounds each wait, but a client that sends a byte just within
/// every `body_timeout` would otherwise never be late. The credit starts at `body_timeout`;
/// each byte received adds `1 / body_min_rate` s, up to `body_timeout`; the time the gate
/// waits on an empty socket while the app wants the body is taken off; when it runs out, 408.
/// So an early burst banks at most `body_timeout` of waiting, and over any stretch of L seconds
/// of waiting the client must send at least `body_min_rate` × (L − `body_timeout`) bytes. (Averaging over the whole body, as
/// Kestrel's `MinRequestBodyDataRate` or Apache's `MinRate` without a maximum do, lets a
/// megabyte sent at once buy over an hour of trickling at 240 B/s.) Only waits count: an app
/// that reads slowly holds its client back, and that is not the client's fault.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct BodyWait {
    /// Nanoseconds of waiting left, as of the last read, or of `since` while waiting.
    credit: u64,
    /// When the current wait began.
    since: Option<Instant>,
}

/// What [`BodyWait`]'s bucket is made of.
#[derive(Debug, Clone, Copy)]
struct BodyRate {
    /// `body_min_rate`, in bytes per second: never 0.
    per_second: u64,
    /// `body_timeout` in nanoseconds: the credit a body starts with, and the most it may hold.
    /// A year at most (see `Seconds`), so that a deadline from it cannot overflow.
    cap: u64,
}

impl BodyWait {
    /// A new body's: a full bucket.
    fn full(rate: BodyRate) -> BodyWait {
        BodyWait { credit: rate.cap, since: None }
    }

    /// The socket is empty while the app wants the body: a wait begins, unless one has.
    fn wait(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// `bytes` of the body were read at `now`: the wait they end is taken off the credit, then
    /// their worth is added, up to the cap. A division and a few saturating operations: this
    /// runs on every read of a body.
    fn read(&mut self, now: Instant, bytes: u64, rate: BodyRate) {
        if let Some(since) = self.since.take() {
            self.credit = self.credit.saturating_sub(nanos(now.saturating_duration_since(since)));
        }
        let earned = bytes.saturating_mul(1_000_000_000) / rate.per_second;
        self.credit = self.credit.saturating_add(earned).min(rate.cap);
    }

    /// When the current wait uses up the credit, if the gate is waiting.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + Duration::from_nanos(self.credit))
    }
}

/// A duration in nanoseconds, saturated (a year is 3.2e16 of them; `u64` holds 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A response that cannot be written because the client is not reading: since when, and the
/// timer that closes the connection `send_timeout` later, unless a write makes progress first.
/// A worker at `worker_connections` may close it sooner, for a new connection (see
/// `Shutdown::reclaim_slot`).
#[derive(Default)]
struct Stall {
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    /// After a write that could not proceed: an error once `timeout` has passed since the first
    /// such write without progress in between, or once the worker needs the connection's slot.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Option<Duration>,
        state: &Rc<ConnState>,
    ) -> Poll<io::Error> {
        if state.evicted() {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed for a new connection: worker_connections reached, and the client is \
                 not reading",
            ));
        }
        let since = *self.since.get_or_insert_with(|| {
            let now = Instant::now();
            state.write_stalled(now, cx.waker());
            now
        });
        let Some(timeout) = timeout else { return Poll::Pending };
        let deadline = (since + timeout).into();
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        tracing::debug!("send_timeout reached: the client is not reading, closing");
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "send_timeout reached"))
    }
}

impl Scanner {
    fn new(state: Rc<ConnState>, limits: Rc<Limits>) -> Scanner {
        let phase = match (&limits.proxy, state.peer()) {
            (Some(allowed), Some(peer)) => Phase::Proxy { required: allowed.allows(peer.ip()) },
            // A unix socket's peer is a local process: the proxy in front, if any.
            (Some(_), None) => Phase::Proxy { required: true },
            (None, _) => Phase::Idle,
        };
        let now = Instant::now();
        Scanner {
            state,
            limits,
            raw: Vec::new(),
            approved: 0,
            scanned: 0,
            phase,
            body: 0,
            stop: None,
            reply: Vec::new(),
            since: now,
            read_at: now,
            body_wait: BodyWait::default(),
            first: true,
            heads: 0,
            blank: 0,
            extensions: 0,
            trailers: 0,
            field: [0; FIELD_NAME_MAX],
            closing: false,
        }
    }
}

impl<I> Gate<I> {
    pub(crate) fn new(io: I, state: Rc<ConnState>, limits: Rc<Limits>) -> Self {
        let s = Scanner::new(state, limits);
        Gate {
            io,
            replied: 0,
            timer: None,
            eof: false,
            last_write: s.read_at,
            wrote: false,
            write_blocked: false,
            out: Vec::new(),
            out_written: 0,
            parked: false,
            stall: Stall::default(),
            s,
        }
    }
}

/// The most bytes of chunk extensions, and of trailers, in one body.
const EXTENSIONS_LIMIT: usize = 8 * 1024;
const TRAILERS_LIMIT: usize = 8 * 1024;
/// The largest head, whatever the limits say (0 means no limit per line, not no limit at all;
/// and 100 fields of 8190 bytes would be 800 KB): 431 beyond. hyper refuses a head that does
/// not fit in its read buffer ([`HYPER_BUFFER`]) with a bare 431 of its own; the gate's cap,
/// with the empty lines it lets before a head, stays below that, so that the client always
/// gets the gate's answer.
const HEAD_LIMIT: usize = 384 * 1024;
/// The most bytes of empty lines before a request line (RFC 9112 §2.2 asks a server to ignore
/// at least one CRLF there): 400 beyond. They reach hyper's read buffer with the head.
const BLANK_LIMIT: usize = 64;
/// hyper's `max_buf_size`, which the worker sets: its read buffer must hold the largest head
/// the gate lets through. (It also bounds how much of a response hyper copies into its write
/// buffer.) hyper's default, 8 KiB + 400 KiB.
pub(crate) const HYPER_BUFFER: usize = 8192 + 4096 * 100;
const _: () = assert!(HEAD_LIMIT + BLANK_LIMIT < HYPER_BUFFER);
/// The longest trailer field name the gate refuses (`transfer-encoding`).
const FIELD_NAME_MAX: usize = 17;
/// Fields refused in a trailer section: framing and routing, which a front end that merges
/// trailers into the head would act on (RFC 9110 §6.5.1).
const FORBIDDEN_TRAILERS: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];

/// How much the gate reads from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

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
                    Some(Stop::Body(_)) => g.state.dispatched(g.heads, cx.waker()),
                    _ => g.state.answered(g.heads, cx.waker()),
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
                    if matches!(g.phase, Phase::Length(_) | Phase::Chunked(_)) && g.stop.is_none() {
                        // The client ended its side with the body unfinished: no more can come,
                        // and the app must not wait for it (nor hold the connection open).
                        g.body_error(StatusCode::BAD_REQUEST);
                    }
                    continue;
                }
                Poll::Ready(Ok(())) => {
                    g.state.bytes_read(n);
                    // One clock reading for all that this read brought.
                    g.read_at = Instant::now();
                    if matches!(g.phase, Phase::Length(_) | Phase::Chunked(_)) {
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
                && g.state.park_due()
            {
                *this.parked = true;
                g.raw = Vec::new();
                return Poll::Ready(Ok(()));
            }
            g.state.remember_task(cx.waker());
            if std::mem::take(this.wrote) {
                // The clock is read for a write only when the gate comes to wait: a busy
                // connection writes once per request, and waits far less often.
                *this.last_write = Instant::now();
            }
            if g.limits.body_rate.is_some()
                && g.body_wait.since.is_none()
                && matches!(g.phase, Phase::Length(_) | Phase::Chunked(_))
                && g.state.dispatched_now(g.heads)
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
                Wait::Dispatch(n) if !g.state.dispatched(n, cx.waker()) => return Poll::Pending,
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

impl Scanner {
    /// Whether hyper may be let go: between requests, every one answered, nothing read that
    /// hyper has not had, and the last response written out.
    fn parkable(&self, write_blocked: bool) -> bool {
        self.phase == Phase::Idle
            && !self.first
            && self.stop.is_none()
            && self.approved == 0
            && self.raw.is_empty()
            && !write_blocked
            && self.state.answered_now(self.heads)
    }

    /// When the current wait times out, if it does. `last_write` and `write_blocked` say
    /// whether a response is still being sent.
    fn deadline(&self, last_write: Instant, write_blocked: bool) -> Wait {
        let limits = &self.limits;
        let body = matches!(self.phase, Phase::Length(_) | Phase::Chunked(_));
        let wait = match self.phase {
            Phase::Head { .. } | Phase::Proxy { .. } => limits.header_timeout,
            Phase::Idle if self.first => limits.header_timeout,
            // A request is being answered: the keep-alive wait starts once it is, and its
            // response has reached the client.
            Phase::Idle if self.state.busy() => return Wait::Answer,
            Phase::Idle if write_blocked => return Wait::Forever,
            Phase::Idle => limits.keepalive,
            // A body is only late once the app wants it (hyper answers 100-continue then).
            _ if body
                && limits.body_timeout.is_some()
                && !self.state.dispatched_now(self.heads) =>
            {
                return Wait::Dispatch(self.heads);
            }
            _ => limits.body_timeout,
        };
        let Some(wait) = wait else { return Wait::Forever };
        let since = match self.phase {
            // The last response ended with its last write.
            Phase::Idle => self.since.max(last_write),
            _ if body => self.since.max(self.state.started_at()).max(last_write),
            _ => self.since,
        };
        let mut deadline = since + wait;
        if let (true, Some(out)) = (body, self.body_wait.deadline()) {
            // The body's waiting credit runs out sooner (see `BodyWait`).
            deadline = deadline.min(out);
        }
        Wait::Until(deadline)
    }

    fn timed_out(&mut self) {
        match self.phase {
            Phase::Proxy { .. } => self.stop = Some(Stop::Quiet),
            Phase::Head { .. } => self.reject(StatusCode::REQUEST_TIMEOUT),
            Phase::Idle => self.stop = Some(Stop::Quiet),
            Phase::Length(_) | Phase::Chunked(_) => self.body_error(StatusCode::REQUEST_TIMEOUT),
        }
    }

    /// Looks at the bytes read since the last scan, clearing for hyper what passes.
    fn scan(&mut self) {
        while self.scanned < self.raw.len() && self.stop.is_none() {
            match self.phase {
                Phase::Proxy { required } => {
                    if !self.scan_proxy(required) {
                        return;
                    }
                }
                Phase::Idle => {
                    // Empty lines before a request-line are ignored (RFC 9112 §2.2); hyper does.
                    let b = self.raw[self.scanned];
                    self.scanned += 1;
                    if b == b'\r' || b == b'\n' {
                        self.blank += 1;
                        if self.blank > BLANK_LIMIT {
                            self.reject(StatusCode::BAD_REQUEST);
                            return;
                        }
                        self.approved = self.scanned;
                    } else {
                        self.blank = 0;
                        self.phase = Phase::Head { line: 0, lines: 0 };
                        self.since = self.read_at;
                        self.first = false;
                    }
                }
                Phase::Head { line, lines } => self.scan_head(line, lines),
                Phase::Length(left) => {
                    let n = left.min((self.raw.len() - self.scanned) as u64);
                    self.scanned += n as usize;
                    self.approved = self.scanned;
                    self.phase = if n == left { Phase::Idle } else { Phase::Length(left - n) };
                    if n == left {
                        self.end_of_request();
                    }
                }
                Phase::Chunked(chunk) => self.scan_chunked(chunk),
            }
        }
    }

    /// Reads a PROXY protocol header (v1 or v2) at the start of the connection, taking the
    /// client's address from it; one that is malformed, or from a peer not allowed to send one,
    /// closes the connection. False while more bytes are needed.
    fn scan_proxy(&mut self, required: bool) -> bool {
        let data = &self.raw[self.approved..];
        let v1 = b"PROXY ".starts_with(&data[..data.len().min(6)]);
        let v2 = PROXY_V2.starts_with(&data[..data.len().min(12)]);
        if !required {
            if (v1 && data.len() < 6) || (v2 && data.len() < 12) {
                return false;
            }
            if (v1 && data.len() >= 6) || (v2 && data.len() >= 12) {
                tracing::debug!("a PROXY header from a peer not in proxy_allow_ips");
                self.stop = Some(Stop::Quiet);
            }
            self.phase = Phase::Idle;
            return self.stop.is_none();
        }
        let parsed = if data.len() >= 6 && data.starts_with(b"PROXY ") {
            parse_proxy_v1(data)
        } else if data.len() >= 12 && data.starts_with(&PROXY_V2) {
            parse_proxy_v2(data)
        } else if v1 || v2 {
            Proxied::Incomplete
        } else {
            Proxied::Invalid
        };
        match parsed {
            Proxied::Incomplete => {
                self.scanned = self.raw.len();
                false
            }
            Proxied::Invalid => {
                tracing::debug!("a missing or malformed PROXY header");
                self.stop = Some(Stop::Quiet);
                false
            }
            Proxied::Header { len, source } => {
                if let Some(source) = source {
                    self.state.set_peer(source);
                }
                self.raw.drain(self.approved..self.approved + len);
                self.scanned = self.approved;
                self.phase = Phase::Idle;
                true
            }
        }
    }

    /// Scans head bytes up to the end of the head or of what was read, a line at a time.
    fn scan_head(&mut self, mut line: usize, mut lines: usize) {
        let head_start = self.approved;
        let (line_limit, field_limit, fields_limit) =
            (self.limits.line, self.limits.field_size, self.limits.fields);
        // The longest a line may be, with its CR, so far as `lines` says which line it is.
        let too_long = |lines: usize, len: usize| {
            if lines == 0 {
                (len > line_limit.saturating_add(1)).then_some(StatusCode::URI_TOO_LONG)
            } else {
                (len > field_limit.saturating_add(1))
                    .then_some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
        };
        loop {
            let Some(i) = memchr::memchr(b'\n', &self.raw[self.scanned..]) else {
                // The line goes on: one that is already too long is refused without waiting
                // for its end.
                self.scanned = self.raw.len();
                let at = self.scanned - head_start;
                if let Some(status) = too_long(lines, at - line) {
                    return self.reject(status);
                }
                if at > HEAD_LIMIT {
                    return self.reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                }
                self.phase = Phase::Head { line, lines };
                return;
            };
            // `at` is the newline's place in the head.
            let at = self.scanned + i - head_start;
            self.scanned += i + 1;
            if let Some(status) = too_long(lines, at - line) {
                return self.reject(status);
            }
            if at >= HEAD_LIMIT {
                return self.reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            // Every line ends with CRLF. RFC 9112 §2.2 lets a recipient take a bare LF for one,
            // but a front end that does not would read `X: a\nContent-Length: 5` as one field:
            // the two would disagree on where the request ends.
            if at == line || self.raw[head_start + at - 1] != b'\r' {
                return self.reject(StatusCode::BAD_REQUEST);
            }
            let len = at - line - 1;
            if lines == 0 && len > line_limit {
                return self.reject(StatusCode::URI_TOO_LONG);
            }
            if lines > 0 && len == 0 {
                return self.end_of_head(lines - 1);
            }
            if lines > 0 && len > field_limit {
                return self.reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            lines += 1;
            if lines - 1 > fields_limit {
                return self.reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            line = at + 1;
        }
    }

    /// A complete head: checks it, and either clears it for hyper or refuses it.
    fn end_of_head(&mut self, fields: usize) {
        accept_minor_versions(&mut self.raw[self.approved..self.scanned]);
        let head = &self.raw[self.approved..self.scanned];
        match check_head(head, fields, &self.limits) {
            Ok((framing, closing)) => {
                self.approved = self.scanned;
                self.heads += 1;
                self.body = 0;
                self.extensions = 0;
                self.trailers = 0;
                self.closing = closing;
                self.since = self.read_at;
                // Full: whatever of the body this read brought with the head could add none.
                self.body_wait = self.limits.body_rate.map(BodyWait::full).unwrap_or_default();
                if !matches!(framing, Framing::None | Framing::Length(0)) {
                    self.state.expect_body(self.heads);
                }
                self.phase = match framing {
                    Framing::None | Framing::Length(0) => Phase::Idle,
                    Framing::Length(n) => Phase::Length(n),
                    Framing::Chunked => Phase::Chunked(Chunk::Size { digits: 0, value: 0 }),
                };
                if self.phase == Phase::Idle {
                    self.end_of_request();
                }
            }
            Err(status) => self.reject(status),
        }
    }

    /// A request's last byte has been read. After one that closes the connection, nothing more
    /// is read: a request after it would be answered inside or after a response that ends
    /// with the connection.
    fn end_of_request(&mut self) {
        if self.closing {
            self.stop = Some(Stop::Quiet);
            self.raw.truncate(self.approved);
            self.scanned = self.approved;
        }
    }

    /// Refuses a head: hyper never sees it; the gate answers after whatever hyper still writes.
    fn reject(&mut self, status: StatusCode) {
        tracing::debug!(status = status.as_u16(), "request refused by the gate");
        self.stop = Some(Stop::Head(status));
        self.raw.truncate(self.approved);
        self.scanned = self.approved;
        let reason = status.canonical_reason().unwrap_or("Error");
        self.reply = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        status.as_u16(),
        reason.len() + 1
    )
    .into_bytes();
    }

    /// A body that cannot be read whole: what was valid goes on, then the input ends, and the
    /// response says why (if it has not started).
    fn body_error(&mut self, status: StatusCode) {
        tracing::debug!(status = status.as_u16(), "request body refused by the gate");
        self.stop = Some(Stop::Body(status));
        self.raw.truncate(self.approved);
        self.scanned = self.approved;
        self.state.set_body_error(self.heads, status);
    }

    /// Scans chunked-body bytes (RFC 9112 §7.1), strictly: CRLF line ends, hex sizes.
    fn scan_chunked(&mut self, mut chunk: Chunk) {
        let limits = Rc::clone(&self.limits);
        while self.scanned < self.raw.len() {
            if let Chunk::Data(left) = chunk {
                let n = left.min((self.raw.len() - self.scanned) as u64);
                self.scanned += n as usize;
                self.approved = self.scanned;
                chunk = if n == left { Chunk::DataCr } else { Chunk::Data(left - n) };
                continue;
            }
            let b = self.raw[self.scanned];
            self.scanned += 1;
            let next = match chunk {
                Chunk::Size { digits, value } => match (b as char).to_digit(16) {
                    // 16 digits at most: the value fits in a u64.
                    Some(d) if digits < 16 => {
                        Some(Chunk::Size { digits: digits + 1, value: value << 4 | u64::from(d) })
                    }
                    Some(_) => None,
                    // The size is complete: it counts against max_body_size.
                    None if digits == 0 => None,
                    None => {
                        self.body = self.body.saturating_add(value);
                        match b {
                            b'\r' => Some(Chunk::SizeLf { value }),
                            b';' => Some(Chunk::Ext { at: Ext::NameStart, value }),
                            b' ' | b'\t' => Some(Chunk::Ext { at: Ext::Gap, value }),
                            _ => None,
                        }
                    }
                },
                Chunk::Ext { at, value } => {
                    self.extensions += 1;
                    if self.extensions > EXTENSIONS_LIMIT { None } else { at.next(b, value) }
                }
                Chunk::SizeLf { value } => match b {
                    b'\n' if value == 0 => Some(Chunk::Trailer { len: 0, lines: 0, colon: false }),
                    b'\n' => Some(Chunk::Data(value)),
                    _ => None,
                },
                Chunk::DataCr => (b == b'\r').then_some(Chunk::DataLf),
                Chunk::DataLf => (b == b'\n').then_some(Chunk::Size { digits: 0, value: 0 }),
                Chunk::Trailer { len, lines, colon } => {
                    self.trailers += 1;
                    match b {
                        _ if self.trailers > TRAILERS_LIMIT || len >= limits.field_size => None,
                        // A field line: a token, a colon, a value (RFC 9112 §7.1.2, §5).
                        b'\r' if len == 0 || colon => Some(Chunk::TrailerLf { len, lines }),
                        b':' if !colon && len > 0 => {
                            let name = &self.field[..len.min(FIELD_NAME_MAX)];
                            (len > FIELD_NAME_MAX || !FORBIDDEN_TRAILERS.contains(&name))
                                .then_some(Chunk::Trailer { len: len + 1, lines, colon: true })
                        }
                        _ if !colon && is_tchar(b) => {
                            if let Some(c) = self.field.get_mut(len) {
                                *c = b.to_ascii_lowercase();
                            }
                            Some(Chunk::Trailer { len: len + 1, lines, colon })
                        }
                        b'\t' | 0x20..=0x7e | 0x80..=0xff if colon => {
                            Some(Chunk::Trailer { len: len + 1, lines, colon })
                        }
                        _ => None,
                    }
                }
                Chunk::TrailerLf { len: 0, .. } if b == b'\n' => {
                    // The end of the body.
                    self.approved = self.scanned;
                    self.phase = Phase::Idle;
                    self.end_of_request();
                    return;
                }
                Chunk::TrailerLf { lines, .. } if b == b'\n' && lines < limits.fields.min(100) => {
                    Some(Chunk::Trailer { len: 0, lines: lines + 1, colon: false })
                }
                Chunk::TrailerLf { .. } | Chunk::Data(_) => None,
            };
            match next {
                Some(c) => chunk = c,
                None => return self.body_error(StatusCode::BAD_REQUEST),
            }
            if self.body > limits.max_body {
                return self.body_error(StatusCode::PAYLOAD_TOO_LARGE);
            }
            // Framing bytes go to hyper as they pass: it parses them too.
            self.approved = self.scanned;
        }
        self.phase = Phase::Chunked(chunk);
    }
}

/// The signature that starts a PROXY protocol v2 header.
const PROXY_V2: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol header, as far as it has been read.
enum Proxied {
    Incomplete,
    Invalid,
    /// A header of `len` bytes; the client's address, unless it is a health check (`LOCAL`,
    /// `UNKNOWN`).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n` (at most 107 bytes).
fn parse_proxy_v1(data: &[u8]) -> Proxied {
    let Some(end) = data.windows(2).take(107).position(|w| w == b"\r\n") else {
        return if data.len() >= 107 { Proxied::Invalid } else { Proxied::Incomplete };
    };
    let Ok(line) = std::str::from_utf8(&data[..end]) else { return Proxied::Invalid };
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
                return Proxied::Invalid;
            };
            if src.is_ipv4() != (*family == "TCP4") {
                return Proxied::Invalid;
            }
            Some(SocketAddr::new(src, sport))
        }
        _ => return Proxied::Invalid,
    };
    Proxied::Header { len: end + 2, source }
}

/// The binary v2 header: signature, version and command, family, length, addresses.
fn parse_proxy_v2(data: &[u8]) -> Proxied {
    if data.len() < 16 {
        return Proxied::Incomplete;
    }
    let len = 16 + u16::from_be_bytes([data[14], data[15]]) as usize;
    if data.len() < len {
        return Proxied::Incomplete;
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
        _ => return Proxied::Invalid,
    };
    Proxied::Header { len, source }
}

/// How a request's body is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Checks a complete head (RFC 9110, RFC 9112): what a request must be for hyper and the app
/// to see it.
fn check_head(head: &[u8], fields: usize, limits: &Limits) -> Result<(Framing, bool), StatusCode> {
    let bad = StatusCode::BAD_REQUEST;
    // Most heads have a few fields: those are parsed without an allocation.
    let mut few = [httparse::EMPTY_HEADER; 32];
    let mut many = Vec::new();
    let headers = if fields <= few.len() {
        &mut few[..fields]
    } else {
        many.resize(fields, httparse::EMPTY_HEADER);
        &mut many[..]
    };
    let mut req = httparse::Request::new(headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad),
        Err(httparse::Error::Version) => return Err(version_error(head)),
        Err(_) => return Err(bad),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad);
    };
    if !valid_target(target.as_bytes(), method) {
        return Err(bad);
    }
    if method == "CONNECT" {
        // A tunnel is not something forkserve serves (RFC 9110 §9.3.6). 501 rather than 405:
        // no resource here could allow it. Closing after the answer matters: what the client
        // sends next may be tunnel bytes, which must not be read as a request.
        return Err(StatusCode::NOT_IMPLEMENTED);
    }
    let mut hosts = 0;
    let mut keep_alive = version == 1;
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut codings: Vec<String> = Vec::new();
    let mut te = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(h.value) {
                return Err(bad);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // A list ("5, 5") is refused rather than rewritten (RFC 9110 §8.6 allows either).
            lengths.push(trim(h.value));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            let value = std::str::from_utf8(h.value).map_err(|_| bad)?;
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        } else if name.eq_ignore_ascii_case("connection") {
            for option in h.value.split(|&b| b == b',').map(trim) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        }
    }
    // HTTP/1.1 needs exactly one Host; HTTP/1.0 at most one (RFC 9112 §3.2).
    if hosts > 1 || (version == 1 && hosts == 0) {
        return Err(bad);
    }
    if te {
        // Both framings at once is how requests are smuggled (RFC 9112 §6.1): refused.
        if !lengths.is_empty() || version == 0 {
            return Err(bad);
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        if codings.last().map(String::as_str) != Some("chunked") || chunked != 1 {
            return Err(bad);
        }
        if codings.iter().any(|c| !c.bytes().all(is_tchar)) {
            return Err(bad);
        }
        if codings.len() > 1 {
            // gzip, deflate…: framing is fine, but the gate does not decode them.
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        return Ok((Framing::Chunked, !keep_alive));
    }
    let Some(first) = lengths.first() else { return Ok((Framing::None, !keep_alive)) };
    // Plain digits, and every value the same (RFC 9110 §8.6).
    if lengths.iter().any(|l| l.is_empty() || !l.iter().all(u8::is_ascii_digit) || l != first) {
        return Err(bad);
    }
    let n: u64 = std::str::from_utf8(first).ok().and_then(|s| s.parse().ok()).ok_or(bad)?;
    if n > limits.max_body {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Ok((Framing::Length(n), !keep_alive))
}

/// A request of a later HTTP/1 minor version is answered as HTTP/1.1 (RFC 9110 §2.5,
/// RFC 9112 §2.3): its version is rewritten, in place, before the head is parsed.
fn accept_minor_versions(head: &mut [u8]) {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = &mut head[..end];
    let line = match line.last() {
        Some(b'\r') => {
            let n = line.len() - 1;
            &mut line[..n]
        }
        _ => line,
    };
    if let [.., b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] = line {
        if (b'2'..=b'9').contains(minor) {
            *minor = b'1';
        }
    }
}

/// 505 for a well-formed version other than 1.x, 400 for anything else.
fn version_error(head: &[u8]) -> StatusCode {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let version = line.rsplit(|&b| b == b' ').next().map(trim).unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' =>
        {
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Whether a request-target is in a form its method allows (RFC 9112 §3.2) and holds only
/// what RFC 3986 allows there: no byte ≥ 0x80, no control or space, none of
/// `` " < > \ ^ ` { | } ``, no fragment, `%` only before two hex digits, `[` and `]` only in
/// an authority. A query may also hold `` [ \ ] ^ ` { | } ``: browsers send those unescaped
/// there (the WHATWG URL Standard), and the query is the app's to read, never routed. The
/// path is kept strict: it is what a front end and the app must agree on.
fn valid_target(target: &[u8], method: &str) -> bool {
    let scheme = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|s| target.get(..s.len()).is_some_and(|t| t.eq_ignore_ascii_case(s)));
    match (target, scheme) {
        ([b'/', ..], _) => valid_path_query(target),
        // absolute-form: an authority, then a path and a query, either possibly empty.
        (_, Some(scheme)) => {
            let rest = &target[scheme.len()..];
            let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
            end > 0 && valid_authority(&rest[..end]) && valid_path_query(&rest[end..])
        }
        (b"*", _) => method == "OPTIONS",
        _ => method == "CONNECT" && target.contains(&b':') && valid_authority(target),
    }
}

/// `host [ ":" port ]`, percent-encoded or an IP literal; no userinfo (RFC 9110 §4.2.4).
fn valid_authority(authority: &[u8]) -> bool {
    valid_chars(authority, |b| unreserved_or_sub_delim(b) || matches!(b, b':' | b'[' | b']'))
}

/// An absolute path (or nothing), then an optional `?` and query.
fn valid_path_query(target: &[u8]) -> bool {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[][..]),
    };
    let pchar = |b: u8| unreserved_or_sub_delim(b) || matches!(b, b':' | b'@' | b'/');
    valid_chars(path, pchar)
        && valid_chars(query, |b| {
            pchar(b) || matches!(b, b'?' | b'[' | b'\\' | b']' | b'^' | b'`' | b'{' | b'|' | b'}')
        })
}

/// Whether `bytes` are all `allowed`, or `%` and two hex digits.
fn valid_chars(bytes: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if !bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if allowed(bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986's `unreserved` and `sub-delims`.
fn unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'.' | b'_' | b'~')
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// A Host value: empty, or an authority without userinfo (RFC 9110 §7.2).
fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')')
            || matches!(b, b'*' | b'+' | b',' | b';' | b'=' | b':' | b'[' | b']' | b'%')
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &s[start..end]
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
        self.s.state.started() < self.s.heads
            && !self.s.state.busy()
            && self.out.len() + more <= HOLD_LIMIT
    }

    /// Whether a write joins what was held back, to be sent with it in one write.
    fn joins(&self, more: usize) -> bool {
        !self.out.is_empty() && self.out.len() + more <= HOLD_LIMIT
    }

    /// Writes what was held back.
    fn poll_write_out(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
            // Not written yet: still counted as unsent (see `ConnState::sent`), since it is
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
        if self.hold_back(0) {
            return Poll::Ready(Ok(()));
        }
        ready!(self.as_mut().poll_write_out(cx))?;
        let this = self.project();
        ready!(this.io.poll_flush(cx))?;
        // hyper flushes once its own buffer is written, and the gate holds nothing back:
        // every byte of a body that hyper was given is written, or was dropped by hyper.
        this.s.state.all_sent();
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
/// room again (see `ConnState::sent`), or a client that is not reading, which fails the write
/// once it has lasted `send_timeout`.
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
            if stall.since.take().is_some() {
                s.state.write_resumed();
            }
            s.state.sent(*n);
            if s.state.evicted() {
                // Chosen to make room while stalled, and its slot is counted on: a write that
                // then went through does not undo that.
                return stall.poll(cx, s.limits.send_timeout, &s.state).map(Err);
            }
        }
        Poll::Pending => {
            *blocked = true;
            return stall.poll(cx, s.limits.send_timeout, &s.state).map(Err);
        }
        Poll::Ready(Err(_)) => {}
    }
    polled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(&HttpConfig::default())
    }

    fn check(head: &str) -> Result<u64, u16> {
        let fields = head.lines().count();
        match check_head(head.as_bytes(), fields, &limits()) {
            Ok((Framing::None, _)) => Ok(0),
            Ok((Framing::Length(n), _)) => Ok(n),
            Ok((Framing::Chunked, _)) => Ok(u64::MAX),
            Err(s) => Err(s.as_u16()),
        }
    }

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
        http.proxy_protocol = rng.below(4) == 0;
        let peer = rng.below(2) == 0;
        let peer = peer.then(|| SocketAddr::from(([127, 0, 0, 1], 9)));
        let state = Rc::new(ConnState::new(&crate::shutdown::Shutdown::default(), peer));
        let mut s = Scanner::new(state, Rc::new(Limits::new(&http)));
        if rng.below(3) == 0 {
            s.heads = 1;
            s.phase = Phase::Chunked(Chunk::Size { digits: 0, value: 0 });
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
    /// the head and chunk scanners (and so to `check_head`) in pieces of any size. A fixed seed
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
                let _ = check_head(&input, fields, &limits());
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
        use crate::shutdown::WRITE_AHEAD;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let state = Rc::new(ConnState::new(&crate::shutdown::Shutdown::default(), None));
        let mut gate = Gate::new(Reader, Rc::clone(&state), Rc::new(limits()));
        // The first of two pipelined requests is answered; the second is not started yet.
        gate.s.heads = 2;
        state.request_started();
        state.request_finished();
        // Its body, and its response as hyper writes it: held back, to go with the next one.
        state.to_send(WRITE_AHEAD);
        let first = vec![b'a'; WRITE_AHEAD + 100];
        assert!(matches!(Pin::new(&mut gate).poll_write(&mut cx, &first), Poll::Ready(Ok(_))));
        assert!(!gate.out.is_empty(), "held back");
        assert!(state.poll_send_room(&mut cx).is_pending(), "held back, yet not counted");
        // The second response: its head joins what is held back, its first frame is in hyper.
        state.request_started();
        state.to_send(WRITE_AHEAD + 4096);
        assert!(matches!(Pin::new(&mut gate).poll_write(&mut cx, &[b'h'; 100]), Poll::Ready(_)));
        assert!(matches!(Pin::new(&mut gate).poll_write_out(&mut cx), Poll::Ready(Ok(()))));
        assert!(gate.out.is_empty());
        // Only the first response and the head were written: the frame still waits in hyper.
        assert!(state.poll_send_room(&mut cx).is_pending(), "written bytes counted twice");
        // hyper writes it and flushes: nothing is left.
        let frame = vec![b'b'; WRITE_AHEAD + 4096];
        assert!(matches!(Pin::new(&mut gate).poll_write(&mut cx, &frame), Poll::Ready(Ok(_))));
        assert!(matches!(Pin::new(&mut gate).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert!(state.poll_send_room(&mut cx).is_ready());
    }

    #[test]
    fn heads() {
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(0));
        assert_eq!(check("GET / HTTP/1.0\r\n\r\n"), Ok(0));
        assert_eq!(check("GET / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(5));
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(5)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(400)
        );
        assert_eq!(check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), Err(400));
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(u64::MAX)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(501)
        );
        assert_eq!(check("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Err(505));
        assert_eq!(check("GET / http/1.1\r\nHost: a\r\n\r\n"), Err(400));
    }

    /// `BodyWait` after `reads`: each a wait of so many milliseconds, then so many bytes.
    fn bucket(rate: u64, timeout_secs: u64, reads: &[(u64, u64)]) -> (BodyWait, BodyRate, Instant) {
        let rate = BodyRate { per_second: rate, cap: timeout_secs * 1_000_000_000 };
        let mut now = Instant::now();
        let mut bucket = BodyWait::full(rate);
        for &(waited_ms, bytes) in reads {
            bucket.wait(now);
            now += Duration::from_millis(waited_ms);
            bucket.read(now, bytes, rate);
        }
        (bucket, rate, now)
    }

    #[test]
    fn body_wait_banks_at_most_body_timeout() {
        // A new body may wait body_timeout; a megabyte at once buys no more.
        let (full, ..) = bucket(240, 6, &[]);
        assert_eq!(full.credit, 6_000_000_000);
        let (burst, ..) = bucket(240, 6, &[(0, 1_000_000)]);
        assert_eq!(burst.credit, 6_000_000_000);
        // The trickle: a byte every 5 s after the burst. The first wait leaves 1 s and
        // a byte's worth (1/240 s, to the nanosecond below); the next wait ends there.
        let (mut trickle, _, now) = bucket(240, 6, &[(0, 1_000_000), (5_000, 1)]);
        assert_eq!(trickle.credit, 1_000_000_000 + 4_166_666);
        assert_eq!(trickle.deadline(), None, "not waiting");
        trickle.wait(now);
        assert_eq!(trickle.deadline(), Some(now + Duration::from_nanos(1_004_166_666)));
    }

    #[test]
    fn body_wait_keeps_a_client_at_the_rate() {
        // 100 bytes every 100 ms at 1,000 B/s, after a pause of most of body_timeout: the
        // credit the pause left neither grows nor shrinks.
        let mut reads = vec![(1_900, 0)];
        reads.extend([(100, 100); 50]);
        let (steady, ..) = bucket(1_000, 2, &reads);
        assert_eq!(steady.credit, 100_000_000);
        // A little above the rate, it grows back, up to body_timeout.
        let (faster, ..) = bucket(1_000, 2, &[(1_900, 0), (100, 110), (100, 110)]);
        assert_eq!(faster.credit, 120_000_000);
        let (long, ..) = bucket(1_000, 2, &[(1_900, 0), (100, 110), (100, 100_000)]);
        assert_eq!(long.credit, 2_000_000_000);
    }

    #[test]
    fn body_wait_runs_out_and_only_waits_count() {
        // A wait beyond the credit leaves none; the bytes that end it add theirs.
        let (late, ..) = bucket(1_000, 2, &[(3_000, 5)]);
        assert_eq!(late.credit, 5_000_000);
        // Reads with no wait before them (the app was slow, not the client) take nothing off.
        let rate = BodyRate { per_second: 1_000, cap: 2_000_000_000 };
        let mut bucket = BodyWait::full(rate);
        bucket.read(Instant::now(), 0, rate);
        bucket.read(Instant::now() + Duration::from_secs(60), 0, rate);
        assert_eq!(bucket.credit, 2_000_000_000);
    }

    #[test]
    fn body_wait_does_not_overflow() {
        let year = nanos(Duration::from_secs(365 * 86_400));
        for per_second in [1, 240, u64::MAX] {
            let rate = BodyRate { per_second, cap: year };
            let mut bucket = BodyWait::full(rate);
            let now = Instant::now();
            bucket.read(now, u64::MAX, rate);
            assert!(bucket.credit <= year);
            bucket.wait(now);
            assert_eq!(bucket.deadline(), Some(now + Duration::from_nanos(bucket.credit)));
            bucket.read(now + Duration::from_secs(2 * 365 * 86_400), 1, rate);
            assert!(bucket.credit <= 1_000_000_000);
        }
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
