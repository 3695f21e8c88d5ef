//! A write that cannot proceed because the client is not reading, under `send_timeout`: one
//! rule for every protocol (HTTP/1's gate, HTTP/2's wire), and the worker's way to reclaim
//! the connection's slot sooner at `worker_connections` (see `Conns::reclaim_slot`).

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::drain::Slot;

/// A response that cannot be written because the client is not reading: since when, and the
/// timer that closes the connection `send_timeout` later, unless a write makes progress first.
/// A worker at `worker_connections` may close it sooner, for a new connection (see
/// `Conns::reclaim_slot`).
#[derive(Default)]
pub(crate) struct Stall {
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    /// A write made progress: the stall, if there was one, is over.
    pub(crate) fn resumed(&mut self, slot: &Slot) {
        if self.since.take().is_some() {
            slot.write_resumed();
        }
    }

    /// After a write that could not proceed: an error once `timeout` has passed since the first
    /// such write without progress in between, or once the worker needs the connection's slot.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Option<Duration>,
        slot: &Rc<Slot>,
    ) -> Poll<io::Error> {
        if slot.evicted() {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed for a new connection: worker_connections reached, and the client is \
                 not reading",
            ));
        }
        let since = *self.since.get_or_insert_with(|| {
            let now = Instant::now();
            slot.write_stalled(now, cx.waker());
            now
        });
        let Some(timeout) = timeout else { return Poll::Pending };
        let deadline = (since + timeout).into();
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        tracing::debug!("send_timeout reached: the client is not reading, closing");
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "send_timeout reached"))
    }
}
