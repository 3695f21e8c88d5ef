//! The service stack every request passes, whatever protocol carries it, in order: client
//! identity ([`client`]: trusted forwarding headers), request accounting ([`accounting`]: the
//! scoreboard, `max_requests`, the connection's slot, the protocol's own count), the request
//! deadline (`request_timeout`: a `504`), the panic guard (a handler's panic or error becomes a
//! `500`, so that one bad request never takes the worker, or the other requests on it, down),
//! then the app. Each request's end is one [`RequestEnd`](crate::RequestEnd) event, handed to
//! the hooks when its response is cut, or once the protocol has written the last byte of a
//! response handed over whole (see [`InFlight`], [`ResponseEnd`]); the response's body is a
//! [`ResponseBody`] ([`body`]).
//!
//! What the stack needs from the protocol (HTTP/1, HTTP/2) is an [`Exchange`]: the
//! protocol implements it, the stack is generic over it, and knows nothing else of the
//! protocol's bookkeeping. The dependency runs one way: a protocol uses the stack.

mod accounting;
mod body;
pub(crate) mod client;

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::Sleep;

use self::accounting::InFlight;
pub(crate) use self::accounting::{Requests, ResponseEnd};
pub(crate) use self::body::ResponseBody;
use super::drain::Slot;
use super::transport::Facts;
use crate::app::HttpService;
use crate::error::BoxError;

/// What the service stack needs from the protocol that carries a connection's requests, named
/// for what it means to the stack. Called on every request and every frame of a response
/// body: the stack is generic over it, never behind `dyn`.
pub(crate) trait Exchange {
    /// Whether a response that ends its connection says so with `Connection: close` (HTTP/1);
    /// HTTP/2 has no such header (hyper strips it) and ends a connection with GOAWAY.
    const CLOSE_HEADER: bool = true;

    /// The app is about to be called for request `number` on the connection (1 for the
    /// first).
    fn request_started(&self, number: u64);

    /// A request's response is finished, or abandoned.
    fn request_finished(&self);

    /// Why request `number`'s body could not be read whole, if it could not: the status its
    /// response must have instead of the app's, on a connection that then closes.
    fn body_error(&self, number: u64) -> Option<StatusCode>;

    /// Bytes of request `number`'s body read from the client so far.
    fn body_bytes(&self, number: u64) -> u64;

    /// Whether a response body may hand the protocol another frame now; if not, the body's
    /// task is woken once it may (the client has read enough of what it was given).
    fn poll_send_room(&self, cx: &mut Context<'_>) -> Poll<()>;

    /// A response body handed the protocol `n` more bytes to write.
    fn handed(&self, n: usize);

    /// The largest piece of a response body the protocol takes at once, if it asks for one:
    /// larger frames are then handed over in pieces of this (at least 1, at most 256 KiB,
    /// `FRAME_MAX`), and the last piece of a body's last frame so split is handed over in two,
    /// its last byte apart, so that the body is not done before the protocol has taken the
    /// rest and has room for that byte (HTTP/2: until then, its stream is watched for
    /// `send_timeout`, whose progress is counted per piece). `None` (the default): frames are
    /// only cut to `FRAME_MAX`.
    fn piece_max(&self) -> Option<usize> {
        None
    }

    /// Bytes handed to the protocol and not written to the client yet.
    fn unsent(&self) -> usize;

    /// A response was handed over whole (its body's last frame, or a response with no body to
    /// send): its end event `end` is the protocol's to send once the response's last byte has
    /// left the worker ([`ResponseEnd::written`]), or as cut, with what was written, if the
    /// connection ends first ([`ResponseEnd::cut`]). Only with a hook registered.
    fn handed_whole(&self, end: ResponseEnd);
}

/// One connection's share of the stack, before a protocol is chosen for it: the app's
/// service, what every request of the worker shares, and the connection's slot and facts.
pub(crate) struct Stack<S> {
    pub(crate) service: Rc<S>,
    pub(crate) requests: Rc<Requests>,
    pub(crate) slot: Rc<Slot>,
    pub(crate) facts: Rc<Facts>,
}

impl<S> Stack<S> {
    /// The stack for a connection whose protocol is `exchange`.
    pub(crate) fn over<X: Exchange>(self, exchange: Rc<X>) -> AppService<S, X> {
        let Stack { service, requests, slot, facts } = self;
        AppService { service, conn: Rc::new(Connection { requests, slot, exchange, facts }) }
    }
}

/// One connection, as the service stack sees it. Behind one `Rc`, so that what each request
/// holds of it (see [`InFlight`]), and moves with hyper's futures and bodies, stays small.
struct Connection<X> {
    requests: Rc<Requests>,
    slot: Rc<Slot>,
    exchange: Rc<X>,
    facts: Rc<Facts>,
}

/// The app's service as hyper sees it on one connection.
pub(crate) struct AppService<S, X> {
    service: Rc<S>,
    conn: Rc<Connection<X>>,
}

impl<S, X> AppService<S, X> {
    /// The same, for a new hyper connection on the same client connection.
    pub(crate) fn for_connection(&self) -> Self {
        AppService { service: Rc::clone(&self.service), conn: Rc::clone(&self.conn) }
    }
}

impl<S: HttpService, X: Exchange> hyper::service::Service<Request<Incoming>> for AppService<S, X> {
    type Response = Response<ResponseBody<S::Body, X>>;
    type Error = Infallible;
    type Future = Guarded<S::Future, X>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let requests = &self.conn.requests;
        let client = client::identify(
            &mut req,
            self.conn.facts.client(),
            self.conn.facts.tls.is_some(),
            &requests.forwarded,
            requests.client,
        );
        let in_flight = InFlight::start(&self.conn, &req, client);
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
    pub(crate) struct Guarded<F, X: Exchange> {
        // `None` once the call has panicked: a future that panicked must not be polled again.
        #[pin]
        future: Option<F>,
        request: RequestLine,
        deadline: Option<Pin<Box<Sleep>>>,
        // Moves into the response body, which ends the request when it is done.
        in_flight: Option<InFlight<X>>,
    }
}

impl<F, B, E, X> Future for Guarded<F, X>
where
    X: Exchange,
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B, X>>, Infallible>;

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

impl<F, X: Exchange> GuardedProj<'_, F, X> {
    /// Wraps a response's body so that it keeps the request's deadline and ends the request.
    fn respond<B>(
        &mut self,
        response: Response<Either<B, Full<Bytes>>>,
    ) -> Response<ResponseBody<B, X>> {
        let deadline = self.deadline.take();
        // Only a body with a deadline can log about its request.
        let request = deadline.as_ref().map(|_| {
            format!("{} {}", self.request.method, self.request.uri.path()).into_boxed_str()
        });
        let mut in_flight = self.in_flight.take();
        let mut response = response;
        if let Some(f) = &in_flight {
            if let Some(status) = f.conn.exchange.body_error(f.number) {
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
                if X::CLOSE_HEADER {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            if X::CLOSE_HEADER && f.conn.slot.closing() {
                // Hyper closes the connection after a response that says so.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        if let Some(f) = in_flight.as_mut() {
            f.response_started(response.status(), response.headers());
        }
        response.map(|inner| ResponseBody::new(inner, deadline, request, in_flight))
    }
}

/// A response of the protocol's own to a request it refused before the stack saw it (its
/// reason phrase as a plain body), as the stack's responses are typed.
pub(crate) fn refusal<B, X: Exchange>(status: StatusCode) -> Response<ResponseBody<B, X>> {
    let reason = status.canonical_reason().unwrap_or("Error");
    plain(status, format!("{reason}\n")).map(|inner| ResponseBody::new(inner, None, None, None))
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

#[cfg(test)]
mod tests;
