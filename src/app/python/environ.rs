//! The WSGI `environ` of a request (PEP 3333): what the event loop takes from the request
//! without Python ([`RequestData`]), and the dict a Python thread builds from it. Strings are
//! "native strings", bytes decoded as Latin-1 as the PEP says; `PATH_INFO` and `SCRIPT_NAME`
//! are the percent-decoded path split at the route's prefix.

use std::net::IpAddr;

use http::{HeaderMap, Method, Version, header};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use pyo3::{Bound, intern};

use super::input::Input;
use super::response::FileWrapper;
use crate::Client;

/// What the app is told about a request, taken from it on the event loop.
#[derive(Debug)]
pub(crate) struct RequestData {
    pub(crate) method: Method,
    /// The request target as sent: `RAW_URI`.
    pub(crate) target: String,
    /// The decoded path up to the route's prefix (without its trailing `/`): `SCRIPT_NAME`.
    pub(crate) script_name: Vec<u8>,
    /// The rest of the decoded path: `PATH_INFO`.
    pub(crate) path_info: Vec<u8>,
    pub(crate) query: String,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// The client's address and, when it is the peer itself, its port.
    pub(crate) remote: Option<(IpAddr, Option<u16>)>,
    pub(crate) scheme: &'static str,
    /// The host a trusted proxy reported.
    pub(crate) forwarded_host: Option<String>,
    /// The length of the body received.
    pub(crate) body_len: u64,
}

impl RequestData {
    /// The request line as the log shows it: `GET /path?query`.
    pub(crate) fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }

    /// Takes what the app is told from a request's head; `prefix_len` is where the route's
    /// prefix ends in `path`, the normalized path.
    pub(crate) fn new(head: http::request::Parts, path: &[u8], prefix_len: usize) -> Self {
        let mut script = &path[..prefix_len.min(path.len())];
        if script.ends_with(b"/") {
            script = &script[..script.len() - 1];
        }
        let path_info = &path[script.len()..];
        let client = head.extensions.get::<Client>();
        let remote = client.and_then(|c| {
            let addr = c.addr()?;
            let port =
                c.peer().filter(|p| crate::config::canonical(p.ip()) == addr).map(|p| p.port());
            Some((addr, port))
        });
        RequestData {
            method: head.method.clone(),
            target: head.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            script_name: script.to_vec(),
            path_info: path_info.to_vec(),
            query: head.uri.query().unwrap_or("").to_string(),
            version: head.version,
            headers: head.headers,
            remote,
            scheme: client.map_or("http", Client::scheme),
            forwarded_host: client.and_then(|c| c.host().map(str::to_string)),
            body_len: 0,
        }
    }
}

/// What every request's environ shares in one Python thread.
pub(crate) struct Shared {
    pub(crate) errors: Py<PyAny>,
    pub(crate) version: Py<PyTuple>,
    pub(crate) multithread: bool,
    pub(crate) multiprocess: bool,
    pub(crate) software: Py<PyString>,
    pub(crate) file_wrapper: Py<PyAny>,
}

/// `bytes` as a native string: decoded as Latin-1, so that every byte is one character.
pub(crate) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => PyString::new(py, s),
        _ => PyString::new(py, &bytes.iter().map(|&b| b as char).collect::<String>()),
    }
}

/// Builds the environ dict of `request`, whose body `input` reads.
pub(crate) fn build<'py>(
    py: Python<'py>,
    request: &RequestData,
    input: Bound<'py, Input>,
    shared: &Shared,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    env.set_item(intern!(py, "REQUEST_METHOD"), method(py, &request.method))?;
    env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, &request.script_name))?;
    env.set_item(intern!(py, "PATH_INFO"), latin1(py, &request.path_info))?;
    env.set_item(intern!(py, "QUERY_STRING"), PyString::new(py, &request.query))?;
    env.set_item(intern!(py, "RAW_URI"), PyString::new(py, &request.target))?;
    env.set_item(intern!(py, "REQUEST_URI"), PyString::new(py, &request.target))?;
    env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol(py, request.version))?;
    env.set_item(intern!(py, "SERVER_SOFTWARE"), shared.software.bind(py))?;
    let (name, port) = server(request);
    env.set_item(intern!(py, "SERVER_NAME"), latin1(py, name.as_bytes()))?;
    env.set_item(intern!(py, "SERVER_PORT"), PyString::new(py, &port))?;
    if let Some((addr, port)) = request.remote {
        env.set_item(intern!(py, "REMOTE_ADDR"), PyString::new(py, &addr.to_string()))?;
        if let Some(port) = port {
            env.set_item(intern!(py, "REMOTE_PORT"), PyString::new(py, &port.to_string()))?;
        }
    }
    if request.body_len > 0 || request.headers.contains_key(header::CONTENT_LENGTH) {
        let length = request.body_len.to_string();
        env.set_item(intern!(py, "CONTENT_LENGTH"), PyString::new(py, &length))?;
    }
    headers(py, &env, &request.headers)?;
    env.set_item(intern!(py, "wsgi.version"), shared.version.bind(py))?;
    env.set_item(intern!(py, "wsgi.url_scheme"), PyString::new(py, request.scheme))?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.errors"), shared.errors.bind(py))?;
    env.set_item(intern!(py, "wsgi.multithread"), PyBool::new(py, shared.multithread))?;
    env.set_item(intern!(py, "wsgi.multiprocess"), PyBool::new(py, shared.multiprocess))?;
    env.set_item(intern!(py, "wsgi.run_once"), PyBool::new(py, false))?;
    // The whole body is received before the app runs: reading to the end is always safe.
    env.set_item(intern!(py, "wsgi.input_terminated"), PyBool::new(py, true))?;
    env.set_item(intern!(py, "wsgi.file_wrapper"), shared.file_wrapper.bind(py))?;
    Ok(env)
}

/// The method as a string, interned for the common ones.
fn method<'py>(py: Python<'py>, method: &Method) -> Bound<'py, PyString> {
    match *method {
        Method::GET => intern!(py, "GET").clone(),
        Method::POST => intern!(py, "POST").clone(),
        Method::HEAD => intern!(py, "HEAD").clone(),
        _ => PyString::new(py, method.as_str()),
    }
}

fn protocol(py: Python<'_>, version: Version) -> Bound<'_, PyString> {
    match version {
        Version::HTTP_10 => intern!(py, "HTTP/1.0").clone(),
        Version::HTTP_2 => intern!(py, "HTTP/2").clone(),
        _ => intern!(py, "HTTP/1.1").clone(),
    }
}

/// `SERVER_NAME` and `SERVER_PORT`: from the host a trusted proxy reported, else the `Host`
/// header, else the default of the scheme on `localhost`.
fn server(request: &RequestData) -> (String, String) {
    let host = request
        .forwarded_host
        .as_deref()
        .or_else(|| request.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let default_port = if request.scheme == "https" { "443" } else { "80" };
    // `[::1]:8000`, `example.com:8000`, `example.com`.
    let (name, port) = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => (&host[..colon], &host[colon + 1..]),
        _ => (host, default_port),
    };
    let name = if name.is_empty() { "localhost" } else { name };
    (name.to_string(), if port.is_empty() { default_port } else { port }.to_string())
}

/// The header fields as `HTTP_*` keys (`CONTENT_TYPE`, `CONTENT_LENGTH` without the prefix),
/// repeated fields joined by `, ` (`; ` for `Cookie`). A field whose name has `_` is left
/// out: `X_Forwarded_For` and `X-Forwarded-For` would both be `HTTP_X_FORWARDED_FOR`, and a
/// client could pass one off as the other a proxy vouched for (as Gunicorn does since 22).
fn headers(py: Python<'_>, env: &Bound<'_, PyDict>, headers: &HeaderMap) -> PyResult<()> {
    let mut key = String::with_capacity(64);
    for name in headers.keys() {
        if name == header::CONTENT_LENGTH || name.as_str().contains('_') {
            continue;
        }
        key.clear();
        if name != header::CONTENT_TYPE {
            key.push_str("HTTP_");
        }
        key.extend(
            name.as_str().chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }),
        );
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let value = match values.next() {
            None => latin1(py, first.as_bytes()),
            Some(second) => {
                let separator: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(separator);
                    joined.extend_from_slice(v.as_bytes());
                }
                latin1(py, &joined)
            }
        };
        env.set_item(PyString::new(py, &key), value)?;
    }
    Ok(())
}

/// Makes what every environ of a thread shares.
pub(crate) fn shared(py: Python<'_>, multithread: bool, multiprocess: bool) -> PyResult<Shared> {
    Ok(Shared {
        errors: Bound::new(py, super::errors::Errors::default())?.into_any().unbind(),
        version: PyTuple::new(py, [1, 0])?.unbind(),
        multithread,
        multiprocess,
        software: PyString::new(py, concat!("forkserve/", env!("CARGO_PKG_VERSION"))).unbind(),
        file_wrapper: py.get_type::<FileWrapper>().into_any().unbind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(host: Option<&str>, scheme: &'static str) -> RequestData {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, h.parse().unwrap());
        }
        RequestData {
            method: Method::GET,
            target: "/".into(),
            script_name: vec![],
            path_info: b"/".to_vec(),
            query: String::new(),
            version: Version::HTTP_11,
            headers,
            remote: None,
            scheme,
            forwarded_host: None,
            body_len: 0,
        }
    }

    #[test]
    fn server_name_and_port_come_from_the_host() {
        let s = |host, scheme| server(&data(host, scheme));
        assert_eq!(s(Some("example.com:8000"), "http"), ("example.com".into(), "8000".into()));
        assert_eq!(s(Some("example.com"), "https"), ("example.com".into(), "443".into()));
        assert_eq!(s(Some("[::1]:81"), "http"), ("[::1]".into(), "81".into()));
        assert_eq!(s(Some("[::1]"), "http"), ("[::1]".into(), "80".into()));
        assert_eq!(s(None, "http"), ("localhost".into(), "80".into()));
    }

    #[test]
    fn the_script_name_is_the_prefix_without_its_slash() {
        let req = http::Request::get("/app/x/y?q=1").body(()).unwrap();
        let (parts, ()) = req.into_parts();
        let d = RequestData::new(parts.clone(), b"/app/x/y", "/app/".len());
        assert_eq!(
            (d.script_name.as_slice(), d.path_info.as_slice()),
            (&b"/app"[..], &b"/x/y"[..])
        );
        assert_eq!(d.query, "q=1");
        let d = RequestData::new(parts.clone(), b"/app/x/y", "/".len());
        assert_eq!(
            (d.script_name.as_slice(), d.path_info.as_slice()),
            (&b""[..], &b"/app/x/y"[..])
        );
        let d = RequestData::new(parts, b"/api", "/api".len());
        assert_eq!((d.script_name.as_slice(), d.path_info.as_slice()), (&b"/api"[..], &b""[..]));
    }
}
