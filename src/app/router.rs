//! The router of the binary's app: the `[[route]]`s of the config file, matched by the longest
//! path prefix, each served by its app kind (see [`AppKind`]).
//!
//! Routes are matched on the normalized path (see `normalize`): percent-decoded, `//` merged, `.`
//! segments dropped. Matching the raw path instead would let `/static//private/x` or
//! `/static/%70rivate/x` slip past a `/static/private/` route to the static route beside it,
//! which serves the decoded path.

use std::borrow::Cow;
use std::io;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::kind::{AppKind, Matched, Methods, Reply};
use super::kinds;
use super::{Body, WorkerContext, plain};
use crate::config::Route as RouteConfig;
use crate::error::BoxError;

/// The routes of a config file, as a hyper service.
#[derive(Debug)]
pub struct Router {
    /// Longest prefix first, so that the first match is the longest.
    routes: Vec<Route>,
    /// The methods the routes answer, for `OPTIONS *`.
    allow: HeaderValue,
}

/// One route: a path prefix, and the app that serves the paths it covers.
#[derive(Debug)]
struct Route {
    /// The path prefix it covers (see `matches`).
    prefix: String,
    /// A trait object, so that each app kind stays in its own module and a new kind is an
    /// addition: one indirect call per request, which the router's cost allows.
    kind: Box<dyn AppKind>,
}

impl Router {
    /// Builds the router for these routes, each route's handler by its app kind. Each
    /// `static` directory is opened here (the file handler resolves paths beneath that open
    /// directory), so this fails if one has gone.
    pub fn new(routes: &[RouteConfig]) -> io::Result<Router> {
        let mut built = Vec::with_capacity(routes.len());
        for r in routes {
            let kind = kinds::handler(r)
                .map_err(|e| io::Error::new(e.kind(), format!("route {:?}: {e}", r.path)))?;
            built.push(Route { prefix: r.path.clone(), kind });
        }
        built.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let methods = built.iter().fold(Methods::OPTIONS, |all, r| all.union(r.kind.methods()));
        Ok(Router { routes: built, allow: methods.allow() })
    }

    /// The app factory the binary runs in each worker: the routes of the worker's config, and
    /// `python.wsgi` at `/`. A worker that serves a Python app starts its interpreter here, and
    /// imports the apps: an app that cannot be imported is a boot failure.
    pub fn factory(worker: &WorkerContext) -> io::Result<Router> {
        let config = worker.config();
        #[cfg_attr(not(feature = "python"), allow(unused_mut))]
        let mut routes = config.routes.clone();
        #[cfg(feature = "python")]
        if config.python.wanted(&config.routes) {
            super::python::start(worker)?;
            if let Some(app) = &config.python.wsgi {
                let route = RouteConfig::of::<super::python::Wsgi>("/", app.clone())
                    .map_err(io::Error::other)?;
                routes.push(route);
            }
        }
        if !routes.iter().any(|r| r.kind() == "wsgi") {
            // Routes answer the same whoever asks: no need to work out the client.
            worker.without_client();
        }
        if routes.is_empty() && worker.id() == 1 {
            tracing::warn!("no [[route]] configured: every request is answered 404");
        }
        Router::new(&routes)
    }

    /// Answers one request.
    pub fn handle(&self, req: Request<Incoming>) -> Reply {
        if req.method() == Method::OPTIONS && req.uri() == "*" {
            // About the server as a whole, not a resource: no route is asked (RFC 9110 §9.3.7).
            let mut response = Response::new(Body::from(Bytes::new()));
            response.headers_mut().insert(header::ALLOW, self.allow.clone());
            return response.into();
        }
        let Some(path) = normalize(req.uri().path()) else {
            return plain(StatusCode::BAD_REQUEST, "Bad Request\n").into();
        };
        let Some(route) = self.find(&path) else {
            return plain(StatusCode::NOT_FOUND, "Not Found\n").into();
        };
        // The path borrows the request, which moves to the kind: only a path that normalizing
        // changed is handed over, and the kind reads a clean one from the request again.
        let normalized = match path {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path),
        };
        route.kind.call(req, Matched { prefix_len: route.prefix.len(), normalized })
    }

    /// The route that covers `path`, a normalized path.
    fn find(&self, path: &[u8]) -> Option<&Route> {
        self.routes.iter().find(|r| matches(r.prefix.as_bytes(), path))
    }
}

impl hyper::service::Service<Request<Incoming>> for Router {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Reply;

    fn call(&self, req: Request<Incoming>) -> Reply {
        self.handle(req)
    }
}

/// The request path as routes see it: percent-decoded, `//` merged into `/`, `.` segments
/// dropped, a trailing `/` kept. `None` (answered 400) for bad percent-encoding, escapes that
/// do not decode to UTF-8, a NUL byte, or a `..` segment: clients resolve dot segments before
/// sending (RFC 3986 §5.2.4), so a `..` that reaches the server is a probe, not a link; and
/// `%E9` (Latin-1 `é`) means one thing to a front end that decodes as Latin-1 and another to
/// one that does not, and names no file a UTF-8 config could route to. Borrows when nothing
/// needs changing (the gate lets only ASCII through, so an unescaped path is UTF-8).
fn normalize(raw: &str) -> Option<Cow<'_, [u8]>> {
    let clean = is_clean(raw.as_bytes());
    if clean {
        return Some(Cow::Borrowed(raw.as_bytes()));
    }
    let decoded = percent_decode(raw.as_bytes())?;
    if decoded.contains(&0) || std::str::from_utf8(&decoded).is_err() {
        return None;
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    let mut trailing_slash = false;
    for segment in decoded.split(|&b| b == b'/') {
        trailing_slash = matches!(segment, b"" | b".");
        match segment {
            b"" | b"." => {}
            b".." => return None,
            _ => {
                out.push(b'/');
                out.extend_from_slice(segment);
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    Some(Cow::Owned(out))
}

/// Whether a path needs no normalizing: no `%`, no `//`, no `.` or `..` segment. One pass
/// over the bytes, as every request's path goes through it.
fn is_clean(path: &[u8]) -> bool {
    let mut segment_start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' => return false,
            b'/' => {
                if matches!(&path[segment_start..i], b"" | b"." | b"..") && i > 0 {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    !matches!(&path[segment_start.min(path.len())..], b"." | b"..")
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = std::str::from_utf8(input.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether the route `prefix` covers `path`: a prefix ending in `/` covers every path that
/// starts with it; any other covers itself and the paths below it.
fn matches(prefix: &[u8], path: &[u8]) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with(b"/") || rest.is_empty() || rest.starts_with(b"/"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_names_what_the_routes_answer() {
        let allow = |toml: &str| {
            let config = crate::app::tests::parse(toml).unwrap();
            Router::new(&config.routes).unwrap().allow
        };
        assert_eq!(allow(""), "OPTIONS");
        assert_eq!(allow("[[route]]\npath = \"/\"\nstatic = \"/\"\n"), "GET, HEAD, OPTIONS");
        assert_eq!(
            allow(
                "[[route]]\npath = \"/\"\nstatic = \"/\"\n[[route]]\npath = \"/a\"\nrespond = \"a\"\n"
            ),
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        );
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let m = |prefix: &str, path: &str| matches(prefix.as_bytes(), path.as_bytes());
        assert!(m("/", "/anything"));
        assert!(m("/api", "/api"));
        assert!(m("/api", "/api/x"));
        assert!(!m("/api", "/apix"));
        assert!(m("/static/", "/static/a.css"));
        assert!(!m("/static/", "/static"));
    }

    #[test]
    fn paths_are_normalized_before_routing() {
        let n = |raw: &str| normalize(raw).map(|p| String::from_utf8_lossy(&p).into_owned());
        assert_eq!(n("/a/b").as_deref(), Some("/a/b"));
        assert!(matches!(normalize("/a/b"), Some(Cow::Borrowed(_))), "clean paths are borrowed");
        assert_eq!(n("/static//private/p").as_deref(), Some("/static/private/p"));
        assert_eq!(n("/static/./private/").as_deref(), Some("/static/private/"));
        assert_eq!(n("/static/%70rivate%2fp").as_deref(), Some("/static/private/p"));
        assert_eq!(n("/a/.").as_deref(), Some("/a/"));
        assert_eq!(n("//").as_deref(), Some("/"));
        assert_eq!(n("//evil.example").as_deref(), Some("/evil.example"));
        assert_eq!(n("/caf%C3%A9").as_deref(), Some("/café"));
        for bad in ["/..", "/a/../b", "/%2e%2e/x", "/a/%2E%2e", "/x%00", "/%zz", "/%2", "/caf%E9"] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let config = crate::app::tests::parse(
            "[[route]]\npath = \"/\"\nrespond = \"root\"\n[[route]]\npath = \"/a/b\"\nrespond = \"ab\"\n[[route]]\npath = \"/a\"\nrespond = \"a\"\n",
        )
        .unwrap();
        let router = Router::new(&config.routes).unwrap();
        let prefix = |path: &str| router.find(path.as_bytes()).map(|r| r.prefix.as_str());
        assert_eq!(prefix("/a/b/c"), Some("/a/b"));
        assert_eq!(prefix("/a/bc"), Some("/a"));
        assert_eq!(prefix("/x"), Some("/"));
    }
}
