//! What the gate knows of the client's byte stream ([`Scanner`]): where it is (between
//! requests, in a head, in a body), what is cleared for hyper, and when the current wait times
//! out. It drives the pure scanners ([`super::head`], [`super::chunked`]) over the bytes the
//! gate reads, and decides what a bad head or body becomes; the gate does the IO.

use std::rc::Rc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::chunked::{ChunkLimits, ChunkScan, ChunkStep};
use super::head::{self, Framing, HeadLimits, HeadScan, HeadStep, Persistence};
use super::link::Link;
use crate::config::HttpConfig;
use crate::conn::body_rate::{BodyRate, BodyWait, nanos};
use crate::conn::drain::Slot;
use crate::request_end::Sink;

/// The most bytes of empty lines before a request line (RFC 9112 §2.2 asks a server to ignore
/// at least one CRLF there): 400 beyond. They reach hyper's read buffer with the head.
pub(super) const BLANK_LIMIT: usize = 64;

/// How much the gate reads from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// The `[http]` settings, as the gate uses them, and where its refusals are reported.
pub(crate) struct Limits {
    head: HeadLimits,
    chunk: ChunkLimits,
    pub(super) header_timeout: Option<Duration>,
    body_timeout: Option<Duration>,
    /// `body_min_rate` with `body_timeout`; `None` when either is off.
    pub(super) body_rate: Option<BodyRate>,
    pub(super) keepalive: Option<Duration>,
    pub(super) send_timeout: Option<Duration>,
    /// The worker's read buffer, shared by its connections (one thread reads at a time), so
    /// that an idle connection holds no buffer and a read zeroes nothing.
    pub(super) scratch: std::cell::RefCell<Box<[u8]>>,
    /// Where the requests the gate refuses end (see [`crate::RequestEnd`]).
    pub(super) sink: Option<Rc<Sink>>,
}

impl Limits {
    pub(crate) fn new(http: &HttpConfig, sink: Option<Rc<Sink>>) -> Limits {
        let or_max = |n: u64| if n == 0 { usize::MAX } else { n as usize };
        let max_body = if http.max_body_size == 0 { u64::MAX } else { http.max_body_size };
        let fields = http.limit_request_fields as usize;
        let field_size = or_max(http.limit_request_field_size);
        Limits {
            head: HeadLimits { line: or_max(http.limit_request_line), field_size, fields },
            chunk: ChunkLimits { max_body, field_size, fields },
            header_timeout: crate::config::ServerConfig::limit(http.header_timeout),
            body_timeout: crate::config::ServerConfig::limit(http.body_timeout),
            body_rate: (http.body_min_rate > 0 && !http.body_timeout.0.is_zero()).then(|| {
                BodyRate { per_second: http.body_min_rate, cap: nanos(http.body_timeout.0) }
            }),
            keepalive: crate::config::ServerConfig::limit(http.keepalive),
            send_timeout: crate::config::ServerConfig::limit(http.send_timeout),
            scratch: std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice()),
            sink,
        }
    }
}

/// Where the gate is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between requests: the next byte starts a head.
    Idle,
    /// In a head that started at `approved`.
    Head(HeadScan),
    /// In a body of this many more bytes.
    Length(u64),
    /// In a chunked body (see `Scanner::chunks`).
    Chunked,
}

/// How long the gate may wait for the client.
pub(super) enum Wait {
    Until(Instant),
    Forever,
    /// Until the request in progress is answered.
    Answer,
    /// Until hyper hands the request with this number (whose body is arriving) to the app.
    Dispatch(u64),
}

/// Why the gate stopped the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// A bad head: answered by the gate with this status, then closed.
    Head(StatusCode),
    /// A bad body: recorded on the connection for the response, then closed.
    Body(StatusCode),
    /// A quiet close (an idle connection timed out).
    Quiet,
}

/// A head the gate refused, for its request-end event.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    /// The request line's method, target and version, if it had a readable one (kept only
    /// when a hook is registered).
    pub(super) line: Option<(Box<str>, Box<str>, Box<str>)>,
    /// When the head's first byte came.
    pub(super) since: Instant,
    /// The answer's body length.
    pub(super) body: u64,
}

/// What the gate knows of the client's byte stream.
pub(super) struct Scanner {
    pub(super) slot: Rc<Slot>,
    pub(super) link: Rc<Link>,
    pub(super) limits: Rc<Limits>,
    /// Bytes read and not yet given to hyper: the first `approved` are cleared for it, the
    /// first `scanned` have been looked at.
    pub(super) raw: Vec<u8>,
    pub(super) approved: usize,
    pub(super) scanned: usize,
    pub(super) phase: Phase,
    /// The current chunked body's scanner.
    chunks: ChunkScan,
    pub(super) stop: Option<Stop>,
    /// The gate's own answer to a refused head.
    pub(super) reply: Vec<u8>,
    /// A refused head, until its event is sent.
    pub(super) refused: Option<Refusal>,
    /// A head the gate let through that hyper will refuse (see [`head::hyper_refusal`]), by
    /// its number, for its end event; only with a hook registered.
    pub(super) foreseen: Option<(u64, Refusal)>,
    /// When the current wait (a head, body progress, idleness) began.
    pub(super) since: Instant,
    /// When the bytes being scanned were read.
    pub(super) read_at: Instant,
    /// The waiting the current body's client may still cause, for `body_min_rate`.
    pub(super) body_wait: BodyWait,
    /// No request has started on this connection yet.
    first: bool,
    /// Heads let through to hyper.
    pub(super) heads: u64,
    /// Bytes of empty lines since the last head (see [`BLANK_LIMIT`]).
    blank: usize,
    /// Whether the current request closes the connection after its response: if so,
    /// nothing after it is read.
    persistence: Persistence,
}

impl Scanner {
    /// A scanner for a connection that started at `since`, with `early` bytes already read
    /// (after its preamble).
    pub(super) fn new(
        slot: Rc<Slot>,
        link: Rc<Link>,
        limits: Rc<Limits>,
        since: Instant,
        early: Vec<u8>,
    ) -> Scanner {
        let mut s = Scanner {
            slot,
            link,
            limits,
            raw: early,
            approved: 0,
            scanned: 0,
            phase: Phase::Idle,
            chunks: ChunkScan::default(),
            stop: None,
            reply: Vec::new(),
            refused: None,
            foreseen: None,
            since,
            read_at: Instant::now(),
            body_wait: BodyWait::default(),
            first: true,
            heads: 0,
            blank: 0,
            persistence: Persistence::KeepAlive,
        };
        if !s.raw.is_empty() {
            s.scan();
        }
        s
    }

    /// Whether the scanner is in a request's body.
    pub(super) fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Length(_) | Phase::Chunked)
    }

    /// Whether hyper may be let go: between requests, every one answered, nothing read that
    /// hyper has not had, and the last response written out.
    pub(super) fn parkable(&self, write_blocked: bool) -> bool {
        self.phase == Phase::Idle
            && !self.first
            && self.stop.is_none()
            && self.approved == 0
            && self.raw.is_empty()
            && !write_blocked
            && self.answered_now()
    }

    /// Whether every request the gate let through has been answered.
    pub(super) fn answered_now(&self) -> bool {
        self.slot.started() >= self.heads && !self.slot.busy()
    }

    /// Whether the request with this number has been handed to the service.
    pub(super) fn dispatched_now(&self, number: u64) -> bool {
        self.slot.started() >= number
    }

    /// When the current wait times out, if it does. `last_write` and `write_blocked` say
    /// whether a response is still being sent.
    pub(super) fn deadline(&self, last_write: Instant, write_blocked: bool) -> Wait {
        let limits = &self.limits;
        let body = self.in_body();
        let wait = match self.phase {
            Phase::Head(_) => limits.header_timeout,
            Phase::Idle if self.first => limits.header_timeout,
            // A request is being answered: the keep-alive wait starts once it is, and its
            // response has reached the client.
            Phase::Idle if self.slot.busy() => return Wait::Answer,
            Phase::Idle if write_blocked => return Wait::Forever,
            Phase::Idle => limits.keepalive,
            // A body is only late once the app wants it (hyper answers 100-continue then).
            _ if body && limits.body_timeout.is_some() && !self.dispatched_now(self.heads) => {
                return Wait::Dispatch(self.heads);
            }
            _ => limits.body_timeout,
        };
        let Some(wait) = wait else { return Wait::Forever };
        let since = match self.phase {
            // The last response ended with its last write.
            Phase::Idle => self.since.max(last_write),
            _ if body => self.since.max(self.link.started_at()).max(last_write),
            _ => self.since,
        };
        let mut deadline = since + wait;
        if let (true, Some(out)) = (body, self.body_wait.deadline()) {
            // The body's waiting credit runs out sooner (see `BodyWait`).
            deadline = deadline.min(out);
        }
        Wait::Until(deadline)
    }

    pub(super) fn timed_out(&mut self) {
        match self.phase {
            Phase::Head(_) => self.reject(StatusCode::REQUEST_TIMEOUT),
            Phase::Idle => self.stop = Some(Stop::Quiet),
            Phase::Length(_) | Phase::Chunked => self.body_error(StatusCode::REQUEST_TIMEOUT),
        }
    }

    /// Looks at the bytes read since the last scan, clearing for hyper what passes.
    pub(super) fn scan(&mut self) {
        while self.scanned < self.raw.len() && self.stop.is_none() {
            match self.phase {
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
                        self.phase = Phase::Head(HeadScan::default());
                        self.since = self.read_at;
                        self.first = false;
                    }
                }
                Phase::Head(mut scan) => {
                    let head = &self.raw[self.approved..];
                    let from = self.scanned - self.approved;
                    let (stopped, step) = scan.scan(head, from, &self.limits.head);
                    self.scanned = self.approved + stopped;
                    match step {
                        HeadStep::More => self.phase = Phase::Head(scan),
                        HeadStep::Complete { fields } => self.end_of_head(fields),
                        HeadStep::Refuse(status) => self.reject(status),
                    }
                }
                Phase::Length(left) => {
                    let n = left.min((self.raw.len() - self.scanned) as u64);
                    self.scanned += n as usize;
                    self.approved = self.scanned;
                    self.link.body_read(self.heads, n);
                    self.phase = if n == left { Phase::Idle } else { Phase::Length(left - n) };
                    if n == left {
                        self.end_of_request();
                    }
                }
                Phase::Chunked => {
                    let data = self.chunks.data();
                    let (passed, step) =
                        self.chunks.scan(&self.raw[self.scanned..], &self.limits.chunk);
                    // Framing bytes go to hyper as they pass: it parses them too.
                    self.scanned += passed;
                    self.approved = self.scanned;
                    self.link.body_read(self.heads, self.chunks.data() - data);
                    match step {
                        ChunkStep::More => {}
                        ChunkStep::End => {
                            self.phase = Phase::Idle;
                            self.end_of_request();
                        }
                        ChunkStep::Refuse(status) => return self.body_error(status),
                    }
                }
            }
        }
    }

    /// A complete head: checks it, and either clears it for hyper or refuses it.
    fn end_of_head(&mut self, fields: usize) {
        head::accept_minor_versions(&mut self.raw[self.approved..self.scanned]);
        let head = &self.raw[self.approved..self.scanned];
        match head::check_head(head, fields, self.limits.chunk.max_body) {
            Ok((framing, persistence)) => {
                if self.limits.sink.is_some() {
                    self.foresee();
                }
                self.approved = self.scanned;
                self.heads += 1;
                self.persistence = persistence;
                self.since = self.read_at;
                // Full: whatever of the body this read brought with the head could add none.
                self.body_wait = self.limits.body_rate.map(BodyWait::full).unwrap_or_default();
                if !matches!(framing, Framing::None | Framing::Length(0)) {
                    self.link.expect_body(self.heads);
                }
                self.phase = match framing {
                    Framing::None | Framing::Length(0) => Phase::Idle,
                    Framing::Length(n) => Phase::Length(n),
                    Framing::Chunked => {
                        self.chunks = ChunkScan::default();
                        Phase::Chunked
                    }
                };
                if self.phase == Phase::Idle {
                    self.end_of_request();
                }
            }
            Err(status) => self.reject(status),
        }
    }

    /// Keeps what the end event of the head just checked needs, if hyper will refuse it.
    fn foresee(&mut self) {
        let head = &self.raw[self.approved..self.scanned];
        let Some(status) = head::hyper_refusal(head) else { return };
        let line = head::request_line(head).map(|(m, t, v)| (m.into(), t.into(), v.into()));
        // `since` is still the head's first byte's.
        self.foreseen =
            Some((self.heads + 1, Refusal { status, line, since: self.since, body: 0 }));
    }

    /// A request's last byte has been read. After one that closes the connection, nothing more
    /// is read: a request after it would be answered inside or after a response that ends
    /// with the connection.
    fn end_of_request(&mut self) {
        if self.persistence == Persistence::Close {
            self.stop = Some(Stop::Quiet);
            self.raw.truncate(self.approved);
            self.scanned = self.approved;
        }
    }

    /// Refuses a head: hyper never sees it; the gate answers after whatever hyper still writes.
    pub(super) fn reject(&mut self, status: StatusCode) {
        tracing::debug!(status = status.as_u16(), "request refused by the gate");
        self.stop = Some(Stop::Head(status));
        let reason = status.canonical_reason().unwrap_or("Error");
        let line = self.limits.sink.as_ref().and_then(|_| {
            let (method, target, version) = head::request_line(&self.raw[self.approved..])?;
            Some((method.into(), target.into(), version.into()))
        });
        let since = if matches!(self.phase, Phase::Head(_)) { self.since } else { self.read_at };
        self.refused = Some(Refusal { status, line, since, body: reason.len() as u64 + 1 });
        self.raw.truncate(self.approved);
        self.scanned = self.approved;
        self.reply = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        status.as_u16(),
        reason.len() + 1
    )
    .into_bytes();
    }

    /// A body that cannot be read whole: what was valid goes on, then the input ends, and the
    /// response says why (if it has not started).
    pub(super) fn body_error(&mut self, status: StatusCode) {
        tracing::debug!(status = status.as_u16(), "request body refused by the gate");
        self.stop = Some(Stop::Body(status));
        self.raw.truncate(self.approved);
        self.scanned = self.approved;
        self.link.set_body_error(self.heads, status);
    }
}
