//! The last GOAWAY, said by the worker itself when hyper will not say it: hyper, asked to end
//! a connection, says `GOAWAY(NO_ERROR)` whatever the cause, and names the last stream it
//! served only once the client has answered its PING. So the connection's [`Wire`] is shared:
//! hyper reads and writes through one handle ([`Shared`]), the driver keeps another, and once
//! hyper's connection is dropped it writes the GOAWAY on the socket and closes.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::wire::Wire;

/// GOAWAY's error codes the worker says.
pub(crate) const NO_ERROR: u32 = 0x0;
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How much a closing connection reads (and drops) of what the client still sends: closed with
/// unread bytes, the socket would send a reset, which may destroy the GOAWAY before the client
/// has read it.
const LINGER_READ: usize = 1 << 20;

/// A handle on a connection's wire.
pub(crate) struct Shared<I>(Rc<RefCell<Wire<I>>>);

impl<I> Shared<I> {
    pub(crate) fn new(wire: Wire<I>) -> Self {
        Shared(Rc::new(RefCell::new(wire)))
    }
}

impl<I> Clone for Shared<I> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Shared<I> {
    /// Once hyper has let go of the connection (this is the last handle): writes
    /// `GOAWAY(code)` naming the last stream the client opened (each of which h2 served,
    /// refused or cut), if what hyper wrote ended where a frame ends; then closes, reading what
    /// the client still sends for a moment; all within `within`.
    pub(crate) async fn goaway(self, code: u32, within: Duration) {
        let Ok(wire) = Rc::try_unwrap(self.0) else { return };
        let (mut io, scanner) = wire.into_inner().into_parts();
        if !scanner.sent_whole_frames() {
            return;
        }
        let mut frame = vec![0, 0, 8, 0x7, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&scanner.last_opened().to_be_bytes());
        frame.extend_from_slice(&code.to_be_bytes());
        let close = async {
            io.write_all(&frame).await?;
            io.shutdown().await?;
            let mut scratch = [0u8; 16 * 1024];
            let mut read = 0;
            while read < LINGER_READ {
                match io.read(&mut scratch).await? {
                    0 => break,
                    n => read += n,
                }
            }
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(within, close).await;
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Shared<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Shared<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}
