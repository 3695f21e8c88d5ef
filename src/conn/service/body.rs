//! The body of every response a worker sends ([`ResponseBody`]): the app's, or one the stack
//! made. It hands the protocol no more than the protocol has room for (see
//! [`Exchange::poll_send_room`]), in pieces of at most [`FRAME_MAX`] or what the protocol
//! asks ([`Exchange::piece_max`]), keeps the request's deadline while it is sent, and ends the
//! request when it is done.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::Exchange;
use super::accounting::InFlight;
use crate::error::BoxError;

pin_project_lite::pin_project! {
    /// The body of every response a worker sends: the app's, or one forkserve made. It ends the
    /// request's time in flight when done, and closes the connection if `request_timeout`
    /// passes while it is being sent.
    pub(crate) struct ResponseBody<B, X: Exchange> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
        deadline: Option<Pin<Box<Sleep>>>,
        request: Option<Box<str>>,
        in_flight: Option<InFlight<X>>,
        // What is left of a frame larger than `FRAME_MAX`, handed to hyper in later frames.
        rest: Option<Bytes>,
    }
}

/// The largest piece of a response body handed to hyper at once, whatever the protocol asks
/// ([`Exchange::piece_max`]: HTTP/2 asks for smaller ones). hyper's HTTP/1 copies a frame whole
/// into its write buffer, so a 1 MiB frame (a cached static file, an app's `Full` body) would
/// hold 1 MiB in the worker for a client that does not read, whatever [`WRITE_AHEAD`] says.
/// Larger frames are split (without copying: `Bytes` slices share their memory), so that a
/// stalled client holds less than `WRITE_AHEAD` plus one piece (and a head); static files are
/// streamed in 64 KiB chunks, below this, and the kernel's socket buffer keeps a reading
/// client's writes large.
///
/// [`WRITE_AHEAD`]: crate::conn::WRITE_AHEAD
pub(super) const FRAME_MAX: usize = 256 * 1024;

impl<B, X: Exchange> ResponseBody<B, X> {
    pub(super) fn new(
        inner: Either<B, Full<Bytes>>,
        deadline: Option<Pin<Box<Sleep>>>,
        request: Option<Box<str>>,
        in_flight: Option<InFlight<X>>,
    ) -> Self {
        ResponseBody { inner, deadline, request, in_flight, rest: None }
    }
}

impl<B, X> Body for ResponseBody<B, X>
where
    X: Exchange,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        // A client that is not reading gets no more than the connection may hold for it.
        let room =
            this.in_flight.as_ref().is_none_or(|f| f.conn.exchange.poll_send_room(cx).is_ready());
        let rest = if room { this.rest.take() } else { None };
        // Whether the frame handed over now is what is left of one split before.
        let split = rest.is_some();
        let mut polled = match room.then(|| match rest {
            Some(rest) => Ok(Poll::Ready(Some(Ok(Frame::data(rest))))),
            None => crate::panics::in_handler(|| {
                catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_frame(cx)))
            }),
        }) {
            None => Poll::Pending,
            Some(Ok(polled)) => polled,
            Some(Err(_)) => {
                // The head is sent: the connection is closed, as for any broken body.
                let message = crate::panics::take_message();
                tracing::error!("response body panicked, closing the connection: {message}");
                this.in_flight.take();
                return Poll::Ready(Some(Err("the response body panicked".into())));
            }
        };
        if let Poll::Ready(Some(Ok(frame))) = &mut polled {
            if let Some(data) = frame.data_mut() {
                let asked = this.in_flight.as_ref().and_then(|f| f.conn.exchange.piece_max());
                let piece = asked.map_or(FRAME_MAX, |n| n.clamp(1, FRAME_MAX));
                // Without a copy: `Bytes` slices share their memory.
                if data.len() > piece {
                    *this.rest = Some(data.split_off(piece));
                } else if asked.is_some() && split && data.len() > 1 && inner.is_end_stream() {
                    // The last piece of a last frame split for the protocol: its last byte
                    // apart (see `Exchange::piece_max`).
                    *this.rest = Some(data.split_off(data.len() - 1));
                }
                if let Some(f) = this.in_flight.as_mut() {
                    f.conn.exchange.handed(data.len());
                    if let Some(record) = f.record() {
                        record.handed += data.len() as u64;
                    }
                }
            }
        }
        if polled.is_pending() {
            if let Some(deadline) = this.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    *this.deadline = None;
                    tracing::warn!(
                        request = %this.request.as_deref().unwrap_or_default(),
                        "request_timeout reached while sending the response, closing the \
                         connection"
                    );
                    return Poll::Ready(Some(Err("request_timeout reached".into())));
                }
            }
        }
        if let Poll::Ready(None) = polled {
            if let Some(record) = this.in_flight.take().as_ref().and_then(|f| f.record.as_deref()) {
                record.whole.set(true);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.rest.is_none() && self.inner.is_end_stream();
        if end {
            // hyper drops a body that says it has ended without polling it again.
            if let Some(record) = self.in_flight.as_ref().and_then(|f| f.record.as_deref()) {
                record.whole.set(true);
            }
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |rest| rest.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}
