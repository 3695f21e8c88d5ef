//! The stack's side of its contract with a protocol, over a fake [`Exchange`]: what any
//! protocol (HTTP/1's link today, HTTP/2's next) is told and asked, whatever carries the bytes.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Body;

use super::accounting::InFlight;
use super::body::FRAME_MAX;
use super::{
    Connection, Exchange, Guarded, RequestLine, Requests, ResponseBody, ResponseEnd, Stack,
};
use crate::config::AllowList;
use crate::conn::drain::{Conns, Open};
use crate::request_end::{Ending, Hooks};
use crate::scoreboard::{Board, Scoreboard};

/// A protocol that records what the stack tells it, and answers what the test says.
#[derive(Default)]
struct Fake {
    started: RefCell<Vec<u64>>,
    finished: Cell<u32>,
    body_error: Cell<Option<(u64, StatusCode)>>,
    body_bytes: Cell<u64>,
    room: Cell<bool>,
    handed: Cell<usize>,
    unsent: Cell<usize>,
    piece: Cell<Option<usize>>,
    /// Responses handed over whole, waiting for the test to say they are written.
    whole: RefCell<Vec<ResponseEnd>>,
}

impl Exchange for Fake {
    fn request_started(&self, number: u64) {
        self.started.borrow_mut().push(number);
    }

    fn request_finished(&self) {
        self.finished.set(self.finished.get() + 1);
    }

    fn body_error(&self, number: u64) -> Option<StatusCode> {
        self.body_error.get().filter(|(n, _)| *n == number).map(|(_, s)| s)
    }

    fn body_bytes(&self, _: u64) -> u64 {
        self.body_bytes.get()
    }

    fn poll_send_room(&self, _: &mut Context<'_>) -> Poll<()> {
        if self.room.get() { Poll::Ready(()) } else { Poll::Pending }
    }

    fn handed(&self, n: usize) {
        self.handed.set(self.handed.get() + n);
    }

    fn unsent(&self) -> usize {
        self.unsent.get()
    }

    fn piece_max(&self) -> Option<usize> {
        self.piece.get()
    }

    fn handed_whole(&self, end: ResponseEnd) {
        self.whole.borrow_mut().push(end);
    }
}

/// What one request's end event said: status, ending, response and request body bytes.
type Seen = Rc<RefCell<Vec<(Option<StatusCode>, Ending, u64, u64)>>>;

/// A connection's stack over a [`Fake`], with a hook that records every request's end.
fn connection() -> (Rc<Connection<Fake>>, Rc<Fake>, Seen, Open) {
    let scoreboard = Scoreboard::new().unwrap();
    let index = scoreboard.claim(1, 1).unwrap();
    let hooks = Hooks::default();
    let seen = Seen::default();
    let events = Rc::clone(&seen);
    hooks.add(Box::new(move |e| {
        let end = (e.status(), e.ending(), e.response_body_bytes(), e.request_body_bytes());
        events.borrow_mut().push(end);
    }));
    let board = Board::new(scoreboard.all(), index, 64);
    let requests = Requests::new(board, None, None, AllowList::none(), false, hooks.take(1));
    let open = Conns::default().open(None);
    let fake = Rc::new(Fake::default());
    let stack = Stack {
        service: Rc::new(()),
        requests: Rc::new(requests),
        slot: Rc::clone(open.slot()),
        facts: Rc::default(),
    };
    (stack.over(Rc::clone(&fake)).conn, fake, seen, open)
}

/// The body of a `200` to the request `in_flight`.
fn answered(mut in_flight: InFlight<Fake>, body: Full<Bytes>) -> ResponseBody<Full<Bytes>, Fake> {
    in_flight.record().expect("a hook is registered").status = Some(StatusCode::OK);
    ResponseBody::new(Either::Left(body), None, None, Some(in_flight))
}

/// Polls `body` once: the size of the data frame it gave, if it gave one.
fn poll<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Poll<Option<usize>> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(body)
        .poll_frame(&mut cx)
        .map(|f| f.map(|f| f.ok().and_then(|f| f.into_data().ok()).map_or(0, |d| d.len())))
}

#[test]
fn a_body_is_handed_over_in_pieces_no_larger_than_the_protocol_asks() {
    let (conn, fake, _seen, _open) = connection();
    fake.room.set(true);
    fake.piece.set(Some(100));
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    let mut body = answered(in_flight, Full::new(Bytes::from(vec![b'x'; 250])));
    assert_eq!(poll(&mut body), Poll::Ready(Some(100)));
    assert!(!body.is_end_stream(), "more to come");
    assert_eq!(poll(&mut body), Poll::Ready(Some(100)));
    assert_eq!(fake.handed.get(), 200, "each piece counted as it is handed over");
    assert_eq!(poll(&mut body), Poll::Ready(Some(49)), "the last piece...");
    assert!(!body.is_end_stream(), "...its last byte to come");
    assert_eq!(poll(&mut body), Poll::Ready(Some(1)));
    assert!(body.is_end_stream());
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    let mut small = answered(in_flight, Full::new(Bytes::from(vec![b'x'; 100])));
    assert_eq!(poll(&mut small), Poll::Ready(Some(100)), "not over: whole");
    // Whatever the protocol asks, no piece is larger than `FRAME_MAX`, nor empty.
    fake.piece.set(Some(usize::MAX));
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    let mut big = answered(in_flight, Full::new(Bytes::from(vec![b'x'; FRAME_MAX + 1])));
    assert_eq!(poll(&mut big), Poll::Ready(Some(FRAME_MAX)));
    assert_eq!(poll(&mut big), Poll::Ready(Some(1)));
    fake.piece.set(Some(0));
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    let mut tiny = answered(in_flight, Full::new(Bytes::from(vec![b'x'; 3])));
    assert_eq!(poll(&mut tiny), Poll::Ready(Some(1)));
    assert_eq!(poll(&mut tiny), Poll::Ready(Some(1)));
    assert_eq!(poll(&mut tiny), Poll::Ready(Some(1)));
    assert!(tiny.is_end_stream());
}

#[test]
fn without_a_piece_asked_for_frames_are_only_cut_to_frame_max() {
    let (conn, fake, _seen, _open) = connection();
    fake.room.set(true);
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    let mut body = answered(in_flight, Full::new(Bytes::from(vec![b'x'; FRAME_MAX + 101])));
    assert_eq!(poll(&mut body), Poll::Ready(Some(FRAME_MAX)));
    assert_eq!(poll(&mut body), Poll::Ready(Some(101)), "whole, its last byte with it");
    assert!(body.is_end_stream());
}

#[test]
fn a_body_hands_the_protocol_what_it_has_room_for_and_ends_the_request() {
    let (conn, fake, seen, _open) = connection();
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    assert_eq!(*fake.started.borrow(), [1], "told before the app is called, with its number");
    let whole = Full::new(Bytes::from(vec![b'x'; FRAME_MAX + 10]));
    let mut body = answered(in_flight, whole);
    assert_eq!(poll(&mut body), Poll::Pending, "no room: nothing handed over");
    assert_eq!(fake.handed.get(), 0);
    fake.room.set(true);
    assert_eq!(poll(&mut body), Poll::Ready(Some(FRAME_MAX)), "in pieces");
    assert_eq!(poll(&mut body), Poll::Ready(Some(10)));
    assert_eq!(fake.handed.get(), FRAME_MAX + 10);
    assert_eq!(fake.finished.get(), 0);
    fake.body_bytes.set(7);
    assert_eq!(poll(&mut body), Poll::Ready(None));
    assert_eq!(fake.finished.get(), 1, "the request ends with its body");
    assert!(seen.borrow().is_empty(), "its event waits for the protocol to write it");
    fake.body_bytes.set(8);
    let end = fake.whole.borrow_mut().pop().expect("handed over whole");
    end.written();
    let whole = (FRAME_MAX + 10) as u64;
    assert_eq!(*seen.borrow(), [(Some(StatusCode::OK), Ending::Complete, whole, 7)]);
}

#[test]
fn a_whole_response_the_protocol_could_not_write_is_cut_with_what_was_written() {
    let (conn, fake, seen, _open) = connection();
    fake.room.set(true);
    for unwritten in [Some(4), None] {
        let in_flight = InFlight::start(&conn, &Request::new(()), None);
        let mut body = answered(in_flight, Full::new(Bytes::from_static(b"0123456789")));
        assert_eq!(poll(&mut body), Poll::Ready(Some(10)));
        assert_eq!(poll(&mut body), Poll::Ready(None));
        let end = fake.whole.borrow_mut().pop().expect("handed over whole");
        match unwritten {
            Some(n) => end.cut(n),
            // Dropped by a protocol that never said: cut, none of it counted.
            None => drop(end),
        }
    }
    let cut = |n| (Some(StatusCode::OK), Ending::Cut, n, 0);
    assert_eq!(*seen.borrow(), [cut(6), cut(0)]);
}

#[test]
fn a_cut_response_counts_only_what_the_protocol_wrote() {
    let (conn, fake, seen, _open) = connection();
    let in_flight = InFlight::start(&conn, &Request::new(()), None);
    let whole = Full::new(Bytes::from_static(b"0123456789"));
    let mut body = answered(in_flight, whole);
    fake.room.set(true);
    assert_eq!(poll(&mut body), Poll::Ready(Some(10)));
    fake.unsent.set(4);
    drop(body);
    assert_eq!(fake.finished.get(), 1);
    assert_eq!(*seen.borrow(), [(Some(StatusCode::OK), Ending::Cut, 6, 0)]);
}

#[test]
fn a_body_the_protocol_refused_replaces_the_apps_response() {
    let (conn, fake, seen, _open) = connection();
    let _first = InFlight::start(&conn, &Request::new(()), None);
    let second = InFlight::start(&conn, &Request::new(()), None);
    assert_eq!(*fake.started.borrow(), [1, 2]);
    fake.body_error.set(Some((2, StatusCode::PAYLOAD_TOO_LARGE)));
    let app = std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))));
    let request = RequestLine { method: http::Method::POST, uri: "/up".parse().unwrap() };
    let mut guarded =
        Box::pin(Guarded { future: Some(app), request, deadline: None, in_flight: Some(second) });
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(response)) = guarded.as_mut().poll(&mut cx) else { panic!("not ready") };
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    drop(response);
    assert_eq!(seen.borrow()[0].0, Some(StatusCode::PAYLOAD_TOO_LARGE), "and its end says so");
}
