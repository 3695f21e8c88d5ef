//! The seam between forkserve and what it serves: what a service must be ([`HttpService`]),
//! what builds one in each worker ([`Factory`]), and what a factory is told about the worker it
//! runs in ([`WorkerContext`]). The connection side calls services only through this module.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};

use crate::config::Config;
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

/// What an app factory is told about the worker it runs in.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    id: u64,
    generation: u64,
    config: Arc<Config>,
    client: std::cell::Cell<bool>,
    request_end: crate::conn::request_end::Hooks,
}

impl WorkerContext {
    pub(crate) fn new(id: u64, generation: u64, config: Arc<Config>) -> Self {
        WorkerContext {
            id,
            generation,
            config,
            client: std::cell::Cell::new(true),
            request_end: Default::default(),
        }
    }

    /// Says that the app never reads the [`Client`](crate::Client) extension: the worker then
    /// leaves it out of requests, which saves a map allocated and freed per request (about 7%
    /// of a hello-world request's instructions). Forwarding headers from peers not in
    /// `forwarded_allow_ips` are removed all the same. Call it from the app factory.
    pub fn without_client(&self) {
        self.client.set(false);
    }

    /// Whether requests carry the [`Client`](crate::Client) extension (see
    /// [`WorkerContext::without_client`]).
    pub(crate) fn wants_client(&self) -> bool {
        self.client.get()
    }

    /// Registers `hook` to be told of every request's end in this worker: one
    /// [`RequestEnd`](crate::RequestEnd) per request, whoever answered it (the app, the `500`
    /// or `504` put in its place, or the gate's own refusals), and for a response cut short.
    /// Call it from the app factory; hooks run in the order registered. A hook runs on the
    /// worker's only thread, between requests: it must not block (hand the event to a task or
    /// a buffer for anything slow). A hook that panics is logged, and the worker goes on.
    /// With no hook registered, nothing is built for the event.
    pub fn on_request_end(&self, hook: impl Fn(&crate::RequestEnd<'_>) + 'static) {
        self.request_end.add(Box::new(hook));
    }

    /// The hooks registered with [`WorkerContext::on_request_end`].
    pub(crate) fn request_end_hooks(&self) -> &crate::conn::request_end::Hooks {
        &self.request_end
    }

    /// The worker's id: 1 for the first worker the master started, and counting up, never
    /// reused.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The generation: 1 at start, one more at each reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// The effective configuration this worker was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// What builds the service each worker serves. Called in every worker, after the fork, so that
/// the service need not be `Send` and what it opens (files, connections) belongs to the worker.
/// Implemented for closures `Fn(&WorkerContext) -> Result<S, E>`.
pub trait Factory {
    /// The service the factory builds.
    type Service: HttpService;
    /// Builds the service for the worker described by `worker`.
    fn build(&self, worker: &WorkerContext) -> Result<Self::Service, BoxError>;
}

impl<F, S, E> Factory for F
where
    F: Fn(&WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
    type Service = S;

    fn build(&self, worker: &WorkerContext) -> Result<S, BoxError> {
        self(worker).map_err(Into::into)
    }
}

/// Builds a worker's service with its factory: `Err` says why it could not be built (the
/// factory failed or panicked), for the master's log.
pub(crate) async fn build<F: Factory>(
    factory: &F,
    worker: &WorkerContext,
) -> Result<F::Service, String> {
    match crate::panics::catch_panic(|| factory.build(worker)) {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(e)) => Err(format!("app failed to start: {e}")),
        Err(panic) => Err(format!("app factory panicked: {panic}")),
    }
}
