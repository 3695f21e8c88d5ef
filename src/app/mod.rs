//! The app the `forkserve` binary serves: the `[[route]]`s of the config file, matched by the
//! longest path prefix, each answering with a fixed response or files from a directory.

mod body;
mod static_files;

use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

pub use self::body::Body;
use self::static_files::StaticDir;
use crate::config::{Action, Respond, Route};
use crate::worker::WorkerContext;

/// The routes of a config file, as a hyper service.
#[derive(Debug, Clone)]
pub struct Router {
    /// Longest prefix first, so that the first match is the longest.
    routes: Vec<(String, Handler)>,
}

#[derive(Debug, Clone)]
enum Handler {
    Respond(Respond),
    Static(StaticDir),
}

impl Router {
    /// Builds the router for these routes.
    pub fn new(routes: &[Route]) -> Router {
        let mut routes: Vec<(String, Handler)> = routes
            .iter()
            .map(|r| {
                let handler = match &r.action {
                    Action::Respond(respond) => Handler::Respond(respond.clone()),
                    Action::Static(root) => Handler::Static(StaticDir::new(root.clone())),
                };
                (r.path.clone(), handler)
            })
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Router { routes }
    }

    /// The app factory the binary runs in each worker: the routes of the worker's config.
    pub fn factory(worker: &WorkerContext) -> Result<Router, Infallible> {
        if worker.config().routes.is_empty() && worker.id() == 1 {
            tracing::warn!("no [[route]] configured: every request is answered 404");
        }
        Ok(Router::new(&worker.config().routes))
    }

    /// Answers one request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        let path = req.uri().path();
        match self.routes.iter().find(|(prefix, _)| matches(prefix, path)) {
            Some((_, Handler::Respond(r))) => respond(r),
            Some((prefix, Handler::Static(dir))) => dir.serve(req, prefix),
            None => plain(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        ready(Ok(self.handle(&req)))
    }
}

/// Whether the route `prefix` covers `path`: a prefix ending in `/` covers every path that
/// starts with it; any other covers itself and the paths below it.
fn matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn respond(r: &Respond) -> Response<Body> {
    let mut response = Response::new(Body::from(r.body.clone()));
    *response.status_mut() = r.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, r.content_type.clone());
    for (name, value) in &r.headers {
        headers.append(name.clone(), value.clone());
    }
    response
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
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(matches("/", "/anything"));
        assert!(matches("/api", "/api"));
        assert!(matches("/api", "/api/x"));
        assert!(!matches("/api", "/apix"));
        assert!(matches("/static/", "/static/a.css"));
        assert!(!matches("/static/", "/static"));
    }

    #[test]
    fn longest_prefix_wins() {
        let config = crate::config::Config::from_toml(
            "[[route]]\npath = \"/\"\nrespond = \"root\"\n[[route]]\npath = \"/a/b\"\nrespond = \"ab\"\n[[route]]\npath = \"/a\"\nrespond = \"a\"\n",
            std::path::Path::new("/"),
        )
        .unwrap();
        let router = Router::new(&config.routes);
        let body = |path: &str| {
            let req = Request::get(path).body(()).unwrap();
            router.handle(&req).into_body().into_bytes().unwrap()
        };
        assert_eq!(body("/a/b/c"), "ab");
        assert_eq!(body("/a/bc"), "a");
        assert_eq!(body("/x"), "root");
    }
}
