//! The Python threads of a worker and what they run: a queue of requests whose bodies are
//! already received, `threads` OS threads that each hold the GIL only while they run an app
//! (waiting for the next request, or for a slow client, without it), and a watcher thread that
//! logs the Python stack of a request abandoned while it runs (its `request_timeout` passed,
//! or its client left) and asks for the worker to be replaced when every thread is stuck.
//!
//! The event loop never takes the GIL: it queues a [`Job`] and awaits its head and chunks
//! (see `response`), so that a request stuck in Python stops nothing but its own thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::environ::{self, RequestData};
use super::input::{Input, Received};
use super::response::{self, Outbound, Responder, StartResponse};
use super::{interpreter, lock};

/// An app, imported.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) object: Py<PyAny>,
    pub(crate) name: String,
}

/// A request for a Python thread: its head, its received body, the app, and where its
/// response goes.
pub(crate) struct Job {
    pub(crate) request: RequestData,
    pub(crate) body: Received,
    pub(crate) app: Arc<App>,
    pub(crate) out: Outbound,
    pub(crate) ticket: Arc<Ticket>,
}

/// Where a request is, shared by the event loop (which may give up on it) and its thread.
#[derive(Debug)]
pub(crate) struct Ticket {
    state: AtomicU8,
    /// The Python thread running it (`threading.get_ident()`), once running.
    thread: AtomicU64,
    /// The request line, for the log.
    pub(crate) line: String,
    pub(crate) since: Instant,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// The event loop gave up on it while it was queued: it is never run.
const DROPPED: u8 = 3;
/// The event loop gave up on it while it ran: its thread is stuck until the app returns.
const ABANDONED: u8 = 4;

impl Ticket {
    pub(crate) fn new(line: String) -> Arc<Ticket> {
        Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            thread: AtomicU64::new(0),
            line,
            since: Instant::now(),
        })
    }
}

/// How long busy threads may take no request while others wait before an idle thread is woken
/// for them (see [`Pool::submit`]).
const STALLED: Duration = Duration::from_millis(1);

/// The Python threads of this worker, and their queue.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    /// The task that wakes idle threads runs (see [`Pool::submit`]).
    waking: std::rc::Rc<std::cell::Cell<bool>>,
    /// Tells that task a request was queued.
    queued: std::rc::Rc<tokio::sync::Notify>,
}

/// The requests waiting for a thread, and how many threads wait for one.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a request.
    idle: usize,
    /// Of those, the ones woken that have not yet taken one.
    woken: usize,
    /// How many requests threads have taken: whether the busy ones make progress.
    taken: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    queued: Condvar,
    /// What each thread runs now, if anything.
    running: Vec<Mutex<Option<Arc<Ticket>>>>,
    /// Requests abandoned while running, for the watcher to report.
    abandoned: Mutex<mpsc::Sender<Arc<Ticket>>>,
    /// Set once every thread was found stuck and the worker asked to be replaced.
    retiring: AtomicBool,
}

/// What the pool needs to know of the worker.
pub(crate) struct Settings {
    pub(crate) threads: usize,
    pub(crate) multiprocess: bool,
    /// `request_timeout`, if any: a request abandoned past it is a stuck one.
    pub(crate) request_timeout: Option<Duration>,
    /// Asks for this worker to be replaced, successor first.
    pub(crate) retire: Arc<dyn Fn(String) + Send + Sync>,
}

impl Pool {
    /// Starts the threads.
    pub(crate) fn start(settings: Settings) -> std::io::Result<Pool> {
        let (report, reports) = mpsc::channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            running: (0..settings.threads).map(|_| Mutex::new(None)).collect(),
            abandoned: Mutex::new(report),
            retiring: AtomicBool::new(false),
        });
        let multithread = settings.threads > 1;
        let (started, starts) = mpsc::channel();
        for index in 0..settings.threads {
            let shared = Arc::clone(&shared);
            let multiprocess = settings.multiprocess;
            let retire = Arc::clone(&settings.retire);
            let started = started.clone();
            std::thread::Builder::new().name(format!("python-{index}")).spawn(move || {
                serve(&shared, index, (multithread, multiprocess), &*retire, &started)
            })?;
        }
        // Each thread says whether it could set itself up: a worker without them would queue
        // requests that no one runs.
        for _ in 0..settings.threads {
            match starts.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::Error::other("a Python thread ended as it started")),
            }
        }
        let watched = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("python-watch".into())
            .spawn(move || watch(&watched, &reports, settings))?;
        Ok(Pool { shared, waking: Default::default(), queued: Default::default() })
    }

    /// Queues a request. Idle threads are woken by a task of the event loop, not once per
    /// request: each wake-up takes the core from the event loop, and a thread takes the next
    /// request itself before it waits again, so a fast app's queue is drained by the thread
    /// already running. The task wakes a thread when none is busy (at the end of the loop's
    /// turn, so that one wake-up carries what the turn queued), or when the busy ones have
    /// taken no request for [`STALLED`] (they wait on I/O without the GIL, or are stuck), one
    /// at a time. Hello world on one core: 0.84 thread switches per request each way with a
    /// wake-up per request, 0.02 with this.
    pub(crate) fn submit(&self, job: Job) {
        lock(&self.shared.queue).jobs.push_back(job);
        if self.waking.replace(true) {
            self.queued.notify_one();
            return;
        }
        let (shared, waking) = (Arc::clone(&self.shared), std::rc::Rc::clone(&self.waking));
        let queued = std::rc::Rc::clone(&self.queued);
        tokio::task::spawn_local(async move {
            tokio::task::yield_now().await;
            // When the busy threads last took a request, as far as this task saw.
            let mut progress: Option<(u64, Instant)> = None;
            loop {
                {
                    let mut queue = lock(&shared.queue);
                    if queue.jobs.len() <= queue.woken || queue.idle <= queue.woken {
                        // Every waiting request has a thread coming, or every thread is busy
                        // (a busy thread takes the next request when it is done).
                        waking.set(false);
                        return;
                    }
                    let now = Instant::now();
                    let busy = shared.running.len() - queue.idle;
                    let stalled = busy == 0
                        || progress.is_some_and(|(taken, at)| {
                            taken == queue.taken && now.duration_since(at) >= STALLED
                        });
                    if stalled {
                        queue.woken += 1;
                        shared.queued.notify_one();
                    }
                    if stalled || progress.is_none_or(|(taken, _)| taken != queue.taken) {
                        progress = Some((queue.taken, now));
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(STALLED) => {}
                    () = queued.notified() => {}
                }
            }
        });
    }

    /// The event loop gave up on the request of `ticket` (its response is no longer wanted).
    pub(crate) fn give_up(&self, ticket: &Arc<Ticket>) {
        match ticket.state.compare_exchange(QUEUED, DROPPED, Ordering::AcqRel, Ordering::Acquire) {
            // Out of the queue now, with its body (memory, or a spool file's descriptor): with
            // every thread stuck, clients that give up and retry would otherwise grow it.
            Ok(_) => lock(&self.shared.queue).jobs.retain(|job| !Arc::ptr_eq(&job.ticket, ticket)),
            Err(RUNNING) => {
                if ticket
                    .state
                    .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let _ = lock(&self.shared.abandoned).send(Arc::clone(ticket));
                }
            }
            Err(_) => {}
        }
    }
}

/// A Python thread: attached for life, it releases the GIL while it waits for a request.
/// `started` is told once it is set up (or why it could not be).
fn serve(
    shared: &Shared,
    index: usize,
    (multithread, multiprocess): (bool, bool),
    retire: &(dyn Fn(String) + Send + Sync),
    started: &mpsc::Sender<Result<(), String>>,
) {
    Python::attach(|py| {
        let setup = environ::shared(py, multithread, multiprocess).and_then(|env| {
            let threading = py.import("threading")?;
            Ok((env, threading.call_method0("get_ident")?.extract::<u64>()?))
        });
        let (env, ident) = match setup {
            Ok(setup) => setup,
            Err(e) => {
                let _ = started.send(Err(format!("a Python thread cannot start: {e}")));
                return;
            }
        };
        let _ = started.send(Ok(()));
        loop {
            // The next request at once if one waits (without letting go of the GIL), else
            // wait for one without the GIL.
            let next = {
                let mut queue = lock(&shared.queue);
                let job = queue.jobs.pop_front();
                queue.taken += u64::from(job.is_some());
                job
            };
            let job = match next {
                Some(job) => job,
                None => py.detach(|| {
                    let mut queue = lock(&shared.queue);
                    loop {
                        if let Some(job) = queue.jobs.pop_front() {
                            queue.taken += 1;
                            return job;
                        }
                        queue.idle += 1;
                        queue = shared
                            .queued
                            .wait(queue)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        queue.idle -= 1;
                        queue.woken = queue.woken.saturating_sub(1);
                    }
                }),
            };
            if job
                .ticket
                .state
                .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Given up while queued: its client is gone, or it timed out waiting.
                continue;
            }
            job.ticket.thread.store(ident, Ordering::Release);
            *lock(&shared.running[index]) = Some(Arc::clone(&job.ticket));
            let ticket = Arc::clone(&job.ticket);
            // A bug of ours must not take the thread with it: the request's response is
            // dropped (its client gets a 500), and the thread serves on. The panic hook has
            // logged it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(py, job, &env, retire)
            }));
            *lock(&shared.running[index]) = None;
            // Over, even if the event loop gave up on it: the watcher has nothing to report.
            ticket.state.store(DONE, Ordering::Release);
        }
    })
}

/// Runs one request: calls the app, sends what it returns, and closes it, whatever happens.
fn run(py: Python<'_>, job: Job, env: &environ::Shared, retire: &(dyn Fn(String) + Send + Sync)) {
    let Job { request, body, app, out, ticket } = job;
    let head_only = request.method == http::Method::HEAD;
    let responder = Arc::new(Mutex::new(Responder::new(out, head_only)));
    let outcome = unwound(|| {
        let input = Bound::new(py, Input::new(body))?;
        let environ = environ::build(py, &request, input, env)?;
        let start_response = Bound::new(py, StartResponse { responder: Arc::clone(&responder) })?;
        let result = app.object.bind(py).call1((environ, start_response))?;
        let sent = unwound(|| response::send(py, &result, &responder));
        let closed = close(py, &result);
        sent.and(closed)
    });
    if let Err(error) = outcome {
        // Logged first, so that the log has the error by the time the client has the 500.
        failed(py, &error, &ticket.line, &app.name, retire);
        response::lock(py, &responder).fail();
    }
}

/// Runs `f`, with a panic in it (a bug of ours, met by some input) made an exception of the
/// request: the thread lives on to serve the next one, and the result is still closed.
fn unwound(f: impl FnOnce() -> PyResult<()>) -> PyResult<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(pyo3::panic::PanicException::new_err(message))
    })
}

/// Calls the result's `close()`, if it has one.
fn close(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    let _ = py;
    if result.hasattr("close")? {
        result.call_method0("close")?;
    }
    Ok(())
}

/// Logs an app's exception beside its request line. `sys.exit()` in a request asks for the
/// worker to end: it is replaced, successor first, so that nothing queued on it is lost.
fn failed(
    py: Python<'_>,
    error: &PyErr,
    line: &str,
    app: &str,
    retire: &(dyn Fn(String) + Send + Sync),
) {
    let traceback = interpreter::traceback(py, error);
    if error.is_instance_of::<pyo3::exceptions::PySystemExit>(py) {
        tracing::error!(
            app,
            "{line}: the app called sys.exit(); answered 500, and the worker is replaced:\n{traceback}"
        );
        retire(format!("the app called sys.exit() in {line}"));
    } else {
        tracing::error!(
            app,
            "{line}: the app raised an exception; answered 500 (or cut, if the response had started):\n{traceback}"
        );
    }
}

/// How often the watcher looks at the threads.
const TICK: Duration = Duration::from_millis(200);

/// How long a request whose client left may run on before its stack is logged: most are
/// finishing (closing, or past the last byte the client wanted), and are not worth a report.
const GRACE: Duration = Duration::from_secs(1);

/// The watcher: has the Python stack logged of each request abandoned while running (past its
/// `request_timeout`, or still running [`GRACE`] after its client left), and asks for the
/// worker's replacement once every thread runs a request abandoned past `request_timeout`.
///
/// A stack needs the GIL, which an app's C code may hold for ever; the stacks are logged by a
/// thread of their own, so that this one never waits for it and still sees every thread stuck.
fn watch(shared: &Shared, reports: &mpsc::Receiver<Arc<Ticket>>, settings: Settings) {
    let (log, to_log) = mpsc::channel::<(Arc<Ticket>, &'static str)>();
    let stacks = std::thread::Builder::new().name("python-stacks".into()).spawn(move || {
        for (ticket, why) in to_log {
            report(&ticket, why);
        }
    });
    if let Err(e) = stacks {
        tracing::warn!("cannot start the thread that logs stuck requests' Python stacks: {e}");
    }
    let mut pending: Vec<(Arc<Ticket>, Instant)> = Vec::new();
    loop {
        match reports.recv_timeout(TICK) {
            Ok(ticket) => pending.push((ticket, Instant::now())),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        pending.retain(|(ticket, abandoned)| {
            if ticket.state.load(Ordering::Acquire) != ABANDONED {
                return false;
            }
            let timed_out = settings
                .request_timeout
                .is_some_and(|limit| ticket.since.elapsed() + Duration::from_millis(50) >= limit);
            if !timed_out && abandoned.elapsed() < GRACE {
                return true;
            }
            let why = if timed_out { "request_timeout passed" } else { "its client left" };
            let _ = log.send((Arc::clone(ticket), why));
            false
        });
        let Some(limit) = settings.request_timeout else { continue };
        let stuck = shared.running.iter().all(|slot| {
            lock(slot).as_ref().is_some_and(|t| {
                t.state.load(Ordering::Acquire) == ABANDONED && t.since.elapsed() >= limit
            })
        });
        if stuck && !shared.retiring.swap(true, Ordering::AcqRel) {
            let reason = format!(
                "every Python thread ({}) runs a request past request_timeout: replacing the worker",
                shared.running.len()
            );
            tracing::error!("{reason}");
            (settings.retire)(reason);
        }
    }
}

/// Logs where in Python an abandoned request is, unless it has finished since.
fn report(ticket: &Ticket, why: &str) {
    let ident = ticket.thread.load(Ordering::Acquire);
    let stack = Python::attach(|py| {
        // Checked with the GIL held: the thread cannot move on to another request meanwhile.
        (ticket.state.load(Ordering::Acquire) == ABANDONED).then(|| stack(py, ident))
    });
    let Some(stack) = stack else { return };
    let stack = stack.unwrap_or_else(|e| format!("(no stack: {e})"));
    tracing::warn!(
        request = ticket.line.as_str(),
        elapsed_ms = ticket.since.elapsed().as_millis() as u64,
        "the app still runs a request whose response is no longer wanted ({why}); its Python \
         thread is here:\n{stack}"
    );
}

/// The Python stack of thread `ident`, as `traceback.format_stack` prints it.
fn stack(py: Python<'_>, ident: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let Ok(frame) = frames.get_item(ident) else {
        return Ok("(the thread has left the app)".into());
    };
    let lines: Vec<String> =
        py.import("traceback")?.call_method1("format_stack", (frame,))?.extract()?;
    Ok(lines.concat().trim_end().to_string())
}
