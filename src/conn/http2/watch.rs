//! `send_timeout` per stream: a stream whose response cannot go on because the client does not
//! let it (a flow-control window left at zero, a stream it never reads) is reset after
//! `send_timeout` without progress, and its request ends cut; the connection's other streams
//! go on (nginx applies `send_timeout` to each stream so).
//!
//! The wire cannot see this: the socket writes fine (PINGs, other streams). Nor can the
//! response body wake itself: hyper's h2 server (`PipeToSendStream`) holds the piece of body
//! it took until the stream has capacity, and polls the body for no more meanwhile. What can
//! be seen is that silence: every stream's task runs in [`Watched`] (hyper hands it to the
//! connection's executor, [`LocalExec`](super::LocalExec)), which puts the stream's
//! [`Progress`] in a task-local while it polls the task, so that the response body's calls on
//! [`Streams`](super::streams::Streams) find it: a piece handed over starts the wait
//! ([`handed`]), the body's next poll ends it ([`polled`]). A body that is not polled because
//! the app has nothing ready yet is not waiting (the app's pace is `request_timeout`'s
//! business). Once a wait has lasted `send_timeout`, [`Watched`] ends the task: hyper's stream
//! (its response body, the piece held, the request's end, which is sent cut) is dropped, and h2
//! resets a stream that no one holds any more with `RST_STREAM(CANCEL)`, dropping what it had
//! buffered for it.
//!
//! Progress is counted per piece handed to h2, and a piece is at most `max_send_buf` (16 KiB),
//! whatever the app or the file cache hands over (see [`Exchange::piece_max`]): h2 takes the
//! next piece once the client's window covers what it holds for the stream, so a stream on which
//! the client reads less than that, about a piece, in `send_timeout` is reset too; one that
//! reads steadily, however slowly beyond that, is not.
//!
//! [`Exchange::piece_max`]: crate::conn::service::Exchange::piece_max
//!
//! No timer per stream: a response that flows waits for room between most pieces, and a timer
//! armed and dropped for each cost more than the rest of this. Streams that have waited are
//! listed worker-wide, and one task ([`sweep`]) looks at the list every [`SWEEP_EVERY`] while
//! it is not empty, waking a stream whose wait has lasted `send_timeout`: it is reset within
//! that much after.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use tokio::task::futures::TaskLocalFuture;

/// How often the streams that have waited are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

tokio::task_local! {
    /// The progress of the stream whose task is being polled (or dropped).
    static STREAM: Rc<Progress>;
}

thread_local! {
    /// The worker's streams that have waited for room, while their tasks live; and whether
    /// the task that sweeps them runs.
    static WAITED: RefCell<(Vec<Weak<Progress>>, bool)> = const { RefCell::new((Vec::new(), false)) };
}

/// One stream's response.
#[derive(Default)]
pub(crate) struct Progress {
    /// Since when the piece of body last handed over has waited to be sent, and its size, or
    /// `None` while the body is being polled, or has not started.
    waiting: Cell<Option<(Instant, usize)>>,
    /// `send_timeout`.
    timeout: Option<Duration>,
    /// The stream's task, woken by the sweep once its wait has lasted `send_timeout`; set
    /// when it is listed in [`WAITED`].
    waker: RefCell<Option<Waker>>,
}

impl Progress {
    /// Whether a wait has lasted `send_timeout` at `now`.
    fn overdue(&self, now: Instant) -> bool {
        match (self.waiting.get(), self.timeout) {
            (Some((since, _)), Some(timeout)) => now.duration_since(since) >= timeout,
            _ => false,
        }
    }
}

/// Wakes the listed streams whose waits have lasted `send_timeout`, every [`SWEEP_EVERY`],
/// until none is listed.
async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let now = Instant::now();
        let more = WAITED.with(|w| {
            let mut w = w.borrow_mut();
            w.0.retain(|p| {
                let Some(p) = p.upgrade() else { return false };
                if p.overdue(now) {
                    if let Some(waker) = p.waker.borrow().as_ref() {
                        waker.wake_by_ref();
                    }
                }
                true
            });
            w.1 = !w.0.is_empty();
            w.1
        });
        if !more {
            return;
        }
    }
}

/// The response body of the stream being polled is polled for more: what it handed before
/// has gone on (into h2's buffer, which the client's window lets it write).
pub(super) fn polled() {
    let _ = STREAM.try_with(|p| p.waiting.set(None));
}

/// The response body of the stream being polled handed h2 `n` bytes, which wait for the
/// stream to have capacity.
pub(super) fn handed(n: usize) {
    let _ = STREAM.try_with(|p| p.waiting.set(Some((Instant::now(), n))));
}

/// Bytes handed over by the stream being polled or dropped that are known not to have been
/// written: the piece still waiting for capacity, when the task is cut. (What h2 buffered
/// before it is not known.)
pub(super) fn unsent() -> usize {
    STREAM.try_with(|p| p.waiting.get().map_or(0, |(_, n)| n)).unwrap_or(0)
}

pin_project_lite::pin_project! {
    /// One stream's task, under `send_timeout`.
    pub(crate) struct Watched<F> {
        #[pin]
        task: TaskLocalFuture<Rc<Progress>, Settled<F>>,
        progress: Rc<Progress>,
    }
}

impl<F: Future> Watched<F> {
    pub(crate) fn new(task: F, timeout: Option<Duration>) -> Self {
        let progress = Rc::new(Progress { timeout, ..Progress::default() });
        let task = STREAM.scope(Rc::clone(&progress), Settled { task });
        Watched { task, progress }
    }
}

pin_project_lite::pin_project! {
    /// A stream's task that has run its course has sent what it took: nothing waits any more
    /// when it is dropped (within its task-local, at once), unlike a task that is cut.
    pub(crate) struct Settled<F> {
        #[pin]
        task: F,
    }
}

impl<F: Future> Future for Settled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let output = ready!(self.project().task.poll(cx));
        polled();
        Poll::Ready(output)
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let progress = this.progress;
        if progress.timeout.is_none() || progress.waiting.get().is_none() {
            return Poll::Pending;
        }
        if !progress.overdue(Instant::now()) {
            let mut waker = progress.waker.borrow_mut();
            match waker.as_mut() {
                Some(w) => w.clone_from(cx.waker()),
                None => {
                    *waker = Some(cx.waker().clone());
                    let start = WAITED.with(|w| {
                        let mut w = w.borrow_mut();
                        w.0.push(Rc::downgrade(progress));
                        !std::mem::replace(&mut w.1, true)
                    });
                    if start {
                        tokio::task::spawn_local(sweep());
                    }
                }
            }
            return Poll::Pending;
        }
        tracing::debug!(
            "send_timeout reached: the client is not reading an http/2 stream, resetting it"
        );
        // The task is dropped once this returns, within its task-local (see `unsent`).
        Poll::Ready(())
    }
}
