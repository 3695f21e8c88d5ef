//! Request accounting, the service stack's second layer: each request counted on the
//! scoreboard (and `max_requests`), on its connection's [`Slot`](crate::conn::drain::Slot)
//! and by its protocol (see [`Exchange`]), from when the app is called until its response is
//! done or cut ([`InFlight`]); and its one [`RequestEnd`] event, built from what [`Record`]
//! kept, only with a hook registered ([`ResponseEnd`]): at once for a response cut, and for
//! one handed over whole, once its protocol has written its last byte.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use tokio::sync::Notify;

use super::{Connection, Exchange};
use crate::config::AllowList;
use crate::conn::drain::Tally;
use crate::request_end::{AnsweredBy, Ending, RequestEnd, Side, Sink, Target};
use crate::scoreboard::{Board, Line};

/// What every request of a worker shares: its scoreboard slot and the limits on requests.
pub(crate) struct Requests {
    pub(crate) board: Board,
    /// `request_timeout`.
    pub(super) timeout: Option<Duration>,
    /// The number of requests after which the worker asks to be replaced (`max_requests` plus
    /// its jitter).
    pub(crate) recycle_after: Option<u64>,
    /// Wakes the task that asks the master for a successor.
    pub(crate) recycle: Notify,
    /// `forwarded_allow_ips`.
    pub(super) forwarded: AllowList,
    /// Whether requests carry the `Client` extension (see `WorkerContext::without_client`).
    pub(super) client: bool,
    /// Where requests end, if a hook is registered.
    sink: Option<Rc<Sink>>,
    /// Boxes for [`Record`]s, kept for reuse: the boxes themselves are the point (a request
    /// takes one whole), so they stay boxed in the list.
    #[allow(clippy::vec_box)]
    spare: RefCell<Vec<Box<Record>>>,
}

impl Tally for Requests {
    fn opened(&self) {
        self.board.connection_opened();
    }

    fn closed(&self) {
        self.board.connection_closed();
    }

    fn parked(&self) {
        self.board.connection_parked();
    }

    fn unparked(&self) {
        self.board.connection_unparked();
    }
}

impl Requests {
    pub(crate) fn new(
        board: Board,
        timeout: Option<Duration>,
        recycle_after: Option<u64>,
        forwarded: AllowList,
        client: bool,
        sink: Option<Rc<Sink>>,
    ) -> Self {
        Requests {
            board,
            timeout,
            recycle_after,
            recycle: Notify::new(),
            forwarded,
            client,
            sink,
            spare: RefCell::default(),
        }
    }
}

/// What a request keeps for its end event, only with a hook registered. Boxed, so that the
/// futures and bodies hyper moves stay small without a hook; the boxes are reused (see
/// [`Requests::spare`]), so that a hook costs no allocation per request either.
pub(super) struct Record {
    method: Method,
    uri: Uri,
    version: Version,
    /// When the app was called.
    started: Instant,
    /// The client as identified, and the connection's peer.
    client: Option<IpAddr>,
    peer: Option<SocketAddr>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// The headers the hooks asked for (see [`Sink::copy_headers`]): the request's, and the
    /// response's once it has started.
    request_headers: Vec<Option<HeaderValue>>,
    response_headers: Vec<Option<HeaderValue>>,
    /// The response's status, once there is one.
    pub(super) status: Option<StatusCode>,
    /// Response body bytes handed to the protocol.
    pub(super) handed: u64,
    /// The body was handed over whole (set from `is_end_stream`, hence a `Cell`).
    pub(super) whole: Cell<bool>,
}

impl Record {
    /// Lets go of what the request's buffers hold, for the box to be kept for another.
    fn clear(&mut self) {
        self.method = Method::GET;
        self.uri = Uri::default();
        self.referer = None;
        self.user_agent = None;
        // The vectors keep their room for the next request.
        self.request_headers.clear();
        self.response_headers.clear();
    }
}

/// How many boxes of [`Record`] a worker keeps for reuse: as many requests as are in flight
/// at once, up to this.
const SPARE_RECORDS: usize = 64;

/// One request in flight, until its response has been sent or abandoned: dropping it ends the
/// request, on the scoreboard, on its connection, and in its one [`RequestEnd`] event.
pub(super) struct InFlight<X: Exchange> {
    pub(super) conn: Rc<Connection<X>>,
    pub(super) id: u64,
    /// The request's number on its connection.
    pub(super) number: u64,
    /// Only with a hook registered.
    pub(super) record: Option<Box<Record>>,
}

impl<X: Exchange> Drop for InFlight<X> {
    fn drop(&mut self) {
        let conn = &self.conn;
        conn.requests.board.request_finished(self.id);
        conn.slot.request_finished();
        conn.exchange.request_finished();
        conn.slot.conns().queue_for_parking(&conn.slot);
        if let Some(record) = self.record.take() {
            let end = ResponseEnd {
                record: Some(record),
                requests: Rc::clone(&conn.requests),
                request_body_bytes: conn.exchange.body_bytes(self.number),
            };
            if end.whole() {
                // Complete only once its last byte has left the worker: the protocol says when.
                conn.exchange.handed_whole(end);
            } else {
                // What the protocol still holds was not written.
                end.cut(conn.exchange.unsent() as u64);
            }
        }
    }
}

/// A request's end event, once its response is done with or cut: only with a hook
/// registered. A response handed over whole waits, held by its protocol (see
/// [`Exchange::handed_whole`]), until its last byte is written ([`ResponseEnd::written`]),
/// or the connection ends first ([`ResponseEnd::cut`]). Dropped without either, it is sent
/// as cut, with none of its body counted as written: a request always ends in one event.
pub(crate) struct ResponseEnd {
    record: Option<Box<Record>>,
    requests: Rc<Requests>,
    /// Read when the response was done with: the protocol keeps it for a few requests only.
    request_body_bytes: u64,
}

impl ResponseEnd {
    /// Whether the whole response was handed over: a body that ended, or one there is none of
    /// to send (a response to HEAD, a 204, a 304), once a response started.
    fn whole(&self) -> bool {
        let Some(r) = self.record.as_deref() else { return false };
        let bodiless = r.method == Method::HEAD
            || r.status
                .is_some_and(|s| s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED);
        r.status.is_some() && (r.whole.get() || bodiless)
    }

    /// Bytes of the response's body handed to the protocol.
    pub(crate) fn handed(&self) -> u64 {
        self.record.as_deref().map_or(0, |r| r.handed)
    }

    /// The response's last byte is written: the request ends `Complete`, now.
    pub(crate) fn written(mut self) {
        let handed = self.handed();
        self.send(Ending::Complete, handed);
    }

    /// The connection ended with `unwritten` bytes of the response not written (the last of
    /// its body, as far as the protocol can tell): the request ends `Cut`, with the rest.
    pub(crate) fn cut(mut self, unwritten: u64) {
        let written = self.handed().saturating_sub(unwritten);
        self.send(Ending::Cut, written);
    }

    fn send(&mut self, ending: Ending, response_body_bytes: u64) {
        let Some(mut r) = self.record.take() else { return };
        if let Some(sink) = &self.requests.sink {
            sink.emit(&RequestEnd {
                method: Some(r.method.as_str()),
                target: Target::Uri(&r.uri),
                version: Some(r.version),
                status: r.status,
                request_body_bytes: self.request_body_bytes,
                response_body_bytes,
                duration: r.started.elapsed(),
                client: r.client,
                peer: r.peer,
                referer: r.referer.as_ref(),
                user_agent: r.user_agent.as_ref(),
                request_headers: &r.request_headers,
                response_headers: &r.response_headers,
                worker: sink.worker(),
                answered_by: AnsweredBy::App,
                ending,
            });
        }
        r.clear();
        let mut spare = self.requests.spare.borrow_mut();
        if spare.len() < SPARE_RECORDS {
            spare.push(r);
        }
    }
}

impl Drop for ResponseEnd {
    fn drop(&mut self) {
        self.send(Ending::Cut, 0);
    }
}

impl<X: Exchange> InFlight<X> {
    /// Records a request on `conn` starting, the app about to be called for it, with `client`
    /// as identified; the returned guard records its end when dropped.
    pub(super) fn start<B>(
        conn: &Rc<Connection<X>>,
        req: &Request<B>,
        client: Option<IpAddr>,
    ) -> Self {
        let requests = &conn.requests;
        let (method, uri) = (req.method(), req.uri());
        let id = requests.board.request_started(Line::new(method.as_str(), uri.path()));
        if requests.recycle_after == Some(requests.board.served()) {
            requests.recycle.notify_one();
        }
        let number = conn.slot.request_started();
        conn.exchange.request_started(number);
        let record = requests.sink.as_ref().map(|sink| {
            let mut spare = requests.spare.borrow_mut().pop();
            // A spare box's header vectors (cleared) are reused, with their room.
            let (mut request_headers, response_headers) = match spare.as_deref_mut() {
                Some(s) => (
                    std::mem::take(&mut s.request_headers),
                    std::mem::take(&mut s.response_headers),
                ),
                None => (Vec::new(), Vec::new()),
            };
            sink.copy_headers(Side::Request, req.headers(), &mut request_headers);
            let record = Record {
                method: method.clone(),
                uri: uri.clone(),
                version: req.version(),
                started: Instant::now(),
                client,
                peer: conn.facts.client(),
                referer: req.headers().get(header::REFERER).cloned(),
                user_agent: req.headers().get(header::USER_AGENT).cloned(),
                request_headers,
                response_headers,
                status: None,
                handed: 0,
                whole: Cell::new(false),
            };
            match spare {
                Some(mut spare) => {
                    *spare = record;
                    spare
                }
                None => Box::new(record),
            }
        });
        InFlight { conn: Rc::clone(conn), id, number, record }
    }

    /// Records the response's start: its status, and the headers the hooks asked for.
    pub(super) fn response_started(&mut self, status: StatusCode, headers: &http::HeaderMap) {
        let (Some(record), Some(sink)) = (self.record.as_deref_mut(), &self.conn.requests.sink)
        else {
            return;
        };
        record.status = Some(status);
        sink.copy_headers(Side::Response, headers, &mut record.response_headers);
    }

    pub(super) fn record(&mut self) -> Option<&mut Record> {
        self.record.as_deref_mut()
    }
}
