//! What the gate and the service stack tell each other on one HTTP/1 connection, and nothing
//! else: private to the HTTP/1 protocol. The service stack sees it only as its [`Exchange`].
//! Each side writes its own half. The gate writes what it found in the request bodies
//! ([`Link::expect_body`], [`Link::set_body_error`], [`Link::body_read`]); the service stack
//! writes when the app was called for a request ([`Exchange::request_started`]) and wakes the
//! gate when a request starts or ends. The write-ahead ([`Exchange::poll_send_room`]) is the
//! one shared count: response bodies add what they hand hyper, the gate takes off what it
//! writes.

use std::cell::{Cell, RefCell};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use http::StatusCode;

use crate::conn::WRITE_AHEAD;
use crate::conn::service::Exchange;

/// How many requests back the body sizes are kept: the body of a request still being answered
/// when this many more pipelined requests, each with a body, have been read reports 0.
const BODIES_KEPT: usize = 4;

/// One HTTP/1 connection's link between its gate and its service stack.
pub(crate) struct Link {
    // Written by the gate.
    /// The request (by number) whose body the gate let through: the body timer starts when
    /// the service is called for it.
    body_pending: Cell<u64>,
    /// Why a request's body could not be read whole: the request's number on the connection
    /// (1 for the first), and the status to answer.
    body_error: Cell<Option<(u64, StatusCode)>>,
    /// Bytes of the latest requests' bodies read, by request number.
    bodies: [Cell<(u64, u64)>; BODIES_KEPT],

    // Written by the service stack.
    /// When the service was called for the request whose body is pending.
    started_at: Cell<Instant>,
    /// The gate, waiting for a request to start or end.
    gate: RefCell<Option<Waker>>,

    // The write-ahead: response bodies add, the gate takes off.
    /// Response body bytes handed to hyper and not yet written to the client, in hyper's
    /// buffer or held back by the gate (less the heads', which the count does not tell apart:
    /// a few hundred bytes per response). Set to zero when nothing is left (see
    /// [`Link::all_sent`]).
    unsent: Cell<usize>,
    /// A response body waiting for the client to read, until `unsent` is below
    /// [`WRITE_AHEAD`].
    writable: Cell<Option<Waker>>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            body_pending: Cell::new(0),
            body_error: Cell::new(None),
            bodies: Default::default(),
            started_at: Cell::new(Instant::now()),
            gate: RefCell::new(None),
            unsent: Cell::new(0),
            writable: Cell::new(None),
        }
    }
}

impl Link {
    fn wake_gate(&self) {
        if let Some(gate) = self.gate.borrow_mut().take() {
            gate.wake();
        }
    }

    /// Has the gate woken when a request starts or ends.
    pub(super) fn wake_on_request(&self, waker: &Waker) {
        *self.gate.borrow_mut() = Some(waker.clone());
    }

    /// When the service was last called for a request with a body.
    pub(super) fn started_at(&self) -> Instant {
        self.started_at.get()
    }

    /// The gate let through request `number`, which has a body.
    pub(super) fn expect_body(&self, number: u64) {
        self.body_pending.set(number);
    }

    /// Records that request `number`'s body is broken: its response must say so.
    pub(super) fn set_body_error(&self, number: u64, status: StatusCode) {
        self.body_error.set(Some((number, status)));
    }

    /// `n` more bytes of request `number`'s body were read.
    pub(super) fn body_read(&self, number: u64, n: u64) {
        let cell = &self.bodies[number as usize % BODIES_KEPT];
        let (was, bytes) = cell.get();
        cell.set((number, if was == number { bytes + n } else { n }));
    }

    /// `n` bytes were written to the client.
    pub(super) fn sent(&self, n: usize) {
        let unsent = self.unsent.get().saturating_sub(n);
        self.unsent.set(unsent);
        if unsent < WRITE_AHEAD {
            if let Some(body) = self.writable.take() {
                body.wake();
            }
        }
    }

    /// Everything hyper was given has been written, or is gone with hyper's connection: no
    /// byte of a body is waiting for the client. The count is set right here, so that it
    /// cannot drift: hyper writes no more of a body than its `Content-Length` says and drops
    /// the rest, which was counted and will never be written (nor counted off); a count left
    /// that high would hold the connection's next responses back for ever.
    pub(super) fn all_sent(&self) {
        if self.unsent.get() != 0 {
            self.unsent.set(0);
            if let Some(body) = self.writable.take() {
                body.wake();
            }
        }
    }
}

impl Exchange for Link {
    /// The service was called for request `number`.
    fn request_started(&self, number: u64) {
        if self.body_pending.get() == number {
            self.started_at.set(Instant::now());
        }
        self.wake_gate();
    }

    /// A request's response is finished (or abandoned).
    fn request_finished(&self) {
        self.wake_gate();
    }

    /// Why request `number`'s body could not be read whole, if it could not.
    fn body_error(&self, number: u64) -> Option<StatusCode> {
        self.body_error.get().filter(|(n, _)| *n == number).map(|(_, s)| s)
    }

    /// Bytes of request `number`'s body read so far.
    fn body_bytes(&self, number: u64) -> u64 {
        match self.bodies[number as usize % BODIES_KEPT].get() {
            (was, bytes) if was == number => bytes,
            _ => 0,
        }
    }

    /// Whether a response body may give hyper more: only while less than [`WRITE_AHEAD`] of
    /// what it gave is unwritten; if not, the body's task is woken once the client has read
    /// enough. hyper copies body bytes into its own buffer until 400 KiB wait there, and
    /// writes only then: for a client that does not read, that buffer is what the worker
    /// spends on it. With this, hyper writes after each chunk that reaches `WRITE_AHEAD`.
    fn poll_send_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.unsent.get() < WRITE_AHEAD {
            return Poll::Ready(());
        }
        self.writable.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    /// A response body gave hyper `n` bytes to write.
    fn handed(&self, n: usize) {
        self.unsent.set(self.unsent.get() + n);
    }

    /// Bytes handed to hyper and not yet written.
    fn unsent(&self) -> usize {
        self.unsent.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_sizes_are_kept_per_request_for_the_latest_few() {
        let link = Link::default();
        link.body_read(1, 5);
        link.body_read(1, 7);
        link.body_read(2, 3);
        assert_eq!((link.body_bytes(1), link.body_bytes(2), link.body_bytes(3)), (12, 3, 0));
        link.body_read(1 + BODIES_KEPT as u64, 1);
        assert_eq!(link.body_bytes(1), 0, "too far back");
        assert_eq!(link.body_bytes(1 + BODIES_KEPT as u64), 1);
    }
}
