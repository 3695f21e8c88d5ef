//! The `wsgi` app kind: a Python WSGI app (PEP 3333) run by the worker's own embedded CPython,
//! as Gunicorn runs one, with HTTP, slow clients and supervision left to forkserve.
//!
//! A request goes one way: the event loop receives its whole body (`input`), then queues it
//! for one of the worker's Python threads (`pool`), which builds the environ (`environ`), calls
//! the app and hands the response back as it comes (`response`); the event loop sends it. The
//! event loop never takes the GIL, and a Python thread never waits for a client, except on a
//! streamed response more than `backlog::BUFFERED` (in memory) plus `backlog::SPOOLED` (in a
//! file) ahead of it.
//!
//! | module | owns |
//! |---|---|
//! | `interpreter` | starting CPython in the worker (virtualenv, `sys.path`, signals), importing an app |
//! | `preload` | `[python] preload`: starting CPython and importing the apps once in a generation's mold, and forking its workers from it |
//! | `pool` | the Python threads, their queue, and the watcher of stuck requests |
//! | `environ` | the environ of a request |
//! | `input` | receiving the body, and `wsgi.input` |
//! | `backlog` | what a slow client has not taken of a streamed response: memory, then a spool file |
//! | `response` | `start_response`, `write()`, the result's iteration, `wsgi.file_wrapper`, `close()` |
//! | `errors` | `wsgi.errors` |

mod backlog;
mod environ;
mod errors;
mod input;
mod interpreter;
mod pool;
mod preload;
mod response;

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::sync::{mpsc, oneshot};

use self::environ::RequestData;
use self::input::NotReceived;
use self::pool::{App, Job, Pool, Ticket};
use self::response::{Budget, Chunk, Head, HeadBody, Outbound};
use super::Body;
use super::kind::{AppKind, Kind, Matched, Methods, Reply};
use super::seam::WorkerContext;
use crate::config::{KindValue, PythonApp, RouteKind, SpannedError};
use crate::error::BoxError;

pub(crate) use self::preload::PRELOAD;

/// The `wsgi` kind: `wsgi = "module:callable"` in a `[[route]]`.
pub(crate) struct Wsgi;

impl RouteKind for Wsgi {
    const KEY: &'static str = "wsgi";
    type Config = PythonApp;

    fn read(value: KindValue<'_>) -> Result<PythonApp, SpannedError> {
        value.read()
    }
}

impl Kind for Wsgi {
    fn serve(app: &PythonApp) -> io::Result<Box<dyn AppKind>> {
        let runtime = RUNTIME.with(|r| r.borrow().clone()).ok_or_else(|| {
            io::Error::other("Python is not started in this process (see python::start)")
        })?;
        let app = runtime.app(app)?;
        Ok(Box::new(Route { app, runtime }))
    }
}

/// A mutex's guard, even if a thread panicked holding it: every lock of this module guards state
/// that is whole between statements (a queue, a count, a cursor), so a panic leaves it usable.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

thread_local! {
    /// This worker's Python, once started: on the worker's (event loop's) thread.
    static RUNTIME: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// A worker's Python: its threads, and the apps it imported.
struct Runtime {
    pool: Pool,
    /// Request bodies beyond this are spooled to a file.
    body_buffer_size: u64,
    apps: RefCell<Vec<(PythonApp, Arc<App>)>>,
}

impl Runtime {
    /// The app `spec` names, imported on first use.
    fn app(&self, spec: &PythonApp) -> io::Result<Arc<App>> {
        if let Some((_, app)) = self.apps.borrow().iter().find(|(s, _)| s == spec) {
            return Ok(Arc::clone(app));
        }
        let object = interpreter::import(spec).map_err(io::Error::other)?;
        let app = Arc::new(App { object, name: spec.to_string() });
        self.apps.borrow_mut().push((spec.clone(), Arc::clone(&app)));
        Ok(app)
    }
}

/// Starts Python in this worker, with the `[python]` table of its config: called by the
/// router's factory when a route, or `python.wsgi`, is a WSGI app. A worker forked from a mold
/// (`[python] preload`) finds the interpreter started and the apps imported, and serves those.
pub(crate) fn start(worker: &WorkerContext) -> io::Result<()> {
    if RUNTIME.with(|r| r.borrow().is_some()) {
        return Ok(());
    }
    let config = worker.config();
    interpreter::start(&config.python).map_err(io::Error::other)?;
    let retire = Arc::clone(worker.retire());
    let pool = Pool::start(pool::Settings {
        threads: config.python.threads as usize,
        multiprocess: config.server.workers.resolve() > 1,
        request_timeout: crate::config::ServerConfig::limit(config.server.request_timeout),
        retire: Arc::new(move |reason| retire.ask(reason)),
    })?;
    let runtime = Runtime {
        pool,
        body_buffer_size: config.python.body_buffer_size,
        apps: RefCell::new(preload::imported()),
    };
    RUNTIME.with(|r| *r.borrow_mut() = Some(Rc::new(runtime)));
    // As a Python process ending normally would: an app's atexit handlers flush what it
    // buffered (metrics, traces, logs).
    worker.at_exit().add(interpreter::run_exit_handlers);
    Ok(())
}

/// A route served by a WSGI app.
struct Route {
    app: Arc<App>,
    runtime: Rc<Runtime>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("wsgi").field("app", &self.app.name).finish()
    }
}

impl AppKind for Route {
    fn methods(&self) -> Methods {
        Methods::ANY
    }

    fn call(&self, req: Request<Incoming>, at: Matched) -> Reply {
        let path = at.path(&req).to_vec();
        let (parts, body) = req.into_parts();
        let data = RequestData::new(parts, &path, at.prefix_len);
        let (app, runtime) = (Arc::clone(&self.app), Rc::clone(&self.runtime));
        Reply::later(respond(app, runtime, data, body))
    }
}

/// Receives the body, runs the app on a Python thread, and makes the response it gives.
async fn respond(
    app: Arc<App>,
    runtime: Rc<Runtime>,
    mut data: RequestData,
    body: Incoming,
) -> Result<Response<Body>, BoxError> {
    let body = match input::receive(body, runtime.body_buffer_size).await {
        Ok(body) => body,
        Err(NotReceived::Client(e)) => {
            // The gate that ended the body answers for it, and logs it.
            tracing::debug!("{}: the request body was not received: {e}", data.line());
            return Ok(super::plain(http::StatusCode::BAD_REQUEST, "Bad Request\n"));
        }
        Err(NotReceived::Spool(e)) => return Err(e.into()),
    };
    data.body_len = body.len();
    let ticket = Ticket::new(data.line());
    let head_only = data.method == http::Method::HEAD;
    let (head_tx, head_rx) = oneshot::channel();
    let (chunk_tx, chunks) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget::default());
    let mut watch = Watch {
        runtime: Rc::clone(&runtime),
        ticket: Arc::clone(&ticket),
        budget: Arc::clone(&budget),
        done: false,
    };
    let out = Outbound { head: Some(head_tx), chunks: chunk_tx, budget: Arc::clone(&budget) };
    runtime.pool.submit(Job { request: data, body, app, out, ticket });
    let head = head_rx.await.map_err(|_| "the Python thread ended without a response")?;
    let Head { status, reason, headers, body } = head;
    // A HEAD request wants nothing after its head: hyper drops the body unread, which is not
    // the client giving up.
    watch.done |= head_only;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let body = match body {
        HeadBody::Whole(bytes) => {
            watch.done = true;
            let len = bytes.len() as u64;
            match declared {
                Some(n) if n < len => Body::from(bytes.slice(..n as usize)),
                Some(n) if n > len => {
                    short(Body::from(bytes), n, len, (!head_only).then_some(&*watch.ticket.line))
                }
                _ => Body::from(bytes),
            }
        }
        HeadBody::File { file, offset, len } => {
            watch.done = true;
            match declared {
                Some(n) if n > len => short(
                    Body::file(file, offset, len),
                    n,
                    len,
                    (!head_only).then_some(&*watch.ticket.line),
                ),
                _ => Body::file(file, offset, declared.map_or(len, |n| n.min(len))),
            }
        }
        HeadBody::Stream => Body::stream(Streamed {
            chunks,
            watch,
            ended: false,
            left: declared,
            spooled: None,
            last: None,
            flush: Flush::default(),
        }),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        response.extensions_mut().insert(reason);
    }
    Ok(response)
}

/// A body shorter than the `Content-Length` the app declared: sent as it is, then the
/// connection is cut, so that the client sees the response is incomplete (as under Gunicorn)
/// rather than read the next response as the rest of this one. (A longer body is cut to the
/// declared length.)
/// `line` is the request's, unless it is `HEAD` (whose body is not sent).
fn short(body: Body, declared: u64, len: u64, line: Option<&str>) -> Body {
    if let Some(line) = line {
        tracing::warn!(
            "{line}: the app declared Content-Length {declared} but gave {len} bytes: the \
             response is cut after them"
        );
    }
    Body::stream(ThenCut(Some(body), Flush::default()))
}

/// A body whose length hyper is not told (the header says it), and that fails once its frames
/// are sent, which closes the connection.
struct ThenCut(Option<Body>, Flush);

impl hyper::body::Body for ThenCut {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(body) = this.0.as_mut() else { return Poll::Ready(None) };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(None) => {
                let cut: BoxError = "the body is shorter than its Content-Length".into();
                match this.1.first(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.0 = None;
                        Poll::Ready(Some(Err(cut)))
                    }
                }
            }
            other => other,
        }
    }
}

/// Lets hyper write what it holds before a body ends in a way that closes the connection (an
/// error, or fewer bytes than declared): hyper drops its unwritten buffer then, so the bytes
/// the client was owed before the cut would be lost with it. The first poll at the end is
/// answered `Pending` (and woken at once), which hyper spends writing; the next ends.
#[derive(Default)]
struct Flush(bool);

impl Flush {
    fn first(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Tells the Python side when the event loop gives up on a response (the client left, or its
/// `request_timeout` passed): a queued request is then never run, a running one is reported,
/// and a streaming one stops at its next chunk.
struct Watch {
    runtime: Rc<Runtime>,
    ticket: Arc<Ticket>,
    budget: Arc<Budget>,
    /// The whole response was handed over.
    done: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Whatever the app yields from now on is not wanted, even when all the response said
        // it had was sent: a thread waiting for room in the backlog must not wait for ever.
        self.budget.close();
        if !self.done {
            self.runtime.pool.give_up(&self.ticket);
        }
    }
}

/// A body streamed from a Python thread.
struct Streamed {
    chunks: mpsc::UnboundedReceiver<Chunk>,
    watch: Watch,
    /// The stream has ended (or failed).
    ended: bool,
    /// What remains of the app's `Content-Length`, if it gave one: once it is sent, hyper
    /// ends the response and drops the body without waiting for the app's end.
    left: Option<u64>,
    /// The range of the spool file being sent, if any.
    spooled: Option<backlog::Spooled>,
    /// The end, held back one poll for hyper to write what it holds (see [`Flush`]).
    last: Option<Option<Result<Frame<Bytes>, BoxError>>>,
    flush: Flush,
}

impl Streamed {
    /// Counts `bytes` as sent, and makes them a frame.
    fn sent(&mut self, bytes: Bytes) -> Frame<Bytes> {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(bytes.len() as u64);
            // All the response says it has: whatever the app does next is not wanted.
            self.watch.done |= *left == 0;
        }
        Frame::data(bytes)
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            // After the poll that let hyper write what it held, if the end was held back.
            return Poll::Ready(self.last.take().flatten());
        }
        let this = &mut *self;
        if let Some(range) = &mut this.spooled {
            match range.next() {
                Some(Ok(bytes)) => return Poll::Ready(Some(Ok(this.sent(bytes)))),
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => this.spooled = None,
            }
        }
        let frame = match this.chunks.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Chunk::Data(bytes))) => {
                this.watch.budget.took(bytes.len());
                return Poll::Ready(Some(Ok(this.sent(bytes))));
            }
            Poll::Ready(Some(Chunk::Spooled(range))) => {
                this.spooled = Some(range);
                return self.poll_frame(cx);
            }
            Poll::Ready(Some(Chunk::End)) => None,
            Poll::Ready(Some(Chunk::Failed)) => {
                Some(Err("the app failed after its response started".into()))
            }
            Poll::Ready(None) => Some(Err("the app's thread ended its response early".into())),
        };
        this.ended = true;
        this.watch.done = true;
        // An end that closes the connection (an error, or short of the declared length): what
        // hyper holds is written first.
        if frame.is_some() || this.left.is_some_and(|left| left > 0) {
            this.last = Some(frame);
            if this.flush.first(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(this.last.take().flatten())
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
