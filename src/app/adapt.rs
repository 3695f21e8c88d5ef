//! What turns the other shapes a program's app may take into the seam's: an async factory
//! ([`factory_async`]), and a tower service such as an axum `Router` ([`from_tower`]).

use std::future::Future;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};

use super::seam::{Factory, HttpService, WorkerContext};
use crate::error::BoxError;

/// An app factory that awaits its setup: the [`Factory`] that [`factory_async`] makes.
#[derive(Debug, Clone, Copy)]
pub struct FactoryAsync<F>(F);

/// Makes an async function or closure the app factory: it may await its setup (open a database
/// pool, read a file with tokio) before it returns the service. It runs in the worker's runtime,
/// after the fork, like any [`Factory`], and what a sync factory may do, it may do. An error it
/// returns, or a panic, is a boot failure.
///
/// Takes an `async fn factory(worker: &WorkerContext) -> Result<impl HttpService, E>`, an
/// async closure `async |worker: &WorkerContext| { … }`, or a closure that returns a future.
///
/// ```no_run
/// use std::convert::Infallible;
/// use std::rc::Rc;
///
/// use forkserve::bytes::Bytes;
/// use forkserve::http_body_util::Full;
/// use forkserve::hyper::{Request, Response, body::Incoming, service::service_fn};
/// use forkserve::{BoxError, HttpService, WorkerContext};
///
/// async fn factory(worker: &WorkerContext) -> Result<impl HttpService, BoxError> {
///     // Stands for connecting a database pool, or any setup that must be awaited.
///     let greeting = forkserve::tokio::task::spawn_blocking(|| "hello".to_string()).await?;
///     let greeting = Rc::new(format!("{greeting} from worker {}\n", worker.id()));
///     Ok(service_fn(move |_req: Request<Incoming>| {
///         let body = Bytes::from(greeting.as_str().to_owned());
///         async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
///     }))
/// }
///
/// fn main() -> std::process::ExitCode {
///     forkserve::run(forkserve::factory_async(factory))
/// }
/// ```
pub fn factory_async<F>(factory: F) -> FactoryAsync<F>
where
    F: for<'a> AsyncFactoryFn<'a>,
{
    FactoryAsync(factory)
}

/// An async function that builds a service from a [`WorkerContext`] borrowed for `'a` (see
/// [`FactoryFn`](super::FactoryFn) for why the lifetime). Implemented for every async function
/// and closure `AsyncFn(&WorkerContext) -> Result<S, E>`; you never implement it yourself.
pub trait AsyncFactoryFn<'a> {
    /// The service it builds.
    type Service: HttpService;
    /// Builds the service.
    fn call(
        &'a self,
        worker: &'a WorkerContext,
    ) -> impl Future<Output = Result<Self::Service, BoxError>> + 'a;
}

impl<'a, F, S, E> AsyncFactoryFn<'a> for F
where
    F: AsyncFn(&'a WorkerContext) -> Result<S, E> + 'a,
    S: HttpService,
    E: Into<BoxError>,
{
    type Service = S;

    fn call(&'a self, worker: &'a WorkerContext) -> impl Future<Output = Result<S, BoxError>> + 'a {
        async move { self(worker).await.map_err(Into::into) }
    }
}

impl<F> Factory for FactoryAsync<F>
where
    F: for<'a> AsyncFactoryFn<'a>,
{
    type Service<'a>
        = <F as AsyncFactoryFn<'a>>::Service
    where
        F: 'a;

    fn build<'a>(
        &'a self,
        worker: &'a WorkerContext,
    ) -> impl Future<Output = Result<Self::Service<'a>, BoxError>> + 'a {
        self.0.call(worker)
    }
}

/// A tower service as an [`HttpService`]: what [`from_tower`] makes.
#[derive(Debug, Clone)]
pub struct FromTower<S>(TowerToHyperService<S>);

/// Serves a tower service: an axum `Router`, or any service wrapped in tower-http layers.
/// A tower service is called with `&mut self` once it says it is ready; this clones it for each
/// request (an axum `Router` is an `Arc`: a clone is a count) and waits until the clone is ready,
/// as hyper-util's `TowerToHyperService` does, which this wraps.
///
/// ```no_run
/// use std::convert::Infallible;
///
/// use axum::routing::get;
/// use forkserve::{HttpService, WorkerContext};
///
/// fn factory(_worker: &WorkerContext) -> Result<impl HttpService, Infallible> {
///     let app = axum::Router::new().route("/", get(|| async { "hello\n" }));
///     Ok(forkserve::from_tower(app))
/// }
///
/// fn main() -> std::process::ExitCode {
///     forkserve::run(factory)
/// }
/// ```
pub fn from_tower<S>(service: S) -> FromTower<S> {
    FromTower(TowerToHyperService::new(service))
}

impl<S, B> hyper::service::Service<Request<Incoming>> for FromTower<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = TowerToHyperServiceFuture<S, Request<Incoming>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        hyper::service::Service::call(&self.0, req)
    }
}
