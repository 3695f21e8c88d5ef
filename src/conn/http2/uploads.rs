//! `body_timeout` and `body_min_rate` on HTTP/2 request bodies, per stream: the same waiting
//! credit as HTTP/1's ([`BodyWait`]), spent while the client may send on the stream and does
//! not. HTTP/1 counts a wait while the app asks for the body and the socket is empty; an h2
//! body is hyper's own, so what the app asks is not seen here, but flow control says as much:
//! the client may send while both the stream's window and the connection's are open, and h2
//! opens them (WINDOW_UPDATE) as the app reads. An app that does not read its body closes the
//! window on the client, which is then not late; one that reads slowly holds the client back
//! the same way. (Unlike HTTP/1, a body the app has not asked for yet is waited for while the
//! window the stream started with is open: 256 KiB by default.)
//!
//! Pure: told the frames both ways (by the frame scanner, [`super::frames`], which reads what
//! the client sends and what is written) and the time, it says which streams are late.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::conn::body_rate::{BodyRate, BodyWait, nanos};

/// The connection's window before h2 opens it further (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;

/// What a request body is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// `body_timeout`, in nanoseconds; 0: no limit, and no `body_min_rate` either.
    pub(crate) timeout: u64,
    /// `body_min_rate` with `body_timeout`; `None` when either is off.
    pub(crate) rate: Option<BodyRate>,
    /// `initial_stream_window`: each stream's window when it opens.
    pub(crate) window: u32,
}

impl Pace {
    pub(crate) fn new(body_timeout: Duration, body_min_rate: u64, window: u32) -> Self {
        let timeout = nanos(body_timeout);
        let rate = (body_min_rate > 0 && timeout > 0)
            .then_some(BodyRate { per_second: body_min_rate, cap: timeout });
        Pace { timeout, rate, window }
    }
}

/// A body in progress.
#[derive(Debug, Clone, Copy)]
struct Upload {
    /// What the client may still send on the stream.
    window: i64,
    wait: BodyWait,
}

/// One connection's request bodies in progress.
pub(crate) struct Uploads {
    pace: Pace,
    /// What the client may still send, all streams together.
    window: i64,
    bodies: HashMap<u32, Upload>,
    /// How many are kept: beyond, the oldest (lowest id) go, unwatched.
    tracked: usize,
}

impl Uploads {
    pub(crate) fn new(pace: Pace, tracked: usize) -> Self {
        Uploads { pace, window: DEFAULT_WINDOW, bodies: HashMap::new(), tracked }
    }

    fn may_send(&self, upload: &Upload) -> bool {
        upload.window > 0 && self.window > 0
    }

    /// Stream `id`'s head said a body follows.
    pub(crate) fn opened(&mut self, id: u32, now: Instant) {
        if self.pace.timeout == 0 {
            return;
        }
        let mut wait = BodyWait { credit: self.pace.timeout, since: None };
        if self.window > 0 && self.pace.window > 0 {
            wait.wait(now);
        }
        self.bodies.insert(id, Upload { window: i64::from(self.pace.window), wait });
        if self.bodies.len() > self.tracked {
            if let Some(&oldest) = self.bodies.keys().min() {
                self.bodies.remove(&oldest);
            }
        }
    }

    /// `len` bytes of stream `id`'s body came (the last, if `end`).
    pub(crate) fn data(&mut self, id: u32, len: u32, end: bool, now: Instant) {
        let was_open = self.window > 0;
        self.window -= i64::from(len);
        if let Some(mut upload) = self.bodies.remove(&id) {
            upload.window -= i64::from(len);
            match self.pace.rate {
                Some(rate) => upload.wait.read(now, u64::from(len), rate),
                // `body_timeout` alone: any progress renews it.
                None => upload.wait = BodyWait { credit: self.pace.timeout, since: None },
            }
            if !end {
                if self.may_send(&upload) {
                    upload.wait.wait(now);
                }
                self.bodies.insert(id, upload);
            }
        }
        if was_open && self.window <= 0 {
            self.reconsider(now);
        }
    }

    /// Stream `id`'s body ended (trailers), or the stream did (a reset either way).
    pub(crate) fn ended(&mut self, id: u32) {
        self.bodies.remove(&id);
    }

    /// h2 let the client send `n` more bytes on stream `id` (0: the connection).
    pub(crate) fn opened_window(&mut self, id: u32, n: u32, now: Instant) {
        if id == 0 {
            let was_open = self.window > 0;
            self.window += i64::from(n);
            if !was_open && self.window > 0 {
                self.reconsider(now);
            }
            return;
        }
        let conn_open = self.window > 0;
        if let Some(upload) = self.bodies.get_mut(&id) {
            upload.window += i64::from(n);
            if conn_open && upload.window > 0 {
                upload.wait.wait(now);
            }
        }
    }

    /// The connection's window opened or closed: each body's wait begins or ends with it.
    fn reconsider(&mut self, now: Instant) {
        let conn_open = self.window > 0;
        let rate = self.pace.rate;
        for upload in self.bodies.values_mut() {
            if conn_open && upload.window > 0 {
                upload.wait.wait(now);
            } else if let Some(rate) = rate {
                // The wait so far is spent; none goes on while the client may not send.
                upload.wait.read(now, 0, rate);
            } else {
                upload.wait.since = None;
            }
        }
    }

    /// `body_timeout` (zero: off).
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.pace.timeout)
    }

    /// When the first body in progress will be late, if one is waited for.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.bodies.values().filter_map(|u| u.wait.deadline()).min()
    }

    /// The streams whose bodies are late at `now`, `max` at most, forgotten here.
    pub(crate) fn late(&mut self, now: Instant, max: usize) -> Vec<u32> {
        let late: Vec<u32> = self
            .bodies
            .iter()
            .filter(|(_, u)| u.wait.deadline().is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .take(max)
            .collect();
        for id in &late {
            self.bodies.remove(id);
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads(timeout_ms: u64, rate: u64, window: u32) -> Uploads {
        Uploads::new(Pace::new(Duration::from_millis(timeout_ms), rate, window), 4)
    }

    #[test]
    fn a_body_that_stops_is_late_at_body_timeout_after_its_last_frame() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut u = uploads(1000, 0, 100_000);
        u.opened(1, t0);
        assert_eq!(u.deadline(), Some(ms(1000)), "from the head on");
        u.data(1, 10, false, ms(500));
        assert_eq!(u.deadline(), Some(ms(1500)), "any progress renews it");
        assert_eq!(u.late(ms(1499), 10), Vec::<u32>::new());
        assert_eq!(u.late(ms(1500), 10), [1]);
        assert_eq!(u.deadline(), None, "forgotten once late");
        u.opened(3, t0);
        u.data(3, 10, true, ms(10));
        assert_eq!(u.deadline(), None, "ended");
        assert_eq!(uploads(0, 240, 100_000).deadline(), None, "body_timeout 0: off");
    }

    #[test]
    fn a_closed_window_is_not_the_clients_fault() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut u = uploads(1000, 0, 100);
        u.opened(1, t0);
        u.data(1, 100, false, ms(10));
        assert_eq!(u.deadline(), None, "the stream's window is full: the app has not read");
        u.opened_window(1, 50, ms(5000));
        assert_eq!(u.deadline(), Some(ms(6000)), "h2 opened it: the app read");
        // The connection's window, shared: closed, no stream waits.
        let mut u = uploads(1000, 0, 100_000);
        u.opened(1, t0);
        u.opened(3, t0);
        u.data(1, 65_535, false, ms(10));
        assert_eq!(u.deadline(), None);
        u.opened_window(0, 1000, ms(3000));
        assert_eq!(u.deadline(), Some(ms(4000)));
    }

    #[test]
    fn a_trickle_below_body_min_rate_runs_out() {
        let t0 = Instant::now();
        let mut u = uploads(2000, 100, 100_000);
        u.opened(1, t0);
        // A byte every 300 ms at 100 B/s: each earns 10 ms and costs 300.
        let mut now = t0;
        let mut sent = 0;
        while u.late(now, 10).is_empty() {
            now += Duration::from_millis(300);
            if u.deadline().is_some_and(|d| d <= now) {
                continue;
            }
            u.data(1, 1, false, now);
            sent += 1;
        }
        assert!((6..=8).contains(&sent), "{sent} bytes before the credit ran out");
    }
}
