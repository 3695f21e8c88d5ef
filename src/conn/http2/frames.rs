//! The frame scanner: what the worker reads of an HTTP/2 connection, looked at frame head by
//! frame head (9 bytes each; payloads are skipped, never copied) before hyper's h2 reads it,
//! for the limits h2 has no setting for: a request body without `Content-Length` larger than
//! `max_body_size` (DATA counted per stream), streams the client resets at its own pace (a
//! budget per connection: h2 stops only bursts, see `max_pending_accept_reset_streams`), and a
//! header block left open (HEADERS without END_HEADERS, then CONTINUATIONs that drip). It also
//! tells the request bodies' pacing ([`Uploads`]) each body's frames.
//! Pure: fed bytes and the time, it says when the connection must end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::preface::PREFACE;
use super::uploads::{Pace, Uploads};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The window the reset budget counts in.
pub(crate) const RESET_WINDOW: Duration = Duration::from_secs(10);

/// Why a connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    /// This stream sent more request body than `max_body_size`.
    Body(u32),
    /// The client reset more streams than its budget within [`RESET_WINDOW`].
    Resets,
}

/// What the scanner holds a connection to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// `max_body_size`; 0: no limit.
    pub(crate) body: u64,
    /// Streams the client may reset per [`RESET_WINDOW`].
    pub(crate) resets: u32,
    /// How many streams' body counts are kept: those of streams that ended without the
    /// scanner seeing it (the server reset them) go, oldest (lowest id) first, beyond it.
    pub(crate) tracked: usize,
    /// `body_timeout` and `body_min_rate`.
    pub(crate) pace: Pace,
}

/// One connection's scanner.
pub(crate) struct Scanner {
    bounds: Bounds,
    /// Bytes to pass over before the next frame head: the preface, then each payload.
    skip: usize,
    /// A frame head, read in part so far.
    head: [u8; 9],
    have: usize,
    /// Request body bytes (DATA payloads, padding included) per open stream.
    bodies: HashMap<u32, u64>,
    /// When the header block being read started, if one is open.
    block_since: Option<Instant>,
    /// Resets counted since `window_start`.
    resets: u32,
    window_start: Option<Instant>,
    /// The highest stream id a client's head has opened: a HEADERS frame on a lower one is
    /// trailers.
    last_opened: u32,
    uploads: Uploads,
}

impl Scanner {
    /// A scanner for a connection whose bytes start with the preface.
    pub(crate) fn new(bounds: Bounds) -> Self {
        Scanner {
            bounds,
            skip: PREFACE.len(),
            head: [0; 9],
            have: 0,
            bodies: HashMap::new(),
            block_since: None,
            resets: 0,
            window_start: None,
            last_opened: 0,
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
        self.skip == 0 && self.have == 0 && self.block_since.is_none()
    }

    /// When the header block being read started, if one is open.
    pub(crate) fn block_since(&self) -> Option<Instant> {
        self.block_since
    }

    /// Looks at `bytes`, the next the client sent, read at `now`. On a breach, also says
    /// where in `bytes` the frame at fault starts (0 if it started in an earlier read): what
    /// comes before it may be handed on, the rest must not.
    pub(crate) fn feed(&mut self, bytes: &[u8], now: Instant) -> Result<(), (usize, Breach)> {
        let mut at = 0;
        while at < bytes.len() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() - at);
                self.skip -= n;
                at += n;
                continue;
            }
            let head_start = at.saturating_sub(self.have);
            let n = (9 - self.have).min(bytes.len() - at);
            self.head[self.have..self.have + n].copy_from_slice(&bytes[at..at + n]);
            self.have += n;
            at += n;
            if self.have == 9 {
                self.have = 0;
                self.frame(now).map_err(|breach| (head_start, breach))?;
            }
        }
        Ok(())
    }

    /// The frame whose head is in `head`.
    fn frame(&mut self, now: Instant) -> Result<(), Breach> {
        let h = self.head;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        self.skip = len;
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
            RST_STREAM => {
                self.bodies.remove(&stream);
                self.uploads.ended(stream);
                let start = *self.window_start.get_or_insert(now);
                if now.duration_since(start) >= RESET_WINDOW {
                    self.window_start = Some(now);
                    self.resets = 0;
                }
                self.resets += 1;
                if self.resets > self.bounds.resets {
                    return Err(Breach::Resets);
                }
            }
            _ => {}
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
        let later = start + RESET_WINDOW;
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
}
