//! The seam between forkserve and what it serves: what a service must be ([`HttpService`]),
//! what builds one in each worker ([`Factory`]), and what a factory is told about the worker it
//! runs in ([`WorkerContext`]). The connection side calls services only through this module.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};

use crate::config::Config;
use crate::error::BoxError;

/// A hyper service that a worker can serve: anything implementing
/// [`hyper::service::Service`] for `Request<Incoming>` whose response body yields [`Bytes`],
/// such as [`hyper::service::service_fn`]. It need not be `Send`: each worker calls it on its own
/// single thread. Implemented automatically; you never implement it yourself. A tower service
/// (an axum `Router`) becomes one through [`from_tower`](crate::from_tower).
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
    request_end: crate::request_end::Hooks,
    /// Set (with a reason) by an app that asks for the worker's replacement, from any thread.
    retire: Arc<Retire>,
    /// What runs when the worker ends after a graceful drain.
    at_exit: AtExit,
}

/// Functions run, in order, when a worker ends after draining (an embedded interpreter's own
/// exit handlers, say).
#[derive(Clone, Default)]
pub(crate) struct AtExit(std::rc::Rc<std::cell::RefCell<Vec<ExitHook>>>);

/// One of [`AtExit`]'s functions.
type ExitHook = Box<dyn FnOnce()>;

impl std::fmt::Debug for AtExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AtExit({})", self.0.borrow().len())
    }
}

impl AtExit {
    /// Adds `f`, to run after those added before.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn add(&self, f: impl FnOnce() + 'static) {
        self.0.borrow_mut().push(Box::new(f));
    }

    /// Runs them all, once.
    pub(crate) fn run(&self) {
        let hooks = std::mem::take(&mut *self.0.borrow_mut());
        for hook in hooks {
            hook();
        }
    }
}

/// An app's request that its worker be replaced, successor first: made from any thread, acted
/// on by the worker's event loop, which tells the master.
#[derive(Debug, Default)]
pub(crate) struct Retire {
    pub(crate) asked: tokio::sync::Notify,
    pub(crate) reason: std::sync::Mutex<Option<String>>,
}

impl Retire {
    /// Asks, once; later asks are ignored.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn ask(&self, reason: String) {
        let mut held = self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_none() {
            *held = Some(reason);
            self.asked.notify_one();
        }
    }
}

impl WorkerContext {
    pub(crate) fn new(id: u64, generation: u64, config: Arc<Config>) -> Self {
        WorkerContext {
            id,
            generation,
            config,
            client: std::cell::Cell::new(true),
            request_end: Default::default(),
            retire: Default::default(),
            at_exit: Default::default(),
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

    /// Where an app asks for its worker's replacement (see [`Retire`]).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn retire(&self) -> &Arc<Retire> {
        &self.retire
    }

    /// What runs when the worker ends after a graceful drain (see [`AtExit`]).
    pub(crate) fn at_exit(&self) -> &AtExit {
        &self.at_exit
    }

    /// The hooks registered with [`WorkerContext::on_request_end`].
    pub(crate) fn request_end_hooks(&self) -> &crate::request_end::Hooks {
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

/// What builds the service each worker serves. Called in every worker, after the fork, inside
/// the worker's runtime, so that the service need not be `Send`, what it opens (files,
/// connections) belongs to the worker, and it may spawn tasks with `tokio::task::spawn_local`.
///
/// Implemented for functions and closures `Fn(&WorkerContext) -> Result<S, E>` where `S` is an
/// [`HttpService`] and `E` converts into a [`BoxError`], including a named function that
/// returns `impl HttpService` (see [`FactoryFn`]); for an async one, see
/// [`factory_async`](crate::factory_async). A factory that fails or panics is a boot failure:
/// the master is told why, and stops on a first start (exit code 3).
///
/// ```no_run
/// use std::convert::Infallible;
///
/// use forkserve::bytes::Bytes;
/// use forkserve::http_body_util::Full;
/// use forkserve::hyper::{Request, Response, body::Incoming, service::service_fn};
/// use forkserve::{HttpService, WorkerContext};
///
/// fn factory(worker: &WorkerContext) -> Result<impl HttpService, Infallible> {
///     let id = worker.id();
///     Ok(service_fn(move |_req: Request<Incoming>| async move {
///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("worker {id}\n")))))
///     }))
/// }
///
/// fn main() -> std::process::ExitCode {
///     forkserve::run(factory)
/// }
/// ```
pub trait Factory {
    /// The service the factory builds. It may name the lifetime of the [`WorkerContext`] it
    /// was built from, as the `impl HttpService` of a named function does (in edition 2024, a
    /// return-position `impl Trait` captures the lifetimes of the arguments); it holds no borrow
    /// of it all the same, as every [`HttpService`] is `'static`.
    type Service<'a>: HttpService
    where
        Self: 'a;

    /// Builds the service for the worker described by `worker`.
    fn build<'a>(
        &'a self,
        worker: &'a WorkerContext,
    ) -> impl Future<Output = Result<Self::Service<'a>, BoxError>> + 'a;
}

/// A function that builds a service from a [`WorkerContext`] borrowed for `'a`: what makes
/// `Fn(&WorkerContext) -> Result<S, E>` a [`Factory`] even where `S` names the borrow's
/// lifetime. Implemented for every such function and closure; you never implement it yourself.
pub trait FactoryFn<'a> {
    /// The service it builds.
    type Service: HttpService;
    /// Builds the service.
    fn call(&self, worker: &'a WorkerContext) -> Result<Self::Service, BoxError>;
}

impl<'a, F, S, E> FactoryFn<'a> for F
where
    F: Fn(&'a WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
    type Service = S;

    fn call(&self, worker: &'a WorkerContext) -> Result<S, BoxError> {
        self(worker).map_err(Into::into)
    }
}

impl<F> Factory for F
where
    F: for<'a> FactoryFn<'a>,
{
    type Service<'a>
        = <F as FactoryFn<'a>>::Service
    where
        F: 'a;

    fn build<'a>(
        &'a self,
        worker: &'a WorkerContext,
    ) -> impl Future<Output = Result<Self::Service<'a>, BoxError>> + 'a {
        // Called now, not when first polled, so that a sync factory runs where `build` is called.
        std::future::ready(self.call(worker))
    }
}

/// Builds a worker's service with its factory, in the worker's runtime: `Err` says why it could
/// not be built (the factory failed, or panicked while called or polled), for the master's log.
pub(crate) async fn build<'a, F: Factory>(
    factory: &'a F,
    worker: &'a WorkerContext,
) -> Result<F::Service<'a>, String> {
    let panicked = |panic| format!("app factory panicked: {panic}");
    let building = crate::panics::catch_panic(|| factory.build(worker)).map_err(panicked)?;
    let mut building = pin!(building);
    let built = poll_fn(|cx| match crate::panics::catch_panic(|| building.as_mut().poll(cx)) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(built)) => Poll::Ready(Ok(built)),
        Err(panic) => Poll::Ready(Err(panic)),
    })
    .await;
    match built {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(e)) => Err(format!("app failed to start: {e}")),
        Err(panic) => Err(panicked(panic)),
    }
}
