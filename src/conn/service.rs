//! The service stack every request passes, in order: client identity (trusted forwarding
//! headers, see [`crate::client`]), request accounting (the scoreboard, `max_requests`, the
//! connection's slot), the request deadline (`request_timeout`: a `504`), the panic guard (a
//! handler's panic or error becomes a `500`, so that one bad request never takes the worker,
//! or the other requests on it, down), then the app. Each request's end is one
//! [`RequestEnd`] event, handed to the hooks when its response is done or cut (see [`InFlight`]).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::drain::{Slot, Tally};
use super::http1::Link;
use super::transport::Facts;
use crate::app::HttpService;
use crate::config::AllowList;
use crate::error::BoxError;
use crate::request_end::{AnsweredBy, Ending, RequestEnd, Sink, Target};
use crate::scoreboard::{Board, Line};

/// What every request of a worker shares: its scoreboard slot and the limits on requests.
pub(crate) struct Requests {
    pub(crate) board: Board,
    /// `request_timeout`.
    timeout: Option<Duration>,
    /// The number of requests after which the worker asks to be replaced (`max_requests` plus
    /// its jitter).
    pub(crate) recycle_after: Option<u64>,
    /// Wakes the task that asks the master for a successor.
    pub(crate) recycle: Notify,
    /// `forwarded_allow_ips`.
    forwarded: AllowList,
    /// Whether requests carry the `Client` extension (see `WorkerContext::without_client`).
    client: bool,
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
struct Record {
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
    /// The response's status, once there is one.
    status: Option<StatusCode>,
    /// Response body bytes handed to hyper.
    handed: u64,
    /// The body was handed over whole (set from `is_end_stream`, hence a `Cell`).
    whole: Cell<bool>,
}

impl Record {
    /// Lets go of what the request's buffers hold, for the box to be kept for another.
    fn clear(&mut self) {
        self.method = Method::GET;
        self.uri = Uri::default();
        self.referer = None;
        self.user_agent = None;
    }
}

/// How many boxes of [`Record`] a worker keeps for reuse: as many requests as are in flight
/// at once, up to this.
const SPARE_RECORDS: usize = 64;

/// One request in flight, until its response has been sent or abandoned: dropping it ends the
/// request, on the scoreboard, on its connection, and in its one [`RequestEnd`] event.
struct InFlight {
    conn: Rc<Connection>,
    id: u64,
    /// The request's number on its connection.
    number: u64,
    /// Only with a hook registered.
    record: Option<Box<Record>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.conn;
        conn.requests.board.request_finished(self.id);
        conn.slot.request_finished();
        conn.link.request_finished();
        conn.slot.conns().queue_for_parking(&conn.slot);
        if let Some(mut record) = self.record.take() {
            if let Some(sink) = &self.conn.requests.sink {
                self.report(sink, &record);
            }
            record.clear();
            let mut spare = self.conn.requests.spare.borrow_mut();
            if spare.len() < SPARE_RECORDS {
                spare.push(record);
            }
        }
    }
}

impl InFlight {
    fn report(&self, sink: &Sink, r: &Record) {
        // A response without a body to send (to HEAD, or 204, 304) is whole once it started.
        let bodiless = r.method == Method::HEAD
            || r.status
                .is_some_and(|s| s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED);
        let whole = r.status.is_some() && (r.whole.get() || bodiless);
        let (ending, bytes) = if whole {
            (Ending::Complete, r.handed)
        } else {
            // What is still in hyper's buffer or the gate's was not written.
            (Ending::Cut, r.handed.saturating_sub(self.conn.link.unsent() as u64))
        };
        sink.emit(&RequestEnd {
            method: Some(r.method.as_str()),
            target: Target::Uri(&r.uri),
            version: Some(r.version),
            status: r.status,
            request_body_bytes: self.conn.link.body_bytes(self.number),
            response_body_bytes: bytes,
            duration: r.started.elapsed(),
            client: r.client,
            peer: r.peer,
            referer: r.referer.as_ref(),
            user_agent: r.user_agent.as_ref(),
            worker: sink.worker(),
            answered_by: AnsweredBy::App,
            ending,
        });
    }

    fn record(&mut self) -> Option<&mut Record> {
        self.record.as_deref_mut()
    }
}

/// One connection, as the service stack sees it. Behind one `Rc`, so that what each request
/// holds of it (see [`InFlight`]), and moves with hyper's futures and bodies, stays small.
struct Connection {
    requests: Rc<Requests>,
    slot: Rc<Slot>,
    link: Rc<Link>,
    facts: Rc<Facts>,
}

/// The app's service as hyper sees it on one connection.
pub(crate) struct AppService<S> {
    service: Rc<S>,
    conn: Rc<Connection>,
}

impl<S> AppService<S> {
    /// The stack over `service` for one connection.
    pub(crate) fn new(
        service: Rc<S>,
        requests: Rc<Requests>,
        slot: Rc<Slot>,
        link: Rc<Link>,
        facts: Rc<Facts>,
    ) -> Self {
        AppService { service, conn: Rc::new(Connection { requests, slot, link, facts }) }
    }

    /// The same, for a new hyper connection on the same client connection.
    pub(crate) fn for_connection(&self) -> Self {
        AppService { service: Rc::clone(&self.service), conn: Rc::clone(&self.conn) }
    }

    pub(crate) fn slot(&self) -> &Slot {
        &self.conn.slot
    }

    pub(crate) fn link(&self) -> &Link {
        &self.conn.link
    }

    /// Records a request starting; the returned guard records its end when dropped.
    fn start(&self, req: &Request<Incoming>, client: Option<IpAddr>) -> InFlight {
        let conn = &self.conn;
        let requests = &conn.requests;
        let (method, uri) = (req.method(), req.uri());
        let id = requests.board.request_started(Line::new(method.as_str(), uri.path()));
        if requests.recycle_after == Some(requests.board.served()) {
            requests.recycle.notify_one();
        }
        let number = conn.slot.request_started();
        conn.link.request_started(number);
        let record = requests.sink.as_ref().map(|_| {
            let record = Record {
                method: method.clone(),
                uri: uri.clone(),
                version: req.version(),
                started: Instant::now(),
                client,
                peer: conn.facts.client(),
                referer: req.headers().get(header::REFERER).cloned(),
                user_agent: req.headers().get(header::USER_AGENT).cloned(),
                status: None,
                handed: 0,
                whole: Cell::new(false),
            };
            match requests.spare.borrow_mut().pop() {
                Some(mut spare) => {
                    *spare = record;
                    spare
                }
                None => Box::new(record),
            }
        });
        InFlight { conn: Rc::clone(conn), id, number, record }
    }
}

impl<S: HttpService> hyper::service::Service<Request<Incoming>> for AppService<S> {
    type Response = Response<ResponseBody<S::Body>>;
    type Error = Infallible;
    type Future = Guarded<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let requests = &self.conn.requests;
        let client = crate::client::identify(
            &mut req,
            self.conn.facts.client(),
            &requests.forwarded,
            requests.client,
        );
        let in_flight = self.start(&req, client);
        let request = RequestLine { method: req.method().clone(), uri: req.uri().clone() };
        let deadline = requests.timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let board = &requests.board;
        board.enter_handler(in_flight.id);
        let future =
            crate::panics::in_handler(|| catch_unwind(AssertUnwindSafe(|| self.service.call(req))));
        board.leave_handler();
        let future = match future {
            Ok(future) => Some(future),
            Err(_) => {
                request.log_panic();
                None
            }
        };
        Guarded { future, request, deadline, in_flight: Some(in_flight) }
    }
}

/// What is logged about a request that failed.
struct RequestLine {
    method: Method,
    uri: Uri,
}

impl RequestLine {
    fn log_panic(&self) {
        let message = crate::panics::take_message();
        tracing::error!(
            method = %self.method,
            path = %self.uri.path(),
            "handler panicked, answered 500: {message}"
        );
    }
}

pin_project_lite::pin_project! {
    #[project = GuardedProj]
    /// A call of the app's service; a panic or an error becomes a `500`, running past
    /// `request_timeout` a `504`.
    pub(crate) struct Guarded<F> {
        // `None` once the call has panicked: a future that panicked must not be polled again.
        #[pin]
        future: Option<F>,
        request: RequestLine,
        deadline: Option<Pin<Box<Sleep>>>,
        // Moves into the response body, which ends the request when it is done.
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for Guarded<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(this.respond(internal_error())));
        };
        let board = this.in_flight.as_ref().map(|f| (&f.conn.requests.board, f.id));
        if let Some((board, id)) = board {
            board.enter_handler(id);
        }
        let polled =
            crate::panics::in_handler(|| catch_unwind(AssertUnwindSafe(|| future.poll(cx))));
        if let Some((board, _)) = board {
            board.leave_handler();
        }
        match polled {
            Ok(Poll::Pending) => {
                let Some(deadline) = this.deadline.as_mut() else { return Poll::Pending };
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Dropping the app's future cancels the request.
                this.future.set(None);
                *this.deadline = None;
                tracing::warn!(
                    method = %this.request.method,
                    path = %this.request.uri.path(),
                    "request_timeout reached, answered 504"
                );
                Poll::Ready(Ok(this.respond(gateway_timeout())))
            }
            Ok(Poll::Ready(Ok(response))) => {
                Poll::Ready(Ok(this.respond(response.map(Either::Left))))
            }
            Ok(Poll::Ready(Err(e))) => {
                let e: BoxError = e.into();
                tracing::error!(
                    method = %this.request.method,
                    path = %this.request.uri.path(),
                    "handler failed, answered 500: {e}"
                );
                Poll::Ready(Ok(this.respond(internal_error())))
            }
            Err(_) => {
                this.future.set(None);
                this.request.log_panic();
                Poll::Ready(Ok(this.respond(internal_error())))
            }
        }
    }
}

impl<F> GuardedProj<'_, F> {
    /// Wraps a response's body so that it keeps the request's deadline and ends the request.
    fn respond<B>(
        &mut self,
        response: Response<Either<B, Full<Bytes>>>,
    ) -> Response<ResponseBody<B>> {
        let deadline = self.deadline.take();
        // Only a body with a deadline can log about its request.
        let request = deadline.as_ref().map(|_| {
            format!("{} {}", self.request.method, self.request.uri.path()).into_boxed_str()
        });
        let mut in_flight = self.in_flight.take();
        let mut response = response;
        if let Some(f) = &in_flight {
            if let Some(status) = f.conn.link.body_error(f.number) {
                // The request's body was refused by the gate: whatever the app made of a body
                // that ended early, the client is told what was wrong, and the connection
                // closes.
                tracing::warn!(
                    method = %self.request.method,
                    path = %self.request.uri.path(),
                    status = status.as_u16(),
                    "request body refused"
                );
                let reason = status.canonical_reason().unwrap_or("Error");
                response = plain(status, format!("{reason}\n"));
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if f.conn.slot.closing() {
                // Hyper closes the connection after a response that says so.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        if let Some(record) = in_flight.as_mut().and_then(InFlight::record) {
            record.status = Some(response.status());
        }
        response.map(|inner| ResponseBody { inner, deadline, request, in_flight, rest: None })
    }
}

pin_project_lite::pin_project! {
    /// The body of every response a worker sends: the app's, or one forkserve made. It ends the
    /// request's time in flight when done, and closes the connection if `request_timeout`
    /// passes while it is being sent.
    pub(crate) struct ResponseBody<B> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
        deadline: Option<Pin<Box<Sleep>>>,
        request: Option<Box<str>>,
        in_flight: Option<InFlight>,
        // What is left of a frame larger than `FRAME_MAX`, handed to hyper in later frames.
        rest: Option<Bytes>,
    }
}

/// The largest piece of a response body handed to hyper at once. hyper copies a frame whole
/// into its write buffer, so a 1 MiB frame (a cached static file, an app's `Full` body) would
/// hold 1 MiB in the worker for a client that does not read, whatever [`WRITE_AHEAD`] says.
/// Larger frames are split (without copying: `Bytes` slices share their memory), so that a
/// stalled client holds less than `WRITE_AHEAD` plus one piece (and a head); static files are
/// streamed in 64 KiB chunks, below this, and the kernel's socket buffer keeps a reading
/// client's writes large.
///
/// [`WRITE_AHEAD`]: crate::conn::WRITE_AHEAD
const FRAME_MAX: usize = 256 * 1024;

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let inner = this.inner;
        // A client that is not reading gets no more than the connection may hold for it.
        let room =
            this.in_flight.as_ref().is_none_or(|f| f.conn.link.poll_send_room(cx).is_ready());
        let rest = if room { this.rest.take() } else { None };
        let mut polled = match room.then(|| match rest {
            Some(rest) => Ok(Poll::Ready(Some(Ok(Frame::data(rest))))),
            None => crate::panics::in_handler(|| {
                catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx)))
            }),
        }) {
            None => Poll::Pending,
            Some(Ok(polled)) => polled,
            Some(Err(_)) => {
                // The head is sent: the connection is closed, as for any broken body.
                let message = crate::panics::take_message();
                tracing::error!("response body panicked, closing the connection: {message}");
                this.in_flight.take();
                return Poll::Ready(Some(Err("the response body panicked".into())));
            }
        };
        if let Poll::Ready(Some(Ok(frame))) = &mut polled {
            if let Some(data) = frame.data_mut() {
                if data.len() > FRAME_MAX {
                    *this.rest = Some(data.split_off(FRAME_MAX));
                }
                if let Some(f) = this.in_flight.as_mut() {
                    f.conn.link.to_send(data.len());
                    if let Some(record) = f.record() {
                        record.handed += data.len() as u64;
                    }
                }
            }
        }
        if polled.is_pending() {
            if let Some(deadline) = this.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    *this.deadline = None;
                    tracing::warn!(
                        request = %this.request.as_deref().unwrap_or_default(),
                        "request_timeout reached while sending the response, closing the \
                         connection"
                    );
                    return Poll::Ready(Some(Err("request_timeout reached".into())));
                }
            }
        }
        if let Poll::Ready(None) = polled {
            if let Some(record) = this.in_flight.take().as_ref().and_then(|f| f.record.as_deref()) {
                record.whole.set(true);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.rest.is_none() && self.inner.is_end_stream();
        if end {
            // hyper drops a body that says it has ended without polling it again.
            if let Some(record) = self.in_flight.as_ref().and_then(|f| f.record.as_deref()) {
                record.whole.set(true);
            }
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |rest| rest.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

fn internal_error<B>() -> Response<Either<B, Full<Bytes>>> {
    plain(StatusCode::INTERNAL_SERVER_ERROR, &b"Internal Server Error\n"[..])
}

fn gateway_timeout<B>() -> Response<Either<B, Full<Bytes>>> {
    plain(StatusCode::GATEWAY_TIMEOUT, &b"Gateway Timeout\n"[..])
}

fn plain<B>(status: StatusCode, body: impl Into<Bytes>) -> Response<Either<B, Full<Bytes>>> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
