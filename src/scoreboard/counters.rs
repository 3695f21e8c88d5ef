//! The request counters a worker keeps in its slot for the metrics: requests by method and
//! status class, a duration histogram, body bytes each way, responses cut short, and TLS
//! handshakes by how they ended.
//!
//! A slot's counters have one writer, the slot's worker, which adds with a plain load and
//! store (no locked instruction on the request path); any process reads them with atomic
//! loads. When the master reaps a worker it adds the slot's counters to the scoreboard's
//! `retired` ones before the slot is reused, so totals never go down while the server runs
//! (see `Scoreboard::release`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The methods counted on their own; any other (and a request without a readable method) is
/// counted as `OTHER`. A fixed list keeps the metrics' label values bounded whatever clients
/// send.
pub(crate) const METHODS: [&str; 8] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];

/// Status classes: `none` for a request cut before any response started.
pub(crate) const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The upper bounds of the duration histogram's buckets, in microseconds; a last bucket
/// (`+Inf`) takes the rest. Prometheus's default buckets, with two below 5 ms: most of what
/// a prefork server answers takes less.
pub(crate) const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// How a TLS handshake ended: done, or why not. A fixed set, as [`METHODS`]: whatever a client
/// sends, the metrics' label values stay these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Ok,
    /// Not done by `header_timeout` (a client that sends nothing, or half a record).
    Timeout,
    /// Plain HTTP on a TLS port (answered `400`).
    PlaintextHttp,
    /// Not TLS, or TLS that rustls refused (an old version, no common suite, a bad message):
    /// closed with its alert.
    ProtocolError,
    /// The client closed or reset the connection first (a truncated record included), or
    /// the worker was draining.
    Closed,
}

impl Handshake {
    /// Every outcome, in the counters' order.
    pub(crate) const ALL: [Handshake; 5] = [
        Handshake::Ok,
        Handshake::Timeout,
        Handshake::PlaintextHttp,
        Handshake::ProtocolError,
        Handshake::Closed,
    ];

    /// The metrics' label: `result="ok"`, else the failure's `reason`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Timeout => "timeout",
            Handshake::PlaintextHttp => "plaintext_http",
            Handshake::ProtocolError => "protocol_error",
            Handshake::Closed => "closed",
        }
    }
}

/// One set of counters, in shared memory. Zeroed memory is all counters at 0.
#[repr(C)]
pub(crate) struct Counters {
    requests: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    /// Requests by duration, per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    duration_us: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Requests whose response did not go out whole.
    cut: AtomicU64,
    /// TLS handshakes, by [`Handshake`] (its order).
    handshakes: [AtomicU64; Handshake::ALL.len()],
}

/// One request, as the counters count it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    pub(crate) method: Option<usize>,
    pub(crate) status: Option<u16>,
    pub(crate) duration: Duration,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) cut: bool,
}

/// The index of a method in [`METHODS`].
pub(crate) fn method_index(method: Option<&str>) -> usize {
    let other = METHODS.len() - 1;
    method.map_or(other, |m| METHODS[..other].iter().position(|k| *k == m).unwrap_or(other))
}

/// The index of a status in [`CLASSES`].
fn class_index(status: Option<u16>) -> usize {
    match status {
        Some(code @ 100..=599) => usize::from(code / 100),
        // A status outside 100–599 is not one hyper sends; count it with the errors.
        Some(_) => CLASSES.len() - 1,
        None => 0,
    }
}

/// The index of a duration's bucket.
fn bucket_index(us: u64) -> usize {
    BUCKETS_US.partition_point(|&bound| bound < us)
}

/// Adds to a counter that only this process writes: no locked instruction.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Counters {
    /// Counts a request that ended. Only the slot's worker calls it.
    pub(crate) fn record(&self, r: &Counted) {
        let method = r.method.unwrap_or(METHODS.len() - 1).min(METHODS.len() - 1);
        bump(&self.requests[method][class_index(r.status)], 1);
        let us = u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX);
        bump(&self.buckets[bucket_index(us)], 1);
        bump(&self.duration_us, us);
        bump(&self.bytes_in, r.bytes_in);
        bump(&self.bytes_out, r.bytes_out);
        if r.cut {
            bump(&self.cut, 1);
        }
    }

    /// Counts a TLS handshake that ended. Only the slot's worker calls it.
    pub(crate) fn handshake(&self, outcome: Handshake) {
        bump(&self.handshakes[outcome as usize], 1);
    }

    fn fields(&self) -> impl Iterator<Item = &AtomicU64> {
        self.requests
            .iter()
            .flatten()
            .chain(&self.buckets)
            .chain([&self.duration_us, &self.bytes_in, &self.bytes_out, &self.cut])
            .chain(&self.handshakes)
    }

    /// Adds `other` to these counters: the master, folding a reaped worker's counters into the
    /// retired ones (it is their only writer).
    pub(crate) fn absorb(&self, other: &Counters) {
        for (mine, theirs) in self.fields().zip(other.fields()) {
            bump(mine, theirs.load(Ordering::Relaxed));
        }
    }

    pub(crate) fn clear(&self) {
        for field in self.fields() {
            field.store(0, Ordering::Relaxed);
        }
    }

    /// Adds these counters to a copy, wrapping as the counters themselves do (see [`bump`]):
    /// what shared memory holds is not trusted not to overflow, and a sum must not panic.
    pub(crate) fn add_to(&self, total: &mut Totals) {
        let add = |sum: &mut u64, n: &AtomicU64| *sum = sum.wrapping_add(n.load(Ordering::Relaxed));
        for (m, row) in self.requests.iter().enumerate() {
            for (c, n) in row.iter().enumerate() {
                add(&mut total.requests[m][c], n);
            }
        }
        for (b, n) in self.buckets.iter().enumerate() {
            add(&mut total.buckets[b], n);
        }
        add(&mut total.duration_us, &self.duration_us);
        add(&mut total.bytes_in, &self.bytes_in);
        add(&mut total.bytes_out, &self.bytes_out);
        add(&mut total.cut, &self.cut);
        for (h, n) in self.handshakes.iter().enumerate() {
            add(&mut total.handshakes[h], n);
        }
    }
}

/// A copy of counters, or the sum of several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// By method ([`METHODS`]), then status class ([`CLASSES`]).
    pub(crate) requests: [[u64; CLASSES.len()]; METHODS.len()],
    /// Per bucket of [`BUCKETS_US`], then `+Inf`; not cumulative.
    pub(crate) buckets: [u64; BUCKETS_US.len() + 1],
    pub(crate) duration_us: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) cut: u64,
    /// TLS handshakes, by [`Handshake`].
    pub(crate) handshakes: [u64; Handshake::ALL.len()],
}

impl Totals {
    /// Every request counted.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |sum, n| sum.wrapping_add(*n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Scoreboard;

    #[test]
    fn methods_classes_and_buckets_are_indexed_with_bounded_labels() {
        assert_eq!(method_index(Some("GET")), 0);
        assert_eq!(method_index(Some("OPTIONS")), 6);
        assert_eq!(method_index(Some("BREW")), 7);
        assert_eq!(method_index(Some("OTHER")), 7);
        assert_eq!(method_index(None), 7);
        assert_eq!(class_index(None), 0);
        assert_eq!(class_index(Some(101)), 1);
        assert_eq!(class_index(Some(204)), 2);
        assert_eq!(class_index(Some(599)), 5);
        assert_eq!(class_index(Some(600)), 5);
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(500), 0, "a bucket's bound is inclusive (le)");
        assert_eq!(bucket_index(501), 1);
        assert_eq!(bucket_index(10_000_000), 13);
        assert_eq!(bucket_index(10_000_001), 14, "+Inf");
    }

    #[test]
    fn sums_of_counters_near_the_top_wrap_instead_of_panicking() {
        let board = Scoreboard::new().unwrap();
        let (a, b) = (board.claim(1, 1).unwrap(), board.claim(2, 1).unwrap());
        for slot in [a, b] {
            let huge = Counted {
                method: Some(0),
                status: Some(200),
                duration: Duration::from_micros(1),
                bytes_in: u64::MAX,
                bytes_out: u64::MAX,
                cut: false,
            };
            board.slot(slot).counters.record(&huge);
            board.slot(slot).requests.store(u64::MAX, Ordering::Relaxed);
        }
        let report = board.report();
        assert_eq!(report.totals.bytes_in, u64::MAX.wrapping_mul(2));
        assert_eq!(report.requests, u64::MAX.wrapping_mul(2));
        assert_eq!(report.totals.count(), 2);
    }

    #[test]
    fn a_reaped_workers_counts_stay_in_the_totals() {
        let board = Scoreboard::new().unwrap();
        let a = board.claim(1, 1).unwrap();
        let b = board.claim(2, 1).unwrap();
        let get = |status, ms| Counted {
            method: Some(method_index(Some("GET"))),
            status: Some(status),
            duration: Duration::from_millis(ms),
            bytes_in: 10,
            bytes_out: 100,
            cut: false,
        };
        board.slot(a).counters.record(&get(200, 1));
        board.slot(a).counters.record(&get(404, 30));
        board.slot(b).counters.record(&Counted { cut: true, status: None, ..get(0, 2) });
        board.slot(a).counters.handshake(Handshake::Ok);
        board.slot(b).counters.handshake(Handshake::Ok);
        board.slot(a).counters.handshake(Handshake::Timeout);
        let before = board.report().totals;
        assert_eq!(before.handshakes, [2, 1, 0, 0, 0]);
        assert_eq!(before.count(), 3);
        assert_eq!(before.requests[0][2..5], [1, 0, 1]);
        assert_eq!(before.requests[0][0], 1, "cut before a response: class none");
        assert_eq!((before.bytes_in, before.bytes_out, before.cut), (30, 300, 1));
        assert_eq!(before.duration_us, 33_000);

        board.release(a);
        assert_eq!(board.report().totals, before, "a released slot's counts are kept");
        let c = board.claim(3, 2).unwrap();
        assert_eq!(c, a, "the slot is reused");
        board.slot(c).counters.record(&get(500, 1));
        let after = board.report().totals;
        assert_eq!(after.count(), 4);
        assert_eq!(after.requests[0][5], 1);
        assert_eq!(after.handshakes, before.handshakes, "handshakes too");
    }
}
