//! What an HTTP/2 connection tells the service stack ([`Exchange`]), for all its streams at
//! once, keyed by the request number the stack gives each.
//!
//! hyper does not say which h2 stream a request is, and the app's body is hyper's own
//! `Incoming`, which the stack cannot wrap; so what HTTP/1's gate measures byte by byte is
//! simpler here (see "HTTP/2" in the README): a request's body size is the `Content-Length`
//! it declared (a body sent without one counts 0), and a response is complete once its last
//! frame is handed to h2, which writes it at the pace the client's flow control allows.
//!
//! A body sent without `Content-Length` that crosses `max_body_size` ends the connection (see
//! `frames`); which request it was is not knowable either, so each request whose body had no
//! declared length, still in progress then, is refused `413` as HTTP/1's gate refuses such a
//! body: its response, if it can still be written, and its end say so.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll};

use http::StatusCode;

use super::watch;
use super::wire::Stop;
use crate::conn::service::{Exchange, ResponseEnd};

/// How many requests with a body of no declared length are remembered: more than a connection
/// has at once (`max_concurrent_streams`); those the app never answered go first.
const UNSIZED_KEPT: usize = 1024;

/// One HTTP/2 connection's streams, as the service stack sees them.
pub(crate) struct Streams {
    /// Whether request-end events are sent (a hook is registered): only then are body sizes
    /// kept, as only then are they read.
    counting: bool,
    /// The declared body length of the request the request layer is handing the stack now:
    /// the stack numbers it synchronously ([`Exchange::request_started`]), on this thread.
    declared: Cell<u64>,
    /// Declared body lengths of requests in progress, by number, until their end event
    /// reads them.
    bodies: RefCell<HashMap<u64, u64>>,
    /// `max_send_buf`: the largest piece of body handed to h2 at once, and a last frame split
    /// into such pieces keeps its last byte apart (see [`Exchange::piece_max`]).
    send_buf: usize,
    /// Whether the request being handed to the stack has a body with no declared length.
    unsized_next: Cell<bool>,
    /// Such requests in progress, by number, oldest first.
    unsized_bodies: RefCell<VecDeque<u64>>,
    /// The connection's breach, if the scanner found one.
    stop: Rc<Stop>,
}

impl Streams {
    pub(crate) fn new(counting: bool, send_buf: usize, stop: Rc<Stop>) -> Self {
        Streams {
            counting,
            declared: Cell::new(0),
            bodies: RefCell::new(HashMap::new()),
            send_buf,
            unsized_next: Cell::new(false),
            unsized_bodies: RefCell::new(VecDeque::new()),
            stop,
        }
    }

    /// The request about to be handed to the stack declared a body of `n` bytes.
    pub(crate) fn declare_body(&self, n: u64) {
        self.declared.set(n);
    }

    /// The request about to be handed to the stack has a body and no `Content-Length`.
    pub(crate) fn declare_unsized(&self) {
        self.unsized_next.set(true);
    }
}

impl Exchange for Streams {
    /// hyper strips `Connection` from h2 responses (RFC 9113 §8.2.2); a draining connection
    /// says GOAWAY instead.
    const CLOSE_HEADER: bool = false;

    fn request_started(&self, number: u64) {
        let declared = self.declared.replace(0);
        if self.counting && declared > 0 {
            self.bodies.borrow_mut().insert(number, declared);
        }
        if self.unsized_next.replace(false) {
            let mut unsized_bodies = self.unsized_bodies.borrow_mut();
            if unsized_bodies.len() == UNSIZED_KEPT {
                unsized_bodies.pop_front();
            }
            unsized_bodies.push_back(number);
        }
    }

    fn request_finished(&self) {}

    fn body_error(&self, number: u64) -> Option<StatusCode> {
        // A declared body over `max_body_size` is refused before the stack (see `request`);
        // one without a declared length, by the connection's end (see the module's header).
        // Asked once, as the request's response starts.
        let mut unsized_bodies = self.unsized_bodies.borrow_mut();
        let at = unsized_bodies.iter().position(|&n| n == number)?;
        unsized_bodies.remove(at);
        self.stop.body_refused().then_some(StatusCode::PAYLOAD_TOO_LARGE)
    }

    fn body_bytes(&self, number: u64) -> u64 {
        // Read once, by the request's end event: taken out then.
        self.bodies.borrow_mut().remove(&number).unwrap_or(0)
    }

    fn poll_send_room(&self, _cx: &mut Context<'_>) -> Poll<()> {
        // h2 polls a body for more only while the stream has send capacity: each stream
        // holds at most `max_send_buf` and a frame. Being polled is the stream's progress.
        watch::polled();
        Poll::Ready(())
    }

    fn handed(&self, n: usize) {
        watch::handed(n);
    }

    fn piece_max(&self) -> Option<usize> {
        // h2 takes a piece whole once the stream's window covers all it holds for the stream
        // and one byte more, and only then is the body polled for the next: what a client must
        // read to make progress is a piece, so pieces of `max_send_buf` (16 KiB), whatever the
        // app or the file cache hands over, keep that small for `send_timeout` (a cached file
        // in one piece would have to be read whole in `send_timeout`). Once h2 has taken a
        // body's last piece, hyper's stream task ends, with no one to watch what h2 still
        // holds: the last byte of a frame split into pieces, apart, waits until the stream's
        // window covers all that h2 holds for it, watched; what is left then is at most
        // `max_send_buf`, and only the socket can hold it back (the wire's `send_timeout`).
        // Smaller last frames are left whole: what they leave unwatched is as small.
        Some(self.send_buf)
    }

    fn unsent(&self) -> usize {
        // The piece that waits for the stream's capacity; what h2 buffered before it is not
        // knowable: a cut stream reports it as written.
        watch::unsent()
    }

    fn handed_whole(&self, end: ResponseEnd) {
        // Handed whole to hyper, and taken by h2 unless its stream was cut at `send_timeout`
        // with the last piece still waiting for room.
        match watch::unsent() {
            0 => end.written(),
            unsent => end.cut(unsent as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_body_is_counted_for_the_request_it_was_declared_by() {
        let streams = Streams::new(true, 16384, Rc::default());
        streams.declare_body(10);
        streams.request_started(1);
        streams.request_started(2);
        streams.declare_body(7);
        streams.request_started(3);
        assert_eq!(streams.body_bytes(2), 0);
        assert_eq!(streams.body_bytes(3), 7);
        assert_eq!(streams.body_bytes(1), 10);
        assert_eq!(streams.body_bytes(1), 0, "taken out once read");
        let quiet = Streams::new(false, 16384, Rc::default());
        quiet.declare_body(10);
        quiet.request_started(1);
        assert!(quiet.bodies.borrow().is_empty(), "nothing kept without a reader");
    }
}
