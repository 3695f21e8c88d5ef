//! The frame scanner: what the worker reads of an HTTP/2 connection, looked at frame head by
//! frame head ([`Heads`]: payloads are skipped, never copied) before hyper's h2 reads it,
//! for the limits h2 has no setting for: a request body without `Content-Length` larger than
//! `max_body_size` (DATA counted per stream), streams the client resets at its own pace (a
//! budget per connection: h2 stops only bursts, see `max_pending_accept_reset_streams`), a
//! header block left open (HEADERS without END_HEADERS, then CONTINUATIONs that drip), and
//! control frames sent for their own sake (a budget, see [`CONTROL_BUDGET`]). It tells the
//! request bodies' pacing ([`Uploads`]) each body's frames. It also reads the frames the
//! server writes, in one walk ([`Scanner::sent`]): responses pay for the client's control
//! frames, the server's PINGs for the client's acknowledgements, and the windows h2 opens
//! (WINDOW_UPDATE increments) and the streams it resets are told to the pacing.
//! Pure: fed bytes and the time, it says when the connection must end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::heads::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, Head, Heads, PING, PRIORITY,
    PUSH_PROMISE, RST_STREAM, SETTINGS, WINDOW_UPDATE,
};
use super::preface::PREFACE;
use super::uploads::{Pace, Uploads};

/// The window the budgets count in.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Control frames (PING, SETTINGS, PRIORITY, WINDOW_UPDATE, and frames of unknown types) a
/// client may send per [`WINDOW`], beyond what the responses pay for ([`CONTROL_REFUND`]).
/// h2 answers each PING and SETTINGS and reads every frame, however useless: unbounded, one
/// client flooding them keeps a worker's core busy (6 s of CPU in 10 s, measured). Real clients
/// send a few per connection: a SETTINGS and a WINDOW_UPDATE to start, a PING now and then
/// (browsers for the round-trip time, gRPC's keepalive, at least 10 s apart).
pub(crate) const CONTROL_BUDGET: u32 = 1000;

/// How many control frames each response frame (HEADERS or DATA) the server writes pays for:
/// a client reading a response sends WINDOW_UPDATEs for the stream and the connection, and
/// some (gRPC's bandwidth probe) a PING, for each DATA frame it gets.
pub(crate) const CONTROL_REFUND: u32 = 4;

/// PING acknowledgements a client may send beyond the PINGs the server sent: h2 logs a
/// warning for each stray one.
pub(crate) const STRAY_ACKS: u64 = 10;

/// Why a connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    /// This stream sent more request body than `max_body_size`.
    Body(u32),
    /// The client reset more streams than its budget within [`WINDOW`].
    Resets,
    /// The client sent more control frames than [`CONTROL_BUDGET`]; the last was of this
    /// type.
    Control(u8),
    /// The client acknowledged more PINGs than the server sent, by [`STRAY_ACKS`].
    StrayAcks,
}

impl Breach {
    /// Whether the client is flooding the server: its connection ends at once, with
    /// `GOAWAY(ENHANCE_YOUR_CALM)`.
    pub(crate) fn is_flood(self) -> bool {
        !matches!(self, Breach::Body(_))
    }

    /// What happened, for the log.
    pub(crate) fn describe(self) -> String {
        match self {
            Breach::Body(stream) => format!("stream {stream}'s request body is over max_body_size"),
            Breach::Resets => "the client reset too many streams".to_string(),
            Breach::Control(kind) => {
                let name = match kind {
                    PING => "PING",
                    SETTINGS => "SETTINGS",
                    PRIORITY => "PRIORITY",
                    WINDOW_UPDATE => "WINDOW_UPDATE",
                    _ => "unknown",
                };
                format!(
                    "the client sent more than {CONTROL_BUDGET} control frames in {} s that no \
                     response paid for (the last: {name})",
                    WINDOW.as_secs()
                )
            }
            Breach::StrayAcks => "the client acknowledged PINGs the server never sent".to_string(),
        }
    }
}

/// What the scanner holds a connection to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// `max_body_size`; 0: no limit.
    pub(crate) body: u64,
    /// Streams the client may reset per [`WINDOW`].
    pub(crate) resets: u32,
    /// How many streams' body counts are kept: those of streams that ended without the
    /// scanner seeing it (the server reset them) go, oldest (lowest id) first, beyond it.
    pub(crate) tracked: usize,
    /// `body_timeout` and `body_min_rate`.
    pub(crate) pace: Pace,
}

/// A count of events per [`WINDOW`], against a limit.
#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: u32,
    spent: u32,
    window_start: Option<Instant>,
}

impl Budget {
    fn new(limit: u32) -> Self {
        Budget { limit, spent: 0, window_start: None }
    }

    /// One more at `now`: whether it is within the budget.
    fn spend(&mut self, now: Instant) -> bool {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= WINDOW {
            self.window_start = Some(now);
            self.spent = 0;
        }
        self.spent += 1;
        self.spent <= self.limit
    }

    fn refund(&mut self, n: u32) {
        self.spent = self.spent.saturating_sub(n);
    }
}

/// One connection's scanner.
pub(crate) struct Scanner {
    bounds: Bounds,
    /// What the client sends: the preface, then frames.
    inbound: Heads,
    /// What the server writes, WINDOW_UPDATE increments included.
    outbound: Heads,
    /// Request body bytes (DATA payloads, padding included) per open stream.
    bodies: HashMap<u32, u64>,
    /// When the header block being read started, if one is open.
    block_since: Option<Instant>,
    resets: Budget,
    control: Budget,
    /// PINGs the server sent, and acknowledgements the client sent.
    pings: u64,
    acks: u64,
    /// The highest stream id a client's head has opened: a HEADERS frame on a lower one is
    /// trailers.
    last_opened: u32,
    /// When the client's bytes last completed a frame head or reached a frame's end: the
    /// frame in progress, if any, has not moved since.
    moved: Option<Instant>,
    uploads: Uploads,
}

impl Scanner {
    /// A scanner for a connection whose bytes start with the preface.
    pub(crate) fn new(bounds: Bounds) -> Self {
        Scanner {
            bounds,
            inbound: Heads::new(PREFACE.len()),
            outbound: Heads::with_windows(0),
            bodies: HashMap::new(),
            block_since: None,
            resets: Budget::new(bounds.resets),
            control: Budget::new(CONTROL_BUDGET),
            pings: 0,
            acks: 0,
            last_opened: 0,
            moved: None,
            uploads: Uploads::new(bounds.pace, bounds.tracked),
        }
    }

    /// The request bodies in progress.
    pub(crate) fn uploads(&mut self) -> &mut Uploads {
        &mut self.uploads
    }

    /// Whether what was fed ends at a frame's end, outside any header block: where a frame
    /// may be put in.
    pub(crate) fn between_frames(&self) -> bool {
        self.inbound.at_edge() && self.block_since.is_none()
    }

    /// Since when what was fed has not been between frames ([`Scanner::between_frames`]):
    /// inside a frame, since its head (or, for one whose head is not in, the frame before it)
    /// ended; between frames inside a header block, since the block started. `None` between
    /// frames.
    pub(crate) fn stuck_since(&self) -> Option<Instant> {
        if !self.inbound.at_edge() { self.moved } else { self.block_since }
    }

    /// When the header block being read started, if one is open.
    pub(crate) fn block_since(&self) -> Option<Instant> {
        self.block_since
    }

    /// The highest stream id the client sent HEADERS on (and h2 may have served): what a
    /// GOAWAY the worker writes itself names as the last stream.
    pub(crate) fn last_opened(&self) -> u32 {
        self.last_opened
    }

    /// Whether what the server wrote so far ends where a frame ends: only then can a frame of
    /// the worker's own follow.
    pub(crate) fn sent_whole_frames(&self) -> bool {
        self.outbound.at_edge()
    }

    /// Looks at `bytes`, the next the client sent, read at `now`. On a breach, also says
    /// where in `bytes` the frame at fault starts (0 if it started in an earlier read): what
    /// comes before it may be handed on, the rest must not.
    pub(crate) fn feed(&mut self, bytes: &[u8], now: Instant) -> Result<(), (usize, Breach)> {
        let mut inbound = self.inbound;
        let mut heads = 0;
        let verdict = inbound.walk(bytes, |head| {
            heads += 1;
            self.frame(head, now)
        });
        self.inbound = inbound;
        if heads > 0 || inbound.at_edge() {
            self.moved = Some(now);
        }
        verdict
    }

    /// Looks at `bytes`, the next the server wrote, at `now`: one walk for all that reads
    /// them. Responses pay for the client's control frames, its PINGs allow as many
    /// acknowledgements, and the request bodies' pacing learns the windows h2 opens for the
    /// client and the streams it resets.
    pub(crate) fn sent(&mut self, bytes: &[u8], now: Instant) {
        let mut outbound = self.outbound;
        let _ = outbound.walk(bytes, |head| {
            match head.kind {
                DATA | HEADERS => self.control.refund(CONTROL_REFUND),
                PING if head.flags & ACK == 0 => self.pings += 1,
                WINDOW_UPDATE => {
                    if let Some(n) = head.increment {
                        self.uploads.opened_window(head.stream, n, now);
                    }
                }
                RST_STREAM => self.uploads.ended(head.stream),
                _ => {}
            }
            Ok::<(), ()>(())
        });
        self.outbound = outbound;
    }

    /// The client's frame `head`.
    fn frame(&mut self, head: Head, now: Instant) -> Result<(), Breach> {
        let Head { len, kind, flags, stream, .. } = head;
        match kind {
            DATA => {
                self.uploads.data(stream, len as u32, flags & END_STREAM != 0, now);
                let total = self.bodies.entry(stream).or_insert(0);
                *total += len as u64;
                if self.bounds.body > 0 && *total > self.bounds.body {
                    return Err(Breach::Body(stream));
                }
                if flags & END_STREAM != 0 {
                    self.bodies.remove(&stream);
                } else if self.bodies.len() > self.bounds.tracked {
                    self.forget_oldest();
                }
            }
            HEADERS => {
                self.block_since = (flags & END_HEADERS == 0).then_some(now);
                if stream > self.last_opened {
                    self.last_opened = stream;
                    if flags & END_STREAM == 0 {
                        self.uploads.opened(stream, now);
                    }
                } else {
                    self.uploads.ended(stream);
                }
                if flags & END_STREAM != 0 {
                    // Trailers end a body as DATA's END_STREAM does.
                    self.bodies.remove(&stream);
                }
            }
            CONTINUATION if flags & END_HEADERS != 0 => self.block_since = None,
            CONTINUATION => {}
            RST_STREAM => {
                self.bodies.remove(&stream);
                self.uploads.ended(stream);
                if !self.resets.spend(now) {
                    return Err(Breach::Resets);
                }
            }
            PING if flags & ACK != 0 => {
                self.acks += 1;
                if self.acks > self.pings + STRAY_ACKS {
                    return Err(Breach::StrayAcks);
                }
            }
            // GOAWAY ends the connection; PUSH_PROMISE from a client is an error h2 ends it
            // for.
            PUSH_PROMISE | GOAWAY => {}
            _ => {
                if !self.control.spend(now) {
                    return Err(Breach::Control(kind));
                }
            }
        }
        Ok(())
    }

    fn forget_oldest(&mut self) {
        if let Some(&oldest) = self.bodies.keys().min() {
            self.bodies.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, len: usize) -> Vec<u8> {
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend(std::iter::repeat_n(0xAA, len));
        out
    }

    fn scanner(body: u64, resets: u32) -> Scanner {
        let pace = Pace::new(std::time::Duration::ZERO, 0, 65_535);
        let mut s = Scanner::new(Bounds { body, resets, tracked: 4, pace });
        s.feed(PREFACE, Instant::now()).unwrap();
        s
    }

    #[test]
    fn a_body_is_counted_per_stream_across_reads_of_any_size() {
        let mut bytes = Vec::new();
        bytes.extend(frame(HEADERS, END_HEADERS, 1, 20));
        bytes.extend(frame(DATA, 0, 1, 60));
        bytes.extend(frame(DATA, 0, 3, 60));
        bytes.extend(frame(DATA, END_STREAM, 1, 40));
        bytes.extend(frame(DATA, 0, 3, 41));
        let now = Instant::now();
        // Whole, then one byte at a time: the same verdict at the same frame.
        let crossing = bytes.len() - 41 - 9;
        assert_eq!(scanner(100, 10).feed(&bytes, now), Err((crossing, Breach::Body(3))));
        let mut bytewise = scanner(100, 10);
        let verdict = bytes.iter().try_for_each(|b| bytewise.feed(std::slice::from_ref(b), now));
        assert_eq!(verdict, Err((0, Breach::Body(3))), "its head started in an earlier read");
        let mut split = scanner(100, 10);
        assert_eq!(split.feed(&bytes[..crossing + 4], now), Ok(()));
        assert_eq!(split.feed(&bytes[crossing + 4..], now), Err((0, Breach::Body(3))));
        // The head of the frame that crosses the limit is enough: its payload is not needed.
        let cut = bytes.len() - 41;
        assert_eq!(scanner(100, 10).feed(&bytes[..cut], now), Err((crossing, Breach::Body(3))));
        assert_eq!(scanner(0, 10).feed(&bytes, now), Ok(()), "0: no limit");
        assert_eq!(scanner(200, 10).feed(&bytes, now), Ok(()), "stream 1 ended at 100");
    }

    #[test]
    fn an_ended_or_reset_stream_is_forgotten_and_the_oldest_go_beyond_the_bound() {
        let now = Instant::now();
        let mut s = scanner(100, 10);
        s.feed(&frame(DATA, END_STREAM, 1, 90), now).unwrap();
        s.feed(&frame(DATA, 0, 3, 90), now).unwrap();
        s.feed(&frame(RST_STREAM, 0, 3, 4), now).unwrap();
        s.feed(&frame(DATA, 0, 5, 90), now).unwrap();
        s.feed(&frame(HEADERS, END_HEADERS | END_STREAM, 5, 10), now).unwrap();
        assert!(s.bodies.is_empty(), "ended by DATA, by a reset, by trailers");
        for id in [7, 9, 11, 13, 15] {
            s.feed(&frame(DATA, 0, id, 1), now).unwrap();
        }
        assert_eq!(s.bodies.len(), 4);
        assert!(!s.bodies.contains_key(&7), "the oldest went");
    }

    #[test]
    fn resets_beyond_the_budget_in_one_window_end_the_connection() {
        let start = Instant::now();
        let mut s = scanner(0, 3);
        let reset = |id| frame(RST_STREAM, 0, id, 4);
        for id in [1, 3, 5] {
            s.feed(&reset(id), start).unwrap();
        }
        // A new window: the count starts again.
        let later = start + WINDOW;
        for id in [7, 9, 11] {
            s.feed(&reset(id), later).unwrap();
        }
        assert_eq!(s.feed(&reset(13), later + Duration::from_secs(1)), Err((0, Breach::Resets)));
    }

    #[test]
    fn an_open_header_block_is_timed_until_its_end() {
        let now = Instant::now();
        let mut s = scanner(0, 10);
        s.feed(&frame(HEADERS, 0, 1, 10), now).unwrap();
        assert_eq!(s.block_since(), Some(now));
        s.feed(&frame(CONTINUATION, 0, 1, 10), now).unwrap();
        assert_eq!(s.block_since(), Some(now));
        s.feed(&frame(CONTINUATION, END_HEADERS, 1, 10), now).unwrap();
        assert_eq!(s.block_since(), None);
        s.feed(&frame(HEADERS, END_HEADERS | END_STREAM, 3, 10), now).unwrap();
        assert_eq!(s.block_since(), None);
    }

    #[test]
    fn bytes_stopped_inside_a_frame_are_timed_from_its_head_or_the_frame_before() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = scanner(0, 10);
        s.feed(&frame(HEADERS, END_HEADERS, 1, 10), ms(0)).unwrap();
        assert_eq!(s.stuck_since(), None, "between frames");
        let data = frame(DATA, 0, 1, 100);
        s.feed(&data[..5], ms(10)).unwrap();
        assert_eq!(s.stuck_since(), Some(ms(0)), "in a head: since the frame before ended");
        s.feed(&data[5..50], ms(20)).unwrap();
        assert_eq!(s.stuck_since(), Some(ms(20)), "its head is in");
        s.feed(&data[50..60], ms(30)).unwrap();
        assert_eq!(s.stuck_since(), Some(ms(20)), "a payload that drips does not move it");
        s.feed(&data[60..], ms(40)).unwrap();
        assert_eq!(s.stuck_since(), None);
        s.feed(&frame(HEADERS, 0, 3, 10), ms(50)).unwrap();
        assert_eq!(s.stuck_since(), Some(ms(50)), "a header block left open");
    }

    #[test]
    fn control_frames_beyond_the_budget_end_the_connection_unless_responses_pay_for_them() {
        let start = Instant::now();
        let ping = frame(PING, 0, 0, 8);
        let mut s = scanner(0, 10);
        for _ in 0..CONTROL_BUDGET {
            s.feed(&ping, start).unwrap();
        }
        let settings = frame(SETTINGS, 0, 0, 6);
        assert_eq!(s.feed(&settings, start), Err((0, Breach::Control(SETTINGS))));
        // A new window: the count starts again.
        let mut s = scanner(0, 10);
        for _ in 0..CONTROL_BUDGET {
            s.feed(&ping, start).unwrap();
        }
        s.feed(&frame(WINDOW_UPDATE, 0, 1, 4), start + WINDOW).unwrap();
        // A client reading a long response: a WINDOW_UPDATE and a PING for each DATA frame.
        let mut s = scanner(0, 10);
        let mut reply = frame(HEADERS, END_HEADERS, 1, 10);
        s.sent(&reply[..5], start);
        reply.extend(frame(DATA, 0, 1, 100));
        s.sent(&reply[5..], start);
        for _ in 0..10 * CONTROL_BUDGET {
            s.sent(&frame(DATA, 0, 1, 100), start);
            let mut read = frame(WINDOW_UPDATE, 0, 1, 4);
            read.extend(frame(PING, 0, 0, 8));
            s.feed(&read, start).unwrap();
        }
    }

    #[test]
    fn acknowledgements_of_pings_never_sent_end_the_connection() {
        let now = Instant::now();
        let ack = frame(PING, ACK, 0, 8);
        let mut s = scanner(0, 10);
        s.sent(&frame(PING, 0, 0, 8), now);
        s.sent(&frame(PING, ACK, 0, 8), now);
        for _ in 0..=STRAY_ACKS {
            s.feed(&ack, now).unwrap();
        }
        assert_eq!(s.feed(&ack, now), Err((0, Breach::StrayAcks)));
    }

    #[test]
    fn the_last_opened_and_the_edge_of_what_was_sent_are_known() {
        let now = Instant::now();
        let mut s = scanner(0, 10);
        assert!(s.sent_whole_frames());
        s.feed(&frame(HEADERS, END_HEADERS, 5, 10), now).unwrap();
        s.feed(&frame(HEADERS, END_HEADERS | END_STREAM, 3, 10), now).unwrap();
        assert_eq!(s.last_opened(), 5);
        let data = frame(DATA, 0, 5, 100);
        s.sent(&data[..4], now);
        assert!(!s.sent_whole_frames(), "in a head");
        s.sent(&data[4..50], now);
        assert!(!s.sent_whole_frames(), "in a payload");
        s.sent(&data[50..], now);
        assert!(s.sent_whole_frames());
    }

    #[test]
    fn windows_opened_and_streams_reset_reach_the_pacing_across_writes_of_any_size() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut written = frame(DATA, END_STREAM, 3, 20);
        // A WINDOW_UPDATE opening 50 bytes on stream 1: its head says 4, its payload is 50.
        written.extend(&frame(WINDOW_UPDATE, 0, 1, 4)[..9]);
        written.extend(50u32.to_be_bytes());
        for size in [1, 2, 7, written.len()] {
            let pace = Pace::new(Duration::from_secs(1), 0, 100);
            let mut s = Scanner::new(Bounds { body: 0, resets: 10, tracked: 4, pace });
            s.feed(PREFACE, t0).unwrap();
            s.feed(&frame(HEADERS, END_HEADERS, 1, 10), t0).unwrap();
            s.feed(&frame(DATA, 0, 1, 100), t0).unwrap();
            for piece in written.chunks(size) {
                assert_eq!(s.uploads().deadline(), None, "its window is full ({size} at a time)");
                s.sent(piece, later);
            }
            let due = later + Duration::from_secs(1);
            assert_eq!(s.uploads().deadline(), Some(due), "the app read: h2 opened it");
            assert!(s.sent_whole_frames());
            s.sent(&frame(RST_STREAM, 0, 1, 4), later);
            assert_eq!(s.uploads().deadline(), None, "h2 reset it");
        }
    }
}
