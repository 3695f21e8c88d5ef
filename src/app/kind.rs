//! What a kind of app the binary serves is ([`Kind`]): its config half (its key in a
//! `[[route]]` and how the key's value is read and checked: [`RouteKind`], the config module's
//! trait) and what serves its routes, built from that value when the router is; and what every
//! kind's handler is to the router ([`AppKind`]): it takes a request by value and replies, at
//! once or later ([`Reply`]), with a body that may stream. Each kind (respond, static; next:
//! Python, proxy) lives in a module of its own under `app/`, and is registered in `kinds`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::Body;
use crate::config::RouteKind;
use crate::error::BoxError;

/// A kind of app a route can name: its config half, and what serves its routes.
pub(crate) trait Kind: RouteKind {
    /// Builds the handler of a route from the value its config half read, in each worker when
    /// the router is built.
    fn serve(config: &Self::Config) -> io::Result<Box<dyn AppKind>>;
}

/// What a kind's handler is to the router.
pub(crate) trait AppKind: fmt::Debug {
    /// The methods it answers, for `OPTIONS *`.
    fn methods(&self) -> Methods;

    /// Answers a request the router sent to it.
    fn call(&self, req: Request<Incoming>, at: Matched) -> Reply;
}

/// Where the router found a request's route.
#[derive(Debug)]
pub(crate) struct Matched {
    /// The length of the route's prefix, in the normalized path.
    pub(crate) prefix_len: usize,
    /// The normalized path, when it differs from the request's (see `router::normalize`): the
    /// common case borrows the request's path, so that a clean path costs no allocation.
    pub(crate) normalized: Option<Vec<u8>>,
}

impl Matched {
    /// The normalized path of `req`, the request this match is for.
    pub(crate) fn path<'a, B>(&'a self, req: &'a Request<B>) -> &'a [u8] {
        self.normalized.as_deref().unwrap_or(req.uri().path().as_bytes())
    }
}

/// A set of standard methods, for the `Allow` header of `OPTIONS *`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Methods(u8);

/// The methods `Methods` can hold, in the order `Allow` names them. Not CONNECT, which the gate
/// refuses, nor TRACE.
const NAMES: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

impl Methods {
    /// Every method a kind that answers any method would name.
    pub(crate) const ANY: Methods = Methods(0b111_1111);
    /// What a server of files answers.
    pub(crate) const READ: Methods = Methods(0b100_0011);
    /// Only `OPTIONS` itself: what a server without routes answers.
    pub(crate) const OPTIONS: Methods = Methods(0b100_0000);

    /// The methods of both.
    pub(crate) fn union(self, other: Methods) -> Methods {
        Methods(self.0 | other.0)
    }

    /// The `Allow` header naming these methods.
    pub(crate) fn allow(self) -> HeaderValue {
        let names: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, m)| m.as_str())
            .collect();
        HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static("OPTIONS"))
    }
}

/// The reply of an app kind: a response made at once, or a future that makes one. A response
/// made at once is not boxed, so that the kinds that answer without waiting (respond, static)
/// cost no allocation per request; a kind that waits (on a Python handler, an upstream server)
/// boxes its future.
#[must_use = "a reply does nothing unless polled"]
pub struct Reply(Inner);

enum Inner {
    /// `None` once taken.
    Ready(Option<Response<Body>>),
    Later(Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>>>>),
}

impl Reply {
    /// A reply made by `future`. An error is logged with its request and answered `500`.
    pub fn later(
        future: impl Future<Output = Result<Response<Body>, BoxError>> + 'static,
    ) -> Reply {
        Reply(Inner::Later(Box::pin(future)))
    }
}

impl From<Response<Body>> for Reply {
    #[inline]
    fn from(response: Response<Body>) -> Reply {
        Reply(Inner::Ready(Some(response)))
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Ready(response) => f.debug_tuple("Reply::Ready").field(response).finish(),
            Inner::Later(_) => f.write_str("Reply::Later(..)"),
        }
    }
}

impl Future for Reply {
    type Output = Result<Response<Body>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Inner::Ready(response) => Poll::Ready(response.take().ok_or_else(polled_again)),
            Inner::Later(future) => future.as_mut().poll(cx),
        }
    }
}

/// The error of a reply polled again once ready, which hyper never does: out of the way of the
/// response's own path.
#[cold]
fn polled_again() -> BoxError {
    "reply polled after it was ready".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_names_the_union_of_the_kinds_methods_in_one_order() {
        for (methods, allow) in [
            (Methods::ANY, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            (Methods::READ, "GET, HEAD, OPTIONS"),
            (Methods::OPTIONS, "OPTIONS"),
            (Methods::READ.union(Methods::ANY), "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            (Methods::OPTIONS.union(Methods::READ), "GET, HEAD, OPTIONS"),
        ] {
            assert_eq!(methods.allow(), allow);
        }
    }

    #[test]
    fn a_reply_is_ready_at_once_or_when_its_future_is() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut ready = Reply::from(Response::new(Body::from(bytes::Bytes::from_static(b"a"))));
        let Poll::Ready(Ok(response)) = Pin::new(&mut ready).poll(&mut cx) else { panic!() };
        assert_eq!(response.into_body().into_bytes().unwrap(), "a");
        assert!(matches!(Pin::new(&mut ready).poll(&mut cx), Poll::Ready(Err(_))));

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut later = Reply::later(async move {
            rx.await.map_err(|_| "dropped")?;
            Ok(Response::new(Body::empty()))
        });
        assert!(Pin::new(&mut later).poll(&mut cx).is_pending());
        tx.send(()).unwrap();
        assert!(matches!(Pin::new(&mut later).poll(&mut cx), Poll::Ready(Ok(_))));
    }
}
