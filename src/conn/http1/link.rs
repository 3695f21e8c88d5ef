//! What the gate and the service stack tell each other on one HTTP/1 connection, and nothing
//! else: private to the HTTP/1 protocol. The service stack sees it only as its [`Exchange`].
//! Each side writes its own half. The gate writes what it found in the request bodies
//! ([`Link::expect_body`], [`Link::set_body_error`], [`Link::body_read`]); the service stack
//! writes when the app was called for a request ([`Exchange::request_started`]) and wakes the
//! gate when a request starts or ends. The write-ahead ([`Exchange::poll_send_room`]) is the
//! one shared count: response bodies add what they hand hyper, the gate takes off what it
//! writes. The end events of responses handed over whole wait here
//! ([`Exchange::handed_whole`]) until the gate has written their last byte: hyper's flush
//! says where the responses it was given end ([`Link::flushed`]), the gate's writes how far
//! the output has gone ([`Link::sent`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use http::StatusCode;

use crate::conn::WRITE_AHEAD;
use crate::conn::service::{Exchange, ResponseEnd};

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

    // The end events of responses handed over whole, until their last byte is written:
    // filled by the service stack (only with a hook), emptied as the gate writes.
    /// Bytes of hyper's output written to the client, counted only while `waiting` is not
    /// zero: only the distance from a flush to a later write matters.
    written: Cell<u64>,
    /// How many responses are in `ends`: the one thing the gate looks at when none is.
    waiting: Cell<usize>,
    /// Responses handed over whole whose last byte is not written yet, oldest first, each
    /// with where it ends in hyper's output (as `written` counts), once known: at hyper's next
    /// flush, when all it was given is written or held back by the gate (see
    /// [`Link::flushed`]).
    ends: RefCell<VecDeque<(Option<u64>, ResponseEnd)>>,
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
            written: Cell::new(0),
            waiting: Cell::new(0),
            ends: RefCell::default(),
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

    /// `n` bytes of hyper's output were written to the client.
    pub(super) fn sent(&self, n: usize) {
        let unsent = self.unsent.get().saturating_sub(n);
        self.unsent.set(unsent);
        if unsent < WRITE_AHEAD {
            if let Some(body) = self.writable.take() {
                body.wake();
            }
        }
        if self.waiting.get() != 0 {
            self.written.set(self.written.get() + n as u64);
            self.deliver();
        }
    }

    /// Whether responses handed over whole wait for their last byte to be written.
    pub(super) fn waiting(&self) -> bool {
        self.waiting.get() != 0
    }

    /// hyper flushes, with `held` bytes of its output held back by the gate: hyper writes all
    /// it holds before it flushes, so each response handed over whole ends at most that much
    /// after what is written.
    pub(super) fn flushed(&self, held: u64) {
        let end = self.written.get() + held;
        for (known, _) in self.ends.borrow_mut().iter_mut().rev() {
            if known.is_some() {
                break;
            }
            *known = Some(end);
        }
        self.deliver();
    }

    /// Sends the end events of the responses whose last byte is written.
    fn deliver(&self) {
        loop {
            let mut ends = self.ends.borrow_mut();
            match ends.front() {
                Some((Some(end), _)) if *end <= self.written.get() => {}
                _ => return,
            }
            let (_, end) = ends.pop_front().expect("looked at");
            self.waiting.set(ends.len());
            // Not borrowed while a hook runs.
            drop(ends);
            end.written();
        }
    }

    /// hyper's connection ended, and its buffers with it, with `held` bytes of its output
    /// still held back by the gate. After a clean end hyper had flushed all it was given;
    /// otherwise what it held is gone, and so is the connection: every response still waiting
    /// is cut, with what of it was written.
    pub(super) fn hyper_ended(&self, clean: bool, held: u64) {
        if self.waiting() {
            if clean {
                self.flushed(held);
            } else {
                self.cut_waiting(held);
            }
        }
        self.all_sent();
    }

    /// Cuts every response still waiting for its last byte to be written, `held` bytes of
    /// hyper's output still held back by the gate.
    fn cut_waiting(&self, held: u64) {
        let written = self.written.get();
        // Where hyper never said where a response ends, its tail was in hyper's buffer: as
        // much of its body as `unsent` says, at least what the gate held.
        let lost = (self.unsent.get() as u64).max(held);
        let waiting = std::mem::take(&mut *self.ends.borrow_mut());
        self.waiting.set(0);
        for (end, response) in waiting {
            let unwritten = end.map_or(lost, |end| end.saturating_sub(written));
            response.cut(unwritten);
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

    /// A response was handed to hyper whole: its end event waits for its last byte to be
    /// written (see [`Link::flushed`]).
    fn handed_whole(&self, end: ResponseEnd) {
        let mut ends = self.ends.borrow_mut();
        ends.push_back((None, end));
        self.waiting.set(ends.len());
    }
}

impl Drop for Link {
    /// A connection that ends with responses not written (its task dropped) cuts them.
    fn drop(&mut self) {
        if self.waiting() {
            self.cut_waiting(0);
        }
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
