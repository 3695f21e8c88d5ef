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
//! Progress is counted per piece handed to h2: a static file's 64 KiB chunk, an app's frame (up
//! to 256 KiB). A stream on which the client reads less than a piece in `send_timeout` is reset
//! too.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Sleep;

tokio::task_local! {
    /// The progress of the stream whose task is being polled (or dropped).
    static STREAM: Rc<Progress>;
}

/// One stream's response: since when the piece of body last handed over has waited to be
/// sent, and its size, or `None` while the body is being polled, or has not started.
#[derive(Default)]
pub(crate) struct Progress {
    waiting: Cell<Option<(Instant, usize)>>,
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
/// written: the piece still waiting for capacity. (What h2 buffered before it is not known.)
pub(super) fn unsent() -> usize {
    STREAM.try_with(|p| p.waiting.get().map_or(0, |(_, n)| n)).unwrap_or(0)
}

pin_project_lite::pin_project! {
    /// One stream's task, under `send_timeout`.
    pub(crate) struct Watched<F> {
        #[pin]
        task: TaskLocalFuture<Rc<Progress>, F>,
        progress: Rc<Progress>,
        timeout: Option<Duration>,
        // Armed at the first wait; reset only when it fires before the current wait's end, so
        // that a response that flows does not touch the timer for every piece.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future> Watched<F> {
    pub(crate) fn new(task: F, timeout: Option<Duration>) -> Self {
        let progress = Rc::new(Progress::default());
        Watched { task: STREAM.scope(Rc::clone(&progress), task), progress, timeout, timer: None }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let (Some(timeout), Some((since, _))) = (*this.timeout, this.progress.waiting.get()) else {
            return Poll::Pending;
        };
        let deadline = (since + timeout).into();
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            ready!(timer.as_mut().poll(cx));
            if timer.deadline() >= deadline {
                break;
            }
            // It was set for an earlier wait, which ended.
            timer.as_mut().reset(deadline);
        }
        tracing::debug!(
            "send_timeout reached: the client is not reading an http/2 stream, resetting it"
        );
        // The task is dropped once this returns, within its task-local (see `unsent`).
        Poll::Ready(())
    }
}
