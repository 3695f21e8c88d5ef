//! How a worker calls the app's service: what a service must be ([`HttpService`]), and the
//! wrapper that turns a handler's panic or error into a `500` so that one bad request never takes
//! the worker, or the other requests on it, down.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};

use crate::error::BoxError;

/// A hyper service that a worker can serve: anything implementing
/// [`hyper::service::Service`] for `Request<Incoming>` whose response body yields [`Bytes`],
/// such as [`hyper::service::service_fn`]. It need not be `Send`: each worker calls it on its own
/// single thread. Implemented automatically; you never implement it yourself.
pub trait HttpService: 'static {
    /// The response body.
    type Body: Body<Data = Bytes, Error: Into<BoxError>> + 'static;
    /// The error a call may end with; it is logged and answered with `500`.
    type Error: Into<BoxError>;
    /// The future of one call.
    type Future: Future<Output = Result<Response<Self::Body>, Self::Error>> + 'static;
    /// Handles one request.
    fn call(&self, req: Request<Incoming>) -> Self::Future;
}

impl<S, B> HttpService for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    B: Body<Data = Bytes, Error: Into<BoxError>> + 'static,
{
    type Body = B;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: Request<Incoming>) -> S::Future {
        hyper::service::Service::call(self, req)
    }
}

/// The body of every response a worker sends: the app's, or one forkserve made (a `500`).
pub(crate) type ResponseBody<B> = Either<B, Full<Bytes>>;

/// The app's service as hyper sees it, shared by all connections of a worker.
pub(crate) struct AppService<S>(pub(crate) Rc<S>);

impl<S> Clone for AppService<S> {
    fn clone(&self) -> Self {
        AppService(Rc::clone(&self.0))
    }
}

impl<S: HttpService> hyper::service::Service<Request<Incoming>> for AppService<S> {
    type Response = Response<ResponseBody<S::Body>>;
    type Error = Infallible;
    type Future = Guarded<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let request = RequestLine { method: req.method().clone(), uri: req.uri().clone() };
        match in_handler(|| catch_unwind(AssertUnwindSafe(|| self.0.call(req)))) {
            Ok(future) => Guarded { future: Some(future), request },
            Err(_) => {
                request.log_panic();
                Guarded { future: None, request }
            }
        }
    }
}

/// What is logged about a request that failed.
struct RequestLine {
    method: Method,
    uri: Uri,
}

impl RequestLine {
    fn log_panic(&self) {
        let message = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
        tracing::error!(
            method = %self.method,
            path = %self.uri.path(),
            "handler panicked, answered 500: {message}"
        );
    }
}

pin_project_lite::pin_project! {
    /// A call of the app's service; a panic or an error becomes a `500`.
    pub(crate) struct Guarded<F> {
        // `None` once the call has panicked: a future that panicked must not be polled again.
        #[pin]
        future: Option<F>,
        request: RequestLine,
    }
}

impl<F, B, E> Future for Guarded<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(internal_error()));
        };
        match in_handler(|| catch_unwind(AssertUnwindSafe(|| future.poll(cx)))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(response))) => Poll::Ready(Ok(response.map(Either::Left))),
            Ok(Poll::Ready(Err(e))) => {
                let e: BoxError = e.into();
                tracing::error!(
                    method = %this.request.method,
                    path = %this.request.uri.path(),
                    "handler failed, answered 500: {e}"
                );
                Poll::Ready(Ok(internal_error()))
            }
            Err(_) => {
                this.future.set(None);
                this.request.log_panic();
                Poll::Ready(Ok(internal_error()))
            }
        }
    }
}

fn internal_error<B>() -> Response<Either<B, Full<Bytes>>> {
    let mut response =
        Response::new(Either::Right(Full::new(Bytes::from_static(b"Internal Server Error\n"))));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

thread_local! {
    /// True while the app's code runs under [`in_handler`], where a panic is caught and logged
    /// with its request.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// The last caught panic's message and location, left by the panic hook.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn in_handler<T>(f: impl FnOnce() -> T) -> T {
    let outer = IN_HANDLER.replace(true);
    let result = f();
    IN_HANDLER.set(outer);
    result
}

/// Installs the worker's panic hook: a panic in a handler is kept for the one log line that
/// names its request; any other panic is logged at once.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        let message = match info.location() {
            Some(at) => format!("{message} at {}:{}", at.file(), at.line()),
            None => message,
        };
        if IN_HANDLER.get() {
            PANIC.with(|p| *p.borrow_mut() = Some(message));
        } else {
            tracing::error!("panic: {message}");
        }
    }));
}
