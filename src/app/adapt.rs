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

    // Not an `async fn`: its future would capture `E`, which would then have to outlive `'a`.
    #[allow(clippy::manual_async_fn)]
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;

    use super::*;
    use crate::app::build;
    use crate::config::Config;

    async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
    }

    /// The signature a new user writes first: in edition 2024 its `impl HttpService` captures
    /// the lifetime of `worker`, which a factory bound on `Fn(&WorkerContext) -> Result<S, E>`
    /// (one `S` for every lifetime) refused.
    fn named(_worker: &WorkerContext) -> Result<impl HttpService, Infallible> {
        Ok(service_fn(hello))
    }

    async fn named_async(worker: &WorkerContext) -> Result<impl HttpService, BoxError> {
        tokio::task::yield_now().await;
        if worker.id() == 13 {
            return Err("unlucky".into());
        }
        Ok(service_fn(hello))
    }

    fn worker(id: u64) -> WorkerContext {
        WorkerContext::new(id, 1, Arc::new(Config::default()))
    }

    /// Builds with `factory` as a worker does: in a current-thread runtime, inside a `LocalSet`.
    fn built<F: Factory>(factory: F, id: u64) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let ctx = worker(id);
            build(&factory, &ctx).await.map(drop)
        })
    }

    #[test]
    fn every_shape_of_factory_builds_in_a_worker() {
        let greeting = String::from("captured");
        assert_eq!(built(named, 1), Ok(()));
        assert_eq!(built(|_: &WorkerContext| Ok::<_, Infallible>(service_fn(hello)), 1), Ok(()));
        assert_eq!(built(factory_async(named_async), 1), Ok(()));
        assert_eq!(
            built(
                factory_async(async move |w: &WorkerContext| {
                    tokio::task::yield_now().await;
                    assert_eq!((w.id(), greeting.as_str()), (1, "captured"));
                    Ok::<_, Infallible>(service_fn(hello))
                }),
                1
            ),
            Ok(())
        );
        assert_eq!(
            built(
                factory_async(|w: &WorkerContext| {
                    // A closure that returns a future borrows nothing of `w`: it takes what it
                    // needs first.
                    let id = w.id();
                    async move {
                        tokio::task::yield_now().await;
                        assert_eq!(id, 1);
                        Ok::<_, Infallible>(service_fn(hello))
                    }
                }),
                1
            ),
            Ok(())
        );
    }

    #[test]
    fn a_factory_that_fails_or_panics_says_so_when_called_or_awaited() {
        assert_eq!(
            built(factory_async(named_async), 13),
            Err("app failed to start: unlucky".into())
        );
        let failing = |w: &WorkerContext| match w.id() {
            1 => Err("no database"),
            _ => Ok(service_fn(hello)),
        };
        assert_eq!(built(failing, 1), Err("app failed to start: no database".into()));

        // The worker's panic hook, which keeps the message, is not installed in unit tests.
        let panics_when_called = |w: &WorkerContext| match w.id() {
            1 => panic!("now"),
            _ => Ok::<_, Infallible>(service_fn(hello)),
        };
        assert!(built(panics_when_called, 1).unwrap_err().starts_with("app factory panicked"));
        let panics_when_awaited = factory_async(async |w: &WorkerContext| {
            tokio::task::yield_now().await;
            match w.id() {
                1 => panic!("later"),
                _ => Ok::<_, Infallible>(service_fn(hello)),
            }
        });
        assert!(built(panics_when_awaited, 1).unwrap_err().starts_with("app factory panicked"));
    }
}
