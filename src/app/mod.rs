//! What a worker serves.
//!
//! - The seam between forkserve and any app (`seam`): what a service must be
//!   ([`HttpService`]), what builds one in each worker ([`Factory`]), and what a factory is told
//!   ([`WorkerContext`]). The worker calls apps only through it. Beside it (`adapt`), what
//!   makes other shapes of app fit the seam: an async factory ([`factory_async`]) and a tower
//!   service ([`from_tower`]).
//! - The binary's own app, built from the config file: the [`Router`] of its `[[route]]`s
//!   (`router`), and the kinds of app a route serves, each in a module of its own (`respond`,
//!   `static_files`) with its config half (its key in a `[[route]]`, how its value is read and
//!   checked) and its handler. `kind` says what a kind is and registers them: the config is
//!   read with their config halves (`route_kinds`), and each handler takes a request by
//!   value and replies ([`Reply`]) with a [`Body`] that may stream.
//! - What a generation's workers may load once before they fork (`preload`): the seam through
//!   which the master's mold loads an app it knows nothing of.

mod adapt;
mod body;
mod kind;
mod kinds;
mod preload;
#[cfg(feature = "python")]
mod python;
mod respond;
mod router;
mod seam;
mod static_files;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

pub use self::adapt::{AsyncFactoryFn, FactoryAsync, FromTower, factory_async, from_tower};
pub use self::body::Body;
pub use self::kind::Reply;
pub(crate) use self::kinds::readers as route_kinds;
pub(crate) use self::preload::{Preload, Side};
pub use self::router::Router;
pub use self::seam::{Factory, FactoryFn, HttpService, WorkerContext};
pub(crate) use self::seam::{Retire, build};

/// What the workers of `config` load once per generation, before they fork, if anything: the
/// Python app, with `[python] preload` and a Python app to serve.
pub(crate) fn preloader(config: &crate::config::Config) -> Option<&'static dyn Preload> {
    #[cfg(feature = "python")]
    if config.python.preload && config.python.wanted(&config.routes) {
        return Some(&python::PRELOAD);
    }
    #[cfg(not(feature = "python"))]
    let _ = config;
    None
}

/// A short plain-text response.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
pub(crate) mod tests;
