//! `body_min_rate`'s token bucket of waiting time ([`BodyWait`]): pure code, told the time. One
//! rule for a request body whatever carries it: HTTP/1's scanner waits on the socket, HTTP/2's
//! on each stream's frames.

use std::time::{Duration, Instant};

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
pub(crate) struct BodyWait {
    /// Nanoseconds of waiting left, as of the last read, or of `since` while waiting.
    pub(crate) credit: u64,
    /// When the current wait began.
    pub(crate) since: Option<Instant>,
}

/// What [`BodyWait`]'s bucket is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyRate {
    /// `body_min_rate`, in bytes per second: never 0.
    pub(crate) per_second: u64,
    /// `body_timeout` in nanoseconds: the credit a body starts with, and the most it may hold.
    /// A year at most (see `Seconds`), so that a deadline from it cannot overflow.
    pub(crate) cap: u64,
}

impl BodyWait {
    /// A new body's: a full bucket.
    pub(crate) fn full(rate: BodyRate) -> BodyWait {
        BodyWait { credit: rate.cap, since: None }
    }

    /// The socket is empty while the app wants the body: a wait begins, unless one has.
    pub(crate) fn wait(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// `bytes` of the body were read at `now`: the wait they end is taken off the credit, then
    /// their worth is added, up to the cap. A division and a few saturating operations: this
    /// runs on every read of a body.
    pub(crate) fn read(&mut self, now: Instant, bytes: u64, rate: BodyRate) {
        if let Some(since) = self.since.take() {
            self.credit = self.credit.saturating_sub(nanos(now.saturating_duration_since(since)));
        }
        let earned = bytes.saturating_mul(1_000_000_000) / rate.per_second;
        self.credit = self.credit.saturating_add(earned).min(rate.cap);
    }

    /// When the current wait uses up the credit, if the gate is waiting.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + Duration::from_nanos(self.credit))
    }
}

/// A duration in nanoseconds, saturated (a year is 3.2e16 of them; `u64` holds 584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
