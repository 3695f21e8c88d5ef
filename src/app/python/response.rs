//! The response of a WSGI app, from `start_response` to the last byte: what the Python thread
//! runs (`start_response` with its `exc_info` rules, the `write()` callable, iterating the
//! app's result as it yields, `wsgi.file_wrapper`, and `close()` on every path), and what it
//! hands the event loop, which sends it ([`Head`], then [`Chunk`]s through [`Outbound`]).
//!
//! A Python thread never writes to a socket. A result that is a list is sent whole, with its
//! length; a file wrapped in `wsgi.file_wrapper` is handed over as its descriptor and sent by
//! the event loop as static files are; any other iterable is streamed as it yields, through a
//! channel; what a slow client has not taken waits in memory, then in a spool file (see
//! `backlog`), so that the Python thread goes back to the app.

use std::fs::File;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};

pub(crate) use super::backlog::Budget;
use super::backlog::{Spool, Spooled};

/// The status and headers of a response, and how its body comes.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    /// The reason phrase, when it is not the status's usual one.
    pub(crate) reason: Option<Bytes>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: HeadBody,
}

/// How a response's body comes to the event loop.
#[derive(Debug)]
pub(crate) enum HeadBody {
    /// All of it, with the head.
    Whole(Bytes),
    /// `len` bytes of a file from `offset` (`wsgi.file_wrapper`).
    File { file: File, offset: u64, len: u64 },
    /// In [`Chunk`]s, as the app yields them.
    Stream,
}

/// A piece of a streamed body.
#[derive(Debug)]
pub(crate) enum Chunk {
    Data(Bytes),
    /// Bytes the client was too slow for, written to the response's spool file (see
    /// `backlog`).
    Spooled(Spooled),
    /// The body is complete.
    End,
    /// The app failed after the head was sent: the response is cut.
    Failed,
}

impl Head {
    /// The `500` of an app that failed before its response started.
    pub(crate) fn internal_error() -> Head {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        Head {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: None,
            headers,
            body: HeadBody::Whole(Bytes::from_static(b"Internal Server Error\n")),
        }
    }
}

/// The Python thread's end of a response: where its head and chunks go.
pub(crate) struct Outbound {
    pub(crate) head: Option<oneshot::Sender<Head>>,
    pub(crate) chunks: mpsc::UnboundedSender<Chunk>,
    pub(crate) budget: Arc<Budget>,
}

/// A response in the making: what `start_response` was given, and whether the head has gone.
pub(crate) struct Responder {
    status: Option<(StatusCode, Option<Bytes>)>,
    headers: HeaderMap,
    out: Outbound,
    /// Where what a slow client has not taken goes beyond memory, once it is needed.
    spool: Spool,
    /// The request is `HEAD`: the body is not wanted.
    pub(crate) head_only: bool,
}

impl Responder {
    pub(crate) fn new(out: Outbound, head_only: bool) -> Responder {
        Responder {
            status: None,
            headers: HeaderMap::new(),
            out,
            spool: Spool::default(),
            head_only,
        }
    }

    /// The `Content-Length` `start_response` declared, if any.
    fn declared_length(&self) -> Option<u64> {
        self.headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
    }

    /// Whether the head has gone to the event loop.
    pub(crate) fn started(&self) -> bool {
        self.out.head.is_none()
    }

    /// Sends the head, with `body`. Errors if `start_response` was not called.
    fn send_head(&mut self, body: HeadBody) -> PyResult<()> {
        let Some((status, reason)) = self.status.clone() else {
            return Err(PyRuntimeError::new_err(
                "the app returned (or wrote) its response before calling start_response",
            ));
        };
        let head = Head { status, reason, headers: std::mem::take(&mut self.headers), body };
        if let Some(sender) = self.out.head.take() {
            // The event loop may have given up on the request; the thread finds out from the
            // budget on its next chunk.
            let _ = sender.send(head);
        }
        Ok(())
    }

    /// Sends a chunk of the body (the head first, if it has not gone). False if the response
    /// is no longer wanted.
    fn send(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        if data.is_empty() {
            return Ok(!self.out.budget.is_closed());
        }
        if !self.started() {
            self.send_head(HeadBody::Stream)?;
        }
        if self.head_only {
            // The head is all a HEAD request gets; the app need not go on.
            let _ = self.out.chunks.send(Chunk::End);
            return Ok(false);
        }
        if self.out.budget.is_closed() {
            return Ok(false);
        }
        // In memory while the client keeps up; to the spool file while it does not, so that
        // the thread goes back to the app; only past the spool's size does the thread wait.
        if !self.out.budget.try_add(data.len()) {
            if let Some(spooled) = self.spool.write(py, data) {
                return Ok(self.out.chunks.send(Chunk::Spooled(spooled)).is_ok());
            }
            if !self.out.budget.add(py, data.len()) {
                return Ok(false);
            }
        }
        Ok(self.out.chunks.send(Chunk::Data(Bytes::copy_from_slice(data))).is_ok())
    }

    /// The app's response is complete: the head (with an empty body) if it has not gone, else
    /// the end of the stream.
    fn finish(&mut self) -> PyResult<()> {
        if self.started() {
            let _ = self.out.chunks.send(Chunk::End);
            Ok(())
        } else {
            self.send_head(HeadBody::Whole(Bytes::new()))
        }
    }

    /// The app failed: a `500` if nothing was sent yet, else the response is cut.
    pub(crate) fn fail(&mut self) {
        match self.out.head.take() {
            Some(sender) => {
                let _ = sender.send(Head::internal_error());
            }
            None => {
                let _ = self.out.chunks.send(Chunk::Failed);
            }
        }
    }
}

/// Locks a responder, whatever a panicking thread left it as.
///
/// Taken with the GIL held, so never waited for with it: the holder may be waiting for the GIL
/// (it lets go of it to write to the spool, or to wait for a slow client), as when an app's own
/// thread calls `write()` while the request's thread sends.
pub(crate) fn lock<'a>(
    py: Python<'_>,
    r: &'a Mutex<Responder>,
) -> std::sync::MutexGuard<'a, Responder> {
    loop {
        match r.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                py.detach(|| std::thread::sleep(std::time::Duration::from_micros(100)));
            }
        }
    }
}

/// The `start_response` callable of one request.
#[pyclass(module = "forkserve")]
pub(crate) struct StartResponse {
    pub(crate) responder: Arc<Mutex<Responder>>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let mut responder = lock(py, &self.responder);
        match exc_info {
            // PEP 3333: once the head is sent, an error handler's start_response re-raises.
            Some(info) if responder.started() => {
                let value = info.cast::<PyTuple>()?.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
            None if responder.status.is_some() => {
                return Err(PyRuntimeError::new_err(
                    "start_response called a second time without exc_info",
                ));
            }
            _ => {}
        }
        let status =
            parse_status(status.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err("the status must be a str, such as \"200 OK\"")
            })?)?;
        let headers = parse_headers(py, headers)?;
        responder.status = Some(status);
        responder.headers = headers;
        Ok(Write { responder: Arc::clone(&self.responder) })
    }
}

/// The `write()` callable `start_response` returns, for apps of the CGI era.
#[pyclass(module = "forkserve")]
pub(crate) struct Write {
    responder: Arc<Mutex<Responder>>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        let mut responder = lock(py, &self.responder);
        // A HEAD request's body is dropped, as the app need not know: only a client that left
        // makes write() fail.
        if !responder.send(py, data.as_bytes())? && !responder.head_only {
            return Err(pyo3::exceptions::PyConnectionAbortedError::new_err("the client is gone"));
        }
        Ok(())
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// `"200 OK"` as a status code, with the reason phrase kept when it is not the usual one.
fn parse_status(status: &Bound<'_, PyString>) -> PyResult<(StatusCode, Option<Bytes>)> {
    let text = status.to_str()?;
    let bad = || PyValueError::new_err(format!("invalid status {text:?}: expected \"200 OK\""));
    let (code, reason) = text.split_at_checked(3).ok_or_else(bad)?;
    if !reason.is_empty() && !reason.starts_with(' ') {
        return Err(bad());
    }
    let code = StatusCode::from_bytes(code.as_bytes()).map_err(|_| bad())?;
    if code.as_u16() < 200 && code.as_u16() != 101 {
        // An informational status is not a response; hyper could not send it as one.
        return Err(bad());
    }
    let reason = reason.trim_start();
    let usual = code.canonical_reason().unwrap_or("");
    let reason = (!reason.is_empty()
        && reason != usual
        && reason.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
    .then(|| Bytes::copy_from_slice(reason.as_bytes()));
    Ok((code, reason))
}

/// The headers of `start_response`: a list of `(name, value)` tuples of native strings.
/// Hop-by-hop fields are the server's to send (PEP 3333) and are left out.
fn parse_headers(_py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    let list = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!("the headers must be a list, not {}", type_name(headers)))
    })?;
    let mut map = HeaderMap::with_capacity(list.len());
    for item in list.iter() {
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "a header must be a (name, value) tuple, not {}",
                type_name(&item)
            ))
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("a header must be a (name, value) tuple"));
        }
        let name = native(&pair.get_item(0)?, "header name")?;
        let value = native(&pair.get_item(1)?, "header value")?;
        let name = HeaderName::from_bytes(&name).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&name)
            ))
        })?;
        if is_hop_by_hop(&name) {
            tracing::debug!(header = %name, "a hop-by-hop header from the app is left out");
            continue;
        }
        let value = HeaderValue::from_bytes(&value).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid value for header {name}: {:?}",
                String::from_utf8_lossy(&value)
            ))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

/// A native string's bytes (Latin-1).
fn native(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let s = value
        .cast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!("a {what} must be a str, not {}", type_name(value)))
        })?
        .to_str()?;
    if s.is_ascii() {
        return Ok(s.as_bytes().to_vec());
    }
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c))
                .map_err(|_| PyValueError::new_err(format!("a {what} must be Latin-1: {s:?}")))
        })
        .collect()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// `wsgi.file_wrapper`: wraps a file-like object. Returned as the app's result, a real file
/// is sent by the event loop from its descriptor; anything else is read in blocks.
#[pyclass(module = "forkserve")]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper { filelike, blksize: blksize.max(1) }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self.filelike.bind(py).call_method1("read", (self.blksize,))?;
        Ok((block.len().unwrap_or(0) > 0).then_some(block))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}

impl FileWrapper {
    /// The wrapped file as a descriptor of this process's own, with the offset and length to
    /// send, if it is a regular file (`fileno()` and `tell()` work).
    fn as_file(&self, py: Python<'_>, content_length: Option<u64>) -> Option<(File, u64, u64)> {
        let filelike = self.filelike.bind(py);
        let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
        // -1 is "no descriptor" to a file-like, and may not be borrowed.
        if fd < 0 {
            return None;
        }
        let offset: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
        // SAFETY: `fd` is open for as long as the file object is, which outlives this call;
        // the borrow only lasts for the dup that gives the event loop a descriptor of its own.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let file = File::from(borrowed.try_clone_to_owned().ok()?);
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let len = meta.len().saturating_sub(offset);
        Some((file, offset, content_length.map_or(len, |n| n.min(len))))
    }
}

/// Sends what the app returned: a list whole, a file wrapper from its descriptor, any other
/// iterable as it yields. Returns when the response is sent or no longer wanted; the caller
/// closes `result`.
pub(crate) fn send(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    responder: &Mutex<Responder>,
) -> PyResult<()> {
    if let Ok(list) = result.cast::<PyList>() {
        return send_whole(py, responder, list.iter());
    }
    if let Ok(tuple) = result.cast::<PyTuple>() {
        return send_whole(py, responder, tuple.iter());
    }
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        let mut r = lock(py, responder);
        if !r.started() {
            let length =
                r.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
            if let Some((file, offset, len)) = wrapper.borrow().as_file(py, length) {
                return r.send_head(HeadBody::File { file, offset, len });
            }
        }
    }
    // A small body whose length the app declared, yielded whole as the first item, is sent
    // with its head: one hand-off to the event loop instead of three (head, body, end). Flask
    // and Django return such bodies as iterators of one item, not lists. Nothing is held back
    // to wait for the app's next item (PEP 3333 forbids delaying a block): a body in several
    // pieces, or without a declared length, streams as it is yielded.
    let mut first = true;
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the app's iterable must yield bytes, not {}",
                type_name(&item)
            ))
        })?;
        let mut r = lock(py, responder);
        if std::mem::take(&mut first) && !r.started() {
            let declared = r.declared_length().filter(|n| *n <= GATHERED);
            if declared.is_some_and(|n| bytes.as_bytes().len() as u64 >= n) {
                let body = Bytes::copy_from_slice(bytes.as_bytes());
                return r.send_head(HeadBody::Whole(body));
            }
        }
        if !r.send(py, bytes.as_bytes())? {
            // HEAD has its head; or the client is gone: stop here, and close.
            return Ok(());
        }
    }
    lock(py, responder).finish()
}

/// The largest declared body sent with its head (see [`send`]).
const GATHERED: u64 = 64 * 1024;

/// Sends a list's items as one body, with its length, or as chunks after what `write()` sent.
fn send_whole<'py>(
    py: Python<'py>,
    responder: &Mutex<Responder>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
) -> PyResult<()> {
    let mut body = Vec::new();
    for item in items {
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the app's iterable must yield bytes, not {}",
                type_name(&item)
            ))
        })?;
        body.extend_from_slice(bytes.as_bytes());
    }
    let mut r = lock(py, responder);
    if r.started() {
        // After write(): the list's items follow what it sent.
        if r.send(py, &body)? {
            r.finish()?;
        }
        return Ok(());
    }
    r.send_head(HeadBody::Whole(Bytes::from(body)))
}
